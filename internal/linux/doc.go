// Package linux owns every raw syscall and ioctl intact makes: mounts,
// module loading, loop devices (LOOP_CONFIGURE and friends), the
// device-mapper control ioctls (struct dm_ioctl), kernel keyrings (add_key,
// keyctl), fs-verity (fsverity.go), xattrs (xattr.go), fallocate and
// sync_file_range for placing and writing back layer images (falloc.go),
// O_TMPFILE and linkat for output files (tmpfile.go) and file and block
// device sizes (size.go). What only the VM test tier's init calls (serial
// console modes, loopback up) is in the subpackage vmguest. No
// package outside internal/linux imports golang.org/x/sys/unix or calls a
// function of package syscall (internal/archtest); the domain packages
// (dm, loop, keyring, fsverity, ...) build their APIs on the thin wrappers
// here.
//
// Every wrapper returns an *Error that names the operation and wraps the
// errno, so callers test errors with errors.Is(err, linux.EBUSY) (or a
// package sentinel) rather than comparing errnos with ==.
package linux
