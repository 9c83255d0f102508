package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/testpki"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/ipe"
)

const validPolicy = "policy_name=cli policy_version=1.0.0\nDEFAULT action=ALLOW\nDEFAULT op=EXECUTE action=DENY\nop=EXECUTE dmverity_signature=TRUE action=ALLOW\n"

func writeTemp(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPolicyLintExitAndJSON(t *testing.T) {
	good := writeTemp(t, "good.pol", validPolicy)
	bad := writeTemp(t, "bad.pol", "policy_name=cli policy_version=1.0.0\nDEFAULT action=ALLOW\nop=EXECUTE action=maybe\n")
	rng := writeTemp(t, "range.pol", "policy_name=cli policy_version=1.70000.0\nDEFAULT action=ALLOW\n")
	if code, out, _ := runCLI(t, "policy", "lint", good); code != 0 || !strings.Contains(out, "ok") {
		t.Fatalf("valid: exit %d %q", code, out)
	}
	code, out, stderr := runCLI(t, "policy", "lint", bad)
	if code != 1 || !strings.Contains(out, bad+":3:12: error:") || !strings.Contains(out, "[kernel: EBADMSG]") || !strings.Contains(out, "hint:") {
		t.Fatalf("invalid: exit %d\n%s\n%s", code, out, stderr)
	}
	code, out, _ = runCLI(t, "policy", "lint", "--json", good, bad, rng, filepath.Join(t.TempDir(), "missing.pol"))
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	var res []map[string]any
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res) != 4 {
		t.Fatalf("json: %v\n%s", err, out)
	}
	want := []struct {
		valid bool
		errno string
		line  float64
	}{{true, "", 0}, {false, "EBADMSG", 3}, {false, "ERANGE", 1}, {false, "", 0}}
	for i, w := range want {
		r := res[i]
		if r["file"] == nil || r["valid"] != w.valid || r["warnings"] == nil {
			t.Errorf("%d: %v", i, r)
		}
		if e, _ := r["errno"].(string); e != w.errno {
			t.Errorf("%d: errno %v, want %q", i, r["errno"], w.errno)
		}
		if l, _ := r["line"].(float64); l != w.line {
			t.Errorf("%d: line %v, want %v", i, r["line"], w.line)
		}
		if !w.valid && r["message"] == "" {
			t.Errorf("%d: no message", i)
		}
	}
	if code, _, _ := runCLI(t, "policy", "lint"); code != 2 {
		t.Errorf("no args: exit %d", code)
	}
}

func TestPolicyFmt(t *testing.T) {
	messy := "  policy_name=cli\tpolicy_version=+01.0.0\r\n\r\nop=EXECUTE    dmverity_roothash=sha256:" + strings.Repeat("AB", 32) + " action=ALLOW  # why\r\nDEFAULT action=DENY\r\n"
	f := writeTemp(t, "m.pol", messy)
	code, out, _ := runCLI(t, "policy", "fmt", f)
	if code != 0 || !strings.HasPrefix(out, "policy_name=cli policy_version=1.0.0\n") || strings.Contains(out, "\r") || !strings.Contains(out, strings.Repeat("ab", 32)+" action=ALLOW # why") {
		t.Fatalf("fmt: %d %q", code, out)
	}
	if code, _, _ := runCLI(t, "policy", "fmt", "--check", f); code != 1 {
		t.Errorf("--check on unformatted: exit %d", code)
	}
	if code, _, _ := runCLI(t, "policy", "fmt", "-w", f); code != 0 {
		t.Fatalf("-w: exit %d", code)
	}
	if b, _ := os.ReadFile(f); string(b) != out {
		t.Errorf("-w wrote %q", b)
	}
	if code, _, _ := runCLI(t, "policy", "fmt", "--check", f); code != 0 {
		t.Errorf("--check on formatted: exit %d", code)
	}
	bad := writeTemp(t, "b.pol", "policy_name=x\n")
	code, _, stderr := runCLI(t, "policy", "fmt", bad)
	if code != 1 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "EBADMSG") {
		t.Errorf("fmt of an invalid policy: %d %q", code, stderr)
	}
}

