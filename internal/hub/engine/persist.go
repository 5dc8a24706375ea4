package engine

// Persistence (iothub hub --data): with Config.Store set, every change the
// engine acknowledges is written to the store before the mutating method
// returns, and New loads what the store holds. Without a store none of
// this runs: every hook starts with a nil check.
//
// What is stored, as JSON (the store only keeps bytes under keys):
//   - per device (bucket store.Identities, key = device id): the registry
//     device, its twin, its modules with their twins, and its
//     cloud-to-device queue (messages, delivery counts, sequence number;
//     not locks: a message locked when the hub stopped is available again
//     after it starts, as when a lock expires);
//   - per job (store.Jobs, key = job id): the request as received and the
//     job's progress;
//   - hub-wide (store.Meta): the shared access policies' keys, the hub
//     clock's offset (AdvanceJobClock) and the etag counter.
//
// Times are absolute, on the hub clock, so expiries and job start times
// keep their meaning across a restart. Connection state is not stored: a
// hub that starts has no connections. The feedback queue is not stored.
//
// Order: a device record's place in the store's queue is taken, and a
// snapshot of it made, while the engine's lock is held, so the store
// commits the versions of one record in the order they were made. The
// snapshot is cheap: twin trees are copy-on-write (querydocs.go), so it
// copies a few structs and pointers. After releasing the lock the method
// encodes the snapshot, hands it to its place and waits for the commit,
// so that neither the encoding nor the disk's latency holds up other
// operations, and concurrent writes share commits. Jobs are encoded and
// queued under the jobs' lock.

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/iothub-go/iothub/auth"
	"github.com/iothub-go/iothub/internal/hub/store"
	"github.com/iothub-go/iothub/internal/hubauth"
)

// Store is the durable storage an Engine writes through (package store
// implements it). Put and Delete queue a write in order without waiting
// for the disk; the Ticket's Wait returns when it is durable.
//
// Reserve takes a place in the order for a write whose bytes the Slot's
// Fill gives later (nil bytes: a delete); the engine always fills it.
type Store interface {
	Load(fn func(bucket, key string, val []byte) error) error
	Put(bucket, key string, val []byte) *store.Ticket
	Delete(bucket, key string) *store.Ticket
	Reserve(bucket, key string) *store.Slot
}

// pendingSave is a write on its way to the store: a ticket, or a slot and
// the encoding that fills it. nil is a write that was not needed (no
// store).
type pendingSave struct {
	t    *store.Ticket
	slot *store.Slot
	enc  func() ([]byte, error)
}

// fill encodes the write into its slot (once), outside any lock.
func (p *pendingSave) fill() {
	if p != nil && p.slot != nil {
		p.t = p.slot.Fill(p.enc())
		p.slot, p.enc = nil, nil
	}
}

// Wait fills the write and waits until it is durable.
func (p *pendingSave) Wait() error {
	if p == nil {
		return nil
	}
	p.fill()
	return p.t.Wait()
}

func ticket(t *store.Ticket) *pendingSave { return &pendingSave{t: t} }

// Meta keys.
const (
	metaPolicies = "policies"
	metaClock    = "clock"
	metaETag     = "etag"
)

// storedIdentity is a device's record in the store.
type storedIdentity struct {
	Device  *Device        `json:"device"`
	Twin    *storedTwin    `json:"twin,omitempty"`
	Modules []storedModule `json:"modules,omitempty"`
	C2D     *storedC2D     `json:"c2d,omitempty"`
}

type storedModule struct {
	Module *Module     `json:"module"`
	Twin   *storedTwin `json:"twin,omitempty"`
}

type storedTwin struct {
	Tags            *storedNode `json:"tags"`
	Desired         *storedNode `json:"desired"`
	DesiredVersion  int64       `json:"desiredVersion"`
	Reported        *storedNode `json:"reported"`
	ReportedVersion int64       `json:"reportedVersion"`
	Version         int64       `json:"version"`
	ETagSeq         uint64      `json:"etagSeq"`
	ModelID         string      `json:"modelId,omitempty"`
}

// storedNode is a tnode: an object (K not null) or a leaf (V).
type storedNode struct {
	V json.RawMessage        `json:"v,omitempty"`
	K map[string]*storedNode `json:"k"`
	T time.Time              `json:"t"`
	N int64                  `json:"n,omitempty"`
}

type storedC2D struct {
	Seq  int64        `json:"seq"`
	Msgs []C2DMessage `json:"msgs"`
}

// storedPolicy is a shared access policy's keys (its rights are the
// default policy's of that name).
type storedPolicy struct {
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
}

