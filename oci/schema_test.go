package oci

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// syntheticReferrer builds a structurally valid referrer over n fake layers
// (ParseBundle checks structure only; the crypto is Verify's).
func syntheticReferrer(t testing.TB, n int) (ocispec.Descriptor, []byte, ocispec.Descriptor, []ocispec.Descriptor) {
	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("subject"), Size: 123}
	var layers []ocispec.Descriptor
	var arts []LayerArtifacts
	for i := range n {
		l := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromString(string(rune('a' + i))), Size: 10}
		layers = append(layers, l)
		arts = append(arts, LayerArtifacts{
			Layer:     l,
			RootHash:  strings.Repeat("0123456789abcdef", 4),
			Signature: []byte("signature " + l.Digest.String()),
			Metadata:  ocispec.Descriptor{Digest: digest.FromString("meta" + l.Digest.String()), Size: 4096},
			Tree:      ocispec.Descriptor{Digest: digest.FromString("tree" + l.Digest.String()), Size: 1536},
		})
	}
	desc, data, err := BuildReferrer(subject, arts, time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	return desc, data, subject, layers
}

func TestBuildReferrerShape(t *testing.T) {
	desc, data, subject, layers := syntheticReferrer(t, 2)
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	if m.ArtifactType != ArtifactType || m.MediaType != ocispec.MediaTypeImageManifest || m.SchemaVersion != 2 ||
		m.Config.Digest != ocispec.DescriptorEmptyJSON.Digest || m.Subject.Digest != subject.Digest ||
		m.Annotations[AnnotationCreated] != "2026-11-27T12:00:00Z" || len(m.Layers) != 6 {
		t.Fatalf("manifest %s", data)
	}
	for i, mt := range []string{MediaTypeLayerSignature, MediaTypeEROFSMetadata, MediaTypeMerkleTree} {
		if m.Layers[3+i].MediaType != mt {
			t.Errorf("descriptor %d: %s", 3+i, m.Layers[3+i].MediaType)
		}
	}
	sig, _ := base64.StdEncoding.DecodeString(m.Layers[0].Annotations[AnnotationLayerSignature])
	if m.Layers[0].Digest != digest.FromBytes(sig) || m.Layers[0].Annotations[AnnotationLayerDigest] != layers[0].Digest.String() {
		t.Errorf("signature descriptor %+v", m.Layers[0])
	}
	if _, err := ParseBundle(desc, data, subject.Digest, layers); err != nil {
		t.Fatal(err)
	}
	if desc.ArtifactType != ArtifactType || desc.Digest != digest.FromBytes(data) {
		t.Errorf("descriptor %+v", desc)
	}
}

