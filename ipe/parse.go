package ipe

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"syscall"
)

// ErrInvalidPolicy is matched (errors.Is) by every *ParseError: the kernel
// would refuse the policy text.
var ErrInvalidPolicy = errors.New("ipe: invalid policy")

// ParseError describes why the kernel would refuse a policy, with the errno
// its new_policy write returns and what the kernel never says: where, what
// was expected and a hint.
type ParseError struct {
	Errno    syscall.Errno // EBADMSG, EINVAL or ERANGE, as the kernel returns it
	Line     int           // 1-based line; 0 for errors about the whole policy
	Col      int           // 1-based byte column of Token; 0 if none
	Token    string        // the offending token, if any
	Msg      string        // what is wrong
	Expected string        // what the kernel would have accepted here
	Hint     string        // how to fix it
}

func (e *ParseError) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d", e.Line)
		if e.Col > 0 {
			fmt.Fprintf(&b, ", column %d", e.Col)
		}
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	fmt.Fprintf(&b, " (kernel: %s)", ErrnoName(e.Errno))
	if e.Expected != "" {
		b.WriteString("; expected ")
		b.WriteString(e.Expected)
	}
	if e.Hint != "" {
		b.WriteString("; hint: ")
		b.WriteString(e.Hint)
	}
	return b.String()
}

// Unwrap lets errors.Is match ErrInvalidPolicy and the errno.
func (e *ParseError) Unwrap() []error { return []error{ErrInvalidPolicy, e.Errno} }

// Parse parses policy text exactly as Linux 6.12's ipe_parse_policy does
// and returns a *ParseError (with the kernel's errno) when the kernel would
// refuse it.
func Parse(text []byte) (*Policy, error) {
	p := &Policy{}
	if len(text) == 0 {
		return nil, &ParseError{Errno: syscall.EBADMSG, Msg: "empty policy",
			Expected: "a header line policy_name=NAME policy_version=X.Y.Z and a DEFAULT rule"}
	}
	// kmemdup_nul + strsep: the policy is a C string.
	if i := strings.IndexByte(string(text), 0); i >= 0 {
		p.Truncated = true
		p.TruncatedAt = i
		p.TruncatedLine = 1 + strings.Count(string(text[:i]), "\n")
		text = text[:i]
	}
	ps := &parser{p: p}
	for _, ln := range splitLines(string(text)) {
		if err := ps.line(ln); err != nil {
			return nil, err
		}
	}
	if !ps.header {
		return nil, &ParseError{Errno: syscall.EBADMSG, Msg: "policy has no header line",
			Expected: "policy_name=NAME policy_version=X.Y.Z as the first non-comment line"}
	}
	if p.GlobalDefault == ActionUnset {
		var missing []string
		for op := Op(0); op < NumOps; op++ {
			if p.OpDefault[op] == ActionUnset {
				missing = append(missing, op.String())
			}
		}
		if len(missing) > 0 {
			return nil, &ParseError{Errno: syscall.EBADMSG,
				Msg:      "no global DEFAULT and no DEFAULT for " + strings.Join(missing, ", "),
				Expected: "DEFAULT action=ALLOW|DENY, or DEFAULT op=OP action=ALLOW|DENY for every one of the 7 operations",
				Hint:     "add a line \"DEFAULT action=DENY\" (or ALLOW) after the header"}
		}
	}
	return p, nil
}

// srcLine is one line of policy text as the kernel sees it.
type srcLine struct {
	no   int    // 1-based line number for diagnostics
	text string // the line without its terminator
}

// splitLines splits like strsep(&policy, "\n\r"): every \n and every \r
// ends a line. Line numbers count "\r\n" and lone "\r" as one break, the
// way editors show them.
func splitLines(s string) []srcLine {
	var out []srcLine
	no, start := 1, 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '\n' && s[i] != '\r' {
			continue
		}
		out = append(out, srcLine{no: no, text: s[start:i]})
		start = i + 1
		if i < len(s) {
			// "\r\n": the kernel sees an empty line between; editors
			// one line break.
			if s[i] == '\n' || i+1 >= len(s) || s[i+1] != '\n' {
				no++
			}
		}
	}
	return out
}