func TestPolicyNewFromLayerJSON(t *testing.T) {
	// A real layer conversion's JSON feeds --from-layer.
	dir := t.TempDir()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	tw.WriteHeader(&tar.Header{Name: "bin/hello", Mode: 0o755, Size: 5, Typeflag: tar.TypeReg})
	tw.Write([]byte("hello"))
	tw.Close()
	blob := filepath.Join(dir, "layer.tar")
	os.WriteFile(blob, tb.Bytes(), 0o644)
	code, js, stderr := runCLI(t, "layer", "convert", "--json", blob, "-o", filepath.Join(dir, "layer.img"))
	if code != 0 {
		t.Fatalf("layer convert: %d %s", code, stderr)
	}
	jf := writeTemp(t, "layer.json", js)
	code, out, stderr := runCLI(t, "policy", "new", "--name", "hosts", "--version", "2.0.0", "--allow-initramfs", "--from-layer", jf)
	if code != 0 {
		t.Fatalf("new: %d %s", code, stderr)
	}
	var conv struct {
		RootHash string `json:"root_hash"`
	}
	json.Unmarshal([]byte(js), &conv)
	if conv.RootHash == "" || !strings.Contains(out, "op=EXECUTE dmverity_roothash=sha256:"+conv.RootHash+" action=ALLOW") {
		t.Fatalf("root hash %q not allowed by\n%s", conv.RootHash, out)
	}
	pf := writeTemp(t, "new.pol", out)
	if code, _, _ := runCLI(t, "policy", "lint", pf); code != 0 {
		t.Errorf("generated policy does not lint")
	}
	for _, args := range [][]string{
		{"policy", "new"},
		{"policy", "new", "--name", "x", "--version", "1.2"},
		{"policy", "new", "--name", "x", "--allow-roothash", "zz"},
		{"policy", "new", "--name", "x", "--op", "EXEC"},
		{"policy", "new", "--name", "x", "--op-default", "EXECUTE"},
	} {
		if code, _, stderr := runCLI(t, args...); code != 2 || !strings.HasPrefix(stderr, "intact: ") {
			t.Errorf("%v: exit %d %q", args, code, stderr)
		}
	}
}

