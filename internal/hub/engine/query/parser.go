package query

import (
	"math"
	"strconv"
	"strings"
)

// expr is a node of a parsed condition.
type expr interface{ isExpr() }

type (
	// constExpr is a literal: nil (null), undefinedValue, bool, float64,
	// string or []any (an array constant).
	constExpr struct{ v any }
	// pathExpr is an attribute path such as tags.location.region.
	pathExpr struct{ segs []string }
	// unaryExpr is NOT x, -x or +x.
	unaryExpr struct {
		op string
		x  expr
	}
	// binaryExpr is x op y for arithmetic, comparison, AND and OR.
	binaryExpr struct {
		op   string
		x, y expr
	}
	// inExpr is x IN [...] or x NIN [...].
	inExpr struct {
		x    expr
		list []any
		not  bool
	}
	// callExpr is a call of a supported scalar function.
	callExpr struct {
		name string // upper case
		args []expr
	}
)

func (constExpr) isExpr()  {}
func (pathExpr) isExpr()   {}
func (unaryExpr) isExpr()  {}
func (binaryExpr) isExpr() {}
func (inExpr) isExpr()     {}
func (callExpr) isExpr()   {}

// functions lists the scalar functions a condition may call, with their
// number of arguments.
var functions = map[string]int{
	"IS_DEFINED":   1,
	"IS_NULL":      1,
	"IS_BOOL":      1,
	"IS_NUMBER":    1,
	"IS_STRING":    1,
	"IS_OBJECT":    1,
	"IS_ARRAY":     1,
	"IS_PRIMITIVE": 1,
	"STARTSWITH":   2,
	"ENDSWITH":     2,
	"CONTAINS":     2,
}

// aggregates lists the aggregate functions of the SELECT clause.
var aggregates = map[string]bool{"COUNT": true, "AVG": true, "SUM": true, "MIN": true, "MAX": true}

// reserved words cannot start an attribute path.
var reserved = map[string]bool{
	"SELECT": true, "TOP": true, "FROM": true, "WHERE": true, "GROUP": true, "BY": true,
	"AS": true, "AND": true, "OR": true, "NOT": true, "IN": true, "NIN": true,
	"TRUE": true, "FALSE": true, "NULL": true, "UNDEFINED": true,
}

// parser is a recursive-descent parser over the token list.
type parser struct {
	toks  []token
	i     int
	depth int
}

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tokEOF {
		p.i++
	}
	return t
}

func (p *parser) unexpected(want string) error {
	t := p.peek()
	return errorf(t.pos, "expected %s, found %s", want, t.describe())
}

func (p *parser) expectKeyword(kw string) error {
	if !p.peek().is(kw) {
		return p.unexpected(kw)
	}
	p.next()
	return nil
}

func (p *parser) expectPunct(s string) error {
	if !p.peek().isPunct(s) {
		return p.unexpected("'" + s + "'")
	}
	p.next()
	return nil
}

// enter guards the nesting depth of the recursive productions.
func (p *parser) enter() error {
	p.depth++
	if p.depth > MaxDepth {
		return errorf(p.peek().pos, "expression nested deeper than %d levels", MaxDepth)
	}
	return nil
}

func (p *parser) leave() { p.depth-- }

// parseQuery parses SELECT [TOP n] list FROM collection [WHERE cond] [GROUP BY path].
func (p *parser) parseQuery() (*Query, error) {
	q := &Query{top: -1}
	if err := p.expectKeyword("SELECT"); err != nil {
		return nil, err
	}
	if p.peek().is("TOP") {
		p.next()
		t := p.peek()
		if t.kind != tokNumber || t.num != math.Trunc(t.num) || t.num < 0 || t.num > math.MaxInt32 {
			return nil, p.unexpected("a non-negative integer after TOP")
		}
		p.next()
		q.top = int(t.num)
	}
	if err := p.parseSelectList(q); err != nil {
		return nil, err
	}
	if err := p.expectKeyword("FROM"); err != nil {
		return nil, err
	}
	if err := p.parseFrom(q); err != nil {
		return nil, err
	}
	if p.peek().is("WHERE") {
		p.next()
		w, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		q.where = w
	}
	if p.peek().is("GROUP") {
		p.next()
		if err := p.expectKeyword("BY"); err != nil {
			return nil, err
		}
		segs, err := p.parsePath()
		if err != nil {
			return nil, err
		}
		q.groupBy = segs
	}
	if t := p.peek(); t.kind != tokEOF {
		return nil, errorf(t.pos, "unexpected %s after the end of the query", t.describe())
	}
	return q, nil
}

func (p *parser) parseSelectList(q *Query) error {
	if p.peek().isPunct("*") {
		p.next()
		q.star = true
		return nil
	}
	unnamed := 0
	for {
		pr, err := p.parseProjection()
		if err != nil {
			return err
		}
		if pr.name == "" {
			// An aggregate without AS is named $1, $2, ... in order.
			unnamed++
			pr.name = "$" + strconv.Itoa(unnamed)
		}
		q.proj = append(q.proj, pr)
		if !p.peek().isPunct(",") {
			return nil
		}
		p.next()
	}
}

