package layer

import (
	"hash"
	"io"
	"sync"
	"sync/atomic"
)

// asyncReader reads src in a goroutine (decompression runs there) and hashes
// every chunk in a second goroutine (the diff_id), so that decompression,
// hashing and the consumer (tar parsing, image writing, verity hashing) use
// separate cores. Chunks are recycled once both the hasher and the consumer
// are done with them, so memory stays at depth*chunkSize.
type asyncReader struct {
	out   chan *chunk
	quit  chan struct{}
	once  sync.Once
	hdone chan struct{}
	cur   *chunk
	off   int
	err   error
	pool  sync.Pool
}

type chunk struct {
	b    []byte
	err  error
	refs atomic.Int32
	r    *asyncReader
}

const (
	chunkSize  = 1 << 20
	chunkDepth = 8
)

func (c *chunk) release() {
	if c.refs.Add(-1) == 0 {
		b := c.b[:cap(c.b)]
		c.r.pool.Put(&b)
	}
}

func newAsyncReader(src io.Reader, h hash.Hash) *asyncReader {
	a := &asyncReader{out: make(chan *chunk, chunkDepth), quit: make(chan struct{}), hdone: make(chan struct{})}
	a.pool.New = func() any { b := make([]byte, chunkSize); return &b }
	hch := make(chan *chunk, chunkDepth)
	go func() {
		defer close(a.hdone)
		for c := range hch {
			h.Write(c.b)
			c.release()
		}
	}()
	go func() {
		defer close(hch)
		for {
			buf := *a.pool.Get().(*[]byte)
			n, err := io.ReadFull(src, buf)
			if err == io.ErrUnexpectedEOF {
				err = io.EOF
			}
			c := &chunk{b: buf[:n], err: err, r: a}
			c.refs.Store(2)
			select {
			case hch <- c:
			case <-a.quit:
				return
			}
			select {
			case a.out <- c:
			case <-a.quit:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return a
}

func (a *asyncReader) Read(p []byte) (int, error) {
	for {
		if a.cur != nil && a.off < len(a.cur.b) {
			n := copy(p, a.cur.b[a.off:])
			a.off += n
			return n, nil
		}
		if a.cur != nil {
			err := a.cur.err
			a.cur.release()
			a.cur = nil
			if err != nil {
				a.err = err
			}
		}
		if a.err != nil {
			return 0, a.err
		}
		a.cur, a.off = <-a.out, 0
	}
}

// wait stops the reader goroutine (if still running) and waits until every
// chunk read so far is hashed.
func (a *asyncReader) wait() {
	a.once.Do(func() { close(a.quit) })
	<-a.hdone
}