func TestPolicySignVerifyLoadList(t *testing.T) {
	testutil.RequireHost(t, "userspace only; the VM tier adds no kernel coverage")
	pki := testpki.MustNew(t, testpki.Options{})
	files := pki.MustWriteDir(t, t.TempDir())
	pf := writeTemp(t, "p.pol", validPolicy)
	code, _, stderr := runCLI(t, "policy", "sign", "--key", files.KeyPEM, "--cert", files.CertPEM, pf)
	if code != 0 {
		t.Fatalf("sign: %d %s", code, stderr)
	}
	signedPath := pf + ".p7s"
	if code, out, stderr := runCLI(t, "policy", "verify", "--ca", files.RootPEM, signedPath); code != 0 || !strings.Contains(out, "policy cli version 1.0.0") {
		t.Fatalf("verify: %d %s %s", code, out, stderr)
	}
	other := testpki.MustNew(t, testpki.Options{}).MustWriteDir(t, t.TempDir())
	if code, _, stderr := runCLI(t, "policy", "verify", "--ca", other.RootPEM, signedPath); code != 1 || !strings.Contains(stderr, "ENOKEY") {
		t.Errorf("verify with a foreign CA: %d %s", code, stderr)
	}
	if code, out, _ := runCLI(t, "policy", "lint", "--json", signedPath); code != 0 || !strings.Contains(out, `"signed": true`) {
		t.Errorf("lint signed: %d %s", code, out)
	}
	badPol := writeTemp(t, "bad.pol", "policy_name=x policy_version=1\nDEFAULT action=ALLOW\n")
	if code, _, stderr := runCLI(t, "policy", "sign", "--key", files.KeyPEM, "--cert", files.CertPEM, badPol); code != 1 || !strings.Contains(stderr, "EBADMSG") {
		t.Errorf("signing an invalid policy: %d %s", code, stderr)
	}
	if _, err := os.Stat(badPol + ".p7s"); err == nil {
		t.Error("output written for a refused policy")
	}

	// Deployment against a directory laid out like securityfs.
	root := t.TempDir()
	ipeDir := filepath.Join(root, "ipe")
	os.MkdirAll(filepath.Join(ipeDir, "policies"), 0o755)
	os.WriteFile(filepath.Join(ipeDir, "new_policy"), nil, 0o600)
	os.WriteFile(filepath.Join(ipeDir, "enforce"), []byte("1"), 0o600)
	if code, out, stderr := runCLI(t, "policy", "load", "--root", root, signedPath); code != 0 || !strings.Contains(out, "loaded cli version 1.0.0") {
		t.Fatalf("load: %d %s %s", code, out, stderr)
	}
	blob, _ := os.ReadFile(signedPath)
	if got, _ := os.ReadFile(filepath.Join(ipeDir, "new_policy")); !bytes.Equal(got, blob) {
		t.Fatal("new_policy does not hold the blob")
	}
	// What the kernel then shows:
	pd := filepath.Join(ipeDir, "policies", "cli")
	os.MkdirAll(pd, 0o755)
	for n, v := range map[string]string{"name": "cli", "version": "1.0.0", "active": "1", "policy": validPolicy, "update": "", "delete": ""} {
		os.WriteFile(filepath.Join(pd, n), []byte(v), 0o644)
	}
	os.WriteFile(filepath.Join(pd, "pkcs7"), blob, 0o444)
	code, out, _ := runCLI(t, "policy", "list", "--root", root, "--json")
	if code != 0 || !strings.Contains(out, ipe.AuditDigest(blob)) || !strings.Contains(out, `"active": true`) {
		t.Fatalf("list: %d %s", code, out)
	}
	if code, out, _ := runCLI(t, "policy", "show", "--root", root, "cli"); code != 0 || out != validPolicy {
		t.Errorf("show: %d %q", code, out)
	}
	if code, _, stderr := runCLI(t, "policy", "update", "--root", root, signedPath); code != 1 || !strings.Contains(stderr, "ESTALE") || !strings.Contains(stderr, "not newer") {
		t.Errorf("update with the same version: %d %s", code, stderr)
	}
	if code, _, stderr := runCLI(t, "policy", "load", "--root", root, signedPath); code != 1 || !strings.Contains(stderr, "EEXIST") {
		t.Errorf("load of a loaded name: %d %s", code, stderr)
	}
	if code, _, stderr := runCLI(t, "policy", "delete", "--root", root, "cli"); code != 1 || !strings.Contains(stderr, "EPERM") {
		t.Errorf("delete active: %d %s", code, stderr)
	}
	if code, _, stderr := runCLI(t, "policy", "load", "--root", root, pf); code != 1 || !strings.Contains(stderr, "not a signed policy") {
		t.Errorf("load of plain text: %d %s", code, stderr)
	}
	if code, out, _ := runCLI(t, "policy", "enforce", "--root", root, "off"); code != 0 || out != "off\n" {
		t.Errorf("enforce off: %d %q", code, out)
	}
	if code, _, stderr := runCLI(t, "policy", "list", "--root", t.TempDir()); code != 1 || !strings.Contains(stderr, "IPE is not available") {
		t.Errorf("list without ipe: %d %s", code, stderr)
	}
}

