package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/iothub-go/iothub/internal/hub/store"
)

var persistT0 = time.Date(2026, 6, 1, 8, 0, 0, 0, time.UTC)

// openPersistEngine opens the store in dir and an engine on it; close
// stops both.
func openPersistEngine(t *testing.T, dir string, cfg Config) (e *Engine, close func()) {
	t.Helper()
	st, err := store.Open(dir)
	require.NoError(t, err)
	cfg.HostName = "h.azure-devices.net"
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return persistT0 }
	}
	cfg.Store = st
	e, err = New(cfg)
	if err != nil {
		require.NoError(t, st.Close())
		require.NoError(t, err)
	}
	var once sync.Once
	close = func() {
		once.Do(func() {
			e.Close()
			require.NoError(t, st.Close())
		})
	}
	t.Cleanup(close)
	return e, close
}

// TestPersistRestore: everything the engine keeps comes back from the
// store as it was: devices of every authentication type, an edge device
// and its child, modules, twins (tags, desired, reported, metadata,
// versions, etags, model id), cloud-to-device queues with delivery
// counts, jobs, the policies' keys and the hub clock.
func TestPersistRestore(t *testing.T) {
	dir := t.TempDir()
	e, closeE := openPersistEngine(t, dir, Config{MaxActiveJobs: -1})

	_, herr := e.PutDevice("sas1", Device{}, "")
	require.Nil(t, herr)
	_, herr = e.PutDevice("x509", Device{Authentication: Authentication{Type: AuthSelfSigned,
		X509Thumbprint: X509Thumbprint{PrimaryThumbprint: str("0123456789ABCDEF0123456789ABCDEF01234567")}}}, "")
	require.Nil(t, herr)
	_, herr = e.PutDevice("byca", Device{Status: "disabled", Authentication: Authentication{Type: AuthCertificateAuthority}}, "")
	require.Nil(t, herr)
	edge, herr := e.PutDevice("edge", Device{Capabilities: Capabilities{IotEdge: true}}, "")
	require.Nil(t, herr)
	_, herr = e.PutDevice("leaf", Device{DeviceScope: edge.DeviceScope}, "")
	require.Nil(t, herr)
	_, herr = e.PutModule("sas1", "mod1", Module{}, "")
	require.Nil(t, herr)
	_, herr = e.UpdateTwin("sas1", "", []byte(`{"tags":{"site":{"floor":3}},"properties":{"desired":{"interval":30,"list":[1,"a",{"b":true}]}}}`), "")
	require.Nil(t, herr)
	_, herr = e.UpdateTwin("sas1", "mod1", []byte(`{"properties":{"desired":{"mode":"eco"}}}`), "")
	require.Nil(t, herr)
	_, herr = e.UpdateReported(devID("sas1"), []byte(`{"temp":21.5,"fw":{"version":"1.2"}}`))
	require.Nil(t, herr)
	e.mu.Lock()
	e.setModelIDLocked(devID("sas1"), "dtmi:com:example;1")
	e.mu.Unlock()

	e.AdvanceJobClock(time.Minute)
	enqueue(t, e, "sas1", "m1", "full")
	enqueue(t, e, "sas1", "m2", "")
	m, ok := e.ReceiveC2D(devID("sas1"))
	require.True(t, ok)
	require.Nil(t, e.SettleC2D(devID("sas1"), m.LockToken, C2DAbandon))
	_, ok = e.ReceiveC2D(devID("sas1")) // m1 again, locked when the hub stops: available after
	require.True(t, ok)

	_, herr = e.CreateJob("later", []byte(`{"type":"scheduleUpdateTwin","queryCondition":"deviceId = 'sas1'",
		"updateTwin":{"etag":"*","properties":{"desired":{"x":1}}},"startTime":"2026-06-02T08:00:00Z"}`))
	require.Nil(t, herr)

	type snapshot struct {
		devices  []Device
		modules  []Module
		twins    map[string]Twin
		queue    []QueuedC2D
		job      Job
		policies map[string]string
		clock    time.Time
	}
	snap := func(e *Engine) snapshot {
		s := snapshot{devices: e.ListDevices(0), twins: map[string]Twin{}, policies: map[string]string{}}
		for _, d := range s.devices {
			tw, herr := e.GetTwin(d.DeviceID, "")
			require.Nil(t, herr)
			s.twins[d.DeviceID] = tw
		}
		var herr *Error
		s.modules, herr = e.ListModules("sas1")
		require.Nil(t, herr)
		tw, herr := e.GetTwin("sas1", "mod1")
		require.Nil(t, herr)
		s.twins["sas1/mod1"] = tw
		s.queue = e.C2DQueue("sas1")
		s.job, herr = e.GetJob("later")
		require.Nil(t, herr)
		for _, name := range []string{"iothubowner", "service", "device", "registryRead", "registryReadWrite"} {
			p, ok := e.Policy(name)
			require.True(t, ok)
			s.policies[name] = p.PrimaryKey + "/" + p.SecondaryKey
		}
		s.clock = e.JobClock()
		return s
	}
	before := snap(e)
	require.Len(t, before.queue, 2)
	assert.True(t, before.queue[0].Locked, "%+v", before.queue)
	closeE()

	e2, _ := openPersistEngine(t, dir, Config{MaxActiveJobs: -1})
	after := snap(e2)
	for i := range before.queue {
		before.queue[i].Locked = false
	}
	assert.Equal(t, before, after)
	assert.Equal(t, 1, after.queue[0].DeliveryCount)
	assert.Equal(t, "dtmi:com:example;1", after.twins["sas1"].ModelID)

	// Scopes work again: a new child of the edge device is accepted.
	_, herr = e2.PutDevice("leaf2", Device{DeviceScope: edge.DeviceScope}, "")
	require.Nil(t, herr)
	// Etags keep growing: no new etag repeats an old one.
	seen := map[string]bool{}
	for _, d := range before.devices {
		seen[d.ETag] = true
	}
	d, herr := e2.PutDevice("new", Device{}, "")
	require.Nil(t, herr)
	assert.False(t, seen[d.ETag], "etag %s reused", d.ETag)
	// The twin carries on from its stored version and etag.
	tw, herr := e2.UpdateTwin("sas1", "", []byte(`{"properties":{"desired":{"interval":60}}}`), before.twins["sas1"].ETag)
	require.Nil(t, herr)
	assert.Equal(t, before.twins["sas1"].Version+1, tw.Version)
	// The C2D sequence carries on.
	m3, herr := e2.EnqueueC2D("sas1", C2DMessage{MessageID: "m3"})
	require.Nil(t, herr)
	assert.Equal(t, int64(3), m3.SequenceNumber)
}

