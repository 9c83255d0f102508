package linux

import (
	"errors"
	"fmt"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrClosed is returned when an FD is used after Close.
var ErrClosed = errors.New("linux: file descriptor already closed")

// FD owns a raw file descriptor. Close it exactly once; a leaked FD is closed
// by a cleanup when it becomes unreachable, so a forgotten descriptor never
// pins a loop or device-mapper device for the life of the process.
type FD struct {
	mu      sync.Mutex
	fd      int
	cleanup runtime.Cleanup
}

// NewFD takes ownership of fd.
func NewFD(fd int) *FD {
	f := &FD{fd: fd}
	f.cleanup = runtime.AddCleanup(f, func(fd int) { unix.Close(fd) }, fd)
	return f
}

// Open opens path with flags (O_CLOEXEC is always added) and returns an
// owning FD.
func Open(path string, flags int, perm uint32) (*FD, error) {
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC, perm)
	if err != nil {
		return nil, wrap(fmt.Sprintf("open %s", path), err)
	}
	return NewFD(fd), nil
}

// Int returns the raw descriptor, or -1 after Close. The FD keeps ownership.
func (f *FD) Int() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fd
}

// Close closes the descriptor. A second Close returns ErrClosed.
func (f *FD) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fd < 0 {
		return ErrClosed
	}
	f.cleanup.Stop()
	err := unix.Close(f.fd)
	f.fd = -1
	return wrap("close", err)
}

// Open flags the domain packages need.
const (
	O_RDONLY = unix.O_RDONLY
	O_RDWR   = unix.O_RDWR
	O_WRONLY = unix.O_WRONLY
	O_DIRECT = unix.O_DIRECT
	O_EXCL   = unix.O_EXCL
)