// TestPolicyAuditKernelRecords explains the records the VM's kernel wrote.
func TestPolicyAuditKernelRecords(t *testing.T) {
	testutil.RequireHost(t, "reads package ipe's recorded kernel records")
	recs := filepath.Join("..", "..", "ipe", "testdata", "audit", "kmsg-6.12.txt")
	pol := writeTemp(t, "p.pol", "policy_name=enforce-test policy_version=1.0.0\nDEFAULT action=ALLOW\nDEFAULT op=EXECUTE action=DENY\nop=EXECUTE boot_verified=TRUE action=ALLOW\nop=EXECUTE dmverity_signature=TRUE action=ALLOW\n")
	code, out, stderr := runCLI(t, "policy", "audit", "--policy", pol, recs)
	if code != 0 {
		t.Fatalf("audit: %d %s", code, stderr)
	}
	for _, s := range []string{"DENY EXECUTE of /tmp/", "(tmpfs ino 2) by ipe.test", "decided by: DEFAULT op=EXECUTE action=DENY (line 3): no EXECUTE rule matched",
		"to allow:", "policy loaded: enforce-test version 1.0.0", "policy activated: enforce-test", "IPE enforce set to 0", "permissive"} {
		if !strings.Contains(out, s) {
			t.Errorf("audit output lacks %q:\n%s", s, out)
		}
	}
	code, out, _ = runCLI(t, "policy", "audit", "--json", "--all", recs)
	var js []map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &js) != nil || len(js) < 5 {
		t.Fatalf("audit --json: %d %s", code, out)
	}
}

func TestPolicyEval(t *testing.T) {
	pol := writeTemp(t, "p.pol", validPolicy)
	file := writeTemp(t, "prog", "#!/bin/sh\n")
	code, out, stderr := runCLI(t, "policy", "eval", "--policy", pol, file)
	if code != 0 || !strings.Contains(out, "DENY EXECUTE by DEFAULT op=EXECUTE action=DENY (line 3)") || !strings.Contains(out, "properties: boot_verified=FALSE") {
		t.Fatalf("eval: %d %s %s", code, out, stderr)
	}
	if code, _, _ := runCLI(t, "policy", "eval", "--policy", pol, filepath.Join(t.TempDir(), "nope")); code != 1 {
		t.Errorf("eval of a missing file: exit %d", code)
	}
	if code, _, _ := runCLI(t, "policy", "eval", "--policy", pol, "--op", "RUN", file); code != 2 {
		t.Errorf("bad --op: exit %d", code)
	}
}

// TestPolicyAnonymousExecIsDangerous: --allow-anonymous-exec makes a rule
// that lets every untrusted file run; new says why, and lint does not call
// the policy ok (with --strict it fails).
func TestPolicyAnonymousExecIsDangerous(t *testing.T) {
	code, pol, stderr := runCLI(t, "policy", "new", "--name", "jit", "--allow-signed-verity", "--allow-anonymous-exec")
	if code != 0 {
		t.Fatalf("new: exit %d %s", code, stderr)
	}
	for _, want := range []string{"DANGER", "allows-untrusted", "anonymous executable memory", "untrusted"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("policy new does not say why --allow-anonymous-exec is dangerous (%q missing):\n%s", want, stderr)
		}
	}
	f := writeTemp(t, "jit.pol", pol)
	code, out, _ := runCLI(t, "policy", "lint", f)
	if code != 0 || strings.Contains(out, ": ok") || !strings.Contains(out, "allows-untrusted") || !strings.Contains(out, "DANGER") {
		t.Fatalf("lint: exit %d\n%s", code, out)
	}
	if code, _, _ := runCLI(t, "policy", "lint", "--strict", f); code != 1 {
		t.Errorf("lint --strict: exit %d, want 1", code)
	}
	code, out, _ = runCLI(t, "policy", "lint", "--json", f)
	var res []map[string]any
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res) != 1 || res[0]["dangerous"] != true {
		t.Fatalf("lint --json: exit %d %v\n%s", code, err, out)
	}
	// A policy that allows trusted sources only stays ok, also with --strict
	// (the generator silences the informational anon-exec-denied).
	_, safe, _ := runCLI(t, "policy", "new", "--name", "safe", "--allow-signed-verity")
	good := writeTemp(t, "good.pol", safe)
	if code, out, _ := runCLI(t, "policy", "lint", "--strict", good); code != 0 || !strings.Contains(out, ": ok") {
		t.Errorf("good policy: exit %d\n%s", code, out)
	}
}

