package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/testpki"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/pkcs7"
)

const sigTestRootHash = "4392d6e3a1b0c2d8f7e6a5b4c3d2e1f00112233445566778899aabbccddeeff0"

func sigOpenSSL(t *testing.T, args ...string) []byte {
	t.Helper()
	bin := testutil.RequireTool(t, "openssl")
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %v: %v\n%s", args, err, out)
	}
	return out
}

// TestVeritySignVerifiesWithOpenSSL: the signature covers exactly the root
// hash string, verifies with openssl against the CA, and with RSA keys is
// byte-identical to `openssl smime -sign -noattr -binary -outform der`.
func TestVeritySignVerifiesWithOpenSSL(t *testing.T) {
	testutil.RequireHost(t, "userspace only; the VM tier adds no kernel coverage")
	for _, depth := range []int{1, 2} {
		p := testpki.MustNew(t, testpki.Options{Key: testpki.RSA2048, Depth: depth})
		f := p.MustWriteDir(t, t.TempDir())
		dir := t.TempDir()
		out := filepath.Join(dir, "roothash.p7s")
		args := []string{"verity", "sign", "--key", f.KeyPEM, "--cert", f.CertPEM, "-o", out, sigTestRootHash}
		if depth == 2 {
			args = append(args, "--chain", f.ChainPEM)
		}
		code, stdout, stderr := runCLI(t, args...)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if !strings.Contains(stdout, sigTestRootHash) {
			t.Fatalf("stdout %q", stdout)
		}
		sig, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		content := filepath.Join(dir, "roothash.txt")
		if err := os.WriteFile(content, []byte(sigTestRootHash), 0o644); err != nil {
			t.Fatal(err)
		}
		verified := filepath.Join(dir, "verified")
		sigOpenSSL(t, "cms", "-verify", "-binary", "-inform", "DER", "-in", out, "-content", content,
			"-CAfile", f.RootPEM, "-purpose", "any", "-out", verified)
		if got, err := os.ReadFile(verified); err != nil || string(got) != sigTestRootHash {
			t.Fatalf("openssl verified %q (%v)", got, err)
		}
		smime := []string{"smime", "-sign", "-noattr", "-binary", "-outform", "der", "-in", content, "-signer", f.CertPEM, "-inkey", f.KeyPEM}
		if depth == 2 {
			smime = append(smime, "-certfile", f.ChainPEM)
		}
		if want := sigOpenSSL(t, smime...); !bytes.Equal(sig, want) {
			t.Fatalf("depth %d: signature differs from openssl smime's", depth)
		}

		// verify-signature accepts it against the root only...
		code, stdout, stderr = runCLI(t, "verity", "verify-signature", "--ca", f.RootPEM, sigTestRootHash, out)
		if code != 0 || !strings.Contains(stdout, "valid signature") {
			t.Fatalf("verify-signature: exit %d %s %s", code, stdout, stderr)
		}
		// ...and rejects another root hash, the upper-case string (the
		// kernel compares strings) and a foreign CA.
		other := testpki.MustNew(t, testpki.Options{})
		of := other.MustWriteDir(t, t.TempDir())
		for _, bad := range [][]string{
			{"--ca", f.RootPEM, strings.Replace(sigTestRootHash, "43", "44", 1), out},
			{"--ca", f.RootPEM, strings.ToUpper(sigTestRootHash), out},
			{"--ca", of.RootPEM, sigTestRootHash, out},
		} {
			code, _, stderr := runCLI(t, append([]string{"verity", "verify-signature"}, bad...)...)
			if code != 1 || !strings.HasPrefix(stderr, "intact: ") || strings.Count(stderr, "\n") != 1 {
				t.Fatalf("%v: exit %d, stderr %q", bad, code, stderr)
			}
		}
	}
}

