package snapshotter

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/internal/mountinfo"
	"github.com/intact-project/intact/internal/vmtest/guest"
	"github.com/intact-project/intact/ipe"
	"github.com/intact-project/intact/oci"
	"github.com/intact-project/intact/pkcs7"
)

const greeting = "hello from a verified layer" // internal/ctrprobe.Greeting

// images is the test's set of images in the stack's registry.
type testImages struct {
	app, pause, whiteouts, unsigned, devUnsigned, untrusted, otherTree, tampered string
	appLayers                                                                    []ocispec.Descriptor
	blobMarker                                                                   []byte
}

func baseLayer(t *testing.T) testLayer {
	probe, err := exec.LookPath("ctrprobe")
	if err != nil {
		t.Fatal(err)
	}
	return testLayer{Comp: "gzip", Files: []testFile{
		{Name: "bin", Dir: true, Mode: 0o755},
		{Name: "bin/ctrprobe", Mode: 0o755, Data: readAll(t, probe)},
		{Name: "tmp", Dir: true, Mode: 0o1777},
		{Name: "etc", Dir: true, Mode: 0o755},
	}}
}

// pushImages pushes and signs the test images.
func pushImages(t *testing.T, s *stack, keys guest.Keys) testImages {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	blob := make([]byte, 256<<10)
	for i := range blob {
		blob[i] = byte(rng.Uint32())
	}
	base := baseLayer(t)
	data := testLayer{Comp: "zstd", Files: []testFile{{Name: "data", Dir: true, Mode: 0o755}, {Name: "data/blob.bin", Mode: 0o644, Data: blob}}}
	small := testLayer{Comp: "none", Files: []testFile{{Name: "etc/hostname", Mode: 0o644, Data: []byte("intact\n")}}}
	unique := func(tag string) testLayer {
		return testLayer{Comp: "gzip", Files: []testFile{{Name: "etc/" + tag, Mode: 0o644, Data: []byte(tag + "\n")}}}
	}
	im := testImages{blobMarker: blob[100000:100064]}
	reg := s.registry
	entry := []string{"/bin/ctrprobe"}

	im.app = reg + "/app:1"
	_, im.appLayers = s.pushImage("app", "1", []testLayer{base, data, small}, entry)
	s.sign(im.app, keys.SignKey, keys.SignCert)
	im.pause = reg + "/pause:1"
	s.pushImage("pause", "1", []testLayer{base}, []string{"/bin/ctrprobe", "pause"})
	s.sign(im.pause, keys.SignKey, keys.SignCert)

	// Whiteouts and an opaque directory in a signed layer, over the app's
	// first two layers (shared: same digests, same signatures).
	im.whiteouts = reg + "/whiteouts:1"
	s.pushImage("whiteouts", "1", []testLayer{base, data, {Comp: "gzip", Files: []testFile{
		{Name: "etc/.wh.hostname", Mode: 0o644},
		{Name: "data", Dir: true, Mode: 0o755},
		{Name: "data/.wh..wh..opq", Mode: 0o644},
		{Name: "data/new.txt", Mode: 0o644, Data: []byte("new\n")},
	}}}, entry)
	s.sign(im.whiteouts, keys.SignKey, keys.SignCert)

	im.unsigned = reg + "/unsigned:1"
	s.pushImage("unsigned", "1", []testLayer{base, unique("unsigned")}, entry)

	im.devUnsigned = reg + "/dev/unsigned:1"
	s.pushImage("dev/unsigned", "1", []testLayer{base, unique("dev-unsigned")}, entry)

	im.untrusted = reg + "/untrusted:1"
	s.pushImage("untrusted", "1", []testLayer{unique("untrusted-a"), unique("untrusted-b")}, entry)
	s.sign(im.untrusted, keys.UntrustedKey, keys.UntrustedCert)

	// A referrer whose entry for the first layer carries the second
	// layer's tree (and is newer than the genuine one, so it wins).
	im.otherTree = reg + "/othertree:1"
	md, _ := s.pushImage("othertree", "1", []testLayer{unique("tree-a"), unique("tree-b")}, entry)
	s.sign(im.otherTree, keys.SignKey, keys.SignCert)
	swapTrees(t, im.otherTree, md)

	// A layer blob changed in the registry's storage after signing.
	im.tampered = reg + "/tampered:1"
	_, tl := s.pushImage("tampered", "1", []testLayer{unique("tampered")}, entry)
	s.sign(im.tampered, keys.SignKey, keys.SignCert)
	s.corruptBlob(tl[0].Digest.Encoded())
	return im
}