// fakeSecurityFS lays out a directory like securityfs with an active
// policy, for --root.
func fakeSecurityFS(t *testing.T, policy string) string {
	t.Helper()
	root := t.TempDir()
	pd := filepath.Join(root, "ipe", "policies", "cli")
	os.MkdirAll(pd, 0o755)
	os.WriteFile(filepath.Join(root, "lsm"), []byte("capability,ipe"), 0o644)
	for n, v := range map[string]string{"name": "cli", "version": "1.0.0", "active": "1", "policy": policy} {
		os.WriteFile(filepath.Join(pd, n), []byte(v), 0o644)
	}
	return root
}

// TestPolicyEvalUnreadableSecurityFS: eval never takes a securityfs it
// cannot read for "no policy, ALLOW": it fails (exit 1) and says why;
// audit warns that its rules are not located. Only a kernel whose LSM list
// lacks ipe, or an IPE with no active policy, is "IPE allows everything".
func TestPolicyEvalUnreadableSecurityFS(t *testing.T) {
	file := writeTemp(t, "prog", "#!/bin/sh\n")
	// A readable one: the active policy decides.
	good := fakeSecurityFS(t, validPolicy)
	if code, out, stderr := runCLI(t, "policy", "eval", "--root", good, file); code != 0 || !strings.Contains(out, "DENY EXECUTE") {
		t.Fatalf("readable securityfs: exit %d %s %s", code, out, stderr)
	}
	// Unreadable: the policies directory is not a directory, the policy
	// text is missing, securityfs is not mounted at all.
	broken := fakeSecurityFS(t, validPolicy)
	os.RemoveAll(filepath.Join(broken, "ipe", "policies"))
	os.WriteFile(filepath.Join(broken, "ipe", "policies"), nil, 0o644)
	noText := fakeSecurityFS(t, validPolicy)
	os.Remove(filepath.Join(noText, "ipe", "policies", "cli", "policy"))
	for name, root := range map[string]string{"policies-not-a-dir": broken, "no-policy-text": noText, "not-mounted": t.TempDir()} {
		code, out, stderr := runCLI(t, "policy", "eval", "--root", root, file)
		if code != 1 || strings.Contains(out, "ALLOW") || !strings.Contains(stderr, "--policy") {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit 1 and no verdict", name, code, out, stderr)
		}
		recs := writeTemp(t, "recs", "")
		code, _, stderr = runCLI(t, "policy", "audit", "--root", root, recs)
		if code != 0 || !strings.Contains(stderr, "warning") || !strings.Contains(stderr, "active policy") {
			t.Errorf("%s: audit: exit %d, stderr %q; want a warning that the active policy is unknown", name, code, stderr)
		}
	}
	// IPE not among the LSMs, and IPE without an active policy: ALLOW, said so.
	noIPE := t.TempDir()
	os.WriteFile(filepath.Join(noIPE, "lsm"), []byte("capability,landlock,apparmor"), 0o644)
	inactive := fakeSecurityFS(t, validPolicy)
	os.WriteFile(filepath.Join(inactive, "ipe", "policies", "cli", "active"), []byte("0"), 0o644)
	for name, root := range map[string]string{"no-ipe": noIPE, "inactive": inactive} {
		code, out, stderr := runCLI(t, "policy", "eval", "--root", root, file)
		if code != 0 || !strings.Contains(out, "ALLOW EXECUTE") {
			t.Errorf("%s: exit %d %q %q", name, code, out, stderr)
		}
	}
}
