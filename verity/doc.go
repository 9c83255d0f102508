// Package verity owns the dm-verity on-disk format: the hash tree, the
// optional 512-byte verity superblock (the one veritysetup writes), and the
// parameter string of the kernel's "verity" device-mapper target. Its output
// is byte-compatible with `veritysetup format` (cryptsetup lib/verity), and
// every tree it accepts is one the kernel's drivers/md/dm-verity-target.c
// accepts. It does not talk to the kernel: device-mapper, loop devices and
// keyrings live in other packages; root-hash signatures live in pkcs7.
//
// # Parameters and layout
//
// [Params] describes a tree exactly as veritysetup's options and the
// superblock do: hash type (format 1 "normal" or 0 "Chrome OS"), hash
// algorithm (sha256, sha512; sha1 for reading existing trees only), data and
// hash block sizes (powers of two from 512 to 4096, any combination), the
// number of data blocks, salt (0 to 256 bytes), superblock UUID, whether a
// superblock precedes the tree, and the hash offset: the byte position in the
// hash device where the superblock (or, without one, the tree) starts.
// [DefaultParams] returns veritysetup's defaults except the salt, which the
// caller chooses. [Params.Validate] reports bad parameters as one clear
// error; [Params.Layout] computes the number of levels, the hash start block
// that goes into the dm table, where each level lives and how big the hash
// area is.
//
// The tree on the hash device, from the hash offset on:
//
//	[superblock, 512 bytes, zero-padded to a hash block]  (unless NoSuperblock)
//	level Levels-1 (the single top block) ... level 1, level 0
//
// Level 0 holds one digest per data block, level i+1 one digest per hash
// block of level i. A node is H(salt ‖ block) in format 1 and H(block ‖ salt)
// in format 0. Format 1 pads every digest slot to a power of two; format 0
// packs digests. The root hash is the node of the top block (or of the only
// data block, when there is one data block and no levels).
//
// # Trailing partial block
//
// The kernel maps whole data blocks only. This package treats data whose size
// is not a multiple of the data block size as if it were zero-padded to the
// next block boundary: DataBlocks is rounded up and the last block is hashed
// with zeros appended. The data device must then really be that long (hold
// the zeros) for the kernel to read it; when the tree is appended to the data
// at a hash offset at or beyond the padded end, that holds automatically
// (bytes between the end of the data and the tree read as zeros). veritysetup
// instead ignores a trailing partial block (it hashes floor(size/block)
// blocks); pass DataBlocks explicitly to reproduce that.
//
// # Building
//
// [Builder] is the streaming tree builder: data goes in once through Write
// (or ReadFrom, which io.Copy uses), in any chunk sizes, without knowing the
// total size up front. Level 0 is hashed as the data arrives, in parallel on
// every core (see [Options]), and its digests are kept in memory up to
// a limit and then spilled to an unlinked temporary file, so memory does not
// grow with the input. [Builder.UpdateBlock] replaces an already-written
// block (for example an EROFS superblock patched at the end).
// [Builder.Digests] and [Builder.WriteDigests] move level-0 digests from one
// Builder to another, so a tree can be assembled from parts hashed
// separately (a tar hashed while it streams, placed behind metadata known
// only at the end). [Builder.Finish] computes the upper levels in one
// streaming pass and writes the whole hash
// area (superblock optional) to an io.WriterAt at a given offset, holding only
// one hash block per level in memory, and returns the root hash and the final
// Params. [Format] is the file-based path: it hashes an io.ReaderAt of known
// size; the calling goroutine reads batches of blocks and every core hashes
// them (a [Mapped] source, such as a memory-mapped file, is hashed in place
// without copying). [CopyTree] places an existing tree in another layout (for example a tree
// appended to the data without superblock, copied to a separate hash file
// with a superblock at offset 0).
//
// SHA-256 trees are hashed several blocks at a time where the CPU allows it:
// 16 blocks per instruction stream with AVX-512, 2 interleaved with the SHA
// extensions, else crypto/sha256 one block at a time.
//
// # Verifying
//
// [Verify] checks data and hash devices against a root hash the way
// `veritysetup verify` does and returns a [*BlockError] that names the first
// bad block (a hash block at some level, checked top-down, or a data block).
// [Verifier] checks single data blocks for a reader, as the kernel does on
// each read: VerifyBlock(index, data) hashes the block and walks up the tree,
// caching hash blocks it has verified.
//
// # Superblock and table
//
// [Params.MarshalSuperblock], [ParseSuperblock] and [ReadSuperblock] handle
// the 512-byte little-endian superblock; parsing treats its bytes as
// untrusted (magic, version, hash type, algorithm, block sizes, salt length
// and sizes that overflow are all checked). [Table] builds the dm table
// line that `veritysetup open` loads, including the optional arguments
// (corruption and error modes, ignore_zero_blocks, check_at_most_once,
// try_verify_in_tasklet, FEC and root_hash_sig_key_desc) in cryptsetup's
// order.
//
// Errors wrap the package's sentinels ([ErrInvalidParams],
// [ErrUnsupported], [ErrBadSuperblock], [ErrCorrupt], [ErrTooSmall],
// [ErrBlockRange]) so callers can test them with errors.Is.
package verity
