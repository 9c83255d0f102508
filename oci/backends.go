package oci

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/errdef"

	layerpkg "github.com/intact-project/intact/layer"
	"github.com/intact-project/intact/pkcs7"
	"github.com/intact-project/intact/verity"
)

var errAlreadyExists = errdef.ErrAlreadyExists

func checkKeyMatchesCert(key crypto.Signer, cert *x509.Certificate) error {
	if _, err := pkcs7.NewSigner(cert, key); err != nil {
		return fmt.Errorf("%w: %w", ErrSignature, err)
	}
	return nil
}

// SignRootHash returns the root-hash signature the kernel's dm-verity
// checks: detached PKCS#7 over the ASCII lowercase hex root hash (no
// newline), no signed attributes, the signer certificate (and chain)
// embedded.
func SignRootHash(rootHex string, key crypto.Signer, cert *x509.Certificate, chain []*x509.Certificate) ([]byte, error) {
	if err := checkRootHash(rootHex); err != nil {
		return nil, err
	}
	s, err := pkcs7.NewSigner(cert, key, chain...)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignature, err)
	}
	der, err := s.Sign([]byte(rootHex), pkcs7.SignOptions{})
	if err != nil {
		return nil, fmt.Errorf("sign root hash: %w", err)
	}
	return der, nil
}

// VerifyRootHashSignature checks that der is a detached PKCS#7 signature,
// without signed attributes, over exactly rootHex, by a certificate the
// message carries that chains to roots. It returns the signer.
func VerifyRootHashSignature(der []byte, rootHex string, roots *x509.CertPool) (*x509.Certificate, error) {
	sd, err := pkcs7.Parse(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignature, err)
	}
	if !sd.Detached() {
		return nil, fmt.Errorf("%w: the signature is not detached", ErrSignature)
	}
	if len(sd.Certificates) == 0 {
		return nil, fmt.Errorf("%w: the signature carries no certificate", ErrSignature)
	}
	v, err := sd.Verify(pkcs7.VerifyOptions{Roots: roots, Content: []byte(rootHex)})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignature, err)
	}
	return v.Signer, nil
}

// Tar-index profile constants (docs/formats.md, "Layer profiles"): verity over the data
// device metadata ‖ tar ‖ zeros to 4096, sha256, 512-byte blocks, 32 zero
// bytes of salt, superblock at offset 0 of the tree blob.
const (
	tarIndexBlock   = 512
	dataDeviceAlign = 4096
	saltSize        = 32
)

// CheckTree checks a hash tree blob of treeSize bytes against the tar-index
// profile and the root hash: its superblock (sha256, format 1, 512-byte data
// and hash blocks, 32 zero bytes of salt, a UUID, a data device that is a
// 4096 multiple and holds at least the metadata), its size, that rootHex is
// the hash of its top-level block, and that the metadata blob is the first
// blocks of the data it covers. It returns the number of data blocks.
func CheckTree(tree io.ReaderAt, treeSize int64, metadata []byte, rootHex string) (uint64, error) {
	p, err := verity.ReadSuperblock(tree, 0)
	if err != nil {
		return 0, fmt.Errorf("%w: hash tree: %w", ErrLayerMismatch, err)
	}
	bad := func(format string, args ...any) (uint64, error) {
		return 0, fmt.Errorf("%w: hash tree: %s", ErrLayerMismatch, fmt.Sprintf(format, args...))
	}
	if p.Algorithm != "sha256" || p.HashType != verity.HashTypeNormal {
		return bad("superblock says %s format %d, want sha256 format 1", p.Algorithm, p.HashType)
	}
	if p.DataBlockSize != tarIndexBlock || p.HashBlockSize != tarIndexBlock {
		return bad("superblock says %d/%d-byte blocks, want 512/512", p.DataBlockSize, p.HashBlockSize)
	}
	if !bytes.Equal(p.Salt, make([]byte, saltSize)) {
		return bad("salt is %x, want 32 zero bytes", p.Salt)
	}
	if p.UUID == ([16]byte{}) {
		return bad("superblock has a nil UUID")
	}
	if (p.DataBlocks*tarIndexBlock)%dataDeviceAlign != 0 {
		return bad("data device of %d blocks is not a multiple of %d bytes", p.DataBlocks, dataDeviceAlign)
	}
	if uint64(len(metadata)) > p.DataBlocks*tarIndexBlock {
		return bad("covers %d bytes, less than the %d-byte metadata", p.DataBlocks*tarIndexBlock, len(metadata))
	}
	lay, err := p.Layout()
	if err != nil {
		return 0, fmt.Errorf("%w: hash tree: %w", ErrLayerMismatch, err)
	}
	if uint64(treeSize) != lay.HashEnd {
		return bad("blob is %d bytes, a tree for %d data blocks is %d", treeSize, p.DataBlocks, lay.HashEnd)
	}
	root, err := hex.DecodeString(rootHex)
	if err != nil {
		return bad("root hash %q is not hex", rootHex)
	}
	v, err := verity.NewVerifier(p, root, tree, nil)
	if err != nil {
		return 0, fmt.Errorf("%w: hash tree: %w", ErrLayerMismatch, err)
	}
	for i := 0; i*tarIndexBlock < len(metadata); i++ {
		if err := v.VerifyBlock(uint64(i), metadata[i*tarIndexBlock:(i+1)*tarIndexBlock]); err != nil {
			return 0, fmt.Errorf("%w: EROFS metadata block %d does not match the signed tree: %w", ErrLayerMismatch, i, err)
		}
	}
	return p.DataBlocks, nil
}

// EROFS superblock fields the tar-index profile fixes (docs/formats.md).
const (
	erofsSuperOffset = 1024
	erofsMagic       = 0xE0F5E1E2
)

// CheckMetadata checks that an EROFS metadata blob is the tar-index
// profile's for the layer with digest layer: an EROFS superblock with
// 512-byte blocks whose UUID (offset 1072) is the UUIDv5 of
// "erofs:blobs/<layer digest>" in the URL namespace, as Azure Linux's
// containerd2 requires.
func CheckMetadata(meta []byte, layer digest.Digest) error {
	if len(meta) < erofsSuperOffset+128 || len(meta)%tarIndexBlock != 0 {
		return fmt.Errorf("%w: EROFS metadata of %d bytes is too short or not a multiple of 512", ErrLayerMismatch, len(meta))
	}
	sb := meta[erofsSuperOffset:]
	if binary.LittleEndian.Uint32(sb[0:4]) != erofsMagic {
		return fmt.Errorf("%w: EROFS metadata has no EROFS superblock", ErrLayerMismatch)
	}
	if sb[12] != 9 {
		return fmt.Errorf("%w: EROFS metadata has %d-byte blocks, want 512", ErrLayerMismatch, 1<<min(sb[12], 31))
	}
	want := layerpkg.EROFSUUIDForDigest(layer.String())
	if !bytes.Equal(sb[48:64], want[:]) {
		return fmt.Errorf("%w: EROFS metadata UUID %x belongs to another layer (this layer's is %x)", ErrLayerMismatch, sb[48:64], want)
	}
	return nil
}
