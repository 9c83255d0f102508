package fsverity

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/testpki"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/pkcs7"
)

func fsverityTool(t *testing.T, args ...string) string {
	t.Helper()
	bin := testutil.RequireTool(t, "fsverity")
	var stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("fsverity %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// testFile writes size pseudo-random bytes (deterministic in seed) to dir.
func testFile(t *testing.T, dir string, size int, seed uint64) string {
	t.Helper()
	p := filepath.Join(dir, fmt.Sprintf("f%d-%d", size, seed))
	if _, err := os.Stat(p); err == nil {
		return p
	}
	data := make([]byte, size)
	r := mrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16)})
	r.Read(data)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDigestMatchesFsverityUtils compares Compute with `fsverity digest` on a
// matrix: every block size from 1 KiB to 64 KiB, both algorithms, no salt,
// a 1-byte salt and a random salt of random length up to 32 bytes, and file
// sizes 0, 1, around one block, around one full level-0 tree block (the
// point where the tree grows a level), around two levels, odd sizes and
// several MiB. The random parts come from a seed printed in the log.
func TestDigestMatchesFsverityUtils(t *testing.T) {
	testutil.RequireHost(t, "userspace only; the VM tier adds no kernel coverage")
	testutil.RequireTool(t, "fsverity")
	seed := mrand.Uint64()
	t.Logf("seed %d", seed)
	rng := mrand.New(mrand.NewPCG(seed, 0))
	dir := t.TempDir()
	common := []int{0, 1, 4095, 4096, 4097, 100000, 3<<20 + 5, 6<<20 + 1234567}
	for range 3 {
		common = append(common, rng.IntN(2<<20))
	}
	ctx := context.Background()
	for bs := MinBlockSize; bs <= MaxBlockSize; bs *= 2 {
		for _, alg := range []HashAlgorithm{SHA256, SHA512} {
			randomSalt := make([]byte, 1+rng.IntN(MaxSaltSize))
			for i := range randomSalt {
				randomSalt[i] = byte(rng.Uint32())
			}
			for _, salt := range [][]byte{nil, {0xab}, randomSalt} {
				hpb := bs / alg.Size()
				sizes := append([]int{}, common...)
				sizes = append(sizes, bs-1, bs, bs+1, 2*bs+rng.IntN(bs))
				for _, level := range []int{hpb * bs, hpb * hpb * bs} {
					if level <= 8<<20 {
						sizes = append(sizes, level-1, level, level+1)
					}
				}
				var paths []string
				for _, s := range sizes {
					paths = append(paths, testFile(t, dir, s, uint64(s)^seed))
				}
				args := []string{"digest", "--hash-alg=" + alg.String(), fmt.Sprintf("--block-size=%d", bs)}
				if salt != nil {
					args = append(args, "--salt="+hex.EncodeToString(salt))
				}
				want := strings.Split(strings.TrimSpace(fsverityTool(t, append(args, paths...)...)), "\n")
				if len(want) != len(paths) {
					t.Fatalf("fsverity printed %d lines for %d files", len(want), len(paths))
				}
				p := Params{Algorithm: alg, BlockSize: bs, Salt: salt}
				for i, path := range paths {
					d, err := ComputeFile(ctx, path, p)
					if err != nil {
						t.Fatal(err)
					}
					if got := d.String() + " " + path; got != want[i] {
						t.Errorf("bs=%d %s salt=%x size=%d:\n got %s\nwant %s", bs, alg, salt, sizes[i], got, want[i])
					}
				}
			}
		}
	}
}

// TestDescriptorMatchesFsverityUtils compares the descriptor bytes with
// `fsverity digest --out-descriptor` and round-trips them through
// ParseDescriptor.
func TestDescriptorMatchesFsverityUtils(t *testing.T) {
	testutil.RequireTool(t, "fsverity")
	dir := t.TempDir()
	for _, c := range []struct {
		size int
		p    Params
	}{
		{0, Params{}},
		{5000, Params{Algorithm: SHA512, BlockSize: 1024, Salt: []byte("salt")}},
		{1 << 20, Params{BlockSize: 65536, Salt: bytes.Repeat([]byte{0xff}, 32)}},
	} {
		path := testFile(t, dir, c.size, 7)
		out := filepath.Join(dir, "desc")
		p, _ := c.p.Normalize()
		args := []string{"digest", "--hash-alg=" + p.Algorithm.String(), fmt.Sprintf("--block-size=%d", p.BlockSize), "--out-descriptor=" + out}
		if len(p.Salt) > 0 {
			args = append(args, "--salt="+hex.EncodeToString(p.Salt))
		}
		fsverityTool(t, append(args, path)...)
		want, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		d, err := ComputeDescriptor(context.Background(), f, c.p, ComputeOptions{Concurrency: 1})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		got, err := d.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("size %d %+v: descriptor\n got %x\nwant %x", c.size, c.p, got, want)
		}
		back, err := ParseDescriptor(want)
		if err != nil {
			t.Fatal(err)
		}
		if again, _ := back.MarshalBinary(); !bytes.Equal(again, want) {
			t.Fatal("ParseDescriptor round trip differs")
		}
	}
}

