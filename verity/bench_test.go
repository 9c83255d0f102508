package verity_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/intact-project/intact/verity"
)

// BenchmarkBuilderWrite measures the streaming Builder (data copied in
// through Write, level 0 hashed on all cores, tree written at Finish).
func BenchmarkBuilderWrite(b *testing.B) {
	for _, bs := range []uint32{512, 4096} {
		b.Run(strconv.Itoa(int(bs)), func(b *testing.B) {
			p := verity.DefaultParams()
			p.DataBlockSize, p.HashBlockSize = bs, bs
			p.Salt = make([]byte, 32)
			chunk := randomBytes(1, 1<<20)
			const total = 64 << 20
			b.SetBytes(total)
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				bl, err := verity.NewBuilder(p, &verity.Options{TempDir: b.TempDir()})
				if err != nil {
					b.Fatal(err)
				}
				for n := 0; n < total; n += len(chunk) {
					bl.Write(chunk)
				}
				if _, err := bl.Finish(context.Background(), discardAt{}, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBuildFormat measures the file-based path: a 256 MiB data file in
// the page cache, read by the caller and hashed on every core, the tree
// written into a file.
func BenchmarkBuildFormat(b *testing.B) {
	dir := b.TempDir()
	const size = 256 << 20
	data := filepath.Join(dir, "data")
	f, err := os.Create(data)
	if err != nil {
		b.Fatal(err)
	}
	chunk := randomBytes(2, 1<<20)
	for n := 0; n < size; n += len(chunk) {
		f.Write(chunk)
	}
	f.Close()
	for _, bs := range []uint32{512, 4096} {
		b.Run(strconv.Itoa(int(bs)), func(b *testing.B) {
			p := verity.DefaultParams()
			p.DataBlockSize, p.HashBlockSize = bs, bs
			p.Salt = make([]byte, 32)
			p.DataBlocks = size / uint64(bs)
			df, _ := os.Open(data)
			defer df.Close()
			o := verity.Options{TempDir: dir}
			b.SetBytes(size)
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				hf, err := os.Create(filepath.Join(dir, "hash"))
				if err != nil {
					b.Fatal(err)
				}
				if _, err := verity.Format(context.Background(), df, p, hf, &o); err != nil {
					b.Fatal(err)
				}
				hf.Close()
			}
		})
	}
}

type discardAt struct{}

func (discardAt) WriteAt(p []byte, off int64) (int, error) { return len(p), nil }
