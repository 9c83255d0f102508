package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/intact-project/intact/internal/registry"
	"github.com/intact-project/intact/internal/sampleimage"
)

// signedFixture is a signed single-platform sample on a fresh registry.
type signedFixture struct {
	repo *Repo
	img  *sampleimage.Image
	p    Platform
	sel  *Selection
	arts []LayerArtifacts // the genuine artifacts, in layer order
}

func newSignedFixture(t *testing.T, opts sampleimage.Options) *signedFixture {
	t.Helper()
	s := startRegistry(t, registry.ServerOptions{})
	repo := openRepo(t, s.Addr, "attack:v1", testRemote)
	img := pushSample(t, repo, opts)
	sign(t, repo, PlatformSelector{All: true})
	f := &signedFixture{repo: repo, img: img, p: platformOf(t, repo, img.Manifests[0])}
	var err error
	f.sel, err = repo.SelectBundle(context.Background(), f.p)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range f.p.Manifest.Layers {
		e := f.sel.Selected.Layers[l.Digest]
		f.arts = append(f.arts, LayerArtifacts{Layer: l, RootHash: e.RootHash, Signature: e.Signature, Metadata: e.Metadata, Tree: e.Tree})
	}
	return f
}

func (f *signedFixture) newer() time.Time { return f.sel.Selected.Created.Add(time.Hour) }

// expectLayerFailure verifies and expects exactly the layer with index li
// to fail with sentinel want (the others pass).
func (f *signedFixture) expectLayerFailure(t *testing.T, full bool, li int, want error, text string) {
	t.Helper()
	rep := verify(t, f.repo, testPKI.Roots(), full)
	err := rep.Err()
	if rep.OK || err == nil {
		t.Fatal("verification passed")
	}
	if !errors.Is(err, want) || !strings.Contains(err.Error(), text) {
		t.Fatalf("error %v, want %v mentioning %q", err, want, text)
	}
	for i, l := range rep.Platforms[0].Layers {
		if l.OK == (i == li) {
			t.Errorf("layer %d: ok=%v (%s)", i, l.OK, l.Error)
		}
	}
	t.Logf("refused: %v", err)
}

func TestForgedSignature(t *testing.T) {
	f := newSignedFixture(t, sampleimage.Options{})
	arts := append([]LayerArtifacts{}, f.arts...)
	sig := append([]byte{}, arts[1].Signature...)
	sig[len(sig)-10] ^= 0x01 // inside the RSA signature value
	arts[1].Signature = sig
	pushReferrer(t, f.repo, f.p.Desc, arts, f.newer())
	f.expectLayerFailure(t, false, 1, ErrSignature, "signature")
}

func TestSignatureByUntrustedCA(t *testing.T) {
	f := newSignedFixture(t, sampleimage.Options{})
	other := newTestPKI(t)
	arts := append([]LayerArtifacts{}, f.arts...)
	sig, err := SignRootHash(arts[0].RootHash, other.Leaf.Key, other.Leaf.Certificate, nil)
	if err != nil {
		t.Fatal(err)
	}
	arts[0].Signature = sig
	pushReferrer(t, f.repo, f.p.Desc, arts, f.newer())
	f.expectLayerFailure(t, false, 0, ErrSignature, "not trusted")
}

func TestSignatureOverAnotherRootHash(t *testing.T) {
	f := newSignedFixture(t, sampleimage.Options{})
	arts := append([]LayerArtifacts{}, f.arts...)
	arts[2].Signature = arts[0].Signature // genuine, but for layer 0's root
	pushReferrer(t, f.repo, f.p.Desc, arts, f.newer())
	f.expectLayerFailure(t, false, 2, ErrSignature, "signature")
}

// TestTreeForAnotherLayer swaps in another layer's genuinely signed tree
// and root hash (keeping this layer's metadata), then all three artifacts
// of another layer: both are refused without --full (the metadata does not
// match the tree, or names another layer) and with it.
func TestTreeForAnotherLayer(t *testing.T) {
	for _, full := range []bool{false, true} {
		f := newSignedFixture(t, sampleimage.Options{})
		arts := append([]LayerArtifacts{}, f.arts...)
		arts[1].Tree, arts[1].RootHash, arts[1].Signature = f.arts[0].Tree, f.arts[0].RootHash, f.arts[0].Signature
		pushReferrer(t, f.repo, f.p.Desc, arts, f.newer())
		f.expectLayerFailure(t, full, 1, ErrLayerMismatch, "tree")

		g := newSignedFixture(t, sampleimage.Options{})
		arts = append([]LayerArtifacts{}, g.arts...)
		l := arts[2].Layer
		arts[2] = g.arts[0]
		arts[2].Layer = l
		pushReferrer(t, g.repo, g.p.Desc, arts, g.newer())
		g.expectLayerFailure(t, full, 2, ErrLayerMismatch, "another layer")
	}
}

