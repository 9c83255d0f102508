package layer_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/intact-project/intact/erofs/erofstest"
	"github.com/intact-project/intact/layer"
)

// BenchmarkConvert converts the Features corpus (gzip) per iteration; the
// end-to-end comparison with mkfs.erofs + veritysetup is scripts/bench.d/layer.
func BenchmarkConvert(b *testing.B) {
	in := gz(b, erofstest.Features())
	tarSize := int64(len(erofstest.Features()))
	for _, p := range profiles {
		b.Run(string(p), func(b *testing.B) {
			dir := b.TempDir()
			b.SetBytes(tarSize)
			for b.Loop() {
				out, err := os.Create(filepath.Join(dir, "out"))
				if err != nil {
					b.Fatal(err)
				}
				if _, err := layer.Convert(context.Background(), bytes.NewReader(in), out, layer.Options{Profile: p, TempDir: dir}); err != nil {
					b.Fatal(err)
				}
				out.Close()
			}
		})
	}
}
