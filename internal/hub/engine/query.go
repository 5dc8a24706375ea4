package engine

// The documents the query language runs over (POST /devices/query): every
// device twin ("devices") or every module twin ("devices.modules"), as the
// service API renders a twin.

import (
	"bytes"
	"encoding/json"
	"sort"
)

// Query collections, the FROM clause of a query.
const (
	CollectionDevices = "devices"
	CollectionModules = "devices.modules"
	CollectionJobs    = "devices.jobs"
)

// QueryTwins returns the documents of collection for the query language:
// every device twin for "devices", every module twin for
// "devices.modules", each as the JSON of GET /twins/... decoded into
// map[string]any with numbers as json.Number. The order is stable: by
// device id, then module id. "devices.jobs" returns every device job
// (DeviceJob, jobs.go). Any other collection has no documents.
//
// The twins are rendered under the engine's lock and decoded outside it.
func (e *Engine) QueryTwins(collection string) []map[string]any {
	var modules bool
	switch collection {
	case CollectionDevices:
	case CollectionModules:
		modules = true
	case CollectionJobs:
		return decodeDocs(e.DeviceJobs())
	default:
		return nil
	}
	return decodeDocs(e.snapshotTwins(modules))
}

// decodeDocs turns documents into what the query language evaluates:
// their JSON decoded into map[string]any with numbers as json.Number.
func decodeDocs[T any](docs []T) []map[string]any {
	out := make([]map[string]any, 0, len(docs))
	for _, tw := range docs {
		b, err := json.Marshal(tw)
		if err != nil {
			continue // a Twin always encodes; rendered sections are valid JSON
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		var doc map[string]any
		if dec.Decode(&doc) != nil {
			continue
		}
		out = append(out, doc)
	}
	return out
}

// snapshotTwins renders the device twins, or the module twins, in id order.
func (e *Engine) snapshotTwins(modules bool) []Twin {
	e.mu.Lock()
	defer e.mu.Unlock()
	ids := make([]string, 0, len(e.devices))
	for id := range e.devices {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var out []Twin
	if !modules {
		out = make([]Twin, 0, len(ids))
	}
	for _, id := range ids {
		dev := e.devices[id]
		if !modules {
			out = append(out, e.twinLocked(dev))
			continue
		}
		mids := make([]string, 0, len(dev.modules))
		for mid := range dev.modules {
			mids = append(mids, mid)
		}
		sort.Strings(mids)
		for _, mid := range mids {
			out = append(out, e.twinLocked(dev.modules[mid]))
		}
	}
	return out
}
