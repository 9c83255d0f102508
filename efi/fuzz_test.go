package efi

import (
	"bytes"
	"crypto/x509"
	"testing"

	"github.com/intact-project/intact/internal/testpki"
)

// FuzzVerify feeds arbitrary images (seeded with a signed one): Verify
// must return an error or a result, never panic, and never trust a
// signature from a certificate it was not given.
func FuzzVerify(f *testing.F) {
	p, err := testpki.New(testpki.Options{})
	if err != nil {
		f.Fatal(err)
	}
	signed, err := Sign(minimalPE(5), Signer{Certificate: p.Leaf.Certificate, Key: p.Leaf.Key}, SignOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(signed)
	f.Add(minimalPE(0))
	other, err := testpki.New(testpki.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, img []byte) {
		if len(img) > 64<<10 {
			return
		}
		res, err := Verify(bytes.NewReader(img), int64(len(img)), []*x509.Certificate{other.Root.Certificate})
		if err != nil {
			return
		}
		if res.Trusted() {
			t.Fatal("trusted a signature by a certificate that was never given")
		}
	})
}
