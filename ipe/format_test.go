package ipe

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
)

// checkRoundTrip asserts the formatter's contract on one accepted policy:
// the canonical form parses to the same policy, lints valid, and is a
// fixed point of Format.
func checkRoundTrip(t *testing.T, name string, text []byte) {
	t.Helper()
	p, err := Parse(text)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	out, err := Format(text)
	if err != nil {
		t.Fatalf("%s: format: %v", name, err)
	}
	q, err := Parse(out)
	if err != nil {
		t.Fatalf("%s: formatted policy does not parse: %v\n%s", name, err, out)
	}
	if !p.SameRules(q) {
		t.Fatalf("%s: formatted policy differs\nin:  %q\nout: %q", name, text, out)
	}
	again, err := Format(out)
	if err != nil || !bytes.Equal(again, out) {
		t.Fatalf("%s: Format is not idempotent (%v)\n1: %q\n2: %q", name, err, out, again)
	}
}

// TestFormatKernelAcceptedCorpus: every corpus policy the real kernel
// accepted keeps its meaning through Format.
func TestFormatKernelAcceptedCorpus(t *testing.T) {
	ans := loadAnswers(t)
	n := 0
	for _, c := range readCorpus(t) {
		if ans.Answers[c.Name] != "OK" {
			continue
		}
		if _, err := Parse(c.Text); err != nil {
			continue // accepted by the kernel, refused by ours: TestKernelAnswers reports it
		}
		checkRoundTrip(t, c.Name, c.Text)
		n++
	}
	if n < 50 {
		t.Fatalf("only %d accepted corpus policies", n)
	}
}

// randomPolicy builds a random valid policy from the grammar's pieces.
func randomPolicy(r *rand.Rand) (*Policy, string) {
	p := &Policy{Name: fmt.Sprintf("p%d", r.IntN(1000)), Version: Version{uint16(r.IntN(3)), uint16(r.IntN(70000) % 65536), uint16(r.IntN(10))}}
	var lines, defaults []string
	if r.IntN(4) > 0 {
		p.GlobalDefault = Action(1 + r.IntN(2))
		defaults = append(defaults, "DEFAULT action="+p.GlobalDefault.String())
	}
	for op := Op(0); op < NumOps; op++ {
		if p.GlobalDefault == ActionUnset || r.IntN(3) == 0 {
			p.OpDefault[op] = Action(1 + r.IntN(2))
			defaults = append(defaults, "DEFAULT op="+op.String()+" action="+p.OpDefault[op].String())
		}
	}
	for i := r.IntN(12); i > 0; i-- {
		rule := Rule{Op: Op(r.IntN(int(NumOps))), Action: Action(1 + r.IntN(2))}
		for j := r.IntN(4); j > 0; j-- {
			k := PropKind(r.IntN(int(numPropKinds)))
			pr := Property{Kind: k}
			if k.HasDigest() {
				alg := []string{"sha256", "sha512", "SHA256", "", "x"}[r.IntN(5)]
				v := make([]byte, r.IntN(40))
				for i := range v {
					v[i] = byte(r.IntN(256))
				}
				pr.Digest = Digest{Alg: alg, Value: v}
			}
			rule.Props = append(rule.Props, pr)
		}
		p.Rules = append(p.Rules, rule)
		lines = append(lines, rule.String())
	}
	// DEFAULTs anywhere; rules keep their order (it matters within an op).
	for _, d := range defaults {
		i := r.IntN(len(lines) + 1)
		lines = append(lines[:i], append([]string{d}, lines[i:]...)...)
	}
	return p, fmt.Sprintf("policy_name=%s policy_version=%s\n", p.Name, p.Version) + strings.Join(lines, "\n") + "\n"
}

// mutateLayout rewrites a policy's layout without changing its meaning:
// separators, blank lines, comments, line endings, hex case, version
// spelling.
func mutateLayout(r *rand.Rand, text string) string {
	var b strings.Builder
	ends := []string{"\n", "\r\n", "\r", "\n\n", "\n \t\n"}
	if r.IntN(3) == 0 {
		b.WriteString("# leading comment\n\n")
	}
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		toks := strings.Fields(line)
		for j, tok := range toks {
			if strings.Contains(tok, ":") && r.IntN(2) == 0 {
				k := strings.IndexByte(tok, ':')
				tok = tok[:k+1] + strings.ToUpper(tok[k+1:])
			}
			if i == 0 && strings.HasPrefix(tok, "policy_version=") && r.IntN(2) == 0 {
				v := strings.Split(tok[len("policy_version="):], ".")
				tok = "policy_version=+" + v[0] + ".00" + v[1] + "." + v[2]
			}
			if j > 0 {
				b.WriteString([]string{" ", "\t", "  ", " \t "}[r.IntN(4)])
			} else if r.IntN(4) == 0 {
				b.WriteString("  ")
			}
			b.WriteString(tok)
		}
		if r.IntN(4) == 0 {
			b.WriteString([]string{" # trailing", "\t", " \v", "#x"}[r.IntN(4)])
		}
		if r.IntN(5) == 0 {
			b.WriteString("\n# a comment line")
		}
		b.WriteString(ends[r.IntN(len(ends))])
	}
	return b.String()
}

