package bench

// The query benchmark ("iothub bench --query"): IoT Hub queries (POST
// /devices/query) over a large registry in an in-process hub, a page at a
// time through this SDK's service client over HTTPS, next to two floors
// measured in the same run: the engine evaluating the whole query without
// HTTP over its cached twin documents (what an aggregate page costs; a
// page without aggregates reads the documents only up to its last item),
// and a GET /twins/{id} round trip (what any HTTPS request costs with the
// same client and hub).

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub"
	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/internal/hub/engine/query"
	"github.com/iothub-go/iothub/service"
)

// QueryConfig configures RunQuery. Zero fields take QueryDefaults' values.
type QueryConfig struct {
	// Devices is the registry size; each device has tags site (one of
	// ten sites, so each site holds a tenth), floor and n.
	Devices int
	// PageSizes are the page sizes (x-ms-max-item-count) measured.
	PageSizes []int
	// MaxPages bounds the pages timed per query and page size (the first
	// ones); negative: every page.
	MaxPages int
	// EngineRuns is how many times the engine floor evaluates each query.
	EngineRuns int
	// GetCalls is how many GET /twins/{id} round trips the HTTPS floor
	// times.
	GetCalls int
	// Progress receives progress lines; nil: none.
	Progress io.Writer
}

// QueryDefaults returns the default query benchmark: 100,000 devices,
// pages of 100 and 1000, at most 50 pages per row.
func QueryDefaults() QueryConfig {
	return QueryConfig{Devices: 100000, PageSizes: []int{100, 1000}, MaxPages: 50, EngineRuns: 5, GetCalls: 200}
}

func (c *QueryConfig) fill() {
	d := QueryDefaults()
	if c.Devices == 0 {
		c.Devices = d.Devices
	}
	if len(c.PageSizes) == 0 {
		c.PageSizes = d.PageSizes
	}
	if c.MaxPages == 0 {
		c.MaxPages = d.MaxPages
	}
	if c.EngineRuns == 0 {
		c.EngineRuns = d.EngineRuns
	}
	if c.GetCalls == 0 {
		c.GetCalls = d.GetCalls
	}
}

// Validate reports a configuration RunQuery refuses.
func (c QueryConfig) Validate() error {
	c.fill()
	if c.Devices < 1 {
		return errors.New("bench: the query benchmark needs at least one device")
	}
	for _, n := range c.PageSizes {
		if n < 1 || n > service.MaxQueryPageSize {
			return fmt.Errorf("bench: query page size %d is out of range: want 1 to %d", n, service.MaxQueryPageSize)
		}
	}
	if c.EngineRuns < 1 || c.GetCalls < 1 {
		return errors.New("bench: EngineRuns and GetCalls must be positive")
	}
	return nil
}

// The queries measured: the matching twins of one site (a tenth of the
// registry), the same rows projected, and a GROUP BY count over all.
const (
	querySelectAll  = "SELECT * FROM devices WHERE tags.site = 'berlin'"
	queryProjection = "SELECT deviceId, tags.floor AS floor FROM devices WHERE tags.site = 'berlin'"
	queryGroupBy    = "SELECT tags.site AS site, COUNT() AS n FROM devices GROUP BY tags.site"
)

var querySites = []string{"berlin", "paris", "rome", "madrid", "vienna", "prague", "oslo", "lisbon", "dublin", "athens"}

