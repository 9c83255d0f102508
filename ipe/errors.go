package ipe

import (
	"errors"
	"fmt"
	"syscall"
)

// Sentinel errors of the package. Deployment errors also wrap the errno the
// kernel returned, so errors.Is(err, syscall.ESTALE) works as well.
var (
	// ErrNotFound: no policy of that name is loaded (or securityfs has no
	// ipe directory).
	ErrNotFound = errors.New("ipe: no such policy")
	// ErrExists: a policy of that name is already loaded (EEXIST).
	ErrExists = errors.New("ipe: a policy of that name is already loaded")
	// ErrStaleVersion: the new version is not newer than the loaded or
	// active one (the kernel's ESTALE for update, EINVAL for activate).
	ErrStaleVersion = errors.New("ipe: policy version is not newer")
	// ErrActive: the active policy cannot be deleted (EPERM).
	ErrActive = errors.New("ipe: policy is active")
	// ErrNameMismatch: update with a policy of another name (EINVAL).
	ErrNameMismatch = errors.New("ipe: policy name differs")
	// ErrNoIPE: the securityfs root has no ipe directory (IPE not in the
	// kernel's LSM list, or securityfs not mounted).
	ErrNoIPE = errors.New("ipe: IPE is not available at this securityfs root")
	// ErrNotSigned: the blob is not a PKCS#7 SignedData with the policy
	// attached.
	ErrNotSigned = errors.New("ipe: not a signed policy")
	// ErrAuditRecord: a line is not an IPE audit record.
	ErrAuditRecord = errors.New("ipe: not an IPE audit record")
)

// errnoNames holds the errnos the IPE write paths can return.
var errnoNames = map[syscall.Errno]string{
	syscall.EPERM:        "EPERM",
	syscall.ENOENT:       "ENOENT",
	syscall.EIO:          "EIO",
	syscall.ENOMEM:       "ENOMEM",
	syscall.EACCES:       "EACCES",
	syscall.EFAULT:       "EFAULT",
	syscall.EEXIST:       "EEXIST",
	syscall.EINVAL:       "EINVAL",
	syscall.ENOSPC:       "ENOSPC",
	syscall.EROFS:        "EROFS",
	syscall.ERANGE:       "ERANGE",
	syscall.ENAMETOOLONG: "ENAMETOOLONG",
	syscall.ENODATA:      "ENODATA",
	syscall.ENOPKG:       "ENOPKG",
	syscall.EBADMSG:      "EBADMSG",
	syscall.EOPNOTSUPP:   "EOPNOTSUPP",
	syscall.ESTALE:       "ESTALE",
	syscall.ENOKEY:       "ENOKEY",
	syscall.EKEYEXPIRED:  "EKEYEXPIRED",
	syscall.EKEYREVOKED:  "EKEYREVOKED",
	syscall.EKEYREJECTED: "EKEYREJECTED",
	syscall.E2BIG:        "E2BIG",
	syscall.EMSGSIZE:     "EMSGSIZE",
	syscall.ENOTDIR:      "ENOTDIR",
	syscall.EISDIR:       "EISDIR",
	syscall.EBUSY:        "EBUSY",
}

// ErrnoName returns the symbolic name of an errno (EBADMSG, ESTALE, ...).
func ErrnoName(e syscall.Errno) string {
	if n, ok := errnoNames[e]; ok {
		return n
	}
	return fmt.Sprintf("errno %d", int(e))
}

// ErrnoByName returns the errno with the symbolic name n.
func ErrnoByName(n string) (syscall.Errno, bool) {
	for e, name := range errnoNames {
		if name == n {
			return e, true
		}
	}
	return 0, false
}
