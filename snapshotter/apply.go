package snapshotter

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	layerpkg "github.com/intact-project/intact/layer"
	"github.com/intact-project/intact/oci"
	"github.com/intact-project/intact/verity"
)

// maxMetadata bounds a referrer's EROFS metadata blob, which is held in
// memory (inodes and chunk indexes only: tens of bytes per file).
const maxMetadata = 512 << 20

// Apply applies a layer into one of this snapshotter's extraction
// snapshots: signed, it assembles the data device from the referrer's
// metadata and tree and the layer's tar, checks them against the signed root
// hash and opens dm-verity with the signature; unsigned (where allowed), it
// converts the layer here. The snapshot then holds that verified layer
// (shared with every other snapshot of the same layer) and nothing is
// written into its directory. Mounts that are not this snapshotter's get
// errdefs.ErrNotImplemented, so containerd's diff service tries its next
// differ.
func (s *Snapshotter) Apply(ctx context.Context, desc ocispec.Descriptor, mounts []mount.Mount, opts ...diff.ApplyOpt) (ocispec.Descriptor, error) {
	id, ok := s.snapshotOfMounts(mounts)
	if !ok {
		return ocispec.Descriptor{}, fmt.Errorf("intact-diff applies layers only to intact snapshots: %w", errdefs.ErrNotImplemented)
	}
	if !isLayer(desc.MediaType) {
		return ocispec.Descriptor{}, fmt.Errorf("intact-diff: layer %s has media type %q (want an OCI or Docker tar layer, uncompressed, gzip or zstd): %w", desc.Digest, desc.MediaType, errdefs.ErrNotImplemented)
	}
	var cfg diff.ApplyConfig
	for _, o := range opts {
		if err := o(ctx, desc, &cfg); err != nil {
			return ocispec.Descriptor{}, err
		}
	}
	o := originFromLabels(desc.Annotations)
	if saved := s.readOrigin(id); o.Image == "" || o.Manifest == "" {
		o = saved
	} else if o.DiffID == "" {
		o.DiffID = saved.DiffID
	}
	if o.Layer != "" && o.Layer != desc.Digest {
		return ocispec.Descriptor{}, fmt.Errorf("layer %s: the snapshot was prepared for layer %s: %w", desc.Digest, o.Layer, errdefs.ErrInvalidArgument)
	}
	v, err := s.verdict(ctx, o)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("layer %s of %s: %w", desc.Digest, o.Image, err)
	}
	var l *layer
	if v.bundle != nil {
		l, err = s.applySigned(ctx, id, desc, o, v, cfg.Progress)
	} else {
		l, err = s.applyUnsigned(ctx, id, desc, o, cfg.Progress)
	}
	if err != nil {
		img := o.Image
		if img == "" {
			img = "an image without a reference"
		}
		return ocispec.Descriptor{}, fmt.Errorf("layer %s of %s: %w", desc.Digest, img, err)
	}
	return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: l.rec.DiffID, Size: l.rec.TarSize}, nil
}

// Compare is not implemented: intact layers are read-only verified images;
// containerd's walking differ computes diffs of snapshots.
func (s *Snapshotter) Compare(ctx context.Context, lower, upper []mount.Mount, opts ...diff.Opt) (ocispec.Descriptor, error) {
	return ocispec.Descriptor{}, fmt.Errorf("intact-diff does not compute diffs: %w", errdefs.ErrNotImplemented)
}

func isLayer(mt string) bool {
	switch mt {
	case ocispec.MediaTypeImageLayer, ocispec.MediaTypeImageLayerGzip, ocispec.MediaTypeImageLayerZstd,
		images.MediaTypeDockerSchema2Layer, images.MediaTypeDockerSchema2LayerGzip:
		return true
	}
	return false
}

