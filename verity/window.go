package verity

import (
	"os"

	"github.com/intact-project/intact/internal/linux"
)

// mapWindow is how much of a data file Format maps at a time: big enough
// that mapping costs little per byte, small enough that the page-cache
// pages it holds (they count in the resident set while mapped) stay well
// under the 64 MiB a format may use. Batches never straddle two windows
// (mapWindow is a multiple of batchBytes).
const mapWindow = 8 << 20

// windows maps a data file in bounded windows so that Format hashes the
// data in place, without copying it out of the page cache (pread costs
// about a third of the CPU time of hashing it). A window is unmapped once
// every batch that points into it has been hashed and collected.
type windows struct {
	f    *os.File
	size int64     // file size
	cur  *window   // window being handed out
	old  []*window // retired windows with batches in flight
	off  bool      // mapping failed: read the rest with pread
}

type window struct {
	start   int64
	data    []byte
	pending int // batches in flight pointing into data
	retired bool
}

func newWindows(data any) *windows {
	f, ok := data.(*os.File)
	if !ok {
		return nil
	}
	size, err := linux.FileSize(f)
	if err != nil {
		return nil
	}
	return &windows{f: f, size: size}
}

// view returns n bytes at off in place and the function that releases them
// once their batch is done, or ok false when they must be read instead.
func (w *windows) view(off int64, n int) (b []byte, release func(), ok bool) {
	if w == nil || w.off || off+int64(n) > w.size {
		return nil, nil, false
	}
	if w.cur == nil || off < w.cur.start || off+int64(n) > w.cur.start+int64(len(w.cur.data)) {
		w.retire()
		start := off / mapWindow * mapWindow
		m, err := linux.MapReadOnly(w.f, start, int(min(mapWindow, w.size-start)))
		if err != nil {
			w.off = true
			return nil, nil, false
		}
		w.cur = &window{start: start, data: m}
	}
	win := w.cur
	win.pending++
	return win.data[off-win.start : off-win.start+int64(n)], func() {
		win.pending--
		if win.retired && win.pending == 0 {
			w.unmap(win)
		}
	}, true
}

// retire stops handing out the current window; it is unmapped when its
// last batch is released.
func (w *windows) retire() {
	if c := w.cur; c != nil {
		w.cur = nil
		c.retired = true
		if c.pending == 0 {
			linux.Unmap(c.data)
			return
		}
		w.old = append(w.old, c)
	}
}

func (w *windows) unmap(win *window) {
	linux.Unmap(win.data)
	for i, o := range w.old {
		if o == win {
			w.old = append(w.old[:i], w.old[i+1:]...)
			break
		}
	}
}

// close unmaps everything; every batch must have been released (the
// pipeline drained) before.
func (w *windows) close() {
	if w == nil {
		return
	}
	w.retire()
	for _, o := range w.old {
		linux.Unmap(o.data)
	}
	w.old = nil
}
