package ipe

import (
	"bufio"
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/testpki"
	"github.com/intact-project/intact/pkcs7"
)

// kmsgRecordsFile holds IPE records exactly as the VM's 6.12 kernel wrote
// them to /dev/kmsg during TestVMEnforcement (imported with
// -import-kmsg=LOG).
const kmsgRecordsFile = "testdata/audit/kmsg-6.12.txt"

var importKmsg = flag.String("import-kmsg", "", "host: write "+kmsgRecordsFile+" from the records block of a TestVMEnforcement log")

// TestImportKmsgRecords (host) extracts the raw records TestVMEnforcement
// printed between markers.
func TestImportKmsgRecords(t *testing.T) {
	if *importKmsg == "" {
		t.Skip("only with -import-kmsg=LOG")
	}
	f, err := os.Open(*importKmsg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		switch strings.TrimSpace(sc.Text()) {
		case kmsgBegin:
			in, lines = true, nil
			continue
		case kmsgEnd:
			in = false
		}
		if in {
			lines = append(lines, sc.Text())
		}
	}
	if len(lines) == 0 {
		t.Fatalf("no records block in %s", *importKmsg)
	}
	if err := os.MkdirAll("testdata/audit", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kmsgRecordsFile, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestKernelAuditRecords parses every record the real kernel wrote and
// checks each decodes completely: known type, 1420 with op, hook, a rule
// that parses, a path or '?', and 1421/1422 with a name, version and
// sha256 digest. The same records in auditd's and dmesg's shapes decode to
// the same fields.
func TestKernelAuditRecords(t *testing.T) {
	b, err := os.ReadFile(kmsgRecordsFile) // committed; re-record with TestVMEnforcement, then -import-kmsg
	if err != nil {
		t.Fatal(err)
	}
	recs, err := ReadAuditRecords(context.Background(), strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Count(strings.TrimSpace(string(b)), "\n") + 1
	if len(recs) != lines {
		t.Fatalf("%d records parsed from %d lines", len(recs), lines)
	}
	seen := map[int]int{}
	for _, r := range recs {
		seen[r.Type]++
		if r.Time.IsZero() || r.Serial == 0 {
			t.Errorf("no timestamp/serial: %q", r.Raw)
		}
		switch r.Type {
		case AuditIPEAccess:
			a, err := ParseAccess(r)
			if err != nil {
				t.Errorf("%q: %v", r.Raw, err)
				continue
			}
			if a.Op < 0 || a.Hook == "" || a.Comm == "" || a.PID == 0 || a.Action == ActionUnset {
				t.Errorf("incomplete access %+v from %q", a, r.Raw)
			}
			if !a.Anonymous() && (a.Dev == "" || a.Ino == 0 || !strings.HasPrefix(a.Path, "/")) {
				t.Errorf("incomplete file fields %+v", a)
			}
			if ex := Explain(a, nil, nil); ex.Summary == "" || ex.DecidedBy == "" {
				t.Errorf("no explanation for %q", r.Raw)
			}
		case AuditIPEPolicyLoad, AuditIPEConfigChange:
			ev := ParsePolicyEvent(r)
			if ev.Name == "" || ev.Version == "" || !strings.HasPrefix(ev.Digest, "sha256:") || len(ev.Digest) != 7+64 {
				t.Errorf("incomplete policy event %+v from %q", ev, r.Raw)
			}
		}
		// The same record as auditd writes it and as dmesg prints it.
		body := r.Raw[strings.Index(r.Raw, "audit("):]
		for _, alt := range []string{
			fmt.Sprintf("type=%s msg=%s", auditdName(r.Type), body),
			"[   12.345678] audit: type=" + fmt.Sprint(r.Type) + " " + body,
		} {
			r2, err := ParseAuditLine(alt)
			if err != nil || fmt.Sprint(r2.Fields) != fmt.Sprint(r.Fields) || r2.Serial != r.Serial {
				t.Errorf("%q decodes differently from %q: %v", alt, r.Raw, err)
			}
		}
	}
	if seen[AuditIPEAccess] == 0 || seen[AuditIPEPolicyLoad] == 0 || seen[AuditIPEConfigChange] == 0 {
		t.Errorf("record types seen: %v; want 1420, 1421 and 1422", seen)
	}
}

func auditdName(typ int) string {
	for n, v := range auditTypeNames {
		if v == typ {
			return n
		}
	}
	return fmt.Sprintf("UNKNOWN[%d]", typ)
}

// kernelAccessLine renders a decision as the kernel's ipe_audit_match
// does (security/ipe/audit.c): untrusted strings quoted when clean, else
// uppercase hex; the digest algorithm quoted inside the rule.
func kernelAccessLine(d Decision, hook string, pid int, comm, path, dev string, ino uint64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "audit: type=1420 audit(1764250000.123:77): ipe_op=%s ipe_hook=%s enforcing=1 pid=%d comm=%s", d.Op, hook, pid, untrusted(comm))
	if path == "" {
		b.WriteString(" path=? dev=? ino=?")
	} else {
		fmt.Fprintf(&b, " path=%s dev=%s ino=%d", untrusted(path), untrusted(dev), ino)
	}
	switch d.Match {
	case MatchRule:
		fmt.Fprintf(&b, " rule=\"op=%s ", d.Rule.Op)
		for _, p := range d.Rule.Props {
			if p.Kind.HasDigest() {
				fmt.Fprintf(&b, "%s%s:%s", propTokens[p.Kind], untrusted(p.Digest.Alg), strings.ToUpper(hex.EncodeToString(p.Digest.Value)))
			} else {
				b.WriteString(propTokens[p.Kind])
			}
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "action=%s\"", d.Action)
	case MatchOpDefault:
		fmt.Fprintf(&b, " rule=\"DEFAULT op=%s action=%s\"", d.Op, d.Action)
	default:
		fmt.Fprintf(&b, " rule=\"DEFAULT action=%s\"", d.Action)
	}
	return b.String()
}

func untrusted(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] < 0x21 || s[i] > 0x7e {
			return strings.ToUpper(hex.EncodeToString([]byte(s)))
		}
	}
	return `"` + s + `"`
}

