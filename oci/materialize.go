package oci

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/intact-project/intact/internal/atomicfile"
	"github.com/intact-project/intact/layer"
	"github.com/intact-project/intact/verity"
)

// Materialized is a layer's data device and hash tree on disk, as a host
// builds them from a referrer (docs/formats.md, "The consumer", materialization).
type Materialized struct {
	Data     string // layer.erofs: metadata ‖ decompressed tar ‖ zeros to 4096
	Tree     string // layer.erofs.hashtree: superblock at 0, then the tree
	RootHash string
}

// Materialize writes dir/layer.erofs and dir/layer.erofs.hashtree for layer
// l from its referrer entry e, then checks every data block against the
// tree and the signed root hash (what the kernel's dm-verity does lazily on
// each read). It does not check the signature: call Verify first.
func (r *Repo) Materialize(ctx context.Context, l ocispec.Descriptor, e *BundleLayer, dir string, maxLayerSize int64) (*Materialized, error) {
	meta, err := r.FetchAll(ctx, e.Metadata, maxMetadataInMemory)
	if err != nil {
		return nil, fmt.Errorf("EROFS metadata: %w", err)
	}
	m := &Materialized{Data: filepath.Join(dir, "layer.erofs"), Tree: filepath.Join(dir, "layer.erofs.hashtree"), RootHash: e.RootHash}
	df, err := atomicfile.Create(m.Data, 0o644)
	if err != nil {
		return nil, err
	}
	defer df.Abort()
	rc, err := r.Open(ctx, l)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	dd, err := WriteDataDevice(df, meta, rc, l.MediaType, maxLayerSize)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	total := dd.Size
	tf, err := atomicfile.Create(m.Tree, 0o644)
	if err != nil {
		return nil, err
	}
	defer tf.Abort()
	trc, err := r.Open(ctx, e.Tree)
	if err != nil {
		return nil, err
	}
	defer trc.Close()
	if _, err := io.Copy(tf, io.LimitReader(trc, e.Tree.Size+1)); err != nil {
		return nil, fmt.Errorf("hash tree: %w", err)
	}
	p, err := verity.ReadSuperblock(tf.File, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: hash tree: %w", ErrLayerMismatch, err)
	}
	if p.DataBlocks*uint64(p.DataBlockSize) != uint64(total) {
		return nil, fmt.Errorf("%w: the tree covers %d bytes, the data device is %d", ErrLayerMismatch, p.DataBlocks*uint64(p.DataBlockSize), total)
	}
	root, err := hex.DecodeString(e.RootHash)
	if err != nil {
		return nil, fmt.Errorf("%w: root hash %q", ErrMalformed, e.RootHash)
	}
	if err := verity.Verify(ctx, p, root, df.File, tf.File, nil); err != nil {
		return nil, fmt.Errorf("%w: layer %s: %w", ErrLayerMismatch, l.Digest, err)
	}
	if err := df.Commit(); err != nil {
		return nil, err
	}
	if err := tf.Commit(); err != nil {
		os.Remove(m.Data)
		return nil, err
	}
	return m, nil
}

// DataDevice describes a data device WriteDataDevice wrote.
type DataDevice struct {
	Size    int64         // bytes written: metadata, tar and padding
	TarSize int64         // bytes of the decompressed tar
	DiffID  digest.Digest // sha256 of the decompressed tar
}

// WriteDataDevice writes a tar-index layer's data device to w: the EROFS
// metadata blob, the layer's tar as decompressed from blob (gzip, zstd or
// none, as its bytes say; at most maxLayerSize bytes, zero meaning the layer
// package's default), then zeros up to a multiple of 4096 bytes. The tar's
// sha256 (the layer's diff_id) is computed while it streams, so the tar is
// read once.
func WriteDataDevice(w io.Writer, meta []byte, blob io.Reader, mediaType string, maxLayerSize int64) (DataDevice, error) {
	if _, err := w.Write(meta); err != nil {
		return DataDevice{}, fmt.Errorf("write EROFS metadata: %w", err)
	}
	tar, err := decompressLayer(blob, mediaType, maxLayerSize)
	if err != nil {
		return DataDevice{}, err
	}
	defer tar.Close()
	dg := digest.SHA256.Digester()
	n, err := io.Copy(w, io.TeeReader(tar, dg.Hash()))
	if err == nil && n > limitOrDefault(maxLayerSize) {
		err = fmt.Errorf("%w: decompresses to more than %d bytes", layer.ErrTooLarge, limitOrDefault(maxLayerSize))
	}
	if err != nil {
		return DataDevice{}, err
	}
	dd := DataDevice{Size: int64(len(meta)) + n, TarSize: n, DiffID: dg.Digest()}
	if pad := (dataDeviceAlign - dd.Size%dataDeviceAlign) % dataDeviceAlign; pad > 0 {
		if _, err := w.Write(make([]byte, pad)); err != nil {
			return DataDevice{}, fmt.Errorf("write padding: %w", err)
		}
		dd.Size += pad
	}
	return dd, nil
}

func limitOrDefault(n int64) int64 {
	if n <= 0 {
		return layer.DefaultMaxSize
	}
	return n
}

// decompressLayer returns the tar of a layer blob, decompressed as its bytes
// say (gzip, zstd or none: what containerd and the signer's conversion do),
// reading at most one byte beyond the size limit.
func decompressLayer(r io.Reader, mediaType string, max int64) (io.ReadCloser, error) {
	if !isLayerMediaType(mediaType) {
		return nil, fmt.Errorf("%w: layer media type %q", ErrUnsupported, mediaType)
	}
	tar, _, err := layer.Decompress(r)
	if err != nil {
		return nil, err
	}
	return readCloser{io.LimitReader(tar, limitOrDefault(max)+1), tar}, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}
