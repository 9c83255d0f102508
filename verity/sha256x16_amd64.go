package verity

import (
	"encoding/binary"

	"golang.org/x/sys/cpu"
)

//go:generate sh -c "python3 gen_sha256x16.py > sha256x16_amd64.s"

// block16 runs the SHA-256 compression function over n 64-byte chunks of
// 16 messages at once (AVX-512): lane i reads base+off[i]+64*c for chunk c.
//
//go:noescape
func block16(state *[8][16]uint32, base *byte, off *[16]int32, n int)

// haveSHA256x16 reports whether the CPU and OS support the AVX-512
// instructions block16 uses.
var haveSHA256x16 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW

const (
	x16HeadStride = 320 // salt (≤256) plus up to 63 bytes of the block
	x16TailStride = 448 // up to 63 bytes, salt (≤256), padding (≤72)
)

// sha256x16 hashes 16 data blocks at once: the node H(salt ‖ block)
// (format 1) or H(block ‖ salt) (format 0) of each, cut into head, middle
// and tail as sha256x2 does.
type sha256x16 struct {
	pre, post []byte
	head      []byte
	tail      []byte
	state     [8][16]uint32
	off       [16]int32
}

func newSHA256x16(p Params) *sha256x16 {
	if !haveSHA256x16 || p.Algorithm != "sha256" {
		return nil
	}
	x := &sha256x16{head: make([]byte, 16*x16HeadStride), tail: make([]byte, 16*x16TailStride)}
	if p.HashType == HashTypeNormal {
		x.pre = p.Salt
	} else {
		x.post = p.Salt
	}
	return x
}

// sum16 writes the nodes of the 16 blocks of size bs (at least 512) at the
// start of data into dst, 16 digests back to back.
func (x *sha256x16) sum16(dst, data []byte, bs int) {
	for j := range x.state {
		for i := range x.state[j] {
			x.state[j][i] = sha256Init[j]
		}
	}
	total := uint64(len(x.pre) + bs + len(x.post))
	k := 0
	if len(x.pre) > 0 {
		k = (64 - len(x.pre)%64) % 64
		n := len(x.pre) + k
		for i := 0; i < 16; i++ {
			h := x.head[i*x16HeadStride:]
			copy(h, x.pre)
			copy(h[len(x.pre):], data[i*bs:i*bs+k])
			x.off[i] = int32(i * x16HeadStride)
		}
		block16(&x.state, &x.head[0], &x.off, n/64)
	}
	m := (bs - k) / 64
	for i := 0; i < 16; i++ {
		x.off[i] = int32(i * bs)
	}
	block16(&x.state, &data[k], &x.off, m)
	tl := 0
	for i := 0; i < 16; i++ {
		t := sha256Tail(x.tail[i*x16TailStride:i*x16TailStride], data[i*bs+k+64*m:(i+1)*bs], x.post, total)
		tl = len(t)
		x.off[i] = int32(i * x16TailStride)
	}
	block16(&x.state, &x.tail[0], &x.off, tl/64)
	for i := 0; i < 16; i++ {
		for j := 0; j < 8; j++ {
			binary.BigEndian.PutUint32(dst[i*32+4*j:], x.state[j][i])
		}
	}
}
