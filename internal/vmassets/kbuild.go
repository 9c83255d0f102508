package vmassets

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/intact-project/intact/internal/atomicfile"
	"github.com/intact-project/intact/internal/linux"
)

// Kbuild is Debian's build tree for out-of-tree modules of the VM tier's
// kernel: linux-headers-<release>, its -common package and linux-kbuild
// (Kconfig output, Module.symvers, headers, and the host programs fixdep,
// modpost, objtool, sign-file, ...), unpacked into a private directory.
//
// Debian stable's host programs are linked against its glibc, which is
// newer than this project's Debian 12 base, so every ELF program of the
// tree is replaced by a two-line shell script that runs it through the
// dynamic loader of Debian stable's own libc6, unpacked next to it
// (`ld-linux-x86-64.so.2 --library-path <stable libc> --argv0 <name>`).
// Libraries that libc6 does not provide (libcrypto for sign-file, libelf
// for objtool) come from the host; the programs need only symbol versions
// the host's have. The compiler is the host's gcc (see BuildModule).
type Kbuild struct {
	Release string `json:"release"` // uname -r of the VM kernel
	Root    string `json:"root"`    // the unpacked packages
	// Headers is the directory to pass as `make -C` (the flavour's
	// linux-headers directory).
	Headers string `json:"headers"`
	// SignFile runs the kernel's scripts/sign-file on this host.
	SignFile string `json:"sign_file"`
	Debs     []Deb  `json:"debs"`
}

// FetchKbuild downloads (or reuses) the headers, kbuild and libc6 packages
// matching the VM kernel that Fetch resolves, verifies them against the
// signed archive index, and prepares the tree under the cache directory.
func FetchKbuild(ctx context.Context, opts FetchOptions) (*Kbuild, error) {
	a, err := Fetch(ctx, opts)
	if err != nil {
		return nil, err
	}
	opts.defaults()
	if opts.RepoRoot == "" {
		wd, _ := os.Getwd()
		if opts.RepoRoot, err = RepoRoot(wd); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrFetch, err)
		}
	}
	lock, err := os.OpenFile(filepath.Join(opts.Cache, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFetch, err)
	}
	defer lock.Close()
	if err := linux.Flock(lock); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFetch, err)
	}
	fetch := filepath.Join(opts.RepoRoot, "scripts", "debian-fetch")
	debDir := filepath.Join(opts.Cache, "debs")
	headers := "linux-headers-" + a.KernelRelease
	// The packages of one kernel release never change: a prepared tree
	// whose packages still verify is reused without asking the archive.
	manifest := filepath.Join(opts.Cache, "kbuild-"+a.KernelRelease+".json")
	if k, err := loadKbuild(manifest, debDir); err == nil {
		return k, nil
	}
	first, out, err := getWithDepends(ctx, fetch, opts.Suite, debDir, headers)
	if err != nil {
		return nil, err
	}
	var more []string
	for _, dep := range strings.Split(string(out), ",") {
		for _, alt := range strings.Split(dep, "|") {
			f := strings.Fields(alt)
			if len(f) > 0 && (strings.HasPrefix(f[0], "linux-headers-") || strings.HasPrefix(f[0], "linux-kbuild-")) {
				more = append(more, f[0])
			}
		}
	}
	if len(more) != 2 {
		return nil, fmt.Errorf("%w: %s depends on %v, want one -common headers and one linux-kbuild package", ErrFetch, headers, more)
	}
	more = append(more, "libc6")
	rest, err := printURIs(ctx, fetch, opts.Suite, debDir, more...)
	if err != nil {
		return nil, err
	}
	if err := getDebs(ctx, fetch, opts.Suite, debDir, rest); err != nil {
		return nil, err
	}
	debs := append(first, rest...)
	k := &Kbuild{Release: a.KernelRelease, Debs: debs,
		Root: filepath.Join(opts.Cache, "kbuild-"+rootKey(debs))}
	k.Headers = filepath.Join(k.Root, "usr", "src", headers)
	k.SignFile = filepath.Join(k.Root, "usr", "src", headers, "scripts", "sign-file")
	if _, err := os.Stat(filepath.Join(k.Root, ".complete")); err == nil {
		return k, saveKbuild(manifest, k)
	}
	tmp, err := os.MkdirTemp(opts.Cache, ".kbuild-tmp-")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFetch, err)
	}
	defer os.RemoveAll(tmp)
	for _, d := range debs {
		if b, err := exec.CommandContext(ctx, "dpkg-deb", "-x", filepath.Join(debDir, d.File), tmp).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("%w: dpkg-deb -x %s: %w: %s", ErrFetch, d.File, err, b)
		}
	}
	// The tree is prepared in tmp but for its final path: the wrappers and
	// the Makefile name absolute paths.
	if err := prepareKbuild(tmp, k.Root, headers); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFetch, err)
	}
	os.RemoveAll(k.Root)
	if err := os.Rename(tmp, k.Root); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrFetch, err)
	}
	return k, saveKbuild(manifest, k)
}

func loadKbuild(manifest, debDir string) (*Kbuild, error) {
	b, err := os.ReadFile(manifest)
	if err != nil {
		return nil, err
	}
	var k Kbuild
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, err
	}
	for _, d := range k.Debs {
		if err := verifyFile(filepath.Join(debDir, d.File), d); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(filepath.Join(k.Root, ".complete")); err != nil {
		return nil, err
	}
	return &k, nil
}

func saveKbuild(manifest string, k *Kbuild) error {
	b, _ := json.MarshalIndent(k, "", "  ")
	if err := atomicfile.WriteFile(manifest, b, 0o644); err != nil {
		return fmt.Errorf("%w: %w", ErrFetch, err)
	}
	return nil
}

