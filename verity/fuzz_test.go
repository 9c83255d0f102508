package verity_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/intact-project/intact/verity"
)

// FuzzParseSuperblock: any 512 bytes either fail with ErrBadSuperblock or
// parse into valid parameters that marshal back to the same meaningful
// bytes (everything but the padding and the bytes after the salt and the
// algorithm's NUL).
func FuzzParseSuperblock(f *testing.F) {
	// More seeds, made by veritysetup, live in testdata/fuzz.
	p := verity.DefaultParams()
	p.DataBlocks = 1
	sb, _ := p.MarshalSuperblock()
	f.Add(sb)
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := verity.ParseSuperblock(b)
		if err != nil {
			if !errors.Is(err, verity.ErrBadSuperblock) {
				t.Fatalf("error %v is not ErrBadSuperblock", err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("parsed invalid params: %v", err)
		}
		out, err := p.MarshalSuperblock()
		if err != nil {
			t.Fatal(err)
		}
		q, err := verity.ParseSuperblock(out)
		if err != nil || q.String() != p.String() || q.UUID != p.UUID || !bytes.Equal(q.Salt, p.Salt) {
			t.Fatalf("round trip: %v %v", q, err)
		}
		// The fields the kernel and veritysetup read are preserved.
		if !bytes.Equal(out[:32], b[:32]) || !bytes.Equal(out[64:82], b[64:82]) ||
			!bytes.Equal(out[88:88+len(p.Salt)], b[88:88+len(p.Salt)]) {
			t.Fatal("marshal changed a field")
		}
	})
}

// FuzzVerifyBlock: the hash device and the data are untrusted; whatever
// their bytes, verification returns nil, corruption naming a block, or
// ErrTooSmall, and never panics or reads out of bounds. Seeds: a good tree.
func FuzzVerifyBlock(f *testing.F) {
	mk := func(blocks uint64, hbs uint32) verity.Params {
		p := verity.DefaultParams()
		p.DataBlockSize, p.HashBlockSize, p.DataBlocks = 512, hbs, blocks
		p.NoSuperblock = true
		p.Salt = []byte{1, 2, 3}
		return p
	}
	for _, blocks := range []uint64{1, 17, 300} {
		p := mk(blocks, 512)
		data := bytes.Repeat([]byte{0x5a}, int(blocks)*512)
		var buf bytes.Buffer
		res, err := verity.Format(context.Background(), bytes.NewReader(data), p, writerAt{&buf}, nil)
		if err != nil {
			f.Fatal(err)
		}
		var hdr [8]byte
		binary.LittleEndian.PutUint64(hdr[:], blocks)
		f.Add(hdr[:], res.RootHash, data[:512], buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, hdr, root, block, hash []byte) {
		if len(hdr) < 8 || len(root) < 32 {
			return
		}
		blocks := max(binary.LittleEndian.Uint64(hdr)%4096, 1)
		p := mk(blocks, 512<<(hdr[7]%4))
		v, err := verity.NewVerifier(p, root[:32], bytes.NewReader(hash), &verity.VerifierOptions{CacheBlocks: 2})
		if err != nil {
			t.Fatal(err)
		}
		blk := make([]byte, 512)
		copy(blk, block)
		for _, i := range []uint64{0, blocks / 2, blocks - 1} {
			err := v.VerifyBlock(i, blk)
			if err != nil && !errors.Is(err, verity.ErrCorrupt) && !errors.Is(err, verity.ErrTooSmall) {
				t.Fatalf("block %d: %v", i, err)
			}
		}
		data := bytes.Repeat(blk, int(min(blocks, 8)))
		q := p
		q.DataBlocks = min(blocks, 8)
		err = verity.Verify(context.Background(), q, root[:32], bytes.NewReader(data), bytes.NewReader(hash), nil)
		if err != nil && !errors.Is(err, verity.ErrCorrupt) && !errors.Is(err, verity.ErrTooSmall) {
			t.Fatalf("Verify: %v", err)
		}
	})
}
