package oci

import (
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/intact-project/intact/internal/registry"
	"github.com/intact-project/intact/internal/sampleimage"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/verity"
)

// TestSignVerifyRoundTrip signs single- and multi-platform sample images
// with gzip, zstd and uncompressed layers on a real registry (olareg on
// loopback, with and without the referrers API) and in an OCI layout, then
// verifies them fully and runs the conformance checker on every referrer.
func TestSignVerifyRoundTrip(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name      string
		platforms []string
		noAPI     bool
		layout    bool
	}{
		{name: "single-platform", platforms: []string{"linux/amd64"}},
		{name: "multi-platform", platforms: []string{"linux/amd64", "linux/arm64", "linux/arm/v7"}},
		{name: "tag-schema-fallback", platforms: []string{"linux/amd64", "linux/arm64"}, noAPI: true},
		{name: "oci-layout", platforms: []string{"linux/amd64", "linux/arm64"}, layout: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var repo *Repo
			if tc.layout {
				var err error
				repo, err = Open(ctx, "v1", RemoteOptions{OCILayout: t.TempDir()})
				if err != nil {
					t.Fatal(err)
				}
			} else {
				s := startRegistry(t, registry.ServerOptions{NoReferrersAPI: tc.noAPI})
				repo = openRepo(t, s.Addr, "sample:v1", testRemote)
			}
			img := pushSample(t, repo, sampleimage.Options{Platforms: tc.platforms})
			res := sign(t, repo, PlatformSelector{All: true})
			if len(res.Platforms) != len(tc.platforms) {
				t.Fatalf("signed %d platforms, want %d", len(res.Platforms), len(tc.platforms))
			}
			// Shared layers are converted once.
			unique := map[digest.Digest]bool{}
			converted := 0
			for _, m := range img.Manifests {
				for _, l := range m.Layers {
					unique[l.Desc.Digest] = true
				}
			}
			for _, p := range res.Platforms {
				for _, l := range p.Layers {
					if !l.Cached {
						converted++
					}
				}
			}
			if converted != len(unique) {
				t.Errorf("converted %d layers, the image has %d distinct layers", converted, len(unique))
			}
			rep := verify(t, repo, testPKI.Roots(), true)
			if err := rep.Err(); err != nil {
				t.Fatalf("verify --full: %v", err)
			}
			for i, m := range img.Manifests {
				p := platformOf(t, repo, m)
				vs, err := repo.CheckConformance(ctx, p, res.Platforms[i].Referrer, ConformanceOptions{Roots: testPKI.Roots(), DataDevice: true, TempDir: t.TempDir()})
				if err != nil {
					t.Fatal(err)
				}
				for _, v := range vs {
					t.Errorf("%s: conformance: %s", m.Platform.Architecture, v)
				}
			}
			// A foreign CA is refused for every layer.
			other := newTestPKI(t)
			bad := verify(t, repo, other.Roots(), false)
			if bad.OK || bad.Err() == nil {
				t.Fatal("verification against another CA passed")
			}
			for _, p := range bad.Platforms {
				for _, l := range p.Layers {
					if l.OK || !strings.Contains(l.Error, "not trusted") {
						t.Errorf("layer %s with a foreign CA: ok=%v %q", l.Digest, l.OK, l.Error)
					}
				}
			}
		})
	}
}

// TestReferenceTools checks signed artifacts with the reference tools:
// every signature verifies with `openssl cms -verify -binary` against the CA
// and covers the root hash, and `veritysetup format` of the materialized
// data device (metadata ‖ tar ‖ zeros to 4096) with the profile's
// parameters gives the same root hash and byte-identical tree, which
// `veritysetup verify` accepts.
func TestReferenceTools(t *testing.T) {
	opensslPath := testutil.RequireTool(t, "openssl")
	vsPath := testutil.RequireTool(t, "veritysetup")
	ctx := context.Background()
	s := startRegistry(t, registry.ServerOptions{})
	repo := openRepo(t, s.Addr, "ref/tools:v1", testRemote)
	img := pushSample(t, repo, sampleimage.Options{PayloadSize: 3<<20 + 12345})
	sign(t, repo, PlatformSelector{All: true})
	dir := t.TempDir()
	caPath := writeFile(t, dir, "ca.pem", testPKI.Root.CertPEM())
	p := platformOf(t, repo, img.Manifests[0])
	sel, err := repo.SelectBundle(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	rootRe := regexp.MustCompile(`(?m)^Root hash:\s+([0-9a-f]+)$`)
	for i, l := range p.Manifest.Layers {
		e := sel.Selected.Layers[l.Digest]
		ldir := filepath.Join(dir, "layer"+string(rune('0'+i)))
		if err := os.MkdirAll(ldir, 0o755); err != nil {
			t.Fatal(err)
		}
		sig := writeFile(t, ldir, "sig.der", e.Signature)
		content := writeFile(t, ldir, "roothash", []byte(e.RootHash))
		runTool(t, nil, opensslPath, "cms", "-verify", "-binary", "-inform", "DER", "-in", sig, "-content", content, "-CAfile", caPath, "-purpose", "any", "-out", os.DevNull)
		// A different content must not verify.
		wrong := writeFile(t, ldir, "wrong", []byte(strings.ToUpper(e.RootHash)))
		if out, err := execCombined(opensslPath, "cms", "-verify", "-binary", "-inform", "DER", "-in", sig, "-content", wrong, "-CAfile", caPath, "-purpose", "any", "-out", os.DevNull); err == nil {
			t.Fatalf("openssl accepted the signature over other content: %s", out)
		}

		m, err := repo.Materialize(ctx, l, e, ldir, 0)
		if err != nil {
			t.Fatal(err)
		}
		tree, err := os.ReadFile(m.Tree)
		if err != nil {
			t.Fatal(err)
		}
		sb, err := verity.ParseSuperblock(tree)
		if err != nil {
			t.Fatal(err)
		}
		vsHash := filepath.Join(ldir, "veritysetup.hash")
		out := runTool(t, nil, vsPath, "format", "--data-block-size", "512", "--hash-block-size", "512",
			"--salt", hex.EncodeToString(make([]byte, 32)), "--uuid", verity.FormatUUID(sb.UUID), m.Data, vsHash)
		mm := rootRe.FindStringSubmatch(out)
		if mm == nil {
			t.Fatalf("no root hash in veritysetup output:\n%s", out)
		}
		if mm[1] != e.RootHash {
			t.Errorf("layer %d: veritysetup root %s, signed root %s", i, mm[1], e.RootHash)
		}
		vsTree, err := os.ReadFile(vsHash)
		if err != nil {
			t.Fatal(err)
		}
		if string(vsTree) != string(tree) {
			t.Errorf("layer %d: tree differs from veritysetup's (%d vs %d bytes)", i, len(tree), len(vsTree))
		}
		runTool(t, nil, vsPath, "verify", m.Data, m.Tree, e.RootHash)
	}
}
