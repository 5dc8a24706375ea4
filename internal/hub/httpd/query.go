package httpd

// POST /devices/query: the IoT Hub query language over device twins,
// module twins and (later) jobs, paged with continuation tokens.

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"unicode"

	"github.com/iothub-go/iothub/internal/hub/engine"
	"github.com/iothub-go/iothub/internal/hub/engine/query"
	"github.com/iothub-go/iothub/internal/hubauth"
)

// Query paging. The official SDKs send the page size in
// x-ms-max-item-count and the token of the next page in
// x-ms-continuation, and read the item type from x-ms-item-type (.NET's
// QueryResultType: "twin", "deviceJob", "jobResponse", "raw").
const (
	headerMaxItemCount = "x-ms-max-item-count"
	headerContinuation = "x-ms-continuation"
	headerItemType     = "x-ms-item-type"

	// defaultPageSize is the page size without x-ms-max-item-count [inf]:
	// no source states IoT Hub's default; 100 is the page size the
	// official SDKs' samples use.
	defaultPageSize = 100
	// maxPageSize is the largest page: IoT Hub's query guide has the query
	// object "instantiated with a page size (up to 1000)". A larger
	// request is served 1000 items per page [inf].
	maxPageSize = 1000
	// maxPageBytes bounds the JSON of one page: a page ends early, with a
	// continuation token, once its items reach this size (at least one
	// item is always sent), so that 1000 large twins do not make one
	// answer of hundreds of megabytes [inf].
	maxPageBytes = 4 << 20
	// maxQueryBody bounds the request body, {"query":"..."}.
	maxQueryBody = 64 * 1024
)

// queryRoute turns POST /devices/query, which matchRoute sees as the
// device "query", into the query route. GET, PUT and DELETE
// /devices/query still name the device with id "query".
func queryRoute(rt route, method string) route {
	if rt.kind == routeDevice && method == http.MethodPost && strings.EqualFold(rt.deviceID, "query") {
		return route{kind: routeQuery}
	}
	return rt
}

// queryRights are the permissions a query needs, any one of them: reading
// twins (ServiceConnect "run queries", or RegistryRead; see twinRights).
func queryRights() []hubauth.Rights { return twinRights(http.MethodGet) }

// queryRequest is the body of POST /devices/query.
type queryRequest struct {
	Query *string `json:"query"`
}

// query serves POST /devices/query. The body is {"query":"SELECT ..."};
// the answer is a JSON array of the page's items, with x-ms-item-type and,
// when more items follow, x-ms-continuation. A query the language refuses
// is 400004 ArgumentInvalid with the parser's message, as IoT Hub answers
// "The query is invalid ..." with 400.
//
// Each page runs the query again over the current twins and skips the
// items of the earlier pages: a twin changed between pages can be seen
// twice or not at all, as IoT Hub promises no snapshot either. The twins'
// documents are cached in the engine (rendered again only when a twin
// changes), and a query without aggregates reads them only up to the
// page's last item and one more.
func (h *handler) query(w http.ResponseWriter, r *http.Request) {
	body, herr := readBody(w, r, maxQueryBody)
	if herr != nil {
		writeError(w, herr)
		return
	}
	var req queryRequest
	dec := json.NewDecoder(bytes.NewReader(trimBody(body)))
	if err := dec.Decode(&req); err != nil {
		writeError(w, engine.NewError(engine.CodeArgumentInvalid, "The request body is not a query specification: want {\"query\":\"SELECT ...\"}."))
		return
	}
	if req.Query == nil || strings.TrimSpace(*req.Query) == "" {
		writeError(w, engine.NewError(engine.CodeArgumentNull, "The query is missing: want {\"query\":\"SELECT ...\"}."))
		return
	}
	sql := *req.Query
	pageSize, herr := parsePageSize(r.Header.Get(headerMaxItemCount))
	if herr != nil {
		writeError(w, herr)
		return
	}
	q, err := query.Parse(sql)
	if err != nil {
		writeError(w, queryError(err))
		return
	}
	offset, herr := parseContinuation(r.Header.Get(headerContinuation), sql)
	if herr != nil {
		writeError(w, herr)
		return
	}
	// The page needs the items up to offset+pageSize, and one more to know
	// whether a continuation follows; a query whose items are its matches
	// in order stops there (aggregates read every twin).
	items, err := q.RunSeq(h.e.QueryDocs(q.From()), offset+pageSize+1)
	if err != nil {
		writeError(w, queryError(err))
		return
	}
	if offset > len(items) {
		offset = len(items)
	}
	page, next := pageOf(items[offset:], pageSize)
	w.Header().Set(headerItemType, itemType(sql, q.From()))
	if next > 0 && offset+next < len(items) {
		w.Header().Set(headerContinuation, continuationToken(offset+next, sql))
	}
	writeJSON(w, page, "")
}

