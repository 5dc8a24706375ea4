package query

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// tokKind is the kind of a lexical token.
type tokKind int

const (
	tokEOF    tokKind = iota
	tokIdent          // attribute name, keyword or function name
	tokString         // 'text' or "text", unescaped
	tokNumber         // decimal or 0x hexadecimal literal
	tokPunct          // operators and punctuation: = != <> < <= > >= + - * / % ( ) [ ] , .
)

// token is one lexical token. pos is its byte offset in the query text.
type token struct {
	kind tokKind
	text string  // identifier as written, unescaped string, or punctuation
	num  float64 // value of a tokNumber
	pos  int
}

// is reports whether t is the keyword kw (case-insensitive).
func (t token) is(kw string) bool {
	return t.kind == tokIdent && strings.EqualFold(t.text, kw)
}

// isPunct reports whether t is the punctuation p.
func (t token) isPunct(p string) bool {
	return t.kind == tokPunct && t.text == p
}

// describe renders t for an error message.
func (t token) describe() string {
	switch t.kind {
	case tokEOF:
		return "end of query"
	case tokString:
		return "string literal"
	case tokNumber:
		return "number " + t.text
	default:
		return "'" + t.text + "'"
	}
}

// lex splits src into tokens, ending with a tokEOF token.
func lex(src string) ([]token, error) {
	var toks []token
	i := 0
	for i < len(src) {
		c := src[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			i++
		case isIdentStart(c):
			j := i + 1
			for j < len(src) && isIdentPart(src[j]) {
				j++
			}
			toks = append(toks, token{kind: tokIdent, text: src[i:j], pos: i})
			i = j
		case isDigit(c) || (c == '.' && i+1 < len(src) && isDigit(src[i+1]) && !afterOperand(toks)):
			t, n, err := lexNumber(src, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, t)
			i = n
		case c == '\'' || c == '"':
			t, n, err := lexString(src, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, t)
			i = n
		default:
			p := ""
			if i+1 < len(src) {
				switch two := src[i : i+2]; two {
				case "!=", "<>", "<=", ">=":
					p = two
				}
			}
			if p == "" {
				switch c {
				case '=', '<', '>', '+', '-', '*', '/', '%', '(', ')', '[', ']', ',', '.':
					p = string(c)
				}
			}
			if p == "" {
				r, _ := utf8.DecodeRuneInString(src[i:])
				return nil, errorf(i, "unexpected character %q", r)
			}
			toks = append(toks, token{kind: tokPunct, text: p, pos: i})
			i += len(p)
		}
	}
	return append(toks, token{kind: tokEOF, pos: len(src)}), nil
}

// afterOperand reports whether the previous token ends an operand, so that
// a following '.' is a member access, not the start of a number like .5.
func afterOperand(toks []token) bool {
	if len(toks) == 0 {
		return false
	}
	t := toks[len(toks)-1]
	return t.kind == tokIdent || t.kind == tokString || t.kind == tokNumber ||
		t.isPunct(")") || t.isPunct("]")
}

func isIdentStart(c byte) bool {
	return c == '_' || c == '$' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentPart(c byte) bool { return isIdentStart(c) || isDigit(c) }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isHex(c byte) bool {
	return isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// lexNumber reads a decimal literal (digits, optional fraction, optional
// exponent) or a hexadecimal literal (0x followed by hex digits).
func lexNumber(src string, i int) (token, int, error) {
	start := i
	if src[i] == '0' && i+1 < len(src) && (src[i+1] == 'x' || src[i+1] == 'X') {
		j := i + 2
		for j < len(src) && isHex(src[j]) {
			j++
		}
		if j == i+2 {
			return token{}, 0, errorf(start, "malformed hexadecimal literal")
		}
		if j < len(src) && isIdentPart(src[j]) {
			return token{}, 0, errorf(start, "malformed hexadecimal literal")
		}
		u, err := strconv.ParseUint(src[i+2:j], 16, 64)
		if err != nil {
			return token{}, 0, errorf(start, "hexadecimal literal out of range")
		}
		return token{kind: tokNumber, text: src[start:j], num: float64(u), pos: start}, j, nil
	}
	j := i
	for j < len(src) && isDigit(src[j]) {
		j++
	}
	if j < len(src) && src[j] == '.' && j+1 < len(src) && isDigit(src[j+1]) {
		j++
		for j < len(src) && isDigit(src[j]) {
			j++
		}
	}
	if j < len(src) && (src[j] == 'e' || src[j] == 'E') {
		k := j + 1
		if k < len(src) && (src[k] == '+' || src[k] == '-') {
			k++
		}
		if k < len(src) && isDigit(src[k]) {
			for k < len(src) && isDigit(src[k]) {
				k++
			}
			j = k
		}
	}
	if j < len(src) && isIdentPart(src[j]) {
		return token{}, 0, errorf(start, "malformed number")
	}
	f, err := strconv.ParseFloat(src[start:j], 64)
	if err != nil {
		return token{}, 0, errorf(start, "number out of range")
	}
	return token{kind: tokNumber, text: src[start:j], num: f, pos: start}, j, nil
}

// lexString reads a string literal enclosed in single or double quotes.
// The documented escapes are \', \", \\ and \uXXXX.
func lexString(src string, i int) (token, int, error) {
	start := i
	quote := src[i]
	i++
	var b strings.Builder
	for i < len(src) {
		c := src[i]
		switch {
		case c == quote:
			return token{kind: tokString, text: b.String(), pos: start}, i + 1, nil
		case c == '\\':
			if i+1 >= len(src) {
				return token{}, 0, errorf(start, "unterminated string literal")
			}
			switch e := src[i+1]; e {
			case '\'', '"', '\\':
				b.WriteByte(e)
				i += 2
			case 'u':
				if i+6 > len(src) {
					return token{}, 0, errorf(i, "malformed \\u escape")
				}
				hex := src[i+2 : i+6]
				for k := 0; k < 4; k++ {
					if !isHex(hex[k]) {
						return token{}, 0, errorf(i, "malformed \\u escape")
					}
				}
				r, _ := strconv.ParseUint(hex, 16, 32)
				b.WriteRune(rune(r))
				i += 6
			default:
				return token{}, 0, errorf(i, "unsupported escape sequence \\%c", e)
			}
		default:
			b.WriteByte(c)
			i++
		}
	}
	return token{}, 0, errorf(start, "unterminated string literal")
}
