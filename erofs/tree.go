package erofs

import (
	"fmt"
	"sort"
	"strings"
)

// EntryType is the kind of a filesystem entry.
type EntryType uint8

// Entry types.
const (
	TypeRegular EntryType = iota + 1
	TypeDir
	TypeSymlink
	TypeHardlink // a second name for an existing non-directory (Linkname)
	TypeCharDev
	TypeBlockDev
	TypeFIFO
	TypeSocket
)

func (t EntryType) String() string {
	switch t {
	case TypeRegular:
		return "regular file"
	case TypeDir:
		return "directory"
	case TypeSymlink:
		return "symlink"
	case TypeHardlink:
		return "hardlink"
	case TypeCharDev:
		return "character device"
	case TypeBlockDev:
		return "block device"
	case TypeFIFO:
		return "fifo"
	case TypeSocket:
		return "socket"
	}
	return fmt.Sprintf("type %d", uint8(t))
}

// Entry is one input entry (a tar member or a file of a directory tree).
// Path is relative to the image root, with "/" separators; "./" prefixes,
// duplicate and trailing slashes are normalized. The last component of
// Path may be an OCI whiteout (".wh.NAME") or opaque marker (".wh..wh..opq"),
// which the writer converts to overlayfs form.
type Entry struct {
	Path     string
	Type     EntryType
	Mode     uint32 // permission bits including setuid/setgid/sticky (07777)
	UID, GID uint32
	// Mtime in seconds since the epoch and nanoseconds (0..999999999).
	MtimeSec  int64
	MtimeNsec uint32
	Size      int64  // regular files: data length
	Linkname  string // symlink target, or hardlink target path
	DevMajor  uint32
	DevMinor  uint32
	Xattrs    map[string][]byte
}

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// xattr is one extended attribute in EROFS form.
type xattr struct {
	index  uint8
	suffix string
	value  []byte
}

func (x *xattr) key() string { return string([]byte{x.index}) + x.suffix + "\x00" + string(x.value) }

// inode is a node of the image tree. Directories are never shared; other
// inodes may be reachable through several names (hardlinks).
type inode struct {
	mode      uint32 // S_IFMT | perms
	uid, gid  uint32
	mtime     int64
	mtimeNsec uint32
	size      uint64
	rdev      uint32
	target    string
	xattrs    []xattr

	// directories
	parent    *inode
	children  map[string]*inode
	opaque    bool
	whiteouts bool

	// data location: block in a full image, or byte offset in the tar
	dataBlk uint32
	dataOff int64

	// computed at Finish
	nlink      uint32
	seq        uint32 // 32-bit inode number
	nid        uint64
	placed     bool
	layout     uint8
	extended   bool
	xattrSize  int // inline xattr body size including header (0 if none)
	shared     []uint32
	inline     []xattr
	blkaddr    uint32 // FLAT_PLAIN start block (metadata-area data)
	chunkBits  uint8
	chunkCount uint64
	names      []string // sorted dirent names (dirs)
}

func (n *inode) isDir() bool { return n.mode&sIFMT == sIFDIR }

func newDir(parent *inode) *inode {
	d := &inode{mode: sIFDIR | 0o755, children: map[string]*inode{}}
	if parent == nil {
		d.parent = d
	} else {
		d.parent = parent
	}
	return d
}

// tree accumulates entries with OCI layer semantics.
type tree struct {
	root       *inode
	entries    int
	maxEntries int
}

// splitPath normalizes an entry path into its components. An empty result
// names the root.
func splitPath(p string) ([]string, error) {
	var parts []string
	for _, c := range strings.Split(p, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			return nil, fmt.Errorf("%w: %q contains \"..\"", ErrUnsafePath, p)
		}
		if len(c) > MaxNameLen {
			return nil, fmt.Errorf("%w: name of %d bytes in %q (at most %d)", ErrInvalidEntry, len(c), truncate(p), MaxNameLen)
		}
		if strings.IndexByte(c, 0) >= 0 {
			return nil, fmt.Errorf("%w: NUL byte in %q", ErrInvalidEntry, truncate(p))
		}
		parts = append(parts, c)
	}
	return parts, nil
}

func truncate(s string) string {
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}