func TestVeritySignOptionsAndJSON(t *testing.T) {
	p := testpki.MustNew(t, testpki.Options{Key: testpki.ECDSAP384})
	f := p.MustWriteDir(t, t.TempDir())
	dir := t.TempDir()
	out := filepath.Join(dir, "sig")

	// Upper case in, lowercase signed, with a note.
	code, stdout, stderr := runCLI(t, "verity", "sign", "--json", "--key", f.KeyPEM, "--cert", f.CertPEM, "--no-cert", "--skid", "--md", "sha384", "-o", out, strings.ToUpper(sigTestRootHash))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "lowercase") {
		t.Fatalf("no note about lowercase: %q", stderr)
	}
	var j struct {
		Path, Digest, Signer string
		RootHash             string `json:"root_hash"`
	}
	if err := json.Unmarshal([]byte(stdout), &j); err != nil {
		t.Fatal(err)
	}
	sig, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(sig)
	if j.Path != out || j.Digest != "sha256:"+hex.EncodeToString(sum[:]) || j.RootHash != sigTestRootHash || !strings.Contains(j.Signer, "signer") {
		t.Fatalf("json %+v", j)
	}
	sd, err := pkcs7.Parse(sig)
	if err != nil {
		t.Fatal(err)
	}
	if len(sd.Certificates) != 0 || sd.Signers[0].Version != 3 || sd.Signers[0].Hash.String() != "SHA-384" {
		t.Fatalf("--no-cert --skid --md sha384 not applied: %d certs, version %d, %v", len(sd.Certificates), sd.Signers[0].Version, sd.Signers[0].Hash)
	}
	// Without certificates (and named by SKID), verify-signature needs
	// --cert to find the signer, and like the kernel it trusts such a
	// signer only if its own certificate is a trust anchor.
	if code, _, _ := runCLI(t, "verity", "verify-signature", "--ca", f.RootPEM, sigTestRootHash, out); code != 1 {
		t.Fatalf("nocerts signature verified without --cert: exit %d", code)
	}
	code, _, stderr = runCLI(t, "verity", "verify-signature", "--ca", f.RootPEM, "--cert", f.CertPEM, sigTestRootHash, out)
	if code != 1 || !strings.Contains(stderr, "subjectKeyIdentifier") {
		t.Fatalf("SKID signer trusted through the CA: exit %d %s", code, stderr)
	}
	code, stdout, stderr = runCLI(t, "verity", "verify-signature", "--json", "--ca", f.CertPEM, "--cert", f.CertPEM, sigTestRootHash, out)
	if code != 0 {
		t.Fatalf("exit %d %s", code, stderr)
	}
	var v struct {
		Valid           bool
		Chain           []string
		DigestAlgorithm string `json:"digest_algorithm"`
	}
	if err := json.Unmarshal([]byte(stdout), &v); err != nil || !v.Valid || len(v.Chain) != 1 || v.DigestAlgorithm != "sha384" {
		t.Fatalf("json %s (%v)", stdout, err)
	}

	// -o - writes the DER to stdout.
	code, stdout, _ = runCLI(t, "verity", "sign", "--key", f.KeyPEM, "--cert", f.CertPEM, "-o", "-", sigTestRootHash)
	if code != 0 {
		t.Fatal(code)
	}
	if _, err := pkcs7.Verify([]byte(stdout), pkcs7.VerifyOptions{Roots: p.Roots(), Content: []byte(sigTestRootHash)}); err != nil {
		t.Fatalf("stdout signature: %v", err)
	}
}

// TestVeritySignBadInput: every bad input gives one line naming the problem,
// a non-zero exit, and no output file.
func TestVeritySignBadInput(t *testing.T) {
	p := testpki.MustNew(t, testpki.Options{Key: testpki.ECDSAP256})
	other := testpki.MustNew(t, testpki.Options{Key: testpki.ECDSAP256})
	f := p.MustWriteDir(t, t.TempDir())
	of := other.MustWriteDir(t, t.TempDir())
	dir := t.TempDir()
	out := filepath.Join(dir, "sig")
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--cert", f.CertPEM, sigTestRootHash}, 2, "--key and --cert are required"},
		{[]string{"--key", f.KeyPEM, "--cert", f.CertPEM, "xyz"}, 2, "not hex"},
		{[]string{"--key", f.KeyPEM, "--cert", f.CertPEM, "abcd"}, 2, "4 hex characters"},
		{[]string{"--key", f.KeyPEM, "--cert", f.CertPEM, sigTestRootHash + "\n"}, 2, "not hex"},
		{[]string{"--key", f.KeyPEM, "--cert", f.CertPEM, "--md", "sha1", sigTestRootHash}, 2, "--md"},
		{[]string{"--key", of.KeyPEM, "--cert", f.CertPEM, sigTestRootHash}, 1, "key does not match certificate"},
		{[]string{"--key", f.CertPEM, "--cert", f.CertPEM, sigTestRootHash}, 1, "not a private key"},
		{[]string{"--key", f.KeyPEM, "--cert", f.KeyPEM, sigTestRootHash}, 1, "not a certificate"},
		{[]string{"--key", filepath.Join(dir, "missing"), "--cert", f.CertPEM, sigTestRootHash}, 1, "no such file"},
		{[]string{"--key", f.KeyPEM, "--cert", f.CertPEM, "--chain", filepath.Join(dir, "missing"), sigTestRootHash}, 1, "no such file"},
		{[]string{"--key", f.KeyPEM, "--cert", f.CertPEM, "--json", "-o", "-", sigTestRootHash}, 2, "--json needs -o FILE"},
	}
	for _, c := range cases {
		args := append([]string{"verity", "sign", "-o", out}, c.args...)
		code, _, stderr := runCLI(t, args...)
		first, _, _ := strings.Cut(stderr, "\n")
		if code != c.code || !strings.HasPrefix(first, "intact: ") || !strings.Contains(first, c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", c.args, code, stderr, c.code, c.msg)
		}
		if _, err := os.Stat(out); err == nil {
			t.Fatalf("%v: output written despite the error", c.args)
		}
	}
	for _, args := range [][]string{
		{sigTestRootHash, out},
		{"--ca", filepath.Join(dir, "nope"), sigTestRootHash, out},
		{"--ca", f.RootPEM, "zz", out},
		{"--ca", f.RootPEM, sigTestRootHash, filepath.Join(dir, "nope")},
		{"--ca", f.RootPEM, sigTestRootHash, f.CertPEM},
	} {
		code, _, stderr := runCLI(t, append([]string{"verity", "verify-signature"}, args...)...)
		if code == 0 || !strings.HasPrefix(stderr, "intact: ") {
			t.Errorf("verify-signature %v: exit %d %q", args, code, stderr)
		}
	}
}

