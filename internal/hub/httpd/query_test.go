package httpd

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/internal/hub/engine"
)

// runQuery posts a query with a policy's token and extra headers.
func (h *testHub) runQuery(policy, sql string, headers map[string]string) response {
	h.t.Helper()
	body, err := json.Marshal(map[string]string{"query": sql})
	require.NoError(h.t, err)
	return h.do(request{method: http.MethodPost, path: "/devices/query?" + apiVersion, body: string(body), auth: h.token(policy), headers: headers})
}

// queryFleet makes n devices dev000… with tags {"n":i,"site":…}: berlin
// for the first berlin of them, paris for the rest.
func queryFleet(t *testing.T, h *testHub, n, berlin int) {
	t.Helper()
	for i := range n {
		id := fmt.Sprintf("dev%03d", i)
		h.createDevice(id)
		site := "berlin"
		if i >= berlin {
			site = "paris"
		}
		_, herr := h.e.UpdateTwin(id, "", []byte(fmt.Sprintf(`{"tags":{"n":%d,"site":%q}}`, i, site)), "")
		require.Nil(t, herr, "tag %s", id)
	}
}

// queryItems checks a 200 query answer and returns its items.
func queryItems(t *testing.T, res response, itemType string) []map[string]any {
	t.Helper()
	wantOK(t, res)
	assert.Equal(t, itemType, res.header.Get("x-ms-item-type"), "x-ms-item-type")
	return decodeJSON[[]map[string]any](t, res)
}

func TestQueryPages(t *testing.T) {
	h := newTestHub(t)
	queryFleet(t, h, 250, 230)
	const sql = "SELECT * FROM devices WHERE tags.site = 'berlin'"

	var (
		ids   []string
		sizes []int
		token string
	)
	for range 10 {
		hdr := map[string]string{"x-ms-max-item-count": "100"}
		if token != "" {
			hdr["x-ms-continuation"] = token
		}
		items := queryItems(t, h.runQuery("service", sql, hdr), "twin")
		sizes = append(sizes, len(items))
		for _, it := range items {
			ids = append(ids, it["deviceId"].(string))
			assert.Equal(t, "berlin", it["tags"].(map[string]any)["site"])
			assert.Contains(t, it, "properties", "a whole twin")
		}
		res := h.runQuery("service", sql, hdr) // the same page again: tokens are reusable
		require.Len(t, decodeJSON[[]map[string]any](t, res), len(items))
		token = res.header.Get("x-ms-continuation")
		if token == "" {
			break
		}
	}
	assert.Equal(t, []int{100, 100, 30}, sizes, "page sizes")
	require.Len(t, ids, 230)
	assert.True(t, sort.StringsAreSorted(ids), "twins in id order, none twice")
	assert.Equal(t, "dev000", ids[0])
	assert.Equal(t, "dev229", ids[229])
}

func TestQueryPageSize(t *testing.T) {
	h := newTestHub(t)
	queryFleet(t, h, 120, 120)
	const sql = "SELECT * FROM devices"

	res := h.runQuery("iothubowner", sql, nil)
	assert.Len(t, queryItems(t, res, "twin"), defaultPageSize, "default page size")
	assert.NotEmpty(t, res.header.Get("x-ms-continuation"))

	res = h.runQuery("iothubowner", sql, map[string]string{"x-ms-max-item-count": "5000"})
	assert.Len(t, queryItems(t, res, "twin"), 120, "a page size over the maximum is the maximum")
	assert.Empty(t, res.header.Get("x-ms-continuation"), "no continuation after the last page")

	for _, bad := range []string{"0", "-1", "ten", "1.5"} {
		res := h.runQuery("iothubowner", sql, map[string]string{"x-ms-max-item-count": bad})
		wantRegistryError(t, res, engine.CodeArgumentInvalid)
	}
}

func TestQueryProjectionsAndGroups(t *testing.T) {
	h := newTestHub(t)
	queryFleet(t, h, 10, 6)

	items := queryItems(t, h.runQuery("registryRead", "SELECT deviceId, tags.n FROM devices WHERE tags.n < 3", nil), "raw")
	require.Len(t, items, 3)
	assert.Equal(t, "dev000", items[0]["deviceId"])
	assert.NotContains(t, items[0], "properties", "a projection is not a twin")

	items = queryItems(t, h.runQuery("registryRead", "SELECT tags.site AS site, COUNT() AS n FROM devices GROUP BY tags.site", nil), "raw")
	got := map[string]float64{}
	for _, it := range items {
		got[fmt.Sprint(it["site"])] = it["n"].(float64)
	}
	assert.Equal(t, map[string]float64{"berlin": 6, "paris": 4}, got)

	items = queryItems(t, h.runQuery("registryRead", "SELECT TOP 2 * FROM devices", nil), "twin")
	assert.Len(t, items, 2, "TOP")
}