// swapTrees pushes a newer referrer for manifest md in which layer 0 has
// layer 1's hash tree (everything else genuine).
func swapTrees(t *testing.T, ref string, md ocispec.Descriptor) {
	t.Helper()
	ctx := context.Background()
	repo, err := oci.Open(ctx, ref, oci.RemoteOptions{PlainHTTP: true, NoCredentials: true})
	if err != nil {
		t.Fatal(err)
	}
	plats, err := repo.Platforms(ctx, md, oci.PlatformSelector{All: true})
	if err != nil || len(plats) != 1 {
		t.Fatalf("platforms: %v", err)
	}
	sel, err := repo.SelectBundle(ctx, plats[0])
	if err != nil {
		t.Fatal(err)
	}
	ls := plats[0].Manifest.Layers
	var arts []oci.LayerArtifacts
	for _, l := range ls {
		e := sel.Selected.Layers[l.Digest]
		arts = append(arts, oci.LayerArtifacts{Layer: l, RootHash: e.RootHash, Signature: e.Signature, Metadata: e.Metadata, Tree: e.Tree})
	}
	arts[0].Tree = sel.Selected.Layers[ls[1].Digest].Tree
	for i := range arts {
		arts[i].Tree.Annotations = map[string]string{oci.AnnotationSourceLayerDigest: ls[i].Digest.String()}
	}
	desc, manifest, err := oci.BuildReferrer(md, arts, sel.Selected.Created.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.PushReferrer(ctx, desc, manifest, arts); err != nil {
		t.Fatal(err)
	}
}

// corruptBlob flips a byte of a blob file in the registry's storage.
func (s *stack) corruptBlob(hex string) {
	s.t.Helper()
	n := 0
	filepath.WalkDir(filepath.Join(s.dir, "registry"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == hex {
			b := readAll(s.t, p)
			b[len(b)/2] ^= 0x55
			if err := os.WriteFile(p, b, 0o644); err != nil {
				s.t.Fatal(err)
			}
			n++
		}
		return nil
	})
	if n == 0 {
		s.t.Fatalf("blob %s not found in the registry's storage", hex)
	}
}

// TestContainerdInVM is the acceptance test of intactd with real
// components: containerd v2.4 (unmodified, configured with `intactd
// containerd-config`), runc, ctr, crictl, intactd and `intact registry
// serve`, on Debian's kernel with the test CA in the platform keyring.
func TestContainerdInVM(t *testing.T) {
	requireStack(t)
	keys := guest.RequireTrustedKeys(t)
	s := newStack(t, keys)
	im := pushImages(t, s, keys)
	pull := func(ref string) (string, error) {
		return s.ctr("image", "pull", "--snapshotter", "intact", "--plain-http", ref)
	}

	t.Run("refused", func(t *testing.T) {
		for _, c := range []struct{ name, ref, want string }{
			{"unsigned", im.unsigned, "unsigned image refused"},
			{"untrusted signer", im.untrusted, "ENOKEY"},
			{"another layer's tree", im.otherTree, "does not match its signed dm-verity artifacts"},
			{"blob changed in the registry", im.tampered, "digest"},
		} {
			before := s.kernelState()
			out, err := pull(c.ref)
			if err == nil {
				t.Errorf("%s: pull of %s succeeded:\n%s", c.name, c.ref, out)
				continue
			}
			if !strings.Contains(out, c.want) {
				t.Errorf("%s: the error does not say %q:\n%s", c.name, c.want, out)
			}
			t.Logf("%s: refused: %s", c.name, errorLine(out))
			if after := s.kernelState(); after.String() != before.String() {
				t.Errorf("%s: the refused pull left kernel state behind:\n%s", c.name, after)
			}
		}
	})

	// From here on intactd has userspace trust anchors (the test CA) and
	// allows unsigned images of HOST/dev/*.
	s.stop("intactd")
	s.startIntactd("--trust-anchor", keys.CACert, "--allow-unsigned", s.registry+"/dev/*")

	t.Run("trust anchors refuse early", func(t *testing.T) {
		before := s.kernelState()
		out, err := pull(im.untrusted)
		if err == nil || !strings.Contains(out, "root-hash signature by an untrusted key") || strings.Contains(out, "ENOKEY") {
			t.Errorf("untrusted signer with trust anchors: want a refusal before the kernel is asked, got %v\n%s", err, out)
		}
		t.Logf("refused: %s", errorLine(out))
		if after := s.kernelState(); after.String() != before.String() {
			t.Errorf("the refused pull left kernel state behind:\n%s", after)
		}
	})

	t.Run("pull and run", func(t *testing.T) {
		if out, err := pull(im.app); err != nil {
			t.Fatal(err)
		} else {
			t.Logf("pulled %s", im.app)
			_ = out
		}
		if _, err := pull(im.pause); err != nil {
			t.Fatal(err)
		}
		recs := s.layerRecords()
		if len(recs) != 3 {
			t.Errorf("%d layers for app (3 layers) and pause (its first layer shared): %+v", len(recs), recs)
		}
		checkVerifiedLayers(t, s, recs)
		// Its first layer is verified now; the unsigned image that shares it
		// is still refused.
		if out, err := pull(im.unsigned); err == nil || !strings.Contains(out, "unsigned image refused") {
			t.Errorf("unsigned image after its first layer was verified for app: %v\n%s", err, out)
		}
		out, err := s.ctrRun("--rm", im.app, "c1", "/bin/ctrprobe", "hello")
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(out) != greeting {
			t.Errorf("ctr run printed %q, want %q", out, greeting)
		}
	})

	t.Run("unsigned where allowed", func(t *testing.T) {
		before := len(s.layerRecords())
		if out, err := pull(im.devUnsigned); err != nil {
			t.Fatalf("pull of an allowed unsigned image: %v\n%s", err, out)
		}
		st := s.kernelState()
		var unsigned int
		for _, r := range s.layerRecords() {
			if r.Signed {
				if r.Signer == "" {
					t.Errorf("layer %s: signed, but no signer recorded although trust anchors checked it", r.ID)
				}
				continue
			}
			unsigned++
			tbl := st.devices[dmNamePrefix+instanceTag(s.intactRoot)+"-"+r.ID]
			if r.Profile != "full" || r.Image != im.devUnsigned || strings.Contains(tbl, "root_hash_sig_key_desc") || !strings.Contains(tbl, r.RootHash) {
				t.Errorf("unsigned layer %s: profile %s, image %s, table %q", r.ID, r.Profile, r.Image, tbl)
			}
		}
		// The first layer's chain (same diff_id at the bottom) is app's,
		// committed and verified with its signature: containerd reuses it.
		if unsigned != 1 || len(s.layerRecords()) != before+1 {
			t.Errorf("%d unsigned layers (%d layers before, %d now), want 1 new unsigned one", unsigned, before, len(s.layerRecords()))
		}
		out, err := s.ctrRun("--rm", im.devUnsigned, "u1", "/bin/ctrprobe", "hello")
		if err != nil || strings.TrimSpace(out) != greeting {
			t.Errorf("run: %v\n%s", err, out)
		}
	})

	t.Run("whiteouts and opaque directories", func(t *testing.T) {
		before := len(s.layerRecords())
		if _, err := pull(im.whiteouts); err != nil {
			t.Fatal(err)
		}
		if n := len(s.layerRecords()); n != before+1 {
			t.Errorf("%d layers after the whiteout image, want %d (two shared with app)", n, before+1)
		}
		for path, want := range map[string]string{"/etc/hostname": "ENOENT", "/data/blob.bin": "ENOENT", "/data/new.txt": "read 4 bytes", "/bin/ctrprobe": "read "} {
			out, _ := s.ctrRun("--rm", im.whiteouts, "wh", "/bin/ctrprobe", "read", path)
			if !strings.Contains(out, want) {
				t.Errorf("read %s in the whiteout image: %q, want %q", path, out, want)
			}
		}
	})

	t.Run("rootfs lowers are verified", func(t *testing.T) {
		if _, err := s.ctrRun("-d", im.app, "c2", "/bin/ctrprobe", "pause"); err != nil {
			t.Fatal(err)
		}
		lowers := containerLowers(t, "c2")
		if len(lowers) != 3 {
			t.Fatalf("container c2's overlay has %d lower directories, want 3: %v", len(lowers), lowers)
		}
		ms, _ := mountinfo.Self()
		st := s.kernelState()
		for _, l := range lowers {
			m, ok := mountAt(ms, l)
			if !ok || m.FSType != "erofs" || !strings.HasPrefix(m.Source, "/dev/dm-") {
				t.Errorf("lower %s is not an EROFS mount of a dm device: %+v", l, m)
				continue
			}
			name := dmNameOf(t, m.Source)
			if tbl := st.devices[name]; !strings.Contains(tbl, " verity ") || !strings.Contains(tbl, "root_hash_sig_key_desc") {
				t.Errorf("lower %s: device %s has the table %q, want a verity table with root_hash_sig_key_desc", l, name, tbl)
			}
		}
	})

	t.Run("a changed byte on disk reads as EIO", func(t *testing.T) {
		var data *record
		for _, r := range s.layerRecords() {
			if r.Digest == im.appLayers[1].Digest {
				data = &r
			}
		}
		if data == nil {
			t.Fatal("no layer record for the data layer")
		}
		before, err := s.ctr("task", "exec", "--exec-id", "r1", "c2", "/bin/ctrprobe", "read", "/data/blob.bin")
		if err != nil || !strings.Contains(before, fmt.Sprintf("read %d bytes", 256<<10)) {
			t.Fatalf("read before the change: %v\n%s", err, before)
		}
		path := filepath.Join(s.intactRoot, layersDir, data.ID, dataFile)
		b := readAll(t, path)
		off := bytes.Index(b, im.blobMarker)
		if off < 0 {
			t.Fatal("marker not found in the data device")
		}
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte{b[off] ^ 1}, int64(off)); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if err := linux.DropCaches(); err != nil {
			t.Fatal(err)
		}
		out, err := s.ctr("task", "exec", "--exec-id", "r2", "c2", "/bin/ctrprobe", "read", "/data/blob.bin")
		if err == nil || !strings.Contains(out, "EIO") {
			t.Errorf("reading the changed file: want EIO, got %v\n%s", err, out)
		}
		t.Logf("after flipping byte %d of layer %s's data device: %s", off, data.ID, strings.TrimSpace(out))
		// Put it back, so the cleanup below sees a healthy layer.
		f, _ = os.OpenFile(path, os.O_WRONLY, 0)
		f.WriteAt([]byte{b[off]}, int64(off))
		f.Close()
		linux.DropCaches()
	})

	t.Run("CRI", func(t *testing.T) {
		if out, err := s.crictl("pull", im.unsigned); err == nil || !strings.Contains(out, "unsigned image refused") {
			t.Errorf("crictl pull of an unsigned image: %v\n%s", err, out)
		} else {
			t.Logf("crictl pull %s: %s", im.unsigned, lastLine(out))
		}
		if out, err := s.crictl("pull", im.app); err != nil {
			t.Fatal(out)
		}
		dir := t.TempDir()
		pod := filepath.Join(dir, "pod.json")
		writeJSON(t, pod, map[string]any{
			"metadata":      map[string]any{"name": "p1", "namespace": "default", "uid": "p1-uid"},
			"log_directory": filepath.Join(dir, "logs"),
			"linux":         map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}},
		})
		ctrCfg := filepath.Join(dir, "c.json")
		writeJSON(t, ctrCfg, map[string]any{
			"metadata": map[string]any{"name": "c1"},
			"image":    map[string]any{"image": im.app},
			"command":  []string{"/bin/ctrprobe", "hello"},
			"log_path": "c1.log",
			"linux":    map[string]any{},
		})
		podID, err := s.crictl("runp", pod)
		if err != nil {
			t.Fatal(err)
		}
		podID = strings.TrimSpace(podID)
		cid, err := s.crictl("create", podID, ctrCfg, pod)
		if err != nil {
			t.Fatal(err)
		}
		cid = strings.TrimSpace(cid)
		if _, err := s.crictl("start", cid); err != nil {
			t.Fatal(err)
		}
		var logs string
		for i := 0; i < 100; i++ {
			logs, _ = s.crictl("logs", cid)
			if strings.Contains(logs, greeting) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if !strings.Contains(logs, greeting) {
			t.Errorf("crictl logs: %q, want %q", logs, greeting)
		}
		s.crictl("stopp", podID)
		if _, err := s.crictl("rmp", "-f", podID); err != nil {
			t.Error(err)
		}
	})

	t.Run("IPE", func(t *testing.T) {
		checkIPE(t, s, keys, im.app)
	})

	t.Run("no leaks", func(t *testing.T) {
		s.ctr("task", "kill", "-s", "SIGKILL", "c2")
		for i := 0; i < 50; i++ {
			if _, err := s.ctr("task", "delete", "c2"); err == nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		s.ctr("container", "delete", "c2")
		s.removeImages(t)
		st := s.waitEmpty()
		if !st.empty() {
			t.Errorf("after removing every container and image, intactd left:\n%s", st)
			for _, ns := range []string{"default", "k8s.io"} {
				for _, what := range [][]string{{"containers", "ls"}, {"snapshots", "--snapshotter", "intact", "ls"}, {"leases", "ls"}, {"images", "ls"}} {
					out, _ := s.run(append([]string{"ctr", "--address", s.ctrdSock, "--namespace", ns}, what...)...)
					t.Logf("%s: ctr %s:\n%s", ns, strings.Join(what, " "), out)
				}
			}
		}
		if recs := s.layerRecords(); len(recs) != 0 {
			t.Errorf("%d layer records remain", len(recs))
		}
	})
}

