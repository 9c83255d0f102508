package fsverity

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/testpki"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/pkcs7"
)

// scratchExt4 returns the VM tier's scratch directory on an ext4
// filesystem with the verity feature. Outside the VM the test is skipped;
// inside, a missing directory is a harness bug and fails the test.
func scratchExt4(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("INTACT_VM_SCRATCH_EXT4")
	if dir == "" {
		if testutil.InVM() {
			t.Fatal("INTACT_VM_SCRATCH_EXT4 is not set inside the VM: the harness must mount an ext4 made with `mkfs.ext4 -O verity` and name it there")
		}
		testutil.RequireVM(t)
	}
	d, err := os.MkdirTemp(dir, "fsverity-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func writeRandom(t *testing.T, path string, size int) {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestEnableMeasureInVM enables fs-verity through the real kernel (ext4,
// Linux 6.12 in the VM tier) and checks that the kernel's measurement and
// descriptor equal what Compute calculates offline, for several parameter
// sets, and that the kernel then refuses writes.
func TestEnableMeasureInVM(t *testing.T) {
	dir := scratchExt4(t)
	ctx := context.Background()
	cases := []struct {
		size int
		p    Params
	}{
		{0, Params{}},
		{1, Params{}},
		{4096, Params{}},
		{3<<20 + 17, Params{}},
		{1 << 20, Params{Algorithm: SHA512}},
		{200001, Params{BlockSize: 1024, Salt: []byte("salty")}},
		{70000, Params{Algorithm: SHA512, BlockSize: 2048, Salt: bytes.Repeat([]byte{7}, 32)}},
	}
	for i, c := range cases {
		t.Run(fmt.Sprintf("%d/size%d", i, c.size), func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("file%d", i))
			writeRandom(t, path, c.size)
			want, err := ComputeFile(ctx, path, c.p)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := Measure(f); !errors.Is(err, ErrNotVerity) {
				t.Fatalf("Measure before Enable: %v, want ErrNotVerity", err)
			}
			if err := Enable(f, EnableOptions{Params: c.p}); err != nil {
				t.Fatalf("Enable: %v", err)
			}
			got, err := Measure(f)
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != want.String() {
				t.Fatalf("kernel measured %s, Compute gave %s", got, want)
			}
			desc, err := ReadDescriptor(f)
			if err != nil {
				t.Fatal(err)
			}
			if d, _ := desc.Digest(); d.String() != want.String() {
				t.Fatalf("kernel descriptor hashes to %s, want %s", d, want)
			}
			if sig, err := ReadSignature(f); err != nil || sig != nil {
				t.Fatalf("ReadSignature of an unsigned file: %x, %v", sig, err)
			}
			if err := Enable(f, EnableOptions{Params: c.p}); err == nil {
				t.Fatal("second Enable succeeded")
			}
			if w, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
				w.Close()
				t.Fatal("verity file opened for writing")
			}
			if bin, err := exec.LookPath("fsverity"); err == nil {
				out, err := exec.Command(bin, "measure", path).Output()
				if err != nil || strings.Fields(string(out))[0] != want.String() {
					t.Fatalf("fsverity measure: %q %v, want %s", out, err, want)
				}
			}
		})
	}
}

