package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/intact-project/intact/internal/registry"
	"github.com/intact-project/intact/internal/sampleimage"
	"github.com/intact-project/intact/internal/testpki"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/oci"
)

// imageFixture is an in-process registry with a pushed sample image and a
// test PKI on disk.
type imageFixture struct {
	addr  string
	ref   string
	files testpki.Files
	other testpki.Files
}

func newImageFixture(t *testing.T, platforms ...string) *imageFixture {
	t.Helper()
	ctx := context.Background()
	s, err := registry.StartServer(ctx, registry.ServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	ref := s.Addr + "/cli/sample:v1"
	repo, err := oci.Open(ctx, ref, oci.RemoteOptions{PlainHTTP: true, NoCredentials: true})
	if err != nil {
		t.Fatal(err)
	}
	img, err := sampleimage.Build(sampleimage.Options{Platforms: platforms})
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Push(ctx, repo.Target, "v1"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := &imageFixture{addr: s.Addr, ref: ref}
	f.files = testpki.MustNew(t, testpki.Options{Name: "cli"}).MustWriteDir(t, filepath.Join(dir, "pki"))
	f.other = testpki.MustNew(t, testpki.Options{Name: "other"}).MustWriteDir(t, filepath.Join(dir, "other"))
	return f
}

func TestImageSignVerifyInspectCLI(t *testing.T) {
	testutil.RequireHost(t, "userspace only; the VM tier adds no kernel coverage")
	f := newImageFixture(t, "linux/amd64", "linux/arm64")
	code, out, stderr := runCLI(t, "image", "sign", f.ref, "--plain-http", "--no-credentials", "--all-platforms",
		"--key", f.files.KeyPEM, "--cert", f.files.CertPEM, "--json")
	if code != 0 {
		t.Fatalf("sign: exit %d: %s", code, stderr)
	}
	var res []oci.SignResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res) != 1 || len(res[0].Platforms) != 2 {
		t.Fatalf("sign --json: %v\n%s", err, out)
	}
	l := res[0].Platforms[0].Layers[0]
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(l.RootHash) || l.DiffID == "" || l.SignatureDigest == "" || l.TarSize == 0 || l.MetadataSize%512 != 0 || l.TreeSize == 0 {
		t.Fatalf("layer summary %+v", l)
	}

	code, out, stderr = runCLI(t, "image", "verify", f.ref, "--plain-http", "--no-credentials", "--all-platforms", "--ca", f.files.RootPEM, "--full")
	if code != 0 || !strings.Contains(out, "verified ") {
		t.Fatalf("verify: exit %d\n%s\n%s", code, out, stderr)
	}
	code, out, _ = runCLI(t, "image", "verify", f.ref, "--plain-http", "--no-credentials", "--platform", "linux/arm64", "--ca", f.files.RootPEM, "--json")
	var rep oci.VerifyReport
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || !rep.OK || len(rep.Platforms) != 1 || rep.Platforms[0].Platform != "linux/arm64" {
		t.Fatalf("verify --platform --json: exit %d\n%s", code, out)
	}

	// Another CA: exit 1, a per-layer report, one error line.
	code, out, stderr = runCLI(t, "image", "verify", f.ref, "--plain-http", "--no-credentials", "--all-platforms", "--ca", f.other.RootPEM)
	if code != 1 || strings.Count(out, "FAIL layer") != 6 || !strings.HasPrefix(stderr, "intact: image verification failed: ") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Fatalf("verify with another CA: exit %d\n%s\n%s", code, out, stderr)
	}

	code, out, stderr = runCLI(t, "image", "inspect", f.ref, "--plain-http", "--no-credentials", "--all-platforms", "--json")
	var ins oci.InspectResult
	if code != 0 || json.Unmarshal([]byte(out), &ins) != nil || len(ins.Platforms) != 2 || len(ins.Platforms[0].Referrers) != 1 ||
		!ins.Platforms[0].Referrers[0].Selected || !strings.Contains(ins.Platforms[0].Referrers[0].Layers[0].Signer, "cli signer") {
		t.Fatalf("inspect: exit %d\n%s\n%s", code, out, stderr)
	}
	code, out, _ = runCLI(t, "image", "inspect", f.ref, "--plain-http", "--no-credentials", "--all-platforms")
	if code != 0 || !strings.Contains(out, "* referrer sha256:") {
		t.Fatalf("inspect: exit %d\n%s", code, out)
	}
}

