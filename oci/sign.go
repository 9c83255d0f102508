package oci

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/intact-project/intact/pkcs7"
)

// Progress is a progress report from signing or verifying.
type Progress struct {
	Layer digest.Digest
	Stage string // "convert", "push", "verify", "recompute"
	Done  int64  // bytes of the layer blob processed so far
	Total int64  // size of the layer blob
}

// ProgressFunc receives progress reports; it must be cheap and safe for
// concurrent use.
type ProgressFunc func(Progress)

// SignOptions configures a Signer. Key and Cert are required.
type SignOptions struct {
	Key   crypto.Signer       // signs the root hashes
	Cert  *x509.Certificate   // embedded in every signature
	Chain []*x509.Certificate // intermediates, embedded too
	// Platforms chooses the platform manifests of an index.
	Platforms PlatformSelector
	// Created is the referrers' creation time; zero means now. It is moved
	// to 1ms after the newest existing referrer of the same manifest when
	// it is not later than that, so that a new signature (a rotated key)
	// always wins the consumer's newest-created selection.
	Created time.Time
	// TempDir holds converted layers until they are pushed; empty means
	// the system default.
	TempDir string
	// MaxLayerSize bounds a decompressed layer; zero means the layer
	// package's default.
	MaxLayerSize int64
	// Concurrency is how many layers are fetched and converted at once;
	// zero means 2 (one decompressing while another is hashed).
	Concurrency int
	Progress    ProgressFunc
	Logger      *slog.Logger
}

// LayerResult describes one signed layer.
type LayerResult struct {
	Digest          digest.Digest `json:"digest"`
	MediaType       string        `json:"media_type"`
	DiffID          digest.Digest `json:"diff_id"`
	RootHash        string        `json:"root_hash"`
	SignatureDigest digest.Digest `json:"signature_digest"`
	Size            int64         `json:"size"`
	TarSize         int64         `json:"tar_size"`
	MetadataSize    int64         `json:"metadata_size"`
	TreeSize        int64         `json:"tree_size"`
	MetadataDigest  digest.Digest `json:"metadata_digest"`
	TreeDigest      digest.Digest `json:"tree_digest"`
	Seconds         float64       `json:"seconds"`
	Cached          bool          `json:"cached"`
}

// PlatformResult describes the referrer pushed for one platform manifest.
type PlatformResult struct {
	Platform string             `json:"platform"`
	Manifest digest.Digest      `json:"manifest"`
	Referrer ocispec.Descriptor `json:"referrer"`
	Layers   []LayerResult      `json:"layers"`
}

// SignResult describes a signed image.
type SignResult struct {
	Image     string           `json:"image"`
	Digest    digest.Digest    `json:"digest"`
	Platforms []PlatformResult `json:"platforms"`
	Notation  []NotationResult `json:"notation,omitempty"`
	Seconds   float64          `json:"seconds"`
}

// signedLayer is a converted and signed layer, kept for reuse.
type signedLayer struct {
	conv      *Conversion
	signature []byte
	seconds   float64
}

// Signer signs images: it converts each layer once (layers shared between
// platforms or between images signed by the same Signer are converted and
// signed once), pushes the artifacts and one referrer per platform
// manifest. Close removes its temporary files.
type Signer struct {
	opts  SignOptions
	dir   string
	mu    sync.Mutex
	cache map[digest.Digest]*signedLayer
}

// NewSigner checks opts and makes a Signer.
func NewSigner(opts SignOptions) (*Signer, error) {
	if opts.Key == nil || opts.Cert == nil {
		return nil, fmt.Errorf("%w: a signing key and certificate are required", ErrSignature)
	}
	if err := checkKeyMatchesCert(opts.Key, opts.Cert); err != nil {
		return nil, err
	}
	// Refuse to publish signatures no host kernel can check (ENOKEY).
	if err := pkcs7.CheckKernelSigner(opts.Cert, opts.Chain); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignature, err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 2
	}
	dir, err := os.MkdirTemp(opts.TempDir, "intact-sign-")
	if err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	return &Signer{opts: opts, dir: dir, cache: map[digest.Digest]*signedLayer{}}, nil
}

// Close removes the Signer's temporary files.
func (s *Signer) Close() error { return os.RemoveAll(s.dir) }

