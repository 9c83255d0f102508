package vmassets

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/intact-project/intact/internal/atomicfile"
	"github.com/intact-project/intact/internal/linux"
)

// KernelMetaPackage is the Debian package that names the current stable
// cloud kernel; Fetch resolves it to the versioned linux-image package.
const KernelMetaPackage = "linux-image-cloud-amd64"

// Debian packages besides the kernel that the VM tier needs: OVMF (4M
// Secure Boot code and empty variable store), the systemd EFI stub for the
// UKI, and virt-fw-vars to enroll our keys into the variable store.
var auxPackages = []string{"ovmf", "systemd-boot-efi", "python3-virt-firmware"}

// Assets are the fetched, verified and unpacked inputs of a VM run.
type Assets struct {
	Suite         string    `json:"suite"`
	KernelPackage string    `json:"kernel_package"` // e.g. linux-image-6.12.107+deb13-cloud-amd64
	KernelRelease string    `json:"kernel_release"` // uname -r inside the guest
	Debs          []Deb     `json:"debs"`
	Fetched       time.Time `json:"fetched"`

	Root string `json:"-"` // the directory all packages are unpacked into
}

// Deb is one downloaded package with the SHA-256 the signed archive index
// gave for it.
type Deb struct {
	Package string `json:"package"`
	File    string `json:"file"`
	Size    int64  `json:"size"`
	SHA256  string `json:"sha256"`
}

// Paths inside the unpacked root.
func (a *Assets) Vmlinuz() string { return filepath.Join(a.Root, "boot", "vmlinuz-"+a.KernelRelease) }

// KernelConfig is the path of the kernel's build configuration.
func (a *Assets) KernelConfig() string {
	return filepath.Join(a.Root, "boot", "config-"+a.KernelRelease)
}

// ModulesDir is /usr/lib/modules/<release> in the unpacked root.
func (a *Assets) ModulesDir() string {
	return filepath.Join(a.Root, "usr", "lib", "modules", a.KernelRelease)
}

// OVMFCode is the 4M Secure Boot firmware code image.
func (a *Assets) OVMFCode() string {
	return filepath.Join(a.Root, "usr", "share", "OVMF", "OVMF_CODE_4M.secboot.fd")
}

// OVMFVars is the empty 4M variable store template.
func (a *Assets) OVMFVars() string {
	return filepath.Join(a.Root, "usr", "share", "OVMF", "OVMF_VARS_4M.fd")
}

// Stub is systemd's EFI stub for unified kernel images.
func (a *Assets) Stub() string {
	return filepath.Join(a.Root, "usr", "lib", "systemd", "boot", "efi", "linuxx64.efi.stub")
}

// PythonPath is where the virt-firmware Python modules are unpacked.
func (a *Assets) PythonPath() string {
	return filepath.Join(a.Root, "usr", "lib", "python3", "dist-packages")
}

// FetchOptions configures Fetch.
type FetchOptions struct {
	// Cache is the cache directory; empty means $INTACT_CACHE/vm or
	// ~/.cache/intact/vm.
	Cache string
	// Suite is the Debian suite; empty means "stable".
	Suite string
	// RepoRoot locates scripts/debian-fetch; empty means the module root
	// above the working directory.
	RepoRoot string
	// MaxAge is how long a fetched set is reused before the archive is
	// asked again; zero means 24 hours. Offline (or INTACT_VM_OFFLINE=1)
	// reuses any complete cached set.
	MaxAge  time.Duration
	Offline bool
	Log     *slog.Logger
}

// Errors of Fetch.
var (
	ErrFetch        = errors.New("vmtest: fetching VM inputs failed")
	ErrVerify       = errors.New("vmtest: downloaded package does not match the archive index")
	ErrKernelConfig = errors.New("vmtest: kernel lacks an option the VM tests rely on")
)

// DefaultCacheDir is $INTACT_CACHE/vm, or ~/.cache/intact/vm.
func DefaultCacheDir() string {
	if c := os.Getenv("INTACT_CACHE"); c != "" {
		return filepath.Join(c, "vm")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = os.TempDir()
	}
	return filepath.Join(home, ".cache", "intact", "vm")
}

