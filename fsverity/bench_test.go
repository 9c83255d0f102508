package fsverity

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/intact-project/intact/internal/testutil"
)

// BenchmarkDigest compares Compute (one goroutine and all cores) with
// `fsverity digest` on the same 256 MiB file (in the page cache), so the
// ratio is measured under the same machine load.
func BenchmarkDigest(b *testing.B) {
	const size = 256 << 20
	path := filepath.Join(b.TempDir(), "data")
	testFileB(b, path, size)
	for _, c := range []struct {
		name string
		opts ComputeOptions
	}{{"intact-1core", ComputeOptions{Concurrency: 1}}, {"intact-allcores", ComputeOptions{}}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				f, err := os.Open(path)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := ComputeDescriptor(context.Background(), f, Params{}, c.opts); err != nil {
					b.Fatal(err)
				}
				f.Close()
			}
		})
	}
	b.Run("fsverity-utils", func(b *testing.B) {
		bin := testutil.RequireTool(b, "fsverity")
		b.SetBytes(size)
		for b.Loop() {
			if out, err := exec.Command(bin, "digest", path).CombinedOutput(); err != nil {
				b.Fatalf("%v %s", err, out)
			}
		}
	})
}

func testFileB(b *testing.B, path string, size int) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	for n := 0; n < size; n += len(buf) {
		buf[0]++
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}