// TestChangedLayerWithRepointedReferrer is the quickstart's attack: a layer
// byte changed, manifest rewritten, the signed referrer re-pointed at it.
func TestChangedLayerWithRepointedReferrer(t *testing.T) {
	f := newSignedFixture(t, sampleimage.Options{Compressions: []sampleimage.Compression{sampleimage.Uncompressed}})
	ctx := context.Background()
	blob, _ := f.img.Blob(f.arts[0].Layer.Digest)
	changed := append([]byte{}, blob...)
	changed[len(changed)/3] ^= 1
	nl := ocispec.Descriptor{MediaType: f.arts[0].Layer.MediaType, Digest: digestOf(changed), Size: int64(len(changed))}
	if err := f.repo.PushBlob(ctx, nl, readerFunc(changed)); err != nil {
		t.Fatal(err)
	}
	m := f.p.Manifest
	m.Layers = []ocispec.Descriptor{nl}
	md := pushManifest(t, f.repo, m)
	arts := []LayerArtifacts{f.arts[0]}
	arts[0].Layer = nl
	pushReferrer(t, f.repo, md, arts, f.newer())
	f.repo.Reference = md.Digest.String()
	for _, full := range []bool{false, true} {
		f.expectLayerFailure(t, full, 0, ErrLayerMismatch, "another layer")
	}
}

func TestReferrerSkippingALayer(t *testing.T) {
	f := newSignedFixture(t, sampleimage.Options{})
	// BuildReferrer refuses nothing here (it does not know the image), so
	// hand the consumer a referrer for two of three layers.
	pushReferrer(t, f.repo, f.p.Desc, f.arts[:2], f.newer())
	rep := verify(t, f.repo, testPKI.Roots(), false)
	err := rep.Err()
	if rep.OK || !strings.Contains(rep.Platforms[0].Error, "is not covered") {
		t.Fatalf("verify: ok=%v err=%v", rep.OK, err)
	}
	t.Logf("refused: %v", err)
}

