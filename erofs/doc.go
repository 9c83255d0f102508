// Package erofs owns the EROFS on-disk format as intact writes and reads it:
// an uncompressed, deterministic EROFS writer fed from OCI layer tar streams
// (or a directory tree), with OCI/overlayfs layer semantics, in two layouts:
//
//   - LayoutFull: a self-contained image with 4 KiB blocks; file data is
//     copied into the image in stream order (blocks 1..D), and the metadata
//     (inode table with inline directory/symlink tails, directory blocks,
//     shared xattrs) follows the data, so the image can be produced in one
//     streaming pass with only block 0 (the superblock) written last.
//   - LayoutTarIndex: metadata only, 512-byte blocks; regular files are
//     chunk-based inodes whose chunk indexes point (device 1) into the
//     uncompressed tar that is placed right behind the metadata (device
//     slot mapped_blkaddr), the interop layout of containerd's tar index mode.
//
// The package also has a reader (FS, an fs.FS over an image of either layout
// with access to xattrs, device numbers, nlink and inode identity) that parses
// untrusted bytes with every offset bounds-checked, every allocation capped by
// the image size and fixed limits, and directory loops or directory hardlinks
// (a ".." that does not name the directory a subdirectory was found in)
// rejected as ErrCorrupt, so that walks always end.
//
// The exact bytes are documented in docs/formats.md (section EROFS); the
// kernel interface is fs/erofs of Linux 6.12 and newer.
package erofs