// prepareKbuild fixes the unpacked tree at dir, which will live at final:
// the flavour Makefile includes the -common Makefile by absolute path, and
// every ELF program is wrapped to run with Debian stable's loader and libc.
func prepareKbuild(dir, final, headers string) error {
	mk := filepath.Join(dir, "usr", "src", headers, "Makefile")
	b, err := os.ReadFile(mk)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrFetch, err)
	}
	fixed := bytes.ReplaceAll(b, []byte("include /usr/src/"), []byte("include "+filepath.Join(final, "usr", "src")+"/"))
	if bytes.Equal(fixed, b) {
		return fmt.Errorf("%w: %s does not include the -common Makefile by absolute path; the tree layout changed", ErrFetch, mk)
	}
	if err := os.WriteFile(mk, fixed, 0o644); err != nil {
		return fmt.Errorf("%w: %w", ErrFetch, err)
	}
	loader := filepath.Join(final, "usr", "lib", "x86_64-linux-gnu", "ld-linux-x86-64.so.2")
	if _, err := os.Stat(filepath.Join(dir, "usr", "lib", "x86_64-linux-gnu", "ld-linux-x86-64.so.2")); err != nil {
		return fmt.Errorf("%w: Debian stable's libc6 has no loader where expected: %w", ErrFetch, err)
	}
	libs := filepath.Join(final, "usr", "lib", "x86_64-linux-gnu")
	kb, _ := filepath.Glob(filepath.Join(dir, "usr", "lib", "linux-kbuild-*"))
	if len(kb) != 1 {
		return fmt.Errorf("%w: want one usr/lib/linux-kbuild-* directory, found %d", ErrFetch, len(kb))
	}
	var progs []string
	err = filepath.WalkDir(kb[0], func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !d.Type().IsRegular() {
			return err
		}
		st, err := d.Info()
		if err != nil || st.Mode()&0o111 == 0 {
			return err
		}
		f, err := elf.Open(p)
		if err != nil {
			return nil // a script
		}
		defer f.Close()
		if f.Type == elf.ET_EXEC || f.Type == elf.ET_DYN {
			if interp := f.Section(".interp"); interp != nil {
				progs = append(progs, p)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrFetch, err)
	}
	sort.Strings(progs)
	for _, p := range progs {
		rel, _ := filepath.Rel(dir, p)
		real := p + ".elf"
		if err := os.Rename(p, real); err != nil {
			return fmt.Errorf("%w: %w", ErrFetch, err)
		}
		script := fmt.Sprintf("#!/bin/sh\n# %s of Debian stable, run with Debian stable's glibc (internal/vmtest/kbuild.go)\nexec %s --library-path %s --argv0 \"$0\" %s \"$@\"\n",
			filepath.Base(p), loader, libs, filepath.Join(final, rel)+".elf")
		if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
			return fmt.Errorf("%w: %w", ErrFetch, err)
		}
	}
	return nil
}

// ModuleBuild is one out-of-tree build.
type ModuleBuild struct {
	// Src is the directory with the module's sources and Kbuild file.
	Src string
	// Vars are extra make variables (NAME=VALUE), e.g. a version define.
	Vars []string
	// CC is the compiler; empty means the host's gcc (the kernel's own
	// compiler, CONFIG_CC_VERSION_TEXT, is Debian stable's gcc-14).
	CC string
}

// BuildModule compiles the modules of b.Src against the tree into a
// scratch copy and returns the .ko files found, copied into out. The host
// gcc is older than the kernel's: options only gcc 14 knows are turned off
// on the command line (CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT falls back to
// -falign-functions), and BTF generation (pahole) is skipped.
func (k *Kbuild) BuildModule(ctx context.Context, b ModuleBuild, out string) ([]string, string, error) {
	work, err := os.MkdirTemp("", "intact-kbuild-")
	if err != nil {
		return nil, "", err
	}
	defer os.RemoveAll(work)
	if err := copyDir(b.Src, work); err != nil {
		return nil, "", err
	}
	cc := b.CC
	if cc == "" {
		cc = "gcc"
	}
	args := append([]string{"-C", k.Headers, "M=" + work, "CC=" + cc, "HOSTCC=" + cc,
		"CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT=", "CONFIG_DEBUG_INFO_BTF_MODULES=", "modules"}, b.Vars...)
	cmd := exec.CommandContext(ctx, "make", args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	log, err := cmd.CombinedOutput()
	if err != nil {
		return nil, string(log), fmt.Errorf("vmtest: make modules in %s: %w\n%s", b.Src, err, lastLines(string(log), 20))
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, string(log), err
	}
	kos, _ := filepath.Glob(filepath.Join(work, "*.ko"))
	if len(kos) == 0 {
		return nil, string(log), fmt.Errorf("vmtest: make modules in %s built no .ko", b.Src)
	}
	var res []string
	for _, ko := range kos {
		data, err := os.ReadFile(ko)
		if err != nil {
			return nil, string(log), err
		}
		dst := filepath.Join(out, filepath.Base(ko))
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			return nil, string(log), err
		}
		res = append(res, dst)
	}
	return res, string(log), nil
}

// SourceDigest hashes the regular files of dir (names and contents), to
// key a cache of built modules.
func SourceDigest(dir string, extra ...string) (string, error) {
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(h, "%s %d\n", rel, len(b))
		h.Write(b)
		return nil
	})
	for _, e := range extra {
		fmt.Fprintf(h, "%s\n", e)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], err
}

func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		t := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(t, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(t, b, 0o644)
	})
}
