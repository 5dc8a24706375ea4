package engine

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/engine/query"
)

// freshDocs is the reference the cache is checked against: every twin
// rendered now and decoded, in id order, without the cache (what
// QueryTwins did before documents were cached).
func freshDocs(e *Engine, collection string) []map[string]any {
	var twins []Twin
	e.mu.Lock()
	ids := make([]string, 0, len(e.devices))
	for id := range e.devices {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		dev := e.devices[id]
		if collection == CollectionDevices {
			twins = append(twins, e.twinLocked(dev))
			continue
		}
		mids := make([]string, 0, len(dev.modules))
		for mid := range dev.modules {
			mids = append(mids, mid)
		}
		sort.Strings(mids)
		for _, mid := range mids {
			twins = append(twins, e.twinLocked(dev.modules[mid]))
		}
	}
	e.mu.Unlock()
	return decodeDocs(twins)
}

// collect reads a QueryDocs sequence whole.
func collect(e *Engine, collection string) []map[string]any {
	var out []map[string]any
	for d := range e.QueryDocs(collection) {
		out = append(out, d)
	}
	return out
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

// docOf returns the cached document of one twin, read through QueryDocs.
func docOf(t *testing.T, e *Engine, deviceID, moduleID string) map[string]any {
	t.Helper()
	coll := CollectionDevices
	if moduleID != "" {
		coll = CollectionModules
	}
	for d := range e.QueryDocs(coll) {
		if d["deviceId"] == deviceID && (moduleID == "" || d["moduleId"] == moduleID) {
			return d
		}
	}
	require.FailNow(t, "no document", "%s/%s", deviceID, moduleID)
	return nil
}

// sameMap reports whether two maps are the same map (not just equal).
func sameMap(a, b map[string]any) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// Every change GET /twins shows reaches the cached document; a twin that
// did not change keeps its document.
func TestQueryDocsInvalidation(t *testing.T) {
	e, c := newEventEngine(t) // dev1 with mod1
	_, herr := e.PutDevice("other", Device{}, "")
	require.Nil(t, herr)
	dev1, mod1 := auth.Identity{DeviceID: "dev1"}, auth.Identity{DeviceID: "dev1", ModuleID: "mod1"}

	check := func(name, deviceID, moduleID string, change func()) {
		t.Helper()
		before := docOf(t, e, deviceID, moduleID)
		other := docOf(t, e, "other", "")
		require.True(t, sameMap(before, docOf(t, e, deviceID, moduleID)), "%s: a second read without a change is the cached document", name)
		c.add(time.Second)
		change()
		after := docOf(t, e, deviceID, moduleID)
		tw, herr := e.GetTwin(deviceID, moduleID)
		require.Nil(t, herr, name)
		assert.JSONEq(t, jsonOf(t, tw), jsonOf(t, after), "%s: the document is GET /twins' twin", name)
		assert.Equal(t, decodeDoc(tw), after, "%s: the document is GET /twins' twin decoded", name)
		assert.NotEqual(t, jsonOf(t, before), jsonOf(t, after), "%s: the document changed", name)
		assert.True(t, sameMap(other, docOf(t, e, "other", "")), "%s: another twin's document is kept", name)
	}

	check("tags", "dev1", "", func() { mustPatch(t, e, "dev1", "", `{"tags":{"site":"berlin"}}`) })
	check("desired", "dev1", "", func() { mustPatch(t, e, "dev1", "", `{"properties":{"desired":{"x":1}}}`) })
	check("nested tags and arrays", "dev1", "", func() {
		mustPatch(t, e, "dev1", "", `{"tags":{"a":{"b":[1,"x",{"c":true},[2.50]]},"f":1.50,"e":{}}}`)
	})
	check("nested desired", "dev1", "", func() {
		mustPatch(t, e, "dev1", "", `{"properties":{"desired":{"x":null,"o":{"p":{"q":-0.0}},"s":"<&>"}}}`)
	})
	check("module desired", "dev1", "mod1", func() { mustPatch(t, e, "dev1", "mod1", `{"properties":{"desired":{"x":1}}}`) })
	check("replace", "dev1", "", func() {
		_, herr := e.ReplaceTwin("dev1", "", []byte(`{"tags":{"site":"paris"}}`), "*")
		require.Nil(t, herr)
	})
	check("reported", "dev1", "", func() {
		_, herr := e.UpdateReported(dev1, []byte(`{"temp":21.5}`))
		require.Nil(t, herr)
	})
	check("module reported", "dev1", "mod1", func() {
		_, herr := e.UpdateReported(mod1, []byte(`{"temp":3}`))
		require.Nil(t, herr)
	})
	check("status", "dev1", "", func() {
		_, herr := e.PutDevice("dev1", Device{Status: "disabled", StatusReason: str("maintenance")}, "*")
		require.Nil(t, herr)
	})
	check("module's device status", "dev1", "mod1", func() {
		_, herr := e.PutDevice("dev1", Device{Status: "enabled"}, "*")
		require.Nil(t, herr)
	})
	check("status reason", "dev1", "", func() {
		_, herr := e.PutDevice("dev1", Device{StatusReason: str("other reason")}, "*")
		require.Nil(t, herr)
	})
	check("capabilities", "dev1", "", func() {
		_, herr := e.PutDevice("dev1", Device{Capabilities: Capabilities{IotEdge: true}}, "*")
		require.Nil(t, herr)
	})
	check("authentication", "dev1", "mod1", func() {
		_, herr := e.PutModule("dev1", "mod1", Module{Authentication: Authentication{Type: AuthCertificateAuthority}}, "*")
		require.Nil(t, herr)
	})

	check("thumbprint", "dev1", "mod1", func() {
		_, herr := e.PutModule("dev1", "mod1", Module{Authentication: Authentication{Type: AuthSelfSigned,
			X509Thumbprint: X509Thumbprint{PrimaryThumbprint: str("0123456789abcdef0123456789abcdef01234567")}}}, "*")
		require.Nil(t, herr)
	})
	var s *Session
	check("connect", "dev1", "", func() { s = e.Connect(dev1, &twinConn{}, time.Time{}) })
	check("model id", "dev1", "", func() { s.SetModelID("dtmi:com:example:T;1") })
	check("disconnect", "dev1", "", func() { s.Disconnect() })
	var ms *Session
	check("module connect", "dev1", "mod1", func() { ms = e.Connect(mod1, &twinConn{}, time.Time{}) })
	check("module disconnect", "dev1", "mod1", func() { ms.Disconnect() })
	check("event", "dev1", "", func() { require.Nil(t, e.ReceiveEvent(Event{Identity: dev1})) })
	check("module event", "dev1", "mod1", func() { require.Nil(t, e.ReceiveEvent(Event{Identity: mod1})) })

	// Deleted and created again with the same id: the new twin, whatever
	// the old one cached.
	check("re-created device", "dev1", "", func() {
		require.Nil(t, e.DeleteDevice("dev1", "*"))
		_, herr := e.PutDevice("dev1", Device{}, "")
		require.Nil(t, herr)
	})
	assert.NotContains(t, docOf(t, e, "dev1", ""), "tags", "the re-created device has no tags")
	_, herr = e.PutModule("dev1", "mod1", Module{}, "")
	require.Nil(t, herr)
	mustPatch(t, e, "dev1", "mod1", `{"tags":{"a":1}}`)
	check("re-created module", "dev1", "mod1", func() {
		require.Nil(t, e.DeleteModule("dev1", "mod1", "*"))
		_, herr := e.PutModule("dev1", "mod1", Module{}, "")
		require.Nil(t, herr)
	})

	// Deleted: gone from the walk; added: in it, in order.
	require.Nil(t, e.DeleteDevice("other", "*"))
	_, herr = e.PutDevice("a-first", Device{}, "")
	require.Nil(t, herr)
	assert.Equal(t, freshDocs(e, CollectionDevices), collect(e, CollectionDevices))
	assert.Equal(t, freshDocs(e, CollectionModules), collect(e, CollectionModules))
}

// pageOf is the rows of the page at offset of at most size rows, the way
// POST /devices/query computes it, and whether more follow.
func pageRows(t *testing.T, e *Engine, q *query.Query, offset, size int) ([]any, bool) {
	t.Helper()
	rows, err := q.RunSeq(e.QueryDocs(q.From()), offset+size+1)
	require.NoError(t, err)
	if offset > len(rows) {
		offset = len(rows)
	}
	end := min(offset+size, len(rows))
	return rows[offset:end], end < len(rows)
}

// Paging through a few thousand twins with the cache and early stop,
// with twins changing between pages, gives each page exactly what a
// fresh, uncached, full evaluation of the query gives at that moment.
func TestQueryPagesMatchFreshEvaluation(t *testing.T) {
	e, c := newEventEngine(t)
	const n = 3000
	sites := []string{"berlin", "paris", "rome"}
	for i := range n {
		id := fmt.Sprintf("d-%05d", i)
		_, herr := e.PutDevice(id, Device{}, "")
		require.Nil(t, herr)
		mustPatch(t, e, id, "", fmt.Sprintf(`{"tags":{"site":%q,"n":%d}}`, sites[i%3], i))
		if i%7 == 0 {
			_, herr = e.PutModule(id, "m", Module{}, "")
			require.Nil(t, herr)
		}
	}
	var sessions []*Session
	step := 0
	mutate := func() {
		step++
		c.add(time.Second)
		for k := range 40 {
			i := (step*977 + k*131) % n
			id := fmt.Sprintf("d-%05d", i)
			switch k % 8 {
			case 0:
				mustPatch(t, e, id, "", fmt.Sprintf(`{"tags":{"site":%q}}`, sites[(i+step)%3]))
			case 1:
				mustPatch(t, e, id, "", fmt.Sprintf(`{"properties":{"desired":{"step":%d}}}`, step))
			case 2:
				_, herr := e.UpdateReported(auth.Identity{DeviceID: id}, []byte(fmt.Sprintf(`{"step":%d}`, step)))
				require.Nil(t, herr)
			case 3:
				status := []string{"enabled", "disabled"}[step%2]
				_, herr := e.PutDevice(id, Device{Status: status}, "*")
				require.Nil(t, herr)
			case 4:
				sessions = append(sessions, e.Connect(auth.Identity{DeviceID: id}, &twinConn{}, time.Time{}))
			case 5:
				if len(sessions) > 0 {
					sessions[0].Disconnect()
					sessions = sessions[1:]
				}
			case 6:
				require.Nil(t, e.DeleteDevice(id, "*"))
				_, herr := e.PutDevice(id, Device{}, "")
				require.Nil(t, herr)
				mustPatch(t, e, id, "", fmt.Sprintf(`{"tags":{"site":%q,"n":%d}}`, sites[step%3], i))
			case 7:
				nid := fmt.Sprintf("d-%05d-new%d", i, step)
				_, herr := e.PutDevice(nid, Device{}, "")
				require.Nil(t, herr)
				mustPatch(t, e, nid, "", `{"tags":{"site":"berlin"}}`)
			}
		}
	}

	for _, tc := range []struct {
		sql  string
		size int
	}{
		{"SELECT * FROM devices", 250},
		{"SELECT * FROM devices WHERE tags.site = 'berlin'", 100},
		{"SELECT deviceId, tags.n AS n FROM devices WHERE tags.site = 'paris' AND status = 'enabled'", 300},
		{"SELECT TOP 450 * FROM devices WHERE connectionState = 'Disconnected'", 100},
		{"SELECT tags.site AS site, COUNT() AS n FROM devices GROUP BY tags.site", 2},
		{"SELECT COUNT() AS n FROM devices WHERE properties.reported.step > 1", 100},
		{"SELECT * FROM devices.modules WHERE status = 'enabled'", 60},
	} {
		q, err := query.Parse(tc.sql)
		require.NoError(t, err, tc.sql)
		pages := 0
		for offset, more := 0, true; more; {
			got, next := pageRows(t, e, q, offset, tc.size)
			all, err := q.Run(freshDocs(e, q.From()))
			require.NoError(t, err)
			end := min(offset+tc.size, len(all))
			want := all[min(offset, end):end]
			require.Equal(t, want, got, "%s: page at %d", tc.sql, offset)
			require.Equal(t, end < len(all), next, "%s: continuation after %d", tc.sql, offset)
			offset += len(got)
			more = next
			pages++
			mutate()
		}
		t.Logf("%s: %d pages", tc.sql, pages)
	}
	for _, s := range sessions {
		s.Disconnect()
	}
}

// Walks, twin writes, connections and registry changes at once: run with
// -race. Every walk sees each twin at most once, in order.
func TestQueryDocsConcurrent(t *testing.T) {
	e, _ := newEventEngine(t)
	for i := range 600 {
		_, herr := e.PutDevice(fmt.Sprintf("c-%04d", i), Device{}, "")
		require.Nil(t, herr)
	}
	q, err := query.Parse("SELECT * FROM devices WHERE tags.k >= 0")
	require.NoError(t, err)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var once sync.Once
	halt := func() { once.Do(func() { close(stop) }); wg.Wait() }
	defer halt()
	errs := make(chan error, 8)
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("c-%04d", (i*31+w*7)%600)
				var herr *Error
				switch i % 5 {
				case 0:
					_, herr = e.UpdateTwin(id, "", []byte(fmt.Sprintf(`{"tags":{"k":%d}}`, i)), "")
				case 1:
					_, herr = e.UpdateReported(auth.Identity{DeviceID: id}, []byte(`{"r":1}`))
				case 2:
					s := e.Connect(auth.Identity{DeviceID: id}, &twinConn{}, time.Time{})
					s.Disconnect()
				case 3:
					if herr = e.DeleteDevice(id, "*"); herr == nil || herr.Code == CodeDeviceNotFound {
						_, herr = e.PutDevice(id, Device{}, "")
					}
				case 4:
					_, herr = e.PutModule(id, fmt.Sprintf("m%d", w), Module{}, "")
				}
				if herr != nil && herr.Code != CodeDeviceNotFound && herr.Code != CodeDeviceAlreadyExists &&
					herr.Code != CodeModuleAlreadyExistsOnDevice {
					errs <- herr
					return
				}
			}
		}()
	}
	for range 30 {
		for _, coll := range []string{CollectionDevices, CollectionModules} {
			var prev string
			for d := range e.QueryDocs(coll) {
				key := d["deviceId"].(string)
				if m, ok := d["moduleId"].(string); ok {
					key += "/" + m
				}
				require.Less(t, prev, key, "walk order")
				prev = key
			}
		}
		_, err := q.RunSeq(e.QueryDocs(q.From()), 50)
		require.NoError(t, err)
	}
	halt()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, freshDocs(e, CollectionDevices), collect(e, CollectionDevices))
	assert.Equal(t, freshDocs(e, CollectionModules), collect(e, CollectionModules))
}

// A walk stopped early reads only the chunks it needs.
func TestQueryDocsStopEarly(t *testing.T) {
	e, _ := newEventEngine(t)
	for i := range 3 * queryChunk {
		_, herr := e.PutDevice(fmt.Sprintf("s-%04d", i), Device{}, "")
		require.Nil(t, herr)
	}
	n := 0
	for range e.QueryDocs(CollectionDevices) {
		n++
		if n == 10 {
			break
		}
	}
	e.mu.Lock()
	cached := 0
	for _, rec := range e.devices {
		if rec.qdoc != nil {
			cached++
		}
	}
	e.mu.Unlock()
	assert.Equal(t, queryChunk, cached, "one chunk rendered")
	assert.Empty(t, collect(e, "nope"))
}
