package oci

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Media types, artifact type and annotation keys of the dm-verity referrer
// (docs/formats.md, "Referrer artifact"; Azure Linux containerd2 2.3.4-2).
const (
	ArtifactType                = "application/vnd.containerd.erofs.dmverity.v1"
	MediaTypeLayerSignature     = "application/vnd.cncf.notary.dmverity.layer-signature+pkcs7"
	MediaTypeEROFSMetadata      = "application/vnd.containerd.erofs.metadata.v1"
	MediaTypeMerkleTree         = "application/vnd.cncf.dmverity.merkle-tree.v1"
	AnnotationLayerDigest       = "io.cncf.notary.dmverity.layer-digest"
	AnnotationLayerRootHash     = "io.cncf.notary.dmverity.layer-roothash"
	AnnotationLayerSignature    = "io.cncf.notary.dmverity.layer-signature"
	AnnotationSourceLayerDigest = "io.cncf.notary.dmverity.source-layer-digest"
	AnnotationCreated           = ocispec.AnnotationCreated
)

// Bounds the consumer applies to referrers, and that we apply too.
const (
	MaxReferrers          = 64
	MaxManifestSize       = 4 << 20
	MaxReferrersTotalSize = 16 << 20
	MaxArtifactSize       = 16 << 30
	MetadataAlignment     = 512
)

// Sentinel errors of the package; returned errors wrap one of them.
var (
	ErrMalformed      = errors.New("malformed dm-verity referrer")
	ErrNoReferrer     = errors.New("no dm-verity referrer")
	ErrTooMany        = errors.New("too many dm-verity referrers")
	ErrTooLarge       = errors.New("dm-verity referrer too large")
	ErrLayerMismatch  = errors.New("dm-verity artifacts do not match the layer")
	ErrSignature      = errors.New("dm-verity root-hash signature rejected")
	ErrUnsupported    = errors.New("unsupported image")
	ErrNotFound       = errors.New("not found")
	ErrPlatform       = errors.New("no such platform")
	ErrDigestMismatch = errors.New("content digest mismatch")
)

// emptyConfig is the OCI empty JSON descriptor ("{}").
var emptyConfig = ocispec.DescriptorEmptyJSON

// LayerArtifacts is everything the referrer carries for one image layer.
type LayerArtifacts struct {
	Layer     ocispec.Descriptor // the image layer as the platform manifest lists it
	RootHash  string             // lowercase hex dm-verity root hash
	Signature []byte             // DER PKCS#7 over RootHash
	Metadata  ocispec.Descriptor // tar-index EROFS metadata blob
	Tree      ocispec.Descriptor // hash tree with its superblock at offset 0
}

// SignatureDescriptor is the referrer descriptor of the signature.
func (a *LayerArtifacts) SignatureDescriptor() ocispec.Descriptor {
	return ocispec.Descriptor{
		MediaType: MediaTypeLayerSignature,
		Digest:    digest.FromBytes(a.Signature),
		Size:      int64(len(a.Signature)),
		Annotations: map[string]string{
			AnnotationLayerDigest:    a.Layer.Digest.String(),
			AnnotationLayerRootHash:  a.RootHash,
			AnnotationLayerSignature: base64.StdEncoding.EncodeToString(a.Signature),
		},
	}
}

// artifactDescriptor returns d reduced to the fields a referrer lists, with
// the media type and source-layer annotation set.
func artifactDescriptor(d ocispec.Descriptor, mediaType string, layer digest.Digest) ocispec.Descriptor {
	return ocispec.Descriptor{
		MediaType:   mediaType,
		Digest:      d.Digest,
		Size:        d.Size,
		Annotations: map[string]string{AnnotationSourceLayerDigest: layer.String()},
	}
}

