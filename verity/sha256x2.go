package verity

import "encoding/binary"

// sha256x2 hashes two data blocks at once with block2: the node
// H(salt ‖ block) (format 1) or H(block ‖ salt) (format 0) of each.
// The message is cut into a head (the salt of format 1 and the first bytes
// of the block, up to a 64-byte boundary), the rest of the block hashed in
// place, and a tail (the last bytes of the block, the salt of format 0 and
// the SHA-256 padding). Blocks are at least MinBlockSize bytes, so the head
// always ends inside the block.
type sha256x2 struct {
	pre, post []byte
	buf       [2][]byte
	state     [2][8]uint32
}

var sha256Init = [8]uint32{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}

// newSHA256x2 returns a two-lane hasher for p, or nil when p is not sha256
// or the CPU lacks the SHA extensions.
func newSHA256x2(p Params) *sha256x2 {
	if !haveSHA256x2 || p.Algorithm != "sha256" {
		return nil
	}
	x := &sha256x2{}
	if p.HashType == HashTypeNormal {
		x.pre = p.Salt
	} else {
		x.post = p.Salt
	}
	for i := range x.buf {
		x.buf[i] = make([]byte, 0, 64+MaxSaltSize+128)
	}
	return x
}

// sum2 writes the nodes of blocks a and b, which have the same length (at
// least 64 bytes), into da and db.
func (x *sha256x2) sum2(da, db, a, b []byte) {
	x.state[0], x.state[1] = sha256Init, sha256Init
	total := uint64(len(x.pre) + len(a) + len(x.post))
	if len(x.pre) > 0 {
		k := (64 - len(x.pre)%64) % 64
		ha := append(append(x.buf[0][:0], x.pre...), a[:k]...)
		hb := append(append(x.buf[1][:0], x.pre...), b[:k]...)
		block2(&x.state[0], &x.state[1], &ha[0], &hb[0], len(ha)/64)
		a, b = a[k:], b[k:]
	}
	if m := len(a) / 64; m > 0 {
		block2(&x.state[0], &x.state[1], &a[0], &b[0], m)
		a, b = a[m*64:], b[m*64:]
	}
	ta := sha256Tail(x.buf[0][:0], a, x.post, total)
	tb := sha256Tail(x.buf[1][:0], b, x.post, total)
	block2(&x.state[0], &x.state[1], &ta[0], &tb[0], len(ta)/64)
	for j := 0; j < 8; j++ {
		binary.BigEndian.PutUint32(da[4*j:], x.state[0][j])
		binary.BigEndian.PutUint32(db[4*j:], x.state[1][j])
	}
}

// sha256Tail appends the last bytes of the message and the SHA-256 padding
// (0x80, zeros, the length in bits) to dst, a multiple of 64 bytes.
func sha256Tail(dst, rest, post []byte, total uint64) []byte {
	dst = append(dst, rest...)
	dst = append(dst, post...)
	dst = append(dst, 0x80)
	for len(dst)%64 != 56 {
		dst = append(dst, 0)
	}
	return binary.BigEndian.AppendUint64(dst, total*8)
}