// QueryResult is the outcome of RunQuery.
type QueryResult struct {
	Schema  string  `json:"schema"`
	Started string  `json:"started"`
	Seconds float64 `json:"seconds"`
	Machine Machine `json:"machine"`
	Devices int     `json:"devices"`
	// SeedSeconds is the time to register the devices and tag their twins
	// through the engine (no HTTP).
	SeedSeconds float64 `json:"seed_seconds"`
	// HeapBytes is the Go heap in use after seeding (hub and all).
	HeapBytes uint64 `json:"heap_bytes"`
	// GetTwin is the HTTPS floor: GET /twins/{id} round trips with the
	// same client and hub.
	GetTwin *Latency `json:"get_twin"`
	// Engine is the engine floor per query: the whole query evaluated in
	// process over every twin's cached document (Engine.QueryDocs, then
	// filter and projection), no HTTP. Snapshot is the walk over the
	// documents alone.
	Engine   []QueryEngineRow `json:"engine"`
	Snapshot *Latency         `json:"snapshot"`
	// ColdWalkMS is the first walk after seeding, in milliseconds: every
	// twin's document rendered and cached.
	ColdWalkMS float64 `json:"cold_walk_ms"`
	// HeapCachedBytes is the Go heap in use after the first walk, the
	// cached documents included.
	HeapCachedBytes uint64     `json:"heap_cached_bytes"`
	Rows            []QueryRow `json:"rows"`
	Notes           []string   `json:"notes"`
}

// QueryEngineRow is the engine floor of one query.
type QueryEngineRow struct {
	Query   string   `json:"query"`
	Matches int      `json:"matches"`
	Latency *Latency `json:"latency"`
}

// QueryRow is one query paged through with one page size.
type QueryRow struct {
	Query    string `json:"query"`
	PageSize int    `json:"page_size"`
	// Pages is the number of pages timed; Items the items they held;
	// Complete whether they were all the query's pages.
	Pages    int  `json:"pages"`
	Items    int  `json:"items"`
	Complete bool `json:"complete"`
	// PerPage is the time of one NextPage (request, evaluation, transfer,
	// decoding).
	PerPage *Latency `json:"per_page"`
	// VsEngine is PerPage.P50 over the engine floor's p50 for the query;
	// VsGetTwin over the GET /twins/{id} p50.
	VsEngine  float64 `json:"vs_engine"`
	VsGetTwin float64 `json:"vs_get_twin"`
	Error     string  `json:"error,omitempty"`
}

