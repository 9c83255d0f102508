// Command intact-init is PID 1 of an immutable host's initramfs (built by
// `intact host build`). It loads the kernel modules it needs from the
// initramfs (dependencies from modules.dep), finds the root, root-verity
// and root-verity-sig partitions by their Discoverable Partitions type
// GUIDs, checks that the signature partition names the root hash baked
// into the initramfs, opens the root with dm-verity and the PKCS#7
// root-hash signature (the kernel verifies it against its keyrings; the
// db key is in the platform keyring), mounts the EROFS root read-only,
// gives /var a tmpfs (or the state partition), /etc a tmpfs overlay and
// /tmp a tmpfs,
// loads and activates the signed IPE policy, then switches to the root and
// execs its init.
//
// Every failure fails closed: one console line naming the step and the
// error, then the machine halts (or powers off or reboots, as configured).
// There is no rescue shell and no path that mounts an unverified root.
// The configuration format is package host/bootcfg; docs/host.md has the
// boot sequence. Build it with CGO_ENABLED=0 (a static binary).
package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/intact-project/intact/host/bootcfg"
	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/ipe"
	"github.com/intact-project/intact/keyring"
	"github.com/intact-project/intact/verity"
	"github.com/intact-project/intact/veritydev"
)

const sysroot = "/sysroot"

var (
	console   io.Writer = os.Stdout
	onFailure           = bootcfg.FailHalt
	started             = time.Now()
)

func logf(format string, args ...any) {
	fmt.Fprintf(console, "intact-init: "+format+"\n", args...)
}

// fail prints the failed step and stops the machine. It never returns.
func fail(step string, err error) {
	fmt.Fprintf(console, "intact-init: FAILED at %s: %s\n", step, oneLine(err.Error()))
	fmt.Fprintf(console, "intact-init: refusing to continue without a verified root (%s)\n", onFailure)
	if f, ok := console.(*os.File); ok {
		f.Sync()
	}
	var err2 error
	switch onFailure {
	case bootcfg.FailPowerOff:
		err2 = linux.PowerOff()
	case bootcfg.FailReboot:
		err2 = linux.Reboot()
	default:
		err2 = linux.Halt()
	}
	fmt.Fprintf(console, "intact-init: %v; sleeping forever\n", err2)
	for {
		time.Sleep(time.Hour)
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func main() {
	defer func() {
		if r := recover(); r != nil {
			fail("init", fmt.Errorf("internal error: %v", r))
		}
	}()
	// The capability bounding set is per thread, and the root's init
	// inherits the set of the thread that executes it: run on one thread.
	runtime.LockOSThread()
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "intact-init: must run as PID 1 of an initramfs built by 'intact host build'")
		os.Exit(2)
	}
	mountBasics()
	up0 := uptime()
	cfg, err := loadConfig()
	if err != nil {
		fail("configuration", err)
	}
	if cfg.OnFailure != "" {
		onFailure = cfg.OnFailure
	}
	// The command line is part of the signed UKI: intact.on_failure= may
	// override the configured action.
	if v := cmdlineValue("intact.on_failure"); v == bootcfg.FailHalt || v == bootcfg.FailPowerOff || v == bootcfg.FailReboot {
		onFailure = v
	}
	logf("starting (kernel uptime %s); expecting root hash %s", up0, cfg.RootHash)
	ctx := context.Background()
	step := func(name string, fn func() error) {
		t := time.Now()
		if err := fn(); err != nil {
			fail(name, err)
		}
		logf("%s: ok (%s)", name, time.Since(t).Round(time.Millisecond))
	}
	step("distrust MOK keys", func() error { return distrustMachine(cfg) })
	step("load modules", func() error { return loadModules(cfg) })
	var parts found
	step("find partitions", func() error { var err error; parts, err = findPartitions(ctx, cfg); return err })
	var sig []byte
	step("read root-hash signature", func() error { var err error; sig, err = readSignature(parts.sig, cfg); return err })
	var dev *veritydev.Device
	step("open dm-verity root", func() error { var err error; dev, err = openRoot(ctx, cfg, parts, sig); return err })
	step("mount root", func() error { return mountRoot(cfg, dev) })
	step("mount /var", func() error { return mountVar(ctx, cfg, parts) })
	step("mount /etc", func() error { return mountEtc(cfg) })
	step("mount /tmp", func() error {
		return linux.Mount("tmpfs", filepath.Join(sysroot, "tmp"), "tmpfs", linux.MS_NODEV|linux.MS_NOSUID, "mode=1777")
	})
	step("activate IPE policy", func() error { return activatePolicy(ctx, cfg) })
	step("drop capabilities", func() error { return dropCapabilities(cfg) })
	logf("root %s verified (signed), mounted read-only from %s; init took %s, kernel uptime %s; switching to %s",
		cfg.RootHash, dev.Path, time.Since(started).Round(time.Millisecond), uptime(), cfg.Init[0])
	if err := switchRoot(cfg); err != nil {
		fail("switch_root", err)
	}
}

