package pkcs7

import (
	"bytes"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/intact-project/intact/internal/testpki"
	"github.com/intact-project/intact/internal/testutil"
)

var updateSeeds = flag.Bool("update-seeds", false, "regenerate testdata/fuzz seeds with openssl and fsverity")

// FuzzParse: Parse and Verify must never panic, and normalization to DER
// must be idempotent. Seeds are openssl- and fsverity-made messages (DER,
// BER, attributes, SKID signers, no certificates).
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		der, err := toDER(data)
		if err == nil {
			again, err := toDER(der)
			if err != nil || !bytes.Equal(again, der) {
				t.Fatalf("toDER not idempotent: %v", err)
			}
			if len(der) > 3*len(data) {
				t.Fatalf("toDER grew %d bytes to %d", len(data), len(der))
			}
		}
		sd, err := Parse(data)
		if err != nil {
			return
		}
		pool := x509.NewCertPool()
		for _, c := range sd.Certificates {
			pool.AddCert(c)
		}
		opts := VerifyOptions{Roots: pool, AllowSignedAttributes: true}
		if sd.Detached() {
			opts.Content = []byte("content")
		}
		_, _ = sd.Verify(opts)
	})
}

// FuzzParsePrivateKey: the key loader must never panic.
func FuzzParsePrivateKey(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParsePrivateKey(data)
		if err == nil && k == nil {
			t.Fatal("nil key without error")
		}
	})
}

// FuzzParseCertificates: the certificate loader must never panic.
func FuzzParseCertificates(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParseCertificates(data)
		if err == nil && len(certs) == 0 {
			t.Fatal("no certificates without error")
		}
	})
}

// TestUpdateFuzzSeeds regenerates the committed seed corpora from the
// reference tools when run with -update-seeds.
func TestUpdateFuzzSeeds(t *testing.T) {
	if !*updateSeeds {
		t.Skip("run with -update-seeds to regenerate testdata/fuzz")
	}
	bin := testutil.RequireTool(t, "openssl")
	fsverity := testutil.RequireTool(t, "fsverity")
	rsa := testpki.MustNew(t, testpki.Options{Key: testpki.RSA2048, Depth: 2, Name: "seed"})
	ec := testpki.MustNew(t, testpki.Options{Key: testpki.ECDSAP256, Name: "seed"})
	rf := rsa.MustWriteDir(t, t.TempDir())
	ef := ec.MustWriteDir(t, t.TempDir())
	in := writeTemp(t, "in", []byte("0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"))
	run := func(args ...string) []byte {
		out, err := exec.Command(bin, args...).Output()
		if err != nil {
			t.Fatalf("openssl %v: %v", args, err)
		}
		return out
	}
	rsaSigner := []string{"-binary", "-in", in, "-signer", rf.CertPEM, "-inkey", rf.KeyPEM, "-outform", "DER"}
	ecSigner := []string{"-binary", "-in", in, "-signer", ef.CertPEM, "-inkey", ef.KeyPEM, "-outform", "DER"}
	fsvSig := filepath.Join(t.TempDir(), "fsv.sig")
	if out, err := exec.Command(fsverity, "sign", in, fsvSig, "--key", rf.KeyPEM, "--cert", rf.CertPEM).CombinedOutput(); err != nil {
		t.Fatalf("fsverity sign: %v %s", err, out)
	}
	fsv, err := os.ReadFile(fsvSig)
	if err != nil {
		t.Fatal(err)
	}
	seeds := map[string]map[string][]byte{
		"FuzzParse": {
			"smime-noattr-rsa-chain":  run(append([]string{"smime", "-sign", "-noattr", "-certfile", rf.ChainPEM}, rsaSigner...)...),
			"smime-nodetach-ecdsa":    run(append([]string{"smime", "-sign", "-noattr", "-nodetach"}, ecSigner...)...),
			"cms-attrs-smimecap-rsa":  run(append([]string{"cms", "-sign"}, rsaSigner...)...),
			"cms-attrs-ecdsa-sha384":  run(append([]string{"cms", "-sign", "-nosmimecap", "-md", "sha384"}, ecSigner...)...),
			"cms-keyid-nocerts-rsa":   run(append([]string{"cms", "-sign", "-noattr", "-keyid", "-nocerts"}, rsaSigner...)...),
			"cms-stream-ber-ecdsa":    run(append([]string{"cms", "-sign", "-noattr", "-nodetach", "-stream"}, ecSigner...)...),
			"fsverity-sign-nocerts":   fsv,
			"truncated-smime-noattr":  run(append([]string{"smime", "-sign", "-noattr"}, ecSigner...)...)[:200],
			"indefinite-nesting-only": bytes.Repeat([]byte{0x30, 0x80}, 40),
		},
		"FuzzParsePrivateKey": {
			"pkcs8-rsa":       rsa.Leaf.KeyPEM(),
			"pkcs1-rsa":       rsa.Leaf.KeyPEMLegacy(),
			"sec1-ec":         ec.Leaf.KeyPEMLegacy(),
			"pkcs8-ec":        ec.Leaf.KeyPEM(),
			"ecparam-genkey":  run("ecparam", "-name", "secp384r1", "-genkey"),
			"pkcs8-ec-der":    run("pkey", "-in", ef.KeyPEM, "-outform", "DER"),
			"encrypted-pkcs8": run("pkey", "-in", ef.KeyPEM, "-aes128", "-passout", "pass:x"),
			"certificate":     ec.Leaf.CertPEM(),
		},
		"FuzzParseCertificates": {
			"bundle-pem": append(rsa.Leaf.CertPEM(), rsa.ChainPEM()...),
			"ec-der":     ec.Leaf.DER(),
			"der-concat": append(append([]byte{}, rsa.Leaf.DER()...), rsa.Root.DER()...),
			"key-pem":    ec.Leaf.KeyPEM(),
		},
	}
	for target, m := range seeds {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range m {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
