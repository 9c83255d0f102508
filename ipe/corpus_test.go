package ipe

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// The kernel differential corpus: policies written to new_policy in a
// booted Linux 6.12 (TestVMKernelDifferential) whose answers are recorded
// in testdata/kernel/answers.json, so the unit tier compares our verdicts
// with the real kernel's without a VM.

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/kernel/corpus from kernelCorpus()")

const (
	corpusDir   = "testdata/kernel/corpus"
	answersFile = "testdata/kernel/answers.json"
)

type corpusCase struct {
	Name string // file name without .pol
	Text []byte
}

// kernelAnswers is what the real kernel said for every corpus case.
type kernelAnswers struct {
	Kernel  string            `json:"kernel"`  // uname -r of the recording kernel
	Signer  string            `json:"signer"`  // what signed the blobs
	Note    string            `json:"note"`    // how the file was made
	Answers map[string]string `json:"answers"` // case -> "OK" or errno name
}

const (
	sha256Hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	sha512Hex = "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e"
)

// kernelCorpus generates the differential corpus. Every accepted policy
// has a unique name unless the case is about a name collision.
func kernelCorpus() []corpusCase {
	var cs []corpusCase
	n := 0
	add := func(slug string, text string) {
		n++
		cs = append(cs, corpusCase{Name: fmt.Sprintf("%03d-%s", n, slug), Text: []byte(text)})
	}
	hdr := func() string { return fmt.Sprintf("policy_name=c%03d policy_version=1.0.0\n", n+1) }
	base := func(body string) string { return hdr() + body }

	// Valid baselines.
	add("global-allow", base("DEFAULT action=ALLOW\n"))
	add("global-deny", base("DEFAULT action=DENY\n"))
	add("exec-deny-rules", base("DEFAULT action=ALLOW\nDEFAULT op=EXECUTE action=DENY\nop=EXECUTE boot_verified=TRUE action=ALLOW\nop=EXECUTE dmverity_signature=TRUE action=ALLOW\n"))
	add("all-props", base("DEFAULT action=DENY\nop=EXECUTE boot_verified=FALSE dmverity_roothash=sha256:"+sha256Hex+" dmverity_signature=FALSE fsverity_digest=sha256:"+sha256Hex+" fsverity_signature=TRUE action=ALLOW\n"))
	for _, op := range opNames {
		add("op-"+strings.ToLower(op), base("DEFAULT action=ALLOW\nop="+op+" action=DENY\n"))
		add("opdefault-"+strings.ToLower(op), base("DEFAULT action=ALLOW\nDEFAULT op="+op+" action=DENY\n"))
	}
	for _, p := range propTokens {
		v := p
		if strings.HasSuffix(p, "=") {
			v = p + "sha256:" + sha256Hex
		}
		add("prop-"+strings.TrimSuffix(strings.ReplaceAll(p, "=", "-"), "-"), base("DEFAULT action=ALLOW\nop=EXECUTE "+v+" action=DENY\n"))
	}
	add("rule-no-props", base("DEFAULT action=DENY\nop=EXECUTE action=ALLOW\n"))
	add("rule-before-default", base("op=EXECUTE boot_verified=TRUE action=ALLOW\nDEFAULT action=DENY\n"))
	add("duplicate-prop", base("DEFAULT action=DENY\nop=EXECUTE boot_verified=TRUE boot_verified=TRUE action=ALLOW\n"))
	add("contradictory-props", base("DEFAULT action=DENY\nop=EXECUTE boot_verified=TRUE boot_verified=FALSE action=ALLOW\n"))

	// Defaults: per-op for every op replaces the global DEFAULT.
	var all7 strings.Builder
	for _, op := range opNames {
		all7.WriteString("DEFAULT op=" + op + " action=ALLOW\n")
	}
	add("all-op-defaults-no-global", base(all7.String()))
	var six strings.Builder
	for _, op := range opNames[:6] {
		six.WriteString("DEFAULT op=" + op + " action=ALLOW\n")
	}
	add("six-op-defaults-no-global", base(six.String()))
	add("op-default-only", base("DEFAULT op=EXECUTE action=DENY\n"))
	add("no-default", base("op=EXECUTE action=ALLOW\n"))
	add("header-only", hdr())
	add("duplicate-global-default", base("DEFAULT action=ALLOW\nDEFAULT action=ALLOW\n"))
	add("duplicate-global-default-differ", base("DEFAULT action=ALLOW\nDEFAULT action=DENY\n"))
	add("duplicate-op-default", base("DEFAULT action=ALLOW\nDEFAULT op=EXECUTE action=DENY\nDEFAULT op=EXECUTE action=DENY\n"))
	add("default-with-prop", base("DEFAULT action=ALLOW\nDEFAULT op=EXECUTE boot_verified=TRUE action=DENY\n"))
	add("default-global-with-prop", base("DEFAULT boot_verified=TRUE action=ALLOW\n"))
	add("default-lowercase", base("default action=ALLOW\n"))
	add("default-twice-on-line", base("DEFAULT DEFAULT action=ALLOW\n"))
	add("default-not-first", base("DEFAULT action=ALLOW\nop=EXECUTE DEFAULT action=DENY\n"))
	add("default-alone", base("DEFAULT action=ALLOW\nDEFAULT\n"))
	add("default-no-action", base("DEFAULT action=ALLOW\nDEFAULT op=EXECUTE\n"))
	add("default-bad-digest", base("DEFAULT action=ALLOW\nDEFAULT op=EXECUTE dmverity_roothash=sha256:zz action=DENY\n"))

	// Operations and actions.
	add("op-lowercase", base("DEFAULT action=ALLOW\nop=execute action=DENY\n"))
	add("op-unknown", base("DEFAULT action=ALLOW\nop=EXEC action=DENY\n"))
	add("op-kexec", base("DEFAULT action=ALLOW\nop=KEXEC action=DENY\n"))
	add("op-key-uppercase", base("DEFAULT action=ALLOW\nOP=EXECUTE action=DENY\n"))
	add("op-empty", base("DEFAULT action=ALLOW\nop= action=DENY\n"))
	add("op-missing", base("DEFAULT action=ALLOW\nboot_verified=TRUE action=DENY\n"))
	add("op-twice", base("DEFAULT action=ALLOW\nop=EXECUTE op=KMODULE action=DENY\n"))
	add("op-after-prop", base("DEFAULT action=ALLOW\nboot_verified=TRUE op=EXECUTE action=DENY\n"))
	add("action-only", base("DEFAULT action=ALLOW\naction=DENY\n"))
	add("action-lowercase", base("DEFAULT action=ALLOW\nop=EXECUTE action=deny\n"))
	add("action-unknown", base("DEFAULT action=ALLOW\nop=EXECUTE action=AUDIT\n"))
	add("action-missing", base("DEFAULT action=ALLOW\nop=EXECUTE boot_verified=TRUE\n"))
	add("action-twice", base("DEFAULT action=ALLOW\nop=EXECUTE action=ALLOW action=DENY\n"))
	add("action-not-last", base("DEFAULT action=ALLOW\nop=EXECUTE action=DENY boot_verified=TRUE\n"))
	add("action-empty", base("DEFAULT action=ALLOW\nop=EXECUTE action=\n"))
	add("global-default-action-lowercase", base("DEFAULT action=allow\n"))
	add("op-only", base("DEFAULT action=ALLOW\nop=EXECUTE\n"))

	// Properties.
	for _, bad := range []string{"boot_verified=true", "boot_verified=1", "boot_verified=", "boot_verified", "BOOT_VERIFIED=TRUE",
		"dmverity_signature=YES", "fsverity_signature=", "dmverity_root_hash=sha256:" + sha256Hex, "ipe_unknown=TRUE",
		"dmverity_roothash=", "fsverity_digest=", "dmverity_roothash", "=TRUE", "boot_verified==TRUE", "boot_verified=TRUE,dmverity_signature=TRUE"} {
		add("badprop-"+slug(bad), base("DEFAULT action=ALLOW\nop=EXECUTE "+bad+" action=DENY\n"))
	}

	// Digests: the kernel's (len+1)/2 + hex2bin, no algorithm check.
	for _, d := range []struct{ slug, v string }{
		{"empty-digest", "sha256:"},
		{"empty-alg-empty-digest", ":"},
		{"empty-alg", ":" + sha256Hex},
		{"no-colon", sha256Hex},
		{"odd-1", "sha256:a"},
		{"odd-63", "sha256:" + sha256Hex[1:]},
		{"odd-65", "sha256:" + sha256Hex + "a"},
		{"nonhex", "sha256:" + sha256Hex[:62] + "zz"},
		{"nonhex-first", "sha256:g" + sha256Hex[1:]},
		{"uppercase-hex", "sha256:" + strings.ToUpper(sha256Hex)},
		{"mixed-case-hex", "sha256:" + strings.ToUpper(sha256Hex[:32]) + sha256Hex[32:]},
		{"short-2", "sha256:ab"},
		{"long-sha512-in-sha256", "sha256:" + sha512Hex},
		{"sha512", "sha512:" + sha512Hex},
		{"alg-uppercase", "SHA256:" + sha256Hex},
		{"alg-unknown", "nosuchhash:" + sha256Hex},
		{"two-colons", "sha256:ab:cd"},
		{"colon-in-alg-position", "sha:256:" + sha256Hex},
		{"hex-prefix-0x", "sha256:0x" + sha256Hex[2:]},
		{"long-digest-1k", "sha256:" + strings.Repeat("ab", 1024)},
	} {
		add("roothash-"+d.slug, base("DEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash="+d.v+" action=DENY\n"))
	}
	for _, d := range []struct{ slug, v string }{
		{"empty-digest", "sha256:"}, {"odd", "sha256:abc"}, {"nonhex", "sha256:xy"}, {"no-colon", "abcd"}, {"sha512", "sha512:" + sha512Hex},
	} {
		add("fsvdigest-"+d.slug, base("DEFAULT action=ALLOW\nop=EXECUTE fsverity_digest="+d.v+" action=DENY\n"))
	}
	add("digest-error-before-bad-action", base("DEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash=sha256:zz action=BOGUS\n"))
	add("bad-op-before-bad-digest", base("DEFAULT action=ALLOW\nop=BOGUS dmverity_roothash=sha256:zz action=ALLOW\n"))
	add("bad-prop-before-bad-digest", base("DEFAULT action=ALLOW\nop=EXECUTE bogus=1 dmverity_roothash=sha256:zz action=ALLOW\n"))
	add("bad-digest-before-bad-prop", base("DEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash=sha256:zz bogus=1 action=ALLOW\n"))

	// Header.
	hv := func(h string) string { return h + "\nDEFAULT action=ALLOW\n" }
	add("header-missing-version", hv(fmt.Sprintf("policy_name=c%03d", n+1)))
	add("header-missing-name", hv("policy_version=1.0.0"))
	add("header-swapped", hv(fmt.Sprintf("policy_version=1.0.0 policy_name=c%03d", n+1)))
	add("header-extra-token", hv(fmt.Sprintf("policy_name=c%03d policy_version=1.0.0 extra=1", n+1)))
	add("header-extra-comment", hv(fmt.Sprintf("policy_name=c%03d policy_version=1.0.0 # comment", n+1)))
	add("header-empty-name", hv("policy_name= policy_version=1.0.0"))
	add("header-empty-version", hv(fmt.Sprintf("policy_name=c%03d policy_version=", n+1)))
	add("header-uppercase-key", hv(fmt.Sprintf("POLICY_NAME=c%03d policy_version=1.0.0", n+1)))
	add("header-space-around-eq", hv(fmt.Sprintf("policy_name = c%03d policy_version=1.0.0", n+1)))
	add("header-tabs", hv(fmt.Sprintf("\tpolicy_name=c%03d\t\tpolicy_version=1.0.0\t", n+1)))
	add("header-leading-spaces", hv(fmt.Sprintf("   policy_name=c%03d   policy_version=1.0.0   ", n+1)))
	add("header-after-comments", "# comment\n\n   # another\n"+hv(fmt.Sprintf("policy_name=c%03d policy_version=1.0.0", n+1)))
	add("header-after-rule", "DEFAULT action=ALLOW\n"+fmt.Sprintf("policy_name=c%03d policy_version=1.0.0\n", n+1))
	add("header-on-two-lines", fmt.Sprintf("policy_name=c%03d\npolicy_version=1.0.0\nDEFAULT action=ALLOW\n", n+1))
	add("header-duplicate-name", hv(fmt.Sprintf("policy_name=c%03d policy_name=x", n+1)))
	add("header-name-is-version", hv("policy_name=policy_version=1.0.0 policy_version=1.0.0"))
	add("header-second-header", hv(fmt.Sprintf("policy_name=c%03d policy_version=1.0.0\npolicy_name=x policy_version=1.0.0", n+1)))

	// Names with odd characters (also exercise the securityfs directory).
	for _, nm := range []struct{ slug, name string }{
		{"utf8", "politique-é-ü-名前"}, {"quotes", `q"u'o"te`}, {"backslash", `back\slash`}, {"equals", "a=b"}, {"colon", "a:b"},
		{"dot", "."}, {"dotdot", ".."}, {"dotfile", ".hidden"}, {"slash", "a/b"}, {"leading-slash", "/abs"}, {"percent", "100%"},
		{"vtab-inside", "a\vb"}, {"formfeed-inside", "a\fb"}, {"nbsp-inside", "a\xa0b"}, {"control-char", "a\x01b"},
		{"high-bytes", "\xff\xfe"}, {"len-255", strings.Repeat("n", 255)}, {"len-256", strings.Repeat("m", 256)}, {"dash", "-"},
		{"star", "*"},
	} {
		add("name-"+nm.slug, hv("policy_name="+nm.name+" policy_version=1.0.0"))
	}
	add("name-collision", hv("policy_name=c001 policy_version=2.0.0"))
	add("name-collision-same-version", hv("policy_name=c002 policy_version=1.0.0"))

	// Versions: kstrtou16(token, 10).
	for _, v := range []struct{ slug, v string }{
		{"zero", "0.0.0"}, {"max", "65535.65535.65535"}, {"major-65536", "65536.0.0"}, {"minor-65536", "0.65536.0"},
		{"rev-65536", "0.0.65536"}, {"plus", "+1.+2.+3"}, {"double-plus", "++1.0.0"}, {"minus", "-1.0.0"}, {"minus-zero", "-0.0.0"},
		{"leading-zeros", "01.002.0003"}, {"many-leading-zeros", "000000000000000000000000000001.0.0"}, {"two-fields", "1.2"},
		{"one-field", "1"}, {"four-fields", "1.2.3.4"}, {"empty-field", "1..3"}, {"trailing-dot", "1.2.3."}, {"leading-dot", ".1.2"},
		{"hex", "0x1.0.0"}, {"letters", "1a.0.0"}, {"u64-max", "18446744073709551615.0.0"}, {"u64-overflow", "18446744073709551616.0.0"},
		{"huge", "99999999999999999999999999.0.0"}, {"huge-then-garbage", "99999999999999999999999999x.0.0"},
		{"65536-then-garbage", "65536x.0.0"}, {"bad-field-then-fifth", "1.2.x.4"}, {"four-with-bad-fourth", "1.2.3.x"},
		{"space-inside", "1. 2.3"}, {"plus-only", "+.0.0"}, {"dots-only", ".."}, {"unicode-digit", "١.0.0"},
		{"octal-looking", "010.0.0"}, {"u16-max-plus-garbage", "65535a.0.0"},
	} {
		add("version-"+v.slug, hv(fmt.Sprintf("policy_name=c%03d policy_version=%s", n+1, v.v)))
	}

	// Separators, comments, line endings.
	name := func() string { return fmt.Sprintf("c%03d", n+1) }
	add("crlf", "policy_name="+name()+" policy_version=1.0.0\r\nDEFAULT action=ALLOW\r\nop=EXECUTE action=DENY\r\n")
	add("lone-cr", "policy_name="+name()+" policy_version=1.0.0\rDEFAULT action=ALLOW\rop=EXECUTE action=DENY\r")
	add("mixed-endings", "policy_name="+name()+" policy_version=1.0.0\n\rDEFAULT action=ALLOW\r\n\nop=EXECUTE action=DENY")
	add("no-final-newline", "policy_name="+name()+" policy_version=1.0.0\nDEFAULT action=ALLOW")
	add("tabs-between-tokens", base("DEFAULT\taction=ALLOW\nop=EXECUTE\t\tboot_verified=TRUE\taction=DENY\n"))
	add("many-spaces", base("DEFAULT      action=ALLOW\n    op=EXECUTE     boot_verified=TRUE        action=DENY    \n"))
	add("trailing-tab", base("DEFAULT action=ALLOW\t\nop=EXECUTE action=DENY\t\t\n"))
	add("trailing-vtab", base("DEFAULT action=ALLOW\v\nop=EXECUTE action=DENY\f\n"))
	add("trailing-nbsp", base("DEFAULT action=ALLOW\xa0\n"))
	add("vtab-separator", base("DEFAULT action=ALLOW\nop=EXECUTE\vaction=DENY\n"))
	add("formfeed-separator", base("DEFAULT\faction=ALLOW\n"))
	add("nbsp-separator", base("DEFAULT\xa0action=ALLOW\n"))
	add("leading-vtab", base("\vDEFAULT action=ALLOW\n"))
	add("blank-lines-with-spaces", base("   \n\t\n\v\nDEFAULT action=ALLOW\n  \t  \n"))
	add("comment-full-line", base("# comment\nDEFAULT action=ALLOW # trailing comment\n  # indented comment\n"))
	add("comment-no-space", base("DEFAULT action=ALLOW#comment\n"))
	add("comment-inside-token", base("DEFAULT action=AL#LOW\n"))
	add("comment-cuts-action", base("DEFAULT action=ALLOW\nop=EXECUTE boot_verified=TRUE # action=DENY\n"))
	add("hash-in-name", "policy_name=a#b policy_version=1.0.0\nDEFAULT action=ALLOW\n")
	add("comment-only", "# only a comment\n")
	add("empty", "")
	add("whitespace-only", " \n\t\n")
	add("newline-only", "\n")
	add("nul-after-valid", base("DEFAULT action=ALLOW\n")+"\x00garbage that is ignored\n")
	add("nul-before-default", hdr()+"\x00DEFAULT action=ALLOW\n")
	add("nul-inside-token", base("DEFAULT action=AL\x00LOW\n"))
	add("nul-first", "\x00"+base("DEFAULT action=ALLOW\n"))
	add("utf8-bom", "\xef\xbb\xbf"+base("DEFAULT action=ALLOW\n"))
	add("unicode-space", base("DEFAULT\u2003action=ALLOW\n"))
	add("lowercase-everything", "policy_name="+name()+" policy_version=1.0.0\ndefault action=allow\n")
	add("rule-with-120-props", base("DEFAULT action=ALLOW\nop=EXECUTE"+strings.Repeat(" boot_verified=TRUE", 120)+" action=DENY\n"))

	// Sizes.
	var many strings.Builder
	many.WriteString(hdr() + "DEFAULT action=DENY\n")
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&many, "op=EXECUTE dmverity_roothash=sha256:%064x action=ALLOW\n", i)
	}
	add("2000-rules", many.String())
	add("long-line-64k", base("DEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash=sha256:"+strings.Repeat("0", 65536)+" action=DENY\n"))
	return cs
}