func TestImageOCILayoutCLI(t *testing.T) {
	files := testpki.MustNew(t, testpki.Options{}).MustWriteDir(t, t.TempDir())
	dir := t.TempDir()
	repo, err := oci.Open(context.Background(), "v1", oci.RemoteOptions{OCILayout: dir})
	if err != nil {
		t.Fatal(err)
	}
	img, _ := sampleimage.Build(sampleimage.Options{})
	if err := img.Push(context.Background(), repo.Target, "v1"); err != nil {
		t.Fatal(err)
	}
	repo.Close()
	if code, _, stderr := runCLI(t, "image", "sign", "v1", "--oci-layout", dir, "--key", files.KeyPEM, "--cert", files.CertPEM); code != 0 {
		t.Fatalf("sign: %d %s", code, stderr)
	}
	if code, out, stderr := runCLI(t, "image", "verify", "v1", "--oci-layout", dir, "--ca", files.RootPEM, "--full"); code != 0 {
		t.Fatalf("verify: %d %s %s", code, out, stderr)
	}
}

// TestImageBadInputs: every bad input gives one clear line and a non-zero
// exit, never a panic.
func TestImageBadInputs(t *testing.T) {
	testutil.RequireHost(t, "userspace only; the VM tier adds no kernel coverage")
	f := newImageFixture(t)
	closed := closedPort(t)
	r := []string{"--plain-http", "--no-credentials"}
	k := []string{"--key", f.files.KeyPEM, "--cert", f.files.CertPEM}
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"sign without key", append([]string{"image", "sign", f.ref}, r...), 2, "--key and --cert are required"},
		{"missing key file", append([]string{"image", "sign", f.ref, "--key", "/nonexistent/key.pem", "--cert", f.files.CertPEM}, r...), 1, "--key /nonexistent/key.pem"},
		{"key for another cert", append([]string{"image", "sign", f.ref, "--key", f.other.KeyPEM, "--cert", f.files.CertPEM}, r...), 1, "key does not match certificate"},
		{"cert is a key", append([]string{"image", "sign", f.ref, "--key", f.files.KeyPEM, "--cert", f.files.KeyPEM}, r...), 1, "--cert"},
		{"bad reference", append(append([]string{"image", "sign", "UPPER CASE/@@"}, k...), r...), 1, "reference"},
		{"unknown tag", append(append([]string{"image", "sign", f.addr + "/cli/sample:nope"}, k...), r...), 1, "not found"},
		{"bad platform", append(append([]string{"image", "sign", f.ref, "--platform", "amd64"}, k...), r...), 2, "os/arch"},
		{"platform and all", append(append([]string{"image", "sign", f.ref, "--platform", "linux/amd64", "--all-platforms"}, k...), r...), 2, "exclude"},
		{"bad notation format", append(append([]string{"image", "sign", f.ref, "--notation", "--notation-format", "xml"}, k...), r...), 2, "cose or jws"},
		{"unreachable registry", append(append([]string{"image", "sign", closed + "/x/y:v1", "--timeout", "1s"}, k...), r...), 1, "connect"},
		{"verify without ca", append([]string{"image", "verify", f.ref}, r...), 2, "--ca is required"},
		{"verify missing ca", append([]string{"image", "verify", f.ref, "--ca", "/nonexistent.pem"}, r...), 1, "--ca /nonexistent.pem"},
		{"verify unsigned", append([]string{"image", "verify", f.ref, "--ca", f.files.RootPEM}, r...), 1, "no dm-verity referrer"},
		{"verify two refs", append([]string{"image", "verify", f.ref, f.ref, "--ca", f.files.RootPEM}, r...), 2, "accepts 1 arg"},
		{"layout not a dir", []string{"image", "inspect", "v1", "--oci-layout", "/nonexistent"}, 1, "not a directory"},
		{"plain-http with layout", []string{"image", "inspect", "v1", "--oci-layout", t.TempDir(), "--plain-http"}, 2, "--plain-http"},
		{"serve on a public address", []string{"registry", "serve", "--addr", "0.0.0.0:5000"}, 2, "not a loopback address"},
		{"serve bad address", []string{"registry", "serve", "--addr", "nonsense"}, 2, "--addr"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tc.code, stderr)
			}
			first := strings.SplitN(stderr, "\n", 2)[0]
			if !strings.HasPrefix(first, "intact: ") || !strings.Contains(first, tc.want) {
				t.Fatalf("stderr %q does not name %q", stderr, tc.want)
			}
			if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
				t.Fatalf("panic: %s", stderr)
			}
		})
	}
}

