// Package sampleimage builds small, deterministic multi-layer OCI images in
// process: the sample that `intact quickstart`, the oci package's tests and
// the image benchmark push, sign and verify. It owns no format of its own; it
// writes standard OCI image layouts: tar layers (uncompressed, gzip or zstd),
// image configs, platform manifests and, for several platforms, an image
// index. The same Options always give the same bytes and digests.
package sampleimage

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
)

// Compression is how a layer blob is compressed.
type Compression string

// The layer compressions the sample image uses.
const (
	Uncompressed Compression = "none"
	Gzip         Compression = "gzip"
	Zstd         Compression = "zstd"
)

// ErrOptions reports invalid Options.
var ErrOptions = errors.New("sampleimage: invalid options")

// Epoch is the modification time of every file in the sample layers and the
// creation time in the image configs.
var Epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// PayloadFileSize is the size of each payload file when Options.PayloadSize
// asks for bulk content.
const PayloadFileSize = 4 << 20

// Options describes the sample image. The zero value is a single-platform
// (linux/amd64) image with three layers: gzip, zstd and uncompressed.
type Options struct {
	// Platforms as os/arch[/variant]; more than one gives an image index
	// whose platform manifests share every layer but the second.
	Platforms []string
	// Compressions holds one entry per layer (at least one layer).
	Compressions []Compression
	// PayloadSize adds this many bytes of deterministic pseudo-random file
	// content (about half of it compressible) to every layer, split into
	// files of PayloadFileSize: for benchmarks.
	PayloadSize int64
	// Variant is mixed into every file's content, so that two images built
	// with different variants share no layer.
	Variant string
}

// Blob is one piece of content of the image with its descriptor.
type Blob struct {
	Desc ocispec.Descriptor
	Data []byte
}

// Layer is one layer of a platform manifest.
type Layer struct {
	Desc        ocispec.Descriptor // the (possibly compressed) layer blob
	DiffID      digest.Digest      // sha256 of the uncompressed tar
	TarSize     int64              // size of the uncompressed tar
	Compression Compression
}

// Manifest is one platform's manifest.
type Manifest struct {
	Desc     ocispec.Descriptor // has Platform set
	Platform ocispec.Platform
	Config   ocispec.Descriptor
	Layers   []Layer
}

// Image is a built sample image. Blobs lists every piece of content once, in
// an order that can be pushed as is (blobs before the manifests naming them).
type Image struct {
	Root      ocispec.Descriptor // the index, or the only manifest
	Manifests []Manifest
	Blobs     []Blob
}