func TestBuildReferrerRefuses(t *testing.T) {
	subject := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("s"), Size: 1}
	good := LayerArtifacts{Layer: ocispec.Descriptor{Digest: digest.FromString("l")}, RootHash: strings.Repeat("ab", 32), Signature: []byte{1},
		Metadata: ocispec.Descriptor{Digest: digest.FromString("m"), Size: 512}, Tree: ocispec.Descriptor{Digest: digest.FromString("t"), Size: 1024}}
	for name, mut := range map[string]func(*LayerArtifacts, *ocispec.Descriptor){
		"uppercase root":   func(a *LayerArtifacts, _ *ocispec.Descriptor) { a.RootHash = strings.ToUpper(a.RootHash) },
		"short root":       func(a *LayerArtifacts, _ *ocispec.Descriptor) { a.RootHash = "abcd" },
		"no signature":     func(a *LayerArtifacts, _ *ocispec.Descriptor) { a.Signature = nil },
		"unaligned meta":   func(a *LayerArtifacts, _ *ocispec.Descriptor) { a.Metadata.Size = 1000 },
		"index as subject": func(_ *LayerArtifacts, s *ocispec.Descriptor) { s.MediaType = ocispec.MediaTypeImageIndex },
	} {
		a, s := good, subject
		mut(&a, &s)
		if _, _, err := BuildReferrer(s, []LayerArtifacts{a}, time.Now()); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestParseBundleRejects mutates a valid referrer in every way the consumer
// rejects; each must fail with ErrMalformed.
func TestParseBundleRejects(t *testing.T) {
	_, data, subject, layers := syntheticReferrer(t, 2)
	mutations := map[string]func(m map[string]any){
		"artifact type":       func(m map[string]any) { m["artifactType"] = "application/vnd.cncf.notary.dmverity.v1" },
		"no subject":          func(m map[string]any) { delete(m, "subject") },
		"other subject":       func(m map[string]any) { m["subject"].(map[string]any)["digest"] = digest.FromString("x").String() },
		"bad created":         func(m map[string]any) { m["annotations"].(map[string]any)[AnnotationCreated] = "27 Nov 2026" },
		"unknown media type":  func(m map[string]any) { lay(m, 1)["mediaType"] = "application/vnd.cncf.containerd.erofs.layer.v1" },
		"no annotations":      func(m map[string]any) { delete(lay(m, 2), "annotations") },
		"missing root":        func(m map[string]any) { delete(ann(m, 0), AnnotationLayerRootHash) },
		"short root":          func(m map[string]any) { ann(m, 0)[AnnotationLayerRootHash] = "abcd" },
		"non-hex root":        func(m map[string]any) { ann(m, 0)[AnnotationLayerRootHash] = strings.Repeat("zz", 32) },
		"bad base64":          func(m map[string]any) { ann(m, 0)[AnnotationLayerSignature] = "!!!" },
		"url-safe base64":     func(m map[string]any) { ann(m, 0)[AnnotationLayerSignature] = "c2lnbmF0dXJl_-" },
		"signature digest":    func(m map[string]any) { lay(m, 0)["digest"] = digest.FromString("other").String() },
		"signature size":      func(m map[string]any) { lay(m, 0)["size"] = 3 },
		"data mismatch":       func(m map[string]any) { lay(m, 0)["data"] = base64.StdEncoding.EncodeToString([]byte("other")) },
		"unaligned metadata":  func(m map[string]any) { lay(m, 1)["size"] = 4000 },
		"huge tree":           func(m map[string]any) { lay(m, 2)["size"] = int64(MaxArtifactSize) + 1 },
		"zero-size tree":      func(m map[string]any) { lay(m, 2)["size"] = 0 },
		"bad tree digest":     func(m map[string]any) { lay(m, 2)["digest"] = "sha256:xyz" },
		"no source layer":     func(m map[string]any) { delete(ann(m, 2), AnnotationSourceLayerDigest) },
		"bad source layer":    func(m map[string]any) { ann(m, 2)[AnnotationSourceLayerDigest] = "not-a-digest" },
		"unknown layer":       func(m map[string]any) { ann(m, 5)[AnnotationSourceLayerDigest] = digest.FromString("zzz").String() },
		"duplicate signature": func(m map[string]any) { m["layers"].([]any)[3] = m["layers"].([]any)[0] },
		"duplicate metadata":  func(m map[string]any) { m["layers"] = append(m["layers"].([]any), m["layers"].([]any)[1]) },
		"skipped layer":       func(m map[string]any) { m["layers"] = m["layers"].([]any)[:3] },
		"signature only": func(m map[string]any) {
			m["layers"] = []any{m["layers"].([]any)[0], m["layers"].([]any)[3]}
		},
		"no layers": func(m map[string]any) { m["layers"] = []any{} },
		"bad config": func(m map[string]any) {
			m["config"].(map[string]any)["size"] = MaxManifestSize + 1
		},
	}
	for name, mut := range mutations {
		t.Run(name, func(t *testing.T) {
			var m map[string]any
			if err := json.Unmarshal(data, &m); err != nil {
				t.Fatal(err)
			}
			mut(m)
			out, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(out), Size: int64(len(out))}
			_, err = ParseBundle(d, out, subject.Digest, layers)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err %v, want ErrMalformed", err)
			}
		})
	}
	t.Run("descriptor mismatch", func(t *testing.T) {
		d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("other"), Size: int64(len(data))}
		if _, err := ParseBundle(d, data, subject.Digest, layers); !errors.Is(err, ErrMalformed) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("too large", func(t *testing.T) {
		big := make([]byte, MaxManifestSize+1)
		d := ocispec.Descriptor{Digest: digest.FromBytes(big), Size: int64(len(big))}
		if _, err := ParseBundle(d, big, subject.Digest, layers); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("missing created is the zero time", func(t *testing.T) {
		var m map[string]any
		json.Unmarshal(data, &m)
		delete(m, "annotations")
		out, _ := json.Marshal(m)
		b, err := ParseBundle(ocispec.Descriptor{Digest: digest.FromBytes(out), Size: int64(len(out))}, out, subject.Digest, layers)
		if err != nil || !b.Created.IsZero() {
			t.Fatalf("%v %v", b, err)
		}
	})
}

func lay(m map[string]any, i int) map[string]any { return m["layers"].([]any)[i].(map[string]any) }
func ann(m map[string]any, i int) map[string]any { return lay(m, i)["annotations"].(map[string]any) }

// FuzzParseBundle feeds arbitrary manifests to the referrer parser: it must
// never panic, and anything it accepts must cover exactly the given layers
// with all three artifacts.
func FuzzParseBundle(f *testing.F) {
	_, data, subject, layers := syntheticReferrer(f, 2)
	f.Add(data)
	f.Fuzz(func(t *testing.T, b []byte) {
		d := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(b), Size: int64(len(b))}
		bundle, err := ParseBundle(d, b, subject.Digest, layers)
		if err != nil {
			return
		}
		if len(bundle.Layers) != len(layers) {
			t.Fatalf("accepted a bundle with %d layers", len(bundle.Layers))
		}
		for _, l := range layers {
			e := bundle.Layers[l.Digest]
			if e == nil || e.Signature == nil || e.Metadata.Digest == "" || e.Tree.Digest == "" || len(e.RootHash) != 64 {
				t.Fatalf("accepted an incomplete entry for %s: %+v", l.Digest, e)
			}
		}
	})
}