// parseProjection parses an attribute path or an aggregate, with an
// optional AS alias.
func (p *parser) parseProjection() (projection, error) {
	var pr projection
	t := p.peek()
	if t.kind == tokIdent && p.toks[p.i+1].isPunct("(") {
		name := strings.ToUpper(t.text)
		if !aggregates[name] {
			return pr, errorf(t.pos, "function '%s' is not supported in the SELECT clause", t.text)
		}
		p.next()
		p.next()
		pr.agg = name
		if name != "COUNT" {
			segs, err := p.parsePath()
			if err != nil {
				return pr, err
			}
			pr.path = segs
		}
		if err := p.expectPunct(")"); err != nil {
			return pr, err
		}
	} else {
		segs, err := p.parsePath()
		if err != nil {
			return pr, err
		}
		pr.path = segs
		pr.name = segs[len(segs)-1]
	}
	if p.peek().is("AS") {
		p.next()
		a := p.peek()
		if a.kind != tokIdent || reserved[strings.ToUpper(a.text)] {
			return pr, p.unexpected("an alias after AS")
		}
		p.next()
		pr.name = a.text
	}
	return pr, nil
}

// parseFrom reads the collection: devices, devices.modules or devices.jobs.
func (p *parser) parseFrom(q *Query) error {
	t := p.peek()
	if t.kind != tokIdent || reserved[strings.ToUpper(t.text)] {
		return p.unexpected("a collection name")
	}
	segs, err := p.parsePath()
	if err != nil {
		return err
	}
	name := strings.ToLower(strings.Join(segs, "."))
	switch name {
	case CollectionDevices, CollectionModules, CollectionJobs:
		q.from = name
		return nil
	}
	return errorf(t.pos, "unknown collection '%s' (use devices, devices.modules or devices.jobs)", strings.Join(segs, "."))
}

// parsePath reads ident { '.' ident }. Segments after a dot may be any
// identifier, including reserved words.
func (p *parser) parsePath() ([]string, error) {
	t := p.peek()
	if t.kind != tokIdent || reserved[strings.ToUpper(t.text)] {
		return nil, p.unexpected("an attribute name")
	}
	p.next()
	segs := []string{t.text}
	for p.peek().isPunct(".") {
		p.next()
		s := p.peek()
		if s.kind != tokIdent {
			return nil, p.unexpected("an attribute name after '.'")
		}
		p.next()
		segs = append(segs, s.text)
		if len(segs) > MaxDepth {
			return nil, errorf(s.pos, "attribute path longer than %d segments", MaxDepth)
		}
	}
	return segs, nil
}

func (p *parser) parseOr() (expr, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer p.leave()
	x, err := p.parseAnd()
	if err != nil {
		return nil, err
	}
	for p.peek().is("OR") {
		p.next()
		y, err := p.parseAnd()
		if err != nil {
			return nil, err
		}
		x = binaryExpr{op: "OR", x: x, y: y}
	}
	return x, nil
}

func (p *parser) parseAnd() (expr, error) {
	x, err := p.parseNot()
	if err != nil {
		return nil, err
	}
	for p.peek().is("AND") {
		p.next()
		y, err := p.parseNot()
		if err != nil {
			return nil, err
		}
		x = binaryExpr{op: "AND", x: x, y: y}
	}
	return x, nil
}

func (p *parser) parseNot() (expr, error) {
	if p.peek().is("NOT") {
		if err := p.enter(); err != nil {
			return nil, err
		}
		defer p.leave()
		p.next()
		x, err := p.parseNot()
		if err != nil {
			return nil, err
		}
		return unaryExpr{op: "NOT", x: x}, nil
	}
	return p.parseComparison()
}

var comparisonOps = map[string]bool{"=": true, "!=": true, "<>": true, "<": true, "<=": true, ">": true, ">=": true}

func (p *parser) parseComparison() (expr, error) {
	x, err := p.parseAdditive()
	if err != nil {
		return nil, err
	}
	t := p.peek()
	switch {
	case t.kind == tokPunct && comparisonOps[t.text]:
		p.next()
		y, err := p.parseAdditive()
		if err != nil {
			return nil, err
		}
		op := t.text
		if op == "<>" {
			op = "!="
		}
		return binaryExpr{op: op, x: x, y: y}, nil
	case t.is("IN") || t.is("NIN"):
		p.next()
		list, err := p.parseArrayConstant()
		if err != nil {
			return nil, err
		}
		return inExpr{x: x, list: list, not: t.is("NIN")}, nil
	}
	return x, nil
}

func (p *parser) parseAdditive() (expr, error) {
	x, err := p.parseMultiplicative()
	if err != nil {
		return nil, err
	}
	for t := p.peek(); t.isPunct("+") || t.isPunct("-"); t = p.peek() {
		p.next()
		y, err := p.parseMultiplicative()
		if err != nil {
			return nil, err
		}
		x = binaryExpr{op: t.text, x: x, y: y}
	}
	return x, nil
}

