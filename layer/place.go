package layer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/intact-project/intact/internal/linux"
)

// tarDest takes the decompressed tar of a tar-index conversion while it
// streams (write runs in a sink goroutine of the pipeline) and, once the
// size of the metadata is known, puts it behind the metadata (place). The
// tar is written once:
//
//   - direct: out can be read back (a file). The tar goes into out at
//     offset 0. place then inserts room for the metadata in front of it with
//     FALLOC_FL_INSERT_RANGE when the metadata size is a multiple of the
//     filesystem block size (no data moves; ext4 and xfs), else it moves the
//     tar up within out, from the end backwards. The move rewrites pages
//     that are still in the page cache, so the tar reaches the disk once.
//   - spill: any other Output. The tar goes to an unlinked temporary file
//     and is copied into out behind the metadata.
type tarDest struct {
	out     Output
	file    readWriterAt // out, in direct mode
	spill   *os.File
	n       int64  // tar bytes written
	method  string // how place moved the tar (for logs and tests)
	noSplit bool   // tests: never use FALLOC_FL_INSERT_RANGE
}

type readWriterAt interface {
	io.ReaderAt
	io.WriterAt
}

// Placement methods, as recorded in tarDest.method.
const (
	placeInsertRange = "insert-range"
	placeMove        = "move"
	placeCopy        = "copy"
)

// testNoInsertRange makes every conversion move the tar instead of using
// FALLOC_FL_INSERT_RANGE (set by tests of the fallback).
var testNoInsertRange bool

// testPlaced, if set, learns how each tar-index conversion placed its tar.
var testPlaced func(method string)

func newTarDest(out Output, tempDir string) (*tarDest, error) {
	d := &tarDest{out: out, noSplit: testNoInsertRange}
	if f, ok := out.(readWriterAt); ok {
		d.file = f
		return d, nil
	}
	f, err := os.CreateTemp(tempDir, "intact-layer-tar-*")
	if err != nil {
		return nil, fmt.Errorf("spill file: %w", err)
	}
	os.Remove(f.Name())
	d.spill = f
	return d, nil
}

// write appends the next tar bytes.
func (d *tarDest) write(b []byte) error {
	var err error
	if d.file != nil {
		_, err = d.file.WriteAt(b, d.n)
	} else {
		_, err = d.spill.Write(b)
	}
	if err != nil {
		return fmt.Errorf("write tar: %w", err)
	}
	d.n += int64(len(b))
	return nil
}

// place puts the tar (all d.n bytes written) at offset meta of out; wb
// (may be nil) starts the write-out of the moved tar as it goes.
func (d *tarDest) place(ctx context.Context, meta int64, wb *writeback) error {
	if d.spill != nil {
		d.method = placeCopy
		return copyAt(ctx, d.out, meta, d.spill, 0, d.n)
	}
	if conn, ok := d.out.(linux.Conn); ok && !d.noSplit {
		if bs, err := linux.FSBlockSize(conn); err == nil && bs > 0 && meta%bs == 0 {
			err := linux.InsertRange(conn, 0, meta)
			if err == nil {
				d.method = placeInsertRange
				return nil
			}
			if !errors.Is(err, linux.EOPNOTSUPP) && !errors.Is(err, linux.EINVAL) &&
				!errors.Is(err, linux.ENODEV) && !errors.Is(err, linux.ENOSYS) {
				return fmt.Errorf("make room for the metadata in front of the tar: %w", err)
			}
		}
	}
	d.method = placeMove
	done, stop := wb.trail()
	defer stop()
	return moveUp(ctx, d.file, d.n, meta, done)
}

func (d *tarDest) close() {
	if d.spill != nil {
		d.spill.Close()
	}
}

// moveBuf is the unit of moveUp and copyAt.
const moveBuf = 4 << 20

// moveUp moves the n bytes at offset 0 of f to offset by, from the end
// backwards: a chunk is written only after every byte it overwrites was
// read. One goroutine reads ahead while another writes; written(off, len)
// learns each range written.
func moveUp(ctx context.Context, f readWriterAt, n, by int64, written func(off, n int64)) error {
	type piece struct {
		b   []byte
		off int64
	}
	full := make(chan piece, 1)
	free := make(chan []byte, 2)
	free <- make([]byte, moveBuf)
	free <- make([]byte, moveBuf)
	quit := make(chan struct{})
	rerr := make(chan error, 1)
	go func() {
		defer close(full)
		for end := n; end > 0; {
			var b []byte
			select {
			case b = <-free:
			case <-quit:
				rerr <- nil
				return
			}
			start := max(0, end-moveBuf)
			b = b[:end-start]
			if m, err := f.ReadAt(b, start); m < len(b) {
				if err == nil {
					err = io.ErrUnexpectedEOF
				}
				rerr <- fmt.Errorf("read tar back at offset %d: %w", start+int64(m), err)
				return
			}
			full <- piece{b, start}
			end = start
		}
		rerr <- nil
	}()
	var werr error
	for p := range full {
		if werr == nil {
			if werr = ctx.Err(); werr == nil {
				if _, err := f.WriteAt(p.b, p.off+by); err != nil {
					werr = fmt.Errorf("move tar behind the metadata: %w", err)
				} else {
					written(p.off+by, int64(len(p.b)))
				}
			}
			if werr != nil {
				close(quit)
			}
		}
		free <- p.b[:cap(p.b)]
	}
	if err := <-rerr; err != nil {
		return err
	}
	return werr
}

// copyAt copies n bytes at offset from of src to offset to of dst.
func copyAt(ctx context.Context, dst io.WriterAt, to int64, src io.ReaderAt, from, n int64) error {
	buf := make([]byte, min(n, moveBuf))
	for done := int64(0); done < n; {
		if err := ctx.Err(); err != nil {
			return err
		}
		b := buf[:min(int64(len(buf)), n-done)]
		if m, err := src.ReadAt(b, from+done); m < len(b) {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("read spill file: %w", err)
		}
		if _, err := dst.WriteAt(b, to+done); err != nil {
			return fmt.Errorf("copy tar behind the metadata: %w", err)
		}
		done += int64(len(b))
	}
	return nil
}
