package pkcs7

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/intact-project/intact/internal/testpki"
	"github.com/intact-project/intact/internal/testutil"
)

// openssl runs the reference tool and returns stdout, failing the test with
// stderr on error.
func openssl(t *testing.T, args ...string) []byte {
	t.Helper()
	bin := testutil.RequireTool(t, "openssl")
	var stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// opensslErr runs openssl and returns its error (nil on success).
func opensslErr(t *testing.T, args ...string) error {
	t.Helper()
	bin := testutil.RequireTool(t, "openssl")
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// opensslVerify verifies sig with `openssl cms -verify` against the PKI's
// root and returns the content openssl says is signed.
func opensslVerify(t *testing.T, f testpki.Files, sig, content []byte, extra ...string) []byte {
	t.Helper()
	dir := t.TempDir()
	sigPath := filepath.Join(dir, "sig.der")
	outPath := filepath.Join(dir, "out")
	if err := os.WriteFile(sigPath, sig, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"cms", "-verify", "-binary", "-inform", "DER", "-in", sigPath,
		"-CAfile", f.RootPEM, "-purpose", "any", "-out", outPath}
	if content != nil {
		args = append(args, "-content", writeTemp(t, "content", content))
	}
	args = append(args, extra...)
	openssl(t, args...)
	out, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var hashes = []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512}

func TestSignVerifiesWithOpenSSL(t *testing.T) {
	testutil.RequireTool(t, "openssl")
	content := []byte("4392d6e3a1b0c2d8f7e6a5b4c3d2e1f00112233445566778899aabbccddeeff0")
	for _, kt := range []testpki.KeyType{testpki.RSA2048, testpki.RSA4096, testpki.ECDSAP256, testpki.ECDSAP384} {
		for _, depth := range []int{1, 2} {
			if kt == testpki.RSA4096 && depth == 2 {
				continue // key generation is slow; depth is covered by the others
			}
			p := testpki.MustNew(t, testpki.Options{Key: kt, Depth: depth})
			f := p.MustWriteDir(t, t.TempDir())
			for i, h := range hashes {
				for _, attached := range []bool{false, true} {
					for _, noCerts := range []bool{false, true} {
						opts := SignOptions{Hash: h, Attached: attached, NoCerts: noCerts, Chain: p.Chain(), SignerID: SignerID(i % 2)}
						name := fmt.Sprintf("%s/depth%d/%v/attached=%v/nocerts=%v/sid=%d", kt, depth, h, attached, noCerts, opts.SignerID)
						t.Run(name, func(t *testing.T) {
							sig, err := Sign(content, p.Leaf.Certificate, p.Leaf.Key, opts)
							if err != nil {
								t.Fatal(err)
							}
							checkStructure(t, sig, p, opts, content)

							var extra []string
							if noCerts {
								// openssl needs the signer from outside. It uses
								// -certfile only to find signers, not to build
								// chains, so the intermediate must be trusted
								// directly (as when it is in the kernel keyring).
								extra = append(extra, "-certfile", f.CertPEM)
								if depth == 2 {
									extra = append(extra, "-CAfile", writeTemp(t, "ca.pem", append(p.Root.CertPEM(), p.ChainPEM()...)))
								}
							}
							var detached []byte
							if !attached {
								detached = content
							}
							got := opensslVerify(t, f, sig, detached, extra...)
							if !bytes.Equal(got, content) {
								t.Fatalf("openssl verified content %q, want %q", got, content)
							}

							vo := VerifyOptions{Roots: p.Roots(), Content: detached}
							if noCerts {
								vo.Certificates = []*x509.Certificate{p.Leaf.Certificate}
								vo.Intermediates = p.Chain()
							}
							wantChain := depth + 1
							if noCerts || opts.SignerID == SubjectKeyID {
								// Linux cannot reach such a signer through the
								// message's certificates: only its own key in the
								// keyring makes it trusted.
								if _, err := Verify(sig, vo); !errors.Is(err, ErrKernelIncompatible) {
									t.Fatalf("Verify against the CA: %v, want ErrKernelIncompatible", err)
								}
								vo.Roots = x509.NewCertPool()
								vo.Roots.AddCert(p.Leaf.Certificate)
								wantChain = 1
							}
							v, err := Verify(sig, vo)
							if err != nil {
								t.Fatalf("Verify: %v", err)
							}
							if !v.Signer.Equal(p.Leaf.Certificate) || !bytes.Equal(v.Content, content) || v.Hash != h {
								t.Fatalf("Verify returned signer %v content %q hash %v", v.Signer.Subject, v.Content, v.Hash)
							}
							if len(v.Chains) == 0 || len(v.Chains[0]) != wantChain {
								t.Fatalf("chain %v, want length %d", v.Chains, wantChain)
							}

							// The same message must fail for other content.
							if !attached {
								vo.Content = append([]byte{}, content...)
								vo.Content[0] ^= 1
								if _, err := Verify(sig, vo); !errors.Is(err, ErrBadSignature) {
									t.Fatalf("Verify of altered content: %v, want ErrBadSignature", err)
								}
								args := append([]string{"cms", "-verify", "-binary", "-inform", "DER",
									"-in", writeTemp(t, "sig", sig), "-content", writeTemp(t, "c", vo.Content),
									"-CAfile", f.RootPEM, "-purpose", "any", "-out", os.DevNull}, extra...)
								if err := opensslErr(t, args...); err == nil || !strings.Contains(err.Error(), "content verify error") {
									t.Fatalf("openssl on altered content: %v, want a content verify error", err)
								}
							}
						})
					}
				}
			}
		}
	}
}

// checkStructure parses a message we made and checks the kernel profile.
func checkStructure(t *testing.T, sig []byte, p *testpki.PKI, opts SignOptions, content []byte) {
	t.Helper()
	sd, err := Parse(sig)
	if err != nil {
		t.Fatalf("Parse of our own output: %v", err)
	}
	wantVersion := 1
	if opts.SignerID == SubjectKeyID {
		wantVersion = 3
	}
	if sd.Version != wantVersion || len(sd.Signers) != 1 || sd.Signers[0].Version != wantVersion {
		t.Fatalf("versions: SignedData %d, signers %d", sd.Version, len(sd.Signers))
	}
	if !sd.ContentType.Equal(OIDData) {
		t.Fatalf("content type %v", sd.ContentType)
	}
	if opts.Attached != !sd.Detached() || (opts.Attached && !bytes.Equal(sd.Content, content)) {
		t.Fatalf("attached content %q, want attached=%v", sd.Content, opts.Attached)
	}
	s := sd.Signers[0]
	if s.SignedAttributes != nil || s.HasUnsignedAttributes {
		t.Fatal("message has attributes")
	}
	if s.Hash != opts.Hash {
		t.Fatalf("hash %v, want %v", s.Hash, opts.Hash)
	}
	switch p.Leaf.Certificate.PublicKeyAlgorithm {
	case x509.RSA:
		if !s.SignatureAlgorithm.Equal(OIDRSAEncryption) {
			t.Fatalf("RSA signature algorithm %v, want rsaEncryption", s.SignatureAlgorithm)
		}
	case x509.ECDSA:
		if !s.SignatureAlgorithm.Equal(ecdsaOIDByHash(opts.Hash)) {
			t.Fatalf("ECDSA signature algorithm %v", s.SignatureAlgorithm)
		}
	}
	if opts.NoCerts {
		if len(sd.Certificates) != 0 {
			t.Fatalf("%d certificates with NoCerts", len(sd.Certificates))
		}
	} else {
		// CertificateSet is a SET OF: DER order, not signer first.
		want := append([]*x509.Certificate{p.Leaf.Certificate}, p.Chain()...)
		if len(sd.Certificates) != len(want) {
			t.Fatalf("%d certificates, want %d", len(sd.Certificates), len(want))
		}
		for _, w := range want {
			if !slices.ContainsFunc(sd.Certificates, w.Equal) {
				t.Fatalf("certificate %v missing", w.Subject)
			}
		}
		if !slices.IsSortedFunc(sd.Certificates, func(a, b *x509.Certificate) int { return bytes.Compare(a.Raw, b.Raw) }) {
			t.Fatal("certificates not in DER SET OF order")
		}
	}
	if !s.matches(p.Leaf.Certificate) {
		t.Fatal("signer identifier does not name the leaf")
	}
}

// TestByteIdenticalToOpenSSLSmime: RSA PKCS#1 v1.5 is deterministic, so our
// DER must equal `openssl smime -sign -noattr -binary -outform der` for the
// same key, certificate, content and options.
func TestByteIdenticalToOpenSSLSmime(t *testing.T) {
	for _, depth := range []int{1, 2} {
		p := testpki.MustNew(t, testpki.Options{Key: testpki.RSA2048, Depth: depth})
		f := p.MustWriteDir(t, t.TempDir())
		content := []byte("root hash\x00with\nbinary\r\nbytes")
		in := writeTemp(t, "in", content)
		for _, h := range hashes {
			for _, attached := range []bool{false, true} {
				for _, noCerts := range []bool{false, true} {
					t.Run(fmt.Sprintf("depth%d/%v/attached=%v/nocerts=%v", depth, h, attached, noCerts), func(t *testing.T) {
						args := []string{"smime", "-sign", "-noattr", "-binary", "-outform", "der",
							"-in", in, "-signer", f.CertPEM, "-inkey", f.KeyPEM, "-md", strings.ToLower(strings.ReplaceAll(h.String(), "-", ""))}
						if attached {
							args = append(args, "-nodetach")
						}
						if noCerts {
							args = append(args, "-nocerts")
						} else if depth == 2 {
							args = append(args, "-certfile", f.ChainPEM)
						}
						want := openssl(t, args...)
						got, err := Sign(content, p.Leaf.Certificate, p.Leaf.Key, SignOptions{Hash: h, Attached: attached, NoCerts: noCerts, Chain: p.Chain()})
						if err != nil {
							t.Fatal(err)
						}
						if !bytes.Equal(got, want) {
							t.Fatalf("DER differs from openssl smime at byte %d (ours %d bytes, openssl %d)", firstDiff(got, want), len(got), len(want))
						}
					})
				}
			}
		}
	}
}

// TestStructureMatchesOpenSSLForECDSA: ECDSA signatures are randomized, so
// compare everything but the signature value.
func TestStructureMatchesOpenSSLForECDSA(t *testing.T) {
	for _, kt := range []testpki.KeyType{testpki.ECDSAP256, testpki.ECDSAP384} {
		p := testpki.MustNew(t, testpki.Options{Key: kt})
		f := p.MustWriteDir(t, t.TempDir())
		content := []byte("abc")
		in := writeTemp(t, "in", content)
		for _, h := range hashes {
			want := openssl(t, "smime", "-sign", "-noattr", "-binary", "-outform", "der",
				"-in", in, "-signer", f.CertPEM, "-inkey", f.KeyPEM, "-md", strings.ToLower(strings.ReplaceAll(h.String(), "-", "")))
			got, err := Sign(content, p.Leaf.Certificate, p.Leaf.Key, SignOptions{Hash: h})
			if err != nil {
				t.Fatal(err)
			}
			a, err := Parse(got)
			if err != nil {
				t.Fatal(err)
			}
			b, err := Parse(want)
			if err != nil {
				t.Fatal(err)
			}
			a.Signers[0].Signature, b.Signers[0].Signature = nil, nil
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("%s %v: structure differs from openssl smime\nours:    %+v\nopenssl: %+v", kt, h, a.Signers[0], b.Signers[0])
			}
			// The encoding outside the signature must be identical too:
			// cut the signature OCTET STRING (the last element) from both.
			if !bytes.Equal(stripLastElement(t, got), stripLastElement(t, want)) {
				t.Fatalf("%s %v: DER outside the signature differs", kt, h)
			}
		}
	}
}

// stripLastElement returns the DER of a message with the signature value
// and every length field dropped, by re-encoding the nested structure with
// the signature replaced by nothing and lengths zeroed.
func stripLastElement(t *testing.T, der []byte) []byte {
	t.Helper()
	var out []byte
	var walk func(b []byte, depth int)
	walk = func(b []byte, depth int) {
		for len(b) > 0 {
			var rv asn1.RawValue
			rest, err := asn1.Unmarshal(b, &rv)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, byte(rv.Class<<6|rv.Tag), byte(depth))
			switch {
			case rv.IsCompound:
				walk(rv.Bytes, depth+1)
			case rv.Tag == asn1.TagOctetString && len(rv.Bytes) > 60 && len(rest) == 0:
				// the signature value: skip
			default:
				out = append(out, rv.Bytes...)
			}
			b = rest
		}
	}
	walk(der, 0)
	return out
}