// Sign signs the image repo names: every chosen platform manifest gets one
// referrer. Blobs are pushed first and each referrer manifest last, so a
// failure never leaves a referrer without its blobs.
func (s *Signer) Sign(ctx context.Context, repo *Repo) (*SignResult, error) {
	start := time.Now()
	root, err := repo.Resolve(ctx)
	if err != nil {
		return nil, err
	}
	plats, err := repo.Platforms(ctx, root, s.opts.Platforms)
	if err != nil {
		return nil, err
	}
	res := &SignResult{Image: repo.Name, Digest: root.Digest}
	for _, p := range plats {
		pr, err := s.signPlatform(ctx, repo, p)
		if err != nil {
			return nil, fmt.Errorf("sign %s: %w", describe(p), err)
		}
		res.Platforms = append(res.Platforms, *pr)
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

func (s *Signer) signPlatform(ctx context.Context, repo *Repo, p Platform) (*PlatformResult, error) {
	if !isManifest(p.Desc.MediaType) {
		return nil, fmt.Errorf("%w: %s is not an image manifest", ErrUnsupported, p.Desc.Digest)
	}
	if len(p.Manifest.Layers) == 0 {
		return nil, fmt.Errorf("%w: manifest has no layers", ErrUnsupported)
	}
	existing, err := repo.Referrers(ctx, p.Desc)
	if err != nil {
		return nil, err
	}
	if len(existing) >= MaxReferrers {
		return nil, fmt.Errorf("%w: the manifest already has %d dm-verity referrers, the consumer's limit is %d; delete old ones first", ErrTooMany, len(existing), MaxReferrers)
	}
	pr := &PlatformResult{Platform: PlatformString(p.Desc.Platform), Manifest: p.Desc.Digest}
	var arts []LayerArtifacts
	layers := uniqueLayers(p.Manifest.Layers)
	type done struct {
		sl     *signedLayer
		cached bool
	}
	results := make([]done, len(layers))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.opts.Concurrency)
	for i, l := range layers {
		g.Go(func() error {
			sl, cached, err := s.layer(gctx, repo, l)
			if err != nil {
				return fmt.Errorf("layer %s: %w", l.Digest, err)
			}
			a := LayerArtifacts{Layer: l, RootHash: sl.conv.RootHash, Signature: sl.signature, Metadata: sl.conv.Metadata, Tree: sl.conv.Tree}
			if err := s.pushArtifacts(gctx, repo, &a, sl.conv); err != nil {
				return fmt.Errorf("layer %s: %w", l.Digest, err)
			}
			results[i] = done{sl, cached}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for i, l := range layers {
		sl, cached := results[i].sl, results[i].cached
		arts = append(arts, LayerArtifacts{Layer: l, RootHash: sl.conv.RootHash, Signature: sl.signature, Metadata: sl.conv.Metadata, Tree: sl.conv.Tree})
		pr.Layers = append(pr.Layers, LayerResult{
			Digest: l.Digest, MediaType: l.MediaType, DiffID: sl.conv.DiffID, RootHash: sl.conv.RootHash,
			SignatureDigest: digest.FromBytes(sl.signature), Size: l.Size, TarSize: sl.conv.TarSize,
			MetadataSize: sl.conv.Metadata.Size, TreeSize: sl.conv.Tree.Size,
			MetadataDigest: sl.conv.Metadata.Digest, TreeDigest: sl.conv.Tree.Digest,
			Seconds: sl.seconds, Cached: cached,
		})
	}
	created := s.opts.Created
	if created.IsZero() {
		created = time.Now()
	}
	if created, err = s.laterThanExisting(ctx, repo, existing, created); err != nil {
		return nil, err
	}
	desc, data, err := BuildReferrer(p.Desc, arts, created)
	if err != nil {
		return nil, err
	}
	// Self-check before publishing: the consumer must accept what we push.
	if _, err := ParseBundle(desc, data, p.Desc.Digest, uniqueLayers(p.Manifest.Layers)); err != nil {
		return nil, fmt.Errorf("internal error: built referrer does not validate: %w", err)
	}
	if err := repo.PushReferrer(ctx, desc, data, arts); err != nil {
		return nil, err
	}
	pr.Referrer = desc
	s.opts.Logger.Debug("pushed dm-verity referrer", "manifest", p.Desc.Digest, "referrer", desc.Digest, "layers", len(arts))
	return pr, nil
}

// layer converts and signs layer l, or returns the cached result.
func (s *Signer) layer(ctx context.Context, repo *Repo, l ocispec.Descriptor) (*signedLayer, bool, error) {
	s.mu.Lock()
	sl := s.cache[l.Digest]
	s.mu.Unlock()
	if sl != nil {
		return sl, true, nil
	}
	start := time.Now()
	if !isLayerMediaType(l.MediaType) {
		return nil, false, fmt.Errorf("%w: layer media type %q (want an OCI or Docker tar layer)", ErrUnsupported, l.MediaType)
	}
	rc, err := repo.Open(ctx, l)
	if err != nil {
		return nil, false, err
	}
	defer rc.Close()
	var r io.Reader = rc
	if s.opts.Progress != nil {
		r = &progressReader{r: rc, fn: s.opts.Progress, p: Progress{Layer: l.Digest, Stage: "convert", Total: l.Size}}
	}
	conv, err := ConvertLayer(ctx, r, l, s.dir, s.opts.MaxLayerSize)
	if err != nil {
		return nil, false, blameDigest(rc, err)
	}
	sig, err := SignRootHash(conv.RootHash, s.opts.Key, s.opts.Cert, s.opts.Chain)
	if err != nil {
		conv.Remove()
		return nil, false, err
	}
	sl = &signedLayer{conv: conv, signature: sig, seconds: time.Since(start).Seconds()}
	s.mu.Lock()
	s.cache[l.Digest] = sl
	s.mu.Unlock()
	s.opts.Logger.Debug("converted layer", "layer", l.Digest, "root_hash", conv.RootHash, "seconds", sl.seconds)
	return sl, false, nil
}

func (s *Signer) pushArtifacts(ctx context.Context, repo *Repo, a *LayerArtifacts, conv *Conversion) error {
	if s.opts.Progress != nil {
		s.opts.Progress(Progress{Layer: a.Layer.Digest, Stage: "push", Done: a.Layer.Size, Total: a.Layer.Size})
	}
	if err := repo.PushBlob(ctx, a.Metadata, func() (io.ReadCloser, error) { return os.Open(conv.MetadataPath) }); err != nil {
		return fmt.Errorf("push EROFS metadata: %w", err)
	}
	if err := repo.PushBlob(ctx, a.Tree, func() (io.ReadCloser, error) { return os.Open(conv.TreePath) }); err != nil {
		return fmt.Errorf("push hash tree: %w", err)
	}
	return nil
}

// PushReferrer publishes a referrer built by BuildReferrer: the signature
// blobs and the empty config first, the manifest last. The metadata and
// tree blobs of arts must already be in the repository.
func (r *Repo) PushReferrer(ctx context.Context, desc ocispec.Descriptor, manifest []byte, arts []LayerArtifacts) error {
	for i := range arts {
		sd := arts[i].SignatureDescriptor()
		sd.Annotations = nil
		sig := arts[i].Signature
		if err := r.PushBlob(ctx, sd, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(sig)), nil }); err != nil {
			return fmt.Errorf("push signature of layer %s: %w", arts[i].Layer.Digest, err)
		}
	}
	if err := r.PushBlob(ctx, emptyConfig, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(emptyConfig.Data)), nil }); err != nil {
		return fmt.Errorf("push empty config: %w", err)
	}
	if err := r.Target.Push(ctx, desc, bytes.NewReader(manifest)); err != nil && !isAlreadyExists(err) {
		return fmt.Errorf("push referrer manifest: %w", err)
	}
	return nil
}