func TestQueryModules(t *testing.T) {
	h := newTestHub(t)
	h.createDevice("dev1")
	h.createDevice("dev2")
	h.createModule("dev2", "b")
	h.createModule("dev1", "a")
	items := queryItems(t, h.runQuery("service", "SELECT * FROM devices.modules", nil), "twin")
	var got []string
	for _, it := range items {
		got = append(got, it["deviceId"].(string)+"/"+it["moduleId"].(string))
	}
	assert.Equal(t, []string{"dev1/a", "dev2/b"}, got)
	assert.Empty(t, queryItems(t, h.runQuery("service", "SELECT * FROM devices.jobs", nil), "deviceJob"), "no jobs yet")
}

func TestQueryRefusals(t *testing.T) {
	h := newTestHub(t)
	queryFleet(t, h, 3, 3)

	msg := wantRegistryError(t, h.runQuery("service", "SELECT * FROM nowhere", nil), engine.CodeArgumentInvalid)
	assert.NotEmpty(t, msg, "the parser's message")
	wantRegistryError(t, h.runQuery("service", "SELEKT *", nil), engine.CodeArgumentInvalid)

	// Continuation tokens: garbage, and a token of another query.
	const sql = "SELECT * FROM devices"
	res := h.runQuery("service", sql, map[string]string{"x-ms-max-item-count": "1"})
	queryItems(t, res, "twin")
	token := res.header.Get("x-ms-continuation")
	require.NotEmpty(t, token)
	for _, bad := range []string{"garbage", "AAAA", strings.Repeat("A", 22)} {
		wantRegistryError(t, h.runQuery("service", sql, map[string]string{"x-ms-continuation": bad}), engine.CodeArgumentInvalid)
	}
	wantRegistryError(t, h.runQuery("service", "SELECT deviceId FROM devices", map[string]string{"x-ms-continuation": token}), engine.CodeArgumentInvalid)
	assert.Len(t, queryItems(t, h.runQuery("service", sql, map[string]string{"x-ms-continuation": token}), "twin"), 2)

	// Bodies: no query, not JSON, too large.
	post := func(body string) response {
		return h.do(request{method: http.MethodPost, path: "/devices/query?" + apiVersion, body: body, auth: h.token("service")})
	}
	wantRegistryError(t, post(`{}`), engine.CodeArgumentNull)
	wantRegistryError(t, post(`{"query":"  "}`), engine.CodeArgumentNull)
	wantRegistryError(t, post(`not json`), engine.CodeArgumentInvalid)
	wantRegistryError(t, post(`{"query":"`+strings.Repeat("x", maxQueryBody)+`"}`), engine.CodeMessageTooLarge)

	// Rights: reading twins; a device policy may not.
	wantRegistryError(t, h.runQuery("device", sql, nil), engine.CodeUnauthorized)
	queryItems(t, h.runQuery("registryRead", sql, nil), "twin")

	// Other methods on /devices/query are the device "query".
	res = h.registry(http.MethodGet, "/devices/query", "", nil)
	wantRegistryError(t, res, engine.CodeDeviceNotFound)
}

func TestQuerySelectsAll(t *testing.T) {
	for sql, want := range map[string]bool{
		"SELECT * FROM devices":        true,
		"  select\t*  from devices":    true,
		"SELECT TOP 5 * FROM devices":  true,
		"select top 5* from devices":   true,
		"SELECT deviceId FROM devices": false,
		"SELECT TOP 5 deviceId FROM x": false,
		"SELECT COUNT() FROM devices":  false,
		"SELECTED * FROM devices":      false,
		"SELECT TOPS * FROM devices":   false,
		"SELECT TOP * FROM devices":    false,
		"SELECT":                       false,
	} {
		assert.Equal(t, want, selectsAll(sql), sql)
	}
}

// FuzzQueryHeaders: the paging headers of POST /devices/query never
// panic; a page size read is in range, and a token read back names the
// offset it was made for, only for its own query.
func FuzzQueryHeaders(f *testing.F) {
	f.Add("100", continuationToken(7, "SELECT * FROM devices"), "SELECT * FROM devices")
	f.Add("-1", "AAAAAAAAAAE", "SELECT deviceId FROM devices")
	f.Add("99999999999999999999999", "%%%", "")
	f.Add(" 5 ", "", "SELECT TOP 3 * FROM devices.jobs")
	f.Fuzz(func(t *testing.T, size, tok, sql string) {
		if n, herr := parsePageSize(size); herr == nil {
			require.True(t, n >= 1 && n <= maxPageSize, "page size %d from %q", n, size)
		}
		if off, herr := parseContinuation(tok, sql); herr == nil && tok != "" {
			require.Equal(t, tok, continuationToken(off, sql), "a token accepted must be the one made for its offset")
		}
		_ = selectsAll(sql)
	})
}