// isKernelSpace is the kernel's isspace(): \t \n \v \f \r, space and 0xA0
// (lib/ctype.c marks Latin-1 NBSP as space).
func isKernelSpace(c byte) bool { return c == ' ' || (c >= '\t' && c <= '\r') || c == 0xa0 }

// token is one piece of a line split on space and tab, with its column.
type token struct {
	s   string
	col int // 1-based byte column
}

// splitTokens splits like repeated strsep(&line, " \t"), keeping empty
// pieces (the kernel skips them, but where they are matters for rules).
func splitTokens(line string) []token {
	var out []token
	start := 0
	for i := 0; i <= len(line); i++ {
		if i == len(line) || line[i] == ' ' || line[i] == '\t' {
			out = append(out, token{s: line[start:i], col: start + 1})
			start = i + 1
		}
	}
	return out
}

type parser struct {
	p      *Policy
	header bool
}

func (ps *parser) line(l srcLine) error {
	s := l.text
	if i := strings.IndexByte(s, '#'); i >= 0 {
		s = s[:i]
	}
	end := len(s)
	for end > 0 && isKernelSpace(s[end-1]) {
		end--
	}
	s = s[:end]
	if s == "" {
		return nil
	}
	if !ps.header {
		if err := ps.parseHeader(l.no, s); err != nil {
			return err
		}
		ps.header = true
		ps.p.HeaderLine = l.no
		return nil
	}
	return ps.parseRule(l.no, s)
}

const (
	hdrName    = "policy_name="
	hdrVersion = "policy_version="
)

func (ps *parser) parseHeader(no int, line string) error {
	idx := 0
	var last token
	for _, t := range splitTokens(line) {
		if t.s == "" {
			continue
		}
		last = t
		if idx >= 2 {
			return &ParseError{Errno: syscall.EBADMSG, Line: no, Col: t.col, Token: t.s,
				Msg:      fmt.Sprintf("unexpected token %q after policy_version in the header", t.s),
				Expected: "end of line (the header has exactly two tokens)",
				Hint:     headerHint(t.s)}
		}
		tok := 2
		switch {
		case strings.HasPrefix(t.s, hdrName) && len(t.s) > len(hdrName):
			tok = 0
		case strings.HasPrefix(t.s, hdrVersion) && len(t.s) > len(hdrVersion):
			tok = 1
		}
		if tok != idx {
			e := &ParseError{Errno: syscall.EBADMSG, Line: no, Col: t.col, Token: t.s}
			if idx == 0 {
				e.Msg = fmt.Sprintf("header must start with policy_name=, found %q", t.s)
				e.Expected = "policy_name=NAME (a non-empty name)"
				e.Hint = headerHint(t.s)
			} else {
				e.Msg = fmt.Sprintf("expected policy_version= as the second header token, found %q", t.s)
				e.Expected = "policy_version=MAJOR.MINOR.REVISION"
				e.Hint = headerHint(t.s)
			}
			return e
		}
		switch tok {
		case 0:
			ps.p.Name = t.s[len(hdrName):]
		case 1:
			v, bad, err := parseVersion(t.s[len(hdrVersion):])
			if err != nil {
				var pe *ParseError
				errors.As(err, &pe)
				pe.Line = no
				pe.Col = t.col + len(hdrVersion) + bad
				pe.Token = t.s
				return pe
			}
			ps.p.Version = v
		}
		idx++
	}
	if idx != 2 {
		e := &ParseError{Errno: syscall.EBADMSG, Line: no, Col: last.col + len(last.s),
			Msg:      "header has no policy_version",
			Expected: "policy_name=NAME policy_version=MAJOR.MINOR.REVISION on one line"}
		if idx == 0 {
			e.Msg = "header line has no tokens"
		}
		return e
	}
	return nil
}