// RunQuery runs the query benchmark. On interruption it returns what it
// measured with ctx's error.
func RunQuery(ctx context.Context, cfg QueryConfig) (*QueryResult, error) {
	cfg.fill()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logf := func(format string, args ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "iothub bench: "+format+"\n", args...)
		}
	}
	start := time.Now()
	res := &QueryResult{Schema: "iothub-bench-query/1", Started: start.UTC().Format(time.RFC3339), Machine: machine(Config{}), Devices: cfg.Devices}
	defer func() {
		res.Seconds = round(time.Since(start).Seconds(), 1)
		res.Machine.LoadAfter = loadAvg()
	}()

	h, err := hub.Start(hub.Options{Addrs: []string{"127.0.0.1:0"}})
	if err != nil {
		return nil, err
	}
	defer h.Close()
	logf("seeding %d devices with tags", cfg.Devices)
	t0 := time.Now()
	for i := range cfg.Devices {
		if i%10000 == 0 && ctx.Err() != nil {
			return res, ctx.Err()
		}
		id := fmt.Sprintf("q-%06d", i)
		if _, herr := h.Engine.PutDevice(id, engine.Device{}, ""); herr != nil {
			return nil, herr
		}
		tags := fmt.Sprintf(`{"tags":{"site":%q,"floor":%d,"n":%d}}`, querySites[i%len(querySites)], i%50, i)
		if _, herr := h.Engine.UpdateTwin(id, "", []byte(tags), ""); herr != nil {
			return nil, herr
		}
	}
	res.SeedSeconds = round(time.Since(t0).Seconds(), 2)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapBytes = ms.HeapAlloc
	logf("seeded in %.1f s; heap %.0f MB", res.SeedSeconds, float64(ms.HeapAlloc)/(1<<20))

	// The first walk renders and caches every twin's document.
	t1 := time.Now()
	for range h.Engine.QueryDocs(engine.CollectionDevices) {
	}
	res.ColdWalkMS = round(float64(time.Since(t1).Microseconds())/1000, 1)
	runtime.GC()
	runtime.ReadMemStats(&ms)
	res.HeapCachedBytes = ms.HeapAlloc
	logf("first walk (render and cache every twin): %.1f ms; heap %.0f MB", res.ColdWalkMS, float64(ms.HeapAlloc)/(1<<20))

	// Engine floor.
	snap := make([]time.Duration, 0, cfg.EngineRuns)
	engineP50 := map[string]float64{}
	for _, sql := range []string{querySelectAll, queryProjection, queryGroupBy} {
		q, err := query.Parse(sql)
		if err != nil {
			return nil, err
		}
		d := make([]time.Duration, 0, cfg.EngineRuns)
		matches := 0
		for range cfg.EngineRuns {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			t := time.Now()
			n := 0
			for range h.Engine.QueryDocs(q.From()) {
				n++
			}
			snap = append(snap, time.Since(t))
			t = time.Now()
			rows, err := q.RunSeq(h.Engine.QueryDocs(q.From()), -1)
			d = append(d, time.Since(t))
			if err != nil {
				return nil, err
			}
			matches = len(rows)
		}
		l := summarize(d, 0, "")
		engineP50[sql] = l.P50
		res.Engine = append(res.Engine, QueryEngineRow{Query: sql, Matches: matches, Latency: l})
		logf("engine floor: %s: p50 %.1f ms, %d matches", sql, l.P50/1000, matches)
	}
	res.Snapshot = summarize(snap, 0, "")

	// The service client over HTTPS.
	_, port, _ := net.SplitHostPort(h.Addrs()[0].String())
	owner, _ := h.Engine.Policy("iothubowner")
	cs := auth.ConnectionString{HostName: h.Engine.HostName(), SharedAccessKeyName: owner.Name,
		SharedAccessKey: owner.PrimaryKey, GatewayHostName: "127.0.0.1:" + port}.Reveal()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: h.CA.Pool(), MinVersion: tls.VersionTLS12}}
	defer tr.CloseIdleConnections()
	opts := &service.ClientOptions{}
	opts.Transport = &http.Client{Transport: tr}
	svc, err := service.NewClientFromConnectionString(cs, opts)
	if err != nil {
		return nil, err
	}

	// HTTPS floor: GET /twins/{id}, after a few warm-up calls.
	d := make([]time.Duration, 0, cfg.GetCalls)
	errs, first := 0, ""
	for i := -10; i < cfg.GetCalls; i++ {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		t := time.Now()
		_, err := svc.GetTwin(ctx, fmt.Sprintf("q-%06d", (i+10)*7919%cfg.Devices))
		el := time.Since(t)
		if i < 0 {
			continue
		}
		if err != nil {
			errs++
			if first == "" {
				first = err.Error()
			}
			continue
		}
		d = append(d, el)
	}
	res.GetTwin = summarize(d, errs, first)
	logf("HTTPS floor: GET /twins/{id} p50 %.0f µs", res.GetTwin.P50)

	for _, sql := range []string{querySelectAll, queryProjection, queryGroupBy} {
		sizes := cfg.PageSizes
		if sql == queryGroupBy {
			sizes = sizes[:1] // one page of ten groups
		}
		for _, size := range sizes {
			row := pageThrough(ctx, svc, sql, size, cfg.MaxPages)
			if row.PerPage != nil && row.PerPage.P50 > 0 {
				if e := engineP50[sql]; e > 0 {
					row.VsEngine = round(row.PerPage.P50/e, 2)
				}
				if res.GetTwin.P50 > 0 {
					row.VsGetTwin = round(row.PerPage.P50/res.GetTwin.P50, 1)
				}
			}
			res.Rows = append(res.Rows, row)
			logf("%s, pages of %d: %d pages, p50 %.1f ms", sql, size, row.Pages, row.PerPage.P50/1000)
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
		}
	}
	res.Notes = append(res.Notes,
		"each page runs the query again over the engine's cached twin documents (rendered again only when a twin changes) and skips the earlier pages' items; without aggregates it stops one item after the page (internal/hub/httpd/query.go), so a page costs the walk up to its offset, not the whole registry",
		"engine floor: Query.RunSeq over Engine.QueryDocs, the whole query over every cached document, in process, no HTTP; snapshot: the walk over the cached documents alone",
		"HTTPS floor: GET /twins/{id} with the same service client and hub: what any request costs")
	return res, nil
}

