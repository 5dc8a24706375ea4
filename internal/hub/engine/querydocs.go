package engine

// The query documents of twins, cached: each device and module record
// keeps the decoded JSON of its twin (GET /twins/...) with the stamp of
// everything that JSON is made of. A walk compares the stamp with the
// record's current state, under the engine's lock, and builds the document
// again (buildDoc, from the stamp) only when they differ, so no mutation
// site needs a hook: a change the stamp does not see is a change GET
// /twins does not show. Only adding or deleting a record bumps a counter
// (Engine.members), which orders the walk.
//
// Why the stamp is complete: twinLocked reads the twinState (tags, desired
// and reported trees, their versions, the twin's version, etag counter and
// model id), the identity fields it shows, and for a module its device's
// status. The trees are copy-on-write: every write (writeTwin,
// UpdateReported) merges into a clone or a new tree and then installs it,
// so an installed tree never changes and its pointer stands for its
// contents. The identity fields are compared by value (strings behind
// pointers included). A deleted and re-created identity is a new record,
// with no cached document.

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"iter"
	"sort"
	"strconv"
)

// queryChunk is how many records a walk reads per hold of the engine's
// lock; the caller's evaluation runs with the lock released.
const queryChunk = 256

// docStamp is what a twin's query document was rendered from, apart from
// the device's parent scopes (queryDoc.parents).
type docStamp struct {
	twin                         *twinState
	tags, desired, reported      *tnode
	version, desiredV, reportedV int64
	etagSeq                      uint64
	modelID                      string

	deviceETag, status, statusUpdated string
	statusReason                      string
	hasStatusReason                   bool
	connState, lastActivity           string
	c2d                               int
	authType, thumb1, thumb2          string
	hasThumb1, hasThumb2              bool
	iotEdge                           bool
	scope                             string
	hasScope                          bool
}

// queryDoc is a cached query document and its stamp. doc is shared with
// every query that reads it and is never changed: a change of the twin
// makes a new queryDoc.
type queryDoc struct {
	stamp   docStamp
	parents []string
	doc     map[string]any
}

// stampLocked returns the stamp of rec's twin as it is now, and the
// device's parent scopes (not copied: compare, then copy to keep).
func (e *Engine) stampLocked(rec *identityRecord) (docStamp, []string) {
	t := e.twinOf(rec)
	s := docStamp{
		twin:      t,
		tags:      t.tags,
		desired:   t.desired.root,
		reported:  t.reported.root,
		version:   t.version,
		desiredV:  t.desired.version,
		reportedV: t.reported.version,
		etagSeq:   t.etagSeq,
		modelID:   t.modelID,
	}
	a := rec.auth()
	s.authType = a.Type
	s.thumb1, s.hasThumb1 = derefOK(a.X509Thumbprint.PrimaryThumbprint)
	s.thumb2, s.hasThumb2 = derefOK(a.X509Thumbprint.SecondaryThumbprint)
	if m := rec.module; m != nil {
		s.deviceETag = m.ETag
		s.statusUpdated = zeroTime
		s.connState = m.ConnectionState
		s.lastActivity = m.LastActivityTime
		s.c2d = m.CloudToDeviceMessageCount
		s.status = "enabled"
		if dev := e.devices[m.DeviceID]; dev != nil {
			s.status = dev.device.Status
		}
		return s, nil
	}
	d := rec.device
	s.deviceETag = d.ETag
	s.status = d.Status
	s.statusReason, s.hasStatusReason = derefOK(d.StatusReason)
	s.statusUpdated = d.StatusUpdatedTime
	s.connState = d.ConnectionState
	s.lastActivity = d.LastActivityTime
	s.c2d = d.CloudToDeviceMessageCount
	s.iotEdge = d.Capabilities.IotEdge
	s.scope, s.hasScope = derefOK(d.DeviceScope)
	return s, d.ParentScopes
}

