package erofs_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/intact-project/intact/erofs"
	"github.com/intact-project/intact/erofs/erofstest"
)

// countingWriter records the size of every Write call.
type countingWriter struct {
	calls []int
	buf   bytes.Buffer
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.calls = append(c.calls, len(p))
	return c.buf.Write(p)
}

// TestTarIndexMetadataInOneWrite pins the contract package layer relies
// on: a LayoutTarIndex Writer writes nothing before Finish and then the
// whole metadata (Result.Size bytes) in a single Write call.
func TestTarIndexMetadataInOneWrite(t *testing.T) {
	for name, tb := range map[string][]byte{"features": erofstest.Features(), "empty": erofstest.Empty()} {
		w := &countingWriter{}
		ew, err := erofs.NewWriter(w, erofs.Options{Layout: erofs.LayoutTarIndex})
		if err != nil {
			t.Fatal(err)
		}
		tr, err := ew.AddTar(context.Background(), bytes.NewReader(tb))
		if err != nil {
			t.Fatal(err)
		}
		if len(w.calls) != 0 {
			t.Fatalf("%s: %d writes before Finish", name, len(w.calls))
		}
		res, err := ew.Finish(context.Background(), tr.Size)
		if err != nil {
			t.Fatal(err)
		}
		if len(w.calls) != 1 || int64(w.calls[0]) != res.Size || res.Size%512 != 0 {
			t.Fatalf("%s: writes %v, metadata size %d", name, w.calls, res.Size)
		}
	}
}
