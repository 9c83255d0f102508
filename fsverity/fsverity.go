// Package fsverity owns the fs-verity formats and kernel interface
// (Documentation/filesystems/fsverity.rst, include/uapi/linux/fsverity.h):
// the file digest (the hash of the 256-byte fsverity_descriptor over the
// Merkle tree root), the builtin-signature payload and its PKCS#7 signature,
// and the FS_IOC_ENABLE_VERITY, FS_IOC_MEASURE_VERITY and
// FS_IOC_READ_VERITY_METADATA ioctls.
//
// Digests equal what `fsverity digest` (fsverity-utils) prints for every
// hash algorithm, block size from 1 KiB to 64 KiB and salt; they are
// computed streaming, with memory bounded by one block per tree level plus
// a fixed read buffer, and the data blocks are hashed in parallel.
// Signatures equal `fsverity sign`'s: a detached PKCS#7 SignedData without
// certificates or signed attributes, digest algorithm = the file's.
package fsverity

import (
	"crypto"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"
)

// Sentinel errors.
var (
	// ErrParams: an unsupported algorithm, block size or salt.
	ErrParams = errors.New("fsverity: invalid parameters")
	// ErrMalformed: a digest string or descriptor does not parse.
	ErrMalformed = errors.New("fsverity: malformed")
	// ErrNotVerity: the file does not have fs-verity enabled.
	ErrNotVerity = errors.New("not a verity file")
	// ErrNotSupported: the filesystem or kernel lacks fs-verity.
	ErrNotSupported = errors.New("fs-verity not supported by this filesystem or kernel")
)

// HashAlgorithm is an fs-verity hash algorithm number (FS_VERITY_HASH_ALG_*).
type HashAlgorithm uint8

// The algorithms fs-verity defines.
const (
	SHA256 HashAlgorithm = 1
	SHA512 HashAlgorithm = 2
)

// ParseHashAlgorithm maps "sha256" / "sha512" to the algorithm.
func ParseHashAlgorithm(name string) (HashAlgorithm, error) {
	switch name {
	case "sha256":
		return SHA256, nil
	case "sha512":
		return SHA512, nil
	}
	return 0, fmt.Errorf("%w: hash algorithm %q (sha256 or sha512)", ErrParams, name)
}

// String is the name fsverity-utils and the kernel use ("sha256").
func (a HashAlgorithm) String() string {
	switch a {
	case SHA256:
		return "sha256"
	case SHA512:
		return "sha512"
	}
	return fmt.Sprintf("alg%d", uint8(a))
}

// Valid reports whether a is SHA256 or SHA512.
func (a HashAlgorithm) Valid() bool { return a == SHA256 || a == SHA512 }

// Size is the digest size in bytes.
func (a HashAlgorithm) Size() int { return a.CryptoHash().Size() }

// CryptoHash is the corresponding crypto.Hash.
func (a HashAlgorithm) CryptoHash() crypto.Hash {
	if a == SHA512 {
		return crypto.SHA512
	}
	return crypto.SHA256
}

func (a HashAlgorithm) new() hash.Hash {
	if a == SHA512 {
		return sha512.New()
	}
	return sha256.New()
}

// blockSize is the hash function's input block size, to which the salt is
// zero-padded.
func (a HashAlgorithm) blockSize() int {
	if a == SHA512 {
		return sha512.BlockSize
	}
	return sha256.BlockSize
}

// Limits of the format (and of the kernel, Linux >= 6.3 for block sizes
// other than the page size).
const (
	MinBlockSize     = 1024
	MaxBlockSize     = 65536
	DefaultBlockSize = 4096
	MaxSaltSize      = 32
	// MaxSignatureSize is the kernel's limit on a builtin signature
	// (FS_VERITY_MAX_SIGNATURE_SIZE).
	MaxSignatureSize = 16128
)

// Params are the tree parameters of a verity file. The zero value means
// sha256, 4096-byte blocks, no salt: the defaults of `fsverity digest` and
// `fsverity enable`.
type Params struct {
	Algorithm HashAlgorithm
	BlockSize int
	Salt      []byte
}

// Normalize fills in defaults and validates p.
func (p Params) Normalize() (Params, error) {
	if p.Algorithm == 0 {
		p.Algorithm = SHA256
	}
	if p.BlockSize == 0 {
		p.BlockSize = DefaultBlockSize
	}
	if !p.Algorithm.Valid() {
		return p, fmt.Errorf("%w: hash algorithm %d", ErrParams, p.Algorithm)
	}
	if p.BlockSize < MinBlockSize || p.BlockSize > MaxBlockSize || p.BlockSize&(p.BlockSize-1) != 0 {
		return p, fmt.Errorf("%w: block size %d (a power of two from %d to %d)", ErrParams, p.BlockSize, MinBlockSize, MaxBlockSize)
	}
	if len(p.Salt) > MaxSaltSize {
		return p, fmt.Errorf("%w: salt of %d bytes (at most %d)", ErrParams, len(p.Salt), MaxSaltSize)
	}
	return p, nil
}

func (p Params) logBlockSize() uint8 {
	n := uint8(0)
	for 1<<n < p.BlockSize {
		n++
	}
	return n
}