// RepoRoot finds the module root (the directory with go.mod and
// scripts/debian-fetch) at or above dir.
func RepoRoot(dir string) (string, error) {
	d, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "scripts", "debian-fetch")); err == nil {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				return d, nil
			}
		}
		p := filepath.Dir(d)
		if p == d {
			return "", fmt.Errorf("vmtest: no intact module root (go.mod + scripts/debian-fetch) above %s", dir)
		}
		d = p
	}
}

// Fetch downloads (or reuses from the cache) the Debian stable cloud kernel
// with its modules, OVMF, the systemd EFI stub and virt-firmware, verifies
// every package against the SHA-256 of the signed archive index, unpacks them
// and checks the kernel configuration (CheckKernelConfig).
// defaults fills in the zero fields of o: the user's cache, Debian
// stable, a day before asking the archive again, and offline when
// INTACT_VM_OFFLINE=1.
func (o *FetchOptions) defaults() {
	if o.Cache == "" {
		o.Cache = DefaultCacheDir()
	}
	if o.Suite == "" {
		o.Suite = "stable"
	}
	if o.MaxAge == 0 {
		o.MaxAge = 24 * time.Hour
	}
	if os.Getenv("INTACT_VM_OFFLINE") == "1" {
		o.Offline = true
	}
}

func Fetch(ctx context.Context, opts FetchOptions) (*Assets, error) {
	opts.defaults()
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(opts.Cache, 0o755); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFetch, err)
	}
	manifest := filepath.Join(opts.Cache, "assets-"+opts.Suite+".json")
	// Several vmexec processes (go test -p N) may start on a cold cache at
	// once: one downloads, the others wait and then find the cache.
	lock, err := os.OpenFile(filepath.Join(opts.Cache, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFetch, err)
	}
	defer lock.Close()
	if err := linux.Flock(lock); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFetch, err)
	}
	if a, err := loadCached(manifest, opts); err == nil {
		if opts.Offline || time.Since(a.Fetched) < opts.MaxAge {
			log.Debug("vmtest: using cached VM inputs", "kernel", a.KernelPackage)
			return a, CheckKernelConfig(a.KernelConfig())
		}
	} else {
		log.Debug("vmtest: no usable cache", "err", err)
		if opts.Offline {
			return nil, fmt.Errorf("%w: offline and no complete cache in %s: %w", ErrFetch, opts.Cache, err)
		}
	}
	if opts.RepoRoot == "" {
		wd, _ := os.Getwd()
		r, err := RepoRoot(wd)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrFetch, err)
		}
		opts.RepoRoot = r
	}
	start := time.Now()
	a, err := download(ctx, opts, log)
	if err != nil {
		return nil, err
	}
	if err := CheckKernelConfig(a.KernelConfig()); err != nil {
		return nil, err
	}
	data, _ := json.MarshalIndent(a, "", "  ")
	if err := atomicfile.WriteFile(manifest, data, 0o644); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFetch, err)
	}
	log.Info("vmtest: fetched VM inputs", "kernel", a.KernelPackage, "took", time.Since(start).Round(time.Millisecond))
	return a, nil
}

