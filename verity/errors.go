package verity

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error this package returns wraps one of them (with
// context), so callers can classify failures with errors.Is.
var (
	// ErrInvalidParams: parameters that can never describe a dm-verity tree
	// (a block size that is not a power of two, a salt over 256 bytes, zero
	// data blocks, an overlap of data and tree, sizes that overflow).
	ErrInvalidParams = errors.New("invalid dm-verity parameters")
	// ErrUnsupported: parameters that are valid dm-verity but not supported
	// here (an unknown hash algorithm, block sizes above 4096, building a tree
	// with sha1).
	ErrUnsupported = errors.New("unsupported dm-verity parameters")
	// ErrBadSuperblock: bytes that are not a usable verity superblock.
	ErrBadSuperblock = errors.New("bad verity superblock")
	// ErrCorrupt: data or hash blocks that do not match the root hash. The
	// error is a *BlockError naming the block.
	ErrCorrupt = errors.New("dm-verity verification failed")
	// ErrTooSmall: a data or hash device shorter than the parameters need.
	ErrTooSmall = errors.New("device too small")
	// ErrBlockRange: a block index outside the data (UpdateBlock,
	// VerifyBlock) or a block of the wrong length.
	ErrBlockRange = errors.New("block index or length out of range")
)

// BlockError reports the first block that failed verification. It matches
// ErrCorrupt with errors.Is.
type BlockError struct {
	// Hash is true for a hash block, false for a data block.
	Hash bool
	// Level is the tree level of a hash block (0 is the level that holds the
	// digests of the data blocks; Levels-1 is the top block). It is -1 for a
	// data block.
	Level int
	// Index is the data block number, or the index of the hash block within
	// its level.
	Index uint64
	// Offset is the byte offset of the block in its device (data device for
	// data blocks, hash device for hash blocks).
	Offset uint64
	// Root is true when the block was compared with the root hash itself
	// (the top hash block, or the only data block of a tree without levels):
	// either that block or the root hash is wrong.
	Root bool
}

func (e *BlockError) Error() string {
	var what string
	if e.Hash {
		what = fmt.Sprintf("hash block at level %d index %d (hash device byte offset %d)", e.Level, e.Index, e.Offset)
	} else {
		what = fmt.Sprintf("data block %d (data device byte offset %d)", e.Index, e.Offset)
	}
	if e.Root {
		return what + " does not match the root hash"
	}
	return what + " is corrupt: its hash does not match the tree"
}

// Is makes errors.Is(err, ErrCorrupt) true for a *BlockError.
func (e *BlockError) Is(target error) bool { return target == ErrCorrupt }

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidParams}, args...)...)
}

func unsupportedf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrUnsupported}, args...)...)
}

func badSuperblockf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadSuperblock}, args...)...)
}