func (p *parser) parseMultiplicative() (expr, error) {
	x, err := p.parseUnary()
	if err != nil {
		return nil, err
	}
	for t := p.peek(); t.isPunct("*") || t.isPunct("/") || t.isPunct("%"); t = p.peek() {
		p.next()
		y, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		x = binaryExpr{op: t.text, x: x, y: y}
	}
	return x, nil
}

func (p *parser) parseUnary() (expr, error) {
	if t := p.peek(); t.isPunct("-") || t.isPunct("+") {
		if err := p.enter(); err != nil {
			return nil, err
		}
		defer p.leave()
		p.next()
		x, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		if c, ok := x.(constExpr); ok {
			if f, ok := c.v.(float64); ok && t.text == "-" {
				return constExpr{v: -f}, nil
			}
		}
		return unaryExpr{op: t.text, x: x}, nil
	}
	return p.parsePrimary()
}

func (p *parser) parsePrimary() (expr, error) {
	t := p.peek()
	switch t.kind {
	case tokNumber:
		p.next()
		return constExpr{v: t.num}, nil
	case tokString:
		p.next()
		return constExpr{v: t.text}, nil
	case tokPunct:
		switch t.text {
		case "(":
			p.next() // parseOr counts the nesting level
			x, err := p.parseOr()
			if err != nil {
				return nil, err
			}
			if err := p.expectPunct(")"); err != nil {
				return nil, err
			}
			return x, nil
		case "[":
			list, err := p.parseArrayConstant()
			if err != nil {
				return nil, err
			}
			return constExpr{v: list}, nil
		}
	case tokIdent:
		if c, ok := keywordConstant(t); ok {
			p.next()
			return constExpr{v: c}, nil
		}
		if p.toks[p.i+1].isPunct("(") {
			return p.parseCall()
		}
		segs, err := p.parsePath()
		if err != nil {
			return nil, err
		}
		return pathExpr{segs: segs}, nil
	}
	return nil, p.unexpected("an expression")
}

// keywordConstant maps true, false, null and undefined to their values.
func keywordConstant(t token) (any, bool) {
	switch {
	case t.is("true"):
		return true, true
	case t.is("false"):
		return false, true
	case t.is("null"):
		return nil, true
	case t.is("undefined"):
		return undefinedValue, true
	}
	return nil, false
}

func (p *parser) parseCall() (expr, error) {
	t := p.next()
	name := strings.ToUpper(t.text)
	arity, ok := functions[name]
	if !ok {
		if aggregates[name] {
			return nil, errorf(t.pos, "aggregate function '%s' is only allowed in the SELECT clause", t.text)
		}
		return nil, errorf(t.pos, "function '%s' is not supported", t.text)
	}
	p.next() // ( ; parseOr counts the nesting level of the arguments
	var args []expr
	if !p.peek().isPunct(")") {
		for {
			a, err := p.parseOr()
			if err != nil {
				return nil, err
			}
			args = append(args, a)
			if !p.peek().isPunct(",") {
				break
			}
			p.next()
		}
	}
	if err := p.expectPunct(")"); err != nil {
		return nil, err
	}
	if len(args) != arity {
		return nil, errorf(t.pos, "function '%s' takes %d argument(s), got %d", name, arity, len(args))
	}
	return callExpr{name: name, args: args}, nil
}

// parseArrayConstant reads '[' constant {',' constant} ']'. Elements are
// constants: strings, numbers (optionally signed), true, false, null.
func (p *parser) parseArrayConstant() ([]any, error) {
	if err := p.expectPunct("["); err != nil {
		return nil, err
	}
	list := []any{}
	if p.peek().isPunct("]") {
		p.next()
		return list, nil
	}
	for {
		v, err := p.parseConstant()
		if err != nil {
			return nil, err
		}
		list = append(list, v)
		if len(list) > MaxListLength {
			return nil, errorf(p.peek().pos, "array constant longer than %d elements", MaxListLength)
		}
		if p.peek().isPunct("]") {
			p.next()
			return list, nil
		}
		if err := p.expectPunct(","); err != nil {
			return nil, err
		}
	}
}

func (p *parser) parseConstant() (any, error) {
	t := p.peek()
	neg := false
	if t.isPunct("-") || t.isPunct("+") {
		neg = t.text == "-"
		p.next()
		t = p.peek()
		if t.kind != tokNumber {
			return nil, p.unexpected("a number")
		}
	}
	switch t.kind {
	case tokNumber:
		p.next()
		if neg {
			return -t.num, nil
		}
		return t.num, nil
	case tokString:
		p.next()
		return t.text, nil
	case tokIdent:
		if c, ok := keywordConstant(t); ok {
			p.next()
			return c, nil
		}
	}
	return nil, p.unexpected("a constant")
}