func mountBasics() {
	for _, m := range []struct {
		src, dst, fs string
		flags        uintptr
		data         string
	}{
		{"proc", "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", linux.MS_NOSUID, "mode=0755"},
		{"tmpfs", "/run", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=0755"},
		{"securityfs", "/sys/kernel/security", "securityfs", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC, ""},
	} {
		os.MkdirAll(m.dst, 0o755)
		if err := linux.Mount(m.src, m.dst, m.fs, m.flags, m.data); err != nil {
			fail("mount "+m.dst, err)
		}
	}
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		console = f
	}
}

func uptime() string {
	b, _ := os.ReadFile("/proc/uptime")
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0] + "s"
	}
	return "?"
}

func cmdlineValue(key string) string {
	b, _ := os.ReadFile("/proc/cmdline")
	for _, f := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

func loadConfig() (*bootcfg.Config, error) {
	b, err := os.ReadFile(bootcfg.ConfigPath)
	if err != nil {
		return nil, err
	}
	return bootcfg.Parse(b)
}

// loadModules loads cfg.Modules, each after its dependencies as listed in
// modules.dep.
func loadModules(cfg *bootcfg.Config) error {
	dir := filepath.Join(bootcfg.ModulesDir, cfg.KernelRelease)
	dep, err := os.ReadFile(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return err
	}
	deps := map[string][]string{} // module name -> files, dependencies first (modules.dep order is reversed)
	paths := map[string]string{}
	for _, line := range strings.Split(string(dep), "\n") {
		mod, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n := modName(mod)
		paths[n] = mod
		deps[n] = strings.Fields(rest)
	}
	loaded := map[string]bool{}
	var load func(name string, depth int) error
	load = func(name string, depth int) error {
		n := modName(name)
		if loaded[n] {
			return nil
		}
		if depth > 64 {
			return fmt.Errorf("module dependency loop at %s", n)
		}
		p, ok := paths[n]
		if !ok {
			if builtin(dir, n) {
				loaded[n] = true
				return nil
			}
			return fmt.Errorf("module %s is not in the initramfs", n)
		}
		for _, d := range deps[n] {
			if err := load(d, depth+1); err != nil {
				return err
			}
		}
		loaded[n] = true
		params := moduleParams(n)
		if params != "" {
			logf("module %s: %s (from the command line)", n, params)
		}
		return finit(filepath.Join(dir, p), params)
	}
	for _, m := range cfg.Modules {
		if err := load(m, 0); err != nil {
			return err
		}
	}
	return nil
}

func builtin(dir, n string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "modules.builtin"))
	if err != nil {
		return false
	}
	for _, l := range strings.Fields(string(b)) {
		if modName(l) == n {
			return true
		}
	}
	return false
}

func modName(s string) string {
	s = filepath.Base(s)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		s = strings.TrimSuffix(s, ext)
	}
	return strings.ReplaceAll(strings.TrimSuffix(s, ".ko"), "-", "_")
}

// moduleParams returns the parameters the kernel command line gives module
// n ("dm_verity.require_signatures=1" -> "require_signatures=1"), as
// modprobe passes them: the kernel applies command-line parameters to
// built-in code only, a module loaded later gets them from its loader.
func moduleParams(n string) string {
	b, _ := os.ReadFile("/proc/cmdline")
	var ps []string
	for _, f := range strings.Fields(string(b)) {
		mod, param, ok := strings.Cut(f, ".")
		if ok && strings.ReplaceAll(mod, "-", "_") == n && param != "" && !strings.HasPrefix(param, "=") {
			ps = append(ps, param)
		}
	}
	return strings.Join(ps, " ")
}

