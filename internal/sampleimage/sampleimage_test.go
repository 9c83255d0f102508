package sampleimage

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/intact-project/intact/internal/testutil"
)

func TestBuildIsDeterministic(t *testing.T) {
	opts := Options{Platforms: []string{"linux/amd64", "linux/arm64/v8"}, PayloadSize: 5 << 20}
	a, err := Build(opts)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(opts)
	if err != nil {
		t.Fatal(err)
	}
	if a.Root.Digest != b.Root.Digest || len(a.Blobs) != len(b.Blobs) {
		t.Fatalf("two builds differ: %s vs %s", a.Root.Digest, b.Root.Digest)
	}
	c, err := Build(Options{Platforms: opts.Platforms, PayloadSize: opts.PayloadSize, Variant: "other"})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range c.Manifests[0].Layers {
		for _, m := range a.Manifests {
			for _, l2 := range m.Layers {
				if l.Desc.Digest == l2.Desc.Digest {
					t.Fatalf("variant shares layer %s", l.Desc.Digest)
				}
			}
		}
	}
}

func TestMultiPlatformSharesLayers(t *testing.T) {
	img, err := Build(Options{Platforms: []string{"linux/amd64", "linux/arm64"}})
	if err != nil {
		t.Fatal(err)
	}
	if img.Root.MediaType != ocispec.MediaTypeImageIndex || len(img.Manifests) != 2 {
		t.Fatalf("root %s with %d manifests", img.Root.MediaType, len(img.Manifests))
	}
	m0, m1 := img.Manifests[0].Layers, img.Manifests[1].Layers
	if m0[0].Desc.Digest != m1[0].Desc.Digest || m0[2].Desc.Digest != m1[2].Desc.Digest {
		t.Fatal("base and app layers are not shared between platforms")
	}
	if m0[1].Desc.Digest == m1[1].Desc.Digest {
		t.Fatal("platform layers are shared")
	}
	var idx ocispec.Index
	data, _ := img.Blob(img.Root.Digest)
	if err := json.Unmarshal(data, &idx); err != nil || len(idx.Manifests) != 2 || idx.Manifests[1].Platform.Architecture != "arm64" {
		t.Fatalf("index %s: %v", data, err)
	}
}

// TestLayersWithReferenceTools decompresses every layer with gzip and zstd
// and lists it with GNU tar: the blobs are what real tools expect, and the
// diff_ids in the config are the digests of the decompressed tars.
func TestLayersWithReferenceTools(t *testing.T) {
	tarPath := testutil.RequireTool(t, "tar")
	zstdPath := testutil.RequireTool(t, "zstd")
	gzipPath := testutil.RequireTool(t, "gzip")
	img, err := Build(Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := img.Manifests[0]
	cfgData, _ := img.Blob(m.Config.Digest)
	var cfg ocispec.Image
	if err := json.Unmarshal(cfgData, &cfg); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for i, l := range m.Layers {
		blob, ok := img.Blob(l.Desc.Digest)
		if !ok || digest.FromBytes(blob) != l.Desc.Digest {
			t.Fatalf("layer %d blob missing or wrong", i)
		}
		var raw []byte
		switch l.Compression {
		case Gzip:
			raw = run(t, blob, gzipPath, "-dc")
		case Zstd:
			raw = run(t, blob, zstdPath, "-dc")
		default:
			raw = blob
		}
		if digest.FromBytes(raw) != l.DiffID || cfg.RootFS.DiffIDs[i] != l.DiffID {
			t.Fatalf("layer %d: diff_id mismatch", i)
		}
		// Our own decompressor agrees.
		rc, err := Decompress(bytes.NewReader(blob), l.Compression)
		if err != nil {
			t.Fatal(err)
		}
		ours, err := io.ReadAll(rc)
		if err != nil || !bytes.Equal(ours, raw) {
			t.Fatalf("layer %d: Decompress differs: %v", i, err)
		}
		p := filepath.Join(dir, "layer.tar")
		if err := os.WriteFile(p, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		list := string(run(t, nil, tarPath, "-tvf", p))
		if i == 0 && (!strings.Contains(list, "bin/hi -> hello") || !strings.Contains(list, "bin/hello-again link to bin/hello")) {
			t.Fatalf("layer 0 listing:\n%s", list)
		}
		if i == 1 && !strings.Contains(list, "var/cache/sample/.wh..wh..opq") {
			t.Fatalf("layer 1 listing:\n%s", list)
		}
	}
}

func run(t *testing.T, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, stderr.String())
	}
	return out
}

func TestBadOptions(t *testing.T) {
	for _, o := range []Options{
		{Platforms: []string{"linux"}},
		{Compressions: []Compression{"lz4"}},
		{PayloadSize: -1},
	} {
		if _, err := Build(o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}