// TestFormatProperty: for thousands of random policies and random layout
// mutations of them, the mutation parses to the same policy as the
// original, and Format keeps that meaning and is idempotent.
func TestFormatProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 3000; i++ {
		want, text := randomPolicy(r)
		got, err := Parse([]byte(text))
		if err != nil {
			t.Fatalf("generated policy refused: %v\n%s", err, text)
		}
		if !want.SameRules(got) {
			t.Fatalf("generated policy parsed differently\n%s", text)
		}
		mut := mutateLayout(r, text)
		mp, err := Parse([]byte(mut))
		if err != nil {
			t.Fatalf("mutation refused: %v\n%q", err, mut)
		}
		if !want.SameRules(mp) {
			t.Fatalf("mutation changed meaning\n%q", mut)
		}
		checkRoundTrip(t, fmt.Sprintf("case %d", i), []byte(mut))
	}
}

// TestFormatKeepsComments: comments survive formatting, in order.
func TestFormatKeepsComments(t *testing.T) {
	in := "# head\npolicy_name=a policy_version=1.0.0 # hdr\n\n# about exec\nop=EXECUTE action=ALLOW # why\n# g\nDEFAULT action=DENY\n# tail\n"
	out, err := Format([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range strings.Split(string(out), "\n") {
		if i := strings.IndexByte(l, '#'); i >= 0 {
			got = append(got, l[i:])
		}
	}
	for _, c := range []string{"# head", "# hdr", "# about exec", "# why", "# g", "# tail"} {
		if !strings.Contains(strings.Join(got, "\n"), c) {
			t.Errorf("comment %q lost:\n%s", c, out)
		}
	}
	checkRoundTrip(t, "comments", []byte(in))
}

// TestFormatRefusesInvalid: Format returns the parser's error.
func TestFormatRefusesInvalid(t *testing.T) {
	_, err := Format([]byte("policy_name=a policy_version=1.0.0\n"))
	if !errors.Is(err, ErrInvalidPolicy) || !errors.Is(err, syscall.EBADMSG) {
		t.Fatalf("got %v", err)
	}
}

// TestParseErrorPositions: for every corpus policy the kernel refused in
// its parser, our error points inside the text: a real line, a column on
// it, and the reported token at that column.
func TestParseErrorPositions(t *testing.T) {
	for _, c := range readCorpus(t) {
		_, err := Parse(c.Text)
		var pe *ParseError
		if !errors.As(err, &pe) {
			continue
		}
		text := string(c.Text)
		if i := strings.IndexByte(text, 0); i >= 0 {
			text = text[:i]
		}
		if pe.Msg == "" || pe.Errno == 0 {
			t.Errorf("%s: empty error %+v", c.Name, pe)
		}
		if pe.Line == 0 {
			continue
		}
		var line string
		found := false
		for _, l := range splitLines(text) {
			if l.no == pe.Line && strings.TrimSpace(l.text) != "" {
				line, found = l.text, true
				break
			}
		}
		if !found {
			t.Errorf("%s: error on line %d, which is empty or missing: %v", c.Name, pe.Line, pe)
			continue
		}
		if pe.Col < 1 || pe.Col > len(line)+1 {
			t.Errorf("%s: column %d outside line of %d bytes: %v", c.Name, pe.Col, len(line), pe)
			continue
		}
		if pe.Token != "" && !strings.Contains(line, pe.Token) {
			t.Errorf("%s: token %q not on line %q", c.Name, pe.Token, line)
		}
	}
}

// TestRuleStringRoundTrip: Rule.String of every parsed corpus rule parses
// back to the same rule (what audit records and fmt rely on).
func TestRuleStringRoundTrip(t *testing.T) {
	for _, c := range readCorpus(t) {
		p, err := Parse(c.Text)
		if err != nil {
			continue
		}
		for _, r := range p.Rules {
			def, _, _, back, err := parseRuleText(r.String())
			if err != nil || def || !back.Equal(r) {
				t.Errorf("%s: %q -> %v %v", c.Name, r.String(), back, err)
			}
		}
	}
}
