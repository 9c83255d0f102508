package kmod

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/internal/testpki"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/internal/vmtest"
	"github.com/intact-project/intact/kmod/kmodtest"
	"github.com/intact-project/intact/pkcs7"
)

// Debian's own modules (from the VM tier's kernel package) and the
// kernel's scripts/sign-file (from linux-kbuild) are the references.
var (
	refOnce    sync.Once
	refModules []string // uncompressed, signature stripped by xz -dc + our Strip
	refErr     error
	kbuild     *vmtest.Kbuild
)

func references(t *testing.T) (*vmtest.Kbuild, []string) {
	t.Helper()
	testutil.RequireHost(t, "needs Debian's kernel packages from the VM cache")
	testutil.RequireTool(t, "xz")
	refOnce.Do(func() {
		ctx := context.Background()
		var a *vmtest.Assets
		if a, refErr = vmtest.Fetch(ctx, vmtest.FetchOptions{}); refErr != nil {
			return
		}
		if kbuild, refErr = vmtest.FetchKbuild(ctx, vmtest.FetchOptions{}); refErr != nil {
			return
		}
		dir, err := os.MkdirTemp("", "kmod-ref-")
		if err != nil {
			refErr = err
			return
		}
		for _, rel := range []string{"kernel/drivers/net/dummy.ko.xz", "kernel/fs/erofs/erofs.ko.xz", "kernel/drivers/block/loop.ko.xz"} {
			out, err := exec.Command("xz", "-dc", filepath.Join(a.ModulesDir(), rel)).Output()
			if err != nil {
				refErr = err
				return
			}
			raw, err := Strip(out)
			if err != nil {
				refErr = err
				return
			}
			p := filepath.Join(dir, strings.TrimSuffix(filepath.Base(rel), ".xz"))
			if err := os.WriteFile(p, raw, 0o644); err != nil {
				refErr = err
				return
			}
			refModules = append(refModules, p)
		}
	})
	if refErr != nil {
		testutil.Unavailable(t, "Debian kernel/kbuild packages: "+refErr.Error())
	}
	return kbuild, refModules
}

// TestNoCertIdenticalToSignFile: `intact module sign --no-cert` is
// scripts/sign-file byte for byte (RSA 2048 and 4096; sha256, sha384 and
// sha512), also with -k (subjectKeyIdentifier).
func TestNoCertIdenticalToSignFile(t *testing.T) {
	k, mods := references(t)
	dir := t.TempDir()
	for _, kt := range []testpki.KeyType{testpki.RSA2048, testpki.RSA4096} {
		pki := testpki.MustNew(t, testpki.Options{Key: kt, Name: "kmod " + string(kt)})
		files := pki.MustWriteDir(t, filepath.Join(dir, string(kt)))
		signer, err := pkcs7.NewSigner(pki.Leaf.Certificate, pki.Leaf.Key)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range []struct {
			name string
			hash crypto.Hash
		}{{"sha256", crypto.SHA256}, {"sha384", crypto.SHA384}, {"sha512", crypto.SHA512}} {
			for _, keyID := range []bool{false, true} {
				for _, mod := range mods {
					raw, err := os.ReadFile(mod)
					if err != nil {
						t.Fatal(err)
					}
					ref := filepath.Join(dir, "ref.ko")
					args := []string{h.name, files.KeyPEM, files.CertPEM, mod, ref}
					if keyID {
						args = append([]string{"-k"}, args...)
					}
					if out, err := exec.Command(k.SignFile, args...).CombinedOutput(); err != nil {
						t.Fatalf("sign-file %v: %v\n%s", args, err, out)
					}
					want, err := os.ReadFile(ref)
					if err != nil {
						t.Fatal(err)
					}
					got, err := Sign(raw, signer, SignOptions{NoCerts: true, Hash: h.hash, KeyID: keyID})
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, want) {
						t.Errorf("%s %s keyid=%v %s: our signed module (%d bytes) differs from sign-file's (%d bytes) at byte %d",
							kt, h.name, keyID, filepath.Base(mod), len(got), len(want), firstDiff(got, want))
					}
				}
			}
		}
	}
}

