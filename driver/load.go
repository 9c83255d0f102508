package driver

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/kmod"
	"github.com/intact-project/intact/verity"
	"github.com/intact-project/intact/veritydev"
)

// MaxManifest bounds a manifest file.
const MaxManifest = 4 << 20

// ReadManifest reads IMAGE.json.
func ReadManifest(img string) (*Manifest, error) {
	b, err := readLimited(ManifestPath(img), MaxManifest)
	if err != nil {
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadVolume, ManifestPath(img), err)
	}
	if m.Format != manifestFormat {
		return nil, fmt.Errorf("%w: %s: format %q, want %q", ErrBadVolume, ManifestPath(img), m.Format, manifestFormat)
	}
	return &m, nil
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("driver: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("driver: %w", err)
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%w: %s is %d bytes (limit %d)", ErrBadVolume, path, st.Size(), limit)
	}
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("driver: %w", err)
	}
	return b, nil
}

// LoadOptions configures Load.
type LoadOptions struct {
	// Name is the device-mapper name; empty means
	// "intact-driver-<first 16 hex digits of the root hash>".
	Name string
	// MountDir is where the volume is mounted; empty means
	// /run/intact/drivers/<Name>.
	MountDir string
	// Signature overrides IMAGE.p7s; NoSignature opens the volume without
	// one (it is then trusted only by a dmverity_roothash rule).
	Signature   string
	NoSignature bool
	// Params are module parameters by module name.
	Params map[string]string
	// SkipFirmwarePath leaves the kernel's firmware search path alone.
	SkipFirmwarePath bool
	// SysModule is /sys/module (tests).
	SysModule string
	// Logger receives debug logs; nil discards them.
	Logger *slog.Logger
	// Deprecated: use Logger (the name every intact package uses).
	Log *slog.Logger
}

// Volume is an opened and mounted driver volume.
type Volume struct {
	Name     string         `json:"name"`
	Device   string         `json:"device"`
	Mount    string         `json:"mount"`
	RootHash string         `json:"root_hash"`
	Signed   bool           `json:"signed"`
	Firmware string         `json:"firmware_path,omitempty"`
	Loaded   []*kmod.Loaded `json:"loaded"`
	// Skipped are modules that were already loaded.
	Skipped []string `json:"skipped,omitempty"`
}

// Open opens the verity device of a volume (with its root-hash signature)
// and mounts it read-only. Closing with Close undoes both.
func Open(ctx context.Context, img string, opts LoadOptions) (*Volume, *Manifest, error) {
	man, err := ReadManifest(img)
	if err != nil {
		return nil, nil, err
	}
	root, err := hex.DecodeString(man.RootHash)
	if err != nil || len(root) != 32 {
		return nil, nil, fmt.Errorf("%w: root hash %q", ErrBadVolume, man.RootHash)
	}
	var sig []byte
	if !opts.NoSignature {
		sp := opts.Signature
		if sp == "" {
			sp = SignaturePath(img)
		}
		if sig, err = readLimited(sp, 32<<10); err != nil {
			return nil, nil, fmt.Errorf("%w (open without a signature only if an IPE dmverity_roothash rule trusts the volume)", err)
		}
	}
	name := opts.Name
	if name == "" {
		name = "intact-driver-" + man.RootHash[:16]
	}
	p := verity.DefaultParams()
	p.HashOffset = man.HashOffset
	dev, err := veritydev.OpenConfig(ctx, veritydev.Config{Name: name, Data: img, Params: p, RootHash: root, Signature: sig, Logger: cmp.Or(opts.Logger, opts.Log)})
	if err != nil {
		return nil, nil, fmt.Errorf("driver: open %s: %w", img, err)
	}
	if dev.Params.DataBlocks != man.DataBlocks {
		dev.Close(ctx)
		return nil, nil, fmt.Errorf("%w: the superblock says %d data blocks, the manifest %d", ErrBadVolume, dev.Params.DataBlocks, man.DataBlocks)
	}
	mnt := opts.MountDir
	if mnt == "" {
		mnt = filepath.Join("/run/intact/drivers", name)
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		dev.Close(ctx)
		return nil, nil, fmt.Errorf("driver: %w", err)
	}
	if err := linux.Mount(dev.Path, mnt, "erofs", linux.MS_RDONLY|linux.MS_NODEV|linux.MS_NOSUID, ""); err != nil {
		dev.Close(ctx)
		return nil, nil, fmt.Errorf("driver: mount %s: %w", dev.Path, err)
	}
	return &Volume{Name: name, Device: dev.Path, Mount: mnt, RootHash: man.RootHash, Signed: sig != nil}, man, nil
}