// opensslV1Leaf makes a leaf with 'openssl x509 -req' and no extension
// file: a v1 certificate without authorityKeyIdentifier, which Linux
// cannot link to its CA (ENOKEY).
func opensslV1Leaf(t *testing.T, caCert, caKey string) (keyPath, certPath string) {
	t.Helper()
	dir := t.TempDir()
	keyPath, certPath = filepath.Join(dir, "leaf.key"), filepath.Join(dir, "leaf.pem")
	csr := filepath.Join(dir, "leaf.csr")
	sigOpenSSL(t, "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", keyPath, "-out", csr, "-subj", "/CN=v1 leaf")
	sigOpenSSL(t, "x509", "-req", "-in", csr, "-CA", caCert, "-CAkey", caKey, "-set_serial", "9", "-days", "2", "-out", certPath)
	return keyPath, certPath
}

// TestV1LeafSignerIsFlagged: a signer certificate without
// authorityKeyIdentifier is named as the problem before the kernel answers
// ENOKEY: verify-signature refuses, verity sign and verity open warn, image
// sign refuses to publish such signatures.
func TestV1LeafSignerIsFlagged(t *testing.T) {
	testutil.RequireHost(t, "userspace only; the VM tier adds no kernel coverage")
	f := testpki.MustNew(t, testpki.Options{Key: testpki.RSA2048}).MustWriteDir(t, t.TempDir())
	key, cert := opensslV1Leaf(t, f.RootPEM, f.RootKey)
	dir := t.TempDir()
	sig := filepath.Join(dir, "sig")
	code, _, stderr := runCLI(t, "verity", "sign", "--key", key, "--cert", cert, "-o", sig, sigTestRootHash)
	if code != 0 || !strings.Contains(stderr, "authorityKeyIdentifier") {
		t.Errorf("verity sign: exit %d, stderr %q; want a warning naming authorityKeyIdentifier", code, stderr)
	}
	code, _, stderr = runCLI(t, "verity", "verify-signature", "--ca", f.RootPEM, sigTestRootHash, sig)
	if code != 1 || !strings.Contains(stderr, "authorityKeyIdentifier") || !strings.Contains(stderr, "ENOKEY") {
		t.Errorf("verify-signature: exit %d, stderr %q; want exit 1 naming authorityKeyIdentifier and ENOKEY", code, stderr)
	}
	code, _, stderr = runCLI(t, "verity", "open", "v1test", filepath.Join(dir, "no-such-data"), sigTestRootHash, "--signature", sig)
	if code == 0 || !strings.Contains(stderr, "authorityKeyIdentifier") {
		t.Errorf("verity open: exit %d, stderr %q; want the warning before anything else", code, stderr)
	}
	img := newImageFixture(t)
	code, _, stderr = runCLI(t, "image", "sign", img.ref, "--plain-http", "--no-credentials", "--key", key, "--cert", cert)
	if code != 1 || !strings.Contains(stderr, "authorityKeyIdentifier") {
		t.Errorf("image sign: exit %d, stderr %q; want a refusal naming authorityKeyIdentifier", code, stderr)
	}
}