// storedJob is a job's record.
type storedJob struct {
	Request json.RawMessage   `json:"request"`
	Created time.Time         `json:"created"`
	Start   time.Time         `json:"start"`
	Status  string            `json:"status"`
	Started time.Time         `json:"started"`
	Ended   time.Time         `json:"ended"`
	Stopped string            `json:"stopped,omitempty"`
	Failure string            `json:"failureReason,omitempty"`
	Devices []storedDeviceJob `json:"devices,omitempty"`
}

type storedDeviceJob struct {
	ID      string                `json:"id"`
	Status  string                `json:"status"`
	Created time.Time             `json:"created"`
	Start   time.Time             `json:"start"`
	End     time.Time             `json:"end"`
	Updated time.Time             `json:"updated"`
	Answer  *DeviceMethodResponse `json:"answer,omitempty"`
	Err     *DeviceJobError       `json:"error,omitempty"`
}

// storeError is the answer to an operation whose change could not be
// made durable.
func storeError(err error) *Error {
	return NewError(CodeServerError, "The hub could not store the change: %s", trimPrefix(err))
}

// waitStore waits for *p (nil: nothing was written) and turns a failure
// into *herr unless the operation already failed. Methods that unlock
// with defer call it deferred before locking, so that it runs after the
// unlock.
func waitStore(p **pendingSave, herr **Error) {
	if err := (*p).Wait(); err != nil && *herr == nil {
		*herr = storeError(err)
	}
}

// commit waits for p; nil when there is nothing to wait for or it is
// durable.
func commit(p *pendingSave) *Error {
	if err := p.Wait(); err != nil {
		return storeError(err)
	}
	return nil
}

// saveIdentityLocked takes the store's next place for device id's record
// and snapshots the record (a delete when the device no longer exists);
// the returned write's Wait, after e.mu is released, encodes and commits
// it. nil without a store.
func (e *Engine) saveIdentityLocked(id string) *pendingSave {
	if e.store == nil {
		return nil
	}
	rec := e.devices[id]
	if rec == nil {
		t := e.store.Delete(store.Identities, id)
		// The etag counter is found again from the records at load; only
		// a delete can take the highest etag away with it.
		e.store.Put(store.Meta, metaETag, []byte(strconv.FormatUint(e.etagSeq, 10)))
		return ticket(t)
	}
	// The snapshot: copies of the structs the engine changes in place;
	// the twin trees they point to are never changed once installed.
	dev := cloneDevice(rec.device)
	twin := *e.twinOf(rec)
	type modSnap struct {
		m    Module
		twin twinState
	}
	mods := make([]modSnap, 0, len(rec.modules))
	for _, mid := range slices.Sorted(maps.Keys(rec.modules)) {
		m := rec.modules[mid]
		mods = append(mods, modSnap{*m.module, *e.twinOf(m)})
	}
	var c2d *storedC2D
	if q := rec.c2d; q != nil && (len(q.msgs) > 0 || q.seq > 0) {
		c2d = &storedC2D{Seq: q.seq, Msgs: make([]C2DMessage, len(q.msgs))}
		for i, m := range q.msgs {
			c2d.Msgs[i] = m.msg // Body and Properties are never changed after enqueue
		}
	}
	enc := func() ([]byte, error) {
		si := storedIdentity{Device: &dev, Twin: storeTwin(&twin), C2D: c2d}
		for i := range mods {
			si.Modules = append(si.Modules, storedModule{Module: &mods[i].m, Twin: storeTwin(&mods[i].twin)})
		}
		b, err := json.Marshal(si)
		if err != nil {
			return nil, fmt.Errorf("iothub: encoding device %s: %w", id, err)
		}
		return b, nil
	}
	return &pendingSave{slot: e.store.Reserve(store.Identities, id), enc: enc}
}

func storeTwin(t *twinState) *storedTwin {
	return &storedTwin{
		Tags: storeNode(t.tags), Desired: storeNode(t.desired.root), DesiredVersion: t.desired.version,
		Reported: storeNode(t.reported.root), ReportedVersion: t.reported.version,
		Version: t.version, ETagSeq: t.etagSeq, ModelID: t.modelID,
	}
}

func storeNode(n *tnode) *storedNode {
	s := &storedNode{T: n.at, N: n.ver}
	if n.kids == nil {
		s.V = marshalSorted(n.val)
		return s
	}
	s.K = make(map[string]*storedNode, len(n.kids))
	for k, c := range n.kids {
		s.K[k] = storeNode(c)
	}
	return s
}

