// Package erofstest holds test helpers for EROFS layer images: a generated
// tar corpus that covers every feature the writer supports, an independent
// model of what a tar (or a stack of tars) should look like once applied,
// and snapshots of real directory trees (kernel mounts, containerd-applied
// trees) and of images read with package erofs, with a field-by-field diff.
// It is used by tests only.
package erofstest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/intact-project/intact/erofs"
	"github.com/intact-project/intact/internal/linux"
)

// Node is the observable state of one path.
type Node struct {
	Type   string // file, dir, symlink, char, block, fifo, socket
	Mode   uint32 // permission bits including setuid/setgid/sticky
	UID    uint32
	GID    uint32
	Size   int64  // regular files and symlinks
	Digest string // sha256 of a regular file's content
	Mtime  int64  // nanoseconds since the epoch
	Target string // symlink target
	Major  uint32
	Minor  uint32
	Xattrs map[string]string
	Nlink  uint32
	// Link is the smallest path of the node's hardlink group ("" if the
	// inode has one name).
	Link string
	id   string // identity key while building
}

// Snapshot maps clean relative paths ("." for the root) to nodes.
type Snapshot map[string]*Node

func typeOf(mode uint32) string {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		return "file"
	case syscall.S_IFDIR:
		return "dir"
	case syscall.S_IFLNK:
		return "symlink"
	case syscall.S_IFCHR:
		return "char"
	case syscall.S_IFBLK:
		return "block"
	case syscall.S_IFIFO:
		return "fifo"
	case syscall.S_IFSOCK:
		return "socket"
	}
	return fmt.Sprintf("type-%o", mode&syscall.S_IFMT)
}

func digestReader(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// fill sets what every on-disk source reports alike: a file's size and
// content digest, a symlink's target and length, and the xattrs.
func (n *Node) fill(size int64, open func() (io.ReadCloser, error), readlink func() (string, error), xattrs func() (map[string][]byte, error)) error {
	switch n.Type {
	case "file":
		n.Size = size
		f, err := open()
		if err != nil {
			return err
		}
		n.Digest, err = digestReader(f)
		f.Close()
		if err != nil {
			return err
		}
	case "symlink":
		t, err := readlink()
		if err != nil {
			return err
		}
		n.Target, n.Size = t, int64(len(t))
	}
	x, err := xattrs()
	if err != nil {
		return err
	}
	if len(x) > 0 {
		n.Xattrs = map[string]string{}
		for k, v := range x {
			n.Xattrs[k] = string(v)
		}
	}
	return nil
}

// linkGroups fills Link from the identity keys.
func (s Snapshot) linkGroups() {
	groups := map[string][]string{}
	for p, n := range s {
		if n.Type != "dir" && n.id != "" {
			groups[n.id] = append(groups[n.id], p)
		}
	}
	for _, ps := range groups {
		if len(ps) < 2 {
			continue
		}
		sort.Strings(ps)
		for _, p := range ps {
			s[p].Link = ps[0]
		}
	}
}

// FromDir snapshots a real directory tree (a kernel mount, an applied tree).
func FromDir(root string) (Snapshot, error) {
	s := Snapshot{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		n := &Node{Type: typeOf(st.Mode), Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid,
			Mtime: st.Mtim.Sec*1e9 + st.Mtim.Nsec, Nlink: uint32(st.Nlink),
			id: fmt.Sprintf("%d:%d", st.Dev, st.Ino)}
		if n.Type == "char" || n.Type == "block" {
			n.Major, n.Minor = linux.Major(st.Rdev), linux.Minor(st.Rdev)
		}
		err = n.fill(st.Size,
			func() (io.ReadCloser, error) { return os.Open(p) },
			func() (string, error) { return os.Readlink(p) },
			func() (map[string][]byte, error) { return linux.Lxattrs(p) })
		if err != nil {
			return err
		}
		s[rel] = n
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.linkGroups()
	return s, nil
}

// FromFS snapshots an image through package erofs's reader.
func FromFS(fsys *erofs.FS) (Snapshot, error) {
	s := Snapshot{}
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		in, err := fsys.Inode(p)
		if err != nil {
			return err
		}
		n := &Node{Type: typeOf(in.RawMode), Mode: in.RawMode & 0o7777, UID: in.UID, GID: in.GID,
			Mtime: in.Mtime.UnixNano(), Nlink: in.Nlink, id: fmt.Sprint(in.NID)}
		if n.Type == "char" || n.Type == "block" {
			n.Major, n.Minor = in.DevMajor(), in.DevMinor()
		}
		err = n.fill(in.Size,
			func() (io.ReadCloser, error) { return fsys.Open(p) },
			func() (string, error) { return fsys.ReadLink(p) },
			in.Xattrs)
		if err != nil {
			return err
		}
		s[p] = n
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.linkGroups()
	return s, nil
}

// DiffOptions select what Diff ignores.
type DiffOptions struct {
	// Ignore returns true for (path, field) pairs not to compare; field is
	// one of exists, type, mode, uid, gid, size, digest, mtime, target, dev,
	// xattrs, nlink, link.
	Ignore func(path, field string) bool
}

// Diff lists the differences between want and got, one line each.
func Diff(want, got Snapshot, o DiffOptions) []string {
	ign := func(p, f string) bool { return o.Ignore != nil && o.Ignore(p, f) }
	var out []string
	paths := map[string]bool{}
	for p := range want {
		paths[p] = true
	}
	for p := range got {
		paths[p] = true
	}
	sorted := make([]string, 0, len(paths))
	for p := range paths {
		sorted = append(sorted, p)
	}
	sort.Strings(sorted)
	for _, p := range sorted {
		w, g := want[p], got[p]
		if (w == nil || g == nil) && ign(p, "exists") {
			continue
		}
		if w == nil {
			out = append(out, fmt.Sprintf("%s: unexpected %s", p, g.Type))
			continue
		}
		if g == nil {
			out = append(out, fmt.Sprintf("%s: missing (want %s)", p, w.Type))
			continue
		}
		add := func(f string, a, b any) {
			if !ign(p, f) && fmt.Sprint(a) != fmt.Sprint(b) {
				out = append(out, fmt.Sprintf("%s: %s want %v got %v", p, f, a, b))
			}
		}
		add("type", w.Type, g.Type)
		add("mode", fmt.Sprintf("%04o", w.Mode), fmt.Sprintf("%04o", g.Mode))
		add("uid", w.UID, g.UID)
		add("gid", w.GID, g.GID)
		if w.Type == "file" || w.Type == "symlink" {
			add("size", w.Size, g.Size)
		}
		add("digest", w.Digest, g.Digest)
		add("mtime", w.Mtime, g.Mtime)
		add("target", w.Target, g.Target)
		add("dev", fmt.Sprintf("%d:%d", w.Major, w.Minor), fmt.Sprintf("%d:%d", g.Major, g.Minor))
		add("xattrs", fmtXattrs(w.Xattrs), fmtXattrs(g.Xattrs))
		add("nlink", w.Nlink, g.Nlink)
		add("link", w.Link, g.Link)
	}
	return out
}

func fmtXattrs(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q;", k, m[k])
	}
	return b.String()
}

// clean normalizes a tar member name.
func clean(name string) string {
	p := path.Clean("/" + name)
	if p == "/" {
		return "."
	}
	return p[1:]
}
