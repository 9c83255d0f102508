package linux

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Unnamed temporary files: open(2) with O_TMPFILE and linkat(2).

// OpenTmpfile creates an unnamed regular file in directory dir, open for
// reading and writing (open(2) with O_TMPFILE): it has no name until
// LinkTmpfile gives it one, so a process killed before that leaves nothing
// behind. perm is subject to the umask. Filesystems without O_TMPFILE
// answer EOPNOTSUPP (older kernels EISDIR or EINVAL); callers fall back to
// a named temporary file. name becomes the *os.File's Name.
func OpenTmpfile(dir, name string, perm os.FileMode) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_RDWR|unix.O_TMPFILE|unix.O_CLOEXEC, uint32(perm.Perm()))
	if err != nil {
		return nil, wrap("open O_TMPFILE "+dir, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// LinkTmpfile gives a file made by OpenTmpfile the name path (linkat(2)
// through /proc/self/fd, which needs no privilege; with AT_EMPTY_PATH when
// /proc is not mounted, which needs CAP_DAC_READ_SEARCH). It fails with
// EEXIST when path exists: linkat never replaces a name.
func LinkTmpfile(f Conn, path string) error {
	return control(f, "linkat "+path, func(fd int) error {
		err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW)
		if err == unix.ENOENT {
			if _, serr := os.Stat("/proc/self/fd"); serr != nil {
				err = unix.Linkat(fd, "", unix.AT_FDCWD, path, unix.AT_EMPTY_PATH)
			}
		}
		return err
	})
}