func loadCached(manifest string, opts FetchOptions) (*Assets, error) {
	data, err := os.ReadFile(manifest)
	if err != nil {
		return nil, err
	}
	var a Assets
	if err := json.Unmarshal(data, &a); err != nil {
		return nil, err
	}
	a.Root = filepath.Join(opts.Cache, "root-"+rootKey(a.Debs))
	for _, d := range a.Debs {
		if err := verifyFile(filepath.Join(opts.Cache, "debs", d.File), d); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(filepath.Join(a.Root, ".complete")); err != nil {
		return nil, err
	}
	return &a, nil
}

func rootKey(debs []Deb) string {
	h := sha256.New()
	for _, d := range debs {
		fmt.Fprintf(h, "%s %s\n", d.File, d.SHA256)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func download(ctx context.Context, opts FetchOptions, log *slog.Logger) (*Assets, error) {
	fetch := filepath.Join(opts.RepoRoot, "scripts", "debian-fetch")
	debDir := filepath.Join(opts.Cache, "debs")
	if err := os.MkdirAll(debDir, 0o755); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFetch, err)
	}
	// Resolve the metapackage to the versioned kernel package.
	_, out, err := getWithDepends(ctx, fetch, opts.Suite, debDir, KernelMetaPackage)
	if err != nil {
		return nil, err
	}
	kpkg := ""
	for _, dep := range strings.Split(string(out), ",") {
		name := strings.Fields(dep)
		if len(name) > 0 && strings.HasPrefix(name[0], "linux-image-") {
			kpkg = name[0]
			break
		}
	}
	if kpkg == "" {
		return nil, fmt.Errorf("%w: %s does not depend on a linux-image package (Depends: %s)", ErrFetch, KernelMetaPackage, strings.TrimSpace(string(out)))
	}
	debs, err := printURIs(ctx, fetch, opts.Suite, debDir, append([]string{kpkg}, auxPackages...)...)
	if err != nil {
		return nil, err
	}
	if err := getDebs(ctx, fetch, opts.Suite, debDir, debs); err != nil {
		return nil, err
	}
	a := &Assets{Suite: opts.Suite, KernelPackage: kpkg, KernelRelease: strings.TrimPrefix(kpkg, "linux-image-"),
		Debs: debs, Fetched: time.Now().UTC()}
	a.Root = filepath.Join(opts.Cache, "root-"+rootKey(debs))
	if _, err := os.Stat(filepath.Join(a.Root, ".complete")); err == nil {
		return a, nil
	}
	tmp, err := os.MkdirTemp(opts.Cache, ".root-tmp-")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFetch, err)
	}
	defer os.RemoveAll(tmp)
	for _, d := range debs {
		log.Debug("vmtest: unpacking", "deb", d.File)
		if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", filepath.Join(debDir, d.File), tmp).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("%w: dpkg-deb -x %s: %w: %s", ErrFetch, d.File, err, out)
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFetch, err)
	}
	os.RemoveAll(a.Root)
	if err := os.Rename(tmp, a.Root); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFetch, err)
	}
	return a, nil
}

var uriLine = sync.OnceValue(func() *regexp.Regexp { // compiled on first use: intact links this package
	return regexp.MustCompile(`^'([^']+)' (\S+) (\d+) SHA256:([0-9a-f]{64})$`)
})

// printURIs asks debian-fetch which files it would download and with which
// SHA-256 (from the signed index).
//
// apt-get prints nothing for a package whose file is already in the
// destination directory, so the listing runs in an empty one.
func printURIs(ctx context.Context, fetch, suite, _ string, pkgs ...string) ([]Deb, error) {
	empty, err := os.MkdirTemp("", "intact-debian-fetch-")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFetch, err)
	}
	defer os.RemoveAll(empty)
	args := append([]string{"--suite", suite, "--print-uris", "--dest", empty}, pkgs...)
	cmd := exec.CommandContext(ctx, fetch, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%w: debian-fetch %s: %w: %s", ErrFetch, strings.Join(pkgs, " "), err, lastLines(stderr.String(), 5))
	}
	var debs []Deb
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		m := uriLine().FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		var size int64
		fmt.Sscan(m[3], &size)
		debs = append(debs, Deb{File: m[2], Size: size, SHA256: m[4], Package: strings.SplitN(m[2], "_", 2)[0]})
	}
	if len(debs) != len(pkgs) {
		return nil, fmt.Errorf("%w: debian-fetch listed %d files for %d packages (%s)", ErrFetch, len(debs), len(pkgs), strings.Join(pkgs, " "))
	}
	return debs, nil
}

// getDebs downloads the packages not already in dest with the right hash and
// verifies every one.
// getWithDepends downloads pkg into debDir and returns it with its
// Depends field (dpkg-deb -f), which names what to fetch next.
func getWithDepends(ctx context.Context, fetch, suite, debDir, pkg string) ([]Deb, []byte, error) {
	debs, err := printURIs(ctx, fetch, suite, debDir, pkg)
	if err != nil {
		return nil, nil, err
	}
	if err := getDebs(ctx, fetch, suite, debDir, debs); err != nil {
		return nil, nil, err
	}
	out, err := exec.CommandContext(ctx, "dpkg-deb", "-f", filepath.Join(debDir, debs[0].File), "Depends").Output()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: dpkg-deb -f %s: %w", ErrFetch, debs[0].File, err)
	}
	return debs, out, nil
}

