package host

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/intact-project/intact/efi"
	"github.com/intact-project/intact/erofs/erofstest"
	"github.com/intact-project/intact/host/bootcfg"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/internal/vmtest"
	"github.com/intact-project/intact/ipe"
)

// fixture holds what every build test needs: Debian stable's kernel,
// modules and systemd-stub (the VM tier's assets), a static intact-init,
// a key set.
type fixture struct {
	assets   *vmtest.Assets
	init     string
	keys     string
	keySet   *efi.KeySet
	repoRoot string
	buildDir string
}

var (
	fixOnce sync.Once
	fix     fixture
	fixErr  error
)

func getFixture(t *testing.T) *fixture {
	t.Helper()
	testutil.RequireHost(t, "builds host images from the VM tier's Debian assets")
	fixOnce.Do(func() {
		ctx := context.Background()
		if fix.assets, fixErr = vmtest.Fetch(ctx, vmtest.FetchOptions{}); fixErr != nil {
			return
		}
		wd, _ := os.Getwd()
		if fix.repoRoot, fixErr = vmtest.RepoRoot(wd); fixErr != nil {
			return
		}
		fix.buildDir, fixErr = os.MkdirTemp("", "intact-host-test-")
		if fixErr != nil {
			return
		}
		fix.init = filepath.Join(fix.buildDir, "intact-init")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", fix.init, "./cmd/intact-init")
		cmd.Dir, cmd.Env = fix.repoRoot, append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fixErr = errors.New("build intact-init: " + string(out))
			return
		}
		if fix.keySet, fixErr = efi.GenerateKeys(efi.KeyOptions{Name: "intact host test"}); fixErr != nil {
			return
		}
		fix.keys = filepath.Join(fix.buildDir, "keys")
		fixErr = fix.keySet.WriteDir(fix.keys)
	})
	if fixErr != nil {
		testutil.Unavailable(t, "host build fixture: "+fixErr.Error())
	}
	return &fix
}

// spec returns a specification for root with the fixture's kernel.
func (f *fixture) spec(root string) *Spec {
	s := &Spec{}
	s.Root.Source = root
	s.Kernel.Vmlinuz = f.assets.Vmlinuz()
	s.Kernel.Modules = f.assets.ModulesDir()
	s.Boot.Stub = f.assets.Stub()
	s.Boot.IntactInit = f.init
	s.Boot.Cmdline = "console=ttyS0,115200 intact.on_failure=poweroff"
	s.Keys = f.keys
	return s
}

// smallRoot writes a small root tree (a /sbin/init script stands in for
// an init; the build only checks that it exists).
func smallRoot(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "root")
	for p, data := range map[string]string{
		"sbin/init":       "#!/bin/sh\n",
		"etc/os-release":  "ID=intact-test\nNAME=\"intact test\"\n",
		"usr/share/a.txt": strings.Repeat("intact ", 10000),
		"usr/bin/tool":    strings.Repeat("\x7fELF", 3000),
	} {
		p = filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(data), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Symlink("tool", filepath.Join(root, "usr/bin/tool-link"))
	return root
}

func build(t *testing.T, s *Spec, epoch int64) (string, *Manifest) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	m, err := Build(context.Background(), Options{Spec: s, OutDir: out, SourceDateEpoch: epoch})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	return out, m
}

// TestBuildDeterministic: two builds of the same inputs with the same
// SOURCE_DATE_EPOCH (in different output directories, with different
// GOMAXPROCS) give byte-identical disk images; another epoch gives
// another image.
func TestBuildDeterministic(t *testing.T) {
	f := getFixture(t)
	root := smallRoot(t)
	outA, a := build(t, f.spec(root), 1700000000)
	prev := runtime.GOMAXPROCS(1)
	outB, b := build(t, f.spec(root), 1700000000)
	runtime.GOMAXPROCS(prev)
	for _, name := range []string{DiskFile, UKIFile, RootFile, VerityFile, InitrdFile, PolicyFile, SigFile} {
		x, _ := os.ReadFile(filepath.Join(outA, name))
		y, _ := os.ReadFile(filepath.Join(outB, name))
		if len(x) == 0 || !bytes.Equal(x, y) {
			t.Errorf("%s differs between two builds (%d and %d bytes)", name, len(x), len(y))
		}
	}
	if a.RootHash != b.RootHash || a.UKI.SHA256 != b.UKI.SHA256 {
		t.Errorf("manifests differ: %s/%s vs %s/%s", a.RootHash, a.UKI.SHA256, b.RootHash, b.UKI.SHA256)
	}
	outC, _ := build(t, f.spec(root), 1700000001)
	x, _ := os.ReadFile(filepath.Join(outA, DiskFile))
	y, _ := os.ReadFile(filepath.Join(outC, DiskFile))
	if bytes.Equal(x, y) {
		t.Error("another SOURCE_DATE_EPOCH gave the same disk")
	}
	sum := sha256.Sum256(x)
	t.Logf("disk sha256 %x, %d bytes, root hash %s", sum, a.Disk.Size, a.RootHash)
}

