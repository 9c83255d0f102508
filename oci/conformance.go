package oci

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/intact-project/intact/pkcs7"
)

// Rule is one requirement of the interop contract (docs/formats.md,
// "Referrer artifact" and "The consumer": Azure Linux containerd2 2.3.4-2) on
// a dm-verity referrer.
type Rule struct {
	ID   string
	Text string
}

// Rules lists every rule CheckConformance checks, in order.
var Rules = []Rule{
	{"discoverable", "listed by the referrers API filtered by artifactType (or the sha256-<hex> tag schema) for the platform manifest, at most 64 referrers, each descriptor at most 4 MiB and 16 MiB together"},
	{"manifest-bytes", "the manifest's bytes match the digest and size of its descriptor and are at most 4 MiB"},
	{"manifest-type", "an OCI image manifest: mediaType application/vnd.oci.image.manifest.v1+json, schemaVersion 2"},
	{"artifact-type", "artifactType application/vnd.containerd.erofs.dmverity.v1 in the manifest (and in its referrers descriptor)"},
	{"empty-config", "config is the empty JSON descriptor (application/vnd.oci.empty.v1+json, sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a, size 2) and that blob is pushed"},
	{"subject", "subject is the platform manifest (its media type, digest and size), not the index"},
	{"created", "org.opencontainers.image.created is present and RFC3339 in UTC"},
	{"media-types", "layers use only the signature, EROFS metadata and Merkle-tree media types"},
	{"three-per-layer", "three descriptors per image layer, in the image's layer order: signature, EROFS metadata, Merkle tree"},
	{"coverage", "every image layer is covered, no other layer is named, none twice"},
	{"signature-descriptor", "signature descriptors carry layer-digest, layer-roothash (64 lowercase hex digits) and layer-signature (StdEncoding base64 of the DER); digest and size are those of the DER; a data field, if any, equals the DER"},
	{"artifact-descriptors", "EROFS metadata and tree descriptors carry source-layer-digest; sizes are positive and at most 16 GiB; the metadata size is a multiple of 512"},
	{"blobs-pushed", "every blob the referrer names (signature, metadata, tree) is in the repository with that digest and size"},
	{"signature", "the signature is detached PKCS#7 SignedData over the ASCII root hash, no signed attributes, signer certificate embedded, rsaEncryption or ecdsa-with-SHA*; with a CA it chains to it"},
	{"erofs-metadata", "the metadata is an EROFS superblock with 512-byte blocks whose UUID at byte 1072 is UUIDv5(URL, \"erofs:blobs/\"+layer digest)"},
	{"tree-superblock", "the tree starts with a verity superblock: format 1, sha256, 512/512 blocks, 32 zero bytes of salt, non-nil UUID; the tree is exactly as long as its layout"},
	{"tree-root", "the root hash is the hash of the tree's top block and the metadata blocks are the first data blocks of the tree"},
	{"data-device", "the tree covers metadata ‖ decompressed layer ‖ zeros to a 4096 multiple, and its root hash recomputed from those bytes equals the signed root hash"},
}

// Violation is a broken rule.
type Violation struct {
	Rule   string `json:"rule"`
	Detail string `json:"detail"`
}

func (v Violation) String() string { return v.Rule + ": " + v.Detail }

// ConformanceOptions configures CheckConformance.
type ConformanceOptions struct {
	// Roots, if set, must anchor every signature.
	Roots *x509.CertPool
	// DataDevice also fetches each layer and recomputes its data device
	// and tree (rule data-device); without it that rule is not checked.
	DataDevice bool
	// TempDir for fetched trees and recomputed layers.
	TempDir string
}

