package erofs

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io/fs"
	"testing"
)

// TestDirectoryLoop patches an image so that a subdirectory entry points
// back at the root: lookups and walks must fail with ErrCorrupt, not loop.
func TestDirectoryLoop(t *testing.T) {
	var out bytes.Buffer
	w, _ := NewWriter(&out, Options{Layout: LayoutFull})
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{{Typeflag: tar.TypeDir, Name: "a/", Mode: 0o755}, {Typeflag: tar.TypeDir, Name: "a/b/", Mode: 0o755}, {Typeflag: tar.TypeReg, Name: "a/b/f", Mode: 0o644}} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	tb := buf.Bytes()
	tr, err := w.AddTar(context.Background(), bytes.NewReader(tb))
	if err != nil {
		t.Fatal(err)
	}
	res, err := w.Finish(context.Background(), tr.Size)
	if err != nil {
		t.Fatal(err)
	}
	img := out.Bytes()
	copy(img, res.Head)
	fsys, err := Open(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	a, err := fsys.Inode("a")
	if err != nil {
		t.Fatal(err)
	}
	if a.Layout != layoutFlatInline {
		t.Fatalf("directory a has layout %d, want inline", a.Layout)
	}
	// Dir a's entries: ".", "..", "b"; point "b" at the root.
	ents, err := fsys.readDirents(a)
	if err != nil || len(ents) != 3 || ents[2].Name != "b" {
		t.Fatalf("entries %v, %v", ents, err)
	}
	binary.LittleEndian.PutUint64(img[a.inlineOff+2*direntSize:], res.RootNID)
	fsys, _ = Open(bytes.NewReader(img), int64(len(img)))
	if _, err := fsys.Stat("a/b/a/b"); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("lookup through the loop: %v", err)
	}
	n := 0
	err = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		n++
		if n > 100 {
			t.Fatal("walk does not end")
		}
		return err
	})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("walk: %v", err)
	}
}
