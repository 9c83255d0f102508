package erofs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/bits"
	"sort"
)

// Layout selects how file data is stored.
type Layout int

const (
	// LayoutFull: self-contained image, 4 KiB blocks, data copied in.
	LayoutFull Layout = iota + 1
	// LayoutTarIndex: metadata only, 512-byte blocks, chunk indexes into
	// the uncompressed tar placed behind the metadata.
	LayoutTarIndex
)

func (l Layout) String() string {
	switch l {
	case LayoutFull:
		return "full"
	case LayoutTarIndex:
		return "tar-index"
	}
	return fmt.Sprintf("layout(%d)", int(l))
}

// BlockSize returns the EROFS block size of the layout.
func (l Layout) BlockSize() int {
	if l == LayoutTarIndex {
		return 512
	}
	return 4096
}

// DefaultMaxEntries bounds the number of entries (and so the writer's
// memory) when Options.MaxEntries is zero.
const DefaultMaxEntries = 4 << 20

// Options configure a Writer. The zero value of every field but Layout is
// usable.
type Options struct {
	Layout Layout
	// UUID is stored in the superblock.
	UUID [16]byte
	// MaxEntries caps the number of entries; 0 means DefaultMaxEntries,
	// a negative value means no limit.
	MaxEntries int
	// Logger receives debug messages; nil discards them.
	Logger *slog.Logger
}

// Writer builds an EROFS image from entries. For LayoutFull the image is
// written to the io.Writer sequentially from offset 0: block 0 (which holds
// the superblock) is first written as zeros, then the file data in the order
// of Add calls, then at Finish the metadata; the caller must then replace
// block 0 with Result.Head. For LayoutTarIndex nothing is written until
// Finish, which writes the metadata blob (superblock included) in a single
// Write call, so that the caller learns its size before placing it.
type Writer struct {
	opts    Options
	out     io.Writer
	bs      int64
	tree    tree
	nextBlk uint64 // LayoutFull: next free data block
	started bool
	done    bool
	log     *slog.Logger
	zero    []byte
}

// Result describes a finished image.
type Result struct {
	Layout    Layout
	BlockSize int
	// Blocks is the number of blocks of the image (LayoutFull) or of the
	// metadata (LayoutTarIndex) as recorded in the superblock.
	Blocks uint64
	// Size is the number of bytes written: the whole image (LayoutFull) or
	// the metadata blob (LayoutTarIndex).
	Size int64
	// Head is block 0 of a LayoutFull image, to be written at offset 0.
	Head []byte
	// Inodes is the number of inodes; RootNID the root directory's nid.
	Inodes  uint64
	RootNID uint64
	UUID    [16]byte
}

// NewWriter returns a Writer for opts.Layout writing to w.
func NewWriter(w io.Writer, opts Options) (*Writer, error) {
	if opts.Layout != LayoutFull && opts.Layout != LayoutTarIndex {
		return nil, fmt.Errorf("erofs: unknown layout %d", int(opts.Layout))
	}
	max := opts.MaxEntries
	if max == 0 {
		max = DefaultMaxEntries
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	wr := &Writer{
		opts: opts, out: w, bs: int64(opts.Layout.BlockSize()),
		tree: tree{root: newDir(nil), maxEntries: max},
		log:  log, nextBlk: 1,
	}
	wr.tree.root.mtime = 0
	return wr, nil
}

// SetUUID sets the superblock UUID; it may be called any time before
// Finish (for example once a digest of the whole input is known).
func (w *Writer) SetUUID(u [16]byte) { w.opts.UUID = u }

func (w *Writer) start() error {
	if w.started {
		return nil
	}
	w.started = true
	if w.opts.Layout == LayoutFull {
		if _, err := w.out.Write(make([]byte, w.bs)); err != nil {
			return fmt.Errorf("erofs: write: %w", err)
		}
	}
	return nil
}

// Add adds an entry. For a regular file in LayoutFull, data supplies exactly
// e.Size bytes, which are copied into the image. In LayoutTarIndex use
// AddIndexed for regular files with data.
func (w *Writer) Add(e *Entry, data io.Reader) error {
	if w.done {
		return errors.New("erofs: Add after Finish")
	}
	if err := w.start(); err != nil {
		return err
	}
	n, err := w.tree.add(e)
	if err != nil {
		return err
	}
	if n == nil || n.size == 0 {
		return nil
	}
	if w.opts.Layout != LayoutFull {
		return fmt.Errorf("erofs: %q: file data in a %s image needs AddIndexed", truncate(e.Path), w.opts.Layout)
	}
	blocks := (n.size + uint64(w.bs) - 1) / uint64(w.bs)
	if w.nextBlk+blocks > math.MaxUint32 {
		return fmt.Errorf("%w: data beyond 2^32 blocks", ErrTooLarge)
	}
	n.dataBlk = uint32(w.nextBlk)
	copied, err := io.CopyN(w.out, data, int64(n.size))
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("erofs: %q: data after %d of %d bytes: %w", truncate(e.Path), copied, n.size, err)
	}
	if pad := int64(blocks)*w.bs - int64(n.size); pad > 0 {
		if w.zero == nil {
			w.zero = make([]byte, w.bs)
		}
		if _, err := w.out.Write(w.zero[:pad]); err != nil {
			return fmt.Errorf("erofs: write: %w", err)
		}
	}
	w.nextBlk += blocks
	return nil
}

