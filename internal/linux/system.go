package linux

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Mount flags.
const (
	MS_RDONLY   = unix.MS_RDONLY
	MS_NOSUID   = unix.MS_NOSUID
	MS_NODEV    = unix.MS_NODEV
	MS_NOEXEC   = unix.MS_NOEXEC
	MS_RELATIME = unix.MS_RELATIME
)

// Mount wraps mount(2).
func Mount(source, target, fstype string, flags uintptr, data string) error {
	return wrap(fmt.Sprintf("mount %s on %s (%s)", source, target, fstype),
		unix.Mount(source, target, fstype, flags, data))
}

// Unmount wraps umount2(2).
func Unmount(target string, flags int) error {
	return wrap("umount "+target, unix.Unmount(target, flags))
}

// ModuleInitCompressedFile asks finit_module to decompress the module in the
// kernel (CONFIG_MODULE_DECOMPRESS).
const ModuleInitCompressedFile = unix.MODULE_INIT_COMPRESSED_FILE

// FinitModule loads the kernel module in f with the given parameters.
func FinitModule(f *os.File, params string, flags int) error {
	return wrap("finit_module "+f.Name(), unix.FinitModule(int(f.Fd()), params, flags))
}

// Mkdev makes a device number from major and minor.
func Mkdev(major, minor uint32) uint64 { return unix.Mkdev(major, minor) }

// Major and Minor split a device number.
func Major(dev uint64) uint32 { return unix.Major(dev) }

// Minor splits a device number.
func Minor(dev uint64) uint32 { return unix.Minor(dev) }

// Uname returns the kernel release (uname -r).
func Uname() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", wrap("uname", err)
	}
	return unix.ByteSliceToString(u.Release[:]), nil
}

// Stat returns the device number (st_rdev) and mode of path.
func Stat(path string) (rdev uint64, mode uint32, err error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, 0, wrap("stat "+path, err)
	}
	return st.Rdev, st.Mode, nil
}

// Mode bits of Stat.
const (
	S_IFMT  = unix.S_IFMT
	S_IFBLK = unix.S_IFBLK
)

// DeleteModule unloads the kernel module name (delete_module(2), O_NONBLOCK).
func DeleteModule(name string) error {
	return wrap("delete_module "+name, unix.DeleteModule(name, unix.O_NONBLOCK))
}

// Sync flushes file system buffers.
func Sync() { unix.Sync() }

// Flock takes an exclusive advisory lock on f, waiting for it (flock(2)).
// Closing f releases it.
func Flock(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			return wrap("flock "+f.Name(), err)
		}
	}
}