func slug(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			if b.Len() > 0 && !strings.HasSuffix(b.String(), "-") {
				b.WriteByte('-')
			}
		}
	}
	out := strings.Trim(b.String(), "-")
	if len(out) > 40 {
		out = out[:40]
	}
	return out
}

// readCorpus reads the committed corpus, in name order.
func readCorpus(t testing.TB) []corpusCase {
	t.Helper()
	ents, err := os.ReadDir(corpusDir)
	if err != nil {
		t.Fatalf("read corpus: %v (regenerate with go test ./ipe -run TestCorpusIsGenerated -update-corpus)", err)
	}
	var cs []corpusCase
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".pol") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(corpusDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, corpusCase{Name: strings.TrimSuffix(e.Name(), ".pol"), Text: b})
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].Name < cs[j].Name })
	return cs
}

// TestCorpusIsGenerated checks that the committed corpus is exactly what
// kernelCorpus generates (so the recorded kernel answers belong to it), and
// rewrites it with -update-corpus.
func TestCorpusIsGenerated(t *testing.T) {
	want := kernelCorpus()
	if len(want) < 200 {
		t.Fatalf("corpus has %d cases, want at least 200", len(want))
	}
	if *updateCorpus {
		os.RemoveAll(corpusDir)
		if err := os.MkdirAll(corpusDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, c := range want {
			if err := os.WriteFile(filepath.Join(corpusDir, c.Name+".pol"), c.Text, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	got := readCorpus(t)
	if len(got) != len(want) {
		t.Fatalf("committed corpus has %d cases, generator %d (run with -update-corpus and re-record the kernel answers)", len(got), len(want))
	}
	for i := range want {
		if got[i].Name != want[i].Name || !bytes.Equal(got[i].Text, want[i].Text) {
			t.Fatalf("corpus case %s differs from the generator's %s (run with -update-corpus and re-record)", got[i].Name, want[i].Name)
		}
	}
}

// lintCorpus runs our lint over the corpus in order, the way the VM test
// loads it: a policy the kernel accepted stays loaded, so a later policy of
// the same name collides (EEXIST). accepted gives the kernel's verdicts.
func lintCorpusCase(c corpusCase, loaded []string, blobSize int) (string, *LintResult) {
	res := Lint(c.Text, LintOptions{Loaded: loaded, BlobSize: blobSize})
	if res.Valid() {
		return "OK", res
	}
	return ErrnoName(res.Errno()), res
}

// loadAnswers reads the committed kernel answers; their absence is a
// failure, not a skip (re-record them with TestVMKernelDifferential
// -update-kernel-answers, then -import-kernel-answers).
func loadAnswers(t testing.TB) *kernelAnswers {
	t.Helper()
	b, err := os.ReadFile(answersFile)
	if err != nil {
		t.Fatal(err)
	}
	var a kernelAnswers
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("%s: %v", answersFile, err)
	}
	return &a
}

// TestKernelAnswers compares our verdict and errno on every corpus policy
// with the answer the real kernel gave (recorded by
// TestVMKernelDifferential -update-kernel-answers).
func TestKernelAnswers(t *testing.T) {
	ans := loadAnswers(t)
	cs := readCorpus(t)
	var loaded []string
	mismatches := 0
	for _, c := range cs {
		want, ok := ans.Answers[c.Name]
		if !ok {
			t.Errorf("%s: no recorded kernel answer (re-record)", c.Name)
			continue
		}
		got, res := lintCorpusCase(c, loaded, 0)
		if got != want {
			mismatches++
			t.Errorf("%s: kernel %s, we say %s (%v)\n%q", c.Name, want, got, res.Err, truncate(c.Text, 300))
		}
		if want == "OK" && res.Policy != nil {
			loaded = append(loaded, res.Policy.Name)
		}
	}
	t.Logf("%d corpus policies compared with %s: %d mismatches", len(cs), ans.Kernel, mismatches)
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
