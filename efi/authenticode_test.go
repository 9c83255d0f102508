package efi_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/efi"
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

type keys struct {
	pki    *testpki.PKI
	files  testpki.Files
	signer efi.Signer
}

func newKeys(t *testing.T, name string) keys {
	p := testpki.MustNew(t, testpki.Options{Name: name})
	return keys{pki: p, files: p.MustWriteDir(t, t.TempDir()),
		signer: efi.Signer{Certificate: p.Leaf.Certificate, Key: p.Leaf.Key}}
}

// embedded returns the SpcIndirectDataContent bytes and the digest in the
// first signature of a signed image.
func embedded(t *testing.T, signed []byte) (spc, digest []byte) {
	t.Helper()
	spc, digest, err := efi.EmbeddedSignature(signed)
	if err != nil {
		t.Fatal(err)
	}
	return spc, digest
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
	}{{"uki", img}, {"odd-size", efi.MinimalPE(13)}, {"aligned", efi.MinimalPE(0)}} {
		t.Run(c.name, func(t *testing.T) {
			theirs := sbsign(t, k, c.img)
			spc, digest := embedded(t, theirs)
			d, err := efi.Digest(bytes.NewReader(c.img), int64(len(c.img)), crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			ours, err := efi.Sign(c.img, k.signer, efi.SignOptions{})
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
			res, err := efi.Verify(bytes.NewReader(theirs), int64(len(theirs)), []*x509.Certificate{k.pki.Root.Certificate})
			if err != nil || !res.Trusted() {
				t.Errorf("efi.Verify(sbsign output): %v %+v", err, res)
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
	signed, err := efi.Sign(img, k.signer, efi.SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	again, _ := efi.Sign(img, k.signer, efi.SignOptions{})
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
	verify := func(img []byte, trusted ...*x509.Certificate) (*efi.Result, error) {
		return efi.Verify(bytes.NewReader(img), int64(len(img)), trusted)
	}
	for _, c := range []*x509.Certificate{k.pki.Root.Certificate, k.pki.Leaf.Certificate} {
		if res, err := verify(signed, c); err != nil || !res.Trusted() || len(res.Signatures) != 1 {
			t.Errorf("Verify with %s: %v %+v", c.Subject, err, res)
		}
	}
	if res, err := verify(signed, foreign.pki.Root.Certificate); err != nil || res.Trusted() || !errors.Is(res.Signatures[0].Err, efi.ErrSignature) {
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
	td, _ := efi.Digest(bytes.NewReader(tampered), int64(len(tampered)), crypto.SHA256)
	_, orig := embedded(t, signed)
	forged := bytes.Replace(tampered, orig, td, 1)
	if res, err := verify(forged, k.pki.Root.Certificate); err != nil || res.Trusted() || !strings.Contains(res.Signatures[0].Err.Error(), "messageDigest") {
		t.Errorf("transplanted signature: %v %+v", err, res)
	}
	if err := sbverify(t, k.files.RootPEM, forged); err == nil {
		t.Error("sbverify accepted the transplanted signature")
	}
	// Already signed.
	if _, err := efi.Sign(signed, k.signer, efi.SignOptions{}); !errors.Is(err, efi.ErrSigned) {
		t.Errorf("signing a signed image: %v", err)
	}
	two, err := efi.Sign(signed, foreign.signer, efi.SignOptions{Append: true})
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
	one, err := efi.Sign(two, foreign.signer, efi.SignOptions{Replace: true})
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
	if _, err := verify(img); !errors.Is(err, efi.ErrUnsigned) {
		t.Errorf("unsigned: %v", err)
	}
}

func TestSignRefusesKeys(t *testing.T) {
	ec := testpki.MustNew(t, testpki.Options{Key: testpki.ECDSAP256})
	if _, err := efi.Sign(efi.MinimalPE(0), efi.Signer{Certificate: ec.Leaf.Certificate, Key: ec.Leaf.Key}, efi.SignOptions{}); !errors.Is(err, efi.ErrKey) {
		t.Errorf("ECDSA key: %v", err)
	}
	a, b := testpki.MustNew(t, testpki.Options{}), testpki.MustNew(t, testpki.Options{})
	if _, err := efi.Sign(efi.MinimalPE(0), efi.Signer{Certificate: a.Leaf.Certificate, Key: b.Leaf.Key}, efi.SignOptions{}); !errors.Is(err, efi.ErrKey) {
		t.Errorf("mismatched key: %v", err)
	}
	if _, err := efi.Sign([]byte("MZ"), efi.Signer{Certificate: a.Leaf.Certificate, Key: a.Leaf.Key}, efi.SignOptions{}); !errors.Is(err, efi.ErrImage) {
		t.Errorf("garbage: %v", err)
	}
}