// AddIndexed adds an entry of a LayoutTarIndex image. For a regular file,
// dataOffset is the byte offset of its data in the uncompressed tar; it must
// be a multiple of 512.
func (w *Writer) AddIndexed(e *Entry, dataOffset int64) error {
	if w.done {
		return errors.New("erofs: Add after Finish")
	}
	if w.opts.Layout != LayoutTarIndex {
		return errors.New("erofs: AddIndexed needs LayoutTarIndex")
	}
	n, err := w.tree.add(e)
	if err != nil {
		return err
	}
	if n == nil {
		return nil
	}
	if dataOffset < 0 || dataOffset%512 != 0 {
		return fmt.Errorf("%w: %q: data offset %d is not 512-aligned", ErrInvalidEntry, truncate(e.Path), dataOffset)
	}
	n.dataOff = dataOffset
	return nil
}

func align(v, a int64) int64 { return (v + a - 1) / a * a }

// Finish lays out and writes the metadata. tarSize is the length of the
// uncompressed tar stream (LayoutTarIndex only; it sizes device 1).
func (w *Writer) Finish(ctx context.Context, tarSize int64) (*Result, error) {
	if w.done {
		return nil, errors.New("erofs: Finish called twice")
	}
	if err := w.start(); err != nil {
		return nil, err
	}
	w.done = true
	bs := w.bs
	index := w.opts.Layout == LayoutTarIndex

	// 1. Order: breadth first from the root, names sorted bytewise; a
	// hardlinked inode takes its place at its first name.
	order := []*inode{w.tree.root}
	w.tree.root.placed = true
	nlinkOf := map[*inode]uint32{}
	for i := 0; i < len(order); i++ {
		if i%4096 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		d := order[i]
		if !d.isDir() {
			continue
		}
		names := make([]string, 0, len(d.children)+2)
		names = append(names, ".", "..")
		subdirs := uint32(0)
		for name, c := range d.children {
			names = append(names, name)
			if c.isDir() {
				subdirs++
			} else {
				nlinkOf[c]++
				if c.mode&sIFMT == sIFCHR && c.rdev == 0 {
					d.whiteouts = true
				}
			}
		}
		sort.Strings(names)
		d.names = names
		d.nlink = 2 + subdirs
		for _, name := range names[:] {
			if name == "." || name == ".." {
				continue
			}
			c := d.children[name]
			if !c.placed {
				c.placed = true
				order = append(order, c)
			}
		}
	}
	for n, c := range nlinkOf {
		n.nlink = c
	}

	// 2. Overlay markers become xattrs.
	for _, n := range order {
		if !n.isDir() {
			continue
		}
		if n.opaque {
			n.xattrs = setXattr(n.xattrs, xattrIndexTrusted, "overlay.opaque", []byte("y"))
		}
		if n.whiteouts {
			n.xattrs = setXattr(n.xattrs, xattrIndexTrusted, "overlay.origin", nil)
		}
	}

	// 3. Shared xattrs: a (name, value) pair that two or more inodes carry.
	uses := map[string]int{}
	for _, n := range order {
		for i := range n.xattrs {
			uses[n.xattrs[i].key()]++
		}
	}
	sharedID := map[string]int{}
	var sharedList []xattr
	for _, n := range order {
		for _, x := range n.xattrs {
			k := x.key()
			if uses[k] >= 2 {
				if _, ok := sharedID[k]; !ok {
					sharedID[k] = len(sharedList)
					sharedList = append(sharedList, x)
				}
			}
		}
	}
	// Shared xattr ids are 4-byte offsets into the shared area.
	sharedOff := make([]uint32, len(sharedList))
	var sharedArea int64
	for i, x := range sharedList {
		sharedOff[i] = uint32(sharedArea / 4)
		sharedArea += align(int64(xattrEntrySize+len(x.suffix)+len(x.value)), 4)
		if sharedArea/4 > math.MaxUint32 {
			return nil, fmt.Errorf("%w: shared xattr area", ErrTooLarge)
		}
	}

	// 4. Sizes of every inode.
	for seq, n := range order {
		n.seq = uint32(seq + 1)
		n.shared, n.inline = n.shared[:0], n.inline[:0]
		body := 0
		for _, x := range n.xattrs {
			if id, ok := sharedID[x.key()]; ok {
				n.shared = append(n.shared, sharedOff[id])
			} else {
				n.inline = append(n.inline, x)
				body += int(align(int64(xattrEntrySize+len(x.suffix)+len(x.value)), 4))
			}
		}
		if len(n.xattrs) > 0 {
			if len(n.shared) > 255 {
				return nil, fmt.Errorf("%w: an inode has more than 255 shared xattrs", ErrInvalidEntry)
			}
			body += xattrHeaderSize + 4*len(n.shared)
			if body > maxInlineXattrBodySize {
				return nil, fmt.Errorf("%w: xattrs of one inode exceed %d bytes", ErrInvalidEntry, maxInlineXattrBodySize)
			}
		}
		n.xattrSize = body
		if n.isDir() {
			n.size = uint64(dirSize(n.names, bs))
		}
		n.extended = !(n.mtime == 0 && n.mtimeNsec == 0 && n.uid <= 0xffff && n.gid <= 0xffff &&
			n.nlink <= 0xffff && n.size <= math.MaxUint32)
	}

	// 5. Place inodes.
	var metaBlk uint64
	var pos int64
	if index {
		metaBlk = 0
		pos = superOffset + superSize + devSlotSize // 1280: after superblock and the device slot
	} else {
		metaBlk = w.nextBlk
		// nid 0 is never used: readdir would report d_ino 0, which
		// glibc treats as a deleted entry.
		pos = int64(metaBlk)*bs + 32
	}
	if metaBlk > math.MaxUint32 {
		return nil, fmt.Errorf("%w: metadata beyond 2^32 blocks", ErrTooLarge)
	}
	metaBase := int64(metaBlk) * bs
	var plain []*inode // inodes whose data goes to the metadata data area
	for i, n := range order {
		if i%4096 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		isize := int64(inodeCompactSize)
		if n.extended {
			isize = inodeExtendedSize
		}
		head := isize + int64(n.xattrSize)
		p := align(pos, 32)
		ft := n.mode & sIFMT
		switch {
		case (ft == sIFDIR || ft == sIFLNK) && n.size > 0 && int64(n.size) < bs && head+int64(n.size) <= bs:
			n.layout = layoutFlatInline
			if (p+head)%bs+int64(n.size) > bs {
				p = align(p, bs)
			}
			pos = p + head + int64(n.size)
		case ft == sIFDIR || ft == sIFLNK:
			n.layout = layoutFlatPlain
			plain = append(plain, n)
			pos = p + head
		case ft == sIFREG && index && n.size > 0:
			n.layout = layoutChunkBased
			cb := uint8(64 - bits.LeadingZeros64(n.size-1))
			if cb < 9 {
				cb = 9
			}
			if cb > 9+31 {
				cb = 9 + 31
			}
			n.chunkBits = cb
			n.chunkCount = (n.size + (1 << cb) - 1) >> cb
			pos = align(p+head, chunkIndexSize) + int64(n.chunkCount)*chunkIndexSize
		default:
			n.layout = layoutFlatPlain
			pos = p + head
		}
		nid := (p - metaBase) / 32
		n.nid = uint64(nid)
	}
	if order[0].nid > math.MaxUint16 {
		return nil, fmt.Errorf("%w: root nid %d beyond 16 bits", ErrTooLarge, order[0].nid)
	}
	// Directory and long-symlink blocks.
	pos = align(pos, bs)
	for _, n := range plain {
		blk := pos / bs
		if blk > math.MaxUint32 {
			return nil, fmt.Errorf("%w: metadata beyond 2^32 blocks", ErrTooLarge)
		}
		n.blkaddr = uint32(blk)
		pos += align(int64(n.size), bs)
	}
	// Shared xattrs.
	var xattrBlk int64
	if len(sharedList) > 0 {
		xattrBlk = pos / bs
		if xattrBlk > math.MaxUint32 {
			return nil, fmt.Errorf("%w: metadata beyond 2^32 blocks", ErrTooLarge)
		}
		pos += align(sharedArea, bs)
	}
	end := align(pos, bs)
	if end/bs > math.MaxUint32 {
		return nil, fmt.Errorf("%w: image beyond 2^32 blocks", ErrTooLarge)
	}

	// 6. Serialize the metadata region.
	regionStart := metaBase // full: from meta block; index: from 0
	buf := make([]byte, end-regionStart)
	at := func(off int64) []byte { return buf[off-regionStart:] }
	le := binary.LittleEndian
	for _, n := range order {
		p := metaBase + int64(n.nid)*32
		b := at(p)
		isize := int64(inodeCompactSize)
		if n.extended {
			isize = inodeExtendedSize
		}
		icount := uint16(0)
		if n.xattrSize > 0 {
			icount = uint16((n.xattrSize-xattrHeaderSize)/4 + 1)
		}
		var iu uint32
		switch {
		case n.layout == layoutChunkBased:
			iu = uint32(n.chunkBits-9) | chunkFormatIndexes
		case n.mode&sIFMT == sIFCHR || n.mode&sIFMT == sIFBLK:
			iu = n.rdev
		case n.mode&sIFMT == sIFIFO || n.mode&sIFMT == sIFSOCK:
			iu = 0
		case n.layout == layoutFlatInline:
			iu = nullAddr
		case n.mode&sIFMT == sIFREG:
			if n.size == 0 {
				iu = nullAddr
			} else {
				iu = n.dataBlk
			}
		default: // plain dir/symlink
			iu = n.blkaddr
		}
		format := uint16(n.layout) << 1
		if n.extended {
			format |= 1
			le.PutUint16(b[0:], format)
			le.PutUint16(b[2:], icount)
			le.PutUint16(b[4:], uint16(n.mode))
			le.PutUint64(b[8:], n.size)
			le.PutUint32(b[16:], iu)
			le.PutUint32(b[20:], n.seq)
			le.PutUint32(b[24:], n.uid)
			le.PutUint32(b[28:], n.gid)
			le.PutUint64(b[32:], uint64(n.mtime))
			le.PutUint32(b[40:], n.mtimeNsec)
			le.PutUint32(b[44:], n.nlink)
		} else {
			le.PutUint16(b[0:], format)
			le.PutUint16(b[2:], icount)
			le.PutUint16(b[4:], uint16(n.mode))
			le.PutUint16(b[6:], uint16(n.nlink))
			le.PutUint32(b[8:], uint32(n.size))
			le.PutUint32(b[16:], iu)
			le.PutUint32(b[20:], n.seq)
			le.PutUint16(b[24:], uint16(n.uid))
			le.PutUint16(b[26:], uint16(n.gid))
		}
		x := b[isize:]
		if n.xattrSize > 0 {
			x[4] = uint8(len(n.shared))
			o := xattrHeaderSize
			for _, id := range n.shared {
				le.PutUint32(x[o:], id)
				o += 4
			}
			for _, e := range n.inline {
				o += putXattr(x[o:], e)
			}
		}
		after := isize + int64(n.xattrSize)
		var data []byte
		if n.isDir() {
			data = w.dirData(n, bs)
		} else if n.mode&sIFMT == sIFLNK {
			data = []byte(n.target)
		}
		switch n.layout {
		case layoutFlatInline:
			copy(b[after:], data)
		case layoutFlatPlain:
			if data != nil {
				copy(at(int64(n.blkaddr)*bs), data)
			}
		case layoutChunkBased:
			ci := align(p+after, chunkIndexSize)
			cb := at(ci)
			chunkBlks := uint64(1) << (n.chunkBits - 9)
			first := uint64(n.dataOff) / 512
			for i := uint64(0); i < n.chunkCount; i++ {
				addr := first + i*chunkBlks
				if addr > math.MaxUint32-1 {
					return nil, fmt.Errorf("%w: tar offset beyond 2 TiB", ErrTooLarge)
				}
				le.PutUint16(cb[i*8+2:], 1) // device 1: the tar
				le.PutUint32(cb[i*8+4:], uint32(addr))
			}
		}
	}
	if len(sharedList) > 0 {
		o := xattrBlk * bs
		for _, x := range sharedList {
			o += int64(putXattr(at(o), x))
		}
	}
	sb := superBlock{
		blkszbits:    uint8(bits.TrailingZeros64(uint64(bs))),
		rootNid:      uint16(order[0].nid),
		inos:         uint64(len(order)),
		blocks:       uint32(end / bs),
		metaBlkaddr:  uint32(metaBlk),
		xattrBlkaddr: uint32(xattrBlk),
		uuid:         w.opts.UUID,
	}
	res := &Result{Layout: w.opts.Layout, BlockSize: int(bs), Blocks: uint64(end / bs), Inodes: uint64(len(order)), RootNID: order[0].nid, UUID: w.opts.UUID}
	if index {
		sb.incompat = featureIncompatChunkedFile | featureIncompatDeviceTable
		sb.extraDevices = 1
		sb.devtSlotoff = (superOffset + superSize) / devSlotSize
		copy(buf[superOffset:], sb.marshal())
		slot := buf[superOffset+superSize:]
		tarBlocks := (tarSize + 511) / 512
		if tarBlocks > math.MaxUint32 {
			return nil, fmt.Errorf("%w: tar beyond 2 TiB", ErrTooLarge)
		}
		le.PutUint32(slot[64:], uint32(tarBlocks))
		le.PutUint32(slot[68:], uint32(end/bs))
		if _, err := w.out.Write(buf); err != nil {
			return nil, fmt.Errorf("erofs: write metadata: %w", err)
		}
		res.Size = int64(len(buf))
	} else {
		if _, err := w.out.Write(buf); err != nil {
			return nil, fmt.Errorf("erofs: write metadata: %w", err)
		}
		head := make([]byte, bs)
		copy(head[superOffset:], sb.marshal())
		res.Head = head
		res.Size = end
	}
	w.log.Debug("erofs image laid out", "layout", w.opts.Layout.String(), "inodes", len(order), "blocks", res.Blocks, "shared_xattrs", len(sharedList))
	return res, nil
}