// snapshotOfMounts finds the snapshot whose Prepare returned mounts: a
// bind mount of <root>/snapshots/<id>/fs, or overlayfs with it as upperdir.
func (s *Snapshotter) snapshotOfMounts(mounts []mount.Mount) (string, bool) {
	if len(mounts) != 1 {
		return "", false
	}
	m := mounts[0]
	var upper string
	switch m.Type {
	case "bind":
		upper = m.Source
	case "overlay":
		for _, o := range m.Options {
			if v, ok := strings.CutPrefix(o, "upperdir="); ok {
				upper = v
			}
		}
	}
	upper = filepath.Clean(upper)
	if filepath.Base(upper) != "fs" {
		return "", false
	}
	dir := filepath.Dir(upper)
	if filepath.Dir(dir) != filepath.Join(s.root, "snapshots") {
		return "", false
	}
	id := filepath.Base(dir)
	if _, err := os.Stat(filepath.Join(dir, "work")); err != nil {
		return "", false // not an active snapshot
	}
	return id, true
}

// progressReader reports bytes read to fn.
type progressReader struct {
	r  io.Reader
	n  int64
	fn func(int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if p.fn != nil && n > 0 {
		p.fn(p.n)
	}
	return n, err
}

// blob opens the layer blob: its file in containerd's content store
// directory when Options.ContentDir names one that has it, else through
// containerd's content API.
func (s *Snapshotter) blob(ctx context.Context, desc ocispec.Descriptor, progress func(int64)) (io.Reader, io.Closer, error) {
	if s.opts.ContentDir != "" && desc.Digest.Validate() == nil {
		f, err := os.Open(filepath.Join(s.opts.ContentDir, "blobs", desc.Digest.Algorithm().String(), desc.Digest.Encoded()))
		if err == nil {
			if st, err := f.Stat(); err == nil && st.Mode().IsRegular() && st.Size() == desc.Size {
				return &progressReader{r: io.LimitReader(f, desc.Size), fn: progress}, f, nil
			}
			f.Close()
		}
	}
	if s.opts.Content == nil {
		return nil, nil, errors.New("no content store to read the layer from")
	}
	ra, err := s.opts.Content.ReaderAt(contentContext(ctx), desc)
	if err != nil {
		return nil, nil, fmt.Errorf("read layer blob from containerd: %w", err)
	}
	// Large reads: each ReadAt of containerd's content proxy is one gRPC
	// stream, so 32 KiB copies would cost a round trip each.
	return &progressReader{r: bufio.NewReaderSize(content.NewReader(ra), 4<<20), fn: progress}, ra, nil
}

// applySigned builds (or shares) the verified layer of a signed image.
func (s *Snapshotter) applySigned(ctx context.Context, id string, desc ocispec.Descriptor, o origin, v *verdict, progress func(int64)) (*layer, error) {
	e := v.bundle.Layers[desc.Digest]
	if e == nil {
		return nil, fmt.Errorf("%w: referrer %s has no artifacts for this layer", ErrLayerMismatch, v.bundle.Desc.Digest)
	}
	key := signedKey(e.RootHash, e.Signature)
	return s.acquire(ctx, key, id, func(l *layer) error {
		l.rec = record{Key: key, Digest: desc.Digest, Profile: layerpkg.ProfileTarIndex,
			RootHash: e.RootHash, Signed: true, Image: o.Image, Referrer: v.bundle.Desc.Digest}
		if s.opts.TrustAnchors != nil {
			signer, err := oci.VerifyRootHashSignature(e.Signature, e.RootHash, s.opts.TrustAnchors)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrUntrusted, err)
			}
			l.rec.Signer = signer.Subject.String()
		}
		start := time.Now()
		meta, err := v.src.FetchAll(ctx, e.Metadata, maxMetadata)
		if err != nil {
			return fmt.Errorf("%w: EROFS metadata: %w", ErrReferrer, err)
		}
		if err := oci.CheckMetadata(meta, desc.Digest); err != nil {
			return fmt.Errorf("%w: %w", ErrLayerMismatch, err)
		}
		var dd oci.DataDevice
		var written time.Duration
		err = s.build(ctx, l, e.Signature, func(f *os.File, _ string) error {
			r, rc, err := s.blob(ctx, desc, progress)
			if err != nil {
				return err
			}
			bw := bufio.NewWriterSize(f, 1<<20)
			dd, err = oci.WriteDataDevice(bw, meta, r, desc.MediaType, s.opts.MaxLayerSize)
			rc.Close()
			if err == nil {
				err = bw.Flush()
			}
			if err != nil {
				return fmt.Errorf("write the data device: %w", err)
			}
			if o.DiffID != "" && dd.DiffID != o.DiffID {
				return fmt.Errorf("%w: the layer's tar is %s, the image config says %s", ErrLayerMismatch, dd.DiffID, o.DiffID)
			}
			written = time.Since(start)
			if err := v.src.Copy(ctx, f, e.Tree); err != nil {
				return fmt.Errorf("%w: hash tree: %w", ErrReferrer, err)
			}
			blocks, err := oci.CheckTree(io.NewSectionReader(f, dd.Size, e.Tree.Size), e.Tree.Size, meta, e.RootHash)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrLayerMismatch, err)
			}
			if covered := int64(blocks) * 512; covered != dd.Size {
				return fmt.Errorf("%w: the signed tree covers %d bytes, this layer's data device is %d (another layer's tree?)", ErrLayerMismatch, covered, dd.Size)
			}
			l.rec.DiffID, l.rec.TarSize = dd.DiffID, dd.TarSize
			l.rec.Verity = verity.Params{HashOffset: uint64(dd.Size)} // superblock there
			l.rec.Size = dd.Size + e.Tree.Size
			return nil
		})
		if err != nil {
			return err
		}
		s.log.Debug("signed layer built", "layer", desc.Digest, "tar_bytes", dd.TarSize, "data_device", written.String(), "active", time.Since(start).String())
		return nil
	})
}