// TestEnableSignedInVM enables verity with builtin signatures made by Sign,
// for RSA, ECDSA P-256 and P-384 keys, sha256 and sha512 files, with and
// without the embedded certificate. The kernel checks them against the
// .fs-verity keyring, so the test loads each signing certificate there with
// keyctl (keyutils) first; it needs CONFIG_FS_VERITY_BUILTIN_SIGNATURES. A
// signature over another digest and one by a key not in the keyring must be
// refused.
func TestEnableSignedInVM(t *testing.T) {
	dir := scratchExt4(t)
	if _, err := os.Stat("/proc/sys/fs/verity/require_signatures"); err != nil {
		testutil.Unavailable(t, "kernel without CONFIG_FS_VERITY_BUILTIN_SIGNATURES (/proc/sys/fs/verity/require_signatures absent)")
	}
	keyctl := testutil.RequireTool(t, "keyctl")
	stranger := testpki.MustNew(t, testpki.Options{Key: testpki.ECDSAP256})
	strangerSigner, err := pkcs7.NewSigner(stranger.Leaf.Certificate, stranger.Leaf.Key)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, kt := range []testpki.KeyType{testpki.RSA2048, testpki.ECDSAP256, testpki.ECDSAP384} {
		p := testpki.MustNew(t, testpki.Options{Key: kt})
		cmd := exec.Command(keyctl, "padd", "asymmetric", "", "%keyring:.fs-verity")
		cmd.Stdin = bytes.NewReader(p.Leaf.DER())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("keyctl padd %s into .fs-verity: %v %s", kt, err, out)
		}
		signer, err := pkcs7.NewSigner(p.Leaf.Certificate, p.Leaf.Key)
		if err != nil {
			t.Fatal(err)
		}
		for _, params := range []Params{{}, {Algorithm: SHA512, BlockSize: 1024, Salt: []byte{1, 2, 3}}} {
			for _, embed := range []bool{false, true} {
				n++
				name := fmt.Sprintf("%s/%s/embed=%v", kt, params.Algorithm, embed)
				path := filepath.Join(dir, fmt.Sprintf("signed%d", n))
				writeRandom(t, path, 100000+n)
				d, err := ComputeFile(context.Background(), path, params)
				if err != nil {
					t.Fatal(err)
				}
				wrong := Digest{Algorithm: d.Algorithm, Sum: append([]byte{}, d.Sum...)}
				wrong.Sum[0] ^= 1
				badSig, err := Sign(wrong, signer, SignOptions{EmbedCertificate: embed})
				if err != nil {
					t.Fatal(err)
				}
				foreignSig, err := Sign(d, strangerSigner, SignOptions{EmbedCertificate: embed})
				if err != nil {
					t.Fatal(err)
				}
				sig, err := Sign(d, signer, SignOptions{EmbedCertificate: embed})
				if err != nil {
					t.Fatal(err)
				}
				f, err := os.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				if err := Enable(f, EnableOptions{Params: params, Signature: badSig}); err == nil {
					t.Fatalf("%s: kernel accepted a signature over another digest", name)
				}
				if err := Enable(f, EnableOptions{Params: params, Signature: foreignSig}); err == nil {
					t.Fatalf("%s: kernel accepted a signature by a key outside .fs-verity", name)
				}
				if err := Enable(f, EnableOptions{Params: params, Signature: sig}); err != nil {
					t.Fatalf("%s: Enable with our signature: %v", name, err)
				}
				got, err := ReadSignature(f)
				if err != nil || !bytes.Equal(got, sig) {
					t.Fatalf("%s: ReadSignature: %v, equal=%v", name, err, bytes.Equal(got, sig))
				}
				if m, err := Measure(f); err != nil || m.String() != d.String() {
					t.Fatalf("%s: measured %s (%v), want %s", name, m, err, d)
				}
				f.Close()
			}
		}
	}
}

// TestEnableOutsideVerityFilesystem runs anywhere: on the test's temporary
// directory (tmpfs, or a filesystem without the verity feature, or a
// kernel without fs-verity) Enable must fail with a classified error and
// leave the file alone. Should the filesystem support verity, the kernel's
// measurement must equal Compute's instead.
func TestEnableOutsideVerityFilesystem(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	writeRandom(t, path, 10000)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = Enable(f, EnableOptions{})
	if err != nil {
		if !errors.Is(err, ErrNotSupported) && !strings.Contains(err.Error(), "FS_IOC_ENABLE_VERITY") {
			t.Fatalf("Enable: %v", err)
		}
		if _, err := Measure(f); err == nil {
			t.Fatal("Measure succeeded after a failed Enable")
		}
		return
	}
	got, err := Measure(f)
	if err != nil {
		t.Fatal(err)
	}
	want, err := ComputeFile(context.Background(), path, Params{})
	if err != nil || got.String() != want.String() {
		t.Fatalf("kernel %s, Compute %s (%v)", got, want, err)
	}
}

func TestEnableRejectsBadParams(t *testing.T) {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Enable(f, EnableOptions{Params: Params{BlockSize: 100}}); !errors.Is(err, ErrParams) {
		t.Fatalf("bad block size: %v", err)
	}
	if err := Enable(f, EnableOptions{Signature: make([]byte, MaxSignatureSize+1)}); !errors.Is(err, ErrParams) {
		t.Fatalf("oversized signature: %v", err)
	}
}
