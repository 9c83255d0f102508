package ipe

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

var updateSeeds = flag.Bool("update-seeds", false, "regenerate testdata/fuzz seeds from the kernel corpus and the VM's audit records")

// FuzzParse: the parser never panics, refuses only with the errnos the
// kernel's parser returns, and what it accepts survives Format.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<16 {
			return
		}
		res := Lint(b, LintOptions{})
		p, err := Parse(b)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error is not a *ParseError: %v", err)
			}
			switch pe.Errno {
			case syscall.EBADMSG, syscall.EINVAL, syscall.ERANGE:
			default:
				t.Fatalf("errno %v", pe.Errno)
			}
			if res.Valid() {
				t.Fatalf("Lint accepts what Parse refuses")
			}
			return
		}
		out, err := Format(b)
		if err != nil {
			t.Fatalf("format of an accepted policy: %v", err)
		}
		q, err := Parse(out)
		if err != nil || !p.SameRules(q) {
			t.Fatalf("format changed the policy: %v\nin  %q\nout %q", err, b, out)
		}
		if again, _ := Format(out); !bytes.Equal(again, out) {
			t.Fatalf("format not idempotent\n%q\n%q", out, again)
		}
	})
}

// FuzzParseAuditLine: the audit parser never panics and keeps within its
// field limit; decoded accesses re-parse their rule.
func FuzzParseAuditLine(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseAuditLine(s)
		if err != nil {
			return
		}
		if len(r.Fields) > MaxAuditFields {
			t.Fatalf("%d fields", len(r.Fields))
		}
		if r.Type == AuditIPEAccess {
			if a, err := ParseAccess(r); err == nil && a.Match == MatchRule && a.Matched == nil {
				t.Fatalf("rule match without rule: %q", s)
			}
		}
		ParsePolicyEvent(r)
	})
}

// FuzzLintSigned: envelope checks never panic on arbitrary blobs.
func FuzzLintSigned(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		res := LintSigned(b, nil, LintOptions{})
		if !res.Valid() && res.Errno() == 0 {
			t.Fatalf("refusal without errno: %v", res.Err)
		}
	})
}

func writeSeed(t *testing.T, target, name string, v any) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var body string
	switch x := v.(type) {
	case []byte:
		body = fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", x)
	case string:
		body = fmt.Sprintf("go test fuzz v1\nstring(%q)\n", x)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestUpdateFuzzSeeds writes the fuzz seeds: the kernel corpus (small cases)
// for FuzzParse, the audit records the VM's kernel wrote for
// FuzzParseAuditLine, and signed policies for FuzzLintSigned.
func TestUpdateFuzzSeeds(t *testing.T) {
	if !*updateSeeds {
		t.Skip("run with -update-seeds to regenerate testdata/fuzz")
	}
	for _, c := range readCorpus(t) {
		if len(c.Text) <= 4096 {
			writeSeed(t, "FuzzParse", c.Name, c.Text)
		}
	}
	recs, err := os.ReadFile(kmsgRecordsFile)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range bytes.Split(recs, []byte("\n")) {
		if len(l) > 0 {
			writeSeed(t, "FuzzParseAuditLine", fmt.Sprintf("kmsg-%02d", i), string(l))
		}
	}
	for _, b := range signedSeeds(t) {
		writeSeed(t, "FuzzLintSigned", fmt.Sprintf("signed-%d", len(b)), b)
	}
}
