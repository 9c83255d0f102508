package verity

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// Builder builds a dm-verity tree from data streamed through it once.
//
// Data arrives through Write or ReadFrom in any chunk sizes; the total size
// need not be known in advance. Level 0 is hashed as data arrives (in
// parallel, see Options.Concurrency); its digests are kept in memory up to
// Options.MemoryLimit and spilled to an unlinked temporary file beyond that.
// UpdateBlock replaces a block that was already written. Finish zero-pads a
// trailing partial block, computes the upper levels and writes the hash area
// to an io.WriterAt.
//
// Finish does not write data: the caller's data device must hold the written
// bytes followed by zeros up to DataBlocks*DataBlockSize (a file whose tree
// is appended at or after that point does, since the gap reads as zeros).
//
// A Builder is not safe for concurrent use. Call Close to release the spill
// file if Finish is never called; Close after Finish is a no-op.
type Builder struct {
	p      Params // template: shape fields; DataBlocks is 0 or the expected count
	shape  Layout // digest size, slot and fan-out (valid for any DataBlocks)
	opts   Options
	pl     *pipeline
	store  *level0
	cur    *batch // batch being filled, nil if none
	total  uint64 // bytes accepted
	known  uint64 // total size when known up front (Format), for progress
	done   uint64 // bytes hashed and collected
	err    error  // sticky
	closed bool
}

// Result is what building a tree produces.
type Result struct {
	// Params are the final parameters: DataBlocks and HashOffset filled in.
	Params Params
	// Layout is the tree's layout for those parameters.
	Layout Layout
	// RootHash is the root hash (use RootHashHex for the text form).
	RootHash []byte
}

// NewBuilder starts a tree with p's hash type, algorithm, block sizes, salt,
// UUID and superblock choice. p.DataBlocks may be 0 (determined by the data)
// or the exact number of blocks the data must fill. p.HashOffset is ignored:
// Finish takes the offset, because it usually depends on the data size.
func NewBuilder(p Params, opts *Options) (*Builder, error) {
	shape, err := buildShape(p)
	if err != nil {
		return nil, err
	}
	b := &Builder{p: p.Clone(), shape: shape, opts: opts.orDefault()}
	b.store = newLevel0(b.p, shape, b.opts.MemoryLimit, b.opts.TempDir)
	b.pl = newPipeline(b.p, b.opts.Concurrency, b.opts.noSIMD, b.collect)
	return b, nil
}

// buildShape validates a template for building and returns the part of the
// layout that does not depend on the number of data blocks.
func buildShape(p Params) (Layout, error) {
	q := p
	q.HashOffset = 0
	if err := q.validateShape(); err != nil {
		return Layout{}, err
	}
	if !algorithms[p.Algorithm].build {
		return Layout{}, unsupportedf("building a new tree with %s (it is accepted for existing trees only)", p.Algorithm)
	}
	q.DataBlocks = 1
	return q.layout()
}

func (b *Builder) collect(bt *batch) error {
	if err := b.store.append(bt.digests[:bt.blocks(int(b.p.DataBlockSize))*b.shape.DigestSize]); err != nil {
		return err
	}
	b.done += uint64(bt.n)
	if b.opts.Progress != nil {
		b.opts.Progress(b.done, b.known)
	}
	return nil
}

func (b *Builder) usable() error {
	if b.closed {
		return errors.New("verity: builder used after Finish or Close")
	}
	return b.err
}