func finit(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	if strings.HasSuffix(path, ".xz") || strings.HasSuffix(path, ".zst") || strings.HasSuffix(path, ".gz") {
		flags = linux.ModuleInitCompressedFile
	}
	if err := linux.FinitModule(f, params, flags); err != nil && !errors.Is(err, linux.EEXIST) {
		return err
	}
	return nil
}

type partDev struct {
	dev  string // /dev/vda2
	part bootcfg.Partition
}

type found struct {
	root, verity, sig partDev
	vars              *partDev
}

// findPartitions waits for the boot disk and returns the partitions of
// the root the configuration names: the root and root-verity partitions
// whose UUIDs derive from the expected root hash, and the disk's
// root-verity-sig partition.
func findPartitions(ctx context.Context, cfg *bootcfg.Config) (found, error) {
	want, _ := hex.DecodeString(cfg.RootHash)
	rootUUID, verityUUID := bootcfg.PartitionUUIDs(want)
	deadline := time.Now().Add(20 * time.Second)
	var seen []string
	for {
		seen = seen[:0]
		disks, _ := filepath.Glob("/sys/block/*")
		for _, d := range disks {
			name := filepath.Base(d)
			if strings.HasPrefix(name, "loop") || strings.HasPrefix(name, "ram") || strings.HasPrefix(name, "dm-") || strings.HasPrefix(name, "sr") {
				continue
			}
			f, err := os.Open("/dev/" + name)
			if err != nil {
				continue
			}
			parts, err := bootcfg.ReadGPT(f)
			f.Close()
			if err != nil {
				continue
			}
			var fd found
			var sigs int
			for _, p := range parts {
				pd := partDev{part: p}
				switch p.Type {
				case bootcfg.TypeRootX86:
					seen = append(seen, fmt.Sprintf("/dev/%s partition %d (root %s)", name, p.Index, p.UUID))
					if p.UUID == rootUUID {
						fd.root = pd
					}
				case bootcfg.TypeRootVerityX86:
					if p.UUID == verityUUID {
						fd.verity = pd
					}
				case bootcfg.TypeRootSigX86:
					fd.sig, sigs = pd, sigs+1
				case bootcfg.TypeVar:
					v := pd
					fd.vars = &v
				}
			}
			if fd.root.part.Index == 0 || fd.verity.part.Index == 0 {
				continue
			}
			if sigs != 1 {
				return found{}, fmt.Errorf("/dev/%s has %d root-verity-sig partitions (want exactly 1)", name, sigs)
			}
			for _, pd := range []*partDev{&fd.root, &fd.verity, &fd.sig, fd.vars} {
				if pd == nil {
					continue
				}
				if pd.dev, err = partitionNode(ctx, name, pd.part.Index); err != nil {
					return found{}, err
				}
			}
			logf("boot disk /dev/%s: root %s, root-verity %s, signature %s", name, fd.root.dev, fd.verity.dev, fd.sig.dev)
			return fd, nil
		}
		if time.Now().After(deadline) {
			if len(seen) > 0 {
				return found{}, fmt.Errorf("no root partition with UUID %s (derived from the expected root hash %s); found %s",
					rootUUID, cfg.RootHash, strings.Join(seen, ", "))
			}
			return found{}, fmt.Errorf("no disk with a root partition (DPS type %s) appeared within 20s", bootcfg.TypeRootX86)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// partitionNode finds the device node of partition n of disk (sysfs
// names it vda2 or nvme0n1p2) and waits for devtmpfs to create it.
func partitionNode(ctx context.Context, disk string, n int) (string, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		ents, _ := os.ReadDir("/sys/block/" + disk)
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join("/sys/block", disk, e.Name(), "partition"))
			if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(n) {
				continue
			}
			node := "/dev/" + e.Name()
			if _, err := os.Stat(node); err == nil {
				return node, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("partition %d of /dev/%s has no device node", n, disk)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// readSignature reads the root-verity-sig partition and checks that it
// names the expected root hash.
func readSignature(p partDev, cfg *bootcfg.Config) ([]byte, error) {
	f, err := os.Open(p.dev)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, bootcfg.SigPartitionSize)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fmt.Errorf("%s: %w", p.dev, err)
	}
	s, der, err := bootcfg.ParseSignature(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.dev, err)
	}
	if s.RootHash != cfg.RootHash {
		return nil, fmt.Errorf("%s names root hash %s, but the initramfs expects %s", p.dev, s.RootHash, cfg.RootHash)
	}
	logf("root-hash signature: %d bytes, signer certificate sha256 %s", len(der), s.CertificateFingerprint)
	return der, nil
}

// openRoot checks the root-verity superblock against the configuration and
// opens the verity device with the signature.
func openRoot(ctx context.Context, cfg *bootcfg.Config, parts found, sig []byte) (*veritydev.Device, error) {
	salt, _ := hex.DecodeString(cfg.Verity.Salt)
	root, _ := hex.DecodeString(cfg.RootHash)
	p := verity.Params{HashType: verity.HashTypeNormal, Algorithm: cfg.Verity.Algorithm,
		DataBlockSize: cfg.Verity.DataBlockSize, HashBlockSize: cfg.Verity.HashBlockSize,
		DataBlocks: cfg.Verity.DataBlocks, Salt: salt, NoSuperblock: true}
	if cfg.Verity.Superblock {
		f, err := os.Open(parts.verity.dev)
		if err != nil {
			return nil, err
		}
		sb, err := verity.ReadSuperblock(f, 0)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", parts.verity.dev, err)
		}
		if sb.Algorithm != p.Algorithm || sb.DataBlockSize != p.DataBlockSize || sb.HashBlockSize != p.HashBlockSize ||
			sb.DataBlocks != p.DataBlocks || !bytes.Equal(sb.Salt, p.Salt) || sb.HashType != p.HashType {
			return nil, fmt.Errorf("the verity superblock on %s does not match the parameters in the initramfs", parts.verity.dev)
		}
		p.HashOffset = uint64(p.HashBlockSize) // the tree follows the superblock's hash block
	}
	var topts verity.TableOptions
	for _, o := range cfg.VerityOptions {
		switch o {
		case "restart_on_corruption":
			topts.OnCorruption = verity.CorruptionRestart
		case "panic_on_corruption":
			topts.OnCorruption = verity.CorruptionPanic
		case "restart_on_error":
			topts.OnError = verity.ErrorRestart
		case "panic_on_error":
			topts.OnError = verity.ErrorPanic
		default:
			return nil, fmt.Errorf("unknown verity option %q", o)
		}
	}
	dev, err := veritydev.OpenConfig(ctx, veritydev.Config{Name: "root", Data: parts.root.dev, Hash: parts.verity.dev,
		Params: p, RootHash: root, Signature: sig, Table: topts, UUID: "INTACT-ROOT-" + cfg.RootHash[:32],
		SigKeyDesc: "intact:root-" + cfg.RootHash[:16]}) // fixed: a random one would wait for the entropy pool
	if err != nil {
		if errors.Is(err, veritydev.ErrSignatureRejected) {
			return nil, fmt.Errorf("the kernel refused the root-hash signature (is the signer's CA in db?): %w", err)
		}
		return nil, err
	}
	return dev, nil
}

