// Package linux owns every raw syscall and ioctl intact makes: mounts,
// module loading, reboot, terminal modes, loop devices (LOOP_CONFIGURE and
// friends), the device-mapper control ioctls (struct dm_ioctl), kernel
// keyrings (add_key, keyctl), fs-verity (fsverity.go), xattrs (xattr.go) and
// fallocate and sync_file_range for placing and writing back layer images
// (falloc.go). No other package
// imports golang.org/x/sys/unix; the domain packages (dm, loop, keyring,
// fsverity, ...) build their APIs on the thin wrappers here.
//
// Every wrapper returns an *Error that names the operation and wraps the
// errno, so callers test errors with errors.Is(err, linux.EBUSY) (or a
// package sentinel) rather than comparing errnos with ==.
package linux
