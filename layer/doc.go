// Package layer converts an OCI layer blob (a tar stream, plain, gzip or
// zstd, detected from its bytes) into a dm-verity protected EROFS image in
// one streaming pass: decompress -> EROFS (package erofs) -> dm-verity tree
// (package verity), hashing the output as it is written and appending the
// tree. It owns the conversion profiles:
//
//   - ProfileFull: a self-contained EROFS image (4 KiB blocks, data copied
//     in), dm-verity sha256 4096/4096 with the fixed salt FullSalt, tree
//     appended at the end of the image, no verity superblock.
//   - ProfileTarIndex: the Azure Linux / containerd interop layout: EROFS
//     metadata (512-byte blocks) ‖ the decompressed tar ‖ zeros to 4 KiB,
//     dm-verity sha256 512/512 with a salt of 32 zero bytes, UUIDs derived
//     from the layer digest; optionally a separate tree file with a
//     veritysetup superblock at offset 0.
//
// Streaming: the input is read and hashed (digest) in one goroutine,
// decompressed in another, and the decompressed stream is fanned out in
// 1 MiB chunks to goroutines that hash it (diff_id; for tar-index also the
// tar's verity level 0) and write it (tar-index), while the caller's
// goroutine parses the tar and writes the EROFS image; verity hashing runs
// on every core (see pipeline.go).
//
// For ProfileFull the image is written once, in order, and hashed as it is
// written; only block 0 (the EROFS superblock) is patched at the end
// (verity.Builder.UpdateBlock). For ProfileTarIndex the metadata must
// precede the tar but is known only after the whole tar was read. The tar's
// 512-byte blocks are hashed while it streams (a verity.Builder of its
// own) and the tar is written once, straight into the output at offset 0;
// at the end room for the metadata is made in front of it, with
// FALLOC_FL_INSERT_RANGE when the metadata size is a multiple of the
// filesystem block size (ext4, xfs), else by moving the tar up within the
// output while its pages are still cached. The tree's level 0 is then the
// metadata's digests, the tar's (verity.Builder.Digests and WriteDigests,
// computed while the tar is moved) and those of the zeros up to 4 KiB.
// Without an output (out nil: metadata and tree only, what an image
// signer publishes) the tar is hashed and dropped. An output that cannot be
// read back gets the tar through an unlinked spill file in
// Options.TempDir. Memory is bounded: a fixed number of chunks,
// per-entry metadata (capped by MaxEntries), and verity level-0 digests
// spilled to disk beyond 4 MiB.
//
// docs/formats.md (sections EROFS and Layer profiles) pins both byte for byte.
package layer
