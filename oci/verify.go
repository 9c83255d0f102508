package oci

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// VerifyOptions configures Verify. Roots is required.
type VerifyOptions struct {
	// Roots are the trusted CAs every root-hash signature must chain to.
	Roots *x509.CertPool
	// Platforms chooses the platform manifests of an index.
	Platforms PlatformSelector
	// Full also fetches every layer, converts it again and compares the
	// metadata and tree bytes and the root hash with the referrer's.
	Full bool
	// TempDir holds fetched trees and recomputed layers; empty means the
	// system default.
	TempDir string
	// MaxLayerSize bounds a decompressed layer with Full; zero means the
	// layer package's default.
	MaxLayerSize int64
	// Concurrency is how many layers are checked at once; zero means 2.
	Concurrency int
	Progress    ProgressFunc
	Logger      *slog.Logger
}

// LayerReport is the verdict on one layer.
type LayerReport struct {
	Digest          digest.Digest `json:"digest"`
	RootHash        string        `json:"root_hash,omitempty"`
	SignatureDigest digest.Digest `json:"signature_digest,omitempty"`
	Signer          string        `json:"signer,omitempty"`
	MetadataDigest  digest.Digest `json:"metadata_digest,omitempty"`
	TreeDigest      digest.Digest `json:"tree_digest,omitempty"`
	DataBlocks      uint64        `json:"data_blocks,omitempty"`
	Checks          []string      `json:"checks"`
	OK              bool          `json:"ok"`
	Error           string        `json:"error,omitempty"`
	err             error
}

// PlatformReport is the verdict on one platform manifest.
type PlatformReport struct {
	Platform   string        `json:"platform"`
	Manifest   digest.Digest `json:"manifest"`
	Referrer   digest.Digest `json:"referrer,omitempty"`
	Created    string        `json:"created,omitempty"`
	Candidates int           `json:"candidates"`
	Layers     []LayerReport `json:"layers"`
	OK         bool          `json:"ok"`
	Error      string        `json:"error,omitempty"`
	// Unsigned: the platform manifest has no dm-verity referrer at all.
	Unsigned bool `json:"unsigned,omitempty"`
}

// VerifyReport is the verdict on an image: OK only if every layer of every
// chosen platform verified.
type VerifyReport struct {
	Image     string           `json:"image"`
	Digest    digest.Digest    `json:"digest"`
	Full      bool             `json:"full"`
	Platforms []PlatformReport `json:"platforms"`
	// Unsigned lists the chosen platforms without any dm-verity referrer.
	Unsigned []string `json:"unsigned,omitempty"`
	OK       bool     `json:"ok"`
	Seconds  float64  `json:"seconds"`
}

// Err returns nil if the report is OK, else an error naming the first
// failure (wrapping its sentinel) and how many failed.
func (r *VerifyReport) Err() error {
	if r.OK {
		return nil
	}
	var first error
	n := 0
	for _, p := range r.Platforms {
		if p.Error != "" {
			n++
			if first == nil {
				first = fmt.Errorf("%s: %s", describeReport(p), p.Error)
			}
		}
		for _, l := range p.Layers {
			if !l.OK {
				n++
				if first == nil {
					first = fmt.Errorf("%s: layer %s: %w", describeReport(p), l.Digest, l.err)
				}
			}
		}
	}
	if first == nil {
		return errors.New("verification failed")
	}
	if n > 1 {
		return fmt.Errorf("%w (and %d more failures)", first, n-1)
	}
	return first
}