func TestVerifyOpenSSLBlobs(t *testing.T) {
	content := []byte("policy_name=test policy_version=0.0.1\nDEFAULT action=ALLOW\n")
	for _, kt := range []testpki.KeyType{testpki.RSA2048, testpki.ECDSAP256} {
		p := testpki.MustNew(t, testpki.Options{Key: kt, Depth: 2})
		f := p.MustWriteDir(t, t.TempDir())
		in := writeTemp(t, "in", content)
		base := []string{"-binary", "-in", in, "-signer", f.CertPEM, "-inkey", f.KeyPEM, "-certfile", f.ChainPEM, "-outform", "DER"}
		cases := []struct {
			name     string
			args     []string
			attached bool
			allow    bool
			wantErr  error
		}{
			{"smime-noattr", []string{"smime", "-sign", "-noattr"}, false, false, nil},
			{"smime-noattr-nodetach", []string{"smime", "-sign", "-noattr", "-nodetach", "-nosmimecap"}, true, false, nil},
			{"cms-noattr", []string{"cms", "-sign", "-noattr"}, false, false, nil},
			{"cms-noattr-keyid", []string{"cms", "-sign", "-noattr", "-keyid"}, false, false, nil},
			{"cms-noattr-nodetach-stream-ber", []string{"cms", "-sign", "-noattr", "-nodetach", "-stream"}, true, false, nil},
			{"cms-attrs-nosmimecap", []string{"cms", "-sign", "-nosmimecap"}, false, true, nil},
			{"cms-attrs-nosmimecap-nodetach", []string{"cms", "-sign", "-nosmimecap", "-nodetach"}, true, true, nil},
			{"cms-attrs-nosmimecap-not-allowed", []string{"cms", "-sign", "-nosmimecap"}, false, false, ErrSignedAttributes},
			{"cms-attrs-smimecap", []string{"cms", "-sign"}, false, true, ErrKernelIncompatible},
			{"cms-sha1", []string{"cms", "-sign", "-noattr", "-md", "sha1"}, false, false, ErrUnsupported},
			{"cms-sha512", []string{"cms", "-sign", "-noattr", "-md", "sha512"}, false, false, nil},
		}
		if kt == testpki.RSA2048 {
			cases = append(cases, struct {
				name     string
				args     []string
				attached bool
				allow    bool
				wantErr  error
			}{"cms-pss", []string{"cms", "-sign", "-noattr", "-keyopt", "rsa_padding_mode:pss"}, false, false, ErrUnsupported})
		}
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s/%s", kt, c.name), func(t *testing.T) {
				// Options such as -keyopt must follow -signer/-inkey.
				blob := openssl(t, append(append(append([]string{}, c.args[:2]...), base...), c.args[2:]...)...)
				vo := VerifyOptions{Roots: p.Roots(), AllowSignedAttributes: c.allow}
				if slices.Contains(c.args, "-keyid") {
					// Linux matches a subjectKeyIdentifier signer only
					// against keyring keys: trusted through the CA it is
					// refused, trusted directly it verifies.
					vo.Content = content
					if _, err := Verify(blob, vo); !errors.Is(err, ErrKernelIncompatible) {
						t.Fatalf("keyid signer through the CA: %v, want ErrKernelIncompatible", err)
					}
					vo.Roots = x509.NewCertPool()
					vo.Roots.AddCert(p.Leaf.Certificate)
				}
				if !c.attached {
					vo.Content = content
				}
				v, err := Verify(blob, vo)
				if c.wantErr != nil {
					if !errors.Is(err, c.wantErr) {
						t.Fatalf("Verify: %v, want %v", err, c.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if !v.Signer.Equal(p.Leaf.Certificate) || !bytes.Equal(v.Content, content) {
					t.Fatalf("signer %v content %q", v.Signer.Subject, v.Content)
				}
				if strings.Contains(c.name, "stream") && blob[1] != 0x80 {
					t.Fatalf("expected openssl -stream to write BER with indefinite lengths, got %x", blob[:4])
				}
				// Wrong content must fail, attributes or not.
				if !c.attached {
					vo.Content = []byte("other")
					if _, err := Verify(blob, vo); !errors.Is(err, ErrBadSignature) {
						t.Fatalf("Verify with wrong content: %v", err)
					}
				}
			})
		}
	}
}