func derefOK(p *string) (string, bool) {
	if p == nil {
		return "", false
	}
	return *p, true
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// buildDoc builds the query document of a twin from its stamp: the value
// decoding twinLocked's JSON (with UseNumber) gives, without the JSON. It
// reads only the stamp's trees, which never change once installed, so it
// runs without the engine's lock. Key strings and unchanged values are
// shared with the twin's trees; arrays are copied.
func buildDoc(k queryKey, s *docStamp, parents []string) map[string]any {
	doc := make(map[string]any, 20)
	doc["deviceId"] = k.device
	if k.module != "" {
		doc["moduleId"] = k.module
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], s.etagSeq)
	doc["etag"] = base64.StdEncoding.EncodeToString(b[:])
	doc["deviceEtag"] = s.deviceETag
	doc["status"] = s.status
	if s.hasStatusReason {
		doc["statusReason"] = s.statusReason
	}
	doc["statusUpdateTime"] = s.statusUpdated
	doc["connectionState"] = s.connState
	doc["lastActivityTime"] = s.lastActivity
	doc["cloudToDeviceMessageCount"] = json.Number(strconv.Itoa(s.c2d))
	doc["authenticationType"] = s.authType
	doc["x509Thumbprint"] = map[string]any{
		"primaryThumbprint":   optString(s.thumb1, s.hasThumb1),
		"secondaryThumbprint": optString(s.thumb2, s.hasThumb2),
	}
	doc["modelId"] = s.modelID
	doc["version"] = jsonInt(s.version)
	if len(s.tags.kids) > 0 {
		doc["tags"] = s.tags.docValue()
	}
	doc["properties"] = map[string]any{
		"desired":  sectionDoc(s.desired, s.desiredV, true),
		"reported": sectionDoc(s.reported, s.reportedV, false),
	}
	if k.module == "" {
		doc["capabilities"] = map[string]any{"iotEdge": s.iotEdge}
		if s.hasScope {
			doc["deviceScope"] = s.scope
		}
		if len(parents) > 0 {
			ps := make([]any, len(parents))
			for i, p := range parents {
				ps[i] = p
			}
			doc["parentScopes"] = ps
		}
	}
	return doc
}

func optString(s string, ok bool) any {
	if !ok {
		return nil
	}
	return s
}

func jsonInt(n int64) json.Number { return json.Number(strconv.FormatInt(n, 10)) }

// sectionDoc is twinSection.render(true, withVer) as decoded JSON.
func sectionDoc(root *tnode, version int64, withVer bool) map[string]any {
	m := root.docValue().(map[string]any)
	m["$metadata"] = root.docMetadata(withVer)
	m["$version"] = jsonInt(version)
	return m
}

// docValue is value as decoded JSON: arrays copied.
func (n *tnode) docValue() any {
	if n.kids == nil {
		return copyJSON(n.val)
	}
	m := make(map[string]any, len(n.kids))
	for k, c := range n.kids {
		m[k] = c.docValue()
	}
	return m
}

// docMetadata is metadata as decoded JSON.
func (n *tnode) docMetadata(withVer bool) map[string]any {
	m := make(map[string]any, len(n.kids)+2)
	m["$lastUpdated"] = metadataTime(n.at)
	if withVer && n.ver > 0 {
		m["$lastUpdatedVersion"] = jsonInt(n.ver)
	}
	for k, c := range n.kids {
		m[k] = c.docMetadata(withVer)
	}
	return m
}

// queryKey names a record of a query collection: a device (module "") or
// a module.
type queryKey struct{ device, module string }

func (k queryKey) less(o queryKey) bool {
	if k.device != o.device {
		return k.device < o.device
	}
	return k.module < o.module
}

// queryIndex holds the ids of the devices and of the modules in query
// order, rebuilt when Engine.members has moved since.
type queryIndex struct {
	built   bool
	members uint64
	devices []queryKey
	modules []queryKey
}

// queryIndexLocked returns the index, rebuilt if a device or module was
// added or deleted since it was built.
func (e *Engine) queryIndexLocked() *queryIndex {
	x := &e.qindex
	if x.built && x.members == e.members && len(x.devices) == len(e.devices) {
		return x
	}
	x.devices = x.devices[:0]
	x.modules = x.modules[:0]
	for id, dev := range e.devices {
		x.devices = append(x.devices, queryKey{device: id})
		for mid := range dev.modules {
			x.modules = append(x.modules, queryKey{device: id, module: mid})
		}
	}
	sort.Slice(x.devices, func(i, j int) bool { return x.devices[i].less(x.devices[j]) })
	sort.Slice(x.modules, func(i, j int) bool { return x.modules[i].less(x.modules[j]) })
	x.built, x.members = true, e.members
	return x
}