func getDebs(ctx context.Context, fetch, suite, dest string, debs []Deb) error {
	var need []string
	for _, d := range debs {
		if verifyFile(filepath.Join(dest, d.File), d) != nil {
			os.Remove(filepath.Join(dest, d.File))
			need = append(need, d.Package)
		}
	}
	if len(need) > 0 {
		args := append([]string{"--suite", suite, "--dest", dest}, need...)
		if out, err := exec.CommandContext(ctx, fetch, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("%w: debian-fetch %s: %w: %s", ErrFetch, strings.Join(need, " "), err, lastLines(string(out), 5))
		}
	}
	for _, d := range debs {
		if err := verifyFile(filepath.Join(dest, d.File), d); err != nil {
			return err
		}
	}
	return nil
}

func verifyFile(path string, d Deb) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrVerify, err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrVerify, path, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != d.Size || got != d.SHA256 {
		return fmt.Errorf("%w: %s: %d bytes sha256 %s, index says %d bytes sha256 %s", ErrVerify, path, n, got, d.Size, d.SHA256)
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// requiredConfig lists the kernel options the VM tests rely on and the
// values that satisfy them.
var requiredConfig = []struct {
	name string
	ok   []string
	why  string
}{
	{"CONFIG_SECURITY_IPE", []string{"y"}, "IPE LSM"},
	{"CONFIG_IPE_PROP_DM_VERITY", []string{"y"}, "IPE dmverity_roothash property"},
	{"CONFIG_IPE_PROP_DM_VERITY_SIGNATURE", []string{"y"}, "IPE dmverity_signature property"},
	{"CONFIG_IPE_PROP_FS_VERITY", []string{"y"}, "IPE fsverity_digest property"},
	{"CONFIG_IPE_POLICY_SIG_PLATFORM_KEYRING", []string{"y"}, "IPE policies signed by a db key"},
	{"CONFIG_BLK_DEV_DM", []string{"y", "m"}, "device-mapper"},
	{"CONFIG_DM_VERITY", []string{"y", "m"}, "dm-verity target"},
	{"CONFIG_DM_VERITY_VERIFY_ROOTHASH_SIG", []string{"y"}, "dm-verity root-hash signatures"},
	{"CONFIG_DM_VERITY_VERIFY_ROOTHASH_SIG_PLATFORM_KEYRING", []string{"y"}, "root-hash signatures checked against the platform keyring"},
	{"CONFIG_BLK_DEV_LOOP", []string{"y", "m"}, "loop devices"},
	{"CONFIG_EROFS_FS", []string{"y", "m"}, "EROFS"},
	{"CONFIG_OVERLAY_FS", []string{"y", "m"}, "overlayfs"},
	{"CONFIG_FS_VERITY", []string{"y"}, "fs-verity"},
	{"CONFIG_FS_VERITY_BUILTIN_SIGNATURES", []string{"y"}, "fs-verity builtin signatures"},
	{"CONFIG_EXT4_FS", []string{"y", "m"}, "ext4 (scratch file system with the verity feature)"},
	{"CONFIG_KEYS", []string{"y"}, "kernel keyrings"},
	{"CONFIG_INTEGRITY_PLATFORM_KEYRING", []string{"y"}, "platform keyring"},
	{"CONFIG_LOAD_UEFI_KEYS", []string{"y"}, "UEFI db keys loaded into the platform keyring"},
	{"CONFIG_SECURITYFS", []string{"y"}, "securityfs (IPE policies)"},
	{"CONFIG_DEVTMPFS", []string{"y"}, "devtmpfs for the guest's /dev"},
	{"CONFIG_BLK_DEV_INITRD", []string{"y"}, "initramfs"},
	{"CONFIG_SERIAL_8250_CONSOLE", []string{"y"}, "serial console and result ports"},
	{"CONFIG_VIRTIO_BLK", []string{"y", "m"}, "scratch disk"},
	{"CONFIG_VIRTIO_PCI", []string{"y"}, "virtio transport for the scratch disk"},
	{"CONFIG_EFI_STUB", []string{"y"}, "booting as an EFI image (UKI)"},
	{"CONFIG_EFIVAR_FS", []string{"y", "m"}, "efivarfs (Secure Boot state in the guest)"},
}

// CheckKernelConfig checks the kernel build configuration at path for every
// option the VM tests rely on, including "ipe" in CONFIG_LSM, and returns an
// ErrKernelConfig naming each one that is missing.
func CheckKernelConfig(path string) error {
	cfg, err := readConfig(path)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrKernelConfig, err)
	}
	var missing []string
	for _, r := range requiredConfig {
		v := cfg[r.name]
		ok := false
		for _, want := range r.ok {
			if v == want {
				ok = true
			}
		}
		if !ok {
			if v == "" {
				v = "not set"
			}
			missing = append(missing, fmt.Sprintf("%s=%s (need %s for %s)", r.name, v, strings.Join(r.ok, " or "), r.why))
		}
	}
	lsm := strings.Split(strings.Trim(cfg["CONFIG_LSM"], `"`), ",")
	hasIPE := false
	for _, l := range lsm {
		hasIPE = hasIPE || l == "ipe"
	}
	if !hasIPE {
		missing = append(missing, fmt.Sprintf("CONFIG_LSM=%s (need ipe in the default LSM list)", cfg["CONFIG_LSM"]))
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w (%s): %s", ErrKernelConfig, filepath.Base(path), strings.Join(missing, "; "))
	}
	return nil
}