// TestAccessRecordRoundTrip: random decisions rendered in the kernel's
// format decode back to the same operation, action, match and rule, with
// odd file names (spaces, quotes, non-ASCII: hex-encoded by the kernel).
func TestAccessRecordRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	names := []string{"/tmp/x", "/tmp/with space", `/tmp/q"uote`, "/tmp/é", "/usr/bin/true"}
	for i := 0; i < 2000; i++ {
		p, _ := randomPolicy(r)
		ctx := Context{Op: Op(r.IntN(int(NumOps))), Anonymous: r.IntN(5) == 0, BootVerified: r.IntN(2) == 0}
		if r.IntN(2) == 0 {
			ctx.DMVerity = &Digest{Alg: "sha256", Value: make([]byte, 32)}
			ctx.DMVeritySigned = r.IntN(2) == 0
		}
		d := p.Evaluate(ctx)
		path := names[r.IntN(len(names))]
		if ctx.Anonymous {
			path = ""
		}
		line := kernelAccessLine(d, "MMAP", 4242, "my prog", path, "tmpfs", 99)
		rec, err := ParseAuditLine(line)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		a, err := ParseAccess(rec)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if a.Op != d.Op || a.Action != d.Action || a.Match != d.Match || a.Path != path || a.Comm != "my prog" || a.PID != 4242 {
			t.Fatalf("%q decoded as %+v, want %+v", line, a, d)
		}
		if d.Match == MatchRule && !a.Matched.Equal(*d.Rule) {
			t.Fatalf("rule %v decoded as %v from %q", d.Rule, a.Matched, line)
		}
		if path != "" && (a.Dev != "tmpfs" || a.Ino != 99) {
			t.Fatalf("file fields %+v", a)
		}
	}
}

// TestParseAuditLineIgnoresOthers: other record types and kernel lines are
// not IPE records.
func TestParseAuditLineIgnoresOthers(t *testing.T) {
	for _, l := range []string{
		"", "hello", "[    1.0] EXT4-fs (vda1): mounted",
		`type=AVC msg=audit(1.2:3): avc:  denied  { read }`,
		`audit: type=1404 audit(1.2:3): enforcing=1 old_enforcing=0 auid=0 ses=1 enabled=1 old-enabled=1 lsm=selinux res=1`,
		`audit: type=1300 audit(1.2:3): arch=c000003e syscall=59`,
	} {
		if _, err := ParseAuditLine(l); err == nil {
			t.Errorf("%q parsed as an IPE record", l)
		}
	}
	long := "audit: type=1420 audit(1.2:3): " + strings.Repeat("a=b ", MaxAuditFields+1)
	if _, err := ParseAuditLine(long); err == nil {
		t.Errorf("record with too many fields accepted")
	}
}

// signedSeeds signs a few corpus policies with a throwaway PKI.
func signedSeeds(t *testing.T) [][]byte {
	t.Helper()
	pki := testpki.MustNew(t, testpki.Options{})
	leaf, err := pki.IssueLeaf("ipe seed", testpki.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	s, err := pkcs7.NewSigner(leaf.Certificate, leaf.Key)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, txt := range []string{"policy_name=a policy_version=1.0.0\nDEFAULT action=ALLOW\n", "policy_name=b policy_version=1.0.0\nop=EXECUTE action=ALLOW\n"} {
		for _, o := range []pkcs7.SignOptions{{Attached: true}, {}} {
			b, err := s.Sign([]byte(txt), o)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b)
		}
	}
	return out
}
