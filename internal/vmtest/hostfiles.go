package vmtest

import (
	"bufio"
	"context"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/intact-project/intact/initramfs"
)

// maxTree bounds the size of a directory copied into the guest.
const maxTree = 512 << 20

// hostFiles copies host files into the initramfs at the same paths,
// recreating symbolic links on the way (so /lib -> usr/lib on a merged-/usr
// host stays a link and dynamic libraries resolve as they do on the host).
type hostFiles struct {
	w    *initramfs.Writer
	done map[string]bool
}

func (h *hostFiles) addPath(p string) error {
	p = filepath.Clean(p)
	if p == "/" || h.done[p] {
		return nil
	}
	if err := h.addPath(filepath.Dir(p)); err != nil {
		return err
	}
	if h.done[p] {
		return nil
	}
	st, err := os.Lstat(p)
	if err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	h.done[p] = true
	switch {
	case st.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return fmt.Errorf("vmtest: %w", err)
		}
		if err := h.w.Symlink(p, target); err != nil {
			return err
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(p), target)
		}
		return h.addPath(target)
	case st.IsDir():
		return h.w.Dir(p, st.Mode().Perm())
	case st.Mode().IsRegular():
		return h.w.CopyFile(p, p)
	}
	return nil // devices, sockets: skipped
}

// addTree copies a directory tree (regular files, directories, symlinks).
func (h *hostFiles) addTree(dir string) error {
	var total int64
	if err := h.addPath(dir); err != nil {
		return err
	}
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if info, err := d.Info(); err == nil && info.Mode().IsRegular() {
			total += info.Size()
			if total > maxTree {
				return fmt.Errorf("vmtest: %s holds more than %d MiB; too big to copy into the guest", dir, maxTree>>20)
			}
		}
		return h.addPath(p)
	})
}

// toolExtras are files a carried tool needs besides its libraries.
var toolExtras = map[string][]string{
	"openssl":   {"/usr/lib/ssl/openssl.cnf"},
	"mkfs.ext4": {"/etc/mke2fs.conf"},
}

func (h *hostFiles) addTool(ctx context.Context, name string) error {
	p, err := exec.LookPath(name)
	if err != nil {
		return fmt.Errorf("vmtest: tool %s: %w", name, err)
	}
	if err := h.addPath(p); err != nil {
		return err
	}
	if err := h.addLibs(ctx, p); err != nil {
		return err
	}
	for _, x := range toolExtras[filepath.Base(name)] {
		if _, err := os.Stat(x); err == nil {
			if err := h.addPath(x); err != nil {
				return err
			}
		}
	}
	return nil
}

// addLibs adds the ELF interpreter and shared libraries of a dynamically
// linked executable (as ldd lists them); static executables need nothing.
func (h *hostFiles) addLibs(ctx context.Context, exe string) error {
	f, err := elf.Open(exe)
	if err != nil {
		return nil // not ELF (a script): nothing to add
	}
	dynamic := false
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			dynamic = true
		}
	}
	f.Close()
	if !dynamic {
		return nil
	}
	out, err := exec.CommandContext(ctx, "ldd", exe).Output()
	if err != nil {
		return fmt.Errorf("vmtest: ldd %s: %w", exe, err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		var lib string
		switch {
		case len(fields) >= 3 && fields[1] == "=>":
			lib = fields[2]
		case len(fields) >= 1 && strings.HasPrefix(fields[0], "/"):
			lib = fields[0]
		}
		if len(fields) >= 3 && fields[2] == "not" {
			return fmt.Errorf("vmtest: %s: library %s not found", exe, fields[0])
		}
		if strings.HasPrefix(lib, "/") {
			if err := h.addPath(lib); err != nil {
				return err
			}
		}
	}
	return nil
}