// CheckConformance checks the referrer ref of platform manifest p against
// every rule in Rules and returns the violations (none means conformant).
// An error means the check itself could not run.
func (r *Repo) CheckConformance(ctx context.Context, p Platform, ref ocispec.Descriptor, opts ConformanceOptions) ([]Violation, error) {
	var vs []Violation
	add := func(rule, format string, args ...any) {
		vs = append(vs, Violation{rule, fmt.Sprintf(format, args...)})
	}
	// discoverable
	refs, err := r.Referrers(ctx, p.Desc)
	if err != nil {
		add("discoverable", "%v", err)
	} else {
		found := false
		for _, d := range refs {
			if d.Digest == ref.Digest {
				found = true
				if d.ArtifactType != ArtifactType {
					add("artifact-type", "referrers descriptor has artifactType %q", d.ArtifactType)
				}
			}
		}
		if !found {
			add("discoverable", "referrer %s is not listed for %s", ref.Digest, p.Desc.Digest)
		}
	}
	// manifest-bytes
	if ref.Size <= 0 || ref.Size > MaxManifestSize {
		add("manifest-bytes", "size %d", ref.Size)
		return vs, nil
	}
	data, err := r.FetchAll(ctx, ref, MaxManifestSize)
	if err != nil {
		add("manifest-bytes", "%v", err)
		return vs, nil
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		add("manifest-type", "not JSON: %v", err)
		return vs, nil
	}
	if m.MediaType != ocispec.MediaTypeImageManifest || m.SchemaVersion != 2 {
		add("manifest-type", "mediaType %q schemaVersion %d", m.MediaType, m.SchemaVersion)
	}
	if m.ArtifactType != ArtifactType {
		add("artifact-type", "artifactType %q", m.ArtifactType)
	}
	if m.Config.MediaType != emptyConfig.MediaType || m.Config.Digest != emptyConfig.Digest || m.Config.Size != emptyConfig.Size {
		add("empty-config", "config is %s %s size %d", m.Config.MediaType, m.Config.Digest, m.Config.Size)
	} else if cfg, err := r.FetchAll(ctx, m.Config, 2); err != nil || string(cfg) != "{}" {
		add("empty-config", "empty config blob not in the repository: %v", err)
	}
	if m.Subject == nil || m.Subject.Digest != p.Desc.Digest || m.Subject.Size != p.Desc.Size || m.Subject.MediaType != p.Desc.MediaType {
		add("subject", "subject %+v, platform manifest %s %s size %d", m.Subject, p.Desc.MediaType, p.Desc.Digest, p.Desc.Size)
	}
	c, ok := m.Annotations[AnnotationCreated]
	if t, err := time.Parse(time.RFC3339, c); !ok || err != nil || t.Location() != time.UTC || !strings.HasSuffix(c, "Z") {
		add("created", "annotation %q", c)
	}
	// Structure per layer.
	layers := uniqueLayers(p.Manifest.Layers)
	order := []string{MediaTypeLayerSignature, MediaTypeEROFSMetadata, MediaTypeMerkleTree}
	for i, l := range m.Layers {
		known := false
		for _, o := range order {
			known = known || l.MediaType == o
		}
		if !known {
			add("media-types", "descriptor %d has media type %q", i, l.MediaType)
		}
	}
	if len(m.Layers) != 3*len(layers) {
		add("three-per-layer", "%d descriptors for %d layers", len(m.Layers), len(layers))
	} else {
		for i, l := range layers {
			for j, mt := range order {
				d := m.Layers[3*i+j]
				if d.MediaType != mt {
					add("three-per-layer", "descriptor %d has media type %q, want %q", 3*i+j, d.MediaType, mt)
				}
				src := d.Annotations[AnnotationSourceLayerDigest]
				if j == 0 {
					src = d.Annotations[AnnotationLayerDigest]
				}
				if src != l.Digest.String() {
					add("three-per-layer", "descriptor %d names layer %q, want %s (layer %d)", 3*i+j, src, l.Digest, i)
				}
			}
		}
	}
	b, perr := ParseBundle(ref, data, p.Desc.Digest, layers)
	if perr != nil {
		add("coverage", "the consumer's parser rejects it: %v", perr)
	}
	for i, d := range m.Layers {
		switch d.MediaType {
		case MediaTypeLayerSignature:
			root := d.Annotations[AnnotationLayerRootHash]
			if err := checkRootHash(root); err != nil {
				add("signature-descriptor", "descriptor %d: %v", i, err)
			}
			sig, err := base64.StdEncoding.DecodeString(d.Annotations[AnnotationLayerSignature])
			if err != nil || len(sig) == 0 {
				add("signature-descriptor", "descriptor %d: signature annotation is not StdEncoding base64", i)
				continue
			}
			if digest.FromBytes(sig) != d.Digest || int64(len(sig)) != d.Size {
				add("signature-descriptor", "descriptor %d: digest/size are not those of the DER", i)
			}
			if d.Data != nil && !bytes.Equal(d.Data, sig) {
				add("signature-descriptor", "descriptor %d: data differs from the annotation", i)
			}
			if _, err := digest.Parse(d.Annotations[AnnotationLayerDigest]); err != nil {
				add("signature-descriptor", "descriptor %d: layer-digest %q", i, d.Annotations[AnnotationLayerDigest])
			}
			checkSignatureForm(sig, root, opts.Roots, func(f string, a ...any) { add("signature", "descriptor %d: "+f, append([]any{i}, a...)...) })
		case MediaTypeEROFSMetadata, MediaTypeMerkleTree:
			if _, err := digest.Parse(d.Annotations[AnnotationSourceLayerDigest]); err != nil {
				add("artifact-descriptors", "descriptor %d: source-layer-digest %q", i, d.Annotations[AnnotationSourceLayerDigest])
			}
			if d.Size <= 0 || d.Size > MaxArtifactSize || (d.MediaType == MediaTypeEROFSMetadata && d.Size%MetadataAlignment != 0) {
				add("artifact-descriptors", "descriptor %d: size %d", i, d.Size)
			}
		}
		if d.Digest.Validate() == nil {
			if ok, err := r.Target.Exists(ctx, d); err != nil || !ok {
				add("blobs-pushed", "descriptor %d (%s) is not in the repository: %v", i, d.Digest, err)
			}
		}
	}
	if b == nil {
		return vs, nil
	}
	dir, err := os.MkdirTemp(opts.TempDir, "intact-conformance-")
	if err != nil {
		return vs, err
	}
	defer os.RemoveAll(dir)
	for _, l := range layers {
		e := b.Layers[l.Digest]
		meta, err := r.FetchAll(ctx, e.Metadata, maxMetadataInMemory)
		if err != nil {
			add("blobs-pushed", "layer %s metadata: %v", l.Digest, err)
			continue
		}
		if err := CheckMetadata(meta, l.Digest); err != nil {
			add("erofs-metadata", "layer %s: %v", l.Digest, err)
		}
		treePath, err := fetchToFile(ctx, r, e.Tree, dir)
		if err != nil {
			add("blobs-pushed", "layer %s tree: %v", l.Digest, err)
			continue
		}
		tf, err := os.Open(treePath)
		if err != nil {
			return vs, err
		}
		blocks, err := CheckTree(tf, e.Tree.Size, meta, e.RootHash)
		tf.Close()
		if err != nil {
			rule := "tree-root"
			if strings.Contains(err.Error(), "superblock") || strings.Contains(err.Error(), "salt") || strings.Contains(err.Error(), "blocks") {
				rule = "tree-superblock"
			}
			add(rule, "layer %s: %v", l.Digest, err)
			continue
		}
		if opts.DataDevice {
			if err := recompute(ctx, r, l, e, blocks, VerifyOptions{}, dir); err != nil {
				add("data-device", "layer %s: %v", l.Digest, err)
			}
		}
	}
	return vs, nil
}

// checkSignatureForm checks the PKCS#7 profile of a root-hash signature.
func checkSignatureForm(der []byte, root string, roots *x509.CertPool, add func(string, ...any)) {
	sd, err := pkcs7.Parse(der)
	if err != nil {
		add("%v", err)
		return
	}
	if !sd.Detached() {
		add("not detached")
	}
	if len(sd.Certificates) == 0 {
		add("no embedded certificate")
	}
	for _, si := range sd.Signers {
		if si.SignedAttributes != nil {
			add("has signed attributes")
		}
	}
	if roots != nil {
		if _, err := VerifyRootHashSignature(der, root, roots); err != nil {
			add("%v", err)
		}
	}
}
