package verity

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Superblock layout (cryptsetup lib/verity/verity.c struct verity_sb, little
// endian, 512 bytes):
//
//	@0   signature "verity\0\0"
//	@8   u32 version (1)
//	@12  u32 hash_type
//	@16  uuid[16]
//	@32  algorithm[32], NUL-terminated, lowercase
//	@64  u32 data_block_size
//	@68  u32 hash_block_size
//	@72  u64 data_blocks
//	@80  u16 salt_size
//	@82  pad[6]
//	@88  salt[256]
//	@344 pad[168]
const (
	sbMagic     = "verity\x00\x00"
	sbVersion   = 1
	sbVersionOf = 8
	sbAlgoOff   = 32
	sbAlgoLen   = 32
	sbSaltOff   = 88
)

// MarshalSuperblock returns the 512-byte superblock veritysetup writes for p.
// p must be valid and must not have NoSuperblock set.
func (p Params) MarshalSuperblock() ([]byte, error) {
	if p.NoSuperblock {
		return nil, invalidf("parameters say no superblock")
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	b := make([]byte, SuperblockSize)
	copy(b, sbMagic)
	le := binary.LittleEndian
	le.PutUint32(b[sbVersionOf:], sbVersion)
	le.PutUint32(b[12:], p.HashType)
	copy(b[16:32], p.UUID[:])
	copy(b[sbAlgoOff:sbAlgoOff+sbAlgoLen-1], p.Algorithm)
	le.PutUint32(b[64:], p.DataBlockSize)
	le.PutUint32(b[68:], p.HashBlockSize)
	le.PutUint64(b[72:], p.DataBlocks)
	le.PutUint16(b[80:], uint16(len(p.Salt)))
	copy(b[sbSaltOff:], p.Salt)
	return b, nil
}

// ParseSuperblock parses a verity superblock from the first 512 bytes of b,
// which are untrusted: the magic, version, hash type, algorithm, block sizes,
// salt size and the sizes derived from the data block count are all checked.
// The returned Params have HashOffset 0 (the caller knows where it read the
// superblock; ReadSuperblock sets it) and NoSuperblock false.
func ParseSuperblock(b []byte) (Params, error) {
	if len(b) < SuperblockSize {
		return Params{}, badSuperblockf("%d bytes, need %d", len(b), SuperblockSize)
	}
	b = b[:SuperblockSize]
	if string(b[:8]) != sbMagic {
		return Params{}, badSuperblockf("no verity superblock (magic %q, want %q)", b[:8], sbMagic)
	}
	le := binary.LittleEndian
	if v := le.Uint32(b[sbVersionOf:]); v != sbVersion {
		return Params{}, badSuperblockf("unsupported superblock version %d", v)
	}
	var p Params
	p.HashType = le.Uint32(b[12:])
	copy(p.UUID[:], b[16:32])
	algo := b[sbAlgoOff : sbAlgoOff+sbAlgoLen]
	if i := bytes.IndexByte(algo, 0); i >= 0 {
		algo = algo[:i]
	}
	p.Algorithm = string(algo)
	p.DataBlockSize = le.Uint32(b[64:])
	p.HashBlockSize = le.Uint32(b[68:])
	p.DataBlocks = le.Uint64(b[72:])
	saltSize := int(le.Uint16(b[80:]))
	if saltSize > MaxSaltSize {
		return Params{}, badSuperblockf("salt size %d is larger than %d", saltSize, MaxSaltSize)
	}
	if saltSize > 0 {
		p.Salt = append([]byte{}, b[sbSaltOff:sbSaltOff+saltSize]...)
	}
	if _, ok := algorithms[p.Algorithm]; !ok {
		return Params{}, badSuperblockf("hash algorithm %s is not supported (supported: %s)", printable(p.Algorithm), Algorithms)
	}
	if err := p.Validate(); err != nil {
		return Params{}, fmt.Errorf("%w: %w", ErrBadSuperblock, err)
	}
	return p, nil
}

// ReadSuperblock reads and parses the superblock at byte offset off of the
// hash device r. The result has HashOffset off.
func ReadSuperblock(r io.ReaderAt, off uint64) (Params, error) {
	if off%512 != 0 {
		return Params{}, invalidf("hash offset %d is not a multiple of 512", off)
	}
	if off > 1<<62 {
		return Params{}, invalidf("hash offset %d is too large", off)
	}
	b := make([]byte, SuperblockSize)
	n, err := r.ReadAt(b, int64(off))
	if n < SuperblockSize {
		if err == nil || errors.Is(err, io.EOF) {
			return Params{}, fmt.Errorf("%w: no superblock at offset %d: the hash device ends %d bytes into it", ErrTooSmall, off, n)
		}
		return Params{}, fmt.Errorf("read superblock at offset %d: %w", off, err)
	}
	p, err := ParseSuperblock(b)
	if err != nil {
		return Params{}, err
	}
	p.HashOffset = off
	if err := p.Validate(); err != nil {
		return Params{}, fmt.Errorf("%w: %w", ErrBadSuperblock, err)
	}
	return p, nil
}

// printable quotes untrusted bytes for messages.
func printable(s string) string {
	q := fmt.Sprintf("%q", s)
	if len(q) > 80 {
		q = q[:77] + "..."
	}
	return q
}
