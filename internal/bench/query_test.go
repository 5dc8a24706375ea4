package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A small query run pages through every query to the end, counts what the
// hub returned, and reports both floors.
func TestRunQuery(t *testing.T) {
	res, err := RunQuery(context.Background(), QueryConfig{Devices: 300, PageSizes: []int{7, 1000}, MaxPages: -1, EngineRuns: 2, GetCalls: 3})
	require.NoError(t, err)
	require.NotNil(t, res.GetTwin)
	assert.Equal(t, 3, res.GetTwin.Calls, "GET /twins/{id} round trips")
	assert.Zero(t, res.GetTwin.Errors, "GET /twins/{id}: %s", res.GetTwin.FirstError)
	require.Len(t, res.Engine, 3, "engine floors")
	assert.Equal(t, 30, res.Engine[0].Matches, "a tenth of the devices is in berlin")
	assert.Equal(t, 10, res.Engine[2].Matches, "ten sites")
	assert.Equal(t, 6, res.Snapshot.Calls, "one snapshot per engine run")

	require.Len(t, res.Rows, 5, "two queries by two page sizes, and the GROUP BY")
	for _, r := range res.Rows {
		assert.Empty(t, r.Error, "%s / %d", r.Query, r.PageSize)
		assert.True(t, r.Complete, "%s / %d: every page", r.Query, r.PageSize)
		assert.Positive(t, r.PerPage.P50, "%s / %d: p50", r.Query, r.PageSize)
		assert.Positive(t, r.VsEngine, "%s / %d: vs engine", r.Query, r.PageSize)
		assert.Positive(t, r.VsGetTwin, "%s / %d: vs GET twin", r.Query, r.PageSize)
	}
	assert.Equal(t, []int{30, 5}, []int{res.Rows[0].Items, res.Rows[0].Pages}, "berlin twins in pages of 7")
	assert.Equal(t, []int{30, 1}, []int{res.Rows[1].Items, res.Rows[1].Pages}, "berlin twins in pages of 1000")
	assert.Equal(t, []int{30, 5}, []int{res.Rows[2].Items, res.Rows[2].Pages}, "projection in pages of 7")
	assert.Equal(t, []int{10, 2}, []int{res.Rows[4].Items, res.Rows[4].Pages}, "ten groups in pages of 7")

	var out bytes.Buffer
	res.WriteTable(&out)
	for _, want := range []string{"iothub bench --query:", "GET /twins/{id} (HTTPS)", "engine snapshot of 300 twins",
		"query (POST /devices/query)", "p50 ms/page", querySelectAll, queryGroupBy} {
		assert.Contains(t, out.String(), want, "table")
	}
	js, err := res.MarshalIndent()
	require.NoError(t, err)
	assert.True(t, json.Valid(js))
}

// MaxPages times only the first pages; an interrupted run returns what it
// measured.
func TestRunQueryLimits(t *testing.T) {
	res, err := RunQuery(context.Background(), QueryConfig{Devices: 100, PageSizes: []int{2}, MaxPages: 3, EngineRuns: 1, GetCalls: 1})
	require.NoError(t, err)
	assert.Equal(t, 3, res.Rows[0].Pages)
	assert.Equal(t, 6, res.Rows[0].Items)
	assert.False(t, res.Rows[0].Complete)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err = RunQuery(ctx, QueryConfig{Devices: 100, EngineRuns: 1, GetCalls: 1})
	assert.ErrorIs(t, err, context.Canceled)
	assert.NotNil(t, res)

	for _, bad := range []QueryConfig{{Devices: -1}, {PageSizes: []int{0}}, {PageSizes: []int{1001}}, {EngineRuns: -1}} {
		assert.Error(t, bad.Validate(), "%+v", bad)
	}
	assert.NoError(t, QueryDefaults().Validate())
}
