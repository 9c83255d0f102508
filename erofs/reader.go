package erofs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
	"sync"
	"time"
)

// Reader limits: every allocation sized from the image is capped by these
// and by the image size.
const (
	maxDirSize       = 256 << 20
	maxSymlinkSize   = 4095
	maxCachedDirents = 1 << 20
)

// FS is a read-only view of an EROFS image (either layout). It implements
// fs.FS, fs.ReadDirFS, fs.StatFS and fs.ReadLinkFS. Paths are resolved
// without following symlinks: Stat and Open act on a symlink itself.
type FS struct {
	// dirCache keeps parsed directories (lookups re-read each parent);
	// bounded by maxCachedDirents entries in total.
	mu       sync.Mutex
	dirCache map[uint64][]Dirent
	cached   int

	r        io.ReaderAt
	size     int64
	sb       *superBlock
	bs       int64
	metaBase int64
	// device 1 (tar-index): flat-mapped start block, 0 if none
	dev1Mapped int64
	hasDev1    bool
}

// Info summarizes an image's superblock.
type Info struct {
	BlockSize    int
	Blocks       uint64
	Inodes       uint64
	RootNID      uint64
	MetaBlkaddr  uint32
	XattrBlkaddr uint32
	UUID         [16]byte
	FeatureCompat,
	FeatureIncompat uint32
	ExtraDevices uint16
	// Device1Blocks and Device1MappedBlkaddr describe the first extra
	// device (the tar of a tar-index image).
	Device1Blocks        uint32
	Device1MappedBlkaddr uint32
	BuildTime            uint64
	// Layout is LayoutTarIndex for 512-byte images with a flat-mapped
	// extra device, LayoutFull for 4 KiB images without one, 0 otherwise.
	Layout Layout
}

// Open parses the superblock of the image in r (size bytes).
func Open(r io.ReaderAt, size int64) (*FS, error) {
	if size < superOffset+superSize {
		return nil, fmt.Errorf("%w: %d bytes is too small for an EROFS image", ErrCorrupt, size)
	}
	b := make([]byte, superSize)
	if _, err := r.ReadAt(b, superOffset); err != nil {
		return nil, fmt.Errorf("erofs: read superblock: %w", err)
	}
	sb, err := parseSuperBlock(b)
	if err != nil {
		return nil, err
	}
	if sb.blkszbits < 9 || sb.blkszbits > 16 {
		return nil, fmt.Errorf("%w: block size 2^%d", ErrUnsupported, sb.blkszbits)
	}
	if sb.incompat&^supportedIncompat != 0 {
		return nil, fmt.Errorf("%w: incompat features %#x", ErrUnsupported, sb.incompat&^supportedIncompat)
	}
	if sb.dirblkbits != 0 {
		return nil, fmt.Errorf("%w: directory block bits %d", ErrUnsupported, sb.dirblkbits)
	}
	f := &FS{r: r, size: size, sb: sb, bs: 1 << sb.blkszbits}
	f.metaBase = int64(sb.metaBlkaddr) * f.bs
	if sb.extraDevices > 0 {
		if sb.incompat&featureIncompatDeviceTable == 0 {
			return nil, fmt.Errorf("%w: extra devices without a device table", ErrCorrupt)
		}
		slot := make([]byte, devSlotSize)
		if _, err := f.readAt(slot, int64(sb.devtSlotoff)*devSlotSize); err != nil {
			return nil, fmt.Errorf("device table: %w", err)
		}
		f.hasDev1 = true
		f.dev1Mapped = int64(binary.LittleEndian.Uint32(slot[68:]))
	}
	return f, nil
}

