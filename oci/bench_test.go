package oci

import (
	"context"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/intact-project/intact/internal/registry"
	"github.com/intact-project/intact/internal/sampleimage"
)

// BenchmarkSign signs a multi-layer image (gzip, zstd, none, gzip;
// INTACT_BENCH_IMAGE_MIB MiB of payload in total, default 64) from an
// in-process loopback registry and reports the time relative to pulling and
// decompressing the same layers in the same run (metric x-pull).
// scripts/bench.d/image measures the CLI against a registry process.
func BenchmarkSign(b *testing.B) {
	mib := int64(64)
	if v, err := strconv.ParseInt(os.Getenv("INTACT_BENCH_IMAGE_MIB"), 10, 64); err == nil && v > 0 {
		mib = v
	}
	ctx := context.Background()
	s, err := registry.StartServer(ctx, registry.ServerOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(ctx)
	repo, err := Open(ctx, s.Addr+"/bench/sign:v1", RemoteOptions{PlainHTTP: true, NoCredentials: true})
	if err != nil {
		b.Fatal(err)
	}
	comps := []sampleimage.Compression{sampleimage.Gzip, sampleimage.Zstd, sampleimage.Uncompressed, sampleimage.Gzip}
	img, err := sampleimage.Build(sampleimage.Options{Compressions: comps, PayloadSize: mib << 20 / int64(len(comps))})
	if err != nil {
		b.Fatal(err)
	}
	if err := img.Push(ctx, repo.Target, "v1"); err != nil {
		b.Fatal(err)
	}
	var tarBytes int64
	for _, l := range img.Manifests[0].Layers {
		tarBytes += l.TarSize
	}
	pull := func() time.Duration {
		start := time.Now()
		for _, l := range img.Manifests[0].Layers {
			rc, err := repo.Open(ctx, l.Desc)
			if err != nil {
				b.Fatal(err)
			}
			tr, err := sampleimage.Decompress(rc, l.Compression)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, tr); err != nil {
				b.Fatal(err)
			}
			tr.Close()
			io.Copy(io.Discard, rc)
			rc.Close()
		}
		return time.Since(start)
	}
	pull() // warm up
	base := pull()
	b.SetBytes(tarBytes)
	b.ResetTimer()
	var total time.Duration
	for b.Loop() {
		start := time.Now()
		sg, err := NewSigner(SignOptions{Key: testPKI.Leaf.Key, Cert: testPKI.Leaf.Certificate, TempDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := sg.Sign(ctx, repo); err != nil {
			b.Fatal(err)
		}
		sg.Close()
		total += time.Since(start)
	}
	b.ReportMetric(float64(total)/float64(b.N)/float64(base), "x-pull")
	b.Logf("%d MiB of tars: pull+decompress %v, sign %v per run; load %s", tarBytes>>20, base, total/time.Duration(b.N), loadavg())
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.Join(strings.Fields(string(b))[:3], " ")
}
