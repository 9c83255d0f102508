package main

import (
	"context"
	"io"
	"sync"
)

// interruptibleReader reads an input that may stall (standard input from a
// pipe or a terminal) in a goroutine of its own, so that Read returns ctx's
// error as soon as ctx is done even while the underlying Read blocks. Such
// a Read is abandoned; the process is about to exit anyway.
type interruptibleReader struct {
	ctx  context.Context
	r    io.Reader
	once sync.Once
	next chan struct{}   // asks the goroutine for one Read
	got  chan readResult // its result
	pend []byte          // unread part of the last result (the goroutine's buffer)
	err  error
}

type readResult struct {
	b   []byte
	err error
}

func newInterruptibleReader(ctx context.Context, r io.Reader) io.Reader {
	return &interruptibleReader{ctx: ctx, r: r, next: make(chan struct{}), got: make(chan readResult)}
}

func (ir *interruptibleReader) Read(p []byte) (int, error) {
	if len(ir.pend) == 0 {
		if ir.err != nil {
			return 0, ir.err
		}
		if err := ir.ctx.Err(); err != nil {
			return 0, err
		}
		ir.once.Do(func() {
			go func() {
				// The buffer is the goroutine's; the caller reads it only
				// between a result and the next request.
				buf := make([]byte, 256<<10)
				for range ir.next {
					n, err := ir.r.Read(buf)
					select {
					case ir.got <- readResult{buf[:n], err}:
					case <-ir.ctx.Done():
						return
					}
				}
			}()
		})
		select {
		case ir.next <- struct{}{}:
		case <-ir.ctx.Done():
			return 0, ir.ctx.Err()
		}
		select {
		case r := <-ir.got:
			ir.pend, ir.err = r.b, r.err
		case <-ir.ctx.Done():
			return 0, ir.ctx.Err()
		}
		if len(ir.pend) == 0 {
			return 0, ir.err
		}
	}
	n := copy(p, ir.pend)
	ir.pend = ir.pend[n:]
	return n, nil
}