// checkVerifiedLayers checks every layer record against the kernel: signed,
// a verity device whose live table has root_hash_sig_key_desc and the
// record's root hash, EROFS mounted from it.
func checkVerifiedLayers(t *testing.T, s *stack, recs []record) {
	t.Helper()
	st := s.kernelState()
	ms, _ := mountinfo.Self()
	for _, r := range recs {
		name := dmNamePrefix + instanceTag(s.intactRoot) + "-" + r.ID
		tbl := st.devices[name]
		if !r.Signed || !strings.Contains(tbl, "root_hash_sig_key_desc") || !strings.Contains(tbl, r.RootHash) {
			t.Errorf("layer %s (%s): signed=%v, table %q", r.ID, r.Digest, r.Signed, tbl)
		}
		m, ok := mountAt(ms, filepath.Join(s.intactRoot, layersDir, r.ID, mountDir))
		if !ok || m.FSType != "erofs" || dmNameOf(t, m.Source) != name {
			t.Errorf("layer %s: mount %+v, want EROFS from %s", r.ID, m, name)
		}
	}
}

func mountAt(ms []mountinfo.Mount, p string) (mountinfo.Mount, bool) {
	var found mountinfo.Mount
	ok := false
	for _, m := range ms {
		if m.Point == p {
			found, ok = m, true
		}
	}
	return found, ok
}

