package linux

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrNotSizable: FileSize was given something that has no size in bytes to
// read or write (a directory, a character device, a FIFO, a socket).
var ErrNotSizable = errors.New("not a regular file or a block device")

// FileSize returns the size in bytes of a regular file (fstat) or a block
// device (ioctl BLKGETSIZE64; fstat says 0) open as f. Anything else fails
// with ErrNotSizable: a directory would otherwise seek to 2^63-1 on ext4.
func FileSize(f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	m := st.Mode()
	switch {
	case m.IsRegular():
		return st.Size(), nil
	case m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0:
		var size uint64
		err := control(f, "ioctl BLKGETSIZE64 "+f.Name(), func(fd int) error {
			return ioctlPtr(fd, unix.BLKGETSIZE64, unsafePointer(&size))
		})
		if err != nil {
			return 0, err
		}
		return int64(size), nil
	}
	what := "special file"
	switch {
	case m.IsDir():
		what = "directory"
	case m&os.ModeCharDevice != 0:
		what = "character device"
	case m&os.ModeNamedPipe != 0:
		what = "FIFO"
	case m&os.ModeSocket != 0:
		what = "socket"
	}
	return 0, fmt.Errorf("%s is a %s, %w", f.Name(), what, ErrNotSizable)
}
