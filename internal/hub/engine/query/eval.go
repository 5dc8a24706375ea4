package query

import (
	"encoding/json"
	"math"
	"strings"
)

// undefinedType is the type of undefinedValue.
type undefinedType struct{}

// undefinedValue is the value of a missing attribute and of an expression
// whose operands have the wrong types. A condition matches only when it
// evaluates to Boolean true, so undefined never matches.
var undefinedValue = undefinedType{}

// kind classifies a JSON value for the type rules of the language.
type kind int

const (
	kindUndefined kind = iota
	kindNull
	kindBool
	kindNumber
	kindString
	kindArray
	kindObject
)

// kindOf returns the kind of v. Values come from encoding/json (with or
// without UseNumber) or from the query's constants.
func kindOf(v any) kind {
	switch v.(type) {
	case undefinedType:
		return kindUndefined
	case nil:
		return kindNull
	case bool:
		return kindBool
	case json.Number, float64, float32, int, int64, int32, uint, uint64, uint32:
		return kindNumber
	case string:
		return kindString
	case []any:
		return kindArray
	case map[string]any:
		return kindObject
	}
	return kindUndefined
}

// toFloat returns the numeric value of v, or false if v is not a number.
func toFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case json.Number:
		f, err := n.Float64()
		if err != nil {
			return 0, false
		}
		return f, true
	case float64:
		return n, true
	case float32:
		return float64(n), true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case int32:
		return float64(n), true
	case uint:
		return float64(n), true
	case uint64:
		return float64(n), true
	case uint32:
		return float64(n), true
	}
	return 0, false
}

// lookup follows segs from doc. A missing key, or a step into a value
// that is not an object, yields undefinedValue.
func lookup(doc map[string]any, segs []string) any {
	var cur any = doc
	for _, s := range segs {
		m, ok := cur.(map[string]any)
		if !ok {
			return undefinedValue
		}
		v, ok := m[s]
		if !ok {
			return undefinedValue
		}
		cur = v
	}
	return cur
}

// eval evaluates x on doc. It never fails: type mismatches yield
// undefinedValue, as the language defines.
func eval(x expr, doc map[string]any) any {
	switch e := x.(type) {
	case constExpr:
		return e.v
	case pathExpr:
		return lookup(doc, e.segs)
	case unaryExpr:
		v := eval(e.x, doc)
		switch e.op {
		case "NOT":
			if b, ok := v.(bool); ok {
				return !b
			}
			return undefinedValue
		case "-":
			if f, ok := toFloat(v); ok {
				return -f
			}
			return undefinedValue
		default: // +
			if f, ok := toFloat(v); ok {
				return f
			}
			return undefinedValue
		}
	case binaryExpr:
		switch e.op {
		case "AND":
			return and(eval(e.x, doc), eval(e.y, doc))
		case "OR":
			return or(eval(e.x, doc), eval(e.y, doc))
		case "+", "-", "*", "/", "%":
			return arith(e.op, eval(e.x, doc), eval(e.y, doc))
		default:
			return compare(e.op, eval(e.x, doc), eval(e.y, doc))
		}
	case inExpr:
		v := eval(e.x, doc)
		if kindOf(v) == kindUndefined {
			return undefinedValue
		}
		found := false
		for _, c := range e.list {
			if equal(v, c) {
				found = true
				break
			}
		}
		return found != e.not
	case callExpr:
		return call(e, doc)
	}
	return undefinedValue
}

// and is three-valued: false wins, then undefined, then true.
func and(x, y any) any {
	bx, okx := x.(bool)
	by, oky := y.(bool)
	if (okx && !bx) || (oky && !by) {
		return false
	}
	if okx && oky {
		return true
	}
	return undefinedValue
}

// or is three-valued: true wins, then undefined, then false.
func or(x, y any) any {
	bx, okx := x.(bool)
	by, oky := y.(bool)
	if (okx && bx) || (oky && by) {
		return true
	}
	if okx && oky {
		return false
	}
	return undefinedValue
}