func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader in parallel.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestRegistryServeCLI runs `intact registry serve` in process, pushes,
// signs and verifies through it, then stops it with its context.
func TestRegistryServeCLI(t *testing.T) {
	testutil.RequireHost(t, "userspace only; the VM tier adds no kernel coverage")
	needRegistryCommand(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	dir := t.TempDir()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"registry", "serve", "--addr", "127.0.0.1:0", "--dir", dir, "--json"}, strings.NewReader(""), &out, &errb)
	}()
	var info struct {
		Addr string `json:"addr"`
	}
	deadline := time.Now().Add(5 * time.Second)
	for json.Unmarshal([]byte(out.String()), &info) != nil || info.Addr == "" {
		if time.Now().After(deadline) {
			t.Fatalf("no address printed: %q %q", out.String(), errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	repo, err := oci.Open(ctx, info.Addr+"/served/app:v1", oci.RemoteOptions{PlainHTTP: true, NoCredentials: true})
	if err != nil {
		t.Fatal(err)
	}
	img, _ := sampleimage.Build(sampleimage.Options{})
	if err := img.Push(ctx, repo.Target, "v1"); err != nil {
		t.Fatal(err)
	}
	files := testpki.MustNew(t, testpki.Options{}).MustWriteDir(t, t.TempDir())
	if code, _, stderr := runCLI(t, "image", "sign", info.Addr+"/served/app:v1", "--plain-http", "--no-credentials", "--key", files.KeyPEM, "--cert", files.CertPEM); code != 0 {
		t.Fatalf("sign: %s", stderr)
	}
	if code, _, stderr := runCLI(t, "image", "verify", info.Addr+"/served/app:v1", "--plain-http", "--no-credentials", "--ca", files.RootPEM); code != 0 {
		t.Fatalf("verify: %s", stderr)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("serve exited %d: %s", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop")
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) == 0 {
		t.Fatalf("--dir holds nothing: %v", err)
	}
}

// snapshotTree records every entry under dir: type, size, mtime, content.
func snapshotTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		v := fmt.Sprintf("%v %d %d", st.Mode(), st.Size(), st.ModTime().UnixNano())
		if st.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += fmt.Sprintf(" %x", sha256.Sum256(b))
		}
		snap[p] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// signedLayout signs the sample image into a new OCI layout.
func signedLayout(t *testing.T) (string, testpki.Files) {
	t.Helper()
	files := testpki.MustNew(t, testpki.Options{}).MustWriteDir(t, t.TempDir())
	dir := t.TempDir()
	repo, err := oci.Open(context.Background(), "v1", oci.RemoteOptions{OCILayout: dir})
	if err != nil {
		t.Fatal(err)
	}
	img, _ := sampleimage.Build(sampleimage.Options{})
	if err := img.Push(context.Background(), repo.Target, "v1"); err != nil {
		t.Fatal(err)
	}
	repo.Close()
	if code, _, stderr := runCLI(t, "image", "sign", "v1", "--oci-layout", dir, "--key", files.KeyPEM, "--cert", files.CertPEM); code != 0 {
		t.Fatalf("sign: %d %s", code, stderr)
	}
	return dir, files
}

// TestImageOCILayoutReadsDoNotWrite: verify and inspect of an OCI layout
// leave every file of it as it was (the old code rewrote index.json).
func TestImageOCILayoutReadsDoNotWrite(t *testing.T) {
	dir, files := signedLayout(t)
	before := snapshotTree(t, dir)
	time.Sleep(10 * time.Millisecond) // a rewrite would get another mtime
	for _, args := range [][]string{
		{"image", "verify", "v1", "--oci-layout", dir, "--ca", files.RootPEM, "--full"},
		{"image", "inspect", "v1", "--oci-layout", dir},
		{"image", "verify", "no-such-tag", "--oci-layout", dir, "--ca", files.RootPEM},
	} {
		runCLI(t, args...)
		if after := snapshotTree(t, dir); !maps.Equal(before, after) {
			for k, v := range after {
				if before[k] != v {
					t.Errorf("%v changed %s: %s -> %s", args[:2], k, before[k], v)
				}
			}
			t.FailNow()
		}
	}
	// A directory that is not a layout is not made one.
	empty := t.TempDir()
	if code, _, _ := runCLI(t, "image", "inspect", "v1", "--oci-layout", empty); code == 0 {
		t.Error("inspect of an empty directory succeeded")
	}
	if ents, _ := os.ReadDir(empty); len(ents) != 0 {
		t.Errorf("inspect wrote into a directory that was no layout: %v", ents)
	}
}

// TestImageOCILayoutReadOnlyMountAsRoot: verify and inspect work on a
// layout mounted read-only.
func TestImageOCILayoutReadOnlyMountAsRoot(t *testing.T) {
	testutil.RequireRoot(t)
	dir, files := signedLayout(t)
	ro := t.TempDir()
	mount := testutil.RequireTool(t, "mount")
	if out, err := exec.Command(mount, "--bind", "-o", "ro", dir, ro).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", ro).Run() })
	if err := os.WriteFile(filepath.Join(ro, "probe"), nil, 0o644); err == nil {
		t.Fatal("the bind mount is writable")
	}
	if code, out, stderr := runCLI(t, "image", "verify", "v1", "--oci-layout", ro, "--ca", files.RootPEM, "--full"); code != 0 {
		t.Errorf("verify on a read-only layout: exit %d %s %s", code, out, stderr)
	}
	if code, out, stderr := runCLI(t, "image", "inspect", "v1", "--oci-layout", ro); code != 0 || !strings.Contains(out, "referrer") {
		t.Errorf("inspect on a read-only layout: exit %d %s %s", code, out, stderr)
	}
}

// TestImageTimeoutBoundsTheWait: --timeout bounds how long a command waits
// for a registry that accepts connections and never answers, retries
// included (the old code waited that long per attempt: 3 s took 13.9 s).
func TestImageTimeoutBoundsTheWait(t *testing.T) {
	testutil.RequireHost(t, "userspace only; the VM tier adds no kernel coverage")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	files := testpki.MustNew(t, testpki.Options{}).MustWriteDir(t, t.TempDir())
	for _, args := range [][]string{
		{"image", "inspect", ln.Addr().String() + "/silent/image:v1"},
		{"image", "verify", ln.Addr().String() + "/silent/image:v1", "--ca", files.RootPEM},
	} {
		start := time.Now()
		code, _, stderr := runCLI(t, append(args, "--plain-http", "--no-credentials", "--timeout", "1s")...)
		took := time.Since(start)
		if code != 1 || !strings.Contains(stderr, "1s") {
			t.Errorf("%v: exit %d, stderr %q; want exit 1 naming the timeout", args[:2], code, stderr)
		}
		if took > 3*time.Second {
			t.Errorf("%v: --timeout 1s took %v", args[:2], took)
		}
	}
}

// TestImageSignsEveryPlatformByDefault: image sign signs every platform of
// a multi-platform image unless --platform restricts it; verify checks
// every platform by default and names the unsigned ones.
func TestImageSignsEveryPlatformByDefault(t *testing.T) {
	testutil.RequireHost(t, "userspace only; the VM tier adds no kernel coverage")
	f := newImageFixture(t, "linux/amd64", "linux/arm64", "linux/riscv64")
	common := []string{"--plain-http", "--no-credentials"}
	// A publisher restricts signing to one platform on purpose.
	code, _, stderr := runCLI(t, append([]string{"image", "sign", f.ref, "--key", f.files.KeyPEM, "--cert", f.files.CertPEM, "--platform", "linux/arm64"}, common...)...)
	if code != 0 {
		t.Fatalf("sign --platform: %d %s", code, stderr)
	}
	code, out, _ := runCLI(t, append([]string{"image", "verify", f.ref, "--ca", f.files.RootPEM}, common...)...)
	if code != 1 || !strings.Contains(out, "unsigned") || !strings.Contains(out, "linux/amd64") || !strings.Contains(out, "linux/riscv64") {
		t.Fatalf("verify after signing one of three platforms: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, append([]string{"image", "verify", f.ref, "--ca", f.files.RootPEM, "--json"}, common...)...)
	var rep struct {
		Unsigned []string `json:"unsigned"`
	}
	if json.Unmarshal([]byte(out), &rep); code != 1 || strings.Join(rep.Unsigned, " ") != "linux/amd64 linux/riscv64" {
		t.Fatalf("verify --json: exit %d, unsigned %v\n%s", code, rep.Unsigned, out)
	}
	if code, _, _ := runCLI(t, append([]string{"image", "verify", f.ref, "--ca", f.files.RootPEM, "--platform", "linux/arm64"}, common...)...); code != 0 {
		t.Errorf("verify --platform linux/arm64: exit %d", code)
	}
	// Without --platform every platform is signed.
	code, out, stderr = runCLI(t, append([]string{"image", "sign", f.ref, "--key", f.files.KeyPEM, "--cert", f.files.CertPEM, "--json"}, common...)...)
	var res []struct {
		Platforms []struct {
			Platform string `json:"platform"`
		} `json:"platforms"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || len(res) != 1 || len(res[0].Platforms) != 3 {
		t.Fatalf("sign: exit %d %s\n%s", code, stderr, out)
	}
	if code, out, _ := runCLI(t, append([]string{"image", "verify", f.ref, "--ca", f.files.RootPEM}, common...)...); code != 0 || strings.Contains(out, "unsigned") {
		t.Fatalf("verify after signing every platform: exit %d\n%s", code, out)
	}
}

// serveCLI runs `intact registry serve ARGS --addr 127.0.0.1:0 --json` in
// process and returns its address and a function that stops it.
func serveCLI(t *testing.T, args ...string) (string, func()) {
	t.Helper()
	needRegistryCommand(t)
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"registry", "serve", "--addr", "127.0.0.1:0", "--json"}, args...), strings.NewReader(""), &out, &errb)
	}()
	var info struct {
		Addr string `json:"addr"`
	}
	for deadline := time.Now().Add(10 * time.Second); json.Unmarshal([]byte(out.String()), &info) != nil || info.Addr == ""; {
		select {
		case code := <-done:
			cancel()
			t.Fatalf("serve exited %d: %s", code, errb.String())
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("no address printed: %q %q", out.String(), errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("serve exited %d: %s", code, errb.String())
			}
		case <-time.After(10 * time.Second):
			t.Error("serve did not stop")
		}
	}
	t.Cleanup(stop)
	return info.Addr, stop
}

// TestRegistryServeDirBothWays: a --dir written with the referrers API is
// served with --no-referrers-api too: manifests by digest answer, and the
// signed image verifies through the sha256-<hex> tag schema (olareg, given
// such storage with the API off, answered 404 for every manifest by
// digest).
func TestRegistryServeDirBothWays(t *testing.T) {
	testutil.RequireHost(t, "userspace only; the VM tier adds no kernel coverage")
	dir := t.TempDir()
	files := testpki.MustNew(t, testpki.Options{}).MustWriteDir(t, t.TempDir())
	addr, stop := serveCLI(t, "--dir", dir)
	ctx := context.Background()
	repo, err := oci.Open(ctx, addr+"/both/app:v1", oci.RemoteOptions{PlainHTTP: true, NoCredentials: true})
	if err != nil {
		t.Fatal(err)
	}
	img, _ := sampleimage.Build(sampleimage.Options{})
	if err := img.Push(ctx, repo.Target, "v1"); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCLI(t, "image", "sign", addr+"/both/app:v1", "--plain-http", "--no-credentials", "--key", files.KeyPEM, "--cert", files.CertPEM); code != 0 {
		t.Fatalf("sign: %s", stderr)
	}
	stop()
	for _, mode := range [][]string{{"--no-referrers-api"}, nil, {"--no-referrers-api"}} {
		addr, stop := serveCLI(t, append([]string{"--dir", dir}, mode...)...)
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/v2/both/app/manifests/"+img.Manifests[0].Desc.Digest.String(), nil)
		req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%v: manifest by digest: HTTP %d", mode, resp.StatusCode)
		}
		if code, out, stderr := runCLI(t, "image", "verify", addr+"/both/app:v1", "--plain-http", "--no-credentials", "--ca", files.RootPEM); code != 0 {
			t.Errorf("%v: verify: exit %d %s %s", mode, code, out, stderr)
		}
		stop()
	}
}