// TestBuildReferenceTools checks every output with the tool that owns its
// format: partx (GPT), fsck.fat and mcopy (ESP), fsck.erofs (root),
// veritysetup (tree, also on the partitions), sbverify and intact's own
// Authenticode check (UKI), openssl cms (root-hash signature, policy),
// zstd and cpio (initramfs).
func TestBuildReferenceTools(t *testing.T) {
	f := getFixture(t)
	root := smallRoot(t)
	s := f.spec(root)
	s.Root.Files = []File{{Src: filepath.Join(root, "usr/share/a.txt"), Dst: "/opt/extra/added.txt", Mode: "0600"}}
	out, m := build(t, s, 1700000000)
	disk := filepath.Join(out, DiskFile)
	dir := t.TempDir()
	run := func(name string, args ...string) string {
		t.Helper()
		tool := testutil.RequireTool(t, name)
		b, err := exec.Command(tool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, b)
		}
		return string(b)
	}
	// GPT as util-linux reads it.
	pt := run("partx", "--show", "--bytes", "--noheadings", "-o", "NR,START,SECTORS,NAME,UUID,TYPE", disk)
	lines := strings.Split(strings.TrimSpace(pt), "\n")
	if len(lines) != len(m.Disk.Partitions) {
		t.Fatalf("partx lists %d partitions, manifest %d:\n%s", len(lines), len(m.Disk.Partitions), pt)
	}
	for i, l := range lines {
		fl := strings.Fields(l)
		p := m.Disk.Partitions[i]
		if len(fl) != 6 || fl[1] != itoa(p.Offset/512) || fl[2] != itoa(p.Size/512) || fl[3] != p.Name || fl[4] != p.UUID || fl[5] != p.Type {
			t.Errorf("partition %d: partx %q, manifest %+v", i+1, l, p)
		}
	}
	rootUUID, verityUUID := bootcfg.PartitionUUIDs(mustHex(t, m.RootHash))
	if m.Disk.Partitions[0].UUID != rootUUID || m.Disk.Partitions[1].UUID != verityUUID {
		t.Errorf("root/verity UUIDs %s %s, want %s %s (from the root hash)", m.Disk.Partitions[0].UUID, m.Disk.Partitions[1].UUID, rootUUID, verityUUID)
	}
	if m.Disk.Partitions[3].Type != bootcfg.TypeESP {
		t.Errorf("partition 4 is %s, want the ESP", m.Disk.Partitions[3].Type)
	}
	df, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer df.Close()
	parts, err := bootcfg.ReadGPT(df)
	if err != nil || len(parts) != 4 || parts[2].Type != bootcfg.TypeRootSigX86 {
		t.Errorf("ReadGPT: %v %+v", err, parts)
	}
	// The partitions, cut out of the disk.
	cut := func(i int, name string) string {
		p := m.Disk.Partitions[i]
		b := make([]byte, p.Size)
		if _, err := df.ReadAt(b, p.Offset); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		os.WriteFile(path, b, 0o644)
		return path
	}
	esp := cut(3, "esp.img")
	run("fsck.fat", "-n", esp)
	run("mcopy", "-n", "-i", esp, "::EFI/BOOT/BOOTX64.EFI", filepath.Join(dir, "bootx64.efi"))
	if !sameFile(t, filepath.Join(dir, "bootx64.efi"), filepath.Join(out, UKIFile)) {
		t.Error("EFI/BOOT/BOOTX64.EFI is not uki.efi")
	}
	rootPart, verityPart := cut(0, "root.part"), cut(1, "verity.part")
	fsck := erofstest.ErofsUtils(t, "fsck.erofs") // erofs-utils 1.9 (scripts/build-erofs-utils)
	run(fsck, filepath.Join(out, RootFile))
	ext := filepath.Join(dir, "extract")
	run(fsck, "--extract="+ext, filepath.Join(out, RootFile))
	if b, _ := os.ReadFile(filepath.Join(ext, "opt/extra/added.txt")); !bytes.Equal(b, []byte(strings.Repeat("intact ", 10000))) {
		t.Error("the extra file is not in the root")
	}
	if st, err := os.Stat(filepath.Join(ext, "opt/extra/added.txt")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("extra file mode: %v %v", st, err)
	}
	for _, d := range []string{"dev", "proc", "sys", "run", "var", "tmp"} {
		if st, err := os.Stat(filepath.Join(ext, d)); err != nil || !st.IsDir() {
			t.Errorf("mount point /%s missing: %v", d, err)
		}
	}
	run("veritysetup", "verify", filepath.Join(out, RootFile), filepath.Join(out, VerityFile), m.RootHash)
	run("veritysetup", "verify", rootPart, verityPart, m.RootHash)
	dump := run("veritysetup", "dump", verityPart)
	if !strings.Contains(dump, "Data blocks:     \t"+itoa(int64(m.Verity.DataBlocks))) && !strings.Contains(dump, itoa(int64(m.Verity.DataBlocks))) {
		t.Errorf("veritysetup dump:\n%s", dump)
	}
	// The UKI: signed by db, as firmware checks it.
	run("sbverify", "--cert", filepath.Join(f.keys, "db.crt"), filepath.Join(out, UKIFile))
	// The signature partition: DPS JSON, PKCS#7 over the lowercase root hash.
	sigPart := cut(2, "sig.part")
	b, _ := os.ReadFile(sigPart)
	sig, der, err := bootcfg.ParseSignature(b[:bootcfg.SigPartitionSize])
	if err != nil || sig.RootHash != m.RootHash {
		t.Fatalf("signature partition: %v %+v", err, sig)
	}
	if len(bytes.Trim(b[bootcfg.SigPartitionSize:], "\x00")) != 0 {
		t.Error("signature partition has data after the JSON block")
	}
	fp := sha256.Sum256(f.keySet.Signing.Certificate.Raw)
	if sig.CertificateFingerprint != hex.EncodeToString(fp[:]) {
		t.Errorf("certificateFingerprint %s", sig.CertificateFingerprint)
	}
	os.WriteFile(filepath.Join(dir, "sig.der"), der, 0o644)
	os.WriteFile(filepath.Join(dir, "roothash"), []byte(m.RootHash), 0o644)
	run("openssl", "cms", "-verify", "-binary", "-inform", "der", "-in", filepath.Join(dir, "sig.der"), "-content", filepath.Join(dir, "roothash"),
		"-CAfile", filepath.Join(f.keys, "db.crt"), "-purpose", "any", "-out", os.DevNull)
	run("openssl", "cms", "-verify", "-binary", "-inform", "der", "-in", filepath.Join(out, PolicyFile),
		"-CAfile", filepath.Join(f.keys, "db.crt"), "-purpose", "any", "-out", filepath.Join(dir, "policy.txt"))
	if pb, _ := os.ReadFile(filepath.Join(dir, "policy.txt")); string(pb) != m.Policy.Text || !strings.Contains(string(pb), "DEFAULT op=KMODULE action=DENY") {
		t.Errorf("signed policy text:\n%s", pb)
	}
	// Kernel modules and firmware: the initramfs and this root only, never
	// any signed device (a container layer); execution: every signed device.
	pol, err := ipe.Parse([]byte(m.Policy.Text))
	if err != nil {
		t.Fatal(err)
	}
	rootDigest := ipe.Digest{Alg: "sha256", Value: mustHex(t, m.RootHash)}
	layer := ipe.Digest{Alg: "sha256", Value: make([]byte, 32)}
	for _, c := range []struct {
		ctx  ipe.Context
		want ipe.Action
	}{
		{ipe.Context{Op: ipe.OpKModule, DMVerity: &rootDigest, DMVeritySigned: true}, ipe.ActionAllow},
		{ipe.Context{Op: ipe.OpFirmware, DMVerity: &rootDigest, DMVeritySigned: true}, ipe.ActionAllow},
		{ipe.Context{Op: ipe.OpKModule, BootVerified: true}, ipe.ActionAllow},
		{ipe.Context{Op: ipe.OpKModule, DMVerity: &layer, DMVeritySigned: true}, ipe.ActionDeny},
		{ipe.Context{Op: ipe.OpFirmware, DMVerity: &layer, DMVeritySigned: true}, ipe.ActionDeny},
		{ipe.Context{Op: ipe.OpExecute, DMVerity: &layer, DMVeritySigned: true}, ipe.ActionAllow},
		{ipe.Context{Op: ipe.OpExecute, DMVerity: &layer}, ipe.ActionDeny},
	} {
		if got := pol.Evaluate(c.ctx).Action; got != c.want {
			t.Errorf("policy: %+v: %v, want %v\n%s", c.ctx, got, c.want, m.Policy.Text)
		}
	}
	// The initramfs, as cpio lists it, holds the init, the modules, the
	// configuration with this root hash and the policy.
	raw, err := os.ReadFile(filepath.Join(out, InitrdFile))
	if err != nil {
		t.Fatal(err)
	}
	dec, _ := zstd.NewReader(nil)
	cpioData, err := dec.DecodeAll(raw, nil)
	if err != nil {
		t.Fatalf("initramfs is not zstd: %v", err)
	}
	// Two archives, one after the other: cpio lists each.
	tool := testutil.RequireTool(t, "cpio")
	trailer := bytes.Index(cpioData, []byte("TRAILER!!!"))
	if trailer < 0 {
		t.Fatal("no cpio trailer")
	}
	second := bytes.TrimLeft(cpioData[trailer+len("TRAILER!!!"):], "\x00")
	var list []byte
	for _, archive := range [][]byte{cpioData, second} {
		cmd := exec.Command(tool, "-t", "--quiet")
		cmd.Stdin = bytes.NewReader(archive)
		l, err := cmd.Output()
		if err != nil {
			t.Fatalf("cpio -t: %v", err)
		}
		list = append(list, l...)
	}
	for _, want := range []string{"init", "dev/console", "etc/intact/init.json", "etc/intact/policy.p7s",
		"lib/modules/" + m.KernelRelease + "/modules.dep", "lib/modules/" + m.KernelRelease + "/kernel/drivers/md/dm-verity.ko"} {
		if !bytes.Contains(list, []byte("\n"+want+"\n")) && !bytes.HasPrefix(list, []byte(want+"\n")) {
			t.Errorf("initramfs lacks %s:\n%s", want, list)
		}
	}
	i := bytes.Index(cpioData, []byte(`"root_hash": "`))
	if i < 0 || !bytes.HasPrefix(cpioData[i+len(`"root_hash": "`):], []byte(m.RootHash)) {
		t.Error("the initramfs configuration does not carry the root hash")
	}
	// manifest.json is what Build returned.
	mb, _ := os.ReadFile(filepath.Join(out, ManifestFile))
	var back Manifest
	if err := json.Unmarshal(mb, &back); err != nil || back.RootHash != m.RootHash || back.UKI.SHA256 != m.UKI.SHA256 {
		t.Errorf("manifest.json: %v", err)
	}
	ab, _ := os.ReadFile(filepath.Join(out, UKIFile))
	res, err := efi.Verify(bytes.NewReader(ab), int64(len(ab)), []*x509.Certificate{f.keySet.DB.Certificate})
	if err != nil || !res.Trusted() || hex.EncodeToString(res.Digest) != m.UKI.AuthenticodeSHA256 {
		t.Errorf("efi.Verify of uki.efi: %v", err)
	}
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