func mountRoot(cfg *bootcfg.Config, dev *veritydev.Device) error {
	if err := os.MkdirAll(sysroot, 0o755); err != nil {
		return err
	}
	fstype := cfg.RootFSType
	if fstype == "" {
		fstype = "erofs"
	}
	if err := linux.Mount(dev.Path, sysroot, fstype, linux.MS_RDONLY|linux.MS_NODEV, ""); err != nil {
		return err
	}
	for _, d := range []string{"dev", "proc", "sys", "run", "var", "etc", "tmp"} {
		if st, err := os.Stat(filepath.Join(sysroot, d)); err != nil || !st.IsDir() {
			return fmt.Errorf("the root has no /%s directory", d)
		}
	}
	if _, err := os.Lstat(filepath.Join(sysroot, cfg.Init[0])); err != nil {
		return fmt.Errorf("the root has no init %s: %w", cfg.Init[0], err)
	}
	return nil
}

func mountVar(ctx context.Context, cfg *bootcfg.Config, parts found) error {
	target := filepath.Join(sysroot, "var")
	if cfg.Var.Mode == bootcfg.VarPartition {
		if parts.vars == nil {
			return errors.New("the configuration wants a state partition for /var, but the disk has none (DPS var type)")
		}
		fstype := cfg.Var.FSType
		if fstype == "" {
			fstype = "ext4"
		}
		return linux.Mount(parts.vars.dev, target, fstype, linux.MS_NODEV|linux.MS_NOSUID, "")
	}
	opts := "mode=0755"
	if cfg.Var.Size != "" {
		opts += ",size=" + cfg.Var.Size
	}
	return linux.Mount("tmpfs", target, "tmpfs", linux.MS_NODEV|linux.MS_NOSUID, opts)
}