// TestMalformedReferrerAmongGoodOnes: one malformed candidate fails the
// whole image, as the consumer does, even when a good one is newer.
func TestMalformedReferrerAmongGoodOnes(t *testing.T) {
	f := newSignedFixture(t, sampleimage.Options{})
	var m ocispec.Manifest
	data, err := f.repo.FetchAll(context.Background(), f.sel.Selected.Desc, MaxManifestSize)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	m.Annotations[AnnotationCreated] = "yesterday"
	pushRawReferrer(t, f.repo, m)
	pushReferrer(t, f.repo, f.p.Desc, f.arts, f.newer()) // a newer good one
	rep := verify(t, f.repo, testPKI.Roots(), false)
	if rep.OK || !strings.Contains(rep.Platforms[0].Error, "invalid creation time") || !strings.Contains(rep.Platforms[0].Error, ErrMalformed.Error()) {
		t.Fatalf("ok=%v error %q", rep.OK, rep.Platforms[0].Error)
	}
	res, err := Inspect(context.Background(), f.repo, PlatformSelector{All: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Platforms[0].Referrers) != 3 || res.Platforms[0].Error == "" {
		t.Fatalf("inspect: %+v", res.Platforms[0])
	}
}

// TestTooManyReferrers: more than 64 dm-verity referrers fail verification
// (the consumer's bound), and signing refuses to add a 65th.
func TestTooManyReferrers(t *testing.T) {
	f := newSignedFixture(t, sampleimage.Options{Compressions: []sampleimage.Compression{sampleimage.Gzip}})
	base := f.sel.Selected.Created
	for i := 1; i < MaxReferrers; i++ {
		pushReferrer(t, f.repo, f.p.Desc, f.arts, base.Add(time.Duration(i)*time.Second))
	}
	if rep := verify(t, f.repo, testPKI.Roots(), false); !rep.OK {
		t.Fatalf("64 referrers: %v", rep.Err())
	}
	_, err := newSigner(t, testPKI, PlatformSelector{All: true}).Sign(context.Background(), f.repo)
	if !errors.Is(err, ErrTooMany) {
		t.Fatalf("signing a 65th: %v", err)
	}
	pushReferrer(t, f.repo, f.p.Desc, f.arts, base.Add(time.Hour))
	rep := verify(t, f.repo, testPKI.Roots(), false)
	if rep.OK || !strings.Contains(rep.Platforms[0].Error, ErrTooMany.Error()) {
		t.Fatalf("65 referrers: ok=%v %q", rep.OK, rep.Platforms[0].Error)
	}
	t.Logf("refused: %v", rep.Err())
}

// TestSelectionNewestWins: re-signing adds a referrer; the newest is
// selected, and a tie goes to the smallest digest.
func TestSelectionNewestWins(t *testing.T) {
	f := newSignedFixture(t, sampleimage.Options{})
	ctx := context.Background()
	later := pushReferrer(t, f.repo, f.p.Desc, f.arts, f.newer())
	sel, err := f.repo.SelectBundle(ctx, f.p)
	if err != nil || sel.Selected.Desc.Digest != later.Digest || len(sel.Candidates) != 2 {
		t.Fatalf("selected %v of %d: %v", sel.Selected.Desc.Digest, len(sel.Candidates), err)
	}
	// Same created time, different bytes (a second signature of layer 0
	// differs: RSA PKCS#1 v1.5 is deterministic, so use another leaf).
	leaf, err := testPKI.IssueLeaf("second signer", "")
	if err != nil {
		t.Fatal(err)
	}
	arts := append([]LayerArtifacts{}, f.arts...)
	arts[0].Signature, err = SignRootHash(arts[0].RootHash, leaf.Key, leaf.Certificate, nil)
	if err != nil {
		t.Fatal(err)
	}
	tie := pushReferrer(t, f.repo, f.p.Desc, arts, f.newer())
	sel, err = f.repo.SelectBundle(ctx, f.p)
	if err != nil {
		t.Fatal(err)
	}
	want := later.Digest
	if tie.Digest.String() < want.String() {
		want = tie.Digest
	}
	if sel.Selected.Desc.Digest != want {
		t.Fatalf("tie: selected %s, want the smaller of %s and %s", sel.Selected.Desc.Digest, later.Digest, tie.Digest)
	}
	if rep := verify(t, f.repo, testPKI.Roots(), false); !rep.OK {
		t.Fatal(rep.Err())
	}
}

func TestUnsignedImage(t *testing.T) {
	s := startRegistry(t, registry.ServerOptions{})
	repo := openRepo(t, s.Addr, "unsigned:v1", testRemote)
	pushSample(t, repo, sampleimage.Options{})
	rep := verify(t, repo, testPKI.Roots(), false)
	if rep.OK || !strings.Contains(rep.Platforms[0].Error, ErrNoReferrer.Error()) {
		t.Fatalf("ok=%v %q", rep.OK, rep.Platforms[0].Error)
	}
}

// TestReSignWithinTheSameSecondWins: a re-sign (a rotated key) within the
// same second as the referrer it replaces, even with a clock that is
// behind, gets a created time strictly later than every existing referrer
// of the subject, with sub-second precision, and is the one selected. With
// one-second created times the two tied and the smaller digest won, which
// half the time is the old one.
func TestReSignWithinTheSameSecondWins(t *testing.T) {
	f := newSignedFixture(t, sampleimage.Options{Compressions: []sampleimage.Compression{sampleimage.Gzip}})
	ctx := context.Background()
	prev := f.sel.Selected
	for i := 0; i < 6; i++ {
		leaf, err := testPKI.IssueLeaf(fmt.Sprintf("rotated %d", i), "")
		if err != nil {
			t.Fatal(err)
		}
		// The same Created as the first signature: a clock that did not
		// move (or went back).
		s, err := NewSigner(SignOptions{Key: leaf.Key, Cert: leaf.Certificate, Chain: testPKI.Chain(), Platforms: PlatformSelector{All: true},
			TempDir: t.TempDir(), Created: f.sel.Selected.Created})
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.Sign(ctx, f.repo)
		s.Close()
		if err != nil {
			t.Fatal(err)
		}
		sel, err := f.repo.SelectBundle(ctx, f.p)
		if err != nil {
			t.Fatal(err)
		}
		got := sel.Selected
		if got.Desc.Digest != res.Platforms[0].Referrer.Digest {
			t.Fatalf("re-sign %d: selected %s (created %s), not the new referrer %s; the previous was created %s",
				i, got.Desc.Digest, got.Manifest.Annotations[AnnotationCreated], res.Platforms[0].Referrer.Digest, prev.Manifest.Annotations[AnnotationCreated])
		}
		if !got.Created.After(prev.Created) || got.Created.Sub(prev.Created) < time.Millisecond {
			t.Fatalf("re-sign %d: created %s is not at least 1ms after %s", i, got.Created, prev.Created)
		}
		if c := got.Manifest.Annotations[AnnotationCreated]; !strings.Contains(c, ".") || !strings.HasSuffix(c, "Z") {
			t.Errorf("created %q is not a sub-second RFC 3339 UTC time", c)
		}
		if rep := verify(t, f.repo, testPKI.Roots(), false); !rep.OK || rep.Platforms[0].Referrer != got.Desc.Digest {
			t.Fatalf("verify: %v", rep.Err())
		}
		prev = got
	}
}