// Verify verifies the image repo names. It returns an error only when the
// image itself cannot be read (bad reference, registry failure); every
// verdict, good or bad, is in the report. A platform fails as a whole when
// its referrers cannot be listed, selection fails (none, too many, too
// large, any malformed) or a referrer blob cannot be fetched; a layer fails
// when its signature does not chain to opts.Roots or does not cover its root
// hash, its tree's superblock has other parameters than the tar-index
// profile, the tree's top-level hash is not the root hash, the metadata is
// not the first blocks of the tree's data or names another layer, or (with
// Full) recomputing metadata and tree from the layer gives other bytes.
func Verify(ctx context.Context, repo *Repo, opts VerifyOptions) (*VerifyReport, error) {
	if opts.Roots == nil {
		return nil, fmt.Errorf("%w: no trusted CA given", ErrSignature)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 2
	}
	start := time.Now()
	root, err := repo.Resolve(ctx)
	if err != nil {
		return nil, err
	}
	plats, err := repo.Platforms(ctx, root, opts.Platforms)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(opts.TempDir, "intact-verify-")
	if err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	defer os.RemoveAll(dir)
	rep := &VerifyReport{Image: repo.Name, Digest: root.Digest, Full: opts.Full, OK: true}
	for _, p := range plats {
		pr := verifyPlatform(ctx, repo, p, opts, dir)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		rep.OK = rep.OK && pr.OK
		rep.Platforms = append(rep.Platforms, pr)
		if pr.Unsigned {
			rep.Unsigned = append(rep.Unsigned, pr.Platform)
		}
	}
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

func verifyPlatform(ctx context.Context, repo *Repo, p Platform, opts VerifyOptions, dir string) PlatformReport {
	pr := PlatformReport{Platform: PlatformString(p.Desc.Platform), Manifest: p.Desc.Digest}
	sel, err := repo.SelectBundle(ctx, p)
	if err != nil {
		pr.Error = err.Error()
		pr.Unsigned = errors.Is(err, ErrNoReferrer)
		return pr
	}
	b := sel.Selected
	pr.Referrer = b.Desc.Digest
	pr.Candidates = len(sel.Candidates)
	if !b.Created.IsZero() {
		pr.Created = FormatCreated(b.Created)
	}
	pr.OK = true
	layers := uniqueLayers(p.Manifest.Layers)
	pr.Layers = make([]LayerReport, len(layers))
	var wg sync.WaitGroup
	sem := make(chan struct{}, opts.Concurrency)
	for i, l := range layers {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			pr.Layers[i] = verifyLayer(ctx, repo, l, b.Layers[l.Digest], opts, dir)
		}()
	}
	wg.Wait()
	for i := range pr.Layers {
		lr := &pr.Layers[i]
		if lr.err != nil {
			lr.Error = lr.err.Error()
			pr.OK = false
		} else {
			lr.OK = true
		}
	}
	return pr
}

func verifyLayer(ctx context.Context, repo *Repo, l ocispec.Descriptor, e *BundleLayer, opts VerifyOptions, dir string) (lr LayerReport) {
	lr = LayerReport{Digest: l.Digest, Checks: []string{}}
	if e == nil { // ParseBundle guarantees coverage; keep the check local too.
		lr.err = fmt.Errorf("%w: no artifacts for this layer", ErrMalformed)
		return lr
	}
	lr.RootHash, lr.SignatureDigest = e.RootHash, e.SigDesc.Digest
	lr.MetadataDigest, lr.TreeDigest = e.Metadata.Digest, e.Tree.Digest
	if opts.Progress != nil {
		opts.Progress(Progress{Layer: l.Digest, Stage: "verify", Total: l.Size})
	}
	if err := checkRootHash(e.RootHash); err != nil {
		lr.err = err
		return lr
	}
	signer, err := VerifyRootHashSignature(e.Signature, e.RootHash, opts.Roots)
	if err != nil {
		lr.err = err
		return lr
	}
	lr.Signer = signer.Subject.String()
	lr.Checks = append(lr.Checks, "signature chains to the trusted CA and covers the root hash")

	meta, err := repo.FetchAll(ctx, e.Metadata, maxMetadataInMemory)
	if err != nil {
		lr.err = fmt.Errorf("EROFS metadata: %w", err)
		return lr
	}
	if err := CheckMetadata(meta, l.Digest); err != nil {
		lr.err = err
		return lr
	}
	lr.Checks = append(lr.Checks, "EROFS metadata is tar-index with this layer's UUID")

	treePath, err := fetchToFile(ctx, repo, e.Tree, dir)
	if err != nil {
		lr.err = fmt.Errorf("hash tree: %w", err)
		return lr
	}
	defer os.Remove(treePath)
	tf, err := os.Open(treePath)
	if err != nil {
		lr.err = err
		return lr
	}
	defer tf.Close()
	blocks, err := CheckTree(tf, e.Tree.Size, meta, e.RootHash)
	if err != nil {
		lr.err = err
		return lr
	}
	lr.DataBlocks = blocks
	lr.Checks = append(lr.Checks,
		"tree superblock: sha256, format 1, 512/512 blocks, 32 zero-byte salt",
		"root hash is the tree's top-level hash",
		"metadata blocks match the tree")

	if opts.Full {
		if err := recompute(ctx, repo, l, e, blocks, opts, dir); err != nil {
			lr.err = err
			return lr
		}
		lr.Checks = append(lr.Checks, "recomputed metadata, tree and root hash from the layer: identical")
	}
	return lr
}