// Digest is an fs-verity file digest.
type Digest struct {
	Algorithm HashAlgorithm
	Sum       []byte
}

// String formats the digest as `fsverity digest` does: "sha256:<hex>".
func (d Digest) String() string { return d.Algorithm.String() + ":" + hex.EncodeToString(d.Sum) }

// ParseDigest parses "sha256:<hex>" or "sha512:<hex>" (hex in either case).
func ParseDigest(s string) (Digest, error) {
	name, h, ok := strings.Cut(s, ":")
	if !ok {
		return Digest{}, fmt.Errorf("%w: digest %q is not ALG:HEX", ErrMalformed, s)
	}
	alg, err := ParseHashAlgorithm(name)
	if err != nil {
		return Digest{}, err
	}
	sum, err := hex.DecodeString(h)
	if err != nil || len(sum) != alg.Size() {
		return Digest{}, fmt.Errorf("%w: %s digest needs %d hex characters", ErrMalformed, alg, 2*alg.Size())
	}
	return Digest{Algorithm: alg, Sum: sum}, nil
}

// SignedPayload is what a builtin signature signs (struct
// fsverity_formatted_digest): "FSVerity", le16 algorithm, le16 digest size,
// digest. `fsverity digest --for-builtin-sig` prints it in hex.
func (d Digest) SignedPayload() []byte {
	b := make([]byte, 0, 12+len(d.Sum))
	b = append(b, "FSVerity"...)
	b = append(b, byte(d.Algorithm), 0, byte(len(d.Sum)), byte(len(d.Sum)>>8))
	return append(b, d.Sum...)
}

// DescriptorSize is the size of struct fsverity_descriptor.
const DescriptorSize = 256

// Descriptor is struct fsverity_descriptor; the file digest is its hash.
type Descriptor struct {
	Algorithm    HashAlgorithm
	LogBlockSize uint8
	Salt         []byte
	DataSize     uint64
	// RootHash is the Merkle tree root (all zeros for an empty file).
	RootHash []byte
}

// MarshalBinary encodes the 256-byte descriptor: @0 version 1, @1
// algorithm, @2 log2(block size), @3 salt size, @4 le32 0, @8 le64 data
// size, @16 root hash (64 bytes, zero-padded), @80 salt (32 bytes,
// zero-padded), @112 144 zero bytes.
func (d *Descriptor) MarshalBinary() ([]byte, error) {
	if len(d.Salt) > MaxSaltSize || len(d.RootHash) > 64 {
		return nil, fmt.Errorf("%w: descriptor salt or root hash too long", ErrParams)
	}
	b := make([]byte, DescriptorSize)
	b[0] = 1
	b[1] = byte(d.Algorithm)
	b[2] = d.LogBlockSize
	b[3] = byte(len(d.Salt))
	for i := range 8 {
		b[8+i] = byte(d.DataSize >> (8 * i))
	}
	copy(b[16:80], d.RootHash)
	copy(b[80:112], d.Salt)
	return b, nil
}

// ParseDescriptor decodes a descriptor (as FS_IOC_READ_VERITY_METADATA
// returns it). Reserved bytes must be zero.
func ParseDescriptor(b []byte) (*Descriptor, error) {
	if len(b) != DescriptorSize {
		return nil, fmt.Errorf("%w: descriptor of %d bytes", ErrMalformed, len(b))
	}
	if b[0] != 1 {
		return nil, fmt.Errorf("%w: descriptor version %d", ErrMalformed, b[0])
	}
	d := &Descriptor{Algorithm: HashAlgorithm(b[1]), LogBlockSize: b[2]}
	if !d.Algorithm.Valid() {
		return nil, fmt.Errorf("%w: descriptor hash algorithm %d", ErrMalformed, b[1])
	}
	if b[3] > MaxSaltSize {
		return nil, fmt.Errorf("%w: descriptor salt size %d", ErrMalformed, b[3])
	}
	for _, z := range [][]byte{b[4:8], b[16+d.Algorithm.Size() : 80], b[80+int(b[3]) : 112], b[112:]} {
		for _, c := range z {
			if c != 0 {
				return nil, fmt.Errorf("%w: nonzero reserved or padding bytes in descriptor", ErrMalformed)
			}
		}
	}
	for i := range 8 {
		d.DataSize |= uint64(b[8+i]) << (8 * i)
	}
	d.RootHash = append([]byte{}, b[16:16+d.Algorithm.Size()]...)
	d.Salt = append([]byte{}, b[80:80+int(b[3])]...)
	return d, nil
}

// Digest is the file digest: the hash of the encoded descriptor.
func (d *Descriptor) Digest() (Digest, error) {
	if !d.Algorithm.Valid() {
		return Digest{}, fmt.Errorf("%w: hash algorithm %d", ErrParams, d.Algorithm)
	}
	b, err := d.MarshalBinary()
	if err != nil {
		return Digest{}, err
	}
	h := d.Algorithm.new()
	h.Write(b)
	return Digest{Algorithm: d.Algorithm, Sum: h.Sum(nil)}, nil
}
