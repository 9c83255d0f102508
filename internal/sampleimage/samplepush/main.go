// Command samplepush pushes a deterministic sample image (package
// sampleimage) to a registry or OCI layout, or pulls and decompresses the
// layers of an image as a baseline: the image benchmark
// (scripts/bench.d/image) uses both. It is a test tool, not part of intact.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/intact-project/intact/internal/sampleimage"
	"github.com/intact-project/intact/oci"
)

func main() {
	var (
		plainHTTP  bool
		layout     string
		payloadMiB int64
		layers     string
		platforms  string
		pull       bool
	)
	flag.BoolVar(&plainHTTP, "plain-http", false, "plain HTTP registry")
	flag.StringVar(&layout, "oci-layout", "", "OCI layout directory instead of a registry")
	flag.Int64Var(&payloadMiB, "payload-mib", 0, "MiB of payload per layer")
	flag.StringVar(&layers, "layers", "gzip,zstd,none", "compression of each layer")
	flag.StringVar(&platforms, "platforms", "linux/amd64", "comma-separated platforms")
	flag.BoolVar(&pull, "pull", false, "pull and decompress every layer of REF instead of pushing; print JSON timings")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: samplepush [flags] REF")
		os.Exit(2)
	}
	ctx := context.Background()
	repo, err := oci.Open(ctx, flag.Arg(0), oci.RemoteOptions{PlainHTTP: plainHTTP, OCILayout: layout, NoCredentials: true})
	if err != nil {
		fail(err)
	}
	defer repo.Close()
	if pull {
		if err := pullAll(ctx, repo); err != nil {
			fail(err)
		}
		return
	}
	var comps []sampleimage.Compression
	for _, c := range strings.Split(layers, ",") {
		comps = append(comps, sampleimage.Compression(c))
	}
	img, err := sampleimage.Build(sampleimage.Options{Platforms: strings.Split(platforms, ","), Compressions: comps, PayloadSize: payloadMiB << 20})
	if err != nil {
		fail(err)
	}
	if err := img.Push(ctx, repo.Target, repo.Reference); err != nil {
		fail(err)
	}
	var comp, raw int64
	seen := map[string]bool{}
	for _, m := range img.Manifests {
		for _, l := range m.Layers {
			if !seen[l.Desc.Digest.String()] {
				seen[l.Desc.Digest.String()] = true
				comp += l.Desc.Size
				raw += l.TarSize
			}
		}
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{"digest": img.Root.Digest, "layers": len(seen), "compressed_bytes": comp, "tar_bytes": raw})
}

// pullAll fetches and decompresses every distinct layer of every platform
// sequentially, as the signer does, and prints the time.
func pullAll(ctx context.Context, repo *oci.Repo) error {
	start := time.Now()
	root, err := repo.Resolve(ctx)
	if err != nil {
		return err
	}
	ps, err := repo.Platforms(ctx, root, oci.PlatformSelector{All: true})
	if err != nil {
		return err
	}
	var comp, raw int64
	seen := map[string]bool{}
	for _, p := range ps {
		for _, l := range p.Manifest.Layers {
			if seen[l.Digest.String()] {
				continue
			}
			seen[l.Digest.String()] = true
			rc, err := repo.Open(ctx, l)
			if err != nil {
				return err
			}
			c := sampleimage.Uncompressed
			switch {
			case strings.HasSuffix(l.MediaType, "gzip"):
				c = sampleimage.Gzip
			case strings.HasSuffix(l.MediaType, "zstd"):
				c = sampleimage.Zstd
			}
			tr, err := sampleimage.Decompress(rc, c)
			if err != nil {
				rc.Close()
				return err
			}
			n, err := io.Copy(io.Discard, tr)
			tr.Close()
			if err == nil {
				_, err = io.Copy(io.Discard, rc)
			}
			rc.Close()
			if err != nil {
				return err
			}
			comp += l.Size
			raw += n
		}
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]any{"seconds": time.Since(start).Seconds(), "layers": len(seen), "compressed_bytes": comp, "tar_bytes": raw})
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "samplepush:", err)
	os.Exit(1)
}
