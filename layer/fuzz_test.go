package layer_test

import (
	"bytes"
	"context"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/intact-project/intact/layer"
)

// memFile is an in-memory Output that can be read back, so that fuzzing
// exercises the tar-index path that writes the tar into the output and
// moves it behind the metadata.
type memFile struct{ b []byte }

func (m *memFile) Write(p []byte) (int, error) { return m.WriteAt(p, int64(len(m.b))) }
func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	if end := int(off) + len(p); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	return copy(m.b[off:], p), nil
}
func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// FuzzConvert converts arbitrary bytes (compressed or not, the decompressor
// sees them first) in both profiles, with and without a data device: no
// panic, no hang, limits hold, and whatever is accepted gives the same
// result both ways, with a tar-index data device of metadata ‖ tar ‖ zeros
// whose image reads back.
func FuzzConvert(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		// A deadlock in the pipeline crashes the worker (and the fuzzer
		// keeps the input) instead of stalling it.
		wd := time.AfterFunc(time.Minute, func() {
			buf := make([]byte, 1<<20)
			panic("conversion hangs:\n" + string(buf[:runtime.Stack(buf, true)]))
		})
		defer wd.Stop()
		const maxSize = 4 << 20
		for _, p := range profiles {
			opts := layer.Options{Profile: p, MaxSize: maxSize, MaxEntries: 1000, TempDir: t.TempDir()}
			var meta bytes.Buffer
			if p == layer.ProfileTarIndex {
				opts.MetadataOutput = &meta
			}
			bare, err := layer.Convert(context.Background(), bytes.NewReader(data), nil, opts)
			out := &memFile{}
			opts.MetadataOutput = nil
			res, err2 := layer.Convert(context.Background(), bytes.NewReader(data), out, opts)
			if (err == nil) != (err2 == nil) {
				t.Fatalf("%s: without output: %v; with output: %v", p, err, err2)
			}
			if err != nil {
				continue
			}
			if bare.RootHashHex() != res.RootHashHex() || bare.ImageSize != res.ImageSize || bare.TarSize > maxSize {
				t.Fatalf("%s: results differ: %+v / %+v", p, bare, res)
			}
			if int64(len(out.b)) != res.ImageSize+res.TreeSize || res.ImageSize%4096 != 0 {
				t.Fatalf("%s: output of %d bytes, image %d + tree %d", p, len(out.b), res.ImageSize, res.TreeSize)
			}
			if p == layer.ProfileTarIndex {
				dev := out.b[:res.ImageSize]
				if !bytes.Equal(dev[:meta.Len()], meta.Bytes()) || int64(meta.Len()) != res.MetadataSize {
					t.Fatalf("metadata output differs from the data device's first %d bytes", meta.Len())
				}
				if len(bytes.Trim(dev[res.MetadataSize+res.TarSize:], "\x00")) != 0 {
					t.Fatal("no zeros behind the tar")
				}
			}
			im, err := layer.OpenImage(bytes.NewReader(out.b), int64(len(out.b)))
			if err != nil {
				t.Fatalf("%s: accepted input gives an unreadable image: %v", p, err)
			}
			if err := im.Verify(context.Background(), res.RootHash, nil); err != nil {
				t.Fatalf("%s: %v", p, err)
			}
		}
	})
}
