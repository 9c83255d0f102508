package oci

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/intact-project/intact/layer"
	"github.com/intact-project/intact/verity"
)

// Conversion is one layer converted with the tar-index profile: the EROFS
// metadata and the hash tree (superblock at offset 0) in files, and what the
// referrer and the report need.
type Conversion struct {
	RootHash     string        // lowercase hex
	DiffID       digest.Digest // sha256 of the decompressed tar
	TarSize      int64         // bytes of the decompressed tar
	DataBlocks   uint64        // 512-byte blocks of metadata ‖ tar ‖ zeros to 4096
	UUID         string        // EROFS UUID
	MetadataPath string
	TreePath     string
	Metadata     ocispec.Descriptor // MediaTypeEROFSMetadata, digest and size
	Tree         ocispec.Descriptor // MediaTypeMerkleTree, digest and size
}

// Remove deletes the conversion's files.
func (c *Conversion) Remove() {
	os.Remove(c.MetadataPath)
	os.Remove(c.TreePath)
}

// ConvertLayer converts the layer blob r (compressed as its bytes say) with
// the tar-index profile of the layer package, writing the metadata and tree
// into dir. It fails with ErrDigestMismatch when the bytes are not those of
// the descriptor l.
func ConvertLayer(ctx context.Context, r io.Reader, l ocispec.Descriptor, dir string, maxSize int64) (*Conversion, error) {
	mf, err := os.CreateTemp(dir, "metadata-")
	if err != nil {
		return nil, fmt.Errorf("temporary file: %w", err)
	}
	tf, err := os.CreateTemp(dir, "tree-")
	if err != nil {
		mf.Close()
		os.Remove(mf.Name())
		return nil, fmt.Errorf("temporary file: %w", err)
	}
	c := &Conversion{MetadataPath: mf.Name(), TreePath: tf.Name()}
	ok := false
	defer func() {
		mf.Close()
		tf.Close()
		if !ok {
			c.Remove()
		}
	}()
	mh := sha256.New()
	// No data device: the publisher ships metadata and tree, the host has
	// the tar, so the decompressed tar is hashed as it streams and dropped.
	res, err := layer.Convert(ctx, r, nil, layer.Options{
		Profile: layer.ProfileTarIndex, MaxSize: maxSize, TempDir: dir,
		HashOutput: tf, MetadataOutput: io.MultiWriter(mf, mh),
	})
	if err != nil {
		if errors.Is(err, ErrDigestMismatch) {
			return nil, err
		}
		return nil, fmt.Errorf("convert layer %s: %w", l.Digest, err)
	}
	// Drain, so that a verifying reader checks size and digest at EOF.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return nil, fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	if res.Digest != l.Digest.String() {
		return nil, fmt.Errorf("%w: layer %s has digest %s", ErrDigestMismatch, l.Digest, res.Digest)
	}
	if err := mf.Sync(); err != nil {
		return nil, fmt.Errorf("write metadata: %w", err)
	}
	treeSize := int64(verity.SuperblockSize) + res.TreeSize
	th := sha256.New()
	if _, err := io.Copy(th, io.NewSectionReader(tf, 0, treeSize)); err != nil {
		return nil, fmt.Errorf("read back tree: %w", err)
	}
	if st, err := tf.Stat(); err != nil || st.Size() != treeSize {
		return nil, fmt.Errorf("internal error: tree file is not %d bytes: %v", treeSize, err)
	}
	c.RootHash = res.RootHashHex()
	c.DiffID = digest.Digest(res.DiffID)
	c.TarSize = res.TarSize
	c.DataBlocks = uint64(res.ImageSize) / tarIndexBlock
	c.UUID = verity.FormatUUID(res.EROFSUUID)
	c.Metadata = ocispec.Descriptor{MediaType: MediaTypeEROFSMetadata, Digest: digest.NewDigest(digest.SHA256, mh), Size: res.MetadataSize}
	c.Tree = ocispec.Descriptor{MediaType: MediaTypeMerkleTree, Digest: digest.NewDigest(digest.SHA256, th), Size: treeSize}
	ok = true
	return c, nil
}
