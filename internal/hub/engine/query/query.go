// Package query implements the IoT Hub query language for device twins,
// module twins and jobs: SELECT [TOP n] (* | projections) FROM devices |
// devices.modules | devices.jobs [WHERE condition] [GROUP BY attribute].
//
// Parse checks a query the way the service does and returns an *Error for
// what the service refuses; the hub answers such a query with 400 Bad
// Request. A parsed Query filters JSON documents (Match) and evaluates the
// whole query over a collection (Run). Evaluation never fails on data:
// following the language's rules, a missing attribute and an operation on
// values of the wrong type are undefined, and a condition matches only when
// it is Boolean true.
//
// Documents are JSON objects decoded into map[string]any, preferably with
// json.Decoder.UseNumber so that numbers are json.Number; float64 and Go
// integer types are accepted too.
package query

import (
	"encoding/json"
	"fmt"
	"iter"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Collections a query can read, the values of its FROM clause.
const (
	CollectionDevices = "devices"
	CollectionModules = "devices.modules"
	CollectionJobs    = "devices.jobs"
)

// Limits applied by Parse.
const (
	// MaxQueryLength is the longest query text accepted, in bytes. IoT Hub
	// refuses query text longer than about 8 KB.
	MaxQueryLength = 8192
	// MaxDepth bounds the nesting of parentheses, NOT, unary signs and
	// function calls, and the number of segments of an attribute path.
	MaxDepth = 64
	// MaxListLength bounds the number of elements of an array constant
	// (the right-hand side of IN and NIN).
	MaxListLength = 1000
)

// Error is a query that the service refuses: a syntax error, an unknown
// collection, an unsupported function or clause. The hub sends it to the
// caller as a 400 Bad Request. Its text starts with "iothub: ".
type Error struct {
	Pos int    // byte offset in the query text where the problem was found
	Msg string // what is wrong, without the "iothub: " prefix
}

// Error returns "iothub: invalid query: <Msg> (at offset <Pos>)".
func (e *Error) Error() string {
	return fmt.Sprintf("iothub: invalid query: %s (at offset %d)", e.Msg, e.Pos)
}

// errorf returns an *Error for the problem found at byte offset pos.
func errorf(pos int, format string, args ...any) error {
	return &Error{Pos: pos, Msg: fmt.Sprintf(format, args...)}
}

// Query is a parsed query. It is immutable and safe for concurrent use.
type Query struct {
	from    string
	top     int // -1: no TOP
	star    bool
	proj    []projection
	where   expr // nil: no WHERE
	groupBy []string
}

// projection is one element of the SELECT list.
type projection struct {
	path []string // attribute path; nil for COUNT()
	agg  string   // "", or COUNT, AVG, SUM, MIN, MAX
	name string   // output property: the alias, else the path's last segment
}

// Parse parses sql. It returns an *Error if the service would refuse the
// query.
func Parse(sql string) (*Query, error) {
	if len(sql) > MaxQueryLength {
		return nil, &Error{Pos: MaxQueryLength, Msg: fmt.Sprintf("query is longer than %d bytes", MaxQueryLength)}
	}
	if strings.TrimSpace(sql) == "" {
		return nil, &Error{Msg: "query is empty"}
	}
	toks, err := lex(sql)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	q, err := p.parseQuery()
	if err != nil {
		return nil, err
	}
	q.normalize()
	if err := q.check(); err != nil {
		return nil, err
	}
	return q, nil
}

// From returns the collection the query reads: CollectionDevices,
// CollectionModules or CollectionJobs.
func (q *Query) From() string { return q.from }

// Top returns the n of SELECT TOP n, or -1 if the query has no TOP.
func (q *Query) Top() int { return q.top }

// aggregate reports whether the query produces one row per group.
func (q *Query) aggregate() bool {
	if q.groupBy != nil {
		return true
	}
	for _, p := range q.proj {
		if p.agg != "" {
			return true
		}
	}
	return false
}

// check applies the rules the service enforces beyond the grammar.
func (q *Query) check() error {
	if q.from == CollectionJobs && (!q.star || q.groupBy != nil) {
		return &Error{Msg: "queries on devices.jobs support only SELECT * (no projections, aggregates or GROUP BY)"}
	}
	if q.star {
		if q.groupBy != nil {
			return &Error{Msg: "GROUP BY needs a projection list, not SELECT *"}
		}
		return nil
	}
	seen := map[string]bool{}
	for _, p := range q.proj {
		if seen[p.name] {
			return &Error{Msg: fmt.Sprintf("duplicate property name '%s' in the SELECT clause", p.name)}
		}
		seen[p.name] = true
	}
	if !q.aggregate() {
		return nil
	}
	group := strings.Join(q.groupBy, ".")
	for _, p := range q.proj {
		if p.agg == "" && (q.groupBy == nil || strings.Join(p.path, ".") != group) {
			return &Error{Msg: fmt.Sprintf("'%s' must be an aggregate or the GROUP BY attribute", strings.Join(p.path, "."))}
		}
	}
	return nil
}

// normalize removes the collection prefix from attribute paths, so that
// devices.jobs.jobId (FROM devices.jobs) and devices.deviceId (FROM
// devices.modules) name properties of the document.
func (q *Query) normalize() {
	for i := range q.proj {
		q.proj[i].path = q.strip(q.proj[i].path)
	}
	q.groupBy = q.strip(q.groupBy)
	q.where = q.normalizeExpr(q.where)
}

func (q *Query) normalizeExpr(x expr) expr {
	switch e := x.(type) {
	case pathExpr:
		return pathExpr{segs: q.strip(e.segs)}
	case unaryExpr:
		e.x = q.normalizeExpr(e.x)
		return e
	case binaryExpr:
		e.x = q.normalizeExpr(e.x)
		e.y = q.normalizeExpr(e.y)
		return e
	case inExpr:
		e.x = q.normalizeExpr(e.x)
		return e
	case callExpr:
		args := make([]expr, len(e.args))
		for i, a := range e.args {
			args[i] = q.normalizeExpr(a)
		}
		e.args = args
		return e
	}
	return x
}

// strip removes a leading "devices", or the whole collection name, from a
// path that has more segments after it.
func (q *Query) strip(segs []string) []string {
	if len(segs) < 2 || !strings.EqualFold(segs[0], "devices") {
		return segs
	}
	if q.from != CollectionDevices && len(segs) > 2 {
		sub := strings.TrimPrefix(q.from, "devices.")
		if strings.EqualFold(segs[1], sub) {
			return segs[2:]
		}
	}
	return segs[1:]
}

// Match reports whether doc satisfies the WHERE clause; a query without
// WHERE matches every document. The error is reserved for future use and
// is always nil today.
func (q *Query) Match(doc map[string]any) (bool, error) {
	if q.where == nil {
		return true, nil
	}
	if doc == nil {
		doc = map[string]any{}
	}
	b, ok := eval(q.where, doc).(bool)
	return ok && b, nil
}

// Run evaluates the query over docs, the documents of the collection From
// names, in order. For SELECT * a row is the document itself (not a copy);
// for projections and aggregates a row is a new map[string]any, with
// properties whose value is undefined left out. Aggregate values are
// json.Number. TOP n keeps the first n rows. Documents are only read,
// never changed, so they may be shared. The error is reserved for future
// use and is always nil today.
func (q *Query) Run(docs []map[string]any) ([]any, error) {
	return q.RunSeq(slices.Values(docs), -1)
}

// RunSeq is Run over the documents docs yields, in order, for a caller
// that needs at most limit rows (limit < 0: every row). A query whose
// rows are its matching documents in order (no aggregate, no GROUP BY)
// stops reading docs once it has min(limit, TOP) rows, so its rows are the
// first limit rows of Run's. An aggregate reads every document and returns
// Run's rows whole; the caller cuts them.
func (q *Query) RunSeq(docs iter.Seq[map[string]any], limit int) ([]any, error) {
	if q.aggregate() {
		var matched []map[string]any
		for d := range docs {
			if ok, _ := q.Match(d); ok {
				if d == nil {
					d = map[string]any{}
				}
				matched = append(matched, d)
			}
		}
		return q.limit(q.runAggregate(matched)), nil
	}
	want := limit
	if q.top >= 0 && (want < 0 || q.top < want) {
		want = q.top
	}
	var rows []any
	if want == 0 {
		return []any{}, nil
	}
	for d := range docs {
		if ok, _ := q.Match(d); !ok {
			continue
		}
		if d == nil {
			d = map[string]any{}
		}
		if q.star {
			rows = append(rows, d)
		} else {
			row := map[string]any{}
			for _, p := range q.proj {
				if v := lookup(d, p.path); kindOf(v) != kindUndefined {
					row[p.name] = v
				}
			}
			rows = append(rows, row)
		}
		if want >= 0 && len(rows) >= want {
			break
		}
	}
	if rows == nil {
		rows = []any{}
	}
	return rows, nil
}

func (q *Query) limit(rows []any) []any {
	if q.top >= 0 && len(rows) > q.top {
		return rows[:q.top]
	}
	return rows
}

// group is the set of documents sharing one GROUP BY value.
type group struct {
	value any
	docs  []map[string]any
}

// runAggregate groups docs by the GROUP BY attribute (one group of all of
// them without GROUP BY) and builds one row per group, in order of first
// appearance.
func (q *Query) runAggregate(docs []map[string]any) []any {
	var groups []*group
	if q.groupBy == nil {
		groups = []*group{{value: undefinedValue, docs: docs}}
	} else {
		index := map[string]*group{}
		for _, d := range docs {
			v := lookup(d, q.groupBy)
			k := groupKey(v)
			g, ok := index[k]
			if !ok {
				g = &group{value: v}
				index[k] = g
				groups = append(groups, g)
			}
			g.docs = append(g.docs, d)
		}
	}
	rows := make([]any, 0, len(groups))
	for _, g := range groups {
		row := map[string]any{}
		for _, p := range q.proj {
			var v any
			if p.agg == "" {
				v = g.value
			} else {
				v = aggregateOf(p, g.docs)
			}
			if kindOf(v) != kindUndefined {
				row[p.name] = v
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// groupKey renders a value so that equal values (by the language's
// equality, numbers by value) share a key.
func groupKey(v any) string {
	k := kindOf(v)
	switch k {
	case kindNumber:
		f, _ := toFloat(v)
		return "n" + strconv.FormatFloat(f, 'g', -1, 64)
	case kindString:
		return "s" + v.(string)
	case kindBool:
		return "b" + strconv.FormatBool(v.(bool))
	case kindArray, kindObject:
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Sprintf("x%p", &v) // unencodable: a group of its own
		}
		return fmt.Sprintf("%d%s", k, b)
	}
	return fmt.Sprintf("%d", k)
}

// aggregateOf computes one aggregate over a group. AVG, MIN and MAX over
// no numbers are undefined; SUM over no numbers is 0. Non-numbers are
// skipped.
func aggregateOf(p projection, docs []map[string]any) any {
	if p.agg == "COUNT" {
		return json.Number(strconv.Itoa(len(docs)))
	}
	var sum, lo, hi float64
	n := 0
	for _, d := range docs {
		f, ok := toFloat(lookup(d, p.path))
		if !ok {
			continue
		}
		if n == 0 || f < lo {
			lo = f
		}
		if n == 0 || f > hi {
			hi = f
		}
		sum += f
		n++
	}
	switch p.agg {
	case "SUM":
		return number(sum)
	case "AVG":
		if n == 0 {
			return undefinedValue
		}
		return number(sum / float64(n))
	case "MIN":
		if n == 0 {
			return undefinedValue
		}
		return number(lo)
	default: // MAX
		if n == 0 {
			return undefinedValue
		}
		return number(hi)
	}
}

// number renders f as a json.Number; a non-finite f is undefined.
func number(f float64) any {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return undefinedValue
	}
	b, err := json.Marshal(f)
	if err != nil {
		return undefinedValue
	}
	return json.Number(b)
}
