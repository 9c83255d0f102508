package kmod

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/intact-project/intact/internal/linux"
)

// ErrAlreadyLoaded: a module of that name is loaded (EEXIST).
var ErrAlreadyLoaded = errors.New("kmod: module already loaded")

// LoadOptions configures Load.
type LoadOptions struct {
	// Params are the module parameters ("a=1 b=x").
	Params string
	// FromMemory lets Load decompress a module the kernel cannot
	// decompress itself and hand it over with init_module(2). The kernel
	// then sees no file: IPE evaluates op=KMODULE without file properties,
	// so rules that trust dm-verity volumes never match such a load.
	FromMemory bool
	// SysModule is the /sys/module directory (tests); empty means the real one.
	SysModule string
}

// Loaded describes a successful load.
type Loaded struct {
	Name        string      `json:"name"`
	Version     string      `json:"version,omitempty"`
	Path        string      `json:"path"`
	Compression Compression `json:"compression,omitempty"`
	// Syscall is "finit_module", "finit_module(MODULE_INIT_COMPRESSED_FILE)"
	// or "init_module".
	Syscall string `json:"syscall"`
}

// KernelCompression returns the compression the running kernel decompresses
// in finit_module (/sys/module/compression, CONFIG_MODULE_DECOMPRESS), or
// None if it decompresses nothing.
func KernelCompression(sysModule string) Compression {
	if sysModule == "" {
		sysModule = "/sys/module"
	}
	b, err := os.ReadFile(filepath.Join(sysModule, "compression"))
	if err != nil {
		return None
	}
	switch strings.TrimSpace(string(b)) {
	case "xz":
		return XZ
	case "zstd":
		return Zstd
	case "gzip":
		return Gzip
	}
	return None
}

// Load loads the module file at path. It reads the file (bounded) to learn
// the module's name, then loads it with finit_module(2) on the open file,
// so that LSMs (IPE, LoadPin) judge the file and the device it lives on.
// A compressed module goes to the kernel compressed
// (MODULE_INIT_COMPRESSED_FILE) when the kernel decompresses that format;
// otherwise Load refuses unless opts.FromMemory. The kernel's refusal
// stays visible with errors.Is (linux.EKEYREJECTED: signature; linux.EACCES
// or EPERM: an LSM or lockdown; ErrAlreadyLoaded).
func Load(path string, opts LoadOptions) (*Loaded, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("kmod: %w", err)
	}
	defer f.Close()
	raw, c, err := readOpen(f, path)
	if err != nil {
		return nil, err
	}
	info, err := ReadInfo(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	l := &Loaded{Name: info.Name, Version: info.Version, Path: path, Compression: c}
	switch {
	case c == None:
		l.Syscall = "finit_module"
		err = linux.FinitModule(f, opts.Params, 0)
	case c == KernelCompression(opts.SysModule):
		l.Syscall = "finit_module(MODULE_INIT_COMPRESSED_FILE)"
		err = linux.FinitModule(f, opts.Params, linux.ModuleInitCompressedFile)
	case opts.FromMemory:
		l.Syscall = "init_module"
		err = linux.InitModule(raw, opts.Params)
	default:
		return nil, fmt.Errorf("%w: %s is %s-compressed and this kernel decompresses %s; recompress it (intact module sign --compress) or allow loading from memory, which IPE cannot attribute to a file",
			ErrCompression, path, c, KernelCompression(opts.SysModule))
	}
	if err != nil {
		if errors.Is(err, linux.EEXIST) {
			return l, fmt.Errorf("%w: %s (%s)", ErrAlreadyLoaded, info.Name, path)
		}
		return l, fmt.Errorf("kmod: load %s (%s): %w", info.Name, l.Syscall, err)
	}
	return l, nil
}

// Unload removes a loaded module (delete_module(2), non-blocking).
func Unload(name string) error {
	if err := linux.DeleteModule(name); err != nil {
		return fmt.Errorf("kmod: unload %s: %w", name, err)
	}
	return nil
}

// IsLoaded reports whether a module called name is loaded (or built in
// and visible in /sys/module).
func IsLoaded(sysModule, name string) bool {
	if sysModule == "" {
		sysModule = "/sys/module"
	}
	_, err := os.Stat(filepath.Join(sysModule, strings.ReplaceAll(name, "-", "_")))
	return err == nil
}

// ReadFile reads the module file at path, a regular file of at most
// MaxModuleSize bytes, and decompresses it: the module's ELF bytes (with
// any signature) and the compression it was stored with.
func ReadFile(path string) ([]byte, Compression, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, None, fmt.Errorf("kmod: %w", err)
	}
	defer f.Close()
	return readOpen(f, path)
}

func readOpen(f *os.File, path string) ([]byte, Compression, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, None, fmt.Errorf("kmod: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, None, fmt.Errorf("%w: %s is not a regular file", ErrNotModule, path)
	}
	if st.Size() > MaxModuleSize {
		return nil, None, fmt.Errorf("%w: %s is %d bytes", ErrTooLarge, path, st.Size())
	}
	data := make([]byte, st.Size())
	if _, err := f.ReadAt(data, 0); err != nil {
		return nil, None, fmt.Errorf("kmod: read %s: %w", path, err)
	}
	raw, c, err := Decompress(data)
	if err != nil {
		return nil, None, fmt.Errorf("%s: %w", path, err)
	}
	return raw, c, nil
}
