package verity

import (
	"container/list"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Verifier checks data blocks against a root hash, reading hash blocks from
// the hash device as needed, the way the kernel does on every read: the
// block's digest must match its slot in a level-0 hash block, which must
// match its slot in level 1, and so on up to the root hash. Hash blocks that
// were verified are cached (most recently used first), so sequential reads
// touch each hash block once. A Verifier is safe for concurrent use.
type Verifier struct {
	p    Params
	l    Layout
	root []byte
	hash io.ReaderAt

	hashers sync.Pool // *hasher for data blocks

	mu    sync.Mutex
	hs    *hasher // for hash blocks, under mu
	dig   []byte  // scratch digest, under mu
	cache map[uint64]*list.Element
	lru   *list.List // of *cachedBlock, front = most recent
	max   int
}

type cachedBlock struct {
	n    uint64 // absolute hash block number
	data []byte
}

// VerifierOptions tune a Verifier. The zero value (or nil) is fine.
type VerifierOptions struct {
	// CacheBlocks is the number of verified hash blocks kept. 0 means 256;
	// it is raised to the number of levels if lower.
	CacheBlocks int
}

// NewVerifier returns a Verifier for the tree described by p (for example
// from ReadSuperblock) with the given root hash, whose hash device is hash.
func NewVerifier(p Params, rootHash []byte, hash io.ReaderAt, opts *VerifierOptions) (*Verifier, error) {
	l, err := p.Layout()
	if err != nil {
		return nil, err
	}
	if len(rootHash) != l.DigestSize {
		return nil, invalidf("root hash of %d bytes, %s needs %d", len(rootHash), p.Algorithm, l.DigestSize)
	}
	p = p.Clone()
	v := &Verifier{p: p, l: l, root: append([]byte{}, rootHash...), hash: hash,
		hs: newHasher(p), dig: make([]byte, l.DigestSize),
		cache: map[uint64]*list.Element{}, lru: list.New(), max: 256}
	if opts != nil && opts.CacheBlocks > 0 {
		v.max = opts.CacheBlocks
	}
	v.max = max(v.max, l.Levels+1)
	v.hashers.New = func() any { return newHasher(p) }
	return v, nil
}

// Params returns the parameters the Verifier checks against.
func (v *Verifier) Params() Params { return v.p.Clone() }

// VerifyBlock checks data block index. data must be exactly one data block.
// A mismatch is a *BlockError (errors.Is(err, ErrCorrupt)) naming the data
// block or the first hash block on its path that fails; a hash device too
// short is ErrTooSmall.
func (v *Verifier) VerifyBlock(index uint64, data []byte) error {
	if index >= v.p.DataBlocks {
		return fmt.Errorf("%w: data block %d, the device has %d", ErrBlockRange, index, v.p.DataBlocks)
	}
	if len(data) != int(v.p.DataBlockSize) {
		return fmt.Errorf("%w: data block %d has %d bytes, want %d", ErrBlockRange, index, len(data), v.p.DataBlockSize)
	}
	hs := v.hashers.Get().(*hasher)
	var d [64]byte
	hs.sum(d[:], data)
	v.hashers.Put(hs)
	return v.checkDigest(index, d[:v.l.DigestSize])
}

// checkDigest checks the digest of data block index against the tree.
func (v *Verifier) checkDigest(index uint64, digest []byte) error {
	bad := &BlockError{Level: -1, Index: index, Offset: index * uint64(v.p.DataBlockSize)}
	if v.l.Levels == 0 {
		if subtle.ConstantTimeCompare(digest, v.root) != 1 {
			bad.Root = true
			return bad
		}
		return nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	blk, err := v.hashBlock(0, index>>v.l.HashPerBlockBits)
	if err != nil {
		return err
	}
	off := v.l.slotOffset(index)
	if subtle.ConstantTimeCompare(digest, blk[off:off+v.l.DigestSize]) != 1 {
		return bad
	}
	return nil
}

func (l Layout) slotOffset(index uint64) int {
	return int(index&(1<<l.HashPerBlockBits-1)) * l.DigestSlot
}

// hashBlock returns the verified contents of block k of level. mu is held.
func (v *Verifier) hashBlock(level int, k uint64) ([]byte, error) {
	n := v.l.LevelStart[level] + k
	if e, ok := v.cache[n]; ok {
		v.lru.MoveToFront(e)
		return e.Value.(*cachedBlock).data, nil
	}
	hbs := int(v.p.HashBlockSize)
	var data []byte
	if v.lru.Len() >= v.max {
		e := v.lru.Back()
		cb := e.Value.(*cachedBlock)
		delete(v.cache, cb.n)
		v.lru.Remove(e)
		data = cb.data
	} else {
		data = make([]byte, hbs)
	}
	if err := readFull(v.hash, data, int64(n)*int64(hbs), "hash"); err != nil {
		return nil, err
	}
	v.hs.sum(v.dig, data)
	bad := &BlockError{Hash: true, Level: level, Index: k, Offset: n * uint64(hbs)}
	if level == v.l.Levels-1 {
		if subtle.ConstantTimeCompare(v.dig, v.root) != 1 {
			bad.Root = true
			return nil, bad
		}
	} else {
		// The digest must be copied: verifying the parent reuses v.dig.
		var d [64]byte
		copy(d[:], v.dig)
		parent, err := v.hashBlock(level+1, k>>v.l.HashPerBlockBits)
		if err != nil {
			return nil, err
		}
		off := v.l.slotOffset(k)
		if subtle.ConstantTimeCompare(d[:v.l.DigestSize], parent[off:off+v.l.DigestSize]) != 1 {
			return nil, bad
		}
	}
	v.cache[n] = v.lru.PushFront(&cachedBlock{n: n, data: data})
	return data, nil
}

// readFull reads len(b) bytes at off, reporting a short device as
// ErrTooSmall.
func readFull(r io.ReaderAt, b []byte, off int64, dev string) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: %s device ends at byte %d, need %d", ErrTooSmall, dev, off+int64(n), off+int64(len(b)))
	}
	return fmt.Errorf("read %s device at offset %d: %w", dev, off, err)
}

