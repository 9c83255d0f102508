package kmod

import (
	"crypto/x509"
	"testing"

	"github.com/intact-project/intact/internal/testpki"
	"github.com/intact-project/intact/kmod/kmodtest"
	"github.com/intact-project/intact/pkcs7"
)

// FuzzModule feeds arbitrary bytes to every parser of untrusted module
// files: Decompress, Parse, ReadInfo and Verify must return, never panic,
// and stay within their limits; a module that parses must round-trip.
func FuzzModule(f *testing.F) {
	pki, err := testpki.New(testpki.Options{Key: testpki.RSA2048})
	if err != nil {
		f.Fatal(err)
	}
	s, _ := pkcs7.NewSigner(pki.Leaf.Certificate, pki.Leaf.Key)
	raw := kmodtest.Module("fuzz", "1", "dep")
	signed, _ := Sign(raw, s, SignOptions{})
	nocert, _ := Sign(raw, s, SignOptions{NoCerts: true})
	xz, _ := Compress(signed, XZ)
	zs, _ := Compress(signed, Zstd)
	for _, seed := range [][]byte{raw, signed, nocert, xz, zs, []byte(Marker), append(make([]byte, 12), Marker...), signed[:len(signed)-5]} {
		f.Add(seed)
	}
	trust := VerifyOptions{Trusted: []*x509.Certificate{pki.Root.Certificate}}
	f.Fuzz(func(t *testing.T, data []byte) {
		out, _, err := Decompress(data)
		if err == nil && len(out) > MaxModuleSize {
			t.Fatalf("Decompress returned %d bytes", len(out))
		}
		m, err := Parse(data)
		if err == nil {
			if string(m.Bytes()) != string(data) {
				t.Fatal("Parse/Bytes does not round-trip")
			}
		}
		ReadInfo(data)
		Verify(data, trust)
	})
}
