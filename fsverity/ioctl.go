package fsverity

import (
	"errors"
	"fmt"
	"os"

	"github.com/intact-project/intact/internal/linux"
)

// EnableOptions configures Enable. The zero value enables sha256 with
// 4096-byte blocks, no salt and no signature (`fsverity enable`'s defaults).
type EnableOptions struct {
	Params
	// Signature is an optional builtin signature (see Sign), checked by
	// the kernel against the .fs-verity keyring.
	Signature []byte
}

// Enable turns on fs-verity for f (FS_IOC_ENABLE_VERITY). f must be opened
// read-only and have no writers; the kernel builds the Merkle tree, which
// can take a while for large files. The file becomes immutable.
func Enable(f *os.File, opts EnableOptions) error {
	p, err := opts.Params.Normalize()
	if err != nil {
		return err
	}
	if len(opts.Signature) > MaxSignatureSize {
		return fmt.Errorf("%w: signature of %d bytes exceeds %d", ErrParams, len(opts.Signature), MaxSignatureSize)
	}
	var ioErr error
	err = control(f, func(fd int) {
		ioErr = linux.FsverityEnable(fd, uint32(p.Algorithm), uint32(p.BlockSize), p.Salt, opts.Signature)
	})
	if err == nil {
		err = ioErr
	}
	if err != nil {
		return fmt.Errorf("fsverity: enable %s: %w", f.Name(), classify(err))
	}
	return nil
}

// Measure returns the digest the kernel holds for a verity file
// (FS_IOC_MEASURE_VERITY); ErrNotVerity if verity is not enabled on it.
func Measure(f *os.File) (Digest, error) {
	var alg uint16
	var sum []byte
	var ioErr error
	err := control(f, func(fd int) { alg, sum, ioErr = linux.FsverityMeasure(fd) })
	if err == nil {
		err = ioErr
	}
	if err != nil {
		return Digest{}, fmt.Errorf("fsverity: measure %s: %w", f.Name(), classify(err))
	}
	d := Digest{Algorithm: HashAlgorithm(alg), Sum: sum}
	if !d.Algorithm.Valid() || len(sum) != d.Algorithm.Size() {
		return Digest{}, fmt.Errorf("%w: kernel reported algorithm %d with %d-byte digest", ErrMalformed, alg, len(sum))
	}
	return d, nil
}

// MetadataType selects what ReadMetadata reads.
type MetadataType uint64

// Metadata types of FS_IOC_READ_VERITY_METADATA.
const (
	MerkleTree         MetadataType = linux.FS_VERITY_METADATA_TYPE_MERKLE_TREE
	DescriptorMetadata MetadataType = linux.FS_VERITY_METADATA_TYPE_DESCRIPTOR
	SignatureMetadata  MetadataType = linux.FS_VERITY_METADATA_TYPE_SIGNATURE
)

// ReadMetadata reads all metadata of type typ from a verity file
// (FS_IOC_READ_VERITY_METADATA, Linux >= 5.12), at most limit bytes
// (ErrMalformed beyond). Reading the signature of a verity file that has
// none returns (nil, nil).
func ReadMetadata(f *os.File, typ MetadataType, limit int) ([]byte, error) {
	var out []byte
	buf := make([]byte, min(limit+1, 1<<16))
	for {
		var n int
		var ioErr error
		err := control(f, func(fd int) { n, ioErr = linux.FsverityReadMetadata(fd, uint64(typ), uint64(len(out)), buf) })
		if err == nil {
			err = ioErr
		}
		if err != nil {
			if typ == SignatureMetadata && errors.Is(err, linux.ENODATA) {
				return nil, nil
			}
			return nil, fmt.Errorf("fsverity: read metadata %d of %s: %w", typ, f.Name(), classify(err))
		}
		if n == 0 {
			return out, nil
		}
		out = append(out, buf[:n]...)
		if len(out) > limit {
			return nil, fmt.Errorf("%w: metadata %d of %s exceeds %d bytes", ErrMalformed, typ, f.Name(), limit)
		}
	}
}

// ReadDescriptor reads and parses the descriptor of a verity file.
func ReadDescriptor(f *os.File) (*Descriptor, error) {
	b, err := ReadMetadata(f, DescriptorMetadata, DescriptorSize)
	if err != nil {
		return nil, err
	}
	return ParseDescriptor(b)
}

// ReadSignature returns the builtin signature of a verity file, nil if it
// has none.
func ReadSignature(f *os.File) ([]byte, error) {
	return ReadMetadata(f, SignatureMetadata, MaxSignatureSize)
}

// control runs fn with f's descriptor without switching f to blocking
// mode (as f.Fd would).
func control(f *os.File, fn func(fd int)) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) { fn(int(fd)) })
}

// classify adds the package sentinels to errnos with a fixed meaning.
func classify(err error) error {
	switch {
	case errors.Is(err, linux.ENODATA):
		return fmt.Errorf("%w (%w)", ErrNotVerity, err)
	case errors.Is(err, linux.ENOTTY), errors.Is(err, linux.EOPNOTSUPP):
		return fmt.Errorf("%w (%w)", ErrNotSupported, err)
	}
	return err
}