// Info returns the superblock summary.
func (f *FS) Info() Info {
	in := Info{
		BlockSize: int(f.bs), Blocks: uint64(f.sb.blocks), Inodes: f.sb.inos, RootNID: uint64(f.sb.rootNid),
		MetaBlkaddr: f.sb.metaBlkaddr, XattrBlkaddr: f.sb.xattrBlkaddr, UUID: f.sb.uuid,
		FeatureCompat: f.sb.feature, FeatureIncompat: f.sb.incompat, ExtraDevices: f.sb.extraDevices,
		BuildTime: f.sb.epoch,
	}
	if f.hasDev1 {
		slot := make([]byte, devSlotSize)
		if _, err := f.readAt(slot, int64(f.sb.devtSlotoff)*devSlotSize); err == nil {
			in.Device1Blocks = binary.LittleEndian.Uint32(slot[64:])
			in.Device1MappedBlkaddr = binary.LittleEndian.Uint32(slot[68:])
		}
	}
	switch {
	case f.bs == 512 && f.hasDev1 && in.Device1MappedBlkaddr != 0:
		in.Layout = LayoutTarIndex
	case f.bs == 4096 && !f.hasDev1:
		in.Layout = LayoutFull
	}
	return in
}

func (f *FS) readAt(b []byte, off int64) (int, error) {
	if off < 0 || off > f.size || int64(len(b)) > f.size-off {
		return 0, fmt.Errorf("%w: read of %d bytes at %d beyond the image (%d bytes)", ErrCorrupt, len(b), off, f.size)
	}
	n, err := f.r.ReadAt(b, off)
	if err == io.EOF && n == len(b) {
		err = nil
	}
	if err != nil {
		return n, fmt.Errorf("erofs: read at %d: %w", off, err)
	}
	return n, nil
}

// Inode is the metadata of one inode.
type Inode struct {
	NID      uint64
	Ino      uint32 // the on-disk 32-bit inode number
	RawMode  uint32 // S_IFMT and permission bits
	UID, GID uint32
	Nlink    uint32
	Size     int64
	Mtime    time.Time
	Rdev     uint32
	Extended bool
	Layout   uint8 // on-disk data layout (0 plain, 2 inline, 4 chunk-based)

	fs         *FS
	iloc       int64
	inlineOff  int64 // start of inline data / chunk indexes
	xattrCount uint16
	iu         uint32
}

// DevMajor and DevMinor decode Rdev.
func (in *Inode) DevMajor() uint32 { m, _ := decodeDev(in.Rdev); return m }

// DevMinor returns the minor device number.
func (in *Inode) DevMinor() uint32 { _, m := decodeDev(in.Rdev); return m }

// Mode converts RawMode to an fs.FileMode.
func (in *Inode) Mode() fs.FileMode {
	m := fs.FileMode(in.RawMode & 0o777)
	if in.RawMode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if in.RawMode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if in.RawMode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	switch in.RawMode & sIFMT {
	case sIFDIR:
		m |= fs.ModeDir
	case sIFLNK:
		m |= fs.ModeSymlink
	case sIFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case sIFBLK:
		m |= fs.ModeDevice
	case sIFIFO:
		m |= fs.ModeNamedPipe
	case sIFSOCK:
		m |= fs.ModeSocket
	}
	return m
}