// TestPersistDeletes: deleted devices, modules and messages stay deleted.
func TestPersistDeletes(t *testing.T) {
	dir := t.TempDir()
	e, closeE := openPersistEngine(t, dir, Config{})
	for _, id := range []string{"a", "b"} {
		_, herr := e.PutDevice(id, Device{}, "")
		require.Nil(t, herr)
		_, herr = e.PutModule(id, "m", Module{}, "")
		require.Nil(t, herr)
	}
	require.Nil(t, e.DeleteDevice("a", ""))
	require.Nil(t, e.DeleteModule("b", "m", ""))
	enqueue(t, e, "b", "x", "")
	n, herr := e.PurgeC2D("b")
	require.Nil(t, herr)
	require.Equal(t, 1, n)
	closeE()

	e2, _ := openPersistEngine(t, dir, Config{})
	devs := e2.ListDevices(0)
	require.Len(t, devs, 1)
	assert.Equal(t, "b", devs[0].DeviceID)
	assert.Equal(t, 0, devs[0].CloudToDeviceMessageCount)
	mods, herr := e2.ListModules("b")
	require.Nil(t, herr)
	assert.Empty(t, mods)
	assert.Empty(t, e2.C2DQueue("b"))
}

// TestPersistOwnerKey: the policies' keys are kept, and Config.OwnerKey
// replaces the stored owner key (and is kept in turn).
func TestPersistOwnerKey(t *testing.T) {
	dir := t.TempDir()
	e, closeE := openPersistEngine(t, dir, Config{})
	p1, _ := e.Policy("iothubowner")
	closeE()
	e, closeE = openPersistEngine(t, dir, Config{})
	p2, _ := e.Policy("iothubowner")
	assert.Equal(t, p1, p2)
	closeE()
	key := "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq8w="
	e, closeE = openPersistEngine(t, dir, Config{OwnerKey: key})
	p3, _ := e.Policy("iothubowner")
	assert.Equal(t, key, p3.PrimaryKey)
	assert.Equal(t, p1.SecondaryKey, p3.SecondaryKey)
	closeE()
	e, _ = openPersistEngine(t, dir, Config{})
	p4, _ := e.Policy("iothubowner")
	assert.Equal(t, key, p4.PrimaryKey)
}

