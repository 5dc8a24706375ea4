package service_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/iothubtest"
	"github.com/iothub-go/iothub/service"
)

// queryFleet registers n devices dev000… tagged {"n":i,"site":…}: berlin
// for the first berlin devices, paris for the rest.
func queryFleet(t *testing.T, hub *iothubtest.Server, c *service.Client, n, berlin int) {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		id := fmt.Sprintf("dev%03d", i)
		hub.AddDevice(t, id)
		site := "berlin"
		if i >= berlin {
			site = "paris"
		}
		_, err := c.UpdateTwin(ctx, id, &service.TwinPatch{Tags: map[string]any{"n": i, "site": site}}, nil)
		require.NoError(t, err, "tag %s", id)
	}
}

// allPages reads every page of a pager.
func allPages(t *testing.T, p interface {
	More() bool
	NextPage(context.Context) (service.QueryPage, error)
}) []service.QueryPage {
	t.Helper()
	var pages []service.QueryPage
	for p.More() {
		page, err := p.NextPage(context.Background())
		require.NoError(t, err, "page %d", len(pages)+1)
		pages = append(pages, page)
		require.Less(t, len(pages), 100, "the pager does not end")
	}
	return pages
}

func TestQueryTwinPages(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c, _ := newClient(t, hub, "", nil)
	queryFleet(t, hub, c, 250, 230)

	pages := allPages(t, c.NewQueryPager("SELECT * FROM devices WHERE tags.site = 'berlin'", &service.QueryOptions{PageSize: 100}))
	require.Len(t, pages, 3)
	var ids []string
	for i, p := range pages {
		assert.Equal(t, service.QueryItemTypeTwin, p.ItemType)
		assert.Equal(t, i < 2, p.ContinuationToken != "", "continuation of page %d", i+1)
		twins, err := p.Twins()
		require.NoError(t, err)
		for _, tw := range twins {
			ids = append(ids, tw.DeviceID)
			assert.JSONEq(t, `"berlin"`, string(tw.Tags["site"]))
			assert.Equal(t, int64(1), tw.Reported.Version, "whole twins")
		}
	}
	assert.Equal(t, []int{100, 100, 30}, []int{len(pages[0].Items), len(pages[1].Items), len(pages[2].Items)})
	require.Len(t, ids, 230)
	assert.True(t, sort.StringsAreSorted(ids), "each twin once, in order")

	// A saved continuation token resumes the query.
	rest := allPages(t, c.NewQueryPager("SELECT * FROM devices WHERE tags.site = 'berlin'",
		&service.QueryOptions{PageSize: 100, ContinuationToken: pages[0].ContinuationToken}))
	require.Len(t, rest, 2)
	assert.Equal(t, pages[1].Items, rest[0].Items)

	// Without a page size the hub picks one (100 on the local hub).
	pages = allPages(t, c.NewQueryPager("SELECT * FROM devices", nil))
	assert.Len(t, pages, 3)
}

func TestQueryRawItems(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c, _ := newClient(t, hub, "", nil)
	queryFleet(t, hub, c, 10, 6)
	ctx := context.Background()

	page, err := c.NewQueryPager("SELECT deviceId, tags.n FROM devices WHERE tags.n >= 8", nil).NextPage(ctx)
	require.NoError(t, err)
	assert.Equal(t, service.QueryItemTypeRaw, page.ItemType)
	require.Len(t, page.Items, 2)
	assert.JSONEq(t, `{"deviceId":"dev008","n":8}`, string(page.Items[0]))

	page, err = c.NewQueryPager("SELECT tags.site AS site, COUNT() AS devices FROM devices GROUP BY tags.site", nil).NextPage(ctx)
	require.NoError(t, err)
	assert.Equal(t, service.QueryItemTypeRaw, page.ItemType)
	var groups []string
	for _, it := range page.Items {
		groups = append(groups, string(it))
	}
	assert.ElementsMatch(t, []string{`{"devices":6,"site":"berlin"}`, `{"devices":4,"site":"paris"}`}, groups)
}

func TestQueryModuleTwins(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c, _ := newClient(t, hub, "", nil)
	hub.AddDevice(t, "dev1")
	hub.AddDevice(t, "dev2")
	hub.AddModule(t, "dev2", "b")
	hub.AddModule(t, "dev1", "a")
	hub.AddModule(t, "dev1", "c")
	_, err := c.UpdateModuleTwin(context.Background(), "dev1", "c", &service.TwinPatch{Tags: map[string]any{"role": "edge"}}, nil)
	require.NoError(t, err)

	pages := allPages(t, c.NewQueryPager("SELECT * FROM devices.modules WHERE tags.role = 'edge'", nil))
	require.Len(t, pages, 1)
	twins, err := pages[0].Twins()
	require.NoError(t, err)
	require.Len(t, twins, 1)
	assert.Equal(t, "dev1", twins[0].DeviceID)
	assert.Equal(t, "c", twins[0].ModuleID)

	pages = allPages(t, c.NewQueryPager("SELECT * FROM devices.modules", nil))
	twins, err = pages[0].Twins()
	require.NoError(t, err)
	var got []string
	for _, tw := range twins {
		got = append(got, tw.DeviceID+"/"+tw.ModuleID)
	}
	assert.Equal(t, []string{"dev1/a", "dev1/c", "dev2/b"}, got)
}

