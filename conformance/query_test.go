//go:build conformance

package conformance

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/service"
)

// TestQueryNode runs the official Node Registry's queries
// (Registry.createQuery, Query.next and nextAsTwin) against `iothub hub`:
// paging through twins with hasMoreResults and continuationToken,
// resuming with a token, a projection, a GROUP BY count, and a query and
// a token the hub refuses.
func TestQueryNode(t *testing.T) {
	ids := make([]string, 7)
	for i := range ids {
		ids[i] = fmt.Sprintf("qy-%d", i)
	}
	h := startHub(t, ids...)
	svc := serviceClient(t, h)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// berlin: qy-0, qy-2, qy-4, qy-6; paris: qy-1, qy-3, qy-5; floor i.
	for i, id := range ids {
		site := "berlin"
		if i%2 == 1 {
			site = "paris"
		}
		_, err := svc.UpdateTwin(ctx, id, &service.TwinPatch{Tags: map[string]any{"site": site, "floor": i}}, nil)
		require.NoError(t, err, "tagging %s", id)
	}
	// What this SDK gets for the refused query: the hub's message.
	_, qerr := svc.NewQueryPager("SELECT * FROM devices WHERE", nil).NextPage(ctx)
	var re *service.ResponseError
	require.True(t, errors.As(qerr, &re), "our client's error for the refused query: %v", qerr)
	require.NotEmpty(t, re.Message)

	res, code := nodeJSON(t, "query.js", "SERVICE_CS="+h.serviceCS, "CA_FILE="+h.caFile, "SITE=berlin", "PAGE_SIZE=2")
	require.Equal(t, 0, code, "query.js exit status: %s", mustJSON(res))
	pages := func(v any) []map[string]any {
		l, _ := v.([]any)
		out := make([]map[string]any, len(l))
		for i, p := range l {
			out[i], _ = p.(map[string]any)
		}
		return out
	}
	field := func(m map[string]any, k string) map[string]any { f, _ := m[k].(map[string]any); return f }
	pageIDs := func(p map[string]any) []any {
		items, _ := p["items"].([]any)
		out := make([]any, len(items))
		for i, it := range items {
			m, _ := it.(map[string]any)
			out[i] = m["deviceId"]
		}
		return out
	}

	t.Run("twins with nextAsTwin", func(t *testing.T) {
		ps := pages(res["twins"])
		require.Len(t, ps, 2, "pages of 2 of 4 twins: %s", mustJSON(res["twins"]))
		assert.Equal(t, []any{"qy-0", "qy-2"}, pageIDs(ps[0]))
		assert.Equal(t, []any{"qy-4", "qy-6"}, pageIDs(ps[1]))
		assert.Equal(t, true, ps[0]["hasMoreResults"], "hasMoreResults after the first page")
		assert.Equal(t, true, ps[0]["hasToken"], "continuationToken after the first page")
		assert.Equal(t, false, ps[1]["hasMoreResults"], "hasMoreResults after the last page")
		assert.Equal(t, false, ps[1]["hasToken"], "continuationToken after the last page")
		for i, p := range ps {
			assert.Equal(t, "twin", p["itemType"], "page %d: x-ms-item-type", i)
			assert.Equal(t, true, p["twinObjects"], "page %d: nextAsTwin made Twin objects", i)
			items, _ := p["items"].([]any)
			for _, it := range items {
				tw, _ := it.(map[string]any)
				sameJSON(t, map[string]any{"site": "berlin", "floor": floorOf(tw["deviceId"])}, tw["tags"], "tags of %v", tw["deviceId"])
				props := field(tw, "properties")
				assert.Contains(t, props, "desired", "%v: Twin.toJSON has the desired properties", tw["deviceId"])
				assert.Contains(t, props, "reported", "%v: Twin.toJSON has the reported properties", tw["deviceId"])
			}
		}
	})

	t.Run("resumed with a continuation token", func(t *testing.T) {
		r := field(res, "resumed")
		first := field(r, "first")
		assert.Equal(t, []any{"qy-0", "qy-2"}, pageIDs(first))
		assert.Equal(t, true, first["hasMoreResults"])
		rest := pages(r["rest"])
		var got []any
		for _, p := range rest {
			got = append(got, pageIDs(p)...)
		}
		assert.Equal(t, []any{"qy-4", "qy-6"}, got, "the second Query, resumed with the first one's token: %s", mustJSON(r["rest"]))
		if len(rest) > 0 {
			assert.Equal(t, false, rest[len(rest)-1]["hasMoreResults"], "hasMoreResults at the end")
		}
	})

	t.Run("projection with next", func(t *testing.T) {
		p := field(res, "projection")
		sameJSON(t, []any{
			map[string]any{"deviceId": "qy-0", "floor": 0}, map[string]any{"deviceId": "qy-2", "floor": 2},
			map[string]any{"deviceId": "qy-4", "floor": 4}, map[string]any{"deviceId": "qy-6", "floor": 6},
		}, p["items"], "projected items")
		assert.Equal(t, "raw", p["itemType"], "x-ms-item-type")
		assert.Equal(t, false, p["hasMoreResults"], "one page with the SDK's default page size (1000)")
	})

	t.Run("GROUP BY count", func(t *testing.T) {
		p := field(res, "grouped")
		sameJSON(t, []any{map[string]any{"site": "berlin", "n": 4}, map[string]any{"site": "paris", "n": 3}}, p["items"], "groups")
		assert.Equal(t, "raw", p["itemType"], "x-ms-item-type")
		assert.Equal(t, false, p["hasMoreResults"])
	})

	t.Run("refused query", func(t *testing.T) {
		e := field(res, "refused")
		assert.Equal(t, "ArgumentError", e["name"], "the Node SDK's error for 400: %s", mustJSON(e))
		assert.Equal(t, float64(400), e["statusCode"])
		body, _ := e["body"].(string)
		assert.Contains(t, body, `"ErrorCode:ArgumentInvalid;`, "the hub's error body")
		msg, _ := e["message"].(string)
		assert.NotEmpty(t, msg, "the Node SDK's message")
		assert.True(t, strings.Contains(re.Message, msg) || strings.Contains(msg, re.Message),
			"the Node SDK shows the hub's message: node %q, ours %q", msg, re.Message)
	})

	t.Run("refused continuation token", func(t *testing.T) {
		e := field(res, "badToken")
		assert.Equal(t, "ArgumentError", e["name"], "%s", mustJSON(e))
		assert.Equal(t, float64(400), e["statusCode"])
		msg, _ := e["message"].(string)
		assert.Contains(t, msg, "continuation", "the hub's message names the token")
	})
}

// floorOf is the floor tag of device "qy-<i>": i.
func floorOf(id any) int {
	s, _ := id.(string)
	var i int
	_, _ = fmt.Sscanf(s, "qy-%d", &i)
	return i
}