// Write hashes the next bytes of data. It never returns a short count
// without an error.
func (b *Builder) Write(data []byte) (int, error) {
	if err := b.usable(); err != nil {
		return 0, err
	}
	n := 0
	for n < len(data) {
		if b.cur == nil {
			b.cur = b.pl.get(b.total / uint64(b.p.DataBlockSize))
		}
		m := copy(b.cur.data[b.cur.n:], data[n:])
		b.cur.n += m
		n += m
		b.total += uint64(m)
		if b.cur.n == len(b.cur.data) {
			if err := b.flushCur(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// ReadFrom reads data from r until EOF straight into the hashing buffers
// (io.Copy uses it).
func (b *Builder) ReadFrom(r io.Reader) (int64, error) {
	if err := b.usable(); err != nil {
		return 0, err
	}
	var n int64
	for {
		if b.cur == nil {
			b.cur = b.pl.get(b.total / uint64(b.p.DataBlockSize))
		}
		m, err := r.Read(b.cur.data[b.cur.n:])
		b.cur.n += m
		n += int64(m)
		b.total += uint64(m)
		if b.cur.n == len(b.cur.data) {
			if ferr := b.flushCur(); ferr != nil {
				return n, ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

func (b *Builder) flushCur() error {
	c := b.cur
	b.cur = nil
	if err := b.pl.submit(c); err != nil {
		b.err = err
		return err
	}
	return nil
}

// Size returns the number of data bytes written so far.
func (b *Builder) Size() uint64 { return b.total }

// UpdateBlock replaces data block index, which must already have been
// written, with data. data must be as long as the block is now: the data
// block size, or what has been written of a trailing partial block.
func (b *Builder) UpdateBlock(index uint64, data []byte) error {
	if err := b.usable(); err != nil {
		return err
	}
	dbs := uint64(b.p.DataBlockSize)
	nblocks := (b.total + dbs - 1) / dbs
	if index >= nblocks {
		return fmt.Errorf("%w: update of data block %d, only %d written", ErrBlockRange, index, nblocks)
	}
	want := dbs
	if index == nblocks-1 && b.total%dbs != 0 {
		want = b.total % dbs
	}
	if uint64(len(data)) != want {
		return fmt.Errorf("%w: update of data block %d with %d bytes, the block has %d", ErrBlockRange, index, len(data), want)
	}
	if err := b.pl.drain(); err != nil {
		b.err = err
		return err
	}
	if b.cur != nil && index >= b.cur.first {
		copy(b.cur.data[(index-b.cur.first)*dbs:], data)
		return nil
	}
	d := make([]byte, b.shape.DigestSize)
	b.pl.inline.sum(d, data)
	if err := b.store.set(index, d); err != nil {
		b.err = err
		return err
	}
	return nil
}

// Finish hashes what is left, computes the upper levels and writes the hash
// area to out: the superblock at hashOffset (unless the parameters say
// NoSuperblock; then the tree starts at hashOffset, which must be a multiple
// of the hash block size), zeros up to the tree, and the tree. It returns
// the root hash and the final parameters. The Builder cannot be used
// afterwards.
func (b *Builder) Finish(ctx context.Context, out io.WriterAt, hashOffset uint64) (*Result, error) {
	if err := b.usable(); err != nil {
		return nil, err
	}
	defer b.Close()
	if b.cur != nil && b.cur.n > 0 {
		if err := b.flushCur(); err != nil {
			return nil, err
		}
	}
	if err := b.pl.drain(); err != nil {
		return nil, err
	}
	dbs := uint64(b.p.DataBlockSize)
	nblocks := (b.total + dbs - 1) / dbs
	if b.p.DataBlocks != 0 && b.p.DataBlocks != nblocks {
		return nil, invalidf("%d data blocks were written, the parameters say %d", nblocks, b.p.DataBlocks)
	}
	p := b.p.Clone()
	p.DataBlocks = nblocks
	p.HashOffset = hashOffset
	l, err := p.Layout()
	if err != nil {
		return nil, err
	}
	root, err := writeTree(ctx, p, l, b.store, out)
	if err != nil {
		return nil, err
	}
	if err := writeSuperblock(p, l, out); err != nil {
		return nil, err
	}
	b.opts.Logger.Debug("verity tree built", "params", p.String(), "levels", l.Levels, "root", RootHashHex(root))
	return &Result{Params: p, Layout: l, RootHash: root}, nil
}

// Close releases the Builder's resources (the spill file). It is safe to
// call more than once and after Finish.
func (b *Builder) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	b.pl.drain()
	b.store.close()
	return nil
}

// writeSuperblock writes the superblock and the zeros up to the tree.
func writeSuperblock(p Params, l Layout, out io.WriterAt) error {
	if p.NoSuperblock {
		return nil
	}
	sb, err := p.MarshalSuperblock()
	if err != nil {
		return err
	}
	buf := make([]byte, l.TreeOffset-p.HashOffset)
	copy(buf, sb)
	if _, err := out.WriteAt(buf, int64(p.HashOffset)); err != nil {
		return fmt.Errorf("write verity superblock: %w", err)
	}
	return nil
}

// writeTree writes level 0 from the store (unless it is already in place)
// and computes and writes the upper levels in one pass, holding one block
// per level. It returns the root hash.
func writeTree(ctx context.Context, p Params, l Layout, s *level0, out io.WriterAt) ([]byte, error) {
	if s.count != p.DataBlocks {
		return nil, fmt.Errorf("verity: internal error: %d level-0 digests for %d data blocks", s.count, p.DataBlocks)
	}
	if l.Levels == 0 {
		d, err := s.digest(0)
		if err != nil {
			return nil, err
		}
		return append([]byte{}, d...), nil
	}
	t := newTreeWriter(p, l, out)
	var digs []byte
	err := s.each(func(chunk []byte, first uint64, spilled bool) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !(spilled && s.direct) {
			if _, err := out.WriteAt(chunk, int64(l.LevelStart[0]+first)*int64(p.HashBlockSize)); err != nil {
				return fmt.Errorf("write hash level 0: %w", err)
			}
		}
		hbs := int(p.HashBlockSize)
		n := len(chunk) / hbs
		if cap(digs) < n*l.DigestSize {
			digs = make([]byte, n*l.DigestSize)
		}
		t.hs.sumBlocks(digs, chunk, n, hbs)
		for i := 0; i < n; i++ {
			if err := t.add(1, digs[i*l.DigestSize:(i+1)*l.DigestSize]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return t.finish()
}

// treeWriter builds levels 1.. from the blocks of the level below, writing
// each completed block through a small per-level buffer.
type treeWriter struct {
	p     Params
	l     Layout
	out   io.WriterAt
	hs    *hasher
	hbs   int
	acc   [][]byte // acc[i]: block of level i being filled
	accN  []uint64 // digests in acc[i]
	wbuf  [][]byte // wbuf[i]: completed blocks of level i not yet written
	wnext []uint64 // wnext[i]: index in level i of the first block in wbuf[i]
	root  []byte
	dig   []byte
}

const treeWriteBuf = 64 << 10

func newTreeWriter(p Params, l Layout, out io.WriterAt) *treeWriter {
	t := &treeWriter{p: p, l: l, out: out, hs: newHasher(p), hbs: int(p.HashBlockSize),
		acc: make([][]byte, l.Levels), accN: make([]uint64, l.Levels),
		wbuf: make([][]byte, l.Levels), wnext: make([]uint64, l.Levels),
		dig: make([]byte, l.DigestSize)}
	for i := 1; i < l.Levels; i++ {
		t.acc[i] = make([]byte, t.hbs)
	}
	return t
}

// push adds the node of child (a block of level-1) to level.
func (t *treeWriter) push(level int, child []byte) error {
	t.hs.sum(t.dig, child)
	return t.add(level, t.dig)
}

// add adds a digest of a block of level-1 to level.
func (t *treeWriter) add(level int, digest []byte) error {
	if level == t.l.Levels {
		if t.root != nil {
			return errors.New("verity: internal error: more than one top block")
		}
		t.root = append([]byte{}, digest...)
		return nil
	}
	off := int(t.accN[level]) * t.l.DigestSlot
	copy(t.acc[level][off:], digest)
	t.accN[level]++
	if t.accN[level] == t.l.HashesPerBlock() {
		return t.complete(level)
	}
	return nil
}

// complete emits the block being filled at level.
func (t *treeWriter) complete(level int) error {
	blk := t.acc[level]
	t.wbuf[level] = append(t.wbuf[level], blk...)
	if len(t.wbuf[level]) >= treeWriteBuf {
		if err := t.flush(level); err != nil {
			return err
		}
	}
	if err := t.push(level+1, blk); err != nil {
		return err
	}
	clear(blk)
	t.accN[level] = 0
	return nil
}

func (t *treeWriter) flush(level int) error {
	b := t.wbuf[level]
	if len(b) == 0 {
		return nil
	}
	off := int64(t.l.LevelStart[level]+t.wnext[level]) * int64(t.hbs)
	if _, err := t.out.WriteAt(b, off); err != nil {
		return fmt.Errorf("write hash level %d: %w", level, err)
	}
	t.wnext[level] += uint64(len(b) / t.hbs)
	t.wbuf[level] = b[:0]
	return nil
}

// finish completes the partial blocks bottom-up and flushes every level.
func (t *treeWriter) finish() ([]byte, error) {
	for i := 1; i < t.l.Levels; i++ {
		if t.accN[i] > 0 {
			if err := t.complete(i); err != nil {
				return nil, err
			}
		}
		if err := t.flush(i); err != nil {
			return nil, err
		}
		if t.wnext[i] != t.l.LevelBlocks[i] {
			return nil, fmt.Errorf("verity: internal error: level %d has %d blocks, want %d", i, t.wnext[i], t.l.LevelBlocks[i])
		}
	}
	if t.root == nil {
		return nil, errors.New("verity: internal error: no top block")
	}
	return t.root, nil
}

// WriteDigests appends the level-0 digests of whole data blocks that were
// hashed elsewhere (by another Builder with the same parameters, see
// Digests), as if those blocks had been written: digests holds one digest
// per block, back to back. The data written so far must end on a block
// boundary. Node digests do not depend on a block's position, so a tree can
// be assembled from parts hashed separately: for example a tar hashed while
// it streams, placed behind metadata whose size is known only at the end.
func (b *Builder) WriteDigests(digests []byte) error {
	if err := b.usable(); err != nil {
		return err
	}
	d := b.shape.DigestSize
	if len(digests)%d != 0 {
		return fmt.Errorf("%w: %d bytes of digests is not a multiple of the digest size %d", ErrBlockRange, len(digests), d)
	}
	dbs := uint64(b.p.DataBlockSize)
	if b.total%dbs != 0 {
		return fmt.Errorf("%w: digests appended after %d bytes, not a multiple of the data block size %d", ErrBlockRange, b.total, dbs)
	}
	if b.cur != nil && b.cur.n > 0 {
		if err := b.flushCur(); err != nil {
			return err
		}
	} else if b.cur != nil {
		// An empty batch would start at the wrong block afterwards.
		b.pl.free = append(b.pl.free, b.cur)
		b.cur = nil
	}
	if err := b.pl.drain(); err != nil {
		b.err = err
		return err
	}
	if err := b.store.append(digests); err != nil {
		b.err = err
		return err
	}
	n := uint64(len(digests) / d)
	b.total += n * dbs
	b.done += n * dbs
	return nil
}

// Digests hashes what is left (zero-padding a trailing partial block) and
// calls fn with the level-0 digests of all data blocks in order, in chunks
// of whole digests (valid only during the call). Another Builder takes them
// with WriteDigests. Afterwards the Builder can only be closed.
func (b *Builder) Digests(ctx context.Context, fn func(digests []byte) error) error {
	if err := b.usable(); err != nil {
		return err
	}
	defer b.Close()
	if b.cur != nil && b.cur.n > 0 {
		if err := b.flushCur(); err != nil {
			return err
		}
	}
	if err := b.pl.drain(); err != nil {
		return err
	}
	d, slot := b.shape.DigestSize, b.shape.DigestSlot
	left := b.store.count
	var packed []byte
	return b.store.each(func(chunk []byte, first uint64, spilled bool) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(uint64(len(chunk)/slot), left)
		// Every algorithm a Builder accepts has a power-of-two digest size,
		// so slots are digests and a hash block is full of them; the last
		// block ends in zero slots that are not digests.
		if slot != d {
			packed = packed[:0]
			for i := uint64(0); i < n; i++ {
				packed = append(packed, chunk[int(i)*slot:int(i)*slot+d]...)
			}
			chunk = packed
		}
		left -= n
		return fn(chunk[:n*uint64(d)])
	})
}
