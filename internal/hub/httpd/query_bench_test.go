package httpd

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/internal/hub/engine/query"
)

// benchQueryHub is a hub of n devices tagged with one of ten sites
// (tags.site = 'berlin' matches a tenth), behind a TLS server.
func benchQueryHub(b *testing.B, n int) (*engine.Engine, *httptest.Server, string) {
	b.Helper()
	e, err := engine.New(engine.Config{HostName: testHost})
	require.NoError(b, err)
	srv := httptest.NewTLSServer(NewHandler(e))
	b.Cleanup(srv.Close)
	b.Cleanup(e.Close)
	sites := []string{"berlin", "paris", "rome", "madrid", "vienna", "prague", "oslo", "lisbon", "dublin", "athens"}
	for i := range n {
		id := fmt.Sprintf("q-%06d", i)
		_, herr := e.PutDevice(id, engine.Device{}, "")
		require.Nil(b, herr)
		_, herr = e.UpdateTwin(id, "", []byte(fmt.Sprintf(`{"tags":{"site":%q,"n":%d}}`, sites[i%len(sites)], i)), "")
		require.Nil(b, herr)
	}
	p, ok := e.Policy("iothubowner")
	require.True(b, ok)
	tok, err := auth.SignSAS(testHost, p.Name, p.PrimaryKey, time.Now().Add(time.Hour))
	require.NoError(b, err)
	return e, srv, tok
}

// BenchmarkQueryPage times one page (POST /devices/query, 100 items)
// of a query matching a tenth of the registry, over HTTPS; each page runs
// the whole query again, so the time grows with the registry, not the
// page. BenchmarkQueryEngine is the same query in the engine, no HTTP.
func BenchmarkQueryPage(b *testing.B) {
	const sql = "SELECT * FROM devices WHERE tags.site = 'berlin'"
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			_, srv, tok := benchQueryHub(b, n)
			body := []byte(`{"query":"` + sql + `"}`)
			c := srv.Client()
			b.ResetTimer()
			for b.Loop() {
				req, err := http.NewRequest(http.MethodPost, srv.URL+"/devices/query?"+apiVersion, bytes.NewReader(body))
				require.NoError(b, err)
				req.Header.Set("Authorization", tok)
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set(headerMaxItemCount, "100")
				res, err := c.Do(req)
				require.NoError(b, err)
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				require.Equal(b, http.StatusOK, res.StatusCode)
			}
		})
	}
}

// BenchmarkQueryEngine is the engine floor of BenchmarkQueryPage: the
// twins' snapshot and the query over it, in process.
func BenchmarkQueryEngine(b *testing.B) {
	q, err := query.Parse("SELECT * FROM devices WHERE tags.site = 'berlin'")
	require.NoError(b, err)
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			e, _, _ := benchQueryHub(b, n)
			b.ResetTimer()
			for b.Loop() {
				rows, err := q.Run(e.QueryTwins(q.From()))
				require.NoError(b, err)
				require.Len(b, rows, n/10)
			}
		})
	}
}
