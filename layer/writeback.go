package layer

import (
	"io"
	"log/slog"
	"sync"

	"github.com/intact-project/intact/internal/linux"
)

// writebackUnit is how much sequentially written image data accumulates
// before its write-out is started.
const writebackUnit = 32 << 20

// writeback starts the kernel's write-out of finished parts of a file
// output early (Options.StartWriteback), so that the caller's fsync at the
// end overlaps with the conversion instead of following it. All methods are
// no-ops on a nil *writeback; failures only turn it off (it is an
// optimization, the fsync still makes the data durable).
type writeback struct {
	conn  linux.Conn
	log   *slog.Logger
	start int64 // sequential writes: first byte whose write-out has not been started
	wg    sync.WaitGroup
	mu    sync.Mutex
	off   bool
}

func newWriteback(out Output, on bool, log *slog.Logger) *writeback {
	conn, ok := out.(linux.Conn)
	if !on || !ok {
		return nil
	}
	return &writeback{conn: conn, log: log}
}

func (w *writeback) run(off, n int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.off || n <= 0 {
		return
	}
	if err := linux.StartWriteback(w.conn, off, n); err != nil {
		w.off = true
		w.log.Debug("early writeback off", "err", err)
	}
}

// upTo notes that the image was written sequentially up to end.
func (w *writeback) upTo(end int64) {
	if w == nil || end-w.start < writebackUnit {
		return
	}
	w.run(w.start, end-w.start)
	w.start = end
}

// async starts the write-out of [off, off+n) in a goroutine (starting it
// may wait for the device's queue) while the caller goes on.
func (w *writeback) async(off, n int64) {
	if w == nil {
		return
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.run(off, n)
	}()
}

// trail returns a function to call as ranges of the file become final in
// quick succession (the chunks of a move); one goroutine starts their
// write-out behind the caller, who never waits for it (ranges it cannot
// keep up with are left to the final fsync). Call the returned stop when
// done. On a nil *writeback both are no-ops.
func (w *writeback) trail() (done func(off, n int64), stop func()) {
	if w == nil {
		return func(int64, int64) {}, func() {}
	}
	ch := make(chan [2]int64, 64)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for r := range ch {
			w.run(r[0], r[1])
		}
	}()
	return func(off, n int64) {
			select {
			case ch <- [2]int64{off, n}:
			default:
			}
		}, func() {
			close(ch)
		}
}

// wait waits for the goroutines of async and trail: the caller may close
// the file once Convert returns.
func (w *writeback) wait() {
	if w != nil {
		w.wg.Wait()
	}
}

// seqWriter is the output's sequential side, telling writeback how far the
// image was written.
type seqWriter struct {
	w  io.Writer
	wb *writeback
	n  int64
}

func (s *seqWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	s.n += int64(n)
	s.wb.upTo(s.n)
	return n, err
}