func headerHint(s string) string {
	low := strings.ToLower(s)
	switch {
	case strings.HasPrefix(low, "policy_name") && !strings.HasPrefix(s, hdrName):
		return "write policy_name= in lowercase with '=' and no spaces around it"
	case strings.HasPrefix(low, "policy_version") && !strings.HasPrefix(s, hdrVersion):
		return "write policy_version= in lowercase with '=' and no spaces around it"
	case s == hdrName:
		return "the policy name must not be empty"
	case s == hdrVersion:
		return "the version must not be empty"
	case strings.HasPrefix(s, hdrVersion):
		return "the header is policy_name=NAME first, then policy_version=X.Y.Z"
	case strings.HasPrefix(s, "op=") || s == "DEFAULT":
		return "the first non-comment line must be the header policy_name=NAME policy_version=X.Y.Z"
	}
	return "names cannot contain spaces, tabs or '#'"
}

// parseVersion follows parse_version: strsep on '.', at most three fields,
// each kstrtou16(field, 10). It returns the byte offset of the bad field.
func parseVersion(s string) (Version, int, error) {
	var cv [3]uint16
	n, off := 0, 0
	for _, f := range strings.Split(s, ".") {
		if n >= 3 {
			return Version{}, off, &ParseError{Errno: syscall.EBADMSG,
				Msg:      fmt.Sprintf("version %q has more than three fields", s),
				Expected: "MAJOR.MINOR.REVISION", Hint: "use exactly three numbers 0-65535"}
		}
		v, err := kstrtou16(f)
		if err != nil {
			e := &ParseError{Errno: err.(syscall.Errno), Expected: "a decimal number 0-65535 (an optional leading '+')"}
			if e.Errno == syscall.ERANGE {
				e.Msg = fmt.Sprintf("version field %q is larger than 65535", f)
				e.Hint = "each of the three version numbers is a u16"
			} else {
				e.Msg = fmt.Sprintf("version field %q is not a decimal number", f)
				switch {
				case f == "":
					e.Hint = "empty field: check for doubled or trailing dots"
				case strings.HasPrefix(f, "-"):
					e.Hint = "negative numbers are not allowed"
				case strings.HasPrefix(strings.ToLower(f), "0x"):
					e.Hint = "the kernel reads versions in base 10 only"
				}
			}
			return Version{}, off, e
		}
		cv[n] = v
		n++
		off += len(f) + 1
	}
	if n != 3 {
		return Version{}, 0, &ParseError{Errno: syscall.EBADMSG,
			Msg:      fmt.Sprintf("version %q has %d field(s)", s, n),
			Expected: "MAJOR.MINOR.REVISION", Hint: "use exactly three numbers, e.g. 1.0.0"}
	}
	return Version{cv[0], cv[1], cv[2]}, 0, nil
}

// kstrtou16 is the kernel's kstrtou16(s, 10): an optional '+', decimal
// digits, optionally one trailing '\n'; ERANGE if the digits overflow u64
// (checked before trailing garbage) or the value exceeds 65535.
func kstrtou16(s string) (uint16, error) {
	s = strings.TrimPrefix(s, "+")
	var res uint64
	overflow := false
	i := 0
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		d := uint64(s[i] - '0')
		if res > (math.MaxUint64-d)/10 {
			overflow = true
		}
		res = res*10 + d
	}
	if overflow {
		return 0, syscall.ERANGE
	}
	if i == 0 {
		return 0, syscall.EINVAL
	}
	rest := s[i:]
	if rest == "\n" {
		rest = ""
	}
	if rest != "" {
		return 0, syscall.EINVAL
	}
	if res > math.MaxUint16 {
		return 0, syscall.ERANGE
	}
	return uint16(res), nil
}

