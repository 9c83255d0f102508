package verity

import (
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"runtime"
)

// Options tune building and verification. The zero value (or nil) is fine.
type Options struct {
	// Concurrency is the number of goroutines hashing data blocks. 0 means
	// runtime.GOMAXPROCS(0); 1 hashes in the calling goroutine.
	Concurrency int
	// MemoryLimit is how many bytes of level-0 digests a Builder keeps in
	// memory before spilling them to a temporary file. 0 means 4 MiB.
	MemoryLimit int
	// TempDir is where the spill file is created (it is unlinked right
	// away). "" means os.TempDir().
	TempDir string
	// Progress, if set, is called from the calling goroutine after each
	// batch of data blocks is hashed, with the bytes done and the total (0
	// when unknown, as for a Builder).
	Progress func(done, total uint64)
	// Logger receives debug logs. nil discards them.
	Logger *slog.Logger

	// noSIMD forces crypto/sha256 one block at a time (tests of the
	// portable path on machines with SHA-NI or AVX-512; see export_test.go).
	noSIMD bool
}

const (
	defaultMemoryLimit = 4 << 20
	batchBytes         = 256 << 10 // data bytes hashed per batch
)

func (o *Options) orDefault() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.Concurrency <= 0 {
		r.Concurrency = runtime.GOMAXPROCS(0)
	}
	if r.MemoryLimit <= 0 {
		r.MemoryLimit = defaultMemoryLimit
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	return r
}

// hasher computes tree nodes: H(salt ‖ block) for format 1, H(block ‖ salt)
// for format 0. One hasher is used by one goroutine at a time.
type hasher struct {
	h    hash.Hash
	salt []byte
	v1   bool
	size int
	x2   *sha256x2  // two blocks at once (sha256 with SHA-NI), or nil
	x16  *sha256x16 // sixteen blocks at once (sha256 with AVX-512), or nil
}

func newHasher(p Params) *hasher {
	a := algorithms[p.Algorithm]
	return &hasher{h: a.new(), salt: p.Salt, v1: p.HashType == HashTypeNormal, size: a.size,
		x2: newSHA256x2(p), x16: newSHA256x16(p)}
}

// sumBlocks writes the nodes of the n consecutive blocks of size bs in data
// into dst, n digests back to back, with the multi-lane hasher that is
// fastest for blocks of size bs on this CPU (see lanesFor).
func (hs *hasher) sumBlocks(dst, data []byte, n, bs int) {
	d := hs.size
	i := 0
	if hs.x16 != nil && (hs.x2 == nil || lanesFor(bs) == lanes16) {
		for ; i+16 <= n; i += 16 {
			hs.x16.sum16(dst[i*d:(i+16)*d], data[i*bs:(i+16)*bs], bs)
		}
	}
	if hs.x2 != nil {
		for ; i+1 < n; i += 2 {
			hs.x2.sum2(dst[i*d:(i+1)*d], dst[(i+1)*d:(i+2)*d], data[i*bs:(i+1)*bs], data[(i+1)*bs:(i+2)*bs])
		}
	}
	for ; i < n; i++ {
		hs.sum(dst[i*d:(i+1)*d], data[i*bs:(i+1)*bs])
	}
}

// sum writes the node of block into dst[:size].
func (hs *hasher) sum(dst, block []byte) {
	h := hs.h
	h.Reset()
	if hs.v1 {
		h.Write(hs.salt)
	}
	h.Write(block)
	if !hs.v1 {
		h.Write(hs.salt)
	}
	h.Sum(dst[:0])
}

// Mapped is implemented by data sources whose bytes are already in memory,
// such as a memory-mapped file: Format and Verify hash whole blocks of such
// a source in place instead of copying them into buffers (reading a file
// with pread costs about a third of the CPU time of hashing it).
type Mapped interface {
	io.ReaderAt
	// Bytes returns the whole content; it must stay valid and unchanged
	// while Format or Verify runs.
	Bytes() []byte
}

// batch is a run of consecutive data blocks hashed as one unit of work.
type batch struct {
	first   uint64 // index of the first data block
	data    []byte // len batchBytes (a multiple of the data block size)
	view    []byte // the blocks in place in a Mapped source, instead of data
	n       int    // bytes of data filled
	digests []byte // one digest per block
	done    chan struct{}
	err     error

	// When src is set, the worker reads n bytes at off itself (the
	// file-based path) and last says the batch ends the data: a short read
	// is then zero-padded within its last block.
	src  io.ReaderAt
	off  int64
	last bool
}

func (b *batch) blocks(dbs int) int { return (b.n + dbs - 1) / dbs }

// run reads (if sourced) and hashes the batch.
func (b *batch) run(hs *hasher, dbs int) {
	if b.src != nil {
		if err := b.read(dbs); err != nil {
			b.err = err
			return
		}
	}
	nb := b.blocks(dbs)
	if b.view != nil {
		hs.sumBlocks(b.digests, b.view, nb, dbs)
		return
	}
	if tail := nb*dbs - b.n; tail > 0 {
		clear(b.data[b.n : nb*dbs])
	}
	hs.sumBlocks(b.digests, b.data, nb, dbs)
}

