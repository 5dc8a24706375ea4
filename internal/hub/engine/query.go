package engine

// The documents the query language runs over (POST /devices/query): every
// device twin ("devices") or every module twin ("devices.modules"), as the
// service API renders a twin.

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
// The documents are the caller's own: copies of the cached ones that
// QueryDocs shares (querydocs.go).
func (e *Engine) QueryTwins(collection string) []map[string]any {
	if collection == CollectionJobs {
		return decodeDocs(e.DeviceJobs())
	}
	var out []map[string]any
	for d := range e.QueryDocs(collection) {
		out = append(out, copyJSON(d).(map[string]any))
	}
	return out
}

// decodeDocs turns documents into what the query language evaluates:
// their JSON decoded into map[string]any with numbers as json.Number.
func decodeDocs[T any](docs []T) []map[string]any {
	out := make([]map[string]any, 0, len(docs))
	for _, d := range docs {
		if doc := decodeDoc(d); doc != nil {
			out = append(out, doc)
		}
	}
	return out
}