func (ps *parser) parseRule(no int, line string) error {
	toks := splitTokens(line)
	last := toks[len(toks)-1] // non-empty: trailing spaces were removed
	var (
		isDefault bool
		first     = true
		op        = OpNone
		opParsed  bool
		props     []Property
		defTok    token
	)
	for _, t := range toks[:len(toks)-1] {
		if t.s == "" {
			continue
		}
		if first && t.s == "DEFAULT" {
			isDefault = true
			defTok = t
		} else if !opParsed {
			o, ok := parseOpToken(t.s)
			if !ok {
				return ps.badOp(no, t, first, isDefault)
			}
			op, opParsed = o, true
		} else {
			pr, err := parseProperty(no, t)
			if err != nil {
				return err
			}
			props = append(props, pr)
		}
		first = false
	}
	action, ok := parseActionToken(last.s)
	if !ok {
		return ps.badAction(no, last, opParsed, isDefault)
	}
	if isDefault {
		switch {
		case len(props) > 0:
			return &ParseError{Errno: syscall.EBADMSG, Line: no, Col: defTok.col, Token: "DEFAULT",
				Msg:      "a DEFAULT rule cannot have properties",
				Expected: "DEFAULT action=ALLOW|DENY or DEFAULT op=OP action=ALLOW|DENY",
				Hint:     "drop DEFAULT to make this an ordinary rule, or drop its properties"}
		case op == OpNone:
			if ps.p.GlobalDefault != ActionUnset {
				return &ParseError{Errno: syscall.EBADMSG, Line: no, Col: defTok.col, Token: "DEFAULT",
					Msg:  fmt.Sprintf("duplicate global DEFAULT (first on line %d)", ps.p.GlobalDefaultLine),
					Hint: "keep one DEFAULT action=... line"}
			}
			ps.p.GlobalDefault = action
			ps.p.GlobalDefaultLine = no
		default:
			if ps.p.OpDefault[op] != ActionUnset {
				return &ParseError{Errno: syscall.EBADMSG, Line: no, Col: defTok.col, Token: "DEFAULT",
					Msg:  fmt.Sprintf("duplicate DEFAULT for op=%s (first on line %d)", op, ps.p.OpDefaultLine[op]),
					Hint: "keep one DEFAULT op=" + op.String() + " line"}
			}
			ps.p.OpDefault[op] = action
			ps.p.OpDefaultLine[op] = no
		}
		return nil
	}
	if op == OpNone {
		return &ParseError{Errno: syscall.EBADMSG, Line: no, Col: last.col, Token: last.s,
			Msg:      "rule has no op=",
			Expected: "op=OP [properties...] action=ALLOW|DENY, or DEFAULT action=ALLOW|DENY",
			Hint:     "start the rule with op=EXECUTE (or another operation), or prefix it with DEFAULT"}
	}
	ps.p.Rules = append(ps.p.Rules, Rule{Op: op, Props: props, Action: action, Line: no})
	return nil
}

func parseOpToken(s string) (Op, bool) {
	if !strings.HasPrefix(s, "op=") {
		return OpNone, false
	}
	return ParseOp(s[3:])
}

func parseActionToken(s string) (Action, bool) {
	if !strings.HasPrefix(s, "action=") {
		return ActionUnset, false
	}
	return ParseAction(s[7:])
}

var opList = "op=" + strings.Join(opNames[:], "|")

