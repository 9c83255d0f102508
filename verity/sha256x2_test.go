package verity

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestSHA256x2 compares the two-lane SHA-NI hasher with crypto/sha256 for
// every block size, salts of every length class, and both formats.
func TestSHA256x2(t *testing.T) {
	if !haveSHA256x2 {
		t.Skip("CPU without SHA extensions: the two-lane hasher is not used")
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, bs := range []int{512, 1024, 2048, 4096} {
		for _, sl := range []int{0, 1, 31, 32, 55, 56, 63, 64, 65, 100, 127, 128, 200, 255, 256} {
			for _, ht := range []uint32{0, 1} {
				p := Params{HashType: ht, Algorithm: "sha256", Salt: make([]byte, sl)}
				for i := range p.Salt {
					p.Salt[i] = byte(r.Uint32())
				}
				x := newSHA256x2(p)
				a, b := make([]byte, bs), make([]byte, bs)
				for i := range a {
					a[i], b[i] = byte(r.Uint32()), byte(r.Uint32())
				}
				da, db := make([]byte, 32), make([]byte, 32)
				x.sum2(da, db, a, b)
				for _, c := range []struct{ blk, got []byte }{{a, da}, {b, db}} {
					h := sha256.New()
					if ht == 1 {
						h.Write(p.Salt)
					}
					h.Write(c.blk)
					if ht == 0 {
						h.Write(p.Salt)
					}
					if want := h.Sum(nil); !bytes.Equal(c.got, want) {
						t.Fatalf("block %d salt %d format %d: %x, want %x", bs, sl, ht, c.got, want)
					}
				}
			}
		}
	}
}

func BenchmarkSHA256x2(b *testing.B) {
	if !haveSHA256x2 {
		b.Skip("no SHA extensions")
	}
	p := Params{HashType: 1, Algorithm: "sha256", Salt: make([]byte, 32)}
	x := newSHA256x2(p)
	blk := make([]byte, 8192)
	d := make([]byte, 64)
	b.SetBytes(8192)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		x.sum2(d[:32], d[32:], blk[:4096], blk[4096:])
	}
}

func BenchmarkSHA256x1(b *testing.B) {
	p := Params{HashType: 1, Algorithm: "sha256", Salt: make([]byte, 32)}
	h := newHasher(p)
	blk := make([]byte, 4096)
	d := make([]byte, 32)
	b.SetBytes(4096)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		h.sum(d, blk)
	}
}

// TestSumBlocksLanes: sumBlocks gives the same digests whichever
// multi-lane hashers the CPU allows (16 lanes, pairs, singles).
func TestSumBlocksLanes(t *testing.T) {
	p := Params{HashType: 1, Algorithm: "sha256", Salt: []byte("salt")}
	const n = 16 + 16 + 3
	data := make([]byte, n*1024)
	rand.NewChaCha8([32]byte{3, 4}).Read(data)
	want := make([]byte, n*32)
	plain := newHasher(p)
	plain.x2, plain.x16 = nil, nil
	plain.sumBlocks(want, data, n, 1024)
	for _, mode := range []string{"x16+x2", "x2", "x16"} {
		h := newHasher(p)
		switch mode {
		case "x2":
			h.x16 = nil
		case "x16":
			h.x2 = nil
		}
		got := make([]byte, n*32)
		h.sumBlocks(got, data, n, 1024)
		if !bytes.Equal(got, want) {
			t.Fatalf("%s digests differ from one-lane digests", mode)
		}
	}
}

// BenchmarkSHA256Paths compares the three ways level 0 can be hashed on
// this CPU, per core: sixteen blocks at once with AVX-512 ("x16"), two
// interleaved streams with the SHA extensions ("x2"), and crypto/sha256
// one block at a time ("x1", which uses the SHA extensions itself where
// the CPU has them). 64 blocks per call, 32-byte salt, format 1. Compare
// them in one run (benchstat, or -count with alternation): the fastest is
// the one sumBlocks must prefer on this CPU (see pickLanes).
func BenchmarkSHA256Paths(b *testing.B) {
	for _, bs := range []int{512, 4096} {
		for _, mode := range []string{"x16", "x2", "x1"} {
			b.Run(fmt.Sprintf("%d/%s", bs, mode), func(b *testing.B) {
				p := Params{HashType: 1, Algorithm: "sha256", Salt: make([]byte, 32)}
				h := newHasher(p)
				switch mode {
				case "x16":
					if h.x16 == nil {
						b.Skip("no AVX-512")
					}
					h.x2 = nil
				case "x2":
					if h.x2 == nil {
						b.Skip("no SHA extensions")
					}
					h.x16 = nil
				case "x1":
					h.x16, h.x2 = nil, nil
				}
				const n = 64
				data := make([]byte, n*bs)
				dst := make([]byte, n*32)
				b.SetBytes(int64(len(data)))
				for i := 0; i < b.N; i++ {
					h.sumBlocks(dst, data, n, bs)
				}
			})
		}
	}
}

// TestLaneChoice: the measured choice of multi-lane hasher is one of the
// two, the same on every call, and sumBlocks gives the same digests with
// it as one block at a time (TestSumBlocksLanes covers each path).
func TestLaneChoice(t *testing.T) {
	for _, bs := range []int{512, 1024, 2048, 4096} {
		l := lanesFor(bs)
		if l != lanes2 && l != lanes16 || lanesFor(bs) != l {
			t.Fatalf("block size %d: lanes %d", bs, l)
		}
		t.Logf("block size %d: %d lanes (AVX-512 %v, SHA-NI %v)", bs, l, haveSHA256x16, haveSHA256x2)
	}
}
