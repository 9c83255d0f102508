package host

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/intact-project/intact/host/bootcfg"
	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/ipe"
)

// ErrSpec is wrapped by every specification error.
var ErrSpec = errors.New("host: bad specification")

// File is an extra file placed into the root.
type File struct {
	Src  string `toml:"src"`            // host path
	Dst  string `toml:"dst"`            // absolute path in the root
	Mode string `toml:"mode,omitempty"` // octal; default: the source's permission bits
}

// Spec describes a host image. Every key has a command-line flag of `intact
// host build` that overrides it (docs/host.md). Relative paths are
// relative to the specification file's directory.
type Spec struct {
	Root struct {
		// Source is a directory, a tar (optionally gzip or zstd
		// compressed) or an OCI image: "oci:REF" (a registry) or
		// "oci-layout:DIR:TAG" (a local OCI image layout).
		Source string `toml:"source"`
		Files  []File `toml:"files"`
	} `toml:"root"`
	Kernel struct {
		// Vmlinuz and Modules (a lib/modules/<release> tree), or Deb (a
		// Debian linux-image package that holds both).
		Vmlinuz string `toml:"vmlinuz"`
		Modules string `toml:"modules"`
		Deb     string `toml:"deb"`
	} `toml:"kernel"`
	Boot struct {
		Cmdline   string `toml:"cmdline"`
		Stub      string `toml:"stub"`       // systemd-stub; default Debian's path
		OSRelease string `toml:"os_release"` // default: the root's os-release
		// Modules are loaded by the init in addition to DefaultModules.
		Modules []string `toml:"modules"`
		// Init is the root's init (default /sbin/init).
		Init string `toml:"init"`
		// IntactInit is the intact-init binary for the initramfs
		// (default: intact-init next to the intact executable, then PATH).
		IntactInit string `toml:"intact_init"`
		// Compression of the initramfs: "zstd" (default), "gzip" or "none".
		Compression string `toml:"initramfs_compression"`
		OnFailure   string `toml:"on_failure"` // halt (default), poweroff, reboot
		// VerityOptions are extra dm-verity options for the root
		// (restart_on_corruption, panic_on_corruption, ...).
		VerityOptions []string `toml:"verity_options"`
		// DropCapabilities are removed from every process's capability
		// bounding set by the init, once the policy is active (nil means
		// DefaultDropCapabilities; an empty list keeps them all).
		DropCapabilities []string `toml:"drop_capabilities"`
		// TrustMachineKeyring keeps the kernel's .machine keyring (keys
		// from the MokListRT UEFI variable) linked into
		// .secondary_trusted_keys. By default the init unlinks it: an
		// intact host boots without shim, so MokListRT is a variable
		// root can write, and a key planted there would be trusted for
		// modules, IPE policies and dm-verity signatures from the next
		// boot on. Set it only for hosts booted through shim with MOK
		// keys they rely on.
		TrustMachineKeyring bool `toml:"trust_machine_keyring"`
	} `toml:"boot"`
	Policy struct {
		// File is an IPE policy (text, signed at build time, or an
		// already-signed PKCS#7); empty means the generated default.
		File    string `toml:"file"`
		Name    string `toml:"name"`    // default intact_host
		Version string `toml:"version"` // default 1.0.0
		// PinRoot adds a dmverity_roothash rule for this root.
		PinRoot bool `toml:"pin_root"`
		// SignedVerity allows every dm-verity device whose root-hash
		// signature the kernel verified (default true; container layers
		// need it).
		SignedVerity *bool `toml:"signed_verity"`
	} `toml:"policy"`
	// Keys is the key set directory (intact host keys create).
	Keys string `toml:"keys"`
	Var  struct {
		Mode string `toml:"mode"` // tmpfs (default) or partition
		Size string `toml:"size"` // tmpfs size option, or the partition size (e.g. 1G)
	} `toml:"var"`
	Etc struct {
		Mode string `toml:"mode"` // overlay (default) or readonly
	} `toml:"etc"`
	Disk struct {
		// ESPSize is the ESP size (e.g. 64M); default: what the UKI needs.
		ESPSize string `toml:"esp_size"`
		// Seed makes salts and UUIDs differ between otherwise identical
		// images; default "intact".
		Seed string `toml:"seed"`
	} `toml:"disk"`

	dir string // the specification file's directory
}

// DefaultModules are the modules the init always loads (with their
// dependencies): the virtio disk driver, dm-verity, EROFS and overlayfs.
// Modules built into the kernel are skipped.
var DefaultModules = []string{"virtio_blk", "dm-verity", "erofs", "overlay"}

// DefaultDropCapabilities: CAP_MAC_ADMIN, without which nobody (root in a
// privileged container included) can switch IPE's enforcement off or load
// another policy on the running host; measured: with it, a privileged
// container mounts securityfs and writes 0 to ipe/enforce. Policy changes
// then come with a new image.
var DefaultDropCapabilities = []string{"mac_admin"}

// DefaultStub is Debian's systemd-stub path.
const DefaultStub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"

// LoadSpec reads a TOML specification.
func LoadSpec(path string) (*Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSpec, err)
	}
	var s Spec
	dec := toml.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		var sm *toml.StrictMissingError
		if errors.As(err, &sm) && len(sm.Errors) > 0 {
			var keys []string
			for _, e := range sm.Errors {
				row, _ := e.Position()
				keys = append(keys, fmt.Sprintf("%s (line %d)", strings.Join(e.Key(), "."), row))
			}
			return nil, fmt.Errorf("%w: %s: unknown key %s", ErrSpec, path, strings.Join(keys, ", "))
		}
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, fmt.Errorf("%w: %s:%d:%d: %s", ErrSpec, path, row, col, de.Error())
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrSpec, path, err)
	}
	abs, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	s.dir = abs
	return &s, nil
}

