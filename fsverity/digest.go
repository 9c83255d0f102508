package fsverity

import (
	"context"
	"encoding"
	"fmt"
	"hash"
	"io"
	"os"
	"runtime"
	"sync"
)

// ComputeOptions tunes ComputeDescriptor. The zero value is the fastest
// setting for this machine.
type ComputeOptions struct {
	// Concurrency is the number of goroutines hashing data blocks; zero
	// means GOMAXPROCS, 1 hashes in the calling goroutine.
	Concurrency int
	// Progress, if set, is called after each chunk with the number of
	// bytes hashed so far.
	Progress func(done uint64)
}

// chunkSize is how much data is read and hashed per step (at least one
// block). Memory use is about 2*chunkSize plus one block per tree level.
const chunkSize = 1 << 20

// Compute returns the fs-verity digest of everything r yields, as
// `fsverity digest` computes it for a file with that content.
func Compute(ctx context.Context, r io.Reader, p Params) (Digest, error) {
	d, err := ComputeDescriptor(ctx, r, p, ComputeOptions{})
	if err != nil {
		return Digest{}, err
	}
	return d.Digest()
}

// ComputeFile is Compute on the file at path.
func ComputeFile(ctx context.Context, path string, p Params) (Digest, error) {
	f, err := os.Open(path)
	if err != nil {
		return Digest{}, err
	}
	defer f.Close()
	d, err := Compute(ctx, f, p)
	if err != nil {
		return Digest{}, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// ComputeDescriptor builds the Merkle tree of r's content bottom-up,
// keeping one partial block per level, and returns the descriptor whose hash
// is the file digest. It checks ctx between chunks.
func ComputeDescriptor(ctx context.Context, r io.Reader, p Params, opts ComputeOptions) (*Descriptor, error) {
	p, err := p.Normalize()
	if err != nil {
		return nil, err
	}
	workers := opts.Concurrency
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	b := newTreeBuilder(p, workers)
	blocksPerChunk := max(1, chunkSize/p.BlockSize)
	rd := startReader(r, blocksPerChunk*p.BlockSize, workers > 1)
	defer rd.stop()
	var size uint64
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c := rd.next()
		if c.n > 0 {
			size += uint64(c.n)
			b.addData(c.buf[:c.n])
			if opts.Progress != nil {
				opts.Progress(size)
			}
		}
		rd.release(c.buf)
		if c.err == io.EOF || c.err == io.ErrUnexpectedEOF {
			break
		}
		if c.err != nil {
			return nil, fmt.Errorf("fsverity: read: %w", c.err)
		}
	}
	root, err := b.finish(size)
	if err != nil {
		return nil, err
	}
	return &Descriptor{
		Algorithm:    p.Algorithm,
		LogBlockSize: p.logBlockSize(),
		Salt:         append([]byte{}, p.Salt...),
		DataSize:     size,
		RootHash:     root,
	}, nil
}

// chunkReader reads fixed-size chunks; with readAhead a goroutine fills
// the next buffer while the caller hashes the current one (three buffers
// in all), so reading and hashing overlap.
type chunkReader struct {
	r     io.Reader
	buf   []byte // without read-ahead: the one buffer
	free  chan []byte
	full  chan chunk
	done  sync.WaitGroup
	ahead bool
}

type chunk struct {
	buf []byte
	n   int
	err error
}

const readAheadBuffers = 3

func startReader(r io.Reader, size int, readAhead bool) *chunkReader {
	cr := &chunkReader{r: r, ahead: readAhead}
	if !readAhead {
		cr.buf = make([]byte, size)
		return cr
	}
	cr.free = make(chan []byte, readAheadBuffers)
	cr.full = make(chan chunk, readAheadBuffers) // never blocks the reader
	for range readAheadBuffers {
		cr.free <- make([]byte, size)
	}
	cr.done.Add(1)
	go func() {
		defer cr.done.Done()
		for buf := range cr.free {
			n, err := io.ReadFull(r, buf)
			cr.full <- chunk{buf, n, err}
			if err != nil {
				return
			}
		}
	}()
	return cr
}

// next returns the next chunk; err is io.EOF or io.ErrUnexpectedEOF at
// the end.
func (cr *chunkReader) next() chunk {
	if !cr.ahead {
		n, err := io.ReadFull(cr.r, cr.buf)
		return chunk{cr.buf, n, err}
	}
	return <-cr.full
}

// release hands a chunk's buffer back for reading.
func (cr *chunkReader) release(buf []byte) {
	if cr.ahead {
		cr.free <- buf
	}
}

// stop ends the read-ahead goroutine and waits for it, so the reader is
// not used after ComputeDescriptor returns.
func (cr *chunkReader) stop() {
	if cr.ahead {
		close(cr.free)
		cr.done.Wait()
	}
}

// blockHasher hashes salt ‖ block with the salt zero-padded to the hash's
// block size, restoring the precomputed post-salt state instead of
// rehashing the salt for every block.
type blockHasher struct {
	h      hash.Hash
	salted []byte // marshalled state after the padded salt; nil without salt
}

func newBlockHasher(p Params) *blockHasher {
	bh := &blockHasher{h: p.Algorithm.new()}
	if len(p.Salt) > 0 {
		padded := make([]byte, p.Algorithm.blockSize())
		copy(padded, p.Salt)
		bh.h.Write(padded)
		state, err := bh.h.(encoding.BinaryMarshaler).MarshalBinary()
		if err != nil {
			panic(fmt.Sprintf("fsverity: hash state: %v", err)) // crypto/sha256 and sha512 always marshal
		}
		bh.salted = state
	}
	return bh
}

// sum appends H(salt ‖ block) to dst.
func (bh *blockHasher) sum(dst, block []byte) []byte {
	if bh.salted != nil {
		if err := bh.h.(encoding.BinaryUnmarshaler).UnmarshalBinary(bh.salted); err != nil {
			panic(fmt.Sprintf("fsverity: hash state: %v", err))
		}
	} else {
		bh.h.Reset()
	}
	bh.h.Write(block)
	return bh.h.Sum(dst)
}

type treeBuilder struct {
	p       Params
	ds      int
	hashers []*blockHasher // one per worker
	levels  [][]byte       // levels[i] holds the digests of the current, partial level-i block
	digests []byte         // scratch: digests of one chunk's data blocks
	blocks  uint64         // data blocks hashed so far
}

func newTreeBuilder(p Params, workers int) *treeBuilder {
	b := &treeBuilder{p: p, ds: p.Algorithm.Size()}
	for range workers {
		b.hashers = append(b.hashers, newBlockHasher(p))
	}
	return b
}

// addData hashes the data blocks in data (a whole number of blocks, or the
// final partial block at the end, which it zero-pads) and feeds their
// digests into level 0.
func (b *treeBuilder) addData(data []byte) {
	bs := b.p.BlockSize
	n := (len(data) + bs - 1) / bs
	if rem := len(data) % bs; rem != 0 {
		// The caller's buffer extends to a whole block: zero the tail.
		data = data[:n*bs]
		clear(data[len(data)-bs+rem:])
	}
	if cap(b.digests) < n*b.ds {
		b.digests = make([]byte, n*b.ds)
	}
	digests := b.digests[:n*b.ds]
	workers := min(len(b.hashers), n)
	if workers <= 1 {
		for i := range n {
			b.hashers[0].sum(digests[i*b.ds:i*b.ds], data[i*bs:(i+1)*bs])
		}
	} else {
		var wg sync.WaitGroup
		per := (n + workers - 1) / workers
		for w := range workers {
			lo, hi := w*per, min(n, (w+1)*per)
			if lo >= hi {
				break
			}
			wg.Add(1)
			go func(bh *blockHasher) {
				defer wg.Done()
				for i := lo; i < hi; i++ {
					bh.sum(digests[i*b.ds:i*b.ds], data[i*bs:(i+1)*bs])
				}
			}(b.hashers[w])
		}
		wg.Wait()
	}
	for i := range n {
		b.push(0, digests[i*b.ds:(i+1)*b.ds])
	}
	b.blocks += uint64(n)
}

// push appends a digest to level i; a level block that becomes full is
// hashed into level i+1.
func (b *treeBuilder) push(i int, digest []byte) {
	for len(b.levels) <= i {
		b.levels = append(b.levels, make([]byte, 0, b.p.BlockSize))
	}
	b.levels[i] = append(b.levels[i], digest...)
	if len(b.levels[i])+b.ds > b.p.BlockSize {
		b.hashLevel(i)
	}
}

// hashLevel zero-pads level i's block, hashes it into level i+1 and empties
// level i.
func (b *treeBuilder) hashLevel(i int) {
	blk := b.levels[i][:b.p.BlockSize]
	clear(blk[len(b.levels[i]):])
	var d [64]byte
	sum := b.hashers[0].sum(d[:0], blk)
	b.levels[i] = b.levels[i][:0]
	b.push(i+1, sum)
}

// finish hashes the pending partial blocks of the levels below the root and
// returns the root hash.
func (b *treeBuilder) finish(size uint64) ([]byte, error) {
	if size == 0 {
		return make([]byte, b.ds), nil
	}
	hpb := uint64(b.p.BlockSize / b.ds)
	height := 0
	for n := b.blocks; n > 1; n = (n + hpb - 1) / hpb {
		height++
	}
	for i := range height {
		if i < len(b.levels) && len(b.levels[i]) > 0 {
			b.hashLevel(i)
		}
	}
	if height >= len(b.levels) || len(b.levels[height]) != b.ds {
		return nil, fmt.Errorf("fsverity: internal error: tree of height %d ended with %d levels", height, len(b.levels))
	}
	for _, l := range b.levels[height+1:] {
		if len(l) != 0 {
			return nil, fmt.Errorf("fsverity: internal error: digests above the root")
		}
	}
	return append([]byte{}, b.levels[height]...), nil
}