func (b *batch) read(dbs int) error {
	if m, ok := b.src.(Mapped); ok && b.n%dbs == 0 {
		if all := m.Bytes(); b.off >= 0 && b.off+int64(b.n) <= int64(len(all)) {
			b.view = all[b.off : b.off+int64(b.n)]
			return nil
		}
	}
	got := 0
	for got < b.n {
		m, err := b.src.ReadAt(b.data[got:b.n], b.off+int64(got))
		got += m
		if err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			if got < b.n {
				return fmt.Errorf("read data at offset %d: %w", b.off+int64(got), err)
			}
		}
		if m == 0 && err == nil {
			return fmt.Errorf("read data at offset %d: %w", b.off+int64(got), io.ErrNoProgress)
		}
	}
	if got < b.n {
		// Only the final block may be short; it is zero-padded.
		if !b.last || got <= (b.blocks(dbs)-1)*dbs {
			return fmt.Errorf("%w: data device ends at byte %d, the tree covers %d", ErrTooSmall, b.off+int64(got), b.off+int64(b.n))
		}
		clear(b.data[got:b.n])
	}
	return nil
}

// pipeline hashes batches on up to `workers` goroutines and hands them back
// in order to collect, in the caller's goroutine.
type pipeline struct {
	dbs         int
	dsize       int
	workers     int
	hashers     chan *hasher // one per worker; taking one is the semaphore
	inline      *hasher      // for the caller's goroutine
	maxInflight int
	bufSize     int // data bytes per batch: batchBytes, or less for small inputs
	inflight    []*batch
	free        []*batch
	collect     func(*batch) error
	err         error // sticky
}

func newPipeline(p Params, workers int, noSIMD bool, collect func(*batch) error) *pipeline {
	mk := func() *hasher {
		hs := newHasher(p)
		if noSIMD {
			hs.x2, hs.x16 = nil, nil
		}
		return hs
	}
	pl := &pipeline{
		dbs:     int(p.DataBlockSize),
		dsize:   p.DigestSize(),
		workers: workers,
		inline:  mk(),
		collect: collect,
		bufSize: batchBytes,
	}
	if workers > 1 {
		pl.hashers = make(chan *hasher, workers)
		for i := 0; i < workers; i++ {
			pl.hashers <- mk()
		}
		// Eight batches per worker (256 KiB each): the caller reads the
		// next batches while the workers hash what is queued; with two per
		// worker they ran dry (1 GiB formatted in a median 0.373 s; with
		// eight, 0.325 s mapped and 0.31 s read; scripts/bench.d/verity,
		// 2 cores).
		pl.maxInflight = 8 * workers
	}
	return pl
}

// sizeFor shrinks the batches for an input of known, small size.
func (pl *pipeline) sizeFor(total uint64) {
	if total < batchBytes {
		pl.bufSize = int((total + uint64(pl.dbs) - 1) / uint64(pl.dbs) * uint64(pl.dbs))
	}
}

// get returns an empty batch starting at data block first.
func (pl *pipeline) get(first uint64) *batch {
	var b *batch
	if n := len(pl.free); n > 0 {
		b = pl.free[n-1]
		pl.free = pl.free[:n-1]
	} else {
		b = &batch{
			data:    make([]byte, pl.bufSize),
			digests: make([]byte, pl.bufSize/pl.dbs*pl.dsize),
			done:    make(chan struct{}, 1),
		}
	}
	b.first, b.n, b.err, b.src, b.off, b.last, b.view = first, 0, nil, nil, 0, false, nil
	return b
}

// submit hashes b, asynchronously when there are several workers. Batches
// are collected in submission order.
func (pl *pipeline) submit(b *batch) error {
	if pl.err != nil {
		pl.free = append(pl.free, b)
		return pl.err
	}
	if pl.workers <= 1 {
		b.run(pl.inline, pl.dbs)
		return pl.finish(b)
	}
	if len(pl.inflight) >= pl.maxInflight {
		if err := pl.collectOldest(); err != nil {
			pl.free = append(pl.free, b)
			return err
		}
	}
	pl.inflight = append(pl.inflight, b)
	go func() {
		hs := <-pl.hashers
		b.run(hs, pl.dbs)
		pl.hashers <- hs
		b.done <- struct{}{}
	}()
	return nil
}

func (pl *pipeline) collectOldest() error {
	b := pl.inflight[0]
	<-b.done
	copy(pl.inflight, pl.inflight[1:])
	pl.inflight = pl.inflight[:len(pl.inflight)-1]
	return pl.finish(b)
}

func (pl *pipeline) finish(b *batch) error {
	if pl.err == nil {
		if b.err != nil {
			pl.err = b.err
		} else if err := pl.collect(b); err != nil {
			pl.err = err
		}
	}
	b.src, b.view = nil, nil
	pl.free = append(pl.free, b)
	return pl.err
}

