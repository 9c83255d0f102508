package efi

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/peimage"
	"github.com/intact-project/intact/internal/testpki"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/internal/vmtest"
	"github.com/intact-project/intact/uki"
)

// realUKI assembles an unsigned UKI from the VM tier's Debian stub and
// kernel, and returns it with the (Debian-signed) kernel.
func realUKI(t *testing.T) (img, kernel []byte) {
	t.Helper()
	testutil.RequireHost(t, "needs the VM tier's Debian assets")
	a, err := vmtest.Fetch(context.Background(), vmtest.FetchOptions{})
	if err != nil {
		testutil.Unavailable(t, "Debian stub and kernel: "+err.Error())
	}
	stub, err := os.ReadFile(a.Stub())
	if err != nil {
		t.Fatal(err)
	}
	if kernel, err = os.ReadFile(a.Vmlinuz()); err != nil {
		t.Fatal(err)
	}
	img, err = uki.Build(uki.Input{Stub: stub, Linux: kernel, Initrds: [][]byte{bytes.Repeat([]byte("initrd"), 5000)},
		Cmdline: "console=ttyS0 ro", Uname: a.KernelRelease})
	if err != nil {
		t.Fatal(err)
	}
	return img, kernel
}

// minimalPE is a small PE32+ image with one section; extra bytes are
// appended after the section data (trailing data Authenticode hashes).
func minimalPE(trailing int) []byte {
	le := binary.LittleEndian
	img := make([]byte, 0x600+trailing)
	copy(img, "MZ")
	le.PutUint32(img[0x3c:], 0x80)
	copy(img[0x80:], "PE\x00\x00")
	coff := 0x84
	le.PutUint16(img[coff:], 0x8664)
	le.PutUint16(img[coff+2:], 1)
	le.PutUint16(img[coff+16:], 240)
	le.PutUint16(img[coff+18:], 0x22)
	opt := coff + 20
	le.PutUint16(img[opt:], 0x20b)
	le.PutUint32(img[opt+16:], 0x1000)
	le.PutUint32(img[opt+32:], 0x1000)
	le.PutUint32(img[opt+36:], 0x200)
	le.PutUint32(img[opt+56:], 0x2000)
	le.PutUint32(img[opt+60:], 0x400)
	le.PutUint16(img[opt+68:], 10)
	le.PutUint32(img[opt+108:], 16)
	sec := opt + 240
	copy(img[sec:], ".text")
	le.PutUint32(img[sec+8:], 0x10)
	le.PutUint32(img[sec+12:], 0x1000)
	le.PutUint32(img[sec+16:], 0x200)
	le.PutUint32(img[sec+20:], 0x400)
	le.PutUint32(img[sec+36:], 0x60000020)
	for i := 0x400; i < len(img); i++ {
		img[i] = byte(i * 7)
	}
	return img
}

type keys struct {
	pki    *testpki.PKI
	files  testpki.Files
	signer Signer
}

func newKeys(t *testing.T, name string) keys {
	p := testpki.MustNew(t, testpki.Options{Name: name})
	return keys{pki: p, files: p.MustWriteDir(t, t.TempDir()),
		signer: Signer{Certificate: p.Leaf.Certificate, Key: p.Leaf.Key}}
}

// embedded returns the SpcIndirectDataContent bytes and the digest in the
// first signature of a signed image.
func embedded(t *testing.T, signed []byte) (spc, digest []byte) {
	t.Helper()
	im, err := peimage.Parse(bytes.NewReader(signed), int64(len(signed)))
	if err != nil || im.SecuritySize == 0 {
		t.Fatalf("not signed: %v", err)
	}
	der := signed[im.SecurityOffset+8 : im.SecurityOffset+binary.LittleEndian.Uint32(signed[im.SecurityOffset:])]
	var ci contentInfo
	if _, err := asn1.Unmarshal(der, &ci); err != nil {
		t.Fatal(err)
	}
	var sd signedData
	if _, err := asn1.Unmarshal(ci.Content.Bytes, &sd); err != nil {
		t.Fatal(err)
	}
	var seq asn1.RawValue
	asn1.Unmarshal(sd.ContentInfo.Content.Bytes, &seq)
	var c spcIndirectDataContent
	if _, err := asn1.Unmarshal(seq.FullBytes, &c); err != nil {
		t.Fatal(err)
	}
	return seq.FullBytes, c.MessageDigest.Digest
}

