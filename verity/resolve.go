package verity

import (
	"fmt"
	"os"

	"github.com/google/uuid"

	"github.com/intact-project/intact/internal/linux"
)

// NewUUID returns a random (version 4, RFC 4122 variant) UUID for a
// superblock, as veritysetup format chooses one.
func NewUUID() [16]byte { return uuid.New() }

// ResolveParams completes the parameters of an existing tree the way
// veritysetup open and verify do. With a superblock (p.NoSuperblock false)
// they are the superblock's, read from the hash file at p.HashOffset; p's
// other fields are ignored (callers that let users give them compare).
// Without one, p is taken as given, except that a zero DataBlocks becomes
// the size of the data file or block device in whole data blocks, up to
// the hash offset when the tree is inside the data file (hashPath is
// dataPath or the same file). The result is validated.
func ResolveParams(p Params, dataPath, hashPath string) (Params, error) {
	if hashPath == "" {
		hashPath = dataPath
	}
	if !p.NoSuperblock {
		f, err := os.Open(hashPath)
		if err != nil {
			return p, fmt.Errorf("open hash device: %w", err)
		}
		defer f.Close()
		sb, err := ReadSuperblock(f, p.HashOffset)
		if err != nil {
			return p, fmt.Errorf("%s at offset %d: %w", hashPath, p.HashOffset, err)
		}
		return sb, nil
	}
	if p.DataBlocks == 0 && p.DataBlockSize > 0 {
		f, err := os.Open(dataPath)
		if err != nil {
			return p, fmt.Errorf("open data: %w", err)
		}
		size, err := linux.FileSize(f)
		f.Close()
		if err != nil {
			return p, fmt.Errorf("data: %w", err)
		}
		if same(dataPath, hashPath) && p.HashOffset > 0 && uint64(size) > p.HashOffset {
			size = int64(p.HashOffset)
		}
		p.DataBlocks = uint64(size) / uint64(p.DataBlockSize)
		if p.DataBlocks == 0 {
			return p, fmt.Errorf("%s has %d bytes, less than one data block of %d: %w", dataPath, size, p.DataBlockSize, ErrTooSmall)
		}
	}
	if err := p.Validate(); err != nil {
		return p, err
	}
	return p, nil
}

// same reports whether a and b name the same file.
func same(a, b string) bool {
	if a == b {
		return true
	}
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}
