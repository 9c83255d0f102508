package verity

import (
	"math/bits"
	"sync"
	"time"
)

// Which SHA-256 path hashes a level fastest depends on the CPU and on the
// block size, and is measured rather than assumed. On the AMD EPYC of the
// project's machines (AVX-512 and SHA-NI) two interleaved SHA-NI streams
// ran at 3.3 GB/s per core for 4 KiB blocks against 1.45 GB/s for sixteen
// AVX-512 lanes (which read sixteen blocks 4096 bytes apart: the same
// cache sets, 4K aliasing), and 2.6 against 2.3 GB/s for 512-byte blocks
// (docs/performance.md). A CPU with a slow SHA-NI unit, or none, may well
// prefer the sixteen lanes. So the first hasher to meet a block size times
// both on this CPU and every later one uses the winner.

type lanes int

const (
	lanes2  lanes = 2  // sha256x2 (SHA-NI), then one block at a time
	lanes16 lanes = 16 // sha256x16 (AVX-512) for groups of 16, then sha256x2
)

var laneChoice [4]struct {
	once sync.Once
	l    lanes
}

// lanesFor returns the faster multi-lane path for blocks of size bs
// (512..4096; other sizes take lanes2), timing both once per process on
// first use when the CPU has both.
func lanesFor(bs int) lanes {
	i := bits.TrailingZeros(uint(bs)) - 9
	if !haveSHA256x16 || !haveSHA256x2 || i < 0 || i >= len(laneChoice) || bs != 512<<i {
		if haveSHA256x16 && !haveSHA256x2 {
			return lanes16
		}
		return lanes2
	}
	c := &laneChoice[i]
	c.once.Do(func() { c.l = calibrateLanes(bs) })
	return c.l
}

// calibrateLanes times sixteen and two lanes on 32 blocks of size bs,
// alternating, five rounds each, and keeps the best time of each: a
// preemption can only make a round slower. Sixteen lanes must win by 5 %
// to be chosen (two lanes are the steadier path). It takes about a
// millisecond.
func calibrateLanes(bs int) lanes {
	p := Params{HashType: HashTypeNormal, Algorithm: "sha256", Salt: make([]byte, 32)}
	x16, x2 := newSHA256x16(p), newSHA256x2(p)
	const n = 32
	data := make([]byte, n*bs)
	dst := make([]byte, n*32)
	best := map[lanes]time.Duration{}
	for round := 0; round < 5; round++ {
		for _, l := range []lanes{lanes16, lanes2} {
			start := time.Now()
			for i := 0; i < n; i += 16 {
				if l == lanes16 {
					x16.sum16(dst[i*32:(i+16)*32], data[i*bs:(i+16)*bs], bs)
				} else {
					for j := i; j < i+16; j += 2 {
						x2.sum2(dst[j*32:(j+1)*32], dst[(j+1)*32:(j+2)*32], data[j*bs:(j+1)*bs], data[(j+1)*bs:(j+2)*bs])
					}
				}
			}
			if d := time.Since(start); best[l] == 0 || d < best[l] {
				best[l] = d
			}
		}
	}
	if best[lanes16] < best[lanes2]*95/100 {
		return lanes16
	}
	return lanes2
}
