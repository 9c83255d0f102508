package linux

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Errno is a kernel error number. Wrapped in *Error by every wrapper here;
// match it with errors.Is(err, linux.EIO).
type Errno = unix.Errno

// Errnos the domain packages test for.
const (
	EPERM        = unix.EPERM
	ENOENT       = unix.ENOENT
	EIO          = unix.EIO
	ENXIO        = unix.ENXIO
	EAGAIN       = unix.EAGAIN
	EACCES       = unix.EACCES
	EBUSY        = unix.EBUSY
	EEXIST       = unix.EEXIST
	ENODEV       = unix.ENODEV
	EINVAL       = unix.EINVAL
	ENOSPC       = unix.ENOSPC
	ENOTTY       = unix.ENOTTY
	ENOSYS       = unix.ENOSYS
	EOPNOTSUPP   = unix.EOPNOTSUPP
	EBADMSG      = unix.EBADMSG
	ENODATA      = unix.ENODATA
	ENOKEY       = unix.ENOKEY
	EKEYREJECTED = unix.EKEYREJECTED
	EKEYREVOKED  = unix.EKEYREVOKED
	EKEYEXPIRED  = unix.EKEYEXPIRED
	ESTALE       = unix.ESTALE
	ENOMEM       = unix.ENOMEM
	EMSGSIZE     = unix.EMSGSIZE
	EROFS        = unix.EROFS
	E2BIG        = unix.E2BIG
	ENOEXEC      = unix.ENOEXEC
	ENOPKG       = unix.ENOPKG
)

// Error is a failed syscall or ioctl: the operation and its errno.
type Error struct {
	Op    string // e.g. "ioctl DM_TABLE_LOAD", "finit_module"
	Errno Errno
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %v", e.Op, e.Errno) }

// Unwrap returns the errno, so errors.Is(err, linux.EBUSY) and
// errors.Is(err, fs.ErrNotExist) work.
func (e *Error) Unwrap() error { return e.Errno }

// wrap turns a raw error from x/sys/unix into an *Error (nil stays nil).
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if errno, ok := err.(unix.Errno); ok {
		return &Error{Op: op, Errno: errno}
	}
	return fmt.Errorf("%s: %w", op, err)
}
