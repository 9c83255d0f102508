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
// Streaming: for ProfileFull the image is written once, in order, and
// hashed as it is written; only block 0 (the EROFS superblock) is patched at
// the end (verity.Builder.UpdateBlock). For ProfileTarIndex the metadata must
// precede the tar but is known only after the whole tar was read, so the
// decompressed tar goes to an unlinked spill file in Options.TempDir while
// the metadata is built; then metadata and tar are written to the output and
// hashed as they are written. The output is never read back. Memory is
// bounded: chunked buffers, per-entry metadata (capped by MaxEntries), and
// verity level-0 digests spilled to disk beyond 4 MiB.
//
// docs/formats.md (sections EROFS and Layer profiles) pins both byte for byte.
package layer
