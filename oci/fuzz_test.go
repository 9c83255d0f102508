package oci

import (
	"bytes"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// FuzzCheckMetadata feeds arbitrary bytes as an EROFS metadata blob: no
// panic, and acceptance only with the layer's UUID in place.
func FuzzCheckMetadata(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzCheckMetadata (a metadata blob we pushed).
	f.Add(make([]byte, 2048))
	layer := digest.FromString("layer")
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := CheckMetadata(b, layer); err == nil && len(b) < 1088 {
			t.Fatalf("accepted %d bytes", len(b))
		}
	})
}

// FuzzCheckTree feeds arbitrary tree blobs (and a metadata prefix) to the
// tree checker: no panic, no huge allocation, and acceptance implies the
// tar-index parameters.
func FuzzCheckTree(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzCheckTree (a tree, its metadata and root).
	f.Add(make([]byte, 1024), make([]byte, 512), strings.Repeat("0", 64))
	f.Fuzz(func(t *testing.T, tree, meta []byte, root string) {
		if len(tree) > 1<<20 || len(meta) > 1<<20 {
			return
		}
		blocks, err := CheckTree(bytes.NewReader(tree), int64(len(tree)), meta, root)
		if err == nil && (blocks == 0 || blocks*512 < uint64(len(meta))) {
			t.Fatalf("accepted a tree of %d blocks for %d bytes of metadata", blocks, len(meta))
		}
	})
}