// drain waits for every batch in flight and collects it.
func (pl *pipeline) drain() error {
	for len(pl.inflight) > 0 {
		pl.collectOldest()
	}
	return pl.err
}

// level0 holds the level-0 hash blocks (one digest per data block, laid out
// exactly as on disk) while data arrives: the newest blocks in memory, older
// ones spilled to a file (an unlinked temporary file, or the output itself
// when the final position of level 0 is known).
type level0 struct {
	hbs     int
	slot    int
	dsize   int
	bits    uint
	limit   int
	tempDir string

	mem      []byte // hash blocks memFirst, memFirst+1, ...
	memFirst uint64
	count    uint64 // digests stored

	spillR io.ReaderAt
	spillW io.WriterAt
	base   int64 // byte offset of hash block 0 in the spill
	temp   *os.File
	direct bool // the spill is the output at level 0's final position
}

func newLevel0(p Params, l Layout, limit int, tempDir string) *level0 {
	return &level0{hbs: int(p.HashBlockSize), slot: l.DigestSlot, dsize: l.DigestSize,
		bits: l.HashPerBlockBits, limit: limit, tempDir: tempDir}
}

func (s *level0) blockOf(j uint64) uint64 { return j >> s.bits }
func (s *level0) offIn(j uint64) int      { return int(j&(1<<s.bits-1)) * s.slot }

// append stores the digests of the next data blocks.
func (s *level0) append(digests []byte) error {
	for i := 0; i+s.dsize <= len(digests); i += s.dsize {
		j := s.count
		if s.offIn(j) == 0 {
			// A new hash block starts: spill full blocks first if memory
			// is over the limit, then add a zeroed block.
			if len(s.mem) >= s.limit {
				if err := s.spill(); err != nil {
					return err
				}
			}
			s.mem = append(s.mem, make([]byte, s.hbs)...)
		}
		rel := (s.blockOf(j)-s.memFirst)*uint64(s.hbs) + uint64(s.offIn(j))
		copy(s.mem[rel:], digests[i:i+s.dsize])
		s.count++
	}
	return nil
}

func (s *level0) spill() error {
	if s.spillW == nil {
		f, err := os.CreateTemp(s.tempDir, "intact-verity-*")
		if err != nil {
			return fmt.Errorf("create spill file for level-0 digests: %w", err)
		}
		os.Remove(f.Name())
		s.temp, s.spillR, s.spillW = f, f, f
	}
	if _, err := s.spillW.WriteAt(s.mem, s.base+int64(s.memFirst)*int64(s.hbs)); err != nil {
		return fmt.Errorf("spill level-0 digests: %w", err)
	}
	s.memFirst += uint64(len(s.mem) / s.hbs)
	s.mem = s.mem[:0]
	return nil
}

// set replaces the digest of data block j (already stored).
func (s *level0) set(j uint64, digest []byte) error {
	blk := s.blockOf(j)
	if blk >= s.memFirst {
		rel := (blk-s.memFirst)*uint64(s.hbs) + uint64(s.offIn(j))
		copy(s.mem[rel:], digest)
		return nil
	}
	off := s.base + int64(blk)*int64(s.hbs) + int64(s.offIn(j))
	if _, err := s.spillW.WriteAt(digest, off); err != nil {
		return fmt.Errorf("update level-0 digest: %w", err)
	}
	return nil
}

// digest returns the digest of data block j.
func (s *level0) digest(j uint64) ([]byte, error) {
	blk := s.blockOf(j)
	if blk >= s.memFirst {
		rel := (blk-s.memFirst)*uint64(s.hbs) + uint64(s.offIn(j))
		return s.mem[rel : rel+uint64(s.dsize)], nil
	}
	d := make([]byte, s.dsize)
	if _, err := s.spillR.ReadAt(d, s.base+int64(blk)*int64(s.hbs)+int64(s.offIn(j))); err != nil {
		return nil, fmt.Errorf("read level-0 digest: %w", err)
	}
	return d, nil
}

// each calls fn with every level-0 hash block in order, in chunks of whole
// blocks; spilled says whether the chunk came from the spill file.
func (s *level0) each(fn func(chunk []byte, first uint64, spilled bool) error) error {
	const chunk = 256 << 10
	if s.memFirst > 0 {
		n := chunk / s.hbs
		if n < 1 {
			n = 1
		}
		buf := make([]byte, n*s.hbs)
		for first := uint64(0); first < s.memFirst; first += uint64(n) {
			m := min(uint64(n), s.memFirst-first)
			b := buf[:m*uint64(s.hbs)]
			if _, err := s.spillR.ReadAt(b, s.base+int64(first)*int64(s.hbs)); err != nil {
				return fmt.Errorf("read back level-0 digests: %w", err)
			}
			if err := fn(b, first, true); err != nil {
				return err
			}
		}
	}
	if len(s.mem) > 0 {
		return fn(s.mem, s.memFirst, false)
	}
	return nil
}

func (s *level0) close() {
	if s.temp != nil {
		s.temp.Close()
		s.temp = nil
	}
}