// KernelDecompressesModules reports whether the kernel decompresses
// compressed modules itself (CONFIG_MODULE_DECOMPRESS: finit_module with
// MODULE_INIT_COMPRESSED_FILE). If not, the harness decompresses them on the
// host when it builds the initramfs.
func (a *Assets) KernelDecompressesModules() bool {
	cfg, err := readConfig(a.KernelConfig())
	return err == nil && cfg["CONFIG_MODULE_DECOMPRESS"] == "y"
}

func readConfig(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cfg := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if k, v, ok := strings.Cut(line, "="); ok && strings.HasPrefix(k, "CONFIG_") {
			cfg[k] = v
		}
	}
	return cfg, sc.Err()
}

// FetchPackages downloads (or reuses from the cache) the Debian packages
// pkgs of the suite (opts.Suite, default stable), verifies them against the
// signed archive index like Fetch does and unpacks them together into a
// directory it returns. name keys the cache entry (its manifest is
// <cache>/<name>-<suite>.json). It serves the reference tools that come
// from Debian stable rather than from this machine's release (ukify and the
// pefile module it needs, for example).
func FetchPackages(ctx context.Context, opts FetchOptions, name string, pkgs ...string) (string, error) {
	opts.defaults()
	if err := os.MkdirAll(opts.Cache, 0o755); err != nil {
		return "", fmt.Errorf("%w: %w", ErrFetch, err)
	}
	lock, err := os.OpenFile(filepath.Join(opts.Cache, ".lock-"+name), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrFetch, err)
	}
	defer lock.Close()
	if err := linux.Flock(lock); err != nil {
		return "", fmt.Errorf("%w: %w", ErrFetch, err)
	}
	manifest := filepath.Join(opts.Cache, name+"-"+opts.Suite+".json")
	var cached struct {
		Packages []string  `json:"packages"`
		Debs     []Deb     `json:"debs"`
		Fetched  time.Time `json:"fetched"`
	}
	debDir := filepath.Join(opts.Cache, "debs")
	if data, err := os.ReadFile(manifest); err == nil && json.Unmarshal(data, &cached) == nil &&
		strings.Join(cached.Packages, " ") == strings.Join(pkgs, " ") && (opts.Offline || time.Since(cached.Fetched) < opts.MaxAge) {
		ok := true
		for _, d := range cached.Debs {
			ok = ok && verifyFile(filepath.Join(debDir, d.File), d) == nil
		}
		root := filepath.Join(opts.Cache, name+"-"+rootKey(cached.Debs))
		if _, err := os.Stat(filepath.Join(root, ".complete")); ok && err == nil {
			return root, nil
		}
	}
	if opts.Offline {
		return "", fmt.Errorf("%w: offline and no complete cache of %s in %s", ErrFetch, name, opts.Cache)
	}
	if opts.RepoRoot == "" {
		wd, _ := os.Getwd()
		r, err := RepoRoot(wd)
		if err != nil {
			return "", fmt.Errorf("%w: %w", ErrFetch, err)
		}
		opts.RepoRoot = r
	}
	fetch := filepath.Join(opts.RepoRoot, "scripts", "debian-fetch")
	if err := os.MkdirAll(debDir, 0o755); err != nil {
		return "", fmt.Errorf("%w: %w", ErrFetch, err)
	}
	debs, err := printURIs(ctx, fetch, opts.Suite, debDir, pkgs...)
	if err != nil {
		return "", err
	}
	if err := getDebs(ctx, fetch, opts.Suite, debDir, debs); err != nil {
		return "", err
	}
	root := filepath.Join(opts.Cache, name+"-"+rootKey(debs))
	if _, err := os.Stat(filepath.Join(root, ".complete")); err != nil {
		tmp, err := os.MkdirTemp(opts.Cache, ".root-tmp-")
		if err != nil {
			return "", fmt.Errorf("%w: %w", ErrFetch, err)
		}
		defer os.RemoveAll(tmp)
		for _, d := range debs {
			if out, err := exec.CommandContext(ctx, "dpkg-deb", "-x", filepath.Join(debDir, d.File), tmp).CombinedOutput(); err != nil {
				return "", fmt.Errorf("%w: dpkg-deb -x %s: %w: %s", ErrFetch, d.File, err, out)
			}
		}
		if err := os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644); err != nil {
			return "", fmt.Errorf("%w: %w", ErrFetch, err)
		}
		os.RemoveAll(root)
		if err := os.Rename(tmp, root); err != nil {
			return "", fmt.Errorf("%w: %w", ErrFetch, err)
		}
	}
	cached.Packages, cached.Debs, cached.Fetched = pkgs, debs, time.Now().UTC()
	data, _ := json.MarshalIndent(cached, "", "  ")
	if err := atomicfile.WriteFile(manifest, data, 0o644); err != nil {
		return "", fmt.Errorf("%w: %w", ErrFetch, err)
	}
	return root, nil
}