// lookupParent walks to the directory that holds the last component of
// parts, creating missing directories. It fails when a component is not a
// directory.
func (t *tree) lookupParent(parts []string, path string) (*inode, error) {
	dir := t.root
	for _, c := range parts[:len(parts)-1] {
		child, ok := dir.children[c]
		if !ok {
			if err := t.count(); err != nil {
				return nil, err
			}
			// Like erofs-utils: a missing parent inherits owner and
			// mtime from its parent, mode 0755 plus the parent's
			// group/other write bits.
			child = newDir(dir)
			child.mode = sIFDIR | 0o755 | dir.mode&0o022
			child.uid, child.gid = dir.uid, dir.gid
			child.mtime, child.mtimeNsec = dir.mtime, dir.mtimeNsec
			dir.children[c] = child
		} else if !child.isDir() {
			return nil, fmt.Errorf("%w: %q lies below %q, which is not a directory", ErrUnsafePath, truncate(path), c)
		}
		dir = child
	}
	return dir, nil
}

func (t *tree) count() error {
	t.entries++
	if t.maxEntries > 0 && t.entries > t.maxEntries {
		return fmt.Errorf("%w: more than %d entries", ErrTooManyEntries, t.maxEntries)
	}
	return nil
}

// lookup resolves an existing path (for hardlink targets).
func (t *tree) lookup(parts []string) *inode {
	n := t.root
	for _, c := range parts {
		if !n.isDir() {
			return nil
		}
		child, ok := n.children[c]
		if !ok {
			return nil
		}
		n = child
	}
	return n
}

func convertXattrs(path string, m map[string][]byte) ([]xattr, error) {
	if len(m) == 0 {
		return nil, nil
	}
	xs := make([]xattr, 0, len(m))
	for name, v := range m {
		idx, suffix, ok := splitXattrName(name)
		if !ok {
			return nil, fmt.Errorf("%w: %q: xattr %q has no prefix EROFS can store (user., trusted., security., system.posix_acl_*)", ErrInvalidEntry, truncate(path), truncate(name))
		}
		if len(suffix) > 255 {
			return nil, fmt.Errorf("%w: %q: xattr name %q too long", ErrInvalidEntry, truncate(path), truncate(name))
		}
		if len(v) > maxXattrValueSize {
			return nil, fmt.Errorf("%w: %q: xattr %q value of %d bytes (at most %d)", ErrInvalidEntry, truncate(path), truncate(name), len(v), maxXattrValueSize)
		}
		xs = append(xs, xattr{index: idx, suffix: suffix, value: append([]byte(nil), v...)})
	}
	sortXattrs(xs)
	return xs, nil
}

func sortXattrs(xs []xattr) {
	sort.Slice(xs, func(i, j int) bool {
		if xs[i].index != xs[j].index {
			return xs[i].index < xs[j].index
		}
		return xs[i].suffix < xs[j].suffix
	})
}