// TestConcurrencyIndependent: the result must not depend on how many
// goroutines hash, including chunk boundaries inside the tree.
func TestConcurrencyIndependent(t *testing.T) {
	data := make([]byte, 5<<20+3)
	rand.Read(data)
	var first *Descriptor
	for _, c := range []int{1, 2, 3, 8} {
		d, err := ComputeDescriptor(context.Background(), bytes.NewReader(data), Params{BlockSize: 1024, Salt: []byte{1}}, ComputeOptions{Concurrency: c})
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = d
		} else if !bytes.Equal(d.RootHash, first.RootHash) || d.DataSize != first.DataSize {
			t.Fatalf("concurrency %d: root %x, want %x", c, d.RootHash, first.RootHash)
		}
	}
}

// oneByteReader returns at most one byte per Read, to exercise short reads.
type oneByteReader struct{ r *bytes.Reader }

func (o oneByteReader) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return o.r.Read(p)
}

func TestShortReadsAndCancel(t *testing.T) {
	data := make([]byte, 70000)
	rand.Read(data)
	a, err := Compute(context.Background(), bytes.NewReader(data), Params{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Compute(context.Background(), oneByteReader{bytes.NewReader(data)}, Params{})
	if err != nil {
		t.Fatal(err)
	}
	if a.String() != b.String() {
		t.Fatalf("short reads changed the digest: %s vs %s", a, b)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Compute(ctx, bytes.NewReader(data), Params{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled context: %v", err)
	}
}

// TestBoundedMemory: hashing 256 MiB must allocate a small constant, not
// memory proportional to the input or the tree.
func TestBoundedMemory(t *testing.T) {
	testutil.RequireHost(t, "userspace only; the VM tier adds no kernel coverage")
	if testing.Short() {
		t.Skip("hashes 256 MiB")
	}
	r := &eofZero{n: 256 << 20}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if _, err := Compute(context.Background(), r, Params{BlockSize: 1024}); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Fatalf("allocated %d bytes for a 256 MiB input", alloc)
	}
}

type eofZero struct{ n int64 }

func (z *eofZero) Read(p []byte) (int, error) {
	if z.n == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > z.n {
		p = p[:z.n]
	}
	clear(p)
	z.n -= int64(len(p))
	return len(p), nil
}

func TestParamsAndParsing(t *testing.T) {
	bad := []Params{
		{BlockSize: 512}, {BlockSize: 131072}, {BlockSize: 3000},
		{Algorithm: 3}, {Salt: make([]byte, 33)},
	}
	for _, p := range bad {
		if _, err := p.Normalize(); !errors.Is(err, ErrParams) {
			t.Errorf("%+v: %v, want ErrParams", p, err)
		}
		if _, err := Compute(context.Background(), bytes.NewReader(nil), p); !errors.Is(err, ErrParams) {
			t.Errorf("Compute %+v: %v", p, err)
		}
	}
	d, err := ParseDigest("sha256:" + strings.Repeat("AB", 32))
	if err != nil || d.Algorithm != SHA256 || d.String() != "sha256:"+strings.Repeat("ab", 32) {
		t.Fatalf("ParseDigest: %v %v", d, err)
	}
	for _, s := range []string{"sha256", "md5:00", "sha256:zz", "sha512:" + strings.Repeat("00", 32)} {
		if _, err := ParseDigest(s); err == nil {
			t.Errorf("ParseDigest(%q) accepted", s)
		}
	}
	if _, err := ParseHashAlgorithm("sha1"); !errors.Is(err, ErrParams) {
		t.Error("sha1 accepted")
	}
}

// TestSignedPayloadMatchesFsverityUtils: `fsverity digest --for-builtin-sig`
// prints the payload in hex.
func TestSignedPayloadMatchesFsverityUtils(t *testing.T) {
	testutil.RequireTool(t, "fsverity")
	path := testFile(t, t.TempDir(), 12345, 1)
	for _, alg := range []HashAlgorithm{SHA256, SHA512} {
		out := fsverityTool(t, "digest", "--for-builtin-sig", "--compact", "--hash-alg="+alg.String(), path)
		d, err := ComputeFile(context.Background(), path, Params{Algorithm: alg})
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(d.SignedPayload()); got != strings.TrimSpace(out) {
			t.Fatalf("%s payload\n got %s\nwant %s", alg, got, out)
		}
		if len(d.SignedPayload()) != 12+alg.Size() {
			t.Fatalf("payload length %d", len(d.SignedPayload()))
		}
	}
}

// TestSignMatchesFsverityUtils: with RSA keys our signature is the same
// bytes as `fsverity sign`'s; with ECDSA keys each side verifies the other's
// (ours with openssl, fsverity's with pkcs7.Verify).
func TestSignMatchesFsverityUtils(t *testing.T) {
	testutil.RequireHost(t, "userspace only; the VM tier adds no kernel coverage")
	testutil.RequireTool(t, "fsverity")
	testutil.RequireTool(t, "openssl")
	dir := t.TempDir()
	seed := mrand.Uint64()
	t.Logf("seed %d", seed)
	rng := mrand.New(mrand.NewPCG(seed, 1))
	path := testFile(t, dir, rng.IntN(3<<20), seed)
	randomParams := Params{Algorithm: HashAlgorithm(1 + rng.IntN(2)), BlockSize: MinBlockSize << rng.IntN(7)}
	if n := rng.IntN(MaxSaltSize + 1); n > 0 {
		randomParams.Salt = make([]byte, n)
		for i := range randomParams.Salt {
			randomParams.Salt[i] = byte(rng.Uint32())
		}
	}
	for _, kt := range []testpki.KeyType{testpki.RSA2048, testpki.ECDSAP256, testpki.ECDSAP384} {
		p := testpki.MustNew(t, testpki.Options{Key: kt})
		f := p.MustWriteDir(t, t.TempDir())
		signer, err := pkcs7.LoadSigner(f.KeyPEM, f.CertPEM)
		if err != nil {
			t.Fatal(err)
		}
		for _, params := range []Params{{}, {Algorithm: SHA512, BlockSize: 1024, Salt: []byte("pepper")}, randomParams} {
			np, _ := params.Normalize()
			name := fmt.Sprintf("%s/%s/%d/salt=%x", kt, np.Algorithm, np.BlockSize, np.Salt)
			d, err := ComputeFile(context.Background(), path, params)
			if err != nil {
				t.Fatal(err)
			}
			toolSig := filepath.Join(dir, "tool.sig")
			args := []string{"sign", path, toolSig, "--key=" + f.KeyPEM, "--cert=" + f.CertPEM,
				"--hash-alg=" + np.Algorithm.String(), fmt.Sprintf("--block-size=%d", np.BlockSize)}
			if len(np.Salt) > 0 {
				args = append(args, "--salt="+hex.EncodeToString(np.Salt))
			}
			out := fsverityTool(t, args...)
			if want := fmt.Sprintf("Signed file '%s' (%s)\n", path, d); out != want {
				t.Fatalf("%s: fsverity sign printed %q, want %q", name, out, want)
			}
			theirs, err := os.ReadFile(toolSig)
			if err != nil {
				t.Fatal(err)
			}
			ours, err := Sign(d, signer, SignOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if kt == testpki.RSA2048 && !bytes.Equal(ours, theirs) {
				t.Fatalf("%s: signature differs from fsverity sign's\n ours %x\ntheirs %x", name, ours, theirs)
			}
			// The .fs-verity keyring holds the signer's own certificate;
			// through the CA alone the kernel (and Verify) refuse.
			keyring := x509.NewCertPool()
			keyring.AddCert(p.Leaf.Certificate)
			vo := pkcs7.VerifyOptions{Roots: p.Roots(), Certificates: []*x509.Certificate{p.Leaf.Certificate}}
			if _, err := VerifySignature(d, theirs, vo); !errors.Is(err, pkcs7.ErrKernelIncompatible) {
				t.Fatalf("%s: nocerts signature trusted through the CA: %v", name, err)
			}
			vo.Roots = keyring
			if _, err := VerifySignature(d, theirs, vo); err != nil {
				t.Fatalf("%s: fsverity sign's signature: %v", name, err)
			}
			if _, err := VerifySignature(d, ours, vo); err != nil {
				t.Fatalf("%s: our signature: %v", name, err)
			}
			payload := filepath.Join(dir, "payload")
			if err := os.WriteFile(payload, d.SignedPayload(), 0o644); err != nil {
				t.Fatal(err)
			}
			sigPath := filepath.Join(dir, "ours.sig")
			if err := os.WriteFile(sigPath, ours, 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", sigPath,
				"-content", payload, "-certfile", f.CertPEM, "-CAfile", f.RootPEM, "-purpose", "any", "-out", os.DevNull).CombinedOutput(); err != nil {
				t.Fatalf("%s: openssl rejects our signature: %v %s", name, err, out)
			}
			// A signature over another file's digest must not verify.
			other := d
			other.Sum = append([]byte{}, d.Sum...)
			other.Sum[0] ^= 1
			if _, err := VerifySignature(other, ours, vo); !errors.Is(err, pkcs7.ErrBadSignature) {
				t.Fatalf("%s: signature verified for another digest: %v", name, err)
			}
		}
	}
}
