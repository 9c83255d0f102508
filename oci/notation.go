package oci

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"

	"github.com/notaryproject/notation-core-go/signature/cose"
	"github.com/notaryproject/notation-core-go/signature/jws"
	"github.com/notaryproject/notation-go"
	notationregistry "github.com/notaryproject/notation-go/registry"
	"github.com/notaryproject/notation-go/signer"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// NotationOptions configures NotationSign.
type NotationOptions struct {
	Key crypto.Signer
	// Chain is the signing certificate followed by its issuers up to and
	// including the root CA (notation requires the complete chain).
	Chain []*x509.Certificate
	// Format is the envelope: "cose" (default) or "jws".
	Format string
}

// NotationResult is one notation signature pushed for a platform manifest.
type NotationResult struct {
	Manifest  digest.Digest `json:"manifest"`
	Format    string        `json:"format"`
	Signature digest.Digest `json:"signature"`
}

// NotationSign signs each platform manifest of res with notation-go (a
// Notary Project signature envelope pushed as a referrer of artifactType
// application/vnd.cncf.notary.signature), so that notation's verify tooling
// accepts the image. It is independent of the dm-verity referrer.
func NotationSign(ctx context.Context, repo *Repo, res *SignResult, opts NotationOptions) ([]NotationResult, error) {
	mt := cose.MediaTypeEnvelope
	switch opts.Format {
	case "", "cose":
		opts.Format = "cose"
	case "jws":
		mt = jws.MediaTypeEnvelope
	default:
		return nil, fmt.Errorf("%w: notation envelope %q (want cose or jws)", ErrUnsupported, opts.Format)
	}
	if len(opts.Chain) < 2 || opts.Chain[len(opts.Chain)-1].CheckSignatureFrom(opts.Chain[len(opts.Chain)-1]) != nil {
		return nil, fmt.Errorf("%w: notation needs the complete certificate chain up to the self-signed root CA (add it with --chain)", ErrSignature)
	}
	s, err := signer.NewGenericSigner(opts.Key, opts.Chain)
	if err != nil {
		return nil, fmt.Errorf("notation signer: %w", err)
	}
	nrepo := notationregistry.NewRepository(repo.Target)
	var out []NotationResult
	for _, p := range res.Platforms {
		desc, err := notation.Sign(ctx, s, nrepo, notation.SignOptions{
			SignerSignOptions: notation.SignerSignOptions{SignatureMediaType: mt},
			ArtifactReference: p.Manifest.String(),
		})
		if err != nil {
			return nil, fmt.Errorf("notation sign %s: %w", p.Manifest, err)
		}
		_ = desc
		sigs, err := notationSignatures(ctx, nrepo, p.Manifest)
		if err != nil {
			return nil, err
		}
		out = append(out, NotationResult{Manifest: p.Manifest, Format: opts.Format, Signature: sigs})
	}
	return out, nil
}

// notationSignatures returns the digest of the newest notation signature
// manifest of m (the last listed).
func notationSignatures(ctx context.Context, nrepo notationregistry.Repository, m digest.Digest) (digest.Digest, error) {
	desc, err := nrepo.Resolve(ctx, m.String())
	if err != nil {
		return "", fmt.Errorf("notation: resolve %s: %w", m, err)
	}
	var last digest.Digest
	err = nrepo.ListSignatures(ctx, desc, func(ds []ocispec.Descriptor) error {
		for _, d := range ds {
			last = d.Digest
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("notation: list signatures of %s: %w", m, err)
	}
	return last, nil
}