// Ukify is the command that runs Debian stable's ukify (systemd-ukify, a
// Python program) on this machine's python3 with Debian stable's pefile,
// both unpacked by FetchPackages under root.
func Ukify(ctx context.Context, root string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "python3", append([]string{filepath.Join(root, "usr", "bin", "ukify")}, args...)...)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+filepath.Join(root, "usr", "lib", "python3", "dist-packages"))
	return cmd
}

// UkifyPackages are the Debian stable packages Ukify needs.
var UkifyPackages = []string{"systemd-ukify", "python3-pefile"}

// pyShim makes virt-firmware (Debian stable) run on an older Python whose
// standard library already has importlib.resources but which lacks the
// importlib_resources backport package.
const pyShim = "from importlib.resources import *  # noqa: F401,F403\nfrom importlib.resources import files, as_file  # noqa: F401\n"

// VirtFirmware returns the command that runs one of virt-firmware's tools
// (module "vars" for virt-fw-vars, "sigdb" for virt-fw-sigdb) from the
// fetched assets on this machine's python3; shimDir is a scratch directory
// for the importlib_resources shim.
func VirtFirmware(ctx context.Context, a *Assets, module, shimDir string, args ...string) (*exec.Cmd, error) {
	if err := os.MkdirAll(filepath.Join(shimDir, "importlib_resources"), 0o755); err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(shimDir, "importlib_resources", "__init__.py"), []byte(pyShim), 0o644); err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	cmd := exec.CommandContext(ctx, "python3", append([]string{"-c",
		"import sys; from virt.firmware." + module + " import main; sys.argv[0] = 'virt-fw-" + module + "'; sys.exit(main())"}, args...)...)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+a.PythonPath()+":"+shimDir)
	return cmd, nil
}

// DefaultCPU is the QEMU CPU model. Under TCG (QEMU 7.2, this machine's
// Debian 12) Debian's 6.12 kernel crashes intermittently in early boot with
// "-cpu max" and with any model that offers CMPXCHG16B (double faults in
// SLUB's cmpxchg16b fast path, about one boot in four), so the guest gets a
// plain x86-64 model with the SSE extensions and without cx16; 8 of 8 boots
// passed with it. INTACT_VM_CPU overrides it.
const DefaultCPU = "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,-cx16"
