package oci

import (
	"context"

	"github.com/opencontainers/go-digest"

	"github.com/intact-project/intact/pkcs7"
)

// InspectLayer is one layer's entry in a referrer.
type InspectLayer struct {
	Digest          digest.Digest `json:"digest"`
	RootHash        string        `json:"root_hash"`
	SignatureDigest digest.Digest `json:"signature_digest"`
	SignatureSize   int64         `json:"signature_size"`
	Signer          string        `json:"signer,omitempty"`
	Issuer          string        `json:"issuer,omitempty"`
	MetadataDigest  digest.Digest `json:"metadata_digest"`
	MetadataSize    int64         `json:"metadata_size"`
	TreeDigest      digest.Digest `json:"tree_digest"`
	TreeSize        int64         `json:"tree_size"`
}

// InspectReferrer is one dm-verity referrer of a platform manifest.
type InspectReferrer struct {
	Digest   digest.Digest  `json:"digest"`
	Size     int64          `json:"size"`
	Created  string         `json:"created,omitempty"`
	Selected bool           `json:"selected"`
	Error    string         `json:"error,omitempty"`
	Layers   []InspectLayer `json:"layers,omitempty"`
}

// InspectPlatform lists the referrers of one platform manifest.
type InspectPlatform struct {
	Platform  string            `json:"platform"`
	Manifest  digest.Digest     `json:"manifest"`
	Layers    []digest.Digest   `json:"layers"`
	Referrers []InspectReferrer `json:"referrers"`
	Error     string            `json:"error,omitempty"`
}

// InspectResult describes the dm-verity referrers of an image.
type InspectResult struct {
	Image     string            `json:"image"`
	Digest    digest.Digest     `json:"digest"`
	Platforms []InspectPlatform `json:"platforms"`
}

// Inspect lists the dm-verity referrers of every chosen platform manifest
// with their layers and signatures, marking the one the consumer would
// select. It checks nothing cryptographically (use Verify); a referrer the
// consumer's parser rejects is listed with the reason.
func Inspect(ctx context.Context, repo *Repo, sel PlatformSelector) (*InspectResult, error) {
	root, err := repo.Resolve(ctx)
	if err != nil {
		return nil, err
	}
	plats, err := repo.Platforms(ctx, root, sel)
	if err != nil {
		return nil, err
	}
	res := &InspectResult{Image: repo.Name, Digest: root.Digest}
	for _, p := range plats {
		ip := InspectPlatform{Platform: PlatformString(p.Desc.Platform), Manifest: p.Desc.Digest, Referrers: []InspectReferrer{}}
		for _, l := range p.Manifest.Layers {
			ip.Layers = append(ip.Layers, l.Digest)
		}
		refs, err := repo.Referrers(ctx, p.Desc)
		if err != nil {
			ip.Error = err.Error()
			res.Platforms = append(res.Platforms, ip)
			continue
		}
		var best *Bundle
		bestIdx := -1
		for _, d := range refs {
			ir := InspectReferrer{Digest: d.Digest, Size: d.Size}
			data, err := repo.FetchAll(ctx, d, MaxManifestSize)
			if err != nil {
				ir.Error = err.Error()
				ip.Referrers = append(ip.Referrers, ir)
				continue
			}
			b, err := ParseBundle(d, data, p.Desc.Digest, uniqueLayers(p.Manifest.Layers))
			if err != nil {
				ir.Error = err.Error()
				ip.Referrers = append(ip.Referrers, ir)
				continue
			}
			if !b.Created.IsZero() {
				ir.Created = FormatCreated(b.Created)
			}
			for _, l := range uniqueLayers(p.Manifest.Layers) {
				e := b.Layers[l.Digest]
				il := InspectLayer{
					Digest: l.Digest, RootHash: e.RootHash,
					SignatureDigest: e.SigDesc.Digest, SignatureSize: e.SigDesc.Size,
					MetadataDigest: e.Metadata.Digest, MetadataSize: e.Metadata.Size,
					TreeDigest: e.Tree.Digest, TreeSize: e.Tree.Size,
				}
				if sd, err := pkcs7.Parse(e.Signature); err == nil && len(sd.Certificates) > 0 {
					il.Signer = sd.Certificates[0].Subject.String()
					il.Issuer = sd.Certificates[0].Issuer.String()
				}
				ir.Layers = append(ir.Layers, il)
			}
			if best == nil || newer(b, best) {
				best, bestIdx = b, len(ip.Referrers)
			}
			ip.Referrers = append(ip.Referrers, ir)
		}
		// The consumer selects only when every candidate is valid.
		valid := true
		for _, r := range ip.Referrers {
			valid = valid && r.Error == ""
		}
		if valid && bestIdx >= 0 {
			ip.Referrers[bestIdx].Selected = true
		} else if !valid {
			ip.Error = "a malformed referrer is present: the consumer refuses the image until it is removed"
		}
		res.Platforms = append(res.Platforms, ip)
	}
	return res, nil
}
