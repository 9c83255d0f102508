package layer_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

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
