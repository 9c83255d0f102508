package verity

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"math"
	"math/bits"
)

// Hash types (the first argument of the dm table and the superblock's
// hash_type field).
const (
	// HashTypeChromeOS is the original Chrome OS format 0: nodes are
	// H(block ‖ salt) and digests are packed without padding.
	HashTypeChromeOS uint32 = 0
	// HashTypeNormal is format 1, veritysetup's default: nodes are
	// H(salt ‖ block) and each digest slot is padded to a power of two.
	HashTypeNormal uint32 = 1
)

// Limits.
const (
	// MinBlockSize and MaxBlockSize bound the data and hash block sizes. The
	// kernel requires block sizes of at most PAGE_SIZE (4096 on x86-64) and at
	// least the device's logical block size; veritysetup requires at least
	// 512.
	MinBlockSize = 512
	MaxBlockSize = 4096
	// MaxSaltSize is the largest salt the superblock can hold.
	MaxSaltSize = 256
	// SuperblockSize is the size of the on-disk verity superblock.
	SuperblockSize = 512
	// MaxLevels is the most tree levels the kernel accepts.
	MaxLevels = 63
)

// Params describes a dm-verity tree: everything veritysetup's options or the
// superblock say, plus the hash offset. The zero value is not valid; start
// from DefaultParams. Note that HashType's zero value is the legacy Chrome OS
// format 0.
type Params struct {
	// HashType is HashTypeNormal (1, the default of veritysetup) or
	// HashTypeChromeOS (0).
	HashType uint32
	// Algorithm is the kernel crypto name of the hash, lowercase: "sha256",
	// "sha512", or "sha1" (accepted when reading or verifying an existing
	// tree; building a new sha1 tree is refused).
	Algorithm string
	// DataBlockSize and HashBlockSize are powers of two from 512 to 4096, in
	// any combination.
	DataBlockSize uint32
	HashBlockSize uint32
	// DataBlocks is the number of data blocks the tree covers (the device
	// mapped by the kernel is DataBlocks*DataBlockSize bytes). A Builder
	// fills it in from the data it was given.
	DataBlocks uint64
	// Salt is hashed into every node: 0 to 256 bytes (nil for none).
	Salt []byte
	// UUID is the superblock's UUID (all zeros if none was chosen).
	UUID [16]byte
	// NoSuperblock omits the 512-byte superblock (veritysetup
	// --no-superblock); the tree then starts right at HashOffset.
	NoSuperblock bool
	// HashOffset is the byte offset in the hash device where the superblock
	// (or, with NoSuperblock, the tree) starts. It is a multiple of 512; with
	// NoSuperblock also a multiple of HashBlockSize. When the tree is stored
	// in the data device itself, HashOffset must not be below the end of the
	// data (see ValidateSameDevice).
	HashOffset uint64
}

// DefaultParams returns veritysetup's defaults (format 1, sha256, 4096-byte
// data and hash blocks, superblock at offset 0) without a salt; veritysetup
// would add 32 random bytes, callers choose theirs. DataBlocks is left 0.
func DefaultParams() Params {
	return Params{
		HashType:      HashTypeNormal,
		Algorithm:     "sha256",
		DataBlockSize: 4096,
		HashBlockSize: 4096,
	}
}

// algorithm describes a hash the package knows.
type algorithm struct {
	size  int
	new   func() hash.Hash
	build bool // allowed for new trees
}

var algorithms = map[string]algorithm{
	"sha256": {sha256.Size, sha256.New, true},
	"sha512": {sha512.Size, sha512.New, true},
	"sha1":   {sha1.Size, sha1.New, false},
}

// Algorithms lists the hash algorithm names Params accepts, for messages.
const Algorithms = "sha256, sha512 (sha1 for existing trees only)"

// DigestSize returns the size in bytes of one digest of p's algorithm, or 0
// if the algorithm is unknown.
func (p Params) DigestSize() int { return algorithms[p.Algorithm].size }

// Clone returns a copy of p that shares no memory with it.
func (p Params) Clone() Params {
	if p.Salt != nil {
		p.Salt = append([]byte{}, p.Salt...)
	}
	return p
}