func isAlreadyExists(err error) bool {
	return err != nil && errors.Is(err, errAlreadyExists)
}

type progressReader struct {
	r  io.Reader
	fn ProgressFunc
	p  Progress
	n  int64
}

func (pr *progressReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	pr.p.Done += int64(n)
	pr.n += int64(n)
	if pr.n >= 1<<20 || err != nil {
		pr.n = 0
		pr.fn(pr.p)
	}
	return n, err
}

// isLayerMediaType reports whether mt is a tar layer (OCI or Docker, any of
// the compressions the layer package detects).
func isLayerMediaType(mt string) bool {
	switch mt {
	case ocispec.MediaTypeImageLayer, ocispec.MediaTypeImageLayerGzip, ocispec.MediaTypeImageLayerZstd,
		// Non-distributable (deprecated) OCI layers and Docker layers are
		// still tar layers a host unpacks.
		"application/vnd.oci.image.layer.nondistributable.v1.tar",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
		"application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
		return true
	}
	return false
}

// blameDigest drains a verifying reader after a failed conversion: when the
// bytes were not those of the descriptor, that (not the decoder's complaint
// about them) is the error to report.
func blameDigest(rc io.Reader, err error) error {
	if errors.Is(err, ErrDigestMismatch) {
		return err
	}
	if _, derr := io.Copy(io.Discard, rc); derr != nil && errors.Is(derr, ErrDigestMismatch) {
		return fmt.Errorf("%w (conversion failed: %v)", derr, err)
	}
	return err
}

// laterThanExisting returns t, or 1ms after the newest created time among
// the existing referrers when t is not later than that. The consumer picks
// the newest created and breaks ties by the smallest digest, so a referrer
// that does not come strictly later may lose to the one it replaces (after
// a key rotation: the old signature). One millisecond keeps the order for
// consumers that read the time at millisecond precision too.
func (s *Signer) laterThanExisting(ctx context.Context, repo *Repo, existing []ocispec.Descriptor, t time.Time) (time.Time, error) {
	var newest time.Time
	for _, d := range existing {
		c, ok := d.Annotations[AnnotationCreated]
		if !ok {
			// A registry that lists referrers without their annotations:
			// read the manifest's.
			data, err := repo.FetchAll(ctx, d, MaxManifestSize)
			if err != nil {
				return t, fmt.Errorf("read existing referrer %s: %w", d.Digest, err)
			}
			var m ocispec.Manifest
			if json.Unmarshal(data, &m) == nil {
				c = m.Annotations[AnnotationCreated]
			}
		}
		if ct, err := time.Parse(time.RFC3339Nano, c); err == nil && ct.After(newest) {
			newest = ct
		}
	}
	if !newest.IsZero() && t.Before(newest.Add(time.Millisecond)) {
		s.opts.Logger.Debug("referrer created time moved past the newest existing one", "wanted", FormatCreated(t), "newest", FormatCreated(newest))
		t = newest.Add(time.Millisecond)
	}
	return t, nil
}
