package layer_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/klauspost/compress/gzip"

	"github.com/intact-project/intact/erofs/erofstest"
	"github.com/intact-project/intact/layer"
)

// TestDecompress: the exported decompressor detects the compression from
// the bytes and returns the original stream; corrupt data is
// ErrCorruptInput, while an error of the input itself keeps its identity.
func TestDecompress(t *testing.T) {
	tb := erofstest.Features()
	errInput := errors.New("test: connection reset")
	for _, c := range []struct {
		name string
		b    []byte
		want layer.Compression
	}{{"none", tb, layer.CompressionNone}, {"gzip", gz(t, tb), layer.CompressionGzip}, {"zstd", zst(t, tb), layer.CompressionZstd}} {
		rc, comp, err := layer.Decompress(bytes.NewReader(c.b))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || comp != c.want || !bytes.Equal(got, tb) {
			t.Fatalf("%s: compression %s, %d bytes, %v", c.name, comp, len(got), err)
		}
		// Corrupt data.
		if c.want != layer.CompressionNone {
			bad := append([]byte(nil), c.b...)
			bad[len(bad)/2] ^= 0xff
			rc, _, err := layer.Decompress(bytes.NewReader(bad))
			if err == nil {
				_, err = io.ReadAll(rc)
				rc.Close()
			}
			if !errors.Is(err, layer.ErrCorruptInput) {
				t.Errorf("%s: corrupt stream: %v, want ErrCorruptInput", c.name, err)
			}
		}
		// A failing input, after the header.
		rc, _, err = layer.Decompress(&failingReader{r: bytes.NewReader(c.b), n: len(c.b) / 2, err: errInput})
		if err == nil {
			_, err = io.ReadAll(rc)
			rc.Close()
		}
		if !errors.Is(err, errInput) || errors.Is(err, layer.ErrCorruptInput) {
			t.Errorf("%s: failing input: %v, want the input's error", c.name, err)
		}
	}
	for name, b := range map[string][]byte{"xz": {0xfd, '7', 'z', 'X', 'Z', 0, 1}, "bzip2": []byte("BZh91AY&SY")} {
		if _, _, err := layer.Decompress(bytes.NewReader(b)); !errors.Is(err, layer.ErrUnsupportedCompression) {
			t.Errorf("%s: %v, want ErrUnsupportedCompression", name, err)
		}
	}
	if _, _, err := layer.Decompress(&failingReader{err: errInput}); !errors.Is(err, errInput) {
		t.Errorf("failing input before the header: %v", err)
	}
}

// cancelAfter returns b, then err: an input whose producer saw its context
// end.
type cancelAfter struct {
	b   []byte
	err error
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, c.err
	}
	n := copy(p, c.b)
	c.b = c.b[n:]
	return n, nil
}

// TestDecodeKeepsTheContextError: when the input stops because the context
// ended, the conversion fails with the context's error, not with "corrupt
// layer input" (the input reader and the pipeline race to report the
// cancellation; either way errors.Is(err, context.Canceled) holds).
func TestDecodeKeepsTheContextError(t *testing.T) {
	plain := bytes.Repeat([]byte("x"), 1<<16)
	var zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf)
	zw.Write(plain)
	zw.Close()
	for _, c := range []struct {
		kind layer.Compression
		in   []byte
	}{{layer.CompressionNone, plain[:100]}, {layer.CompressionGzip, zbuf.Bytes()[:zbuf.Len()/2]}} {
		for _, want := range []error{context.Canceled, context.DeadlineExceeded} {
			var r io.Reader = &cancelAfter{b: c.in, err: want}
			if c.kind == layer.CompressionGzip {
				gr, err := gzip.NewReader(r)
				if err != nil {
					t.Fatal(err)
				}
				r = gr
			}
			_, err := io.Copy(io.Discard, layer.DecodeReader(r, c.kind))
			if !errors.Is(err, want) || errors.Is(err, layer.ErrCorruptInput) {
				t.Errorf("%s input ended by %v: %v", c.kind, want, err)
			}
		}
	}
	// A decompressor's own error is still corrupt input.
	_, err := io.Copy(io.Discard, layer.DecodeReader(iotest.ErrReader(errors.New("bad block")), layer.CompressionZstd))
	if !errors.Is(err, layer.ErrCorruptInput) {
		t.Errorf("decompressor error: %v", err)
	}
}