func setXattr(xs []xattr, index uint8, suffix string, value []byte) []xattr {
	for i := range xs {
		if xs[i].index == index && xs[i].suffix == suffix {
			xs[i].value = value
			return xs
		}
	}
	xs = append(xs, xattr{index: index, suffix: suffix, value: value})
	sortXattrs(xs)
	return xs
}

func putXattr(b []byte, x xattr) int {
	b[0] = uint8(len(x.suffix))
	b[1] = x.index
	binary.LittleEndian.PutUint16(b[2:], uint16(len(x.value)))
	copy(b[4:], x.suffix)
	copy(b[4+len(x.suffix):], x.value)
	return int(align(int64(xattrEntrySize+len(x.suffix)+len(x.value)), 4))
}

// dirBlocks splits sorted names into directory blocks; it returns the number
// of entries of each block.
func dirBlocks(names []string, bs int64) []int {
	var counts []int
	used, k := int64(0), 0
	for _, name := range names {
		need := int64(direntSize + len(name))
		if k > 0 && used+need > bs {
			counts = append(counts, k)
			used, k = 0, 0
		}
		used += need
		k++
	}
	if k > 0 {
		counts = append(counts, k)
	}
	return counts
}

func dirSize(names []string, bs int64) int64 {
	counts := dirBlocks(names, bs)
	last := counts[len(counts)-1]
	used := int64(0)
	for _, name := range names[len(names)-last:] {
		used += int64(direntSize + len(name))
	}
	return int64(len(counts)-1)*bs + used
}