// applyUnsigned converts a layer of an image allowed to be unsigned to the
// full profile and opens it without a signature.
func (s *Snapshotter) applyUnsigned(ctx context.Context, id string, desc ocispec.Descriptor, o origin, progress func(int64)) (*layer, error) {
	key := unsignedKey(desc.Digest)
	return s.acquire(ctx, key, id, func(l *layer) error {
		return s.build(ctx, l, nil, func(f *os.File, stage string) error {
			r, rc, err := s.blob(ctx, desc, progress)
			if err != nil {
				return err
			}
			res, err := layerpkg.Convert(ctx, r, f, layerpkg.Options{Profile: layerpkg.ProfileFull, MaxSize: s.opts.MaxLayerSize, TempDir: stage, StartWriteback: true, Logger: s.log})
			rc.Close()
			if err != nil {
				return fmt.Errorf("convert the layer: %w", err)
			}
			if res.Digest != desc.Digest.String() {
				return fmt.Errorf("%w: the blob read is %s", ErrLayerMismatch, res.Digest)
			}
			if o.DiffID != "" && res.DiffID != o.DiffID.String() {
				return fmt.Errorf("%w: the layer's tar is %s, the image config says %s", ErrLayerMismatch, res.DiffID, o.DiffID)
			}
			l.rec = record{Key: key, Digest: desc.Digest, DiffID: digestOrEmpty(res.DiffID), TarSize: res.TarSize,
				Profile: layerpkg.ProfileFull, RootHash: hex.EncodeToString(res.RootHash), Image: o.Image,
				Verity: res.Verity, Size: res.ImageSize + res.TreeSize}
			return nil
		})
	})
}

// commitDir converts what was written into an active snapshot's upper
// directory to a layer of its own (the full profile, unsigned).
func (s *Snapshotter) commitDir(ctx context.Context, id string) (*layer, error) {
	key := "d:" + s.tag + "-" + id
	return s.acquire(ctx, key, id, func(l *layer) error {
		return s.build(ctx, l, nil, func(f *os.File, stage string) error {
			res, err := layerpkg.ConvertDir(ctx, s.upperPath(id), f, layerpkg.Options{TempDir: stage, StartWriteback: true, Logger: s.log})
			if err != nil {
				return err
			}
			l.rec = record{Key: key, Profile: layerpkg.ProfileFull, RootHash: hex.EncodeToString(res.RootHash),
				Verity: res.Verity, Size: res.ImageSize + res.TreeSize}
			return nil
		})
	})
}

// build writes a new layer's data file in a staging directory (write gets
// the file and the directory, for spill files, and fills in l.rec), syncs
// it and installs the layer (install: record, signature, device, mount).
// On failure the staging directory goes.
func (s *Snapshotter) build(ctx context.Context, l *layer, sig []byte, write func(f *os.File, stage string) error) error {
	stage, err := s.stage()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(stage, dataFile), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		if err = write(f, stage); err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		os.RemoveAll(stage)
		return err
	}
	return s.install(ctx, stage, l, sig)
}