// TestPersistRunningJob: a job running when the hub stopped comes back
// failed, its unfinished devices canceled; a finished one as it was.
func TestPersistRunningJob(t *testing.T) {
	dir := t.TempDir()
	e, closeE := openPersistEngine(t, dir, Config{Now: time.Now, MaxActiveJobs: -1})
	_, herr := e.PutDevice("d1", Device{}, "")
	require.Nil(t, herr)
	c := connectAnswering(t, e, "d1", 200, "{}", true) // never answers
	_, herr = e.CreateJob("hang", []byte(`{"type":"scheduleDeviceMethod","queryCondition":"deviceId = 'd1'",
		"cloudToDeviceMethod":{"methodName":"m","responseTimeoutInSeconds":300}}`))
	require.Nil(t, herr)
	require.Eventually(t, func() bool { return c.calls.Load() == 1 }, 10*time.Second, time.Millisecond)
	_, herr = e.CreateJob("twin", []byte(`{"type":"scheduleUpdateTwin","queryCondition":"deviceId = 'd1'",
		"updateTwin":{"etag":"*","tags":{"t":1}}}`))
	require.Nil(t, herr)
	require.Eventually(t, func() bool {
		j, _ := e.GetJob("twin")
		return j.Status == JobStatusCompleted
	}, 10*time.Second, time.Millisecond)
	twinJob, _ := e.GetJob("twin")
	// A hard stop: the store is closed under the running job, as a crash
	// leaves it.
	closeE()

	e2, _ := openPersistEngine(t, dir, Config{Now: time.Now, MaxActiveJobs: -1})
	j, herr := e2.GetJob("hang")
	require.Nil(t, herr)
	assert.Equal(t, JobStatusFailed, j.Status)
	assert.NotEmpty(t, j.FailureReason)
	assert.Equal(t, 1, j.DeviceJobStatistics.DeviceCount)
	j2, herr := e2.GetJob("twin")
	require.Nil(t, herr)
	assert.Equal(t, twinJob, j2)
	tw, herr := e2.GetTwin("d1", "")
	require.Nil(t, herr)
	assert.JSONEq(t, `{"t":1}`, string(tw.Tags))
}

// failingStore refuses every write.
type failingStore struct{}

func (failingStore) Load(func(bucket, key string, val []byte) error) error { return nil }
func (failingStore) Put(bucket, key string, val []byte) *store.Ticket {
	if key == metaPolicies {
		return store.Done(nil)
	}
	return store.Done(errors.New("iothub: disk full"))
}
func (failingStore) Delete(bucket, key string) *store.Ticket {
	return store.Done(errors.New("iothub: disk full"))
}
func (failingStore) Reserve(bucket, key string) *store.Slot {
	return store.SlotFunc(func([]byte, error) *store.Ticket { return store.Done(errors.New("iothub: disk full")) })
}

// TestPersistStoreFailure: a change the store refuses is answered with a
// server error, not acknowledged.
func TestPersistStoreFailure(t *testing.T) {
	e, err := New(Config{Store: failingStore{}})
	require.NoError(t, err)
	t.Cleanup(e.Close)
	_, herr := e.PutDevice("d", Device{}, "")
	require.NotNil(t, herr)
	assert.Equal(t, CodeServerError, herr.Code)
	_, herr = e.UpdateTwin("d", "", []byte(`{"tags":{"a":1}}`), "")
	require.NotNil(t, herr)
	assert.Equal(t, CodeServerError, herr.Code)
	_, herr = e.CreateJob("j", []byte(`{"type":"scheduleUpdateTwin","queryCondition":"deviceId = 'd'","updateTwin":{"etag":"*","tags":{"t":1}}}`))
	require.NotNil(t, herr)
	assert.Equal(t, CodeServerError, herr.Code)
}

// TestPersistBadRecord: a damaged record stops New with an "iothub: "
// error.
func TestPersistBadRecord(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir)
	require.NoError(t, err)
	require.NoError(t, st.Put(store.Identities, "d1", []byte(`{"device":{"deviceId":"other"}}`)).Wait())
	_, err = New(Config{Store: st})
	require.Error(t, err)
	assert.Regexp(t, `^iothub: stored device "d1"`, err.Error())
	require.NoError(t, st.Close())
}

