// Package host builds immutable host images: a GPT disk whose EFI System
// Partition holds a Secure Boot signed UKI (package uki, package efi)
// with intact-init in its initramfs, and whose root, root-verity and
// root-verity-sig partitions (Discoverable Partitions Specification types)
// hold a deterministic EROFS root (package erofs), its dm-verity tree with
// superblock (package verity) and the JSON with the PKCS#7 signature of
// the root hash (package pkcs7). The initramfs carries the expected root
// hash, the verity parameters and a signed IPE policy (package ipe); the
// init (cmd/intact-init, configuration in host/bootcfg) refuses any other
// root. Build writes the disk, the UKI, the root image and tree and a
// manifest; Run boots a disk under QEMU with OVMF Secure Boot.
//
// The same specification and inputs (and SOURCE_DATE_EPOCH) give the same
// disk image byte for byte. docs/host.md describes the layout, the boot
// sequence and the specification.
package host