// decodeIdentity decodes and checks a stored device record; key is the
// device id it is stored under. Bad bytes give an "iothub: " error.
func decodeIdentity(key string, b []byte) (*identityRecord, error) {
	var si storedIdentity
	if err := json.Unmarshal(b, &si); err != nil {
		return nil, fmt.Errorf("iothub: stored device %q: %w", clipKey(key), err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("iothub: stored device %q: %s", clipKey(key), fmt.Sprintf(format, args...))
	}
	d := si.Device
	if d == nil {
		return nil, bad("no device")
	}
	if d.DeviceID != key || auth.CheckID(key) != nil {
		return nil, bad("the record names device %q", clipKey(d.DeviceID))
	}
	if _, herr := checkStatus(d.Status); herr != nil || d.Status == "" {
		return nil, bad("status %q", clipKey(d.Status))
	}
	if err := checkStoredAuth(d.Authentication); err != nil {
		return nil, bad("%v", err)
	}
	if d.ParentScopes == nil {
		d.ParentScopes = []string{}
	}
	if d.Capabilities.IotEdge && d.DeviceScope == nil {
		return nil, bad("an edge device without a scope")
	}
	d.ConnectionState = "Disconnected"
	rec := &identityRecord{device: d, modules: map[string]*identityRecord{}}
	var err error
	if rec.twin, err = loadTwin(si.Twin); err != nil {
		return nil, bad("twin: %v", err)
	}
	for _, sm := range si.Modules {
		m := sm.Module
		if m == nil || m.DeviceID != key || auth.CheckID(m.ModuleID) != nil || rec.modules[m.ModuleID] != nil {
			return nil, bad("a module record is missing, misnamed or repeated")
		}
		if err := checkStoredAuth(m.Authentication); err != nil {
			return nil, bad("module %q: %v", clipKey(m.ModuleID), err)
		}
		m.ConnectionState = "Disconnected"
		mr := &identityRecord{module: m}
		if mr.twin, err = loadTwin(sm.Twin); err != nil {
			return nil, bad("module %q twin: %v", clipKey(m.ModuleID), err)
		}
		rec.modules[m.ModuleID] = mr
	}
	if c := si.C2D; c != nil {
		q := &c2dQueue{seq: c.Seq, changed: make(chan struct{})}
		for i := range c.Msgs {
			m := c.Msgs[i]
			if m.ExpiryTime.IsZero() || m.SequenceNumber <= 0 || m.SequenceNumber > c.Seq || m.DeliveryCount < 0 {
				return nil, bad("cloud-to-device message %d is not valid", i)
			}
			m.LockToken = ""
			q.msgs = append(q.msgs, &c2dEntry{msg: m})
		}
		rec.c2d = q
		d.CloudToDeviceMessageCount = len(q.msgs)
	}
	return rec, nil
}

// checkStoredAuth checks that a stored Authentication is one
// normalizeAuth makes: a known type with its keys or thumbprints.
func checkStoredAuth(a Authentication) error {
	n, herr := normalizeAuth(a)
	if herr != nil {
		return errors.New(herr.Message)
	}
	if n.Type != a.Type || (a.Type == AuthSAS && (a.SymmetricKey.PrimaryKey == nil || a.SymmetricKey.SecondaryKey == nil)) {
		return fmt.Errorf("authentication of type %q is not valid", clipKey(a.Type))
	}
	return nil
}

// loadTwin rebuilds a twin; nil stays nil (created on first use).
func loadTwin(s *storedTwin) (*twinState, error) {
	if s == nil {
		return nil, nil
	}
	if s.Tags == nil || s.Desired == nil || s.Reported == nil {
		return nil, errors.New("a section is missing")
	}
	if s.Version < 0 || s.DesiredVersion < 0 || s.ReportedVersion < 0 {
		return nil, errors.New("a negative version")
	}
	t := &twinState{version: s.Version, etagSeq: s.ETagSeq, modelID: s.ModelID,
		desired: twinSection{version: s.DesiredVersion}, reported: twinSection{version: s.ReportedVersion}}
	var err error
	for _, x := range []struct {
		dst **tnode
		src *storedNode
	}{{&t.tags, s.Tags}, {&t.desired.root, s.Desired}, {&t.reported.root, s.Reported}} {
		if *x.dst, err = loadNode(x.src, 0); err != nil {
			return nil, err
		}
		if (*x.dst).kids == nil {
			return nil, errors.New("a section is not an object")
		}
	}
	return t, nil
}

func loadNode(s *storedNode, depth int) (*tnode, error) {
	if s == nil {
		return nil, errors.New("a null node")
	}
	if depth > MaxTwinDepth+1 {
		return nil, errors.New("nested too deeply")
	}
	n := &tnode{at: s.T, ver: s.N}
	if s.K != nil {
		if len(s.V) > 0 {
			return nil, errors.New("a node is both an object and a value")
		}
		n.kids = make(map[string]*tnode, len(s.K))
		for k, c := range s.K {
			if err := checkTwinKey("twin", k); err != nil {
				return nil, err
			}
			kid, err := loadNode(c, depth+1)
			if err != nil {
				return nil, err
			}
			n.kids[k] = kid
		}
		return n, nil
	}
	v, err := decodeTwinJSON(s.V)
	if err != nil {
		return nil, err
	}
	switch v.(type) {
	case string, json.Number, bool, []any:
	default:
		return nil, errors.New("a leaf that is null or an object")
	}
	if err := checkTwinValue("twin", v, depth, false); err != nil {
		return nil, err
	}
	n.val = v
	return n, nil
}

// saveJobLocked queues job r's record (jobs.mu held). nil without a
// store.
func (e *Engine) saveJobLocked(r *jobRec) *pendingSave {
	if e.store == nil {
		return nil
	}
	sj := storedJob{Request: r.body, Created: r.created, Start: r.start, Status: r.status, Started: r.started,
		Ended: r.ended, Stopped: r.stopped, Failure: r.req.FailureReason}
	for _, d := range r.devices {
		sj.Devices = append(sj.Devices, storedDeviceJob{ID: d.id, Status: d.status, Created: d.created, Start: d.start,
			End: d.end, Updated: d.updated, Answer: d.answer, Err: d.err})
	}
	b, err := json.Marshal(sj)
	if err != nil {
		return ticket(store.Done(fmt.Errorf("iothub: encoding job %s: %w", r.req.JobID, err)))
	}
	return ticket(e.store.Put(store.Jobs, r.req.JobID, b))
}

// decodeJob decodes and checks a stored job; key is its id. A job that
// was running when the hub stopped is loaded as failed, its unfinished
// device jobs canceled, at now.
func decodeJob(key string, b []byte, now time.Time) (*jobRec, error) {
	var sj storedJob
	if err := json.Unmarshal(b, &sj); err != nil {
		return nil, fmt.Errorf("iothub: stored job %q: %w", clipKey(key), err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("iothub: stored job %q: %s", clipKey(key), fmt.Sprintf(format, args...))
	}
	j, p, herr := parseJobRequest(key, sj.Request)
	if herr != nil {
		return nil, bad("%s", herr.Message)
	}
	j.FailureReason = sj.Failure
	r := &jobRec{req: j, body: sj.Request, cond: p.cond, method: p.method, patch: p.patch, maxExec: p.maxExec,
		created: sj.Created, start: sj.Start, status: sj.Status, started: sj.Started, ended: sj.Ended, stopped: sj.Stopped}
	switch sj.Status {
	case JobStatusQueued, JobStatusScheduled, JobStatusCompleted, JobStatusFailed, JobStatusCancelled:
	case JobStatusRunning:
		r.status, r.ended = JobStatusFailed, now
		r.req.FailureReason = "The hub stopped while the job was running."
	default:
		return nil, bad("status %q", clipKey(sj.Status))
	}
	for _, d := range sj.Devices {
		switch d.Status {
		case DeviceJobPending, DeviceJobRunning:
			if sj.Status == JobStatusRunning {
				d.Status, d.End, d.Updated = DeviceJobCanceled, now, now
			}
		case DeviceJobCompleted, DeviceJobFailed, DeviceJobCanceled:
		default:
			return nil, bad("device job status %q", clipKey(d.Status))
		}
		if auth.CheckID(d.ID) != nil {
			return nil, bad("a device job names no valid device")
		}
		r.devices = append(r.devices, &deviceJobRec{id: d.ID, status: d.Status, created: d.Created, start: d.Start,
			end: d.End, updated: d.Updated, answer: d.Answer, err: d.Err})
	}
	return r, nil
}

// decodePolicies decodes the stored policies' keys.
func decodePolicies(b []byte) (map[string]hubauth.Policy, error) {
	var sp map[string]storedPolicy
	if err := json.Unmarshal(b, &sp); err != nil {
		return nil, fmt.Errorf("iothub: stored policies: %w", err)
	}
	out := map[string]hubauth.Policy{}
	for name, rights := range hubauth.DefaultPolicyRights() {
		p, ok := sp[name]
		if !ok {
			return nil, fmt.Errorf("iothub: stored policies: %s is missing", name)
		}
		for _, k := range []string{p.PrimaryKey, p.SecondaryKey} {
			if b, err := base64.StdEncoding.DecodeString(k); err != nil || len(b) < 16 || len(b) > 64 {
				return nil, fmt.Errorf("iothub: stored policies: a key of %s is not valid", name)
			}
		}
		out[name] = hubauth.Policy{Name: name, PrimaryKey: p.PrimaryKey, SecondaryKey: p.SecondaryKey, Rights: rights}
	}
	return out, nil
}

func (e *Engine) savePolicies() *store.Ticket {
	sp := map[string]storedPolicy{}
	for name, p := range e.policies {
		sp[name] = storedPolicy{PrimaryKey: p.PrimaryKey, SecondaryKey: p.SecondaryKey}
	}
	b, _ := json.Marshal(sp) // strings only
	return e.store.Put(store.Meta, metaPolicies, b)
}

// load reads the store into a new engine (New, before anyone else sees
// it). ownerKey is Config.OwnerKey: when set it replaces a stored
// iothubowner primary key.
func (e *Engine) load(ownerKey string) error {
	// The C2D timer already runs; the jobs scheduler does not yet.
	e.mu.Lock()
	defer e.mu.Unlock()
	e.jobs.mu.Lock()
	defer e.jobs.mu.Unlock()
	var policies map[string]hubauth.Policy
	var jobs []*jobRec
	err := e.store.Load(func(bucket, key string, val []byte) error {
		switch bucket {
		case store.Meta:
			switch key {
			case metaPolicies:
				p, err := decodePolicies(val)
				if err != nil {
					return err
				}
				policies = p
			case metaClock:
				d, err := strconv.ParseInt(string(val), 10, 64)
				if err != nil || d < 0 {
					return errors.New("iothub: the stored hub clock offset is not valid")
				}
				e.clockOffset.Store(d)
			case metaETag:
				n, err := strconv.ParseUint(string(val), 10, 64)
				if err != nil {
					return errors.New("iothub: the stored etag counter is not valid")
				}
				e.etagSeq = max(e.etagSeq, n)
			}
		case store.Identities:
			rec, err := decodeIdentity(key, val)
			if err != nil {
				return err
			}
			e.devices[key] = rec
			e.members += 1 + uint64(len(rec.modules))
			for _, x := range append([]*identityRecord{rec}, slices.Collect(maps.Values(rec.modules))...) {
				e.etagSeq = max(e.etagSeq, etagNumber(x))
			}
			if rec.c2d != nil && len(rec.c2d.msgs) > 0 {
				e.c2d.active[key] = rec.c2d
			}
		case store.Jobs:
			r, err := decodeJob(key, val, e.hubNow())
			if err != nil {
				return err
			}
			jobs = append(jobs, r)
		}
		return nil
	})
	if err != nil {
		if !strings.HasPrefix(err.Error(), "iothub: ") {
			err = fmt.Errorf("iothub: reading the hub's store: %w", err)
		}
		return err
	}
	// Edge devices' scopes, once every device is known.
	for id, rec := range e.devices {
		if d := rec.device; d.Capabilities.IotEdge {
			e.scopes[*d.DeviceScope] = id
		}
	}
	if policies != nil {
		e.policies = policies
	}
	owner := e.policies["iothubowner"]
	if ownerKey != "" && owner.PrimaryKey != ownerKey {
		owner.PrimaryKey = ownerKey
		e.policies["iothubowner"] = owner
		policies = nil
	}
	if policies == nil {
		if err := e.savePolicies().Wait(); err != nil {
			return err
		}
	}
	s := &e.jobs
	for _, r := range jobs {
		s.jobs[r.req.JobID] = r
		if r.status != JobStatusRunning && !r.terminal() {
			s.looping = true
		} else if r.terminal() && r.status == JobStatusFailed && r.req.FailureReason != "" {
			e.saveJobLocked(r) // failed by the restart: say so on disk too
		}
	}
	if s.looping {
		s.wg.Add(1)
		go e.jobLoop()
		e.wakeJobs()
	}
	e.wakeC2D()
	return nil
}

// etagNumber is the counter in a registry etag (base64 of its decimal
// form), 0 when it is not one.
func etagNumber(rec *identityRecord) uint64 {
	tag := ""
	if rec.module != nil {
		tag = rec.module.ETag
	} else {
		tag = rec.device.ETag
	}
	b, err := base64.StdEncoding.DecodeString(tag)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(string(b), 10, 64)
	return n
}

// saveClock stores the hub clock's offset (AdvanceJobClock).
func (e *Engine) saveClock() *pendingSave {
	if e.store == nil {
		return nil
	}
	return ticket(e.store.Put(store.Meta, metaClock, []byte(strconv.FormatInt(e.clockOffset.Load(), 10))))
}
