package snapshotter

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/intact-project/intact/oci"
)

// RegistryHosts builds containerd's registry host configuration from a
// hosts directory laid out as containerd's config_path
// (<dir>/<host>/hosts.toml with mirrors, capabilities, server, plain-http
// and TLS settings, CA and client certificates), exactly as containerd reads
// it. dir "" uses containerd's defaults (HTTPS; loopback registries may
// fall back to plain HTTP, as containerd allows them). creds, if set,
// returns a user name and secret for a host.
func RegistryHosts(ctx context.Context, dir string, creds func(host string) (string, string, error)) docker.RegistryHosts {
	opts := config.HostOptions{Credentials: creds}
	if dir != "" {
		opts.HostDir = config.HostDirFromRoot(dir)
	}
	return config.ConfigureHosts(ctx, opts)
}

// registrySource reaches one image's repository through containerd's own
// resolver: referrers (the referrers API, or the sha256-<hex> tag schema)
// and blobs, each bounded and digest-checked. It is the oci.ReferrerSource
// intactd selects signed referrers from.
type registrySource struct {
	ref     string
	fetcher remotes.Fetcher
}

func newRegistrySource(ctx context.Context, hosts docker.RegistryHosts, ref string) (*registrySource, error) {
	r := docker.NewResolver(docker.ResolverOptions{Hosts: hosts})
	f, err := r.Fetcher(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("registry for %s: %w", ref, err)
	}
	return &registrySource{ref: ref, fetcher: f}, nil
}

// Referrers lists the dm-verity referrers of subject.
func (s *registrySource) Referrers(ctx context.Context, subject ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	rf, ok := s.fetcher.(remotes.ReferrersFetcher)
	if !ok {
		return nil, fmt.Errorf("%w: the resolver for %s cannot list referrers", errdefs.ErrNotImplemented, s.ref)
	}
	refs, err := rf.FetchReferrers(ctx, subject.Digest, remotes.WithReferrerArtifactTypes(oci.ArtifactType))
	if err != nil {
		return nil, fmt.Errorf("list referrers of %s in %s: %w", subject.Digest, s.ref, err)
	}
	return refs, nil
}

// FetchAll fetches d, at most max bytes, and checks its size and digest.
func (s *registrySource) FetchAll(ctx context.Context, d ocispec.Descriptor, max int64) ([]byte, error) {
	if err := d.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("%w: descriptor digest %q: %w", oci.ErrMalformed, d.Digest, err)
	}
	if d.Size < 0 || d.Size > max {
		return nil, fmt.Errorf("%w: %s is %d bytes, the limit is %d", oci.ErrTooLarge, d.Digest, d.Size, max)
	}
	rc, err := s.fetcher.Fetch(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("fetch %s from %s: %w", d.Digest, s.ref, err)
	}
	defer rc.Close()
	var b bytes.Buffer
	if _, err := io.Copy(&b, io.LimitReader(rc, d.Size+1)); err != nil {
		return nil, fmt.Errorf("fetch %s from %s: %w", d.Digest, s.ref, err)
	}
	if int64(b.Len()) != d.Size || d.Digest.Algorithm().FromBytes(b.Bytes()) != d.Digest {
		return nil, fmt.Errorf("%w: %s from %s: got %d bytes with another digest", oci.ErrDigestMismatch, d.Digest, s.ref, b.Len())
	}
	return b.Bytes(), nil
}

// Copy streams d into w (at most d.Size bytes) and checks size and digest.
func (s *registrySource) Copy(ctx context.Context, w io.Writer, d ocispec.Descriptor) error {
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("%w: descriptor digest %q: %w", oci.ErrMalformed, d.Digest, err)
	}
	rc, err := s.fetcher.Fetch(ctx, d)
	if err != nil {
		return fmt.Errorf("fetch %s from %s: %w", d.Digest, s.ref, err)
	}
	defer rc.Close()
	dg := d.Digest.Algorithm().Digester()
	n, err := io.Copy(io.MultiWriter(w, dg.Hash()), io.LimitReader(rc, d.Size+1))
	if err != nil {
		return fmt.Errorf("fetch %s from %s: %w", d.Digest, s.ref, err)
	}
	if n != d.Size || dg.Digest() != d.Digest {
		return fmt.Errorf("%w: %s from %s: got %d bytes with digest %s", oci.ErrDigestMismatch, d.Digest, s.ref, n, dg.Digest())
	}
	return nil
}

var _ oci.ReferrerSource = (*registrySource)(nil)

// digestOrEmpty parses s, or returns "" when s is not a digest.
func digestOrEmpty(s string) digest.Digest {
	d, err := digest.Parse(s)
	if err != nil {
		return ""
	}
	return d
}