func (ps *parser) badOp(no int, t token, first, isDefault bool) error {
	e := &ParseError{Errno: syscall.EBADMSG, Line: no, Col: t.col, Token: t.s}
	switch {
	case strings.HasPrefix(t.s, "op="):
		e.Msg = fmt.Sprintf("unknown operation %q", t.s[3:])
		e.Expected = opList
		if o, ok := ParseOp(strings.ToUpper(t.s[3:])); ok {
			e.Hint = "operation names are uppercase: op=" + o.String()
		} else if strings.HasPrefix(strings.ToUpper(t.s[3:]), "EXEC") {
			e.Hint = "the execute operation is spelled op=EXECUTE"
		}
	case strings.HasPrefix(strings.ToLower(t.s), "op="):
		e.Msg = fmt.Sprintf("unknown token %q", t.s)
		e.Expected = opList
		e.Hint = "write op= in lowercase"
	case t.s == "DEFAULT":
		e.Msg = "DEFAULT must be the first token of the line"
		e.Expected = opList
	case strings.EqualFold(t.s, "default"):
		e.Msg = fmt.Sprintf("unknown token %q", t.s)
		e.Expected = "DEFAULT or " + opList
		e.Hint = "DEFAULT is uppercase"
	case isPropertyLike(t.s):
		e.Msg = fmt.Sprintf("property %q before op=", t.s)
		e.Expected = opList + " before any property"
		e.Hint = "the kernel requires op= to come first (after DEFAULT)"
	case strings.HasPrefix(t.s, "action="):
		e.Msg = fmt.Sprintf("%q is not the last token", t.s)
		e.Expected = opList
		e.Hint = "action= must be the last token of a rule"
	default:
		e.Msg = fmt.Sprintf("unknown token %q", t.s)
		e.Expected = opList
		if isDefault {
			e.Expected = opList + " or action=ALLOW|DENY"
		}
	}
	return e
}

func isPropertyLike(s string) bool {
	for _, p := range []string{"boot_verified", "dmverity_", "fsverity_"} {
		if strings.HasPrefix(strings.ToLower(s), p) {
			return true
		}
	}
	return false
}

func (ps *parser) badAction(no int, t token, opParsed, isDefault bool) error {
	e := &ParseError{Errno: syscall.EBADMSG, Line: no, Col: t.col, Token: t.s,
		Expected: "action=ALLOW or action=DENY as the last token"}
	switch {
	case strings.HasPrefix(t.s, "action="):
		e.Msg = fmt.Sprintf("unknown action %q", t.s[7:])
		e.Hint = "IPE knows two actions, ALLOW and DENY (audit-only is enforce=0, not an action)"
		if _, ok := ParseAction(strings.ToUpper(t.s[7:])); ok {
			e.Hint = "actions are uppercase: action=" + strings.ToUpper(t.s[7:])
		}
	case strings.HasPrefix(strings.ToLower(t.s), "action="):
		e.Msg = fmt.Sprintf("unknown token %q", t.s)
		e.Hint = "write action= in lowercase and ALLOW/DENY in uppercase"
	default:
		e.Msg = fmt.Sprintf("rule does not end with action=, found %q", t.s)
		if !opParsed && !isDefault && strings.HasPrefix(t.s, "op=") {
			e.Msg = "rule has no action="
		}
		e.Hint = "every rule ends with action=ALLOW or action=DENY"
	}
	return e
}

var propList = "boot_verified=TRUE|FALSE, dmverity_roothash=ALG:HEX, dmverity_signature=TRUE|FALSE, fsverity_digest=ALG:HEX, fsverity_signature=TRUE|FALSE"

