package linux

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// File space and writeback: fallocate(2) and sync_file_range(2).

// FALLOC_FL_INSERT_RANGE (include/uapi/linux/falloc.h) and
// SYNC_FILE_RANGE_WRITE (include/uapi/linux/fs.h).
const (
	FALLOC_FL_INSERT_RANGE = unix.FALLOC_FL_INSERT_RANGE // 0x20
	SYNC_FILE_RANGE_WRITE  = unix.SYNC_FILE_RANGE_WRITE  // 2
)

// Conn is a file whose descriptor can be borrowed without switching it to
// blocking mode (an *os.File, or a type embedding one).
type Conn interface {
	SyscallConn() (syscall.RawConn, error)
}

// InsertRange makes room for n bytes at offset off of the file: the bytes
// from off on move up by n and [off, off+n) becomes a hole that reads as
// zeros, without copying data (fallocate(2) with FALLOC_FL_INSERT_RANGE).
// off and n must be multiples of the filesystem's block size and off must
// be below the file size (EINVAL otherwise); filesystems without the
// operation (tmpfs, btrfs, ext4 without extents, ...) return EOPNOTSUPP.
// Dirty pages from off on are written back first (ext4 and xfs do that
// before they move extents).
func InsertRange(f Conn, off, n int64) error {
	return control(f, "fallocate FALLOC_FL_INSERT_RANGE", func(fd int) error {
		return unix.Fallocate(fd, FALLOC_FL_INSERT_RANGE, off, n)
	})
}

// FSBlockSize returns the block size of the filesystem holding the file
// (fstatfs f_bsize), the unit of InsertRange.
func FSBlockSize(f Conn) (int64, error) {
	var st unix.Statfs_t
	err := control(f, "fstatfs", func(fd int) error { return unix.Fstatfs(fd, &st) })
	if err != nil {
		return 0, err
	}
	return st.Bsize, nil
}

// StartWriteback starts writing the dirty pages of [off, off+n) of the
// file back to disk without waiting for the writes to finish
// (sync_file_range(2) with SYNC_FILE_RANGE_WRITE; it may wait for a free
// slot in the device's queue). It makes no data durable: a later fsync
// does, with less left to wait for.
func StartWriteback(f Conn, off, n int64) error {
	return control(f, "sync_file_range", func(fd int) error {
		return unix.SyncFileRange(fd, off, n, SYNC_FILE_RANGE_WRITE)
	})
}

// control runs fn with f's descriptor and wraps its errno as op.
func control(f Conn, op string, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return wrap(op, ferr)
}