func (f *FS) inode(nid uint64) (*Inode, error) {
	if nid > uint64(f.size)/32 {
		return nil, fmt.Errorf("%w: nid %d beyond the image", ErrCorrupt, nid)
	}
	iloc := f.metaBase + int64(nid)*32
	b := make([]byte, inodeExtendedSize)
	if _, err := f.readAt(b[:inodeCompactSize], iloc); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	format := le.Uint16(b[0:])
	in := &Inode{NID: nid, fs: f, iloc: iloc}
	if format&^0x0f != 0 {
		return nil, fmt.Errorf("%w: nid %d: inode format %#x", ErrUnsupported, nid, format)
	}
	in.Layout = uint8(format>>1) & 7
	in.xattrCount = le.Uint16(b[2:])
	in.RawMode = uint32(le.Uint16(b[4:]))
	isize := int64(inodeCompactSize)
	if format&1 != 0 {
		in.Extended = true
		isize = inodeExtendedSize
		if _, err := f.readAt(b, iloc); err != nil {
			return nil, err
		}
		in.Size = int64(le.Uint64(b[8:]))
		in.iu = le.Uint32(b[16:])
		in.Ino = le.Uint32(b[20:])
		in.UID = le.Uint32(b[24:])
		in.GID = le.Uint32(b[28:])
		in.Mtime = time.Unix(int64(le.Uint64(b[32:])), int64(le.Uint32(b[40:])%1e9)).UTC()
		in.Nlink = le.Uint32(b[44:])
	} else {
		in.Nlink = uint32(le.Uint16(b[6:]))
		in.Size = int64(le.Uint32(b[8:]))
		in.iu = le.Uint32(b[16:])
		in.Ino = le.Uint32(b[20:])
		in.UID = uint32(le.Uint16(b[24:]))
		in.GID = uint32(le.Uint16(b[26:]))
		sec := int64(f.sb.epoch)
		if f.sb.feature&featureCompatMtime != 0 {
			// Linux 6.15+ / erofs-utils 1.9: seconds after the epoch.
			sec += int64(le.Uint32(b[12:]))
		}
		in.Mtime = time.Unix(sec, int64(f.sb.fixedNsec%1e9)).UTC()
	}
	if in.Size < 0 {
		return nil, fmt.Errorf("%w: nid %d: size %d", ErrCorrupt, nid, in.Size)
	}
	xsize := int64(0)
	if in.xattrCount > 0 {
		xsize = xattrHeaderSize + 4*(int64(in.xattrCount)-1)
	}
	in.inlineOff = iloc + isize + xsize
	switch in.Layout {
	case layoutFlatPlain, layoutFlatInline, layoutChunkBased:
	default:
		return nil, fmt.Errorf("%w: nid %d: data layout %d (compressed)", ErrUnsupported, nid, in.Layout)
	}
	switch in.RawMode & sIFMT {
	case sIFCHR, sIFBLK:
		in.Rdev = in.iu
	case sIFREG, sIFDIR, sIFLNK, sIFIFO, sIFSOCK:
	default:
		return nil, fmt.Errorf("%w: nid %d: file type %#o", ErrCorrupt, nid, in.RawMode&sIFMT)
	}
	return in, nil
}

// extent returns the image offset and length of the data at off (up to n
// bytes), or offset -1 for a hole.
func (in *Inode) extent(off, n int64) (int64, int64, error) {
	f := in.fs
	bs := f.bs
	switch in.Layout {
	case layoutFlatPlain:
		return int64(in.iu)*bs + off, n, nil
	case layoutFlatInline:
		tailStart := (in.Size / bs) * bs
		if in.Size%bs == 0 {
			return 0, 0, fmt.Errorf("%w: nid %d: inline layout without a tail", ErrCorrupt, in.NID)
		}
		if off < tailStart {
			return int64(in.iu)*bs + off, min(n, tailStart-off), nil
		}
		pa := in.inlineOff + (off - tailStart)
		if in.inlineOff%bs+(in.Size-tailStart) > bs {
			return 0, 0, fmt.Errorf("%w: nid %d: inline tail crosses a block", ErrCorrupt, in.NID)
		}
		return pa, n, nil
	case layoutChunkBased:
		format := in.iu & 0xffff
		if format&^(chunkFormatIndexes|chunkFormatBlkbitsMask) != 0 {
			return 0, 0, fmt.Errorf("%w: nid %d: chunk format %#x", ErrUnsupported, in.NID, format)
		}
		chunkBits := uint(format&chunkFormatBlkbitsMask) + uint(f.sb.blkszbits)
		if chunkBits > 62 {
			return 0, 0, fmt.Errorf("%w: nid %d: chunk bits %d", ErrCorrupt, in.NID, chunkBits)
		}
		chunk := off >> chunkBits
		within := off - chunk<<chunkBits
		n = min(n, int64(1)<<chunkBits-within)
		var blk uint32
		dev := uint16(0)
		if format&chunkFormatIndexes != 0 {
			pos := align(in.inlineOff, chunkIndexSize) + chunk*chunkIndexSize
			b := make([]byte, chunkIndexSize)
			if _, err := f.readAt(b, pos); err != nil {
				return 0, 0, err
			}
			dev = binary.LittleEndian.Uint16(b[2:])
			blk = binary.LittleEndian.Uint32(b[4:])
		} else {
			pos := align(in.inlineOff, 4) + chunk*4
			b := make([]byte, 4)
			if _, err := f.readAt(b, pos); err != nil {
				return 0, 0, err
			}
			blk = binary.LittleEndian.Uint32(b)
		}
		if blk == nullAddr {
			return -1, n, nil
		}
		switch dev {
		case 0:
			return int64(blk)*bs + within, n, nil
		case 1:
			if !f.hasDev1 {
				return 0, 0, fmt.Errorf("%w: nid %d: chunk on device 1, which does not exist", ErrCorrupt, in.NID)
			}
			return (f.dev1Mapped+int64(blk))*bs + within, n, nil
		}
		return 0, 0, fmt.Errorf("%w: nid %d: chunk on device %d", ErrUnsupported, in.NID, dev)
	}
	return 0, 0, fmt.Errorf("%w: nid %d: layout %d", ErrUnsupported, in.NID, in.Layout)
}