// BuildReferrer returns the referrer manifest for subject (a platform
// manifest) and its descriptor. layers must cover every layer of the subject
// once, in the subject's order; each contributes three descriptors:
// signature, EROFS metadata, hash tree.
func BuildReferrer(subject ocispec.Descriptor, layers []LayerArtifacts, created time.Time) (ocispec.Descriptor, []byte, error) {
	if !isManifest(subject.MediaType) {
		return ocispec.Descriptor{}, nil, fmt.Errorf("%w: subject %s has media type %q, want an image manifest", ErrUnsupported, subject.Digest, subject.MediaType)
	}
	if len(layers) == 0 {
		return ocispec.Descriptor{}, nil, fmt.Errorf("%w: no layers", ErrMalformed)
	}
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactType,
		Config:       emptyConfig,
		Subject:      &ocispec.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size},
		Annotations:  map[string]string{AnnotationCreated: FormatCreated(created)},
	}
	seen := map[digest.Digest]bool{}
	for i := range layers {
		a := &layers[i]
		if seen[a.Layer.Digest] {
			continue // a layer listed twice in the image is covered once
		}
		seen[a.Layer.Digest] = true
		if err := checkRootHash(a.RootHash); err != nil {
			return ocispec.Descriptor{}, nil, fmt.Errorf("layer %s: %w", a.Layer.Digest, err)
		}
		if len(a.Signature) == 0 {
			return ocispec.Descriptor{}, nil, fmt.Errorf("%w: layer %s has no signature", ErrMalformed, a.Layer.Digest)
		}
		if a.Metadata.Size <= 0 || a.Metadata.Size%MetadataAlignment != 0 {
			return ocispec.Descriptor{}, nil, fmt.Errorf("%w: layer %s: metadata size %d is not a positive multiple of %d", ErrMalformed, a.Layer.Digest, a.Metadata.Size, MetadataAlignment)
		}
		if a.Tree.Size <= 0 {
			return ocispec.Descriptor{}, nil, fmt.Errorf("%w: layer %s has an empty tree", ErrMalformed, a.Layer.Digest)
		}
		m.Layers = append(m.Layers,
			a.SignatureDescriptor(),
			artifactDescriptor(a.Metadata, MediaTypeEROFSMetadata, a.Layer.Digest),
			artifactDescriptor(a.Tree, MediaTypeMerkleTree, a.Layer.Digest))
	}
	data, err := json.Marshal(m)
	if err != nil {
		return ocispec.Descriptor{}, nil, fmt.Errorf("encode referrer: %w", err)
	}
	if len(data) > MaxManifestSize {
		return ocispec.Descriptor{}, nil, fmt.Errorf("%w: referrer manifest is %d bytes, the limit is %d", ErrTooLarge, len(data), MaxManifestSize)
	}
	desc := ocispec.Descriptor{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactType,
		Digest:       digest.FromBytes(data),
		Size:         int64(len(data)),
		Annotations:  maps.Clone(m.Annotations),
	}
	return desc, data, nil
}

// FormatCreated writes a referrer's created time: RFC 3339 in UTC with the
// fraction of a second it has (none for a whole second), so that referrers
// made within one second still order.
func FormatCreated(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func checkRootHash(h string) error {
	if len(h) != 2*sha256.Size {
		return fmt.Errorf("%w: root hash %q is not %d hex digits", ErrMalformed, h, 2*sha256.Size)
	}
	for _, c := range []byte(h) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("%w: root hash %q is not lowercase hex", ErrMalformed, h)
		}
	}
	return nil
}

// BundleLayer is one layer's entry of a parsed referrer.
type BundleLayer struct {
	LayerDigest digest.Digest
	RootHash    string // as the annotation has it
	Signature   []byte // DER, decoded from the annotation
	SigDesc     ocispec.Descriptor
	Metadata    ocispec.Descriptor
	Tree        ocispec.Descriptor
}

// Bundle is a parsed, validated referrer.
type Bundle struct {
	Desc     ocispec.Descriptor // the referrer manifest
	Manifest ocispec.Manifest
	Created  time.Time // zero when the annotation is missing
	Layers   map[digest.Digest]*BundleLayer
}

