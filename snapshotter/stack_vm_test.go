package snapshotter

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/intact-project/intact/dm"
	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/internal/mountinfo"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/internal/vmtest/guest"
	layerpkg "github.com/intact-project/intact/layer"
	"github.com/intact-project/intact/oci"
	"github.com/intact-project/intact/pkcs7"
	"github.com/intact-project/intact/veritydev"
)

// The container stack the VM tests run: binaries carried into the guest by
// make test-vm (scripts/build-containerd builds the containerd ones).
var stackTools = []string{"containerd", "ctr", "containerd-shim-runc-v2", "runc", "crictl", "intactd", "intact", "ctrprobe"}

// stack is a real containerd (with CRI), intactd and an OCI registry on
// loopback, started for one test in a private directory.
type stack struct {
	t          *testing.T
	dir        string
	registry   string // host:port
	ctrdSock   string
	intactSock string
	intactRoot string
	tools      string // mount point of the verified volume with runc and the shim
	cfgPath    string // containerd's configuration
	procs      map[string]*exec.Cmd
	logs       map[string]string
}

func requireStack(t *testing.T) {
	testutil.RequireVM(t)
	testutil.RequireRoot(t)
	for _, tool := range stackTools {
		testutil.RequireTool(t, tool)
	}
}

// newStack starts the registry, intactd (with extra flags) and containerd
// configured with `intactd containerd-config`. runc and the shim run from a
// signed dm-verity EROFS volume (keys: the guest's trusted leaf), as on an
// immutable host: runc re-executes itself for every container from a
// sealed overlayfs over its own binary (or a memfd copy), and IPE resolves
// the dm-verity properties of an overlayfs file to its lower file but not
// boot_verified, so a runc in the initramfs is denied under a policy that
// trusts the initramfs and signed dm-verity only.
func newStack(t *testing.T, keys guest.Keys, intactdFlags ...string) *stack {
	t.Helper()
	return newStackWith(t, keys, stackOptions{intactdFlags: intactdFlags})
}

// stackOptions adjust a stack: intactd flags, and the containerd
// configuration (an edit of the `intactd containerd-config` fragment, and
// TOML appended to the main configuration).
type stackOptions struct {
	intactdFlags    []string
	editFragment    func(string) string
	containerdExtra string
}

func newStackWith(t *testing.T, keys guest.Keys, o stackOptions) *stack {
	t.Helper()
	ensureCgroup2(t)
	ensureEtc(t)
	// Not under /tmp: keep the stack on the root file system, as on a host.
	if err := os.MkdirAll("/var/lib/intact-tests", 0o700); err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("/var/lib/intact-tests", "stack-")
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, dir: dir, ctrdSock: filepath.Join(dir, "containerd.sock"), intactSock: filepath.Join(dir, "intactd.sock"),
		intactRoot: filepath.Join(dir, "intact"), procs: map[string]*exec.Cmd{}, logs: map[string]string{}}
	t.Cleanup(func() {
		s.stopAll()
		if !t.Failed() {
			os.RemoveAll(dir)
		}
	})
	// Registry: `intact registry serve`, storage in a directory the tests
	// can tamper with.
	s.start("registry", "intact", "registry", "serve", "--addr", "127.0.0.1:0", "--dir", filepath.Join(dir, "registry"), "--json")
	s.registry = s.waitRegistryAddr()
	s.tools = verifiedVolume(t, filepath.Join(dir, "tools"), []string{"runc", "containerd-shim-runc-v2"}, keys)
	s.startIntactd(o.intactdFlags...)
	s.startContainerd(o)
	return s
}

func ensureCgroup2(t *testing.T) {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return
	}
	if err := linux.Mount("cgroup2", "/sys/fs/cgroup", "cgroup2", linux.MS_NOSUID|linux.MS_NODEV|linux.MS_NOEXEC, ""); err != nil {
		t.Fatalf("mount cgroup2: %v", err)
	}
}