// ReadAt reads file data.
func (in *Inode) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("erofs: negative offset")
	}
	if off >= in.Size {
		return 0, io.EOF
	}
	want := min(int64(len(p)), in.Size-off)
	done := int64(0)
	for done < want {
		pa, n, err := in.extent(off+done, want-done)
		if err != nil {
			return int(done), err
		}
		if n <= 0 {
			return int(done), fmt.Errorf("%w: nid %d: empty extent", ErrCorrupt, in.NID)
		}
		if pa < 0 {
			clear(p[done : done+n])
		} else if _, err := in.fs.readAt(p[done:done+n], pa); err != nil {
			return int(done), err
		}
		done += n
	}
	if done < int64(len(p)) {
		return int(done), io.EOF
	}
	return int(done), nil
}

func (in *Inode) readAll(limit int64) ([]byte, error) {
	if in.Size > limit {
		return nil, fmt.Errorf("%w: nid %d: size %d too large", ErrCorrupt, in.NID, in.Size)
	}
	b := make([]byte, in.Size)
	if _, err := in.ReadAt(b, 0); err != nil && err != io.EOF {
		return nil, err
	}
	return b, nil
}

// Dirent is one directory entry.
type Dirent struct {
	Name string
	NID  uint64
	Type uint8
}

func (f *FS) readDirents(in *Inode) ([]Dirent, error) {
	if in.RawMode&sIFMT != sIFDIR {
		return nil, fmt.Errorf("nid %d: not a directory", in.NID)
	}
	f.mu.Lock()
	ents, ok := f.dirCache[in.NID]
	f.mu.Unlock()
	if ok {
		return ents, nil
	}
	ents, err := f.parseDirents(in)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	if f.dirCache == nil || f.cached+len(ents) > maxCachedDirents {
		f.dirCache, f.cached = map[uint64][]Dirent{}, 0
	}
	f.dirCache[in.NID] = ents
	f.cached += len(ents)
	f.mu.Unlock()
	return ents, nil
}