// ParseBundle parses a referrer manifest fetched as desc for the platform
// manifest subject with the given image layers, and validates it with the
// consumer's rules: artifact type, subject, created time, known media types
// only, required annotations, root hash of 32 bytes in hex, base64 signature
// whose digest and size match its descriptor (and its data field, if any),
// metadata size a multiple of 512, artifact sizes within bounds, every image
// layer covered by all three artifacts and no unknown layer. Every failure
// wraps ErrMalformed.
func ParseBundle(desc ocispec.Descriptor, data []byte, subject digest.Digest, imageLayers []ocispec.Descriptor) (*Bundle, error) {
	if int64(len(data)) > MaxManifestSize {
		return nil, fmt.Errorf("%w: referrer %s is %d bytes, the limit is %d", ErrTooLarge, desc.Digest, len(data), MaxManifestSize)
	}
	if err := verifyPayload(desc, data); err != nil {
		return nil, fmt.Errorf("%w: referrer %s: %w", ErrMalformed, desc.Digest, err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w: referrer %s: %w", ErrMalformed, desc.Digest, err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: referrer %s: %s", ErrMalformed, desc.Digest, fmt.Sprintf(format, args...))
	}
	if m.ArtifactType != ArtifactType {
		return nil, bad("artifact type %q, want %q", m.ArtifactType, ArtifactType)
	}
	if m.Subject == nil || m.Subject.Digest != subject {
		return nil, bad("subject does not match image manifest %s", subject)
	}
	b := &Bundle{Desc: desc, Manifest: m, Layers: map[digest.Digest]*BundleLayer{}}
	if c := m.Annotations[AnnotationCreated]; c != "" {
		t, err := time.Parse(time.RFC3339, c)
		if err != nil {
			return nil, bad("invalid creation time %q", c)
		}
		b.Created = t
	}
	if m.Config.Digest != "" {
		if err := boundedDescriptor(m.Config, MaxManifestSize); err != nil {
			return nil, bad("config: %v", err)
		}
	}
	get := func(layer string) (*BundleLayer, error) {
		d, err := digest.Parse(layer)
		if err != nil {
			return nil, bad("invalid source layer digest %q", layer)
		}
		l := b.Layers[d]
		if l == nil {
			l = &BundleLayer{LayerDigest: d}
			b.Layers[d] = l
		}
		return l, nil
	}
	for _, l := range m.Layers {
		if l.Annotations == nil {
			return nil, bad("descriptor %s has no annotations", l.Digest)
		}
		switch l.MediaType {
		case MediaTypeLayerSignature:
			src, root, sig64 := l.Annotations[AnnotationLayerDigest], l.Annotations[AnnotationLayerRootHash], l.Annotations[AnnotationLayerSignature]
			if src == "" || root == "" || sig64 == "" {
				return nil, bad("signature descriptor %s is missing required annotations", l.Digest)
			}
			rb, err := hex.DecodeString(root)
			if err != nil || len(rb) != sha256.Size {
				return nil, bad("layer %s: root hash %q is not 32 bytes of hex", src, root)
			}
			sig, err := base64.StdEncoding.DecodeString(sig64)
			if err != nil {
				return nil, bad("layer %s: signature is not base64: %v", src, err)
			}
			if len(l.Data) > 0 {
				if err := verifyPayload(l, l.Data); err != nil {
					return nil, bad("layer %s: embedded signature: %v", src, err)
				}
				if !bytes.Equal(l.Data, sig) {
					return nil, bad("layer %s: embedded signature data differs from the annotation", src)
				}
			} else if err := verifyPayload(l, sig); err != nil {
				return nil, bad("layer %s: signature descriptor: %v", src, err)
			}
			e, err := get(src)
			if err != nil {
				return nil, err
			}
			if e.Signature != nil {
				return nil, bad("duplicate signature descriptor for layer %s", src)
			}
			e.RootHash, e.Signature, e.SigDesc = root, sig, l
		case MediaTypeEROFSMetadata, MediaTypeMerkleTree:
			src := l.Annotations[AnnotationSourceLayerDigest]
			if src == "" {
				return nil, bad("descriptor %s has no %s annotation", l.Digest, AnnotationSourceLayerDigest)
			}
			if err := boundedDescriptor(l, MaxArtifactSize); err != nil {
				return nil, bad("%v", err)
			}
			if l.MediaType == MediaTypeEROFSMetadata && l.Size%MetadataAlignment != 0 {
				return nil, bad("EROFS metadata descriptor %s has unaligned size %d", l.Digest, l.Size)
			}
			e, err := get(src)
			if err != nil {
				return nil, err
			}
			l.URLs = nil
			if l.MediaType == MediaTypeEROFSMetadata {
				if e.Metadata.Digest != "" {
					return nil, bad("duplicate EROFS metadata descriptor for layer %s", src)
				}
				e.Metadata = l
			} else {
				if e.Tree.Digest != "" {
					return nil, bad("duplicate Merkle-tree descriptor for layer %s", src)
				}
				e.Tree = l
			}
		default:
			return nil, bad("unexpected media type %q", l.MediaType)
		}
	}
	if len(b.Layers) == 0 {
		return nil, bad("no layer artifacts")
	}
	want := map[digest.Digest]bool{}
	for _, l := range imageLayers {
		want[l.Digest] = true
	}
	for _, d := range slices.Sorted(maps.Keys(b.Layers)) {
		e := b.Layers[d]
		if e.Signature == nil || e.Metadata.Digest == "" || e.Tree.Digest == "" {
			return nil, bad("incomplete artifacts for layer %s (needs signature, EROFS metadata and tree)", d)
		}
		if !want[d] {
			return nil, bad("unknown source layer %s", d)
		}
	}
	for _, l := range imageLayers {
		if b.Layers[l.Digest] == nil {
			return nil, bad("layer %s is not covered", l.Digest)
		}
	}
	return b, nil
}

func boundedDescriptor(d ocispec.Descriptor, max int64) error {
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("descriptor has invalid digest %q: %v", d.Digest, err)
	}
	if d.Size <= 0 {
		return fmt.Errorf("descriptor %s has invalid size %d", d.Digest, d.Size)
	}
	if d.Size > max {
		return fmt.Errorf("descriptor %s size %d exceeds maximum %d", d.Digest, d.Size, max)
	}
	return nil
}

func verifyPayload(d ocispec.Descriptor, p []byte) error {
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("invalid digest %q: %v", d.Digest, err)
	}
	if int64(len(p)) != d.Size {
		return fmt.Errorf("size %d, descriptor says %d", len(p), d.Size)
	}
	if d.Digest.Algorithm().FromBytes(p) != d.Digest {
		return fmt.Errorf("content does not match digest %s", d.Digest)
	}
	return nil
}

// newer reports whether candidate a wins over b: the newest created time,
// then the lexicographically smallest manifest digest.
func newer(a, b *Bundle) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.After(b.Created)
	}
	return a.Desc.Digest.String() < b.Desc.Digest.String()
}