func TestQueryRefusals(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	c, tries := newClient(t, hub, "", nil)
	hub.AddDevice(t, "dev1")
	ctx := context.Background()

	// The hub refuses the query: its 400 and message, no retry, and the
	// pager stops.
	p := c.NewQueryPager("SELECT * FROM nowhere", nil)
	before := tries.count()
	_, err := p.NextPage(ctx)
	require.ErrorIs(t, err, service.ErrArgumentInvalid)
	var re *service.ResponseError
	require.True(t, errors.As(err, &re), "a *ResponseError: %v", err)
	assert.Equal(t, http.StatusBadRequest, re.StatusCode)
	assert.Equal(t, service.ErrorCodeArgumentInvalid, re.ErrorCode)
	assert.NotEmpty(t, re.Message, "the hub's message")
	assert.Equal(t, 1, tries.count()-before, "a refused query is not retried")
	assert.False(t, p.More())

	// A token the hub did not make.
	_, err = c.NewQueryPager("SELECT * FROM devices", &service.QueryOptions{ContinuationToken: "not-a-token"}).NextPage(ctx)
	require.ErrorIs(t, err, service.ErrArgumentInvalid)
	require.True(t, errors.As(err, &re))
	assert.Equal(t, http.StatusBadRequest, re.StatusCode)

	// Refused before sending.
	before = tries.count()
	for _, tc := range []struct {
		sql  string
		opts *service.QueryOptions
	}{
		{"", nil},
		{"SELECT * FROM devices", &service.QueryOptions{PageSize: -1}},
		{"SELECT * FROM devices", &service.QueryOptions{PageSize: service.MaxQueryPageSize + 1}},
	} {
		_, err := c.NewQueryPager(tc.sql, tc.opts).NextPage(ctx)
		require.ErrorIs(t, err, service.ErrArgumentInvalid, "%q %+v", tc.sql, tc.opts)
	}
	assert.Equal(t, before, tries.count(), "nothing sent")

	// Needs RegistryRead or ServiceConnect.
	dc, _ := newClient(t, hub, hub.PolicyConnectionString("device"), nil)
	_, err = dc.NewQueryPager("SELECT * FROM devices", nil).NextPage(ctx)
	require.ErrorIs(t, err, service.ErrUnauthorized)
	rc, _ := newClient(t, hub, hub.PolicyConnectionString("registryRead"), nil)
	page, err := rc.NewQueryPager("SELECT * FROM devices", nil).NextPage(ctx)
	require.NoError(t, err)
	assert.Len(t, page.Items, 1)
}

func TestQueryPageTwins(t *testing.T) {
	p := service.QueryPage{Items: nil}
	twins, err := p.Twins()
	require.NoError(t, err)
	assert.Empty(t, twins)
	p.Items = append(p.Items, []byte(`"not a twin"`))
	_, err = p.Twins()
	require.ErrorIs(t, err, service.ErrMalformedResponse)
}

// Each page of a query is one "Client.Query" span over one HTTP span; a
// refused query marks its span with the hub's error code.
func TestQueryTracing(t *testing.T) {
	hub := iothubtest.NewServer(t, nil)
	hub.AddDevice(t, "dev1")
	hub.AddDevice(t, "dev2")
	rec := &spanRecorder{}
	c, _ := newClient(t, hub, "", func(o *service.ClientOptions) { o.TracingProvider = rec.provider() })
	ctx := context.Background()

	p := c.NewQueryPager("SELECT * FROM devices", &service.QueryOptions{PageSize: 1})
	for range 2 {
		_, err := p.NextPage(ctx)
		require.NoError(t, err)
		oneCall(t, rec.take(), "Client.Query", true)
	}
	assert.False(t, p.More())

	_, err := c.NewQueryPager("SELECT * FROM nowhere", nil).NextPage(ctx)
	require.ErrorIs(t, err, service.ErrArgumentInvalid)
	call := oneCall(t, rec.take(), "Client.Query", true)
	assert.Equal(t, "ArgumentInvalid", call.attrs["iothub.error_code"])

	_, err = c.NewQueryPager("", nil).NextPage(ctx)
	require.ErrorIs(t, err, service.ErrArgumentInvalid)
	oneCall(t, rec.take(), "Client.Query", false)
}

// A query page larger than the client accepts (32 MiB) fails with
// ErrResponseTooLarge: reading stops at the limit.
func TestQueryHugePage(t *testing.T) {
	srv := httptest.NewTLSServer(hugeBody(http.StatusOK, 64<<20, true))
	defer srv.Close()
	c, err := service.NewClientFromConnectionString(hostileConnStr, &service.ClientOptions{
		Endpoint: srv.URL,
		ClientOptions: azcore.ClientOptions{
			Transport: srv.Client(),
			Retry:     policy.RetryOptions{RetryDelay: time.Millisecond},
		}})
	require.NoError(t, err)
	_, err = c.NewQueryPager("SELECT * FROM devices", nil).NextPage(context.Background())
	require.ErrorIs(t, err, service.ErrResponseTooLarge)
}