// encodedSeeds returns records the engine writes, for the fuzz targets'
// seed corpus.
func encodedSeeds(t testing.TB) (identities, jobs [][]byte) {
	t.Helper()
	st := &memStore{}
	e, err := New(Config{Store: st, Now: func() time.Time { return persistT0 }, MaxActiveJobs: -1})
	require.NoError(t, err)
	defer e.Close()
	_, herr := e.PutDevice("d1", Device{}, "")
	require.Nil(t, herr)
	_, herr = e.PutDevice("e1", Device{Capabilities: Capabilities{IotEdge: true}}, "")
	require.Nil(t, herr)
	_, herr = e.PutModule("d1", "m1", Module{}, "")
	require.Nil(t, herr)
	_, herr = e.UpdateTwin("d1", "", []byte(`{"tags":{"a":{"b":1}},"properties":{"desired":{"x":[1,{"y":"z"}],"s":"t"}}}`), "")
	require.Nil(t, herr)
	_, herr = e.EnqueueC2D("d1", C2DMessage{MessageID: "m", Body: []byte{0, 1}, Properties: map[string]string{"k": "v"}})
	require.Nil(t, herr)
	_, herr = e.CreateJob("j1", []byte(`{"type":"scheduleDeviceMethod","queryCondition":"deviceId = 'd1'","cloudToDeviceMethod":{"methodName":"m"},"startTime":"2027-01-01T00:00:00Z"}`))
	require.Nil(t, herr)
	st.mu.Lock()
	defer st.mu.Unlock()
	for k, v := range st.m {
		switch k.bucket {
		case store.Identities:
			identities = append(identities, v)
		case store.Jobs:
			jobs = append(jobs, v)
		}
	}
	return identities, jobs
}

type memKey struct{ bucket, key string }

// memStore keeps records in memory.
type memStore struct {
	mu sync.Mutex
	m  map[memKey][]byte
}

func (s *memStore) Load(func(bucket, key string, val []byte) error) error { return nil }
func (s *memStore) Put(bucket, key string, val []byte) *store.Ticket {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[memKey][]byte{}
	}
	s.m[memKey{bucket, key}] = append([]byte(nil), val...)
	return store.Done(nil)
}
func (s *memStore) Delete(bucket, key string) *store.Ticket {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, memKey{bucket, key})
	return store.Done(nil)
}
func (s *memStore) Reserve(bucket, key string) *store.Slot {
	return store.SlotFunc(func(val []byte, err error) *store.Ticket {
		if err != nil {
			return store.Done(err)
		}
		if val == nil {
			return s.Delete(bucket, key)
		}
		return s.Put(bucket, key, val)
	})
}

// FuzzDecodeIdentity: whatever bytes a stored device record holds,
// decoding gives a record or an "iothub: " error, never a panic, and a
// record it accepts renders as a twin.
func FuzzDecodeIdentity(f *testing.F) {
	ids, _ := encodedSeeds(f)
	for _, b := range ids {
		var v struct {
			Device struct{ DeviceID string } `json:"device"`
		}
		require.NoError(f, json.Unmarshal(b, &v))
		f.Add(v.Device.DeviceID, b)
	}
	f.Add("d1", []byte(`{}`))
	f.Add("d1", []byte(`{"device":null}`))
	f.Add("d1", []byte(`{"device":{"deviceId":"d1","status":"enabled","authentication":{"type":"sas"}}}`))
	f.Add("d1", []byte(`{"device":{"deviceId":"d1","status":"enabled","authentication":{"type":"none"}},"twin":{"tags":{"k":{"a":{"k":null,"v":"1"}}}}}`))
	f.Add("d1", []byte(`{"device":{"deviceId":"d1","status":"enabled","authentication":{"type":"none"}},"modules":[{"module":null}]}`))
	f.Add("d1", []byte(`{"device":{"deviceId":"d1","status":"enabled","authentication":{"type":"none"}},"c2d":{"seq":1,"msgs":[{}]}}`))
	f.Add("d1", []byte("\xff"))
	f.Fuzz(func(t *testing.T, key string, b []byte) {
		rec, err := decodeIdentity(key, b)
		if err != nil {
			require.Regexp(t, `^iothub: `, err.Error())
			require.Nil(t, rec)
			return
		}
		e := &Engine{devices: map[string]*identityRecord{key: rec}, now: func() time.Time { return persistT0 }}
		_ = e.twinLocked(rec)
		for _, m := range rec.modules {
			_ = e.twinLocked(m)
		}
	})
}

