// Package vmassets fetches, verifies and caches what a QEMU guest of this
// project boots from: Debian's current stable cloud kernel and its modules,
// OVMF firmware, the systemd EFI stub, virt-firmware, ukify and the kernel
// headers for building out-of-tree modules (Fetch, FetchPackages,
// FetchKbuild; cached under ~/.cache/intact/vm). Every .deb is checked
// against the SHA-256 in the archive's signed index before it is unpacked.
//
// It holds no test code, so production commands that boot a VM (`intact
// host run`) use it directly; the VM test tier (package internal/vmtest)
// builds on it and re-exports its names.
package vmassets