// pageOf encodes up to size items as a JSON array, stopping early once
// the array reaches maxPageBytes (after at least one item). It returns the
// array and the number of items in it.
func pageOf(items []any, size int) ([]byte, int) {
	var buf bytes.Buffer
	buf.WriteByte('[')
	n := 0
	for _, it := range items {
		if n == size || (n > 0 && buf.Len() >= maxPageBytes) {
			break
		}
		b, err := json.Marshal(it)
		if err != nil {
			b = []byte("null") // items are decoded JSON: they always encode
		}
		if n > 0 {
			buf.WriteByte(',')
		}
		buf.Write(b)
		n++
	}
	buf.WriteByte(']')
	return buf.Bytes(), n
}

// parsePageSize reads x-ms-max-item-count: absent is the default, a
// number over the maximum is the maximum, anything but a positive integer
// is 400004 ArgumentInvalid.
func parsePageSize(v string) (int, *engine.Error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return defaultPageSize, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange && !strings.HasPrefix(v, "-") {
			return maxPageSize, nil
		}
		return 0, engine.NewError(engine.CodeArgumentInvalid,
			"The %s header must be a positive integer (at most %d).", headerMaxItemCount, maxPageSize)
	}
	if n > maxPageSize {
		return maxPageSize, nil
	}
	return int(n), nil
}

// A continuation token is base64url of 16 bytes: the offset of the next
// item (big-endian uint64) and the first 8 bytes of SHA-256 of the query
// text, so that a token is refused with another query. It is opaque to
// clients.
const continuationLen = 16

func queryHash(sql string) []byte {
	sum := sha256.Sum256([]byte(sql))
	return sum[:8]
}

// continuationToken is the token of the page starting at offset.
func continuationToken(offset int, sql string) string {
	var b [continuationLen]byte
	binary.BigEndian.PutUint64(b[:8], uint64(offset))
	copy(b[8:], queryHash(sql))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// parseContinuation returns the offset a token names; "" is the first
// page. A token that is not one of ours, or is for another query, is
// 400004 ArgumentInvalid [inf: IoT Hub's answer to a bad token is not
// documented].
func parseContinuation(tok, sql string) (int, *engine.Error) {
	if tok == "" {
		return 0, nil
	}
	bad := engine.NewError(engine.CodeArgumentInvalid,
		"The continuation token (%s header) is not valid for this query.", headerContinuation)
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) != continuationLen || !bytes.Equal(b[8:], queryHash(sql)) {
		return 0, bad
	}
	off := binary.BigEndian.Uint64(b[:8])
	if off == 0 || off > 1<<40 {
		return 0, bad
	}
	return int(off), nil
}

// queryError is the hub's answer to a query the language refuses:
// 400004 ArgumentInvalid with the parser's message.
func queryError(err error) *engine.Error {
	if herr, ok := err.(*engine.Error); ok {
		return herr
	}
	return engine.NewError(engine.CodeArgumentInvalid, "%s", strings.TrimPrefix(err.Error(), "iothub: "))
}

// itemType is the x-ms-item-type of a query's answer: "twin" for SELECT *
// over device or module twins, "deviceJob" for SELECT * over
// devices.jobs, "raw" for projections and aggregates (the .NET service
// SDK's QueryResultType names).
func itemType(sql, from string) string {
	if !selectsAll(sql) {
		return "raw"
	}
	if from == engine.CollectionJobs {
		return "deviceJob"
	}
	return "twin"
}

// selectsAll reports whether a parsed query's SELECT clause is "*",
// optionally after TOP n: SELECT [TOP n] * FROM ....
func selectsAll(sql string) bool {
	rest, ok := cutKeyword(strings.TrimLeftFunc(sql, unicode.IsSpace), "SELECT")
	if !ok {
		return false
	}
	if r, ok := cutKeyword(rest, "TOP"); ok {
		r = strings.TrimLeftFunc(r, unicode.IsSpace)
		i := 0
		for i < len(r) && r[i] >= '0' && r[i] <= '9' {
			i++
		}
		if i == 0 {
			return false
		}
		rest = r[i:]
	}
	return strings.HasPrefix(strings.TrimLeftFunc(rest, unicode.IsSpace), "*")
}

// cutKeyword removes a leading keyword (any case) that is followed by a
// space or '*', and returns the rest.
func cutKeyword(s, kw string) (string, bool) {
	s = strings.TrimLeftFunc(s, unicode.IsSpace)
	if len(s) <= len(kw) || !strings.EqualFold(s[:len(kw)], kw) {
		return s, false
	}
	if c := s[len(kw)]; c != '*' && !unicode.IsSpace(rune(c)) {
		return s, false
	}
	return s[len(kw):], true
}
