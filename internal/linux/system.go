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

// Unmount flags.
const MNT_DETACH = unix.MNT_DETACH

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

// InitModule loads a kernel module from memory (init_module(2)). Unlike
// FinitModule the kernel sees no file: LSMs such as IPE evaluate the load
// without file properties, so rules that trust dm-verity devices do not
// match it.
func InitModule(image []byte, params string) error {
	return wrap("init_module", unix.InitModule(image, params))
}

// PowerOff syncs and powers the machine off (reboot(2) with
// LINUX_REBOOT_CMD_POWER_OFF). It returns only on failure. intact-init calls
// it when a host fails closed; the VM tier's init when the test is done.
func PowerOff() error {
	unix.Sync()
	return wrap("reboot(POWER_OFF)", unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF))
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

// ErrnoName returns the symbolic name of an errno ("EACCES"), or "" for an
// unknown one.
func ErrnoName(e Errno) string { return unix.ErrnoName(e) }

// DropCaches writes back dirty pages and drops clean caches (page cache,
// dentries and inodes), so that the next read of a file goes to its device.
func DropCaches() error {
	unix.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200)
}

// Mknod creates a device node (mknod(2)).
func Mknod(path string, mode uint32, dev uint64) error {
	return wrap("mknod "+path, unix.Mknod(path, mode, int(dev)))
}

// ClearImmutable clears the immutable attribute (FS_IMMUTABLE_FL, chattr
// -i) of the open file f, if set. efivarfs marks most variables immutable.
func ClearImmutable(f *os.File) error {
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		return wrap("ioctl FS_IOC_GETFLAGS "+f.Name(), err)
	}
	if flags&fsImmutableFL == 0 {
		return nil
	}
	return wrap("ioctl FS_IOC_SETFLAGS "+f.Name(), unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags&^fsImmutableFL)))
}

// fsImmutableFL is FS_IMMUTABLE_FL from linux/fs.h.
const fsImmutableFL = 0x00000010

// MS_MOVE moves a mount (mount(2) with MS_MOVE).
const MS_MOVE = unix.MS_MOVE

// Chroot wraps chroot(2).
func Chroot(path string) error { return wrap("chroot "+path, unix.Chroot(path)) }

// Exec replaces the process image (execve(2)); it returns only on failure.
func Exec(path string, argv, env []string) error {
	return wrap("execve "+path, unix.Exec(path, argv, env))
}

// Halt syncs and halts the machine (reboot(2) with LINUX_REBOOT_CMD_HALT).
// It returns only on failure.
func Halt() error {
	unix.Sync()
	return wrap("reboot(HALT)", unix.Reboot(unix.LINUX_REBOOT_CMD_HALT))
}

// SameDevice reports whether two paths are on the same file system
// (st_dev), without following symlinks.
func SameDevice(a, b string) (bool, error) {
	var sa, sb unix.Stat_t
	if err := unix.Lstat(a, &sa); err != nil {
		return false, wrap("lstat "+a, err)
	}
	if err := unix.Lstat(b, &sb); err != nil {
		return false, wrap("lstat "+b, err)
	}
	return sa.Dev == sb.Dev, nil
}

// Reboot syncs and restarts the machine. It returns only on failure.
func Reboot() error {
	unix.Sync()
	return wrap("reboot(RESTART)", unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART))
}