// Verify checks every data block and every hash block of the tree described
// by p against rootHash, as `veritysetup verify` does. data is the data
// device (its first p.DataBlocks blocks are checked), hash the hash device.
// Data blocks are hashed in parallel; hash blocks are checked top-down along
// the way, so the error names the block that is actually wrong: a
// *BlockError for the first data block (in device order) whose digest does
// not match, or for the hash block on its path that fails first. The
// superblock is not covered by the root hash (the kernel never reads it)
// and is not checked here; ReadSuperblock parses it.
func Verify(ctx context.Context, p Params, rootHash []byte, data, hash io.ReaderAt, opts *Options) error {
	v, err := NewVerifier(p, rootHash, hash, nil)
	if err != nil {
		return err
	}
	o := opts.orDefault()
	dbs := uint64(p.DataBlockSize)
	total := v.l.DataSize
	var done uint64
	collect := func(bt *batch) error {
		d := v.l.DigestSize
		for i := 0; i < bt.blocks(int(dbs)); i++ {
			if err := v.checkDigest(bt.first+uint64(i), bt.digests[i*d:(i+1)*d]); err != nil {
				return err
			}
		}
		done += uint64(bt.n)
		if o.Progress != nil {
			o.Progress(done, total)
		}
		return nil
	}
	pl := newPipeline(p, o.Concurrency, o.noSIMD, collect)
	pl.sizeFor(total)
	for off := uint64(0); off < total; off += batchBytes {
		if err := ctx.Err(); err != nil {
			pl.drain()
			return err
		}
		bt := pl.get(off / dbs)
		bt.src, bt.off = data, int64(off)
		bt.n = int(min(batchBytes, total-off))
		if err := bt.read(int(dbs)); err != nil {
			pl.free = append(pl.free, bt)
			if derr := pl.drain(); derr != nil {
				return derr // an earlier block failed first
			}
			return err
		}
		bt.src = nil
		if err := pl.submit(bt); err != nil {
			pl.drain()
			return err
		}
	}
	return pl.drain()
}
