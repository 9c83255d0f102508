package oci

import (
	"context"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Selection is the outcome of referrer discovery for one platform manifest.
type Selection struct {
	Selected   *Bundle
	Candidates []*Bundle // every referrer found, all valid
}

// ReferrerSource is what referrer discovery needs from the place an image
// lives: its dm-verity referrers (already filtered by ArtifactType where the
// registry can) and bounded fetches whose size and digest are checked. A
// Repo is one; a host daemon that reaches registries through containerd's
// own resolver (and its hosts.toml) is another.
type ReferrerSource interface {
	Referrers(ctx context.Context, subject ocispec.Descriptor) ([]ocispec.Descriptor, error)
	FetchAll(ctx context.Context, d ocispec.Descriptor, max int64) ([]byte, error)
}

// SelectBundle discovers the dm-verity referrers of the platform manifest p
// in r and selects one (see SelectFrom).
func (r *Repo) SelectBundle(ctx context.Context, p Platform) (*Selection, error) {
	return SelectFrom(ctx, r, p)
}

// SelectFrom discovers the dm-verity referrers of the platform manifest p
// and selects one as Azure Linux's containerd2 does: every candidate is
// fetched (at most MaxReferrers, each at most MaxManifestSize, together at
// most MaxReferrersTotalSize), parsed and validated, and any malformed
// candidate fails the whole selection; the newest created annotation wins,
// ties go to the lexicographically smallest manifest digest. No referrer at
// all fails with ErrNoReferrer.
func SelectFrom(ctx context.Context, src ReferrerSource, p Platform) (*Selection, error) {
	all, err := src.Referrers(ctx, p.Desc)
	if err != nil {
		return nil, err
	}
	var refs []ocispec.Descriptor
	for _, d := range all {
		if d.ArtifactType == "" || d.ArtifactType == ArtifactType {
			refs = append(refs, d) // a source that ignored the filter
		}
	}
	if err := checkReferrerBounds(p.Desc.Digest, refs); err != nil {
		return nil, err
	}
	if len(refs) == 0 {
		return nil, fmt.Errorf("%w for %s: the image is not signed", ErrNoReferrer, describe(p))
	}
	sel := &Selection{}
	for _, d := range refs {
		d.URLs = nil
		data, err := src.FetchAll(ctx, d, MaxManifestSize)
		if err != nil {
			return nil, fmt.Errorf("fetch referrer %s: %w", d.Digest, err)
		}
		b, err := ParseBundle(d, data, p.Desc.Digest, uniqueLayers(p.Manifest.Layers))
		if err != nil {
			return nil, err
		}
		sel.Candidates = append(sel.Candidates, b)
		if sel.Selected == nil || newer(b, sel.Selected) {
			sel.Selected = b
		}
	}
	return sel, nil
}

func uniqueLayers(ls []ocispec.Descriptor) []ocispec.Descriptor {
	seen := map[string]bool{}
	var out []ocispec.Descriptor
	for _, l := range ls {
		if !seen[l.Digest.String()] {
			seen[l.Digest.String()] = true
			out = append(out, l)
		}
	}
	return out
}
