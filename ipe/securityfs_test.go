package ipe

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/intact-project/intact/internal/testpki"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/pkcs7"
)

// fakeSecurityFS lays out a directory like /sys/kernel/security with IPE's
// files (regular files stand in for the kernel's nodes; the VM tests use
// the real ones).
type fakeSecurityFS struct {
	root string
	t    *testing.T
}

func newFakeSecurityFS(t *testing.T) *fakeSecurityFS {
	root := t.TempDir()
	f := &fakeSecurityFS{root: root, t: t}
	must(t, os.MkdirAll(filepath.Join(root, "ipe", "policies"), 0o755))
	for _, n := range []string{"new_policy", "enforce", "success_audit"} {
		must(t, os.WriteFile(filepath.Join(root, "ipe", n), nil, 0o600))
	}
	must(t, os.WriteFile(filepath.Join(root, "ipe", "enforce"), []byte("1"), 0o600))
	return f
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// add creates policies/<name> as the kernel would after loading blob (nil
// blob: the unsigned boot policy, whose pkcs7 node does not exist).
func (f *fakeSecurityFS) add(name, version string, active bool, blob []byte) {
	d := filepath.Join(f.root, "ipe", "policies", name)
	must(f.t, os.MkdirAll(d, 0o755))
	act := "0"
	if active {
		act = "1"
	}
	for n, v := range map[string]string{"name": name, "version": version, "active": act, "policy": "policy_name=" + name + " policy_version=" + version + "\nDEFAULT action=ALLOW\n", "update": "", "delete": ""} {
		must(f.t, os.WriteFile(filepath.Join(d, n), []byte(v), 0o644))
	}
	if blob != nil {
		must(f.t, os.WriteFile(filepath.Join(d, "pkcs7"), blob, 0o444))
	}
}

func (f *fakeSecurityFS) read(rel string) []byte {
	b, err := os.ReadFile(filepath.Join(f.root, "ipe", rel))
	must(f.t, err)
	return b
}

func testSigner(t *testing.T) *pkcs7.Signer {
	t.Helper()
	pki := testpki.MustNew(t, testpki.Options{})
	leaf, err := pki.IssueLeaf("ipe test", testpki.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	s, err := pkcs7.NewSigner(leaf.Certificate, leaf.Key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func signed(t *testing.T, s *pkcs7.Signer, name, version string) []byte {
	t.Helper()
	b, err := Sign([]byte("policy_name="+name+" policy_version="+version+"\nDEFAULT action=ALLOW\n"), s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSecurityFSList(t *testing.T) {
	f := newFakeSecurityFS(t)
	s := testSigner(t)
	blob := signed(t, s, "a", "1.2.3")
	f.add("a", "1.2.3", true, blob)
	f.add("boot", "0.0.1", false, nil)
	fs := &SecurityFS{Root: f.root}
	l, err := fs.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(l) != 2 || l[0].Name != "a" || l[1].Name != "boot" {
		t.Fatalf("list %+v", l)
	}
	sum := sha256.Sum256(blob)
	if want := "sha256:" + strings.ToUpper(hex.EncodeToString(sum[:])); l[0].Digest != want || !l[0].Active || !l[0].Signed || l[0].Version != (Version{1, 2, 3}) {
		t.Errorf("a: %+v, digest want %s", l[0], want)
	}
	// The kernel audits the boot policy with the digest of zero bytes.
	empty := sha256.Sum256(nil)
	if l[1].Signed || l[1].Active || l[1].Digest != "sha256:"+strings.ToUpper(hex.EncodeToString(empty[:])) {
		t.Errorf("boot: %+v", l[1])
	}
	if act, ok, err := fs.Active(context.Background()); err != nil || !ok || act.Name != "a" {
		t.Errorf("active: %+v %v %v", act, ok, err)
	}
	if _, err := fs.PKCS7("boot"); !errors.Is(err, ErrNotSigned) {
		t.Errorf("pkcs7 of boot policy: %v", err)
	}
}

func TestSecurityFSLoadWritesBlobOnce(t *testing.T) {
	f := newFakeSecurityFS(t)
	s := testSigner(t)
	fs := &SecurityFS{Root: f.root}
	blob := signed(t, s, "new", "1.0.0")
	p, err := fs.Load(context.Background(), blob)
	if err != nil || p.Name != "new" {
		t.Fatalf("load: %v %v", p, err)
	}
	if !bytes.Equal(f.read("new_policy"), blob) {
		t.Fatal("new_policy does not hold exactly the blob")
	}
	// A name collision is refused before writing.
	f.add("dup", "1.0.0", false, signed(t, s, "dup", "1.0.0"))
	must(t, os.WriteFile(filepath.Join(f.root, "ipe", "new_policy"), nil, 0o600))
	if _, err := fs.Load(context.Background(), signed(t, s, "dup", "2.0.0")); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("load of a loaded name: %v", err)
	}
	if len(f.read("new_policy")) != 0 {
		t.Error("refused load still wrote")
	}
	// Plain text is refused with the kernel's EBADMSG and a hint.
	_, err = fs.Load(context.Background(), []byte("policy_name=x policy_version=1.0.0\nDEFAULT action=ALLOW\n"))
	if !errors.Is(err, syscall.EBADMSG) || !errors.Is(err, ErrNotSigned) || !strings.Contains(err.Error(), "intact policy sign") {
		t.Errorf("plain policy: %v", err)
	}
	// A signed but invalid policy is refused with the parser's error.
	bad, err := s.Sign([]byte("policy_name=x policy_version=1.0\nDEFAULT action=ALLOW\n"), pkcs7.SignOptions{Attached: true})
	must(t, err)
	if _, err := fs.Load(context.Background(), bad); !errors.Is(err, syscall.EBADMSG) || !errors.Is(err, ErrInvalidPolicy) {
		t.Errorf("invalid policy: %v", err)
	}
}

func TestSecurityFSUpdateVersionCheck(t *testing.T) {
	f := newFakeSecurityFS(t)
	s := testSigner(t)
	fs := &SecurityFS{Root: f.root}
	f.add("p", "1.2.0", true, signed(t, s, "p", "1.2.0"))
	for _, v := range []string{"1.2.0", "1.1.9", "0.65535.65535"} {
		_, err := fs.Update(context.Background(), signed(t, s, "p", v))
		if !errors.Is(err, ErrStaleVersion) || !errors.Is(err, syscall.ESTALE) {
			t.Errorf("update to %s: %v, want ESTALE", v, err)
		}
	}
	if len(f.read("policies/p/update")) != 0 {
		t.Fatal("refused update wrote")
	}
	blob := signed(t, s, "p", "1.2.1")
	if _, err := fs.Update(context.Background(), blob); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.read("policies/p/update"), blob) {
		t.Error("update node does not hold exactly the blob")
	}
	if _, err := fs.Update(context.Background(), signed(t, s, "other", "9.0.0")); !errors.Is(err, ErrNotFound) {
		t.Errorf("update of an unknown policy: %v", err)
	}
}

func TestSecurityFSActivateDeleteEnforce(t *testing.T) {
	f := newFakeSecurityFS(t)
	s := testSigner(t)
	fs := &SecurityFS{Root: f.root}
	ctx := context.Background()
	f.add("cur", "2.0.0", true, signed(t, s, "cur", "2.0.0"))
	f.add("old", "1.0.0", false, signed(t, s, "old", "1.0.0"))
	f.add("new", "2.0.0", false, signed(t, s, "new", "2.0.0"))
	if err := fs.Activate(ctx, "old"); !errors.Is(err, ErrStaleVersion) || !errors.Is(err, syscall.EINVAL) {
		t.Errorf("activate older: %v", err)
	}
	if err := fs.Activate(ctx, "new"); err != nil { // equal version is allowed
		t.Errorf("activate equal version: %v", err)
	}
	if string(f.read("policies/new/active")) != "1" {
		t.Error("activate did not write 1")
	}
	if err := fs.Delete(ctx, "cur"); !errors.Is(err, ErrActive) || !errors.Is(err, syscall.EPERM) {
		t.Errorf("delete active: %v", err)
	}
	if err := fs.Delete(ctx, "old"); err != nil || string(f.read("policies/old/delete")) != "1" {
		t.Errorf("delete: %v", err)
	}
	if err := fs.Delete(ctx, "../x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete with a path: %v", err)
	}
	must(t, fs.SetEnforce(ctx, false))
	if on, err := fs.Enforce(); err != nil || on {
		t.Errorf("enforce after off: %v %v", on, err)
	}
	if _, err := (&SecurityFS{Root: t.TempDir()}).List(ctx); !errors.Is(err, ErrNoIPE) {
		t.Errorf("no ipe dir: %v", err)
	}
}

func TestSignVerifyExtract(t *testing.T) {
	pki := testpki.MustNew(t, testpki.Options{})
	leaf, err := pki.IssueLeaf("ipe", testpki.RSA2048)
	must(t, err)
	s, err := pkcs7.NewSigner(leaf.Certificate, leaf.Key)
	must(t, err)
	text := []byte("policy_name=v policy_version=1.0.0\nDEFAULT action=ALLOW\n")
	blob, err := Sign(text, s)
	must(t, err)
	got, err := ExtractPolicy(blob)
	if err != nil || !bytes.Equal(got, text) {
		t.Fatalf("extract: %q %v", got, err)
	}
	v, err := Verify(blob, pki.Roots(), nil)
	if err != nil || v.Policy.Name != "v" {
		t.Fatalf("verify: %v", err)
	}
	other := testpki.MustNew(t, testpki.Options{})
	if _, err := Verify(blob, other.Roots(), nil); !errors.Is(err, syscall.ENOKEY) {
		t.Errorf("verify against a foreign CA: %v", err)
	}
	if _, err := Sign([]byte("policy_name=v policy_version=1\nDEFAULT action=ALLOW\n"), s); !errors.Is(err, ErrInvalidPolicy) {
		t.Errorf("signing an invalid policy: %v", err)
	}
	if res := LintSigned(blob, nil, LintOptions{}); !res.Valid() || res.Policy.Name != "v" {
		t.Errorf("lint signed: %v", res.Err)
	}
	// Too large for the kernel's ASN.1 decoder.
	big := append(append([]byte{}, text...), bytes.Repeat([]byte("# pad\n"), 11000)...)
	if _, err := Sign(big, s); !errors.Is(err, syscall.EMSGSIZE) {
		t.Errorf("sign of a policy over 64 KiB: %v", err)
	}
}

// TestSignMatchesOpenSSL: openssl cms verifies what Sign writes, with the
// policy attached and no signed attributes, and extracts the same text.
func TestSignMatchesOpenSSL(t *testing.T) {
	openssl := requireOpenSSL(t)
	pki := testpki.MustNew(t, testpki.Options{})
	leaf, err := pki.IssueLeaf("ipe", testpki.RSA2048)
	must(t, err)
	files := pki.MustWriteDir(t, t.TempDir())
	s, err := pkcs7.NewSigner(leaf.Certificate, leaf.Key)
	must(t, err)
	text := []byte("policy_name=o policy_version=1.0.0\nDEFAULT action=ALLOW\n")
	blob, err := Sign(text, s)
	must(t, err)
	dir := t.TempDir()
	in := filepath.Join(dir, "p.p7s")
	must(t, os.WriteFile(in, blob, 0o644))
	out := runTool(t, openssl, "cms", "-verify", "-inform", "der", "-in", in, "-CAfile", files.RootPEM, "-purpose", "any", "-binary")
	if !bytes.Equal(out, text) {
		t.Fatalf("openssl extracted %q", out)
	}
	info := runTool(t, openssl, "cms", "-cmsout", "-print", "-inform", "der", "-in", in)
	if !regexp.MustCompile(`signedAttrs:\s*\n\s*<ABSENT>`).Match(info) {
		t.Errorf("signature has signed attributes:\n%s", info)
	}
	if !regexp.MustCompile(`signatureAlgorithm:\s*\n\s*algorithm: rsaEncryption`).Match(info) {
		t.Errorf("signature algorithm is not rsaEncryption:\n%s", info)
	}
	if !regexp.MustCompile(`eContentType: pkcs7-data`).Match(info) {
		t.Errorf("content type is not id-data:\n%s", info)
	}
}

func requireOpenSSL(t *testing.T) string {
	t.Helper()
	return testutil.RequireTool(t, "openssl")
}

func runTool(t *testing.T, tool string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(tool, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("%s %v: %v\n%s", tool, args, err, ee.Stderr)
		}
		t.Fatalf("%s %v: %v", tool, args, err)
	}
	return out
}

// TestActivePolicyFailsClosed: only "no policy is active" and "IPE is not
// among the LSMs" give a nil policy without an error; a securityfs that is
// not mounted or cannot be read is an error, never taken for ALLOW.
func TestActivePolicyFailsClosed(t *testing.T) {
	ctx := context.Background()
	const text = "policy_name=a policy_version=1.0.0\nDEFAULT action=DENY\n"
	mk := func(active string) string {
		root := t.TempDir()
		pd := filepath.Join(root, "ipe", "policies", "a")
		os.MkdirAll(pd, 0o755)
		for n, v := range map[string]string{"name": "a", "version": "1.0.0", "active": active, "policy": text} {
			os.WriteFile(filepath.Join(pd, n), []byte(v), 0o644)
		}
		return root
	}
	if p, _, err := (&SecurityFS{Root: mk("1")}).ActivePolicy(ctx); err != nil || p == nil || p.Name != "a" {
		t.Fatalf("active: %v %v", p, err)
	}
	if p, why, err := (&SecurityFS{Root: mk("0")}).ActivePolicy(ctx); err != nil || p != nil || !strings.Contains(why, "no IPE policy is active") {
		t.Errorf("inactive: %v %q %v", p, why, err)
	}
	noIPE := t.TempDir()
	os.WriteFile(filepath.Join(noIPE, "lsm"), []byte("lockdown,capability,landlock\n"), 0o444)
	if p, why, err := (&SecurityFS{Root: noIPE}).ActivePolicy(ctx); err != nil || p != nil || !strings.Contains(why, "not among") {
		t.Errorf("no ipe in lsm: %v %q %v", p, why, err)
	}
	ipeListed := t.TempDir()
	os.WriteFile(filepath.Join(ipeListed, "lsm"), []byte("capability,ipe\n"), 0o444)
	noText := mk("1")
	os.Remove(filepath.Join(noText, "ipe", "policies", "a", "policy"))
	badText := mk("1")
	os.WriteFile(filepath.Join(badText, "ipe", "policies", "a", "policy"), []byte("junk"), 0o644)
	for name, root := range map[string]string{"not-mounted": t.TempDir(), "ipe-listed-no-dir": ipeListed, "no-text": noText, "bad-text": badText} {
		if p, _, err := (&SecurityFS{Root: root}).ActivePolicy(ctx); err == nil || p != nil {
			t.Errorf("%s: %v %v, want an error", name, p, err)
		}
	}
}
