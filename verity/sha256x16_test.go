package verity

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"testing"
)

// TestSHA256x16 compares the 16-lane AVX-512 hasher with crypto/sha256 for
// every block size, salts of every length class, and both formats.
func TestSHA256x16(t *testing.T) {
	x := newSHA256x16(Params{Algorithm: "sha256"})
	if x == nil {
		t.Skip("CPU without AVX-512: the 16-lane hasher is not used")
	}
	r := rand.NewChaCha8([32]byte{16})
	for _, bs := range []int{512, 1024, 2048, 4096} {
		for _, sl := range []int{0, 1, 31, 32, 55, 56, 63, 64, 65, 127, 128, 200, 256} {
			for _, ht := range []uint32{0, 1} {
				p := Params{HashType: ht, Algorithm: "sha256", Salt: make([]byte, sl)}
				r.Read(p.Salt)
				x := newSHA256x16(p)
				data := make([]byte, 16*bs)
				r.Read(data)
				dst := make([]byte, 16*32)
				x.sum16(dst, data, bs)
				for i := 0; i < 16; i++ {
					h := sha256.New()
					if ht == 1 {
						h.Write(p.Salt)
					}
					h.Write(data[i*bs : (i+1)*bs])
					if ht == 0 {
						h.Write(p.Salt)
					}
					if want := h.Sum(nil); !bytes.Equal(dst[i*32:(i+1)*32], want) {
						t.Fatalf("block size %d salt %d format %d lane %d: %x, want %x", bs, sl, ht, i, dst[i*32:(i+1)*32], want)
					}
				}
			}
		}
	}
}
