package erofs

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/intact-project/intact/internal/linux"
)

// AddDir adds the tree below root (a LayoutFull image): every file, with its
// owner, mode, nanosecond mtime, xattrs, device numbers and hardlinks (files
// with the same device and inode become one inode). Sockets are kept. Files
// are added in lexical order; root's own attributes become the image root's.
func (w *Writer) AddDir(ctx context.Context, root string) error {
	if w.opts.Layout != LayoutFull {
		return fmt.Errorf("erofs: AddDir needs LayoutFull")
	}
	type key struct{ dev, ino uint64 }
	seen := map[key]string{}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("erofs: %s: no stat data", p)
		}
		e := &Entry{Path: rel, Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid,
			MtimeSec: st.Mtim.Sec, MtimeNsec: uint32(st.Mtim.Nsec)}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFDIR:
			e.Type = TypeDir
		case syscall.S_IFREG:
			e.Type, e.Size = TypeRegular, st.Size
		case syscall.S_IFLNK:
			e.Type = TypeSymlink
			if e.Linkname, err = os.Readlink(p); err != nil {
				return err
			}
		case syscall.S_IFCHR, syscall.S_IFBLK:
			e.Type = TypeCharDev
			if st.Mode&syscall.S_IFMT == syscall.S_IFBLK {
				e.Type = TypeBlockDev
			}
			e.DevMajor, e.DevMinor = linux.Major(st.Rdev), linux.Minor(st.Rdev)
		case syscall.S_IFIFO:
			e.Type = TypeFIFO
		case syscall.S_IFSOCK:
			e.Type = TypeSocket
		default:
			return fmt.Errorf("%w: %s: file type %#o", ErrInvalidEntry, p, st.Mode&syscall.S_IFMT)
		}
		if e.Type != TypeDir && st.Nlink > 1 {
			k := key{st.Dev, st.Ino}
			if first, ok := seen[k]; ok {
				return w.Add(&Entry{Path: rel, Type: TypeHardlink, Linkname: first}, nil)
			}
			seen[k] = rel
		}
		x, err := linux.Lxattrs(p)
		if err != nil {
			return err
		}
		if len(x) > 0 {
			e.Xattrs = x
		}
		if e.Type != TypeRegular || e.Size == 0 {
			return w.Add(e, nil)
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return w.Add(e, f)
	})
}
