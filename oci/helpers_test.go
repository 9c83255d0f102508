package oci

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/intact-project/intact/internal/registry"
	"github.com/intact-project/intact/internal/sampleimage"
	"github.com/intact-project/intact/internal/testpki"
	"github.com/intact-project/intact/internal/testutil"
)

// startRegistry starts an embedded olareg on loopback for one test.
func startRegistry(t *testing.T, opts registry.ServerOptions) *registry.Server {
	t.Helper()
	s, err := registry.StartServer(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Close(ctx)
	})
	return s
}

var testRemote = RemoteOptions{PlainHTTP: true, NoCredentials: true, Timeout: 5 * time.Second, MaxRetries: -1}

func openRepo(t *testing.T, host, ref string, opts RemoteOptions) *Repo {
	t.Helper()
	r, err := Open(context.Background(), host+"/"+ref, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// pushSample builds and pushes a sample image as name:v1 and returns it.
func pushSample(t *testing.T, repo *Repo, opts sampleimage.Options) *sampleimage.Image {
	t.Helper()
	img, err := sampleimage.Build(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Push(context.Background(), repo.Target, repo.Reference); err != nil {
		t.Fatal(err)
	}
	return img
}

// testPKI is shared by the tests of this package (key generation is slow).
var testPKI = func() *testpki.PKI {
	p, err := testpki.New(testpki.Options{Name: "oci test"})
	if err != nil {
		panic(err)
	}
	return p
}()

func newSigner(t *testing.T, pki *testpki.PKI, sel PlatformSelector) *Signer {
	t.Helper()
	s, err := NewSigner(SignOptions{Key: pki.Leaf.Key, Cert: pki.Leaf.Certificate, Chain: pki.Chain(), Platforms: sel, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func sign(t *testing.T, repo *Repo, sel PlatformSelector) *SignResult {
	t.Helper()
	res, err := newSigner(t, testPKI, sel).Sign(context.Background(), repo)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return res
}

func verify(t *testing.T, repo *Repo, roots *x509.CertPool, full bool) *VerifyReport {
	t.Helper()
	rep, err := Verify(context.Background(), repo, VerifyOptions{Roots: roots, Platforms: PlatformSelector{All: true}, Full: full, TempDir: t.TempDir()})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return rep
}

func runTool(t *testing.T, stdin []byte, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

var _ = testutil.Strict

func execCombined(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func newTestPKI(t *testing.T) *testpki.PKI {
	t.Helper()
	return testpki.MustNew(t, testpki.Options{Name: "foreign"})
}

// platformOf reads the platform manifest m back from repo.
func platformOf(t *testing.T, repo *Repo, m sampleimage.Manifest) Platform {
	t.Helper()
	ps, err := repo.Platforms(context.Background(), m.Desc, PlatformSelector{All: true})
	if err != nil {
		t.Fatal(err)
	}
	ps[0].Desc = m.Desc
	return ps[0]
}

func digestOf(b []byte) digest.Digest { return digest.FromBytes(b) }

func readerFunc(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

func pushManifest(t *testing.T, repo *Repo, m ocispec.Manifest) ocispec.Descriptor {
	t.Helper()
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if err := repo.Target.Push(context.Background(), d, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	return d
}