// QueryDocs returns the documents of collection for the query language,
// in QueryTwins' order, as a sequence the caller may stop early. The
// documents are shared with the engine's cache and other queries: they
// must not be changed (package query only reads them). The engine's lock
// is held while a chunk of twins is read, not while the caller works on
// them, so a twin changed during the walk is seen as it was when its chunk
// was read, or not at all if it was added or deleted meanwhile.
func (e *Engine) QueryDocs(collection string) iter.Seq[map[string]any] {
	var modules bool
	switch collection {
	case CollectionDevices:
	case CollectionModules:
		modules = true
	case CollectionJobs:
		return func(yield func(map[string]any) bool) {
			for _, d := range decodeDocs(e.DeviceJobs()) {
				if !yield(d) {
					return
				}
			}
		}
	default:
		return func(func(map[string]any) bool) {}
	}
	return func(yield func(map[string]any) bool) { e.walkTwins(modules, yield) }
}

// chunkItem is one record of a walk's chunk: its cached document, or the
// record and the stamp to build it from.
type chunkItem struct {
	doc     map[string]any
	rec     *identityRecord
	key     queryKey
	stamp   docStamp
	parents []string
}

// walkTwins yields the device (or module) twins' documents in key order,
// queryChunk records per hold of the lock. Documents whose stamp is stale
// are rendered under the lock, decoded outside it, and cached.
func (e *Engine) walkTwins(modules bool, yield func(map[string]any) bool) {
	var after queryKey
	started := false
	buf := make([]chunkItem, 0, queryChunk)
	for {
		buf = buf[:0]
		stale := 0
		e.mu.Lock()
		x := e.queryIndexLocked()
		keys := x.devices
		if modules {
			keys = x.modules
		}
		i := 0
		if started {
			i = sort.Search(len(keys), func(i int) bool { return after.less(keys[i]) })
		}
		for ; i < len(keys) && len(buf) < queryChunk; i++ {
			rec, herr := e.lookupLocked(keys[i].device, keys[i].module)
			if herr != nil {
				continue // cannot happen: the index is fresh
			}
			after, started = keys[i], true
			st, parents := e.stampLocked(rec)
			if c := rec.qdoc; c != nil && c.stamp == st && sameStrings(c.parents, parents) {
				buf = append(buf, chunkItem{doc: c.doc})
				continue
			}
			stale++
			buf = append(buf, chunkItem{rec: rec, key: keys[i], stamp: st,
				parents: append([]string(nil), parents...)})
		}
		done := i >= len(keys)
		e.mu.Unlock()
		if stale > 0 {
			for j := range buf {
				if it := &buf[j]; it.rec != nil {
					it.doc = buildDoc(it.key, &it.stamp, it.parents)
				}
			}
			e.mu.Lock()
			for j := range buf {
				// A record changed since its stamp was taken gets a
				// document with the old stamp: the next walk sees the
				// difference and renders it again.
				if it := &buf[j]; it.rec != nil && it.doc != nil {
					it.rec.qdoc = &queryDoc{stamp: it.stamp, parents: it.parents, doc: it.doc}
				}
			}
			e.mu.Unlock()
		}
		for j := range buf {
			if buf[j].doc == nil {
				continue
			}
			if !yield(buf[j].doc) {
				return
			}
		}
		if done {
			return
		}
	}
}

// decodeDoc renders v as JSON and decodes it into what the query language
// evaluates: map[string]any with numbers as json.Number. It returns nil if
// v does not encode (a Twin always does).
func decodeDoc(v any) map[string]any {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var doc map[string]any
	if dec.Decode(&doc) != nil {
		return nil
	}
	return doc
}

// copyJSON deep-copies a decoded JSON value.
func copyJSON(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[k] = copyJSON(x)
		}
		return m
	case []any:
		s := make([]any, len(v))
		for i, x := range v {
			s[i] = copyJSON(x)
		}
		return s
	}
	return v
}