// FuzzDecodeJob: the same for stored jobs.
func FuzzDecodeJob(f *testing.F) {
	_, jobs := encodedSeeds(f)
	for _, b := range jobs {
		f.Add("j1", b)
	}
	f.Add("j1", []byte(`{"request":{"type":"scheduleUpdateTwin"},"status":"running"}`))
	f.Add("j1", []byte(`{"request":null}`))
	f.Add("j1", []byte(`[]`))
	f.Fuzz(func(t *testing.T, key string, b []byte) {
		r, err := decodeJob(key, b, persistT0)
		if err != nil {
			require.Regexp(t, `^iothub: `, err.Error())
			require.Nil(t, r)
			return
		}
		e := &Engine{}
		_ = e.jobLocked(r)
		for _, d := range r.devices {
			_ = deviceJobLocked(r, d)
		}
	})
}

// BenchmarkPersistTwinUpdate is UpdateTwin with and without a store
// (fsync'd bbolt in a temporary directory), one caller at a time and
// 16 × GOMAXPROCS callers on 16 devices at once (the store's group
// commit):
//
//	go test -run XXX -bench PersistTwinUpdate ./internal/hub/engine/
func BenchmarkPersistTwinUpdate(b *testing.B) {
	body := []byte(`{"tags":{"site":"lab"},"properties":{"desired":{"interval":30,"mode":"eco","limits":{"lo":1,"hi":9}}}}`)
	for _, tc := range []struct {
		name     string
		store    bool
		parallel int
	}{{"memory", false, 1}, {"store", true, 1}, {"memory-16", false, 16}, {"store-16", true, 16}} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := Config{}
			var st *store.Store
			if tc.store {
				var err error
				st, err = store.Open(b.TempDir())
				require.NoError(b, err)
				cfg.Store = st
			}
			e, err := New(cfg)
			require.NoError(b, err)
			ids := make([]string, 16)
			for i := range ids {
				ids[i] = fmt.Sprintf("d%d", i)
				_, herr := e.PutDevice(ids[i], Device{}, "")
				require.Nil(b, herr)
			}
			var next atomic.Int64
			b.SetParallelism(tc.parallel)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				id := ids[int(next.Add(1)-1)%len(ids)]
				for pb.Next() {
					if _, herr := e.UpdateTwin(id, "", body, ""); herr != nil {
						b.Error(herr)
						return
					}
				}
			})
			b.StopTimer()
			e.Close()
			if st != nil {
				commits, writes := st.Stats()
				b.ReportMetric(float64(writes)/float64(max(commits, 1)), "writes/commit")
				require.NoError(b, st.Close())
			}
		})
	}
}

// BenchmarkPersistEncode is the work a change costs with a store, and
// the part of it done under the engine's lock (the snapshot; the encoding
// runs after), for a device record whose twin has 40 desired and 40
// reported properties, and one module.
//
//	go test -run XXX -bench PersistEncode ./internal/hub/engine/
func BenchmarkPersistEncode(b *testing.B) {
	st := &memStore{}
	e, err := New(Config{Store: st})
	require.NoError(b, err)
	defer e.Close()
	_, herr := e.PutDevice("d", Device{}, "")
	require.Nil(b, herr)
	_, herr = e.PutModule("d", "m", Module{}, "")
	require.Nil(b, herr)
	props := map[string]any{}
	for i := range 40 {
		props[fmt.Sprintf("p%02d", i)] = map[string]any{"value": i, "unit": "celsius"}
	}
	patch, _ := json.Marshal(map[string]any{"properties": map[string]any{"desired": props}})
	_, herr = e.UpdateTwin("d", "", patch, "")
	require.Nil(b, herr)
	reported, _ := json.Marshal(props)
	_, herr = e.UpdateReported(devID("d"), reported)
	require.Nil(b, herr)
	var locked time.Duration
	for b.Loop() {
		e.mu.Lock()
		t0 := time.Now()
		p := e.saveIdentityLocked("d")
		locked += time.Since(t0)
		e.mu.Unlock()
		require.NoError(b, p.Wait())
	}
	b.ReportMetric(float64(locked.Nanoseconds())/float64(b.N)/1e3, "µs-under-lock")
	st.mu.Lock()
	b.ReportMetric(float64(len(st.m[memKey{store.Identities, "d"}])), "record-bytes")
	st.mu.Unlock()
}