// Close unmounts the volume and removes its device.
func (v *Volume) Close(ctx context.Context) error {
	err := linux.Unmount(v.Mount, 0)
	if err != nil && !errors.Is(err, linux.EINVAL) {
		return fmt.Errorf("driver: %w", err)
	}
	return veritydev.Close(ctx, v.Name)
}

// FirmwarePathParam is the kernel's custom firmware search path
// (firmware_class.path).
const FirmwarePathParam = "/sys/module/firmware_class/parameters/path"

// Load opens and mounts a volume, makes its firmware/ directory the
// kernel's firmware search path (if it has one) and loads its modules in
// dependency order with finit_module. A module that is already loaded is
// skipped. On the first refused module Load stops and returns the volume
// (still open) with the error, so the caller can report or Close.
func Load(ctx context.Context, img string, opts LoadOptions) (*Volume, error) {
	v, man, err := Open(ctx, img, opts)
	if err != nil {
		return nil, err
	}
	if len(man.Firmware) > 0 && !opts.SkipFirmwarePath {
		fw := filepath.Join(v.Mount, FirmwareDir)
		if err := setFirmwarePath(fw); err != nil {
			return v, err
		}
		v.Firmware = fw
	}
	order, err := LoadOrder(man.Modules)
	if err != nil {
		return v, err
	}
	for _, m := range order {
		if kmod.IsLoaded(opts.SysModule, m.Name) {
			v.Skipped = append(v.Skipped, m.Name)
			continue
		}
		for _, d := range m.Depends {
			if !kmod.IsLoaded(opts.SysModule, d) {
				return v, fmt.Errorf("driver: %s needs module %s, which is neither loaded nor in the volume (modprobe it first)", m.Name, d)
			}
		}
		l, err := kmod.Load(filepath.Join(v.Mount, filepath.FromSlash(m.Path)), kmod.LoadOptions{Params: opts.Params[m.Name], SysModule: opts.SysModule})
		if err != nil {
			if errors.Is(err, kmod.ErrAlreadyLoaded) {
				v.Skipped = append(v.Skipped, m.Name)
				continue
			}
			return v, explainLoad(err)
		}
		v.Loaded = append(v.Loaded, l)
	}
	return v, nil
}

// explainLoad adds what a refused load usually means.
func explainLoad(err error) error {
	switch {
	case errors.Is(err, linux.EKEYREJECTED):
		return fmt.Errorf("%w (the kernel refused the module's signature; 'intact module verify' says why)", err)
	case errors.Is(err, linux.EACCES), errors.Is(err, linux.EPERM):
		return fmt.Errorf("%w (denied by an LSM: does the active IPE policy allow op=KMODULE from this volume's root hash?)", err)
	case errors.Is(err, linux.ENOEXEC):
		return fmt.Errorf("%w (built for another kernel: compare the module's vermagic with uname -r)", err)
	}
	return err
}

func setFirmwarePath(dir string) error {
	cur, err := os.ReadFile(FirmwarePathParam)
	if err != nil {
		return fmt.Errorf("driver: firmware path: %w", err)
	}
	c := strings.TrimSpace(string(cur))
	if c != "" && c != dir {
		return fmt.Errorf("driver: the kernel's firmware search path is already %s (it holds one custom directory); unload that volume or load this one with SkipFirmwarePath", c)
	}
	if err := os.WriteFile(FirmwarePathParam, []byte(dir), 0o644); err != nil {
		return fmt.Errorf("driver: set firmware path: %w", err)
	}
	return nil
}

// Unload removes the volume's modules (in reverse load order), resets the
// firmware path if it points into the volume, and closes the volume.
func Unload(ctx context.Context, v *Volume, man *Manifest) error {
	order, err := LoadOrder(man.Modules)
	if err != nil {
		return err
	}
	var errs []error
	for i := len(order) - 1; i >= 0; i-- {
		if kmod.IsLoaded("", order[i].Name) {
			if err := kmod.Unload(order[i].Name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if cur, err := os.ReadFile(FirmwarePathParam); err == nil && strings.HasPrefix(strings.TrimSpace(string(cur)), v.Mount) {
		os.WriteFile(FirmwarePathParam, []byte("\n"), 0o644)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return v.Close(ctx)
}