// Build builds the sample image described by opts.
func Build(opts Options) (*Image, error) {
	if len(opts.Platforms) == 0 {
		opts.Platforms = []string{"linux/amd64"}
	}
	if len(opts.Compressions) == 0 {
		opts.Compressions = []Compression{Gzip, Zstd, Uncompressed}
	}
	if opts.PayloadSize < 0 {
		return nil, fmt.Errorf("%w: negative payload size", ErrOptions)
	}
	b := &builder{opts: opts, seen: map[digest.Digest]bool{}}
	img := &Image{}
	shared := map[int]Layer{}
	for _, ps := range opts.Platforms {
		plat, err := parsePlatform(ps)
		if err != nil {
			return nil, err
		}
		m := Manifest{Platform: plat}
		for i, c := range opts.Compressions {
			if l, ok := shared[i]; ok {
				m.Layers = append(m.Layers, l)
				continue
			}
			l, err := b.layer(i, c, ps)
			if err != nil {
				return nil, err
			}
			if i != 1 {
				shared[i] = l
			}
			m.Layers = append(m.Layers, l)
		}
		cfg := ocispec.Image{
			Created:  &Epoch,
			Platform: plat,
			Config: ocispec.ImageConfig{
				Entrypoint: []string{"/bin/hello"},
				Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
				Labels:     map[string]string{"org.opencontainers.image.title": "intact sample image"},
			},
			RootFS: ocispec.RootFS{Type: "layers"},
		}
		for _, l := range m.Layers {
			cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, l.DiffID)
		}
		cfgJSON, err := json.Marshal(cfg)
		if err != nil {
			return nil, fmt.Errorf("sampleimage: config: %w", err)
		}
		m.Config = b.add(ocispec.MediaTypeImageConfig, cfgJSON)
		man := ocispec.Manifest{
			Versioned: specs.Versioned{SchemaVersion: 2},
			MediaType: ocispec.MediaTypeImageManifest,
			Config:    m.Config,
			Annotations: map[string]string{
				ocispec.AnnotationCreated: Epoch.Format(time.RFC3339),
				ocispec.AnnotationTitle:   "intact sample image",
			},
		}
		for _, l := range m.Layers {
			man.Layers = append(man.Layers, l.Desc)
		}
		manJSON, err := json.Marshal(man)
		if err != nil {
			return nil, fmt.Errorf("sampleimage: manifest: %w", err)
		}
		m.Desc = b.add(ocispec.MediaTypeImageManifest, manJSON)
		p := plat
		m.Desc.Platform = &p
		img.Manifests = append(img.Manifests, m)
	}
	if len(img.Manifests) == 1 {
		img.Root = img.Manifests[0].Desc
		img.Root.Platform = nil
	} else {
		idx := ocispec.Index{
			Versioned: specs.Versioned{SchemaVersion: 2},
			MediaType: ocispec.MediaTypeImageIndex,
		}
		for _, m := range img.Manifests {
			idx.Manifests = append(idx.Manifests, m.Desc)
		}
		idxJSON, err := json.Marshal(idx)
		if err != nil {
			return nil, fmt.Errorf("sampleimage: index: %w", err)
		}
		img.Root = b.add(ocispec.MediaTypeImageIndex, idxJSON)
	}
	img.Blobs = b.blobs
	return img, nil
}

// Pusher is where an image can be pushed and tagged (an oras.Target).
type Pusher interface {
	content.Pusher
	content.TagResolver
}

// Push pushes every blob of the image to dst (skipping what exists when dst
// can tell) and tags the root as tag.
func (img *Image) Push(ctx context.Context, dst Pusher, tag string) error {
	for _, b := range img.Blobs {
		if ex, ok := dst.(content.ReadOnlyStorage); ok {
			if has, err := ex.Exists(ctx, b.Desc); err == nil && has {
				continue
			}
		}
		if err := dst.Push(ctx, b.Desc, bytes.NewReader(b.Data)); err != nil {
			return fmt.Errorf("push %s %s: %w", b.Desc.MediaType, b.Desc.Digest, err)
		}
	}
	if tag != "" {
		if err := dst.Tag(ctx, img.Root, tag); err != nil {
			return fmt.Errorf("tag %s: %w", tag, err)
		}
	}
	return nil
}

// Blob returns the content of the blob with digest d.
func (img *Image) Blob(d digest.Digest) ([]byte, bool) {
	for _, b := range img.Blobs {
		if b.Desc.Digest == d {
			return b.Data, true
		}
	}
	return nil, false
}

// LayerMediaType is the OCI media type of a layer compressed with c.
func LayerMediaType(c Compression) (string, error) {
	switch c {
	case Uncompressed:
		return ocispec.MediaTypeImageLayer, nil
	case Gzip:
		return ocispec.MediaTypeImageLayerGzip, nil
	case Zstd:
		return ocispec.MediaTypeImageLayerZstd, nil
	}
	return "", fmt.Errorf("%w: unknown compression %q", ErrOptions, c)
}

type builder struct {
	opts  Options
	blobs []Blob
	seen  map[digest.Digest]bool
}

func (b *builder) add(mediaType string, data []byte) ocispec.Descriptor {
	d := content.NewDescriptorFromBytes(mediaType, data)
	if !b.seen[d.Digest] {
		b.seen[d.Digest] = true
		b.blobs = append(b.blobs, Blob{Desc: d, Data: data})
	}
	return d
}