func sbsign(t *testing.T, k keys, img []byte) []byte {
	t.Helper()
	tool := testutil.RequireTool(t, "sbsign")
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.efi"), filepath.Join(dir, "out.efi")
	os.WriteFile(in, img, 0o644)
	if b, err := exec.Command(tool, "--key", k.files.KeyPEM, "--cert", k.files.CertPEM, "--output", out, in).CombinedOutput(); err != nil {
		t.Fatalf("sbsign: %v: %s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sbverify(t *testing.T, cert string, img []byte) error {
	t.Helper()
	tool := testutil.RequireTool(t, "sbverify")
	p := filepath.Join(t.TempDir(), "img.efi")
	os.WriteFile(p, img, 0o644)
	out, err := exec.Command(tool, "--cert", cert, p).CombinedOutput()
	if err != nil {
		return errors.New(strings.TrimSpace(string(out)))
	}
	return nil
}

// TestDigestMatchesSbsign: for a real UKI and for images whose size is not
// a multiple of 8 (sbsign pads them), our Authenticode digest and our
// SpcIndirectDataContent are the ones sbsign embeds; the layout of our
// signed image equals sbsign's (certificate table offset, padding,
// CheckSum algorithm) apart from the signature bytes.
func TestDigestMatchesSbsign(t *testing.T) {
	img, _ := realUKI(t)
	k := newKeys(t, "intact efi test")
	for _, c := range []struct {
		name string
		img  []byte
	}{{"uki", img}, {"odd-size", minimalPE(13)}, {"aligned", minimalPE(0)}} {
		t.Run(c.name, func(t *testing.T) {
			theirs := sbsign(t, k, c.img)
			spc, digest := embedded(t, theirs)
			d, err := Digest(bytes.NewReader(c.img), int64(len(c.img)), crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			ours, err := Sign(c.img, k.signer, SignOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ourSPC, ourDigest := embedded(t, ours)
			if len(c.img)%8 == 0 && !bytes.Equal(d, digest) {
				t.Errorf("Digest %x, sbsign embeds %x", d, digest)
			}
			if !bytes.Equal(ourDigest, digest) || !bytes.Equal(ourSPC, spc) {
				t.Errorf("our signature embeds %x, sbsign %x (SpcIndirectDataContent equal: %v)", ourDigest, digest, bytes.Equal(ourSPC, spc))
			}
			oi, _ := peimage.Parse(bytes.NewReader(ours), int64(len(ours)))
			ti, _ := peimage.Parse(bytes.NewReader(theirs), int64(len(theirs)))
			if oi.SecurityOffset != ti.SecurityOffset || !bytes.Equal(maskChecksum(ours[:oi.SecurityOffset], oi), maskChecksum(theirs[:ti.SecurityOffset], ti)) {
				t.Errorf("signed images differ before the certificate table (ours at %d, sbsign at %d)", oi.SecurityOffset, ti.SecurityOffset)
			}
			for _, x := range []struct {
				name string
				b    []byte
				im   *peimage.Image
			}{{"ours", ours, oi}, {"sbsign", theirs, ti}} {
				le := binary.LittleEndian
				n := le.Uint32(x.b[x.im.SecurityOffset:])
				if (n+7)&^7 != x.im.SecuritySize || le.Uint16(x.b[x.im.SecurityOffset+4:]) != 0x200 || le.Uint16(x.b[x.im.SecurityOffset+6:]) != 2 {
					t.Errorf("%s: WIN_CERTIFICATE length %d revision %#x type %#x, table %d bytes", x.name, n,
						le.Uint16(x.b[x.im.SecurityOffset+4:]), le.Uint16(x.b[x.im.SecurityOffset+6:]), x.im.SecuritySize)
				}
			}
			if got := peimage.Checksum(theirs, ti.CheckSumOffset()); got != ti.CheckSum {
				t.Errorf("Checksum of sbsign's output %#x, sbsign wrote %#x", got, ti.CheckSum)
			}
			if got := peimage.Checksum(ours, oi.CheckSumOffset()); got != oi.CheckSum || got == 0 {
				t.Errorf("our CheckSum %#x, recomputed %#x", oi.CheckSum, got)
			}
			// Our Verify accepts sbsign's signature (signingTime and S/MIME
			// capabilities among its signed attributes), and sbverify ours.
			res, err := Verify(bytes.NewReader(theirs), int64(len(theirs)), []*x509.Certificate{k.pki.Root.Certificate})
			if err != nil || !res.Trusted() {
				t.Errorf("Verify(sbsign output): %v %+v", err, res)
			}
			if err := sbverify(t, k.files.RootPEM, ours); err != nil {
				t.Errorf("sbverify --cert CA: %v", err)
			}
		})
	}
}

func maskChecksum(b []byte, im *peimage.Image) []byte {
	b = append([]byte(nil), b...)
	binary.LittleEndian.PutUint32(b[im.CheckSumOffset():], 0)
	binary.LittleEndian.PutUint64(b[im.SecurityDirOffset():], 0)
	return b
}

// TestSignVerify: sbverify and Verify accept our signature with the leaf or
// the CA as the trusted certificate, refuse it with a foreign CA and after
// the signed command line changed; signing is deterministic; signed input
// is refused unless appended to or replaced.
func TestSignVerify(t *testing.T) {
	img, kernel := realUKI(t)
	k := newKeys(t, "intact db")
	foreign := newKeys(t, "intact foreign")
	signed, err := Sign(img, k.signer, SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	again, _ := Sign(img, k.signer, SignOptions{})
	if !bytes.Equal(signed, again) {
		t.Error("two signatures of the same image differ")
	}
	for _, cert := range []string{k.files.CertPEM, k.files.RootPEM} {
		if err := sbverify(t, cert, signed); err != nil {
			t.Errorf("sbverify --cert %s: %v", filepath.Base(cert), err)
		}
	}
	if err := sbverify(t, foreign.files.RootPEM, signed); err == nil {
		t.Error("sbverify accepted a foreign CA")
	}
	verify := func(img []byte, trusted ...*x509.Certificate) (*Result, error) {
		return Verify(bytes.NewReader(img), int64(len(img)), trusted)
	}
	for _, c := range []*x509.Certificate{k.pki.Root.Certificate, k.pki.Leaf.Certificate} {
		if res, err := verify(signed, c); err != nil || !res.Trusted() || len(res.Signatures) != 1 {
			t.Errorf("Verify with %s: %v %+v", c.Subject, err, res)
		}
	}
	if res, err := verify(signed, foreign.pki.Root.Certificate); err != nil || res.Trusted() || !errors.Is(res.Signatures[0].Err, ErrSignature) {
		t.Errorf("Verify with a foreign CA: %v %+v", err, res)
	}
	// The command line changed after signing.
	tampered := append([]byte(nil), signed...)
	i := bytes.Index(tampered, []byte("console=ttyS0 ro"))
	copy(tampered[i:], "console=ttyS0 rw")
	res, err := verify(tampered, k.pki.Root.Certificate)
	if err != nil || res.Trusted() || !strings.Contains(res.Signatures[0].Err.Error(), "changed after signing") {
		t.Errorf("tampered .cmdline: %v %+v", err, res)
	}
	if err := sbverify(t, k.files.RootPEM, tampered); err == nil {
		t.Error("sbverify accepted the tampered image")
	}
	// A signature transplanted onto another image: the signed attributes
	// (and so the RSA signature) stay valid, only the digest inside the
	// content is swapped for the tampered image's. The messageDigest
	// attribute no longer matches the content: refused.
	td, _ := Digest(bytes.NewReader(tampered), int64(len(tampered)), crypto.SHA256)
	_, orig := embedded(t, signed)
	forged := bytes.Replace(tampered, orig, td, 1)
	if res, err := verify(forged, k.pki.Root.Certificate); err != nil || res.Trusted() || !strings.Contains(res.Signatures[0].Err.Error(), "messageDigest") {
		t.Errorf("transplanted signature: %v %+v", err, res)
	}
	if err := sbverify(t, k.files.RootPEM, forged); err == nil {
		t.Error("sbverify accepted the transplanted signature")
	}
	// Already signed.
	if _, err := Sign(signed, k.signer, SignOptions{}); !errors.Is(err, ErrSigned) {
		t.Errorf("signing a signed image: %v", err)
	}
	two, err := Sign(signed, foreign.signer, SignOptions{Append: true})
	if err != nil {
		t.Fatal(err)
	}
	res, err = verify(two, foreign.pki.Root.Certificate)
	if err != nil || len(res.Signatures) != 2 || res.Signatures[0].Trusted || !res.Signatures[1].Trusted {
		t.Errorf("appended signature: %v %+v", err, res)
	}
	if err := sbverify(t, k.files.RootPEM, two); err != nil {
		t.Errorf("sbverify of the first of two signatures: %v", err)
	}
	one, err := Sign(two, foreign.signer, SignOptions{Replace: true})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := verify(one, k.pki.Root.Certificate); err != nil || len(res.Signatures) != 1 || res.Trusted() {
		t.Errorf("replaced signature: %v %+v", err, res)
	}
	// Debian's own signature on its kernel parses and matches the kernel.
	res, err = verify(kernel)
	if err != nil || len(res.Signatures) == 0 || res.Signatures[0].Signer == nil || !strings.Contains(res.Signatures[0].Err.Error(), "no trusted certificate") {
		t.Errorf("Debian kernel: %v %+v", err, res)
	}
	if _, err := verify(img); !errors.Is(err, ErrUnsigned) {
		t.Errorf("unsigned: %v", err)
	}
}

func TestSignRefusesKeys(t *testing.T) {
	ec := testpki.MustNew(t, testpki.Options{Key: testpki.ECDSAP256})
	if _, err := Sign(minimalPE(0), Signer{Certificate: ec.Leaf.Certificate, Key: ec.Leaf.Key}, SignOptions{}); !errors.Is(err, ErrKey) {
		t.Errorf("ECDSA key: %v", err)
	}
	a, b := testpki.MustNew(t, testpki.Options{}), testpki.MustNew(t, testpki.Options{})
	if _, err := Sign(minimalPE(0), Signer{Certificate: a.Leaf.Certificate, Key: b.Leaf.Key}, SignOptions{}); !errors.Is(err, ErrKey) {
		t.Errorf("mismatched key: %v", err)
	}
	if _, err := Sign([]byte("MZ"), Signer{Certificate: a.Leaf.Certificate, Key: a.Leaf.Key}, SignOptions{}); !errors.Is(err, ErrImage) {
		t.Errorf("garbage: %v", err)
	}
}
