package host

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing/fstest"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/intact-project/intact/uki"
)

// ErrKernel is wrapped by kernel and module errors.
var ErrKernel = errors.New("host: kernel")

// maxModule bounds one (decompressed) module.
const maxModule = 256 << 20

// Kernel is the kernel image and its modules, as a file system rooted at
// lib/modules/<release>.
type Kernel struct {
	Vmlinuz []byte
	Release string
	Modules fs.FS // rooted at the release's modules directory
}

// LoadKernel reads the kernel from a vmlinuz and a lib/modules/<release>
// directory.
func LoadKernel(vmlinuz, modules string) (*Kernel, error) {
	b, err := readLimited(vmlinuz, 256<<20)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKernel, err)
	}
	rel, err := uki.KernelRelease(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKernel, vmlinuz, err)
	}
	if st, err := os.Stat(modules); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("%w: modules directory %s: not a directory", ErrKernel, modules)
	}
	if base := filepath.Base(filepath.Clean(modules)); base != rel {
		return nil, fmt.Errorf("%w: modules directory %s is not for kernel %s (lib/modules/<release> expected)", ErrKernel, modules, rel)
	}
	return &Kernel{Vmlinuz: b, Release: rel, Modules: os.DirFS(modules)}, nil
}

// LoadKernelDeb reads the kernel and its modules from a Debian
// linux-image package (ar archive with data.tar.xz/zst/gz).
func LoadKernelDeb(deb string) (*Kernel, error) {
	f, err := os.Open(deb)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKernel, err)
	}
	defer f.Close()
	data, name, err := debData(f)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKernel, deb, err)
	}
	var r io.Reader
	switch {
	case strings.HasSuffix(name, ".xz"):
		xr, err := xz.NewReader(bufio.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrKernel, deb, err)
		}
		r = xr
	case strings.HasSuffix(name, ".zst"):
		zr, err := zstd.NewReader(data)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrKernel, deb, err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(name, ".gz"):
		gr, err := gzip.NewReader(data)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrKernel, deb, err)
		}
		r = gr
	default:
		r = data
	}
	k := &Kernel{}
	mods := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrKernel, deb, err)
		}
		p := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		if h.Typeflag != tar.TypeReg {
			continue
		}
		switch {
		case strings.HasPrefix(p, "boot/vmlinuz-"):
			if k.Vmlinuz, err = io.ReadAll(io.LimitReader(tr, 256<<20)); err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrKernel, deb, err)
			}
		case strings.HasPrefix(p, "usr/lib/modules/") || strings.HasPrefix(p, "lib/modules/"):
			rel := strings.TrimPrefix(strings.TrimPrefix(p, "usr/"), "lib/modules/")
			if h.Size > maxModule {
				return nil, fmt.Errorf("%w: %s: %s is %d bytes", ErrKernel, deb, p, h.Size)
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrKernel, deb, err)
			}
			mods[rel] = b
		}
	}
	if k.Vmlinuz == nil {
		return nil, fmt.Errorf("%w: %s has no boot/vmlinuz-*", ErrKernel, deb)
	}
	if k.Release, err = uki.KernelRelease(k.Vmlinuz); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKernel, deb, err)
	}
	// fstest.MapFS: an in-memory fs.FS with implied directories (it does
	// not depend on package testing).
	sub := fstest.MapFS{}
	for p, b := range mods {
		if rest, ok := strings.CutPrefix(p, k.Release+"/"); ok {
			sub[rest] = &fstest.MapFile{Data: b, Mode: 0o644}
		}
	}
	if len(sub) == 0 {
		return nil, fmt.Errorf("%w: %s has no modules for %s", ErrKernel, deb, k.Release)
	}
	k.Modules = sub
	return k, nil
}

// debData finds the data.tar.* member of a Debian package (ar archive).
func debData(f io.ReaderAt) (io.Reader, string, error) {
	magic := make([]byte, 8)
	if _, err := f.ReadAt(magic, 0); err != nil || string(magic) != "!<arch>\n" {
		return nil, "", errors.New("not a Debian package (ar archive)")
	}
	off := int64(8)
	for {
		h := make([]byte, 60)
		if _, err := f.ReadAt(h, off); err != nil {
			return nil, "", errors.New("no data.tar member")
		}
		name := strings.TrimRight(strings.TrimSpace(string(h[:16])), "/")
		var size int64
		if _, err := fmt.Sscan(strings.TrimSpace(string(h[48:58])), &size); err != nil || size < 0 {
			return nil, "", fmt.Errorf("bad ar member size %q", h[48:58])
		}
		off += 60
		if strings.HasPrefix(name, "data.tar") {
			return io.NewSectionReader(f, off, size), name, nil
		}
		off += size + size%2
	}
}

// Module is a kernel module file to put into the initramfs.
type Module struct {
	Name string   // normalized (dashes as underscores)
	Path string   // relative to the modules directory, e.g. kernel/drivers/md/dm-verity.ko.xz
	Deps []string // paths of its direct and indirect dependencies
}

