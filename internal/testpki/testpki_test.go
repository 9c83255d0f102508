package testpki

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/intact-project/intact/internal/testutil"
)

func TestHierarchiesVerify(t *testing.T) {
	openssl := testutil.RequireTool(t, "openssl")
	for _, depth := range []int{1, 2} {
		for _, kt := range []KeyType{RSA2048, ECDSAP256, ECDSAP384} {
			t.Run(fmt.Sprintf("%s/depth%d", kt, depth), func(t *testing.T) {
				p := MustNew(t, Options{Key: kt, Depth: depth})
				if (p.Intermediate != nil) != (depth == 2) {
					t.Fatalf("intermediate presence wrong for depth %d", depth)
				}
				_, err := p.Leaf.Certificate.Verify(x509.VerifyOptions{
					Roots:         p.Roots(),
					Intermediates: pool(p.Chain()),
					KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
				})
				if err != nil {
					t.Fatalf("Go verify: %v", err)
				}
				f := p.MustWriteDir(t, t.TempDir())
				args := []string{"verify", "-purpose", "any", "-CAfile", f.RootPEM}
				if depth == 2 {
					args = append(args, "-untrusted", f.ChainPEM)
				}
				args = append(args, f.CertPEM)
				out, err := exec.Command(openssl, args...).CombinedOutput()
				if err != nil || !bytes.Contains(out, []byte("OK")) {
					t.Fatalf("openssl verify: %v\n%s", err, out)
				}
				// The key file must hold the leaf's key: openssl derives the
				// public key from key.pem and it must equal cert.pem's.
				pub1, err := exec.Command(openssl, "pkey", "-in", f.KeyPEM, "-pubout").Output()
				if err != nil {
					t.Fatal(err)
				}
				pub2, err := exec.Command(openssl, "x509", "-in", f.CertPEM, "-noout", "-pubkey").Output()
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(pub1, pub2) {
					t.Fatalf("key.pem does not match cert.pem")
				}
				// The subject key identifier must be what openssl computes
				// (SHA-1 of the public key bit string).
				out, err = exec.Command(openssl, "x509", "-in", f.CertPEM, "-noout", "-ext", "subjectKeyIdentifier").Output()
				if err != nil {
					t.Fatal(err)
				}
				want := fmt.Sprintf("%X", p.Leaf.Certificate.SubjectKeyId)
				if !bytes.Contains(bytes.ReplaceAll(out, []byte(":"), nil), []byte(want)) {
					t.Fatalf("SKID %s not in openssl output %s", want, out)
				}
			})
		}
	}
}

func TestForeignRootRejected(t *testing.T) {
	a := MustNew(t, Options{Key: ECDSAP256})
	b := MustNew(t, Options{Key: ECDSAP256})
	if _, err := a.Leaf.Certificate.Verify(x509.VerifyOptions{Roots: b.Roots(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
		t.Fatal("leaf of one PKI verified against another PKI's root")
	}
}

func TestRSA4096AndLegacyKeyPEM(t *testing.T) {
	p := MustNew(t, Options{Key: RSA4096, CAKey: ECDSAP256})
	if n := p.Leaf.Certificate.PublicKey.(interface{ Size() int }).Size(); n != 512 {
		t.Fatalf("RSA-4096 modulus is %d bytes", n)
	}
	if !bytes.Contains(p.Leaf.KeyPEMLegacy(), []byte("RSA PRIVATE KEY")) {
		t.Fatal("legacy PEM is not PKCS#1")
	}
	e := MustNew(t, Options{Key: ECDSAP384})
	if !bytes.Contains(e.Leaf.KeyPEMLegacy(), []byte("EC PRIVATE KEY")) {
		t.Fatal("legacy PEM is not SEC 1")
	}
	leaf2, err := p.IssueLeaf("second", ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf2.Certificate.Verify(x509.VerifyOptions{Roots: p.Roots(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Depth: 3}); err == nil {
		t.Fatal("depth 3 accepted")
	}
	if _, err := GenerateKey("dsa"); err == nil {
		t.Fatal("unknown key type accepted")
	}
	if st, err := os.Stat(p.MustWriteDir(t, t.TempDir()).KeyPEM); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key.pem mode: %v %v", st.Mode(), err)
	}
}

func pool(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}
