package layer

import (
	"context"
	"errors"
	"hash"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// The conversion runs as a pipeline of goroutines connected by channels of
// 1 MiB chunks, so that on a machine with several cores decompression (the
// slowest stage for gzip) never waits for anything else:
//
//	prefetch:   read the input, SHA-256 of the blob (the digest)
//	decompress: inflate / zstd, size limit                     (fanout producer)
//	sinks:      SHA-256 of the tar (diff_id); for tar-index also the
//	            verity level 0 of the tar and the tar's write    (one goroutine each)
//	caller:     tar parsing, EROFS writing, verity of the image  (fanout.Read)
//
// Chunks are shared between the sinks and the caller and recycled when all
// are done with them; at most maxChunks exist (the producer waits for a free
// one), so memory does not depend on the layer or on the garbage collector.
const (
	chunkSize  = 1 << 20
	chunkDepth = 8
	maxChunks  = 12
)

// errStopped is what Read returns after stop (the caller gave up).
var errStopped = errors.New("layer: pipeline stopped")

// prefetch reads src in its own goroutine, hashes every byte and hands the
// bytes on in chunks: the input's read syscalls and SHA-256 stay off the
// decompressor's goroutine. Convert reads it to EOF (past the end of the
// compressed stream too), so the digest covers the whole input.
//
// Once ctx is done, Read returns ctx's error at once, even while a Read of
// src blocks (a stalled pipe or network stream), and stop does not wait for
// such a Read: the goroutine ends when it returns. A src with
// SetReadDeadline (a pipe or FIFO opened with os.Open, a net.Conn) is given
// a deadline in the past so that it returns at once.
type prefetch struct {
	ctx  context.Context
	src  io.Reader
	out  chan []byte
	free chan []byte
	quit chan struct{}
	done chan struct{}
	once sync.Once
	buf  []byte // the chunk being read, cur its unread part
	cur  []byte
	err  error // input error, valid after out is closed
	rerr error // what Read returns at the end
}

func newPrefetch(ctx context.Context, src io.Reader, h hash.Hash) *prefetch {
	p := &prefetch{ctx: ctx, src: src, out: make(chan []byte, chunkDepth), free: make(chan []byte, chunkDepth+2),
		quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		defer close(p.out)
		for {
			var buf []byte
			select {
			case buf = <-p.free:
			default:
				buf = make([]byte, chunkSize/4)
			}
			n, err := io.ReadFull(src, buf[:cap(buf)])
			if n > 0 {
				h.Write(buf[:n])
				select {
				case p.out <- buf[:n]:
				case <-p.quit:
					return
				}
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return
			}
			if err != nil {
				p.err = err
				return
			}
		}
	}()
	return p
}

func (p *prefetch) Read(b []byte) (int, error) {
	for len(p.cur) == 0 {
		if p.buf != nil {
			select {
			case p.free <- p.buf:
			default:
			}
			p.buf, p.cur = nil, nil
		}
		if p.rerr != nil {
			return 0, p.rerr
		}
		var c []byte
		var ok bool
		select {
		case c, ok = <-p.out:
		case <-p.ctx.Done():
			p.rerr = p.ctx.Err()
			return 0, p.rerr
		}
		if !ok {
			p.rerr = io.EOF
			if p.err != nil {
				p.rerr = &inputError{p.err}
			}
			return 0, p.rerr
		}
		p.buf, p.cur = c, c
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}

// wait waits until the whole input was read and hashed and returns the
// input's error, if any.
func (p *prefetch) wait() error {
	select {
	case <-p.done:
	case <-p.ctx.Done():
		return p.ctx.Err()
	}
	if p.err != nil {
		return &inputError{p.err}
	}
	return nil
}

// stop makes the goroutine quit and waits for it, except for a Read of src
// that blocks after ctx is done (see prefetch).
func (p *prefetch) stop() {
	p.once.Do(func() { close(p.quit) })
	select {
	case <-p.done:
		return
	case <-p.ctx.Done():
	}
	if d, ok := p.src.(interface{ SetReadDeadline(time.Time) error }); ok {
		d.SetReadDeadline(time.Now())
	}
	select {
	case <-p.done:
	case <-time.After(100 * time.Millisecond):
	}
}

// inputError marks a failure to read the layer blob itself (as opposed to
// corrupt compressed data), so that it keeps its identity through the
// decompressor: a verifying reader's digest mismatch stays one.
type inputError struct{ err error }

func (e *inputError) Error() string { return "read layer: " + e.err.Error() }
func (e *inputError) Unwrap() error { return e.err }

// fanout reads src in a goroutine (the decompressor runs there) and hands
// every chunk, in order, to each sink (each in its own goroutine) and to
// Read. The first sink error stops everything; Read then returns it.
type fanout struct {
	sinks []chan *chunk
	out   chan *chunk
	quit  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup // producer and sinks
	err   error          // first sink error, set before quit is closed
	free  chan []byte    // recycled chunk buffers
	made  int            // buffers allocated (producer only)
	cur   *chunk
	off   int
	rerr  error
}

type chunk struct {
	b    []byte
	err  error
	refs atomic.Int32
	f    *fanout
}

func (c *chunk) release() {
	if c.refs.Add(-1) == 0 {
		c.f.free <- c.b[:cap(c.b)] // never blocks: room for every buffer
	}
}

// buffer returns a free chunk buffer, allocating up to maxChunks; false
// when the pipeline stops while waiting for one.
func (f *fanout) buffer() ([]byte, bool) {
	select {
	case b := <-f.free:
		return b, true
	default:
	}
	if f.made < maxChunks {
		f.made++
		return make([]byte, chunkSize), true
	}
	select {
	case b := <-f.free:
		return b, true
	case <-f.quit:
		return nil, false
	}
}

func newFanout(src io.Reader, sinks ...func([]byte) error) *fanout {
	f := &fanout{out: make(chan *chunk, chunkDepth), quit: make(chan struct{}), free: make(chan []byte, maxChunks)}
	for _, fn := range sinks {
		ch := make(chan *chunk, chunkDepth)
		f.sinks = append(f.sinks, ch)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			failed := false
			for c := range ch {
				select {
				case <-f.quit:
					failed = true
				default:
				}
				if !failed && len(c.b) > 0 {
					if err := fn(c.b); err != nil {
						failed = true
						f.fail(err)
					}
				}
				c.release()
			}
		}()
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer func() {
			for _, ch := range f.sinks {
				close(ch)
			}
		}()
		for {
			buf, ok := f.buffer()
			if !ok {
				return
			}
			n, err := io.ReadFull(src, buf)
			if err == io.ErrUnexpectedEOF {
				err = io.EOF
			}
			c := &chunk{b: buf[:n], err: err, f: f}
			c.refs.Store(int32(len(f.sinks) + 1))
			for _, ch := range f.sinks {
				select {
				case ch <- c:
				case <-f.quit:
					return
				}
			}
			select {
			case f.out <- c:
			case <-f.quit:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return f
}

func (f *fanout) fail(err error) {
	f.once.Do(func() {
		f.err = err
		close(f.quit)
	})
}

func (f *fanout) Read(p []byte) (int, error) {
	for {
		if f.cur != nil && f.off < len(f.cur.b) {
			n := copy(p, f.cur.b[f.off:])
			f.off += n
			return n, nil
		}
		if f.cur != nil {
			if err := f.cur.err; err != nil {
				f.rerr = err
			}
			f.cur.release()
			f.cur = nil
		}
		if f.rerr != nil {
			return 0, f.rerr
		}
		select {
		case f.cur = <-f.out:
			f.off = 0
		case <-f.quit:
			f.rerr = f.err
			if f.rerr == nil {
				f.rerr = errStopped
			}
			return 0, f.rerr
		}
	}
}

// wait waits until every sink has consumed every chunk produced (call it
// once Read returned io.EOF) and returns the first sink error.
func (f *fanout) wait() error {
	f.wg.Wait()
	return f.err
}

// stop ends the pipeline early (after an error elsewhere) and waits for
// its goroutines. It is a no-op after wait.
func (f *fanout) stop() {
	f.fail(nil)
	f.wg.Wait()
}