// dmNameOf maps /dev/dm-N to its device-mapper name.
func dmNameOf(t *testing.T, dev string) string {
	b, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "dm", "name"))
	if err != nil {
		t.Errorf("%s: %v", dev, err)
		return ""
	}
	return strings.TrimSpace(string(b))
}

// containerLowers returns the lower directories of a running container's
// rootfs overlay, as the kernel reports them.
func containerLowers(t *testing.T, id string) []string {
	t.Helper()
	ms, err := mountinfo.Self()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.FSType == "overlay" && strings.HasSuffix(m.Point, "/"+id+"/rootfs") {
			for _, o := range strings.Split(m.SuperOpts, ",") {
				if v, ok := strings.CutPrefix(o, "lowerdir="); ok {
					return strings.Split(v, ":")
				}
			}
		}
	}
	t.Fatalf("no overlay rootfs mount for container %s", id)
	return nil
}

func writeJSON(t *testing.T, path string, v any) {
	b, _ := json.Marshal(v)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// errorLine returns the line of ctr's output that holds its error.
func errorLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "ctr: ") {
			return l
		}
	}
	return lastLine(s)
}

func lastLine(s string) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	return ls[len(ls)-1]
}

// checkIPE activates `DEFAULT op=EXECUTE action=DENY` with boot_verified
// and dmverity_signature allowed: the container's binary from a signed
// layer runs, the same binary copied into the container's writable layer
// is denied (EACCES), and `intact policy audit` explains the denial.
func checkIPE(t *testing.T, s *stack, keys guest.Keys, app string) {
	text := enforceTestPolicy(t, keys, "intactd-test")
	out, err := s.ctrRun("--rm", app, "ipe1", "/bin/ctrprobe", "hello")
	if err != nil || strings.TrimSpace(out) != greeting {
		t.Errorf("under the policy, the signed layer's binary: %v\n%s", err, out)
	}
	out, _ = s.ctrRun("--rm", app, "ipe2", "/bin/ctrprobe", "copyexec", "/bin/ctrprobe", "/tmp/copied")
	if !strings.Contains(out, "exec /tmp/copied: EACCES") {
		t.Errorf("the binary copied into the writable layer: want EACCES, got:\n%s", out)
	}
	pf := filepath.Join(t.TempDir(), "policy.pol")
	os.WriteFile(pf, []byte(text), 0o644)
	aout, err := exec.Command("intact", "policy", "audit", "--json", "--policy", pf).Output()
	if err != nil {
		t.Fatalf("intact policy audit: %v\n%s", err, aout)
	}
	var recs []struct {
		Record      string           `json:"record"`
		Explanation *ipe.Explanation `json:"explanation"`
	}
	if err := json.Unmarshal(aout, &recs); err != nil {
		t.Fatalf("intact policy audit --json: %v\n%s", err, aout)
	}
	for _, r := range recs {
		if ex := r.Explanation; ex != nil && strings.Contains(r.Record, "copied") && strings.Contains(r.Record, "BPRM_CHECK") {
			if !strings.Contains(ex.DecidedBy, "DEFAULT op=EXECUTE action=DENY") {
				t.Errorf("intact policy audit explained the denial as %+v", ex)
			}
			t.Logf("intact policy audit: %s; decided by %s", ex.Summary, ex.DecidedBy)
			return
		}
	}
	t.Errorf("intact policy audit has no explanation for /tmp/copied:\n%s", aout)
}

