// Package testimage builds small OCI images from lists of files and pushes
// them to a registry: the container images of the intactd and container
// host tests (standard OCI image manifests, configs and tar layers,
// uncompressed, gzip or zstd). It owns no format of its own.
package testimage

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"
)

// File is a file (or, with Dir, a directory) of a layer.
type File struct {
	Name string
	Mode int64
	Data []byte
	Dir  bool
}

// Layer is a layer's files and its compression: "gzip", "zstd" or ""
// (none).
type Layer struct {
	Files []File
	Comp  string
}

// Epoch is every file's modification time.
var Epoch = time.Unix(1767225600, 0)

// Build writes the layer's tar and compresses it; it returns the blob, the
// diff_id (the tar's digest) and the media type.
func (l Layer) Build() (blob []byte, diffID digest.Digest, mediaType string, err error) {
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	for _, f := range l.Files {
		h := &tar.Header{Name: f.Name, Mode: f.Mode, ModTime: Epoch, Uname: "root", Gname: "root"}
		if f.Dir {
			h.Typeflag, h.Name = tar.TypeDir, strings.TrimSuffix(f.Name, "/")+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, "", "", err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, "", "", err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", "", err
	}
	diffID = digest.FromBytes(tb.Bytes())
	var out bytes.Buffer
	switch l.Comp {
	case "gzip":
		w := gzip.NewWriter(&out)
		w.Write(tb.Bytes())
		err = w.Close()
		mediaType = ocispec.MediaTypeImageLayerGzip
	case "zstd":
		w, _ := zstd.NewWriter(&out)
		w.Write(tb.Bytes())
		err = w.Close()
		mediaType = ocispec.MediaTypeImageLayerZstd
	case "", "none":
		out = tb
		mediaType = ocispec.MediaTypeImageLayer
	default:
		return nil, "", "", fmt.Errorf("testimage: compression %q", l.Comp)
	}
	return out.Bytes(), diffID, mediaType, err
}

// Push pushes an image of layers (linux/amd64, the given entrypoint) to
// registry (host:port, plain HTTP) as repo:tag; it returns the manifest's
// and the layers' descriptors.
func Push(ctx context.Context, registry, repo, tag string, layers []Layer, entrypoint []string) (ocispec.Descriptor, []ocispec.Descriptor, error) {
	r, err := remote.NewRepository(registry + "/" + repo)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	r.PlainHTTP = true
	push := func(mt string, b []byte) (ocispec.Descriptor, error) {
		d := ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(b), Size: int64(len(b))}
		if err := r.Push(ctx, d, bytes.NewReader(b)); err != nil && !strings.Contains(err.Error(), "already exists") {
			return d, fmt.Errorf("push %s: %w", d.Digest, err)
		}
		return d, nil
	}
	var descs []ocispec.Descriptor
	var diffIDs []digest.Digest
	for _, l := range layers {
		blob, diffID, mt, err := l.Build()
		if err != nil {
			return ocispec.Descriptor{}, nil, err
		}
		d, err := push(mt, blob)
		if err != nil {
			return ocispec.Descriptor{}, nil, err
		}
		descs, diffIDs = append(descs, d), append(diffIDs, diffID)
	}
	cfg := ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"},
		Config:   ocispec.ImageConfig{Entrypoint: entrypoint, Env: []string{"PATH=/bin"}},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	}
	cb, _ := json.Marshal(cfg)
	cdesc, err := push(ocispec.MediaTypeImageConfig, cb)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cdesc, Layers: descs}
	mb, _ := json.Marshal(m)
	md := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(mb), Size: int64(len(mb))}
	if err := r.PushReference(ctx, md, bytes.NewReader(mb), tag); err != nil {
		return ocispec.Descriptor{}, nil, fmt.Errorf("push manifest: %w", err)
	}
	return md, descs, nil
}