func (f *FS) parseDirents(in *Inode) ([]Dirent, error) {
	data, err := in.readAll(min(maxDirSize, f.size))
	if err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	var out []Dirent
	prev := ""
	for pos := int64(0); pos < int64(len(data)); pos += f.bs {
		blk := data[pos:min(pos+f.bs, int64(len(data)))]
		if len(blk) < direntSize {
			return nil, fmt.Errorf("%w: nid %d: short directory block", ErrCorrupt, in.NID)
		}
		nameoff0 := int(le.Uint16(blk[8:]))
		if nameoff0 < direntSize || nameoff0 >= len(blk) || nameoff0%direntSize != 0 {
			return nil, fmt.Errorf("%w: nid %d: bad dirent name offset %d", ErrCorrupt, in.NID, nameoff0)
		}
		n := nameoff0 / direntSize
		for i := 0; i < n; i++ {
			de := blk[i*direntSize:]
			start := int(le.Uint16(de[8:]))
			end := len(blk)
			if i+1 < n {
				end = int(le.Uint16(blk[(i+1)*direntSize+8:]))
			}
			if start < nameoff0 || end > len(blk) || start >= end {
				return nil, fmt.Errorf("%w: nid %d: bad dirent name bounds", ErrCorrupt, in.NID)
			}
			name := blk[start:end]
			if i+1 == n {
				if z := indexByte(name, 0); z >= 0 {
					name = name[:z]
				}
			}
			if len(name) == 0 || len(name) > MaxNameLen || indexByte(name, '/') >= 0 || indexByte(name, 0) >= 0 {
				return nil, fmt.Errorf("%w: nid %d: bad file name %q", ErrCorrupt, in.NID, name)
			}
			s := string(name)
			if len(out) > 0 && s <= prev {
				return nil, fmt.Errorf("%w: nid %d: directory entries not sorted", ErrCorrupt, in.NID)
			}
			prev = s
			out = append(out, Dirent{Name: s, NID: le.Uint64(de[0:]), Type: de[10]})
		}
	}
	return out, nil
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// resolve walks name from the root without following symlinks, detecting
// directory loops.
func (f *FS) resolve(op, name string) (*Inode, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	in, err := f.inode(uint64(f.sb.rootNid))
	if err != nil {
		return nil, &fs.PathError{Op: op, Path: name, Err: err}
	}
	if name == "." {
		return in, nil
	}
	seen := map[uint64]bool{in.NID: true}
	parent := in.NID
	for _, c := range strings.Split(name, "/") {
		if in.RawMode&sIFMT != sIFDIR {
			return nil, &fs.PathError{Op: op, Path: name, Err: fmt.Errorf("%w: not a directory", fs.ErrNotExist)}
		}
		ents, err := f.readDirents(in)
		if err != nil {
			return nil, &fs.PathError{Op: op, Path: name, Err: err}
		}
		i := sort.Search(len(ents), func(i int) bool { return ents[i].Name >= c })
		if i == len(ents) || ents[i].Name != c {
			return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
		}
		in, err = f.inode(ents[i].NID)
		if err != nil {
			return nil, &fs.PathError{Op: op, Path: name, Err: err}
		}
		if in.RawMode&sIFMT == sIFDIR {
			if seen[in.NID] {
				return nil, &fs.PathError{Op: op, Path: name, Err: fmt.Errorf("%w: directory loop at nid %d", ErrCorrupt, in.NID)}
			}
			seen[in.NID] = true
			// A directory's ".." must name the directory it was found
			// in: this rejects directory hardlinks, whose walks would
			// grow exponentially, as well as loops.
			if err := f.checkParent(in, parent); err != nil {
				return nil, &fs.PathError{Op: op, Path: name, Err: err}
			}
		}
		parent = in.NID
	}
	return in, nil
}

func (f *FS) checkParent(dir *Inode, parent uint64) error {
	ents, err := f.readDirents(dir)
	if err != nil {
		return err
	}
	i := sort.Search(len(ents), func(i int) bool { return ents[i].Name >= ".." })
	if i == len(ents) || ents[i].Name != ".." {
		return fmt.Errorf("%w: directory nid %d has no \"..\" entry", ErrCorrupt, dir.NID)
	}
	if ents[i].NID != parent {
		return fmt.Errorf("%w: directory nid %d names parent nid %d but was found in nid %d", ErrCorrupt, dir.NID, ents[i].NID, parent)
	}
	return nil
}

// Inode returns the inode at name (not following symlinks).
func (f *FS) Inode(name string) (*Inode, error) { return f.resolve("inode", name) }

// Xattrs returns the extended attributes of name.
func (f *FS) Xattrs(name string) (map[string][]byte, error) {
	in, err := f.resolve("xattrs", name)
	if err != nil {
		return nil, err
	}
	return in.Xattrs()
}

// Xattrs returns the inode's extended attributes.
func (in *Inode) Xattrs() (map[string][]byte, error) {
	out := map[string][]byte{}
	if in.xattrCount == 0 {
		return out, nil
	}
	f := in.fs
	size := int64(xattrHeaderSize + 4*(int(in.xattrCount)-1))
	start := in.inlineOff - size
	body := make([]byte, size)
	if _, err := f.readAt(body, start); err != nil {
		return nil, err
	}
	shared := int(body[4])
	o := xattrHeaderSize
	if o+4*shared > len(body) {
		return nil, fmt.Errorf("%w: nid %d: shared xattr count %d", ErrCorrupt, in.NID, shared)
	}
	le := binary.LittleEndian
	for i := 0; i < shared; i++ {
		id := le.Uint32(body[o:])
		o += 4
		pos := int64(f.sb.xattrBlkaddr)*f.bs + int64(id)*4
		hdr := make([]byte, xattrEntrySize)
		if _, err := f.readAt(hdr, pos); err != nil {
			return nil, err
		}
		rest := make([]byte, int(hdr[0])+int(le.Uint16(hdr[2:])))
		if _, err := f.readAt(rest, pos+xattrEntrySize); err != nil {
			return nil, err
		}
		if err := addXattr(out, append(hdr, rest...), in.NID); err != nil {
			return nil, err
		}
	}
	for o < len(body) {
		if len(body)-o < xattrEntrySize {
			return nil, fmt.Errorf("%w: nid %d: truncated xattr entry", ErrCorrupt, in.NID)
		}
		l := xattrEntrySize + int(body[o]) + int(le.Uint16(body[o+2:]))
		if l > len(body)-o {
			return nil, fmt.Errorf("%w: nid %d: xattr entry beyond the xattr body", ErrCorrupt, in.NID)
		}
		if err := addXattr(out, body[o:o+l], in.NID); err != nil {
			return nil, err
		}
		o += int(align(int64(l), 4))
	}
	return out, nil
}

func addXattr(out map[string][]byte, e []byte, nid uint64) error {
	nlen := int(e[0])
	idx := e[1]
	if idx&xattrLongPrefixFlag != 0 {
		return fmt.Errorf("%w: nid %d: long xattr name prefixes", ErrUnsupported, nid)
	}
	prefix, ok := xattrPrefix(idx)
	if !ok {
		return fmt.Errorf("%w: nid %d: xattr prefix index %d", ErrCorrupt, nid, idx)
	}
	name := prefix + string(e[xattrEntrySize:xattrEntrySize+nlen])
	out[name] = append([]byte{}, e[xattrEntrySize+nlen:]...)
	return nil
}

// Readlink returns a symlink's target.
func (f *FS) ReadLink(name string) (string, error) {
	in, err := f.resolve("readlink", name)
	if err != nil {
		return "", err
	}
	if in.RawMode&sIFMT != sIFLNK {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: fs.ErrInvalid}
	}
	b, err := in.readAll(maxSymlinkSize)
	if err != nil {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: err}
	}
	return string(b), nil
}

