package pkcs7

import (
	"bytes"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/testpki"
)

// TestParsePrivateKeyFormats loads keys in every form openssl writes them.
func TestParsePrivateKeyFormats(t *testing.T) {
	dir := t.TempDir()
	path := func(n string) string { return filepath.Join(dir, n) }
	openssl(t, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path("rsa-pkcs8.pem"))
	openssl(t, "pkey", "-in", path("rsa-pkcs8.pem"), "-traditional", "-out", path("rsa-pkcs1.pem"))
	openssl(t, "pkey", "-in", path("rsa-pkcs8.pem"), "-outform", "DER", "-out", path("rsa-pkcs8.der"))
	openssl(t, "rsa", "-in", path("rsa-pkcs8.pem"), "-traditional", "-outform", "DER", "-out", path("rsa-pkcs1.der"))
	// `openssl ecparam -genkey` writes an EC PARAMETERS block before the key.
	openssl(t, "ecparam", "-name", "prime256v1", "-genkey", "-out", path("ec-sec1-params.pem"))
	openssl(t, "ec", "-in", path("ec-sec1-params.pem"), "-outform", "DER", "-out", path("ec-sec1.der"))
	openssl(t, "pkey", "-in", path("ec-sec1-params.pem"), "-out", path("ec-pkcs8.pem"))
	openssl(t, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out", path("ec384-pkcs8.pem"))
	for _, n := range []string{"rsa-pkcs8.pem", "rsa-pkcs1.pem", "rsa-pkcs8.der", "rsa-pkcs1.der", "ec-sec1-params.pem", "ec-sec1.der", "ec-pkcs8.pem", "ec384-pkcs8.pem"} {
		k, err := LoadPrivateKey(path(n))
		if err != nil {
			t.Errorf("%s: %v", n, err)
			continue
		}
		// The public key must equal what openssl derives.
		want := openssl(t, "pkey", "-in", path(n), "-inform", map[bool]string{true: "DER", false: "PEM"}[strings.HasSuffix(n, ".der")], "-pubout", "-outform", "DER")
		got, err := x509.MarshalPKIXPublicKey(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: public key differs from openssl's", n)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	p := testpki.MustNew(t, testpki.Options{Key: testpki.ECDSAP256, Depth: 2})
	other := testpki.MustNew(t, testpki.Options{Key: testpki.ECDSAP256})
	f := p.MustWriteDir(t, t.TempDir())
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	encrypted := write("enc.pem", nil)
	openssl(t, "pkey", "-in", f.KeyPEM, "-aes256", "-passout", "pass:x", "-out", encrypted)

	cases := []struct {
		name    string
		err     func() error
		wantIs  error
		wantMsg string
	}{
		{"cert as key", func() error { _, err := LoadPrivateKey(f.CertPEM); return err }, ErrNotPrivateKey, "cert.pem: not a private key (found [\"CERTIFICATE\"])"},
		{"garbage key", func() error { _, err := LoadPrivateKey(write("junk.key", []byte("hello"))); return err }, ErrNotPrivateKey, "junk.key: not a private key"},
		{"encrypted key", func() error { _, err := LoadPrivateKey(encrypted); return err }, ErrNotPrivateKey, "encrypted"},
		{"missing key", func() error { _, err := LoadPrivateKey(filepath.Join(dir, "nope.pem")); return err }, os.ErrNotExist, "nope.pem"},
		{"key as cert", func() error { _, err := LoadCertificates(f.KeyPEM); return err }, ErrNotCertificate, "key.pem: not a certificate (found [\"PRIVATE KEY\"])"},
		{"empty cert", func() error { _, err := LoadCertificates(write("empty.pem", nil)); return err }, ErrNotCertificate, "empty.pem: not a certificate"},
		{"mismatch", func() error {
			_, err := LoadSigner(write("other.key", other.Leaf.KeyPEM()), f.CertPEM)
			return err
		}, ErrKeyMismatch, "other.key: key does not match certificate " + f.CertPEM},
	}
	for _, c := range cases {
		err := c.err()
		if !errors.Is(err, c.wantIs) || !strings.Contains(err.Error(), c.wantMsg) {
			t.Errorf("%s: %v; want %v containing %q", c.name, err, c.wantIs, c.wantMsg)
		}
	}

	// A bundle gives the signer and its chain; the legacy PEM forms load.
	s, err := LoadSigner(write("legacy.key", p.Leaf.KeyPEMLegacy()), f.BundlePEM)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Certificate.Equal(p.Leaf.Certificate) || len(s.Chain) != 1 || !s.Chain[0].Equal(p.Intermediate.Certificate) {
		t.Fatalf("bundle: signer %v chain %d", s.Certificate.Subject, len(s.Chain))
	}
	// DER certificates, also concatenated.
	certs, err := ParseCertificates(append(append([]byte{}, p.Leaf.DER()...), p.Root.DER()...))
	if err != nil || len(certs) != 2 {
		t.Fatalf("concatenated DER: %d certs, %v", len(certs), err)
	}
	pool, err := LoadCertPool(f.RootPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Intermediate.Certificate.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
		t.Fatal(err)
	}
}
