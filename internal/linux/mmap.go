package linux

import (
	"os"

	"golang.org/x/sys/unix"
)

// MapReadOnly maps n bytes of the file f from offset off (a multiple of
// the page size) read-only and shared, with its page tables populated up
// front (mmap(2) with MAP_POPULATE), so reading it costs no page fault per
// page. The mapping holds page-cache pages: they count in the process's
// resident set until Unmap.
func MapReadOnly(f *os.File, off int64, n int) ([]byte, error) {
	var b []byte
	err := control(f, "mmap "+f.Name(), func(fd int) error {
		var err error
		b, err = unix.Mmap(fd, off, n, unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
		return err
	})
	return b, err
}

// Unmap removes a mapping made by MapReadOnly (munmap(2)).
func Unmap(b []byte) error { return wrap("munmap", unix.Munmap(b)) }

// PageSize is the size of a memory page.
func PageSize() int { return os.Getpagesize() }