func mountEtc(cfg *bootcfg.Config) error {
	if cfg.Etc.Mode != bootcfg.EtcOverlay {
		return nil
	}
	base := "/run/intact/etc"
	for _, d := range []string{"upper", "work"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			return err
		}
	}
	target := filepath.Join(sysroot, "etc")
	return linux.Mount("overlay", target, "overlay", linux.MS_NODEV,
		"lowerdir="+target+",upperdir="+base+"/upper,workdir="+base+"/work")
}

func activatePolicy(ctx context.Context, cfg *bootcfg.Config) error {
	s := &ipe.SecurityFS{Root: "/sys/kernel/security"}
	if err := s.Available(); err != nil {
		return fmt.Errorf("IPE is not available: %w", err)
	}
	if !cfg.Policy.Present {
		return errors.New("no IPE policy in the initramfs")
	}
	blob, err := os.ReadFile(bootcfg.PolicyPath)
	if err != nil {
		return err
	}
	pol, err := s.Load(ctx, blob)
	if err != nil {
		return err
	}
	if err := s.Activate(ctx, pol.Name); err != nil {
		return err
	}
	on, err := s.Enforce()
	if err != nil {
		return err
	}
	if !on {
		return errors.New("IPE is not enforcing (ipe.enforce=0?)")
	}
	logf("IPE policy %s version %s active and enforcing", pol.Name, pol.Version)
	return nil
}

// distrustMachine unlinks the kernel's .machine keyring (the certificates
// of the MokListRT UEFI variable) from .secondary_trusted_keys before
// anything checks a signature against it, unless the configuration trusts
// it. An intact host's firmware starts the UKI without shim, so MokListRT
// is an ordinary variable that root can write through efivarfs: a key
// planted there would otherwise sign modules, IPE policies and dm-verity
// root hashes from the next boot on (measured: docs/drivers.md).
func distrustMachine(cfg *bootcfg.Config) error {
	if cfg.TrustMachineKeyring {
		logf(".machine keyring (MOK keys) stays trusted (boot.trust_machine_keyring)")
		return nil
	}
	keys, err := keyring.DistrustMachine()
	if err != nil {
		return err
	}
	for _, k := range keys {
		logf("WARNING: .machine held %q, loaded by the kernel from a MokListRT UEFI variable; it is not trusted. Delete the variable (shim's GUID 605dab50-e046-4300-abb6-3dd810dd8b23).", k)
	}
	return nil
}

// dropCapabilities removes the configured capabilities from the bounding
// set (of this thread, which executes the root's init): nothing on the host
// can gain them again.
func dropCapabilities(cfg *bootcfg.Config) error {
	for _, name := range cfg.DropCapabilities {
		c, ok := linux.CapabilityNumber(name)
		if !ok {
			return fmt.Errorf("unknown capability %q", name)
		}
		if err := linux.DropBounding(c); err != nil {
			return fmt.Errorf("CAP_%s: %w", strings.ToUpper(name), err)
		}
	}
	if len(cfg.DropCapabilities) > 0 {
		logf("capabilities removed from the bounding set of every process: %s", strings.Join(cfg.DropCapabilities, ", "))
	}
	return nil
}

// switchRoot moves the API file systems into the root, frees the
// initramfs, makes the root "/" and execs its init.
func switchRoot(cfg *bootcfg.Config) error {
	for _, d := range []string{"/dev", "/proc", "/sys", "/run"} {
		if err := linux.Mount(d, sysroot+d, "", linux.MS_MOVE, ""); err != nil {
			return err
		}
	}
	// Free the initramfs (it is rootfs: same device as "/"), never
	// crossing into the new root.
	ents, _ := os.ReadDir("/")
	for _, e := range ents {
		p := "/" + e.Name()
		if p == sysroot {
			continue
		}
		if same, err := linux.SameDevice("/", p); err == nil && same {
			os.RemoveAll(p)
		}
	}
	if err := os.Chdir(sysroot); err != nil {
		return err
	}
	if err := linux.Mount(".", "/", "", linux.MS_MOVE, ""); err != nil {
		return err
	}
	if err := linux.Chroot("."); err != nil {
		return err
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=linux",
		"INTACT_ROOT_HASH=" + cfg.RootHash}
	return linux.Exec(cfg.Init[0], cfg.Init, env)
}