// parseProperty follows parse_property and ipe_digest_parse.
func parseProperty(no int, t token) (Property, error) {
	s := t.s
	for k := PropKind(0); k < numPropKinds; k++ {
		pt := propTokens[k]
		if !k.HasDigest() {
			if s == pt {
				return Property{Kind: k}, nil
			}
			continue
		}
		if !strings.HasPrefix(s, pt) || len(s) == len(pt) {
			continue
		}
		val := s[len(pt):]
		colon := strings.IndexByte(val, ':')
		if colon < 0 {
			return Property{}, &ParseError{Errno: syscall.EBADMSG, Line: no, Col: t.col, Token: s,
				Msg:      fmt.Sprintf("%s value %q has no ':'", k.Key(), val),
				Expected: k.Key() + "=ALG:HEX, e.g. " + k.Key() + "=sha256:<64 hex digits>"}
		}
		alg, raw := val[:colon], val[colon+1:]
		digest, bad, ok := kernelHex2bin(raw)
		if !ok {
			e := &ParseError{Errno: syscall.EINVAL, Line: no, Col: t.col + len(pt) + colon + 1 + bad, Token: s,
				Expected: "an even number of hex digits"}
			if len(raw)%2 == 1 && bad == len(raw) {
				e.Msg = fmt.Sprintf("%s digest has an odd number of hex digits (%d)", k.Key(), len(raw))
				e.Hint = "a digest is whole bytes: check for a missing or extra digit"
			} else {
				e.Msg = fmt.Sprintf("%s digest has a non-hex character %q", k.Key(), raw[bad:bad+1])
				e.Hint = "only 0-9, a-f and A-F are allowed after the ':'"
			}
			return Property{}, e
		}
		return Property{Kind: k, Digest: Digest{Alg: alg, Value: digest}}, nil
	}
	e := &ParseError{Errno: syscall.EBADMSG, Line: no, Col: t.col, Token: s,
		Msg: fmt.Sprintf("unknown property %q", s), Expected: propList + ", or action=ALLOW|DENY last"}
	switch {
	case strings.HasPrefix(s, "op="):
		e.Msg = fmt.Sprintf("second op= token %q in one rule", s)
		e.Hint = "a rule has exactly one op=; write one rule per operation"
	case s == "DEFAULT":
		e.Msg = "DEFAULT must be the first token of the line"
	case strings.HasPrefix(s, "action="):
		e.Msg = fmt.Sprintf("%q is not the last token", s)
		e.Hint = "action= must be the last token of a rule, and appear once"
	case strings.HasSuffix(s, "=") && isPropertyLike(s):
		e.Hint = "the value must not be empty"
	default:
		if h := propertyHint(s); h != "" {
			e.Hint = h
		}
	}
	return Property{}, e
}

func propertyHint(s string) string {
	up := s
	if i := strings.IndexByte(s, '='); i >= 0 {
		up = strings.ToLower(s[:i]) + "=" + strings.ToUpper(s[i+1:])
	}
	for k := PropKind(0); k < numPropKinds; k++ {
		if !k.HasDigest() && up == propTokens[k] {
			return "write it as " + propTokens[k] + " (key lowercase, TRUE/FALSE uppercase)"
		}
	}
	low := strings.ToLower(s)
	switch {
	case strings.HasPrefix(low, "dmverity_root_hash") || strings.HasPrefix(low, "dm_verity") || strings.HasPrefix(low, "roothash"):
		return "the property is spelled dmverity_roothash=ALG:HEX"
	case strings.HasPrefix(low, "fs_verity") || strings.HasPrefix(low, "fsverity_hash"):
		return "the property is spelled fsverity_digest=ALG:HEX"
	case strings.HasPrefix(low, "dmverity_sig") || strings.HasPrefix(low, "fsverity_sig"):
		return "the value is TRUE or FALSE, e.g. dmverity_signature=TRUE"
	case strings.HasPrefix(low, "boot_verified"):
		return "the value is TRUE or FALSE: boot_verified=TRUE"
	case strings.Contains(s, "="):
		return "Linux 6.12 knows only these five properties"
	}
	return ""
}

// kernelHex2bin models ipe_digest_parse: digest_len = (len+1)/2, then
// hex2bin(digest, raw, digest_len), which reads the terminating NUL as the
// last digit of an odd-length string. An empty string is a valid, empty
// digest. It returns the offset of the first bad character.
func kernelHex2bin(raw string) ([]byte, int, bool) {
	n := (len(raw) + 1) / 2
	out := make([]byte, n)
	for i := 0; i < n; i++ {
		hi := hexVal(raw, 2*i)
		if hi < 0 {
			return nil, 2 * i, false
		}
		lo := hexVal(raw, 2*i+1)
		if lo < 0 {
			return nil, 2*i + 1, false
		}
		out[i] = byte(hi<<4 | lo)
	}
	return out, 0, true
}

func hexVal(s string, i int) int {
	if i >= len(s) {
		return -1 // the NUL terminator
	}
	c := s[i]
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