// SaltHex returns the salt as lowercase hex, or "-" for no salt (the spelling
// of veritysetup's --salt option and of the dm table).
func (p Params) SaltHex() string {
	if len(p.Salt) == 0 {
		return "-"
	}
	return hex.EncodeToString(p.Salt)
}

// UUIDString formats the UUID in the canonical 8-4-4-4-12 form.
func (p Params) UUIDString() string { return FormatUUID(p.UUID) }

// FormatUUID formats a 16-byte UUID in the canonical 8-4-4-4-12 form.
func FormatUUID(u [16]byte) string {
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// ParseUUID parses a UUID in the canonical 8-4-4-4-12 form (either case),
// as libuuid's uuid_parse does.
func ParseUUID(s string) ([16]byte, error) {
	var u [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, invalidf("UUID %q is not of the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", s)
	}
	h := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36]
	if _, err := hex.Decode(u[:], []byte(h)); err != nil {
		return u, invalidf("UUID %q is not hexadecimal", s)
	}
	return u, nil
}

func checkBlockSize(what string, n uint32) error {
	if n == 0 || n&(n-1) != 0 {
		return invalidf("%s block size %d is not a power of two", what, n)
	}
	if n < MinBlockSize {
		return invalidf("%s block size %d is below %d", what, n, MinBlockSize)
	}
	if n > MaxBlockSize {
		return unsupportedf("%s block size %d is above %d (the kernel needs block sizes up to the page size)", what, n, MaxBlockSize)
	}
	return nil
}

// validateShape checks everything except DataBlocks and the overflow of
// sizes derived from it: what a Builder needs before data arrives.
func (p Params) validateShape() error {
	if p.HashType != HashTypeNormal && p.HashType != HashTypeChromeOS {
		return unsupportedf("hash type %d (supported: 1 normal, 0 Chrome OS)", p.HashType)
	}
	if _, ok := algorithms[p.Algorithm]; !ok {
		return unsupportedf("hash algorithm %q (supported: %s)", p.Algorithm, Algorithms)
	}
	if err := checkBlockSize("data", p.DataBlockSize); err != nil {
		return err
	}
	if err := checkBlockSize("hash", p.HashBlockSize); err != nil {
		return err
	}
	if len(p.Salt) > MaxSaltSize {
		return invalidf("salt of %d bytes is longer than %d", len(p.Salt), MaxSaltSize)
	}
	if p.HashOffset%512 != 0 {
		return invalidf("hash offset %d is not a multiple of 512", p.HashOffset)
	}
	if p.NoSuperblock && p.HashOffset%uint64(p.HashBlockSize) != 0 {
		return invalidf("hash offset %d is not a multiple of the hash block size %d (required without a superblock: the tree starts at the hash offset)", p.HashOffset, p.HashBlockSize)
	}
	if p.HashOffset > math.MaxInt64/2 {
		return invalidf("hash offset %d is too large", p.HashOffset)
	}
	return nil
}

// Validate reports whether p describes a tree this package can read,
// verify and describe, with one error naming the first problem. It does not
// reject sha1; building refuses it separately.
func (p Params) Validate() error {
	_, err := p.Layout()
	return err
}

// ValidateSameDevice checks, in addition to Validate, that the data and the
// hash area do not overlap when both live in one device or file (the tree
// appended to the data): the data must end at or before HashOffset.
func (p Params) ValidateSameDevice() error {
	l, err := p.Layout()
	if err != nil {
		return err
	}
	if l.DataSize > p.HashOffset {
		return invalidf("data area (%d bytes) overlaps the hash area at offset %d", l.DataSize, p.HashOffset)
	}
	return nil
}