// TestDetachedBER: sign-file writes detached messages in BER with
// indefinite lengths (CMS_STREAM|CMS_DETACHED). openssl's command line only
// streams attached messages, so cut the content out of one: the signature
// does not cover the encoding, and openssl must still verify the result.
func TestDetachedBER(t *testing.T) {
	p := testpki.MustNew(t, testpki.Options{Key: testpki.RSA2048})
	f := p.MustWriteDir(t, t.TempDir())
	content := []byte("0123456789abcdef")
	in := writeTemp(t, "in", content)
	for _, extra := range [][]string{nil, {"-keyid", "-nocerts"}} {
		args := append([]string{"cms", "-sign", "-noattr", "-nodetach", "-stream", "-binary", "-outform", "DER",
			"-in", in, "-signer", f.CertPEM, "-inkey", f.KeyPEM}, extra...)
		blob := openssl(t, args...)
		wrapped := append(append([]byte{0xa0, 0x80, 0x24, 0x80, 0x04, byte(len(content))}, content...), 0, 0, 0, 0)
		if bytes.Count(blob, wrapped) != 1 {
			t.Fatalf("streamed content not found in %x", blob)
		}
		detached := bytes.Replace(blob, wrapped, nil, 1)
		opensslVerify(t, f, detached, content, "-certfile", f.CertPEM)
		sd, err := Parse(detached)
		if err != nil {
			t.Fatal(err)
		}
		if !sd.Detached() {
			t.Fatal("not detached after cutting the content")
		}
		leafRoot := x509.NewCertPool()
		leafRoot.AddCert(p.Leaf.Certificate)
		vo := VerifyOptions{Roots: p.Roots(), Content: content, Certificates: []*x509.Certificate{p.Leaf.Certificate}}
		if extra != nil {
			vo.Roots = leafRoot // -keyid -nocerts: only a directly trusted key works
		}
		if _, err := sd.Verify(vo); err != nil {
			t.Fatalf("Verify %v: %v", extra, err)
		}
	}
}