// ResolveModules returns the modules names need, with every dependency,
// sorted by path. Dependencies come from modules.dep when the directory
// has one, else from each module's own "depends=" modinfo. Modules built
// into the kernel (modules.builtin) are skipped; a name that is neither a
// module nor built in is an error.
func (k *Kernel) ResolveModules(names []string) ([]Module, error) {
	index := map[string]string{} // name -> path
	deps := map[string][]string{}
	if b, err := fs.ReadFile(k.Modules, "modules.dep"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			mod, rest, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			index[modName(mod)] = mod
			deps[modName(mod)] = nil
			for _, d := range strings.Fields(rest) {
				deps[modName(mod)] = append(deps[modName(mod)], modName(d))
			}
		}
	} else {
		err := fs.WalkDir(k.Modules, ".", func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && strings.Contains(d.Name(), ".ko") {
				index[modName(d.Name())] = p
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("%w: modules: %w", ErrKernel, err)
		}
	}
	builtin := map[string]bool{}
	if b, err := fs.ReadFile(k.Modules, "modules.builtin"); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[modName(l)] = true
		}
	}
	out := map[string]*Module{}
	var visit func(name string, chain []string) ([]string, error)
	visit = func(name string, chain []string) ([]string, error) {
		n := modName(name)
		if builtin[n] {
			return nil, nil
		}
		if m, ok := out[n]; ok {
			if m == nil {
				return nil, fmt.Errorf("%w: module dependency cycle %s", ErrKernel, strings.Join(append(chain, n), " -> "))
			}
			return append([]string{m.Path}, m.Deps...), nil
		}
		p, ok := index[n]
		if !ok {
			return nil, fmt.Errorf("%w: module %s is neither a module of %s nor built in (needed by %v)", ErrKernel, n, k.Release, chain)
		}
		out[n] = nil
		direct, known := deps[n]
		if !known {
			var err error
			if direct, err = k.modinfoDepends(p); err != nil {
				return nil, err
			}
		}
		var all []string
		for _, d := range direct {
			sub, err := visit(d, append(chain, n))
			if err != nil {
				return nil, err
			}
			all = appendUnique(all, sub...)
		}
		out[n] = &Module{Name: n, Path: p, Deps: all}
		return append([]string{p}, all...), nil
	}
	for _, n := range names {
		if _, err := visit(n, nil); err != nil {
			return nil, err
		}
	}
	var mods []Module
	for _, m := range out {
		mods = append(mods, *m)
	}
	sort.Slice(mods, func(i, j int) bool { return mods[i].Path < mods[j].Path })
	return mods, nil
}

func appendUnique(s []string, v ...string) []string {
	for _, x := range v {
		found := false
		for _, y := range s {
			found = found || x == y
		}
		if !found {
			s = append(s, x)
		}
	}
	return s
}

// plainModulePath is a module's path without its compression suffix.
func plainModulePath(p string) string {
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		p = strings.TrimSuffix(p, ext)
	}
	return p
}

// modinfoDepends reads "depends=" from a module's .modinfo section.
func (k *Kernel) modinfoDepends(p string) ([]string, error) {
	b, err := readModule(k, p)
	if err != nil {
		return nil, err
	}
	ef, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKernel, p, err)
	}
	sec := ef.Section(".modinfo")
	if sec == nil {
		return nil, nil
	}
	info, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKernel, p, err)
	}
	for _, kv := range bytes.Split(info, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok && len(v) > 0 {
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}

// readModule reads a module, decompressing xz, zstd and gzip modules in
// memory.
func readModule(k *Kernel, p string) ([]byte, error) {
	f, err := k.Modules.Open(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKernel, err)
	}
	defer f.Close()
	var r io.Reader = bufio.NewReader(f)
	switch {
	case strings.HasSuffix(p, ".xz"):
		if r, err = xz.NewReader(r); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrKernel, p, err)
		}
	case strings.HasSuffix(p, ".zst"):
		zr, err := zstd.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrKernel, p, err)
		}
		defer zr.Close()
		r = zr
	case strings.HasSuffix(p, ".gz"):
		if r, err = gzip.NewReader(r); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrKernel, p, err)
		}
	}
	b, err := io.ReadAll(io.LimitReader(r, maxModule+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKernel, p, err)
	}
	if len(b) > maxModule {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrKernel, p, maxModule)
	}
	return b, nil
}

// modulesDep writes a modules.dep for mods (each line "path: deps...").
func modulesDep(mods []Module) []byte {
	var b strings.Builder
	for _, m := range mods {
		b.WriteString(m.Path + ":")
		for _, d := range m.Deps {
			b.WriteString(" " + d)
		}
		b.WriteString("\n")
	}
	return []byte(b.String())
}

func modName(s string) string {
	s = path.Base(s)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		s = strings.TrimSuffix(s, ext)
	}
	return strings.ReplaceAll(strings.TrimSuffix(s, ".ko"), "-", "_")
}

func readLimited(p string, limit int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", p, limit)
	}
	return b, nil
}
