package linux

import (
	"bytes"

	"golang.org/x/sys/unix"
)

// maxXattrList and maxXattrValue bound the buffers of the xattr wrappers
// (the kernel's own limits: XATTR_LIST_MAX and XATTR_SIZE_MAX).
const (
	maxXattrList  = 64 << 10
	maxXattrValue = 64 << 10
)

// Lxattrs returns the extended attributes of path without following a
// symlink (llistxattr + lgetxattr). Filesystems without xattr support give
// an empty map.
func Lxattrs(path string) (map[string][]byte, error) {
	// Most files have no xattrs: ask for the list's size first, so that
	// walking a tree does not allocate two 64 KiB buffers per file.
	size, err := unix.Llistxattr(path, nil)
	if err == unix.ENOTSUP || err == unix.EOPNOTSUPP || (err == nil && size == 0) {
		return map[string][]byte{}, nil
	}
	buf := make([]byte, maxXattrList)
	n, err := unix.Llistxattr(path, buf)
	if err == unix.ENOTSUP || err == unix.EOPNOTSUPP {
		return map[string][]byte{}, nil
	}
	if err != nil {
		return nil, wrap("llistxattr "+path, err)
	}
	out := map[string][]byte{}
	val := make([]byte, maxXattrValue)
	for _, name := range bytes.Split(buf[:n], []byte{0}) {
		if len(name) == 0 {
			continue
		}
		m, err := unix.Lgetxattr(path, string(name), val)
		if err == unix.ENODATA {
			continue
		}
		if err != nil {
			return nil, wrap("lgetxattr "+path+" "+string(name), err)
		}
		out[string(name)] = append([]byte{}, val[:m]...)
	}
	return out, nil
}

// Lsetxattr sets an extended attribute of path itself (not following a
// symlink).
func Lsetxattr(path, name string, value []byte) error {
	return wrap("lsetxattr "+path+" "+name, unix.Lsetxattr(path, name, value, 0))
}