// maxMetadataInMemory bounds an EROFS metadata blob fetched into memory; a
// tar-index metadata blob holds inodes and chunk indexes only (tens of bytes
// per file), so real layers stay far below it.
const maxMetadataInMemory = 512 << 20

func fetchToFile(ctx context.Context, repo *Repo, d ocispec.Descriptor, dir string) (string, error) {
	if d.Size <= 0 || d.Size > MaxArtifactSize {
		return "", fmt.Errorf("%w: %s is %d bytes", ErrTooLarge, d.Digest, d.Size)
	}
	rc, err := repo.Open(ctx, d)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	f, err := os.CreateTemp(dir, "blob-")
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(f, io.LimitReader(rc, d.Size+1)); err != nil {
		f.Close()
		os.Remove(f.Name())
		return "", err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// recompute converts the layer again and compares everything.
func recompute(ctx context.Context, repo *Repo, l ocispec.Descriptor, e *BundleLayer, blocks uint64, opts VerifyOptions, dir string) error {
	rc, err := repo.Open(ctx, l)
	if err != nil {
		return err
	}
	defer rc.Close()
	var r io.Reader = rc
	if opts.Progress != nil {
		r = &progressReader{r: rc, fn: opts.Progress, p: Progress{Layer: l.Digest, Stage: "recompute", Total: l.Size}}
	}
	conv, err := ConvertLayer(ctx, r, l, dir, opts.MaxLayerSize)
	if err != nil {
		return fmt.Errorf("recompute: %w", blameDigest(rc, err))
	}
	defer conv.Remove()
	if conv.RootHash != e.RootHash {
		return fmt.Errorf("%w: the layer's recomputed root hash is %s, the signed root hash is %s", ErrLayerMismatch, conv.RootHash, e.RootHash)
	}
	if conv.Metadata.Digest != e.Metadata.Digest || conv.Metadata.Size != e.Metadata.Size {
		return fmt.Errorf("%w: recomputed EROFS metadata %s (%d bytes) differs from the referrer's %s (%d bytes)", ErrLayerMismatch, conv.Metadata.Digest, conv.Metadata.Size, e.Metadata.Digest, e.Metadata.Size)
	}
	if conv.Tree.Digest != e.Tree.Digest || conv.Tree.Size != e.Tree.Size {
		return fmt.Errorf("%w: recomputed hash tree %s (%d bytes) differs from the referrer's %s (%d bytes)", ErrLayerMismatch, conv.Tree.Digest, conv.Tree.Size, e.Tree.Digest, e.Tree.Size)
	}
	if conv.DataBlocks != blocks {
		return fmt.Errorf("%w: recomputed data device has %d blocks, the tree covers %d", ErrLayerMismatch, conv.DataBlocks, blocks)
	}
	return nil
}

func describeReport(p PlatformReport) string {
	if p.Platform == "unknown" {
		return "manifest " + p.Manifest.String()
	}
	return p.Platform + " manifest " + p.Manifest.String()
}