// pageThrough pages through sql with pages of size, timing each NextPage,
// up to maxPages pages (negative: all).
func pageThrough(ctx context.Context, svc *service.Client, sql string, size, maxPages int) QueryRow {
	row := QueryRow{Query: sql, PageSize: size}
	pager := svc.NewQueryPager(sql, &service.QueryOptions{PageSize: size})
	var d []time.Duration
	for pager.More() && (maxPages < 0 || len(d) < maxPages) {
		t := time.Now()
		page, err := pager.NextPage(ctx)
		el := time.Since(t)
		if err != nil {
			row.Error = err.Error()
			break
		}
		d = append(d, el)
		row.Items += len(page.Items)
	}
	row.Pages = len(d)
	row.Complete = row.Error == "" && !pager.More()
	row.PerPage = summarize(d, 0, "")
	return row
}

// MarshalIndent is json.MarshalIndent of the result.
func (res *QueryResult) MarshalIndent() ([]byte, error) { return json.MarshalIndent(res, "", "  ") }

// WriteTable writes the result as tables for people.
func (res *QueryResult) WriteTable(w io.Writer) {
	m := res.Machine
	fmt.Fprintf(w, "iothub bench --query: %d CPUs (%s), %.1f GB, Linux %s, %s; load %.2f before, %.2f after; %.0f s\n",
		m.CPUs, m.CPUModel, float64(m.MemoryBytes)/(1<<30), m.Kernel, m.GoVersion, m.LoadBefore, m.LoadAfter, res.Seconds)
	fmt.Fprintf(w, "%d devices (tags.site: 10 sites), seeded through the engine in %.1f s; heap %.0f MB, %.0f MB with the query documents cached; hub in this process, HTTPS with this SDK's service client\n\n",
		res.Devices, res.SeedSeconds, float64(res.HeapBytes)/(1<<20), float64(res.HeapCachedBytes)/(1<<20))

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "floor\tmatches\tp50 ms\tp90 ms\truns\t")
	if res.GetTwin != nil {
		fmt.Fprintf(tw, "GET /twins/{id} (HTTPS)\t1\t%.3f\t%.3f\t%d\t\n", res.GetTwin.P50/1000, res.GetTwin.P90/1000, res.GetTwin.Calls)
	}
	if res.ColdWalkMS > 0 {
		fmt.Fprintf(tw, "first walk of %d twins (render, cache)\t-\t%.1f\t-\t1\t\n", res.Devices, res.ColdWalkMS)
	}
	if res.Snapshot != nil {
		fmt.Fprintf(tw, "engine snapshot of %d twins (walk of the cached documents)\t-\t%.1f\t%.1f\t%d\t\n", res.Devices, res.Snapshot.P50/1000, res.Snapshot.P90/1000, res.Snapshot.Calls)
	}
	for _, e := range res.Engine {
		fmt.Fprintf(tw, "engine: %s\t%d\t%.1f\t%.1f\t%d\t\n", e.Query, e.Matches, e.Latency.P50/1000, e.Latency.P90/1000, e.Latency.Calls)
	}
	tw.Flush()
	fmt.Fprintln(w)

	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "query (POST /devices/query)\tpage size\tpages\titems\tp50 ms/page\tp90 ms/page\tvs engine\tvs GET twin\t")
	for _, r := range res.Rows {
		pages := fmt.Sprint(r.Pages)
		if !r.Complete {
			pages += " (first)"
		}
		p50, p90 := 0.0, 0.0
		if r.PerPage != nil {
			p50, p90 = r.PerPage.P50/1000, r.PerPage.P90/1000
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%.1f\t%.1f\t%.2fx\t%.0fx\t\n", r.Query, r.PageSize, pages, r.Items, p50, p90, r.VsEngine, r.VsGetTwin)
		if r.Error != "" {
			fmt.Fprintf(tw, "  failed: %s\t\t\t\t\t\t\t\t\n", r.Error)
		}
	}
	tw.Flush()
	for _, n := range res.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}