// Layout is where a tree lives in the hash device and how it is shaped; see
// Params.Layout. Block numbers are in hash blocks from the start of the hash
// device, the unit of the dm table's hash start block.
type Layout struct {
	// DigestSize is the size of one digest; DigestSlot the bytes a digest
	// takes in a hash block (the next power of two in format 1, the digest
	// size in format 0).
	DigestSize int
	DigestSlot int
	// HashPerBlockBits is log2 of the digests per hash block.
	HashPerBlockBits uint
	// Levels is the number of hash levels (0 when there is one data block:
	// the root hash is then the hash of that block).
	Levels int
	// HashStartBlock is the first block of the tree: HashOffset/HashBlockSize
	// without a superblock, ceil((HashOffset+512)/HashBlockSize) with one. It
	// is the hash start block of the dm table.
	HashStartBlock uint64
	// LevelStart[i] is the block number of the first block of level i and
	// LevelBlocks[i] its number of blocks. The top level (Levels-1) comes
	// first on disk, level 0 last.
	LevelStart  []uint64
	LevelBlocks []uint64
	// TreeBlocks is the number of hash blocks of the tree without the
	// superblock (veritysetup dump's "Hash blocks").
	TreeBlocks uint64
	// DataSize is DataBlocks*DataBlockSize: the bytes of the data device the
	// tree covers.
	DataSize uint64
	// TreeOffset is the byte offset of the tree's first block
	// (HashStartBlock*HashBlockSize); HashEnd the byte offset just past the
	// tree, i.e. the minimum size of the hash device ("Hash device size" of
	// veritysetup when the hash offset is 0).
	TreeOffset uint64
	HashEnd    uint64
}

// HashesPerBlock is the number of digests in one hash block.
func (l Layout) HashesPerBlock() uint64 { return 1 << l.HashPerBlockBits }

// Layout validates p and computes the tree's layout.
func (p Params) Layout() (Layout, error) {
	if err := p.validateShape(); err != nil {
		return Layout{}, err
	}
	if p.DataBlocks == 0 {
		return Layout{}, invalidf("no data blocks (dm-verity needs at least one data block)")
	}
	return p.layout()
}

// layout computes the layout of p; the shape must be valid and DataBlocks > 0.
func (p Params) layout() (Layout, error) {
	var l Layout
	l.DigestSize = p.DigestSize()
	l.DigestSlot = l.DigestSize
	if p.HashType == HashTypeNormal {
		l.DigestSlot = 1 << bits.Len(uint(l.DigestSize-1))
	}
	// floor(log2(hash_block_size / digest_size)), as cryptsetup and the
	// kernel compute it.
	l.HashPerBlockBits = uint(bits.Len32(p.HashBlockSize/uint32(l.DigestSize)) - 1)

	hi, lo := bits.Mul64(p.DataBlocks, uint64(p.DataBlockSize))
	if hi != 0 || lo > math.MaxInt64/2 {
		return Layout{}, invalidf("%d data blocks of %d bytes are too large", p.DataBlocks, p.DataBlockSize)
	}
	l.DataSize = lo

	for uint(l.Levels)*l.HashPerBlockBits < 64 && (p.DataBlocks-1)>>(uint(l.Levels)*l.HashPerBlockBits) != 0 {
		l.Levels++
	}
	if l.Levels > MaxLevels {
		return Layout{}, invalidf("%d tree levels (more than %d)", l.Levels, MaxLevels)
	}

	hbs := uint64(p.HashBlockSize)
	if p.NoSuperblock {
		l.HashStartBlock = p.HashOffset / hbs
	} else {
		l.HashStartBlock = (p.HashOffset + SuperblockSize + hbs - 1) / hbs
	}
	l.LevelStart = make([]uint64, l.Levels)
	l.LevelBlocks = make([]uint64, l.Levels)
	pos := l.HashStartBlock
	for i := l.Levels - 1; i >= 0; i-- {
		shift := uint(i+1) * l.HashPerBlockBits
		if shift > 63 {
			return Layout{}, invalidf("hash area overflow (too many data blocks)")
		}
		n := (p.DataBlocks-1)>>shift + 1
		l.LevelStart[i] = pos
		l.LevelBlocks[i] = n
		pos += n
		l.TreeBlocks += n
	}
	if pos > math.MaxInt64/2/hbs {
		return Layout{}, invalidf("hash area too large")
	}
	l.TreeOffset = l.HashStartBlock * hbs
	l.HashEnd = pos * hbs
	return l, nil
}

// String formats the parameters in the order of veritysetup's options, for
// logs.
func (p Params) String() string {
	sb := "superblock"
	if p.NoSuperblock {
		sb = "no superblock"
	}
	return fmt.Sprintf("format %d, %s, data block %d, hash block %d, %d data blocks, salt %s, %s, hash offset %d",
		p.HashType, p.Algorithm, p.DataBlockSize, p.HashBlockSize, p.DataBlocks, p.SaltHex(), sb, p.HashOffset)
}