// add applies one entry to the tree and returns the inode that receives the
// entry's data (regular files only), or nil.
func (t *tree) add(e *Entry) (*inode, error) {
	parts, err := splitPath(e.Path)
	if err != nil {
		return nil, err
	}
	if len(parts) == 0 {
		if e.Type != TypeDir {
			return nil, fmt.Errorf("%w: root entry %q is a %s, not a directory", ErrInvalidEntry, truncate(e.Path), e.Type)
		}
		return nil, t.setAttrs(t.root, e)
	}
	name := parts[len(parts)-1]
	dir, err := t.lookupParent(parts, e.Path)
	if err != nil {
		return nil, err
	}
	whiteout, opaque := false, false
	if strings.HasPrefix(name, whiteoutPrefix) {
		switch {
		case name == whiteoutOpaque:
			opaque = true
		case strings.HasPrefix(name, whiteoutMeta):
			// Other AUFS metadata (.wh..wh.plnk, .wh..wh.aufs) has no
			// overlayfs meaning; OCI appliers ignore it too.
			return nil, nil
		default:
			whiteout = true
			name = name[len(whiteoutPrefix):]
			if name == "" {
				return nil, fmt.Errorf("%w: whiteout %q names nothing", ErrInvalidEntry, truncate(e.Path))
			}
		}
	}
	if opaque {
		dir.opaque = true
		return nil, nil
	}
	if err := t.count(); err != nil {
		return nil, err
	}
	old := dir.children[name]
	if whiteout {
		n := &inode{mode: sIFCHR | (e.Mode & 0o7777), uid: e.UID, gid: e.GID, mtime: e.MtimeSec, mtimeNsec: e.MtimeNsec}
		if n.mtimeNsec > 999999999 {
			return nil, fmt.Errorf("%w: %q: nanoseconds %d out of range", ErrInvalidEntry, truncate(e.Path), e.MtimeNsec)
		}
		dir.children[name] = n
		return nil, nil
	}
	if e.Type == TypeHardlink {
		tparts, err := splitPath(e.Linkname)
		if err != nil {
			return nil, fmt.Errorf("hardlink %q: %w", truncate(e.Path), err)
		}
		target := t.lookup(tparts)
		if target == nil {
			return nil, fmt.Errorf("%w: %q links to %q", ErrMissingLinkTarget, truncate(e.Path), truncate(e.Linkname))
		}
		if target.isDir() {
			return nil, fmt.Errorf("%w: hardlink %q to directory %q", ErrInvalidEntry, truncate(e.Path), truncate(e.Linkname))
		}
		dir.children[name] = target
		return nil, nil
	}
	if e.Type == TypeDir && old != nil && old.isDir() {
		// A later entry for an existing directory updates its attributes
		// and keeps its contents.
		return nil, t.setAttrs(old, e)
	}
	var n *inode
	if e.Type == TypeDir {
		n = newDir(dir)
	} else {
		n = &inode{}
	}
	if err := t.setAttrs(n, e); err != nil {
		return nil, err
	}
	dir.children[name] = n
	if e.Type == TypeRegular {
		return n, nil
	}
	return nil, nil
}

func (t *tree) setAttrs(n *inode, e *Entry) error {
	if e.Mode&^0o7777 != 0 {
		return fmt.Errorf("%w: %q: mode %o has bits beyond 07777", ErrInvalidEntry, truncate(e.Path), e.Mode)
	}
	if e.MtimeNsec > 999999999 {
		return fmt.Errorf("%w: %q: nanoseconds %d out of range", ErrInvalidEntry, truncate(e.Path), e.MtimeNsec)
	}
	var typ uint32
	switch e.Type {
	case TypeRegular:
		typ = sIFREG
		if e.Size < 0 {
			return fmt.Errorf("%w: %q: negative size", ErrInvalidEntry, truncate(e.Path))
		}
		n.size = uint64(e.Size)
	case TypeDir:
		typ = sIFDIR
	case TypeSymlink:
		typ = sIFLNK
		if e.Linkname == "" {
			return fmt.Errorf("%w: symlink %q has an empty target", ErrInvalidEntry, truncate(e.Path))
		}
		if len(e.Linkname) > 4095 {
			return fmt.Errorf("%w: symlink %q target of %d bytes (at most 4095)", ErrInvalidEntry, truncate(e.Path), len(e.Linkname))
		}
		if strings.IndexByte(e.Linkname, 0) >= 0 {
			return fmt.Errorf("%w: symlink %q target contains NUL", ErrInvalidEntry, truncate(e.Path))
		}
		n.target = e.Linkname
		n.size = uint64(len(e.Linkname))
	case TypeCharDev, TypeBlockDev:
		typ = sIFCHR
		if e.Type == TypeBlockDev {
			typ = sIFBLK
		}
		if e.DevMajor > 0xfff || e.DevMinor > 0xfffff {
			return fmt.Errorf("%w: %q: device %d:%d beyond 12-bit major / 20-bit minor", ErrInvalidEntry, truncate(e.Path), e.DevMajor, e.DevMinor)
		}
		n.rdev = encodeDev(e.DevMajor, e.DevMinor)
	case TypeFIFO:
		typ = sIFIFO
	case TypeSocket:
		typ = sIFSOCK
	default:
		return fmt.Errorf("%w: %q: unsupported entry type %v", ErrInvalidEntry, truncate(e.Path), e.Type)
	}
	xs, err := convertXattrs(e.Path, e.Xattrs)
	if err != nil {
		return err
	}
	n.mode = typ | e.Mode
	n.uid, n.gid = e.UID, e.GID
	n.mtime, n.mtimeNsec = e.MtimeSec, e.MtimeNsec
	n.xattrs = xs
	return nil
}
