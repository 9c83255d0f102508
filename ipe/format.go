package ipe

import (
	"bytes"
	"strings"
)

// Format returns the canonical form of a policy the kernel accepts:
//
//   - comments before the header, then the header line
//     policy_name=NAME policy_version=MAJOR.MINOR.REV (numbers without '+'
//     or leading zeros);
//   - a blank line, the global DEFAULT, then the per-operation DEFAULTs in
//     the kernel's operation order;
//   - a blank line, then the rules in their original order as
//     "op=OP prop... action=X" with single spaces and lowercase hex
//     (algorithm names are kept as written: the kernel compares them
//     byte for byte);
//   - LF line endings, no trailing whitespace, at most one blank line in a
//     row, a final newline.
//
// Whole-line comments move with the statement that follows them and
// trailing comments stay on their line. Text after a NUL byte, which the
// kernel ignores, is dropped. The result parses to the same policy
// (Policy.SameRules) and Format is idempotent.
func Format(text []byte) ([]byte, error) {
	p, err := Parse(text)
	if err != nil {
		return nil, err
	}
	if p.Truncated {
		text = text[:p.TruncatedAt]
	}
	type stmt struct {
		line     int
		comments []string // "" marks a blank line inside the block
		blank    bool     // a blank line preceded the statement's block
		trailing string
	}
	var (
		pending []string
		blank   bool
		header  = true
	)
	byLine := map[int]*stmt{}
	var leading []string
	for _, l := range splitLines(string(text)) {
		body, comment := l.text, ""
		if i := strings.IndexByte(body, '#'); i >= 0 {
			body, comment = body[:i], trimKernelSpace(body[i:])
		}
		if trimKernelSpace(body) == "" {
			switch {
			case comment != "":
				pending = append(pending, comment)
			case len(pending) > 0:
				if pending[len(pending)-1] != "" {
					pending = append(pending, "")
				}
			default:
				blank = true
			}
			continue
		}
		for len(pending) > 0 && pending[len(pending)-1] == "" {
			pending = pending[:len(pending)-1]
		}
		if header {
			leading, pending, header = pending, nil, false
		}
		s := &stmt{line: l.no, comments: pending, blank: blank, trailing: comment}
		byLine[l.no] = s
		pending, blank = nil, false
	}
	var out bytes.Buffer
	writeBlock := func(s *stmt, text string) {
		for _, c := range s.comments {
			if c != "" {
				out.WriteString(c)
			}
			out.WriteByte('\n')
		}
		out.WriteString(text)
		if s.trailing != "" {
			out.WriteString(" " + s.trailing)
		}
		out.WriteByte('\n')
	}
	writeComments := func(cs []string) {
		for _, c := range cs {
			if c != "" {
				out.WriteString(c)
			}
			out.WriteByte('\n')
		}
	}
	writeComments(leading)
	writeBlock(byLine[p.HeaderLine], "policy_name="+p.Name+" policy_version="+p.Version.String())
	out.WriteByte('\n')
	if p.GlobalDefault != ActionUnset {
		writeBlock(byLine[p.GlobalDefaultLine], "DEFAULT action="+p.GlobalDefault.String())
	}
	for op := Op(0); op < NumOps; op++ {
		if p.OpDefault[op] != ActionUnset {
			writeBlock(byLine[p.OpDefaultLine[op]], "DEFAULT op="+op.String()+" action="+p.OpDefault[op].String())
		}
	}
	for i, r := range p.Rules {
		s := byLine[r.Line]
		if i == 0 || s.blank {
			out.WriteByte('\n')
		}
		writeBlock(s, r.String())
	}
	if len(pending) > 0 {
		for len(pending) > 0 && pending[len(pending)-1] == "" {
			pending = pending[:len(pending)-1]
		}
		out.WriteByte('\n')
		writeComments(pending)
	}
	return out.Bytes(), nil
}

func trimKernelSpace(s string) string {
	end := len(s)
	for end > 0 && isKernelSpace(s[end-1]) {
		end--
	}
	s = s[:end]
	start := 0
	for start < len(s) && (s[start] == ' ' || s[start] == '\t') {
		start++
	}
	return s[start:]
}
