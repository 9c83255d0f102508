package snapshotter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/reference"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/intact-project/intact/oci"
)

// verdict is the decision on one platform manifest of an image: signed
// (bundle is its selected dm-verity referrer) or unsigned but allowed.
type verdict struct {
	image    string
	manifest ocispec.Manifest
	bundle   *oci.Bundle // nil: unsigned, allowed
	src      *registrySource
	expires  time.Time
}

// verdictTTL is how long a referrer selection is reused: one pull asks for
// every layer of a manifest within seconds; a later pull selects again (a
// re-signed image's newer referrer wins then).
const verdictTTL = 2 * time.Minute

type verdictCache struct {
	mu sync.Mutex
	m  map[string]*verdict
}

func (c *verdictCache) get(k string) *verdict {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.m[k]
	if v != nil && time.Now().After(v.expires) {
		delete(c.m, k)
		return nil
	}
	return v
}

func (c *verdictCache) put(k string, v *verdict) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*verdict{}
	}
	if len(c.m) >= 256 {
		for k := range c.m { // drop an arbitrary entry; the cache is a speed-up only
			delete(c.m, k)
			break
		}
	}
	c.m[k] = v
}

// verdict decides whether the layers of o's image may run: the image's
// platform manifest (from containerd's content store) must have a dm-verity
// referrer that selects cleanly, or unsigned images must be allowed for its
// repository. Without an image reference only a configuration without
// RequireSignatures lets a layer through (unsigned).
func (s *Snapshotter) verdict(ctx context.Context, o origin) (*verdict, error) {
	if o.Image == "" || o.Manifest == "" {
		if s.unsignedAllowed("") {
			return &verdict{}, nil
		}
		return nil, fmt.Errorf("%w: containerd passed no containerd.io/snapshot/cri.image-ref and cri.manifest-digest labels, so intactd cannot find the layer's signature; give the intact snapshotter the export enable_remote_snapshot_annotations = \"true\" (see `intactd containerd-config`)", ErrNoImage)
	}
	k := o.Image + "@" + o.Manifest.String()
	if v := s.verdicts.get(k); v != nil {
		return v, nil
	}
	if s.opts.Content == nil {
		return nil, fmt.Errorf("%w: no content store to read manifest %s from", ErrReferrer, o.Manifest)
	}
	desc, m, err := readManifest(contentContext(ctx), s.opts.Content, o.Manifest)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrReferrer, err)
	}
	src, err := newRegistrySource(ctx, s.hosts, o.Image)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrReferrer, err)
	}
	v := &verdict{image: o.Image, manifest: m, src: src, expires: time.Now().Add(verdictTTL)}
	sel, err := oci.SelectFrom(ctx, src, oci.Platform{Desc: desc, Manifest: m})
	switch {
	case errors.Is(err, oci.ErrNoReferrer):
		if !s.unsignedAllowed(o.Image) {
			return nil, fmt.Errorf("%w: %s has no dm-verity referrer for manifest %s, and unsigned images are not allowed for it (require_signatures; allow_unsigned)", ErrUnsigned, o.Image, o.Manifest)
		}
		s.log.Info("unsigned image allowed: its layers are converted here and opened without a signature", "image", o.Image, "manifest", o.Manifest)
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrReferrer, err)
	default:
		v.bundle = sel.Selected
		s.log.Debug("referrer selected", "image", o.Image, "manifest", o.Manifest, "referrer", sel.Selected.Desc.Digest, "candidates", len(sel.Candidates))
	}
	s.verdicts.put(k, v)
	return v, nil
}

// contentContext carries the containerd namespace of an incoming request
// (gRPC metadata) on to the requests intactd makes to containerd's content
// store.
func contentContext(ctx context.Context) context.Context {
	if ns, ok := namespaces.Namespace(ctx); ok {
		return namespaces.WithNamespace(ctx, ns)
	}
	return ctx
}

// readManifest reads a platform manifest from containerd's content store.
func readManifest(ctx context.Context, cs ContentStore, d digest.Digest) (ocispec.Descriptor, ocispec.Manifest, error) {
	info, err := cs.Info(ctx, d)
	if err != nil {
		return ocispec.Descriptor{}, ocispec.Manifest{}, fmt.Errorf("manifest %s: %w", d, err)
	}
	if info.Size > oci.MaxManifestSize {
		return ocispec.Descriptor{}, ocispec.Manifest{}, fmt.Errorf("manifest %s is %d bytes, the limit is %d", d, info.Size, oci.MaxManifestSize)
	}
	desc := ocispec.Descriptor{Digest: d, Size: info.Size}
	b, err := content.ReadBlob(ctx, cs, desc)
	if err != nil {
		return ocispec.Descriptor{}, ocispec.Manifest{}, fmt.Errorf("manifest %s: %w", d, err)
	}
	if digest.SHA256.FromBytes(b) != d && d.Algorithm().FromBytes(b) != d {
		return ocispec.Descriptor{}, ocispec.Manifest{}, fmt.Errorf("manifest %s: content does not match its digest", d)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return ocispec.Descriptor{}, ocispec.Manifest{}, fmt.Errorf("manifest %s: %w", d, err)
	}
	desc.MediaType = m.MediaType
	if desc.MediaType == "" {
		desc.MediaType = ocispec.MediaTypeImageManifest
	}
	if !images.IsManifestType(desc.MediaType) {
		return ocispec.Descriptor{}, ocispec.Manifest{}, fmt.Errorf("%s is a %s, not a platform manifest", d, desc.MediaType)
	}
	return desc, m, nil
}

// unsignedAllowed reports whether an image without a referrer (image "" for
// a layer or commit with no image at all) may be converted and opened
// unsigned.
func (s *Snapshotter) unsignedAllowed(image string) bool {
	if !s.opts.RequireSignatures {
		return true
	}
	if image == "" {
		return false
	}
	repo := image
	if spec, err := reference.Parse(image); err == nil {
		repo = spec.Locator
	}
	for _, p := range s.opts.AllowUnsigned {
		if matchRepo(p, repo) {
			return true
		}
	}
	return false
}

// matchRepo matches a repository ("host/path") against an allow_unsigned
// pattern: "*", "host/*", "host/path/*" or an exact "host/path".
func matchRepo(pattern, repo string) bool {
	if pattern == "*" {
		return true
	}
	if prefix, ok := strings.CutSuffix(pattern, "/*"); ok {
		return strings.HasPrefix(repo, prefix+"/")
	}
	return pattern == repo
}

// CheckPattern validates an allow_unsigned pattern (see Options).
func CheckPattern(p string) error {
	if p == "*" {
		return nil
	}
	body, all := strings.CutSuffix(p, "/*")
	host, path, _ := strings.Cut(body, "/")
	if host == "" || (path == "" && !all) || strings.ContainsAny(body, "*@ \t") || strings.HasSuffix(body, "/") || strings.Contains(path, ":") {
		return fmt.Errorf("snapshotter: allow_unsigned pattern %q: want \"*\", \"host/*\", \"host/path/*\" or a repository \"host/path\" (no tag or digest)", p)
	}
	return nil
}