func mustHex(t *testing.T, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sameFile(t *testing.T, a, b string) bool {
	x, err1 := os.ReadFile(a)
	y, err2 := os.ReadFile(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

// TestBuildFromDebianPackage: the kernel and modules read from Debian's
// linux-image .deb (in Go: ar, data.tar.xz) give the same disk image as the
// unpacked vmlinuz and lib/modules tree (which has no modules.dep, so the
// modules' own depends= are read in both cases).
func TestBuildFromDebianPackage(t *testing.T) {
	f := getFixture(t)
	var deb string
	for _, d := range f.assets.Debs {
		if d.Package == f.assets.KernelPackage {
			deb = filepath.Join(vmtest.DefaultCacheDir(), "debs", d.File)
		}
	}
	if deb == "" {
		t.Fatal("no kernel package among the VM assets")
	}
	root := smallRoot(t)
	outA, _ := build(t, f.spec(root), 1700000000)
	s := f.spec(root)
	s.Kernel.Vmlinuz, s.Kernel.Modules, s.Kernel.Deb = "", "", deb
	outB, m := build(t, s, 1700000000)
	if !sameFile(t, filepath.Join(outA, DiskFile), filepath.Join(outB, DiskFile)) {
		t.Error("the disk built from the .deb differs from the one built from the unpacked kernel")
	}
	if len(m.Initramfs.Modules) < 4 || m.KernelRelease != f.assets.KernelRelease {
		t.Errorf("modules %v, release %s", m.Initramfs.Modules, m.KernelRelease)
	}
}

// TestBuildVarPartition: with var.mode = "partition" the disk gets a DPS var
// partition with an ext4 file system e2fsck accepts, before the ESP.
func TestBuildVarPartition(t *testing.T) {
	f := getFixture(t)
	s := f.spec(smallRoot(t))
	s.Var.Mode, s.Var.Size = bootcfg.VarPartition, "64M"
	s.Boot.TrustMachineKeyring = true // carried to the init's configuration
	out, m := build(t, s, 1700000000)
	if len(m.Disk.Partitions) != 5 || m.Disk.Partitions[3].Type != bootcfg.TypeVar || m.Disk.Partitions[4].Type != bootcfg.TypeESP {
		t.Fatalf("partitions %+v", m.Disk.Partitions)
	}
	p := m.Disk.Partitions[3]
	b := make([]byte, p.Size)
	df, err := os.Open(filepath.Join(out, DiskFile))
	if err != nil {
		t.Fatal(err)
	}
	defer df.Close()
	if _, err := df.ReadAt(b, p.Offset); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "var.img")
	os.WriteFile(img, b, 0o644)
	e2fsck := testutil.RequireTool(t, "e2fsck")
	if out, err := exec.Command(e2fsck, "-f", "-n", img).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -f -n: %v\n%s", err, out)
	}
	cfgVar := ""
	raw, _ := os.ReadFile(filepath.Join(out, InitrdFile))
	dec, _ := zstd.NewReader(nil)
	if data, err := dec.DecodeAll(raw, nil); err == nil && bytes.Contains(data, []byte(`"mode": "partition"`)) {
		cfgVar = "partition"
	}
	if cfgVar != "partition" {
		t.Error("the initramfs configuration does not ask for the var partition")
	}
	if data, err := dec.DecodeAll(raw, nil); err != nil || !bytes.Contains(data, []byte(`"trust_machine_keyring": true`)) {
		t.Error("the initramfs configuration does not keep .machine trusted")
	}
}

func TestBuildRefusesBadSpecs(t *testing.T) {
	f := getFixture(t)
	root := smallRoot(t)
	for name, mod := range map[string]func(*Spec){
		"no root":            func(s *Spec) { s.Root.Source = "" },
		"missing root":       func(s *Spec) { s.Root.Source = filepath.Join(root, "nope") },
		"no init":            func(s *Spec) { s.Boot.Init = "/sbin/missing" },
		"no keys":            func(s *Spec) { s.Keys = t.TempDir() },
		"bad var":            func(s *Spec) { s.Var.Mode = "disk" },
		"var no size":        func(s *Spec) { s.Var.Mode = "partition" },
		"bad version":        func(s *Spec) { s.Policy.Version = "1.2" },
		"tiny esp":           func(s *Spec) { s.Disk.ESPSize = "1M" },
		"deb and kernel":     func(s *Spec) { s.Kernel.Deb = "x.deb" },
		"unknown module":     func(s *Spec) { s.Boot.Modules = []string{"no_such_module"} },
		"unknown capability": func(s *Spec) { s.Boot.DropCapabilities = []string{"sys_nonsense"} },
		"bad policy text": func(s *Spec) {
			p := filepath.Join(t.TempDir(), "p")
			os.WriteFile(p, []byte("nonsense\n"), 0o644)
			s.Policy.File = p
		},
	} {
		s := f.spec(root)
		mod(s)
		out := filepath.Join(t.TempDir(), "out")
		if _, err := Build(context.Background(), Options{Spec: s, OutDir: out}); err == nil {
			t.Errorf("%s: built", name)
		} else if _, err := os.Stat(filepath.Join(out, DiskFile)); err == nil {
			t.Errorf("%s: left disk.img behind", name)
		}
		if name == "unknown module" { // refused by the kernel step, while the root was being built
			for _, f := range []string{RootFile, VerityFile} {
				if _, err := os.Stat(filepath.Join(out, f)); err == nil {
					t.Errorf("%s: left %s behind", name, f)
				}
			}
		}
	}
}