// enforceTestPolicy signs (with the guest's trusted leaf), loads and
// activates `DEFAULT op=EXECUTE action=DENY` with boot_verified and
// dmverity_signature allowed, named name; it returns the policy text. The
// cleanup activates an allow-all policy and switches enforcement on.
func enforceTestPolicy(t *testing.T, keys guest.Keys, name string) string {
	ctx := context.Background()
	sfs := &ipe.SecurityFS{}
	if err := sfs.Available(); err != nil {
		t.Fatalf("IPE: %v", err)
	}
	// The audit records reach /dev/kmsg through printk_ratelimit.
	os.WriteFile("/proc/sys/kernel/printk_ratelimit_burst", []byte("100000"), 0)
	signer := loadSigner(t, keys.SignKey, keys.SignCert)
	text := "policy_name=" + name + " policy_version=" + nextPolicyVersion() + "\nDEFAULT action=ALLOW\nDEFAULT op=EXECUTE action=DENY\n" +
		"op=EXECUTE boot_verified=TRUE action=ALLOW\nop=EXECUTE dmverity_signature=TRUE action=ALLOW\n"
	blob, err := ipe.Sign([]byte(text), signer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sfs.Load(ctx, blob); err != nil {
		t.Fatal(err)
	}
	if err := sfs.Activate(ctx, name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sfs.SetEnforce(ctx, true)
		b, err := ipe.Sign([]byte("policy_name=allow-all-"+strings.ReplaceAll(policyVersion(), ".", "-")+" policy_version="+nextPolicyVersion()+"\nDEFAULT action=ALLOW\n"), signer)
		if err == nil {
			if p, err := sfs.Load(ctx, b); err == nil {
				sfs.Activate(ctx, p.Name)
			}
		}
	})
	return text
}

// The kernel activates no policy with a lower version than the active
// one: the tests of this boot take increasing versions.
var policyMinor = 0

func nextPolicyVersion() string { policyMinor++; return policyVersion() }
func policyVersion() string     { return fmt.Sprintf("1.0.%d", policyMinor) }

func loadSigner(t *testing.T, keyPath, certPath string) *pkcs7.Signer {
	t.Helper()
	key, err := pkcs7.ParsePrivateKey(readAll(t, keyPath))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pkcs7.ParseCertificates(readAll(t, certPath))
	if err != nil {
		t.Fatal(err)
	}
	s, err := pkcs7.NewSigner(certs[0], key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