// dirData encodes the directory's dirent blocks (the last one truncated to
// the directory's size).
func (w *Writer) dirData(d *inode, bs int64) []byte {
	counts := dirBlocks(d.names, bs)
	var out bytes.Buffer
	i := 0
	le := binary.LittleEndian
	for _, k := range counts {
		blk := make([]byte, bs)
		nameoff := int64(k * direntSize)
		used := nameoff
		for j := 0; j < k; j++ {
			name := d.names[i+j]
			var c *inode
			switch name {
			case ".":
				c = d
			case "..":
				c = d.parent
			default:
				c = d.children[name]
			}
			de := blk[j*direntSize:]
			le.PutUint64(de[0:], c.nid)
			le.PutUint16(de[8:], uint16(nameoff))
			de[10] = fileType(c.mode)
			copy(blk[nameoff:], name)
			nameoff += int64(len(name))
			used = nameoff
		}
		i += k
		if i == len(d.names) {
			blk = blk[:used]
		}
		out.Write(blk)
	}
	return out.Bytes()
}

func fileType(mode uint32) uint8 {
	switch mode & sIFMT {
	case sIFREG:
		return ftReg
	case sIFDIR:
		return ftDir
	case sIFCHR:
		return ftChr
	case sIFBLK:
		return ftBlk
	case sIFIFO:
		return ftFifo
	case sIFSOCK:
		return ftSock
	case sIFLNK:
		return ftSymlink
	}
	return ftUnknown
}

// Has reports whether the image being written has an entry at path
// (whiteouts do not count), for callers that add defaults only where the
// input left a gap.
func (w *Writer) Has(path string) bool {
	parts, err := splitPath(path)
	if err != nil {
		return false
	}
	n := w.tree.lookup(parts)
	return n != nil && !(n.mode&sIFMT == sIFCHR && n.rdev == 0 && n.size == 0)
}
