package erofstest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"path"
	"strings"
)

// FromTar computes what an EROFS image converted from the tar should show
// when read directly (not through overlayfs): the last entry for a path
// wins (directories keep their contents), ".wh.NAME" is a 0:0 character device NAME,
// ".wh..wh..opq" sets trusted.overlay.opaque=y on its directory, other
// ".wh..wh.*" members are ignored, a missing parent inherits owner and mtime
// from its parent (mode 0755 plus the parent's group/other write bits), and a
// directory holding a whiteout carries an empty trusted.overlay.origin. It
// is deliberately written independently of package erofs.
func FromTar(tarball []byte) (Snapshot, error) {
	s := Snapshot{".": &Node{Type: "dir", Mode: 0o755}}
	opaque := map[*Node]bool{}
	tr := tar.NewReader(bytes.NewReader(tarball))
	ensureDir := func(p string) error {
		var cur string
		parent := s["."]
		for _, c := range strings.Split(p, "/") {
			if cur == "" {
				cur = c
			} else {
				cur += "/" + c
			}
			n := s[cur]
			if n == nil {
				n = &Node{Type: "dir", Mode: 0o755 | parent.Mode&0o022, UID: parent.UID, GID: parent.GID, Mtime: parent.Mtime}
				s[cur] = n
			} else if n.Type != "dir" {
				return fmt.Errorf("%s is not a directory", cur)
			}
			parent = n
		}
		return nil
	}
	remove := func(p string) {
		delete(s, p)
		for q := range s {
			if strings.HasPrefix(q, p+"/") {
				delete(s, q)
			}
		}
	}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		p := clean(h.Name)
		dir, base := path.Split(p)
		dir = strings.TrimSuffix(dir, "/")
		if p != "." && dir != "" {
			if err := ensureDir(dir); err != nil {
				return nil, err
			}
		}
		if dir == "" {
			dir = "."
		}
		if base == ".wh..wh..opq" {
			opaque[s[dir]] = true
			continue
		}
		if strings.HasPrefix(base, ".wh..wh.") {
			continue
		}
		if name, ok := strings.CutPrefix(base, ".wh."); ok {
			q := path.Join(dir, name)
			remove(q)
			s[q] = &Node{Type: "char", Mode: uint32(h.Mode) & 0o7777, UID: uint32(h.Uid), GID: uint32(h.Gid), Mtime: h.ModTime.UnixNano()}
			continue
		}
		if h.Typeflag == tar.TypeLink {
			t := s[clean(h.Linkname)]
			if t == nil || t.Type == "dir" {
				return nil, fmt.Errorf("bad hardlink %s -> %s", h.Name, h.Linkname)
			}
			if p != clean(h.Linkname) {
				remove(p)
				s[p] = t
			}
			continue
		}
		n := &Node{Mode: uint32(h.Mode) & 0o7777, UID: uint32(h.Uid), GID: uint32(h.Gid), Mtime: h.ModTime.UnixNano()}
		for k, v := range h.PAXRecords {
			if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				if n.Xattrs == nil {
					n.Xattrs = map[string]string{}
				}
				n.Xattrs[name] = v
			}
		}
		switch h.Typeflag {
		case tar.TypeReg:
			n.Type = "file"
			n.Size = h.Size
			if n.Digest, err = digestReader(tr); err != nil {
				return nil, err
			}
		case tar.TypeDir:
			n.Type = "dir"
		case tar.TypeSymlink:
			n.Type, n.Target, n.Size = "symlink", h.Linkname, int64(len(h.Linkname))
		case tar.TypeChar:
			n.Type, n.Major, n.Minor = "char", uint32(h.Devmajor), uint32(h.Devminor)
		case tar.TypeBlock:
			n.Type, n.Major, n.Minor = "block", uint32(h.Devmajor), uint32(h.Devminor)
		case tar.TypeFifo:
			n.Type = "fifo"
		default:
			return nil, fmt.Errorf("tar type %q", h.Typeflag)
		}
		if old := s[p]; old != nil && old.Type == "dir" && n.Type == "dir" {
			*old = Node{Type: "dir", Mode: n.Mode, UID: n.UID, GID: n.GID, Mtime: n.Mtime, Xattrs: n.Xattrs}
			continue
		}
		if p != "." {
			remove(p)
		}
		s[p] = n
	}
	// Identity, link counts and overlay markers.
	count := map[*Node]uint32{}
	for p, n := range s {
		n.id = fmt.Sprintf("%p", n)
		if p == "." {
			continue
		}
		parent := path.Dir(p)
		if n.Type == "dir" {
			count[s[parent]]++
		} else {
			count[n]++
		}
		if n.Type == "char" && n.Major == 0 && n.Minor == 0 {
			d := s[parent]
			if d.Xattrs == nil {
				d.Xattrs = map[string]string{}
			}
			d.Xattrs["trusted.overlay.origin"] = ""
		}
	}
	for _, n := range s {
		if n.Type == "dir" {
			n.Nlink = 2 + count[n]
		} else {
			n.Nlink = count[n]
		}
	}
	for n := range opaque {
		if n.Xattrs == nil {
			n.Xattrs = map[string]string{}
		}
		n.Xattrs["trusted.overlay.opaque"] = "y"
	}
	// Hardlinked nodes are shared pointers: give each path its own copy so
	// linkGroups can fill Link per path.
	out := Snapshot{}
	for p, n := range s {
		c := *n
		out[p] = &c
	}
	out.linkGroups()
	return out, nil
}