func TestVerifyRejects(t *testing.T) {
	p := testpki.MustNew(t, testpki.Options{Key: testpki.RSA2048})
	other := testpki.MustNew(t, testpki.Options{Key: testpki.RSA2048})
	content := []byte("abc")
	sig, err := Sign(content, p.Leaf.Certificate, p.Leaf.Key, SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	attached, err := Sign(content, p.Leaf.Certificate, p.Leaf.Key, SignOptions{Attached: true})
	if err != nil {
		t.Fatal(err)
	}
	nocerts, err := Sign(content, p.Leaf.Certificate, p.Leaf.Key, SignOptions{NoCerts: true})
	if err != nil {
		t.Fatal(err)
	}
	// sha256WithRSAEncryption in place of rsaEncryption (same length):
	// valid CMS, rejected by the kernel.
	combined := append([]byte{}, sig...)
	i := bytes.LastIndex(sig, mustDER(t, OIDRSAEncryption))
	if i < 0 {
		t.Fatal("OID not found in signature")
	}
	copy(combined[i:], mustDER(t, OIDSHA256WithRSA))
	tampered := append([]byte{}, sig...)
	tampered[len(tampered)-1] ^= 1

	cases := []struct {
		name string
		blob []byte
		opts VerifyOptions
		want error
	}{
		{"no roots", sig, VerifyOptions{Content: content}, ErrUntrusted},
		{"foreign root", sig, VerifyOptions{Roots: other.Roots(), Content: content}, ErrUntrusted},
		{"no content", sig, VerifyOptions{Roots: p.Roots()}, ErrContent},
		{"content twice", attached, VerifyOptions{Roots: p.Roots(), Content: content}, ErrContent},
		{"wrong content", sig, VerifyOptions{Roots: p.Roots(), Content: []byte("abd")}, ErrBadSignature},
		{"tampered", tampered, VerifyOptions{Roots: p.Roots(), Content: content}, ErrBadSignature},
		{"nocerts without cert", nocerts, VerifyOptions{Roots: p.Roots(), Content: content}, ErrSignerNotFound},
		{"nocerts wrong cert", nocerts, VerifyOptions{Roots: p.Roots(), Content: content, Certificates: []*x509.Certificate{other.Leaf.Certificate}}, ErrSignerNotFound},
		{"combined RSA OID", combined, VerifyOptions{Roots: p.Roots(), Content: content}, ErrKernelIncompatible},
		{"key usage", sig, VerifyOptions{Roots: p.Roots(), Content: content, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ErrUntrusted},
		{"truncated", sig[:len(sig)-3], VerifyOptions{Roots: p.Roots(), Content: content}, ErrMalformed},
		{"trailing", append(append([]byte{}, sig...), 0), VerifyOptions{Roots: p.Roots(), Content: content}, ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Verify(c.blob, c.opts)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
	// Trusting the leaf itself (a key in the kernel's keyring) works, also
	// for a message without certificates.
	leafOnly := x509.NewCertPool()
	leafOnly.AddCert(p.Leaf.Certificate)
	if _, err := Verify(nocerts, VerifyOptions{Roots: leafOnly, Content: content, Certificates: []*x509.Certificate{p.Leaf.Certificate}}); err != nil {
		t.Fatalf("leaf as trust anchor: %v", err)
	}
	// An empty detached content is signable and verifiable.
	empty, err := Sign(nil, p.Leaf.Certificate, p.Leaf.Key, SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(empty, VerifyOptions{Roots: p.Roots(), Content: []byte{}}); err != nil {
		t.Fatalf("empty content: %v", err)
	}
}

// TestKernelChainRules: Linux chains only through embedded certificates, so
// an intermediate supplied only from outside does not make a signer
// trusted; embedding it does.
func TestKernelChainRules(t *testing.T) {
	p := testpki.MustNew(t, testpki.Options{Key: testpki.ECDSAP256, Depth: 2})
	content := []byte("x")
	bare, err := Sign(content, p.Leaf.Certificate, p.Leaf.Key, SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(bare, VerifyOptions{Roots: p.Roots(), Content: content}); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("no intermediate at all: %v, want ErrUntrusted", err)
	}
	if _, err := Verify(bare, VerifyOptions{Roots: p.Roots(), Content: content, Intermediates: p.Chain()}); !errors.Is(err, ErrKernelIncompatible) {
		t.Fatalf("intermediate only from outside: %v, want ErrKernelIncompatible", err)
	}
	// The intermediate itself as a trust anchor (a key in the kernel's
	// keyring) works without embedding it.
	inter := x509.NewCertPool()
	inter.AddCert(p.Intermediate.Certificate)
	if _, err := Verify(bare, VerifyOptions{Roots: inter, Content: content}); err != nil {
		t.Fatalf("intermediate as anchor: %v", err)
	}
	full, err := Sign(content, p.Leaf.Certificate, p.Leaf.Key, SignOptions{Chain: p.Chain()})
	if err != nil {
		t.Fatal(err)
	}
	v, err := Verify(full, VerifyOptions{Roots: p.Roots(), Content: content})
	if err != nil || len(v.Chains[0]) != 3 {
		t.Fatalf("embedded intermediate: %v", err)
	}
}

func TestSignErrors(t *testing.T) {
	p := testpki.MustNew(t, testpki.Options{Key: testpki.ECDSAP256})
	other := testpki.MustNew(t, testpki.Options{Key: testpki.ECDSAP256})
	if _, err := Sign(nil, p.Leaf.Certificate, other.Leaf.Key, SignOptions{}); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("mismatched key: %v", err)
	}
	if _, err := Sign(nil, p.Leaf.Certificate, p.Leaf.Key, SignOptions{Hash: crypto.SHA1}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("SHA-1: %v", err)
	}
	// Keys the kernel cannot verify are refused up front.
	for _, mk := range []func() (crypto.Signer, error){
		func() (crypto.Signer, error) { _, k, err := ed25519.GenerateKey(rand.Reader); return k, err },
		func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P224(), rand.Reader) },
	} {
		k, err := mk()
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := NewSigner(c, k); !errors.Is(err, ErrUnsupported) {
			t.Fatalf("%T key: %v, want ErrUnsupported", k, err)
		}
	}
	s, err := NewSigner(p.Leaf.Certificate, p.Leaf.Key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.SignDigest(make([]byte, 31), SignOptions{}); err == nil {
		t.Fatal("short digest accepted")
	}
	if _, err := s.SignDigest(make([]byte, 32), SignOptions{Attached: true}); !errors.Is(err, ErrContent) {
		t.Fatalf("attached SignDigest: %v", err)
	}
	// SignReader and SignDigest agree with Sign (ECDSA: compare by
	// verification, signatures are randomized).
	content := bytes.Repeat([]byte("x"), 100000)
	sum := crypto.SHA384.New()
	sum.Write(content)
	for _, mk := range []func() ([]byte, error){
		func() ([]byte, error) {
			return s.SignReader(bytes.NewReader(content), SignOptions{Hash: crypto.SHA384})
		},
		func() ([]byte, error) { return s.SignDigest(sum.Sum(nil), SignOptions{Hash: crypto.SHA384}) },
	} {
		sig, err := mk()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Verify(sig, VerifyOptions{Roots: p.Roots(), Content: content}); err != nil {
			t.Fatal(err)
		}
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

func mustDER(t *testing.T, oid asn1.ObjectIdentifier) []byte {
	t.Helper()
	b, err := asn1.Marshal(oid)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// opensslV1Leaf makes a leaf the way 'openssl x509 -req' does without an
// extension file: a version 1 certificate with no extensions, so no
// authorityKeyIdentifier. With ext it adds the extensions of an extfile
// (for the control case).
func opensslV1Leaf(t *testing.T, caCert, caKey, ext string) (keyPath, certPath string) {
	t.Helper()
	openssl := testutil.RequireTool(t, "openssl")
	dir := t.TempDir()
	keyPath, certPath = filepath.Join(dir, "leaf.key"), filepath.Join(dir, "leaf.pem")
	csr := filepath.Join(dir, "leaf.csr")
	run := func(args ...string) {
		if out, err := exec.Command(openssl, args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
	}
	run("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", keyPath, "-out", csr, "-subj", "/CN=openssl leaf")
	args := []string{"x509", "-req", "-in", csr, "-CA", caCert, "-CAkey", caKey, "-set_serial", "7", "-days", "2", "-out", certPath}
	if ext != "" {
		extFile := filepath.Join(dir, "ext.cnf")
		os.WriteFile(extFile, []byte(ext), 0o644)
		args = append(args, "-extfile", extFile)
	}
	run(args...)
	return keyPath, certPath
}

// TestKernelNeedsAuthorityKeyID: Linux links a certificate to its issuer
// only through the certificate's authorityKeyIdentifier, so a signer made
// by 'openssl x509 -req' (v1, no extensions) under a trusted CA gets ENOKEY
// from the kernel: Verify reports ErrKernelIncompatible, naming the
// missing extension, and CheckKernelSigner says so before signing. The same
// leaf with authorityKeyIdentifier=keyid verifies.
func TestKernelNeedsAuthorityKeyID(t *testing.T) {
	p := testpki.MustNew(t, testpki.Options{Key: testpki.RSA2048})
	f := p.MustWriteDir(t, t.TempDir())
	content := []byte("x")
	for _, c := range []struct {
		name, ext string
		ok        bool
	}{
		{"v1", "", false},
		{"akid", "authorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n", true},
	} {
		keyPath, certPath := opensslV1Leaf(t, f.RootPEM, f.RootKey, c.ext)
		s, err := LoadSigner(keyPath, certPath)
		if err != nil {
			t.Fatal(err)
		}
		der, err := s.Sign(content, SignOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = Verify(der, VerifyOptions{Roots: p.Roots(), Content: content})
		cerr := CheckKernelSigner(s.Certificate, nil)
		if c.ok {
			if err != nil || cerr != nil {
				t.Errorf("%s: Verify %v, CheckKernelSigner %v", c.name, err, cerr)
			}
			continue
		}
		for what, e := range map[string]error{"Verify": err, "CheckKernelSigner": cerr} {
			if !errors.Is(e, ErrKernelIncompatible) || !strings.Contains(e.Error(), "authorityKeyIdentifier") {
				t.Errorf("%s: %s: %v, want ErrKernelIncompatible naming authorityKeyIdentifier", c.name, what, e)
			}
		}
	}
	// A self-signed signer trusted directly needs no link.
	if err := CheckKernelSigner(p.Root.Certificate, nil); err != nil {
		t.Errorf("self-signed: %v", err)
	}
}