// ensureEtc gives the guest the /etc files containerd's CRI copies into
// pod sandboxes.
func ensureEtc(t *testing.T) {
	for name, content := range map[string]string{"/etc/hosts": "127.0.0.1 localhost\n", "/etc/resolv.conf": "", "/etc/hostname": "intact-vm\n"} {
		if _, err := os.Stat(name); err == nil {
			continue
		}
		os.MkdirAll("/etc", 0o755)
		if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// verifiedVolume copies the named tools (from PATH) into an EROFS image
// (layer.ConvertDir, full profile), signs its root hash with the guest's
// trusted leaf, opens it with veritydev and mounts it at dir; the tools are
// then in dir/bin.
func verifiedVolume(t *testing.T, dir string, tools []string, keys guest.Keys) string {
	t.Helper()
	ctx := context.Background()
	src := dir + ".src"
	if err := os.MkdirAll(filepath.Join(src, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tool := range tools {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, "bin", tool), readAll(t, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	img := dir + ".img"
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	res, err := layerpkg.ConvertDir(ctx, src, f, layerpkg.Options{})
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	key, err := pkcs7.ParsePrivateKey(readAll(t, keys.SignKey))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pkcs7.ParseCertificates(readAll(t, keys.SignCert))
	if err != nil {
		t.Fatal(err)
	}
	sig, err := oci.SignRootHash(res.RootHashHex(), key, certs[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	name := "intact-test-tools-" + filepath.Base(filepath.Dir(dir))
	dev, err := veritydev.OpenConfig(ctx, veritydev.Config{Name: name, Data: img, Params: res.Verity, RootHash: res.RootHash, Signature: sig})
	if err != nil {
		t.Fatalf("open the tools volume: %v", err)
	}
	t.Cleanup(func() { veritydev.Close(context.Background(), name) })
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := linux.Mount(dev.Path, dir, "erofs", linux.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { linux.Unmount(dir, linux.MNT_DETACH) })
	return dir
}

func (s *stack) start(name string, argv ...string) {
	s.t.Helper()
	logPath := filepath.Join(s.dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	if s.tools != "" {
		cmd.Env = append(os.Environ(), "PATH="+filepath.Join(s.tools, "bin")+":"+os.Getenv("PATH"))
	}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start %s: %v", name, err)
	}
	f.Close()
	s.procs[name], s.logs[name] = cmd, logPath
	go cmd.Wait()
}

func (s *stack) stop(name string) {
	if c := s.procs[name]; c != nil && c.Process != nil {
		c.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() {
			for c.ProcessState == nil {
				time.Sleep(20 * time.Millisecond)
			}
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			c.Process.Kill()
		}
		delete(s.procs, name)
	}
}

func (s *stack) kill(name string) {
	if c := s.procs[name]; c != nil && c.Process != nil {
		c.Process.Kill()
		for c.ProcessState == nil {
			time.Sleep(10 * time.Millisecond)
		}
		delete(s.procs, name)
	}
}

func (s *stack) stopAll() {
	if s.t.Failed() {
		for name, p := range s.logs {
			b, _ := os.ReadFile(p)
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			s.t.Logf("---- %s log (tail) ----\n%s", name, b)
		}
	}
	s.stop("containerd")
	s.stop("intactd")
	s.stop("registry")
}

func (s *stack) waitRegistryAddr() string {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(s.logs["registry"])
		if i := bytes.IndexByte(b, '{'); i >= 0 {
			var info struct {
				Addr string `json:"addr"`
			}
			if json.NewDecoder(bytes.NewReader(b[i:])).Decode(&info) == nil && info.Addr != "" {
				return info.Addr
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatal("the registry did not report its address")
	return ""
}

func waitSocket(t *testing.T, path, what string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not listen on %s", what, path)
}

func (s *stack) startIntactd(flags ...string) {
	s.t.Helper()
	args := append([]string{"intactd", "--root", s.intactRoot, "--address", s.intactSock,
		"--containerd-address", s.ctrdSock, "--containerd-root", filepath.Join(s.dir, "containerd-root"), "--hosts-dir", "", "--log-level", "debug"}, flags...)
	s.start("intactd", args...)
	waitSocket(s.t, s.intactSock, "intactd")
	if s.procs["containerd"] == nil {
		return
	}
	// containerd reconnects to a restarted intactd within its proxy
	// backoff (at most 3 s); calls made before fail. A Prepare reaches
	// intactd (listing would be answered from containerd's own metadata).
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; ; i++ {
		key := fmt.Sprintf("reconnect-probe-%d", i)
		_, err := s.ctr("snapshots", "--snapshotter", "intact", "prepare", key)
		if err == nil {
			s.ctr("snapshots", "--snapshotter", "intact", "rm", key)
			return
		} else if time.Now().After(deadline) {
			s.t.Fatalf("containerd does not reach the restarted intactd: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *stack) startContainerd(o stackOptions) {
	s.t.Helper()
	out, err := exec.Command("intactd", "containerd-config", "--address", s.intactSock).Output()
	if err != nil {
		s.t.Fatalf("intactd containerd-config: %v", err)
	}
	frag := string(out)
	if o.editFragment != nil {
		frag = o.editFragment(frag)
	}
	fragPath := filepath.Join(s.dir, "intact.toml")
	if err := os.WriteFile(fragPath, []byte(frag), 0o644); err != nil {
		s.t.Fatal(err)
	}
	cfg := fmt.Sprintf(`version = 3
root = %q
state = %q
imports = [%q]

[grpc]
  address = %q

[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = %q

# The guest's root is the initramfs, where pivot_root cannot work.
[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
  NoPivotRoot = true
`, filepath.Join(s.dir, "containerd-root"), filepath.Join(s.dir, "cs"), fragPath, s.ctrdSock, s.registry+"/pause:1") + o.containerdExtra
	cfgPath := filepath.Join(s.dir, "containerd.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		s.t.Fatal(err)
	}
	s.cfgPath = cfgPath
	s.runContainerd()
}

// runContainerd starts containerd with the stack's configuration, behind
// wrapper (a command prefix, e.g. ctrprobe dropcap mac_admin), and waits
// until its plugins answer.
func (s *stack) runContainerd(wrapper ...string) {
	s.t.Helper()
	s.start("containerd", append(wrapper, "containerd", "--config", s.cfgPath, "--log-level", "debug")...)
	waitSocket(s.t, s.ctrdSock, "containerd")
	// Wait until the plugins answer.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := s.ctr("plugins", "ls"); err == nil {
			return
		} else if time.Now().After(deadline) {
			s.t.Fatalf("containerd does not answer: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ctr runs ctr against the stack's containerd; the error carries the
// output.
func (s *stack) ctr(args ...string) (string, error) {
	return s.run(append([]string{"ctr", "--address", s.ctrdSock, "--namespace", "default"}, args...)...)
}

// ctrRun runs `ctr run` with the intact snapshotter (and --no-pivot: the
// guest's root is the initramfs).
func (s *stack) ctrRun(args ...string) (string, error) {
	return s.ctr(append([]string{"run", "--no-pivot", "--snapshotter", "intact"}, args...)...)
}

// crictl runs crictl against containerd's CRI.
func (s *stack) crictl(args ...string) (string, error) {
	ep := "unix://" + s.ctrdSock
	return s.run(append([]string{"crictl", "--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "120s"}, args...)...)
}

// run runs a command; it returns stdout, or on failure an error with
// stdout and stderr (and stdout+stderr as the string).
func (s *stack) run(argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		out := stdout.String() + stderr.String()
		return out, fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, out)
	}
	return stdout.String(), nil
}

// testFile is a file of a test layer.
type testFile struct {
	name string
	mode int64
	data []byte
	dir  bool
}

type compression string

// buildLayer writes a tar of files and compresses it.
func buildLayer(t *testing.T, files []testFile, comp compression) (blob []byte, diffID digest.Digest, mediaType string) {
	t.Helper()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, ModTime: time.Unix(1767225600, 0), Uname: "root", Gname: "root"}
		if f.dir {
			h.Typeflag, h.Name = tar.TypeDir, strings.TrimSuffix(f.name, "/")+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	diffID = digest.FromBytes(tb.Bytes())
	var out bytes.Buffer
	switch comp {
	case "gzip":
		w := gzip.NewWriter(&out)
		w.Write(tb.Bytes())
		w.Close()
		mediaType = ocispec.MediaTypeImageLayerGzip
	case "zstd":
		w, _ := zstd.NewWriter(&out)
		w.Write(tb.Bytes())
		w.Close()
		mediaType = ocispec.MediaTypeImageLayerZstd
	default:
		out = tb
		mediaType = ocispec.MediaTypeImageLayer
	}
	return out.Bytes(), diffID, mediaType
}

type testLayer struct {
	files []testFile
	comp  compression
}

// pushImage pushes an image of layers to the stack's registry as
// repo:tag and returns its manifest descriptor and the layer descriptors.
func (s *stack) pushImage(repo, tag string, layers []testLayer, entrypoint []string) (ocispec.Descriptor, []ocispec.Descriptor) {
	s.t.Helper()
	ctx := context.Background()
	r, err := remote.NewRepository(s.registry + "/" + repo)
	if err != nil {
		s.t.Fatal(err)
	}
	r.PlainHTTP = true
	push := func(mt string, b []byte) ocispec.Descriptor {
		d := ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(b), Size: int64(len(b))}
		if err := r.Push(ctx, d, bytes.NewReader(b)); err != nil && !strings.Contains(err.Error(), "already exists") {
			s.t.Fatalf("push %s: %v", d.Digest, err)
		}
		return d
	}
	var descs []ocispec.Descriptor
	var diffIDs []digest.Digest
	for _, l := range layers {
		blob, diffID, mt := buildLayer(s.t, l.files, l.comp)
		descs = append(descs, push(mt, blob))
		diffIDs = append(diffIDs, diffID)
	}
	cfg := ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		Config:   ocispec.ImageConfig{Entrypoint: entrypoint, Env: []string{"PATH=/bin"}},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	}
	cb, _ := json.Marshal(cfg)
	cdesc := push(ocispec.MediaTypeImageConfig, cb)
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cdesc, Layers: descs}
	mb, _ := json.Marshal(m)
	md := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(mb), Size: int64(len(mb))}
	if err := r.PushReference(ctx, md, bytes.NewReader(mb), tag); err != nil {
		s.t.Fatalf("push manifest: %v", err)
	}
	return md, descs
}

// sign signs ref with `intact image sign` and the given key and cert.
func (s *stack) sign(ref, key, cert string) {
	s.t.Helper()
	if out, err := s.run("intact", "image", "sign", "--plain-http", "--no-credentials", "--key", key, "--cert", cert, ref); err != nil {
		s.t.Fatalf("sign %s: %v\n%s", ref, err, out)
	}
}

// kernelState is what intactd has in the kernel: its device-mapper devices
// (name -> live table) and the mounts below its root.
type kernelState struct {
	devices map[string]string
	mounts  []mountinfo.Mount
	loops   []string
}

func (s *stack) kernelState() kernelState {
	s.t.Helper()
	st := kernelState{devices: map[string]string{}}
	ctl, err := dm.Open()
	if err != nil {
		s.t.Fatal(err)
	}
	defer ctl.Close()
	devs, err := ctl.List()
	if err != nil {
		s.t.Fatal(err)
	}
	for _, d := range devs {
		if strings.HasPrefix(d.Name, dmNamePrefix+instanceTag(s.intactRoot)+"-") {
			tbl, err := dm.TableText(context.Background(), d.Name)
			if err != nil {
				s.t.Fatal(err)
			}
			st.devices[d.Name] = tbl
		}
	}
	ms, err := mountinfo.Self()
	if err != nil {
		s.t.Fatal(err)
	}
	for _, m := range ms {
		if strings.HasPrefix(m.Point, s.intactRoot+"/") {
			st.mounts = append(st.mounts, m)
		}
	}
	// Loop devices backed by files under intactd's root.
	ents, _ := os.ReadDir("/sys/block")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "loop", "backing_file"))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), s.intactRoot+"/") {
			st.loops = append(st.loops, e.Name()+" "+strings.TrimSpace(string(b)))
		}
	}
	return st
}

func (k kernelState) empty() bool {
	return len(k.devices) == 0 && len(k.mounts) == 0 && len(k.loops) == 0
}

func (k kernelState) String() string {
	var b strings.Builder
	for n, t := range k.devices {
		fmt.Fprintf(&b, "device %s: %s\n", n, t)
	}
	for _, m := range k.mounts {
		fmt.Fprintf(&b, "mount %s (%s from %s)\n", m.Point, m.FSType, m.Source)
	}
	for _, l := range k.loops {
		fmt.Fprintf(&b, "loop %s\n", l)
	}
	return b.String()
}

// layerRecords reads intactd's layer records.
func (s *stack) layerRecords() []record {
	s.t.Helper()
	ents, err := os.ReadDir(filepath.Join(s.intactRoot, layersDir))
	if err != nil {
		s.t.Fatal(err)
	}
	var out []record
	for _, e := range ents {
		r, _, err := loadRecord(filepath.Join(s.intactRoot, layersDir, e.Name()))
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				s.t.Errorf("layer %s: %v", e.Name(), err)
			}
			continue
		}
		out = append(out, *r)
	}
	return out
}

func readAll(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