func parsePlatform(s string) (ocispec.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return ocispec.Platform{}, fmt.Errorf("%w: platform %q is not os/arch[/variant]", ErrOptions, s)
	}
	p := ocispec.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// layer builds layer i; the second layer (i == 1) is specific to platform.
func (b *builder) layer(i int, c Compression, platform string) (Layer, error) {
	mt, err := LayerMediaType(c)
	if err != nil {
		return Layer{}, err
	}
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	w := &tarWriter{tw: tw}
	switch i {
	case 0:
		w.dir("bin/", 0o755)
		w.dir("etc/", 0o755)
		w.dir("usr/", 0o755)
		w.dir("usr/share/", 0o755)
		w.dir("usr/share/intact/", 0o755)
		w.dir("var/", 0o755)
		w.dir("var/cache/", 0o755)
		w.dir("var/cache/sample/", 0o755)
		w.file("etc/os-release", 0o644, []byte("NAME=\"intact sample\"\nID=intact-sample\nVERSION_ID=1\n"+b.opts.Variant))
		w.file("etc/motd", 0o644, []byte("base layer motd\n"))
		w.file("bin/hello", 0o755, []byte("#!/bin/sh\necho 'hello from a signed, dm-verity protected layer'\n"))
		w.symlink("bin/hi", "hello")
		w.hardlink("bin/hello-again", "bin/hello")
		w.file("var/cache/sample/old", 0o644, []byte("removed by an opaque directory in layer 2\n"))
		w.file("usr/share/intact/removed-later", 0o644, []byte("removed by a whiteout in layer 2\n"))
		w.xattrFile("usr/share/intact/with-xattr", []byte("file with an extended attribute\n"), map[string]string{"user.intact.sample": "yes"})
	case 1:
		w.dir("etc/", 0o755)
		w.file("etc/motd", 0o644, []byte("motd replaced by the platform layer for "+platform+"\n"))
		w.dir("usr/", 0o755)
		w.dir("usr/share/", 0o755)
		w.dir("usr/share/intact/", 0o755)
		w.file("usr/share/intact/platform", 0o644, []byte(platform+"\n"))
		w.file("usr/share/intact/.wh.removed-later", 0o644, nil)
		w.dir("var/", 0o755)
		w.dir("var/cache/", 0o755)
		w.dir("var/cache/sample/", 0o755)
		w.file("var/cache/sample/.wh..wh..opq", 0o644, nil)
		w.file("var/cache/sample/new", 0o644, []byte("the only entry after the opaque marker\n"))
	default:
		dir := fmt.Sprintf("app%d/", i)
		w.dir(dir, 0o755)
		w.file(dir+"README", 0o644, []byte(fmt.Sprintf("application layer %d %s\n", i, b.opts.Variant)))
		w.file(dir+"run.sh", 0o755, []byte("#!/bin/sh\nexec /bin/hello \"$@\"\n"))
	}
	if b.opts.PayloadSize > 0 {
		dir := fmt.Sprintf("payload%d/", i)
		w.dir(dir, 0o755)
		rng := rand.New(rand.NewChaCha8(seed(b.opts.Variant, i, platform)))
		remaining := b.opts.PayloadSize
		for n := 0; remaining > 0; n++ {
			size := min(remaining, PayloadFileSize)
			w.file(fmt.Sprintf("%sdata%04d", dir, n), 0o644, payload(rng, size))
			remaining -= size
		}
	}
	if w.err == nil {
		w.err = tw.Close()
	}
	if w.err != nil {
		return Layer{}, fmt.Errorf("sampleimage: layer %d: %w", i, w.err)
	}
	raw := tarBuf.Bytes()
	l := Layer{DiffID: digest.FromBytes(raw), TarSize: int64(len(raw)), Compression: c}
	var blob []byte
	switch c {
	case Uncompressed:
		blob = raw
	case Gzip:
		var out bytes.Buffer
		zw, err := gzip.NewWriterLevel(&out, gzip.BestSpeed)
		if err != nil {
			return Layer{}, fmt.Errorf("sampleimage: gzip: %w", err)
		}
		if _, err := zw.Write(raw); err != nil {
			return Layer{}, fmt.Errorf("sampleimage: gzip: %w", err)
		}
		if err := zw.Close(); err != nil {
			return Layer{}, fmt.Errorf("sampleimage: gzip: %w", err)
		}
		blob = out.Bytes()
	case Zstd:
		var out bytes.Buffer
		zw, err := zstd.NewWriter(&out, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest))
		if err != nil {
			return Layer{}, fmt.Errorf("sampleimage: zstd: %w", err)
		}
		if _, err := zw.Write(raw); err != nil {
			return Layer{}, fmt.Errorf("sampleimage: zstd: %w", err)
		}
		if err := zw.Close(); err != nil {
			return Layer{}, fmt.Errorf("sampleimage: zstd: %w", err)
		}
		blob = out.Bytes()
	}
	l.Desc = b.add(mt, blob)
	return l, nil
}