// Lstat is Stat (symlinks are never followed).
func (f *FS) Lstat(name string) (fs.FileInfo, error) { return f.Stat(name) }

// Stat returns the FileInfo of name; its Sys() is the *Inode.
func (f *FS) Stat(name string) (fs.FileInfo, error) {
	in, err := f.resolve("stat", name)
	if err != nil {
		return nil, err
	}
	return &fileInfo{name: path.Base(name), in: in}, nil
}

// ReadDir lists a directory without "." and "..", sorted by name.
func (f *FS) ReadDir(name string) ([]fs.DirEntry, error) {
	in, err := f.resolve("readdir", name)
	if err != nil {
		return nil, err
	}
	return f.dirEntries(name, in)
}

func (f *FS) dirEntries(name string, in *Inode) ([]fs.DirEntry, error) {
	ents, err := f.readDirents(in)
	if err != nil {
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: err}
	}
	out := make([]fs.DirEntry, 0, len(ents))
	for _, e := range ents {
		if e.Name == "." || e.Name == ".." {
			continue
		}
		out = append(out, &dirEntry{fs: f, d: e})
	}
	return out, nil
}

// Open opens name for reading.
func (f *FS) Open(name string) (fs.File, error) {
	in, err := f.resolve("open", name)
	if err != nil {
		return nil, err
	}
	return &file{name: name, in: in, sr: io.NewSectionReader(in, 0, in.Size)}, nil
}