// TestCertsIdenticalToOpenSSLCMS: with the certificate embedded (the
// default), the PKCS#7 equals `openssl cms -sign -noattr -nosmimecap
// -binary` (sign-file's CMS profile, certificates included).
func TestCertsIdenticalToOpenSSLCMS(t *testing.T) {
	openssl := testutil.RequireTool(t, "openssl")
	_, mods := references(t)
	dir := t.TempDir()
	pki := testpki.MustNew(t, testpki.Options{Key: testpki.RSA2048, Depth: 2, Name: "kmod chain"})
	files := pki.MustWriteDir(t, dir)
	signer, err := pkcs7.NewSigner(pki.Leaf.Certificate, pki.Leaf.Key, pki.Intermediate.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(mods[0])
	if err != nil {
		t.Fatal(err)
	}
	sigPath := filepath.Join(dir, "cms.der")
	cmd := exec.Command(openssl, "cms", "-sign", "-binary", "-noattr", "-nosmimecap", "-md", "sha256", "-outform", "DER",
		"-signer", files.CertPEM, "-inkey", files.KeyPEM, "-certfile", files.ChainPEM, "-in", mods[0], "-out", sigPath)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl cms: %v\n%s", err, out)
	}
	want, _ := os.ReadFile(sigPath)
	got, err := Sign(raw, signer, SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m.Signature.PKCS7, want) {
		t.Errorf("PKCS#7 with certificates differs from openssl cms at byte %d", firstDiff(m.Signature.PKCS7, want))
	}
	if !bytes.Equal(m.Content, raw) {
		t.Error("content changed")
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestVerifyPredictions runs Verify over the cases the VM test measures on
// the real kernel, with the trust the Secure Boot guest has (its db CA),
// and checks the prediction; the VM test then checks that the kernel
// agrees with Verify.
func TestVerifyPredictions(t *testing.T) {
	raw := sampleModule(t)
	db := testpki.MustNew(t, testpki.Options{Key: testpki.RSA2048, Name: "db"})
	inter := testpki.MustNew(t, testpki.Options{Key: testpki.RSA2048, Depth: 2, Name: "chain"})
	rogue := testpki.MustNew(t, testpki.Options{Key: testpki.RSA2048, Name: "rogue"})
	revoked, err := db.IssueLeaf("revoked vendor", testpki.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	mk := func(c *testpki.Cert, chain ...*testpki.Cert) *pkcs7.Signer {
		s, err := pkcs7.NewSigner(c.Certificate, c.Key)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range chain {
			s.Chain = append(s.Chain, x.Certificate)
		}
		return s
	}
	sign := func(s *pkcs7.Signer, o SignOptions) []byte {
		b, err := Sign(raw, s, o)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tampered := sign(mk(db.Leaf), SignOptions{})
	tampered[100] ^= 1
	trust := VerifyOptions{Trusted: []*x509.Certificate{db.Root.Certificate, inter.Root.Certificate}, RevokedTBS: [][32]byte{TBSHash(revoked.Certificate)}}
	cases := []struct {
		name   string
		module []byte
		loads  bool
		errno  linux.Errno
		reason string
	}{
		{"unsigned", raw, false, linux.EKEYREJECTED, "unsigned module"},
		{"db key itself, no certs", sign(mk(db.Root), SignOptions{NoCerts: true}), true, 0, ""},
		{"db key itself, cert embedded", sign(mk(db.Root), SignOptions{}), true, 0, ""},
		{"leaf of db, no certs", sign(mk(db.Leaf), SignOptions{NoCerts: true}), false, linux.EKEYREJECTED, "module with unavailable key"},
		{"leaf of db, cert embedded", sign(mk(db.Leaf), SignOptions{}), true, 0, ""},
		{"leaf of db by keyid, cert embedded", sign(mk(db.Leaf), SignOptions{KeyID: true}), false, linux.EKEYREJECTED, "module with unavailable key"},
		{"leaf under intermediate, chain embedded", sign(mk(inter.Leaf, inter.Intermediate), SignOptions{}), true, 0, ""},
		{"leaf under intermediate, intermediate missing", sign(mk(inter.Leaf), SignOptions{}), false, linux.EKEYREJECTED, "module with unavailable key"},
		{"rogue key", sign(mk(rogue.Leaf), SignOptions{}), false, linux.EKEYREJECTED, "module with unavailable key"},
		{"revoked leaf of db", sign(mk(revoked), SignOptions{}), false, linux.EKEYREJECTED, "blacklisted certificate"},
		{"content changed after signing", tampered, false, linux.EKEYREJECTED, "signature does not verify"},
	}
	for _, c := range cases {
		v, err := Verify(c.module, trust)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if v.Loads != c.loads || v.Errno != c.errno || v.Reason != c.reason {
			t.Errorf("%s: got loads=%v errno=%v reason=%q (%s); want loads=%v errno=%v reason=%q", c.name, v.Loads, v.Errno, v.Reason, v.Detail, c.loads, c.errno, c.reason)
		}
	}
	// Not enforcing: unsigned and unknown keys load, bad signatures do not.
	lax := trust
	lax.NotEnforcing = true
	if v, _ := Verify(raw, lax); !v.Loads {
		t.Errorf("unsigned without enforcement: %+v", v)
	}
	if v, _ := Verify(tampered, lax); v.Loads {
		t.Errorf("tampered without enforcement loads: %+v", v)
	}
	// A revoked trust anchor is no anchor.
	rv := VerifyOptions{Trusted: []*x509.Certificate{db.Root.Certificate}, RevokedTBS: [][32]byte{TBSHash(db.Root.Certificate)}}
	if v, _ := Verify(sign(mk(db.Leaf), SignOptions{}), rv); v.Loads || v.Reason != "module with unavailable key" {
		t.Errorf("revoked anchor: %+v", v)
	}
}

// sampleModule is a real module when the references are available, else
// a minimal ELF relocatable object with a .modinfo section.
func sampleModule(t *testing.T) []byte {
	t.Helper()
	if !testutil.InVM() {
		if _, err := vmtest.RepoRoot("."); err == nil && os.Getenv("INTACT_KMOD_NO_REF") == "" {
			_, mods := references(t)
			b, err := os.ReadFile(mods[0])
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	return kmodtest.Module("sample", "1.0")
}

func TestParseErrors(t *testing.T) {
	raw := kmodtest.Module("x", "1")
	db := testpki.MustNew(t, testpki.Options{Key: testpki.RSA2048})
	s, _ := pkcs7.NewSigner(db.Leaf.Certificate, db.Leaf.Key)
	signed, err := Sign(raw, s, SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Parse(signed)
	if err != nil || !bytes.Equal(m.Content, raw) || m.Signature == nil || m.Signature.IDType != 2 {
		t.Fatalf("round trip: %v %+v", err, m)
	}
	if !bytes.Equal(m.Bytes(), signed) {
		t.Error("Bytes() does not reproduce the file")
	}
	// Length larger than the file.
	bad := append([]byte(nil), signed...)
	bad[len(bad)-len(Marker)-1] = 0xff
	bad[len(bad)-len(Marker)-2] = 0xff
	if _, err := Parse(bad); !errors.Is(err, ErrMalformed) {
		t.Errorf("oversized sig_len: %v", err)
	}
	if v, err := Verify(bad, VerifyOptions{}); err != nil || v.Errno != linux.EBADMSG {
		t.Errorf("Verify of oversized sig_len: %+v %v", v, err)
	}
	// id_type X.509 (the kernel verifies PKCS#7 only).
	bad = append([]byte(nil), signed...)
	bad[len(bad)-len(Marker)-signatureInfoSize+2] = 1
	if v, err := Verify(bad, VerifyOptions{}); err != nil || v.Errno != linux.EBADMSG {
		t.Errorf("id_type 1: %+v %v", v, err)
	}
	if _, err := Sign([]byte("not an elf"), s, SignOptions{}); !errors.Is(err, ErrNotModule) {
		t.Errorf("signing a non-ELF: %v", err)
	}
	if _, err := ReadInfo([]byte("root:x:0:0:root:/root:/bin/sh\n")); !errors.Is(err, ErrNotModule) || !strings.Contains(err.Error(), "not an ELF file") {
		t.Errorf("ReadInfo of a text file: %v", err)
	}
	if _, err := Strip(raw); !errors.Is(err, ErrNotSigned) {
		t.Errorf("Strip of unsigned: %v", err)
	}
	info, err := ReadInfo(signed)
	if err != nil || info.Name != "x" || info.Version != "1" {
		t.Errorf("ReadInfo: %+v %v", info, err)
	}
	// Re-signing replaces; Append keeps the first signature inside.
	again, _ := Sign(signed, s, SignOptions{})
	if m2, _ := Parse(again); !bytes.Equal(m2.Content, raw) {
		t.Error("re-signing did not replace the signature")
	}
	twice, _ := Sign(signed, s, SignOptions{Append: true})
	if m2, _ := Parse(twice); !bytes.Equal(m2.Content, signed) {
		t.Error("Append did not keep the first signature")
	}
}

func TestCompressionRoundTrip(t *testing.T) {
	raw := sampleModule(t)
	for _, c := range []Compression{XZ, Zstd} {
		comp, err := Compress(raw, c)
		if err != nil {
			t.Fatal(err)
		}
		if CompressionOf(comp) != c {
			t.Errorf("%s: magic not recognized", c)
		}
		back, got, err := Decompress(comp)
		if err != nil || got != c || !bytes.Equal(back, raw) {
			t.Errorf("%s: round trip: %v", c, err)
		}
		// The reference tools read what we write.
		tool := map[Compression][]string{XZ: {"xz", "-dc"}, Zstd: {"zstd", "-dcq"}}[c]
		if p, err := exec.LookPath(tool[0]); err == nil {
			cmd := exec.Command(p, tool[1:]...)
			cmd.Stdin = bytes.NewReader(comp)
			out, err := cmd.Output()
			if err != nil || !bytes.Equal(out, raw) {
				t.Errorf("%s cannot read our %s stream: %v", tool[0], c, err)
			}
			if c == XZ {
				lst := exec.Command(p, "--robot", "-lv", "-")
				lst.Stdin = bytes.NewReader(comp)
				if info, err := lst.CombinedOutput(); err == nil && !bytes.Contains(info, []byte("CRC32")) {
					t.Errorf("xz stream without a CRC32 check:\n%s", info)
				}
			}
		} else if testutil.Strict() && !testutil.InVM() {
			// The VM guest carries no xz or zstd; the host tier compares.
			t.Errorf("%s not found", tool[0])
		}
	}
	if _, _, err := Decompress([]byte{0xfd, '7', 'z', 'X', 'Z', 0, 1, 2, 3}); !errors.Is(err, ErrCompression) {
		t.Errorf("corrupt xz: %v", err)
	}
}