// arith applies an arithmetic operator to two numbers. Any other operand,
// division or modulo by zero, and a non-finite result are undefined.
func arith(op string, x, y any) any {
	a, ok1 := toFloat(x)
	b, ok2 := toFloat(y)
	if !ok1 || !ok2 {
		return undefinedValue
	}
	var r float64
	switch op {
	case "+":
		r = a + b
	case "-":
		r = a - b
	case "*":
		r = a * b
	case "/":
		if b == 0 {
			return undefinedValue
		}
		r = a / b
	case "%":
		if b == 0 {
			return undefinedValue
		}
		r = math.Mod(a, b)
	}
	if math.IsInf(r, 0) || math.IsNaN(r) {
		return undefinedValue
	}
	return r
}

// equal reports whether two values are equal primitives of the same kind.
// Objects and arrays are never equal: comparisons are defined only between
// primitive values.
func equal(x, y any) bool {
	kx, ky := kindOf(x), kindOf(y)
	if kx != ky {
		return false
	}
	switch kx {
	case kindNull:
		return true
	case kindBool:
		return x.(bool) == y.(bool)
	case kindNumber:
		a, _ := toFloat(x)
		b, _ := toFloat(y)
		return a == b
	case kindString:
		return x.(string) == y.(string)
	}
	return false
}

// compare applies a comparison operator. Operands of different kinds, an
// undefined operand, and objects or arrays give undefined. Numbers and
// strings (ordinal) are ordered; null and Booleans support only = and !=.
func compare(op string, x, y any) any {
	kx, ky := kindOf(x), kindOf(y)
	if kx != ky || kx == kindUndefined || kx == kindArray || kx == kindObject {
		return undefinedValue
	}
	switch op {
	case "=":
		return equal(x, y)
	case "!=":
		return !equal(x, y)
	}
	var c int
	switch kx {
	case kindNumber:
		a, _ := toFloat(x)
		b, _ := toFloat(y)
		switch {
		case a < b:
			c = -1
		case a > b:
			c = 1
		}
	case kindString:
		c = strings.Compare(x.(string), y.(string))
	default:
		return undefinedValue
	}
	switch op {
	case "<":
		return c < 0
	case "<=":
		return c <= 0
	case ">":
		return c > 0
	default: // >=
		return c >= 0
	}
}

// call evaluates a supported scalar function.
func call(e callExpr, doc map[string]any) any {
	v := eval(e.args[0], doc)
	k := kindOf(v)
	switch e.name {
	case "IS_DEFINED":
		return k != kindUndefined
	case "IS_NULL":
		return typeCheck(k, k == kindNull)
	case "IS_BOOL":
		return typeCheck(k, k == kindBool)
	case "IS_NUMBER":
		return typeCheck(k, k == kindNumber)
	case "IS_STRING":
		return typeCheck(k, k == kindString)
	case "IS_OBJECT":
		return typeCheck(k, k == kindObject)
	case "IS_ARRAY":
		return typeCheck(k, k == kindArray)
	case "IS_PRIMITIVE":
		return typeCheck(k, k == kindNull || k == kindBool || k == kindNumber || k == kindString)
	}
	// STARTSWITH, ENDSWITH, CONTAINS: two strings, else undefined.
	s, ok1 := v.(string)
	t, ok2 := eval(e.args[1], doc).(string)
	if !ok1 || !ok2 {
		return undefinedValue
	}
	switch e.name {
	case "STARTSWITH":
		return strings.HasPrefix(s, t)
	case "ENDSWITH":
		return strings.HasSuffix(s, t)
	default: // CONTAINS
		return strings.Contains(s, t)
	}
}

// typeCheck gives the result of an IS_* type check: false for an
// undefined argument, else whether the kind matched.
func typeCheck(k kind, match bool) any {
	if k == kindUndefined {
		return false
	}
	return match
}
