package linux

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fs-verity ioctls (include/uapi/linux/fsverity.h).
const (
	FS_IOC_ENABLE_VERITY        = unix.FS_IOC_ENABLE_VERITY        // 0x40806685
	FS_IOC_MEASURE_VERITY       = unix.FS_IOC_MEASURE_VERITY       // 0xc0046686
	FS_IOC_READ_VERITY_METADATA = unix.FS_IOC_READ_VERITY_METADATA // 0xc0286687

	FS_VERITY_METADATA_TYPE_MERKLE_TREE = unix.FS_VERITY_METADATA_TYPE_MERKLE_TREE
	FS_VERITY_METADATA_TYPE_DESCRIPTOR  = unix.FS_VERITY_METADATA_TYPE_DESCRIPTOR
	FS_VERITY_METADATA_TYPE_SIGNATURE   = unix.FS_VERITY_METADATA_TYPE_SIGNATURE

	// FS_VERITY_FL is the inode flag (FS_IOC_GETFLAGS, statx
	// STATX_ATTR_VERITY) of a verity file.
	FS_VERITY_FL = unix.FS_VERITY_FL
)

// fsverityEnableArg is struct fsverity_enable_arg (128 bytes).
type fsverityEnableArg = unix.FsverityEnableArg

// fsverityReadMetadataArg is struct fsverity_read_metadata_arg (40 bytes).
type fsverityReadMetadataArg struct {
	MetadataType uint64
	Offset       uint64
	Length       uint64
	BufPtr       uint64
	_            uint64
}

// Sizes the kernel ABI fixes; checked by tests.
const (
	sizeofFsverityEnableArg       = 128
	sizeofFsverityReadMetadataArg = 40
)

// FsverityEnable issues FS_IOC_ENABLE_VERITY on fd (which must be open
// read-only with no writers): hashAlg 1 (sha256) or 2 (sha512), blockSize a
// power of two, salt up to 32 bytes, sig an optional PKCS#7 builtin
// signature (at most 16128 bytes).
func FsverityEnable(fd int, hashAlg, blockSize uint32, salt, sig []byte) error {
	arg := fsverityEnableArg{
		Version:        1,
		Hash_algorithm: hashAlg,
		Block_size:     blockSize,
		Salt_size:      uint32(len(salt)),
		Sig_size:       uint32(len(sig)),
	}
	if len(salt) > 0 {
		arg.Salt_ptr = uint64(uintptr(unsafe.Pointer(&salt[0])))
	}
	if len(sig) > 0 {
		arg.Sig_ptr = uint64(uintptr(unsafe.Pointer(&sig[0])))
	}
	err := ioctlPtr(fd, FS_IOC_ENABLE_VERITY, unsafe.Pointer(&arg))
	runtime.KeepAlive(salt)
	runtime.KeepAlive(sig)
	return wrap("ioctl FS_IOC_ENABLE_VERITY", err)
}

// FsverityMeasure issues FS_IOC_MEASURE_VERITY on fd and returns the hash
// algorithm number and the file digest. ENODATA means the file is not a
// verity file.
func FsverityMeasure(fd int) (uint16, []byte, error) {
	const maxDigest = 64 // FS_VERITY_MAX_DIGEST_SIZE
	var buf struct {
		unix.FsverityDigest
		Digest [maxDigest]byte
	}
	buf.Size = maxDigest
	if err := ioctlPtr(fd, FS_IOC_MEASURE_VERITY, unsafe.Pointer(&buf)); err != nil {
		return 0, nil, wrap("ioctl FS_IOC_MEASURE_VERITY", err)
	}
	if int(buf.Size) > maxDigest {
		return 0, nil, fmt.Errorf("ioctl FS_IOC_MEASURE_VERITY: digest size %d", buf.Size)
	}
	return buf.Algorithm, append([]byte{}, buf.Digest[:buf.Size]...), nil
}

// FsverityReadMetadata issues FS_IOC_READ_VERITY_METADATA: it reads up to
// len(buf) bytes of the metadata of type typ (Merkle tree, descriptor or
// signature) starting at offset, and returns how many it read (0 at the
// end). ENODATA for a signature means the file has none.
func FsverityReadMetadata(fd int, typ, offset uint64, buf []byte) (int, error) {
	if len(buf) == 0 {
		return 0, nil
	}
	arg := fsverityReadMetadataArg{
		MetadataType: typ,
		Offset:       offset,
		Length:       uint64(len(buf)),
		BufPtr:       uint64(uintptr(unsafe.Pointer(&buf[0]))),
	}
	n, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(FS_IOC_READ_VERITY_METADATA), uintptr(unsafe.Pointer(&arg)))
	runtime.KeepAlive(buf)
	if e != 0 {
		return 0, wrap("ioctl FS_IOC_READ_VERITY_METADATA", e)
	}
	return int(n), nil
}