func seed(variant string, i int, platform string) [32]byte {
	var s [32]byte
	d := digest.FromString(fmt.Sprintf("%s\x00%d\x00%s", variant, i, platform))
	copy(s[:], d.Encoded())
	return s
}

// payload returns size bytes: alternating 64 KiB runs of random bytes and of
// repeated text, so compressors shrink it to roughly half.
func payload(rng *rand.Rand, size int64) []byte {
	buf := make([]byte, size)
	const run = 64 << 10
	text := []byte("intact sample payload: compressible text repeats here. ")
	for off := int64(0); off < size; off += run {
		end := min(off+run, size)
		if (off/run)%2 == 0 {
			for j := off; j < end; j += 8 {
				v := rng.Uint64()
				for k := int64(0); k < 8 && j+k < end; k++ {
					buf[j+k] = byte(v >> (8 * k))
				}
			}
		} else {
			for j := off; j < end; j++ {
				buf[j] = text[j%int64(len(text))]
			}
		}
	}
	return buf
}

type tarWriter struct {
	tw  *tar.Writer
	err error
}

func (w *tarWriter) write(h *tar.Header, data []byte) {
	if w.err != nil {
		return
	}
	h.ModTime = Epoch
	h.Format = tar.FormatPAX
	if len(h.PAXRecords) == 0 {
		h.Format = tar.FormatUSTAR
	}
	if err := w.tw.WriteHeader(h); err != nil {
		w.err = err
		return
	}
	if len(data) > 0 {
		if _, err := w.tw.Write(data); err != nil {
			w.err = err
		}
	}
}

func (w *tarWriter) dir(name string, mode int64) {
	w.write(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode}, nil)
}

func (w *tarWriter) file(name string, mode int64, data []byte) {
	w.write(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}, data)
}

func (w *tarWriter) xattrFile(name string, data []byte, xattrs map[string]string) {
	h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), PAXRecords: map[string]string{}}
	for k, v := range xattrs {
		h.PAXRecords["SCHILY.xattr."+k] = v
	}
	w.write(h, data)
}

func (w *tarWriter) symlink(name, target string) {
	w.write(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}, nil)
}

func (w *tarWriter) hardlink(name, target string) {
	w.write(&tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o755}, nil)
}

// Decompress returns a reader of the uncompressed tar of a layer blob with
// the given compression.
func Decompress(r io.Reader, c Compression) (io.ReadCloser, error) {
	switch c {
	case Uncompressed:
		return io.NopCloser(r), nil
	case Gzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("sampleimage: gzip: %w", err)
		}
		return zr, nil
	case Zstd:
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("sampleimage: zstd: %w", err)
		}
		return zr.IOReadCloser(), nil
	}
	return nil, fmt.Errorf("%w: unknown compression %q", ErrOptions, c)
}