// Path resolves a path of the specification relative to its directory.
func (s *Spec) Path(p string) string {
	if p == "" || filepath.IsAbs(p) || s.dir == "" {
		return p
	}
	return filepath.Join(s.dir, p)
}

// setDefaults fills unset keys.
func (s *Spec) setDefaults() {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&s.Boot.Stub, DefaultStub)
	def(&s.Boot.Init, "/sbin/init")
	def(&s.Boot.Compression, "zstd")
	def(&s.Boot.OnFailure, bootcfg.FailHalt)
	def(&s.Policy.Name, "intact_host")
	def(&s.Policy.Version, "1.0.0")
	def(&s.Var.Mode, bootcfg.VarTmpfs)
	def(&s.Etc.Mode, bootcfg.EtcOverlay)
	def(&s.Disk.Seed, "intact")
	if s.Policy.SignedVerity == nil {
		t := true
		s.Policy.SignedVerity = &t
	}
}

// Validate checks the specification (after defaults).
func (s *Spec) Validate() error {
	s.setDefaults()
	var errs []string
	if s.Root.Source == "" {
		errs = append(errs, "root.source (--root) is required")
	}
	if s.Kernel.Deb == "" && (s.Kernel.Vmlinuz == "" || s.Kernel.Modules == "") {
		errs = append(errs, "kernel.vmlinuz and kernel.modules (--kernel, --modules), or kernel.deb (--kernel-deb), are required")
	}
	if s.Kernel.Deb != "" && (s.Kernel.Vmlinuz != "" || s.Kernel.Modules != "") {
		errs = append(errs, "kernel.deb excludes kernel.vmlinuz and kernel.modules")
	}
	if s.Keys == "" {
		errs = append(errs, "keys (--keys) is required (intact host keys create)")
	}
	if !strings.HasPrefix(s.Boot.Init, "/") {
		errs = append(errs, fmt.Sprintf("boot.init %q must be an absolute path", s.Boot.Init))
	}
	switch s.Boot.Compression {
	case "zstd", "gzip", "none":
	default:
		errs = append(errs, fmt.Sprintf("boot.initramfs_compression %q: zstd, gzip or none", s.Boot.Compression))
	}
	switch s.Boot.OnFailure {
	case bootcfg.FailHalt, bootcfg.FailPowerOff, bootcfg.FailReboot:
	default:
		errs = append(errs, fmt.Sprintf("boot.on_failure %q: halt, poweroff or reboot", s.Boot.OnFailure))
	}
	for _, c := range s.Boot.DropCapabilities {
		if _, ok := linux.CapabilityNumber(c); !ok {
			errs = append(errs, fmt.Sprintf("boot.drop_capabilities: %q is not one intact-init can drop (%s)", c, strings.Join(linux.CapabilityNames(), ", ")))
		}
	}
	for _, o := range s.Boot.VerityOptions {
		switch o {
		case "restart_on_corruption", "panic_on_corruption", "restart_on_error", "panic_on_error":
		default:
			errs = append(errs, fmt.Sprintf("boot.verity_options: %q is not supported", o))
		}
	}
	switch s.Var.Mode {
	case bootcfg.VarTmpfs:
	case bootcfg.VarPartition:
		if _, err := ParseSize(s.Var.Size); err != nil || s.Var.Size == "" {
			errs = append(errs, fmt.Sprintf("var.size %q: a partition needs a size such as 1G", s.Var.Size))
		}
	default:
		errs = append(errs, fmt.Sprintf("var.mode %q: tmpfs or partition", s.Var.Mode))
	}
	switch s.Etc.Mode {
	case bootcfg.EtcOverlay, bootcfg.EtcReadOnly:
	default:
		errs = append(errs, fmt.Sprintf("etc.mode %q: overlay or readonly", s.Etc.Mode))
	}
	if _, err := ipe.ParseVersion(s.Policy.Version); err != nil {
		errs = append(errs, fmt.Sprintf("policy.version %q: %v", s.Policy.Version, err))
	}
	if s.Disk.ESPSize != "" {
		if _, err := ParseSize(s.Disk.ESPSize); err != nil {
			errs = append(errs, fmt.Sprintf("disk.esp_size: %v", err))
		}
	}
	for _, f := range s.Root.Files {
		if f.Src == "" || !strings.HasPrefix(f.Dst, "/") {
			errs = append(errs, fmt.Sprintf("root.files: %+v needs src and an absolute dst", f))
		}
		if f.Mode != "" {
			if _, err := strconv.ParseUint(f.Mode, 8, 32); err != nil {
				errs = append(errs, fmt.Sprintf("root.files: mode %q is not octal", f.Mode))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrSpec, strings.Join(errs, "; "))
	}
	return nil
}

// ParseSize parses sizes such as 512, 64K, 64M, 1G (binary units).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(strings.ToUpper(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mul := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mul, t = 1<<10, t[:n-1]
		case 'M':
			mul, t = 1<<20, t[:n-1]
		case 'G':
			mul, t = 1<<30, t[:n-1]
		case 'T':
			mul, t = 1<<40, t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v <= 0 || v > (1<<50)/mul {
		return 0, fmt.Errorf("size %q: want a positive number with an optional K, M, G or T suffix", s)
	}
	return v * mul, nil
}