type fileInfo struct {
	name string
	in   *Inode
}

func (i *fileInfo) Name() string       { return i.name }
func (i *fileInfo) Size() int64        { return i.in.Size }
func (i *fileInfo) Mode() fs.FileMode  { return i.in.Mode() }
func (i *fileInfo) ModTime() time.Time { return i.in.Mtime }
func (i *fileInfo) IsDir() bool        { return i.in.RawMode&sIFMT == sIFDIR }
func (i *fileInfo) Sys() any           { return i.in }

type dirEntry struct {
	fs *FS
	d  Dirent
}

func (d *dirEntry) Name() string { return d.d.Name }
func (d *dirEntry) IsDir() bool  { return d.d.Type == ftDir }
func (d *dirEntry) Type() fs.FileMode {
	switch d.d.Type {
	case ftDir:
		return fs.ModeDir
	case ftSymlink:
		return fs.ModeSymlink
	case ftChr:
		return fs.ModeDevice | fs.ModeCharDevice
	case ftBlk:
		return fs.ModeDevice
	case ftFifo:
		return fs.ModeNamedPipe
	case ftSock:
		return fs.ModeSocket
	}
	return 0
}
func (d *dirEntry) Info() (fs.FileInfo, error) {
	in, err := d.fs.inode(d.d.NID)
	if err != nil {
		return nil, err
	}
	return &fileInfo{name: d.d.Name, in: in}, nil
}

type file struct {
	name string
	in   *Inode
	sr   *io.SectionReader
	dir  []fs.DirEntry
	dirv bool
}

func (f *file) Stat() (fs.FileInfo, error) { return &fileInfo{name: path.Base(f.name), in: f.in}, nil }
func (f *file) Read(p []byte) (int, error) {
	if f.in.RawMode&sIFMT == sIFDIR {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: errors.New("is a directory")}
	}
	return f.sr.Read(p)
}
func (f *file) ReadAt(p []byte, off int64) (int, error) { return f.sr.ReadAt(p, off) }
func (f *file) Seek(off int64, whence int) (int64, error) {
	return f.sr.Seek(off, whence)
}
func (f *file) Close() error { return nil }

// ReadDir implements fs.ReadDirFile.
func (f *file) ReadDir(n int) ([]fs.DirEntry, error) {
	if !f.dirv {
		ents, err := f.in.fs.dirEntries(f.name, f.in)
		if err != nil {
			return nil, err
		}
		f.dir, f.dirv = ents, true
	}
	if n <= 0 {
		out := f.dir
		f.dir = nil
		return out, nil
	}
	if len(f.dir) == 0 {
		return nil, io.EOF
	}
	n = min(n, len(f.dir))
	out := f.dir[:n]
	f.dir = f.dir[n:]
	return out, nil
}
