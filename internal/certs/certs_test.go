package certs_test

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/intact-project/intact/internal/certs"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/pkcs7"
)

// TestIssueChainsLikeTheKernel: a CA and a leaf from Issue verify with
// openssl, carry the key identifiers Linux chains by (CheckKernelSigner),
// and sign root hashes that pkcs7.Verify accepts against the CA; for every
// key type the kernel verifies.
func TestIssueChainsLikeTheKernel(t *testing.T) {
	openssl := testutil.RequireTool(t, "openssl")
	now := time.Now().Add(-time.Minute)
	for _, kt := range []certs.KeyType{certs.RSA2048, certs.ECDSAP256, certs.ECDSAP384} {
		caKey, err := certs.GenerateKey(kt)
		if err != nil {
			t.Fatal(err)
		}
		ca, err := certs.Issue(certs.CATemplate(pkix.Name{CommonName: "ca"}, now, now.Add(time.Hour), 0), caKey.Public(), nil, caKey)
		if err != nil {
			t.Fatal(err)
		}
		key, err := certs.GenerateKey(kt)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := certs.Issue(certs.CodeSigningTemplate(pkix.Name{CommonName: "leaf"}, now, now.Add(time.Hour)), key.Public(), ca, caKey)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(leaf.AuthorityKeyId, ca.SubjectKeyId) || len(ca.SubjectKeyId) != 20 {
			t.Errorf("%s: key identifiers %x %x", kt, leaf.AuthorityKeyId, ca.SubjectKeyId)
		}
		if err := pkcs7.CheckKernelSigner(leaf, nil); err != nil {
			t.Errorf("%s: %v", kt, err)
		}
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "ca.pem"), certs.MarshalCertificatePEM(ca), 0o644)
		os.WriteFile(filepath.Join(dir, "leaf.pem"), certs.MarshalCertificatePEM(leaf), 0o644)
		if out, err := exec.Command(openssl, "verify", "-purpose", "any", "-CAfile", filepath.Join(dir, "ca.pem"), filepath.Join(dir, "leaf.pem")).CombinedOutput(); err != nil {
			t.Errorf("%s: openssl verify: %v %s", kt, err, out)
		}
		kp, err := certs.MarshalPrivateKeyPEM(key)
		if err != nil {
			t.Fatal(err)
		}
		pk, err := pkcs7.ParsePrivateKey(kp)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := pkcs7.Sign([]byte("abcd"), leaf, pk, pkcs7.SignOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pool, err := pkcs7.ParseCertificates(certs.MarshalCertificatePEM(ca))
		if err != nil {
			t.Fatal(err)
		}
		roots := pkcs7VerifyRoots(pool)
		if _, err := pkcs7.Verify(sig, pkcs7.VerifyOptions{Roots: roots, Content: []byte("abcd")}); err != nil {
			t.Errorf("%s: %v", kt, err)
		}
	}
	if _, err := certs.GenerateKey("dsa"); err == nil {
		t.Error("unknown key type accepted")
	}
}

func pkcs7VerifyRoots(cs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range cs {
		p.AddCert(c)
	}
	return p
}
