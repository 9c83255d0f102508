package layer_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/pkg/archive"

	"github.com/intact-project/intact/erofs/erofstest"
	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/layer"
)

// TestConvertDirAsRoot converts a directory tree (the feature corpus applied
// by containerd's archive.Apply, plus what an overlayfs upper directory
// holds: a 0:0 character-device whiteout and an opaque directory) the way
// intactd commits a snapshot: veritysetup accepts the tree, the kernel's
// mount of the image shows the directory exactly (whiteout and opaque xattr
// included), and the same tree converts to the same bytes again.
func TestConvertDirAsRoot(t *testing.T) {
	testutil.RequireRoot(t)
	src := t.TempDir()
	if _, err := archive.Apply(context.Background(), src, bytes.NewReader(erofstest.Features())); err != nil {
		t.Fatal(err)
	}
	if err := linux.Mknod(filepath.Join(src, "whiteout"), 0o020000, 0); err != nil { // S_IFCHR, 0:0
		t.Fatal(err)
	}
	opq := filepath.Join(src, "opaque")
	if err := os.Mkdir(opq, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := linux.Lsetxattr(opq, "trusted.overlay.opaque", []byte("y")); err != nil {
		t.Fatal(err)
	}
	want, err := erofstest.FromDir(src)
	if err != nil {
		t.Fatal(err)
	}
	conv := func() (*converted, []byte) {
		p := filepath.Join(t.TempDir(), "dir.img")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		res, err := layer.ConvertDir(context.Background(), src, f, layer.Options{})
		if err == nil {
			err = f.Close()
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return &converted{path: p, res: res}, b
	}
	c, b1 := conv()
	if int64(len(b1)) != c.res.ImageSize+c.res.TreeSize {
		t.Fatalf("%d bytes written, result says %d + %d", len(b1), c.res.ImageSize, c.res.TreeSize)
	}
	veritysetupVerify(t, c)
	mnt := erofstest.Mount(t, c.path)
	got, err := erofstest.FromDir(mnt)
	if err != nil {
		t.Fatal(err)
	}
	// A directory holding whiteouts gets trusted.overlay.origin="" (as
	// erofs-utils does; docs/formats.md): here the root, so its xattrs
	// are compared below instead.
	ignoreRootXattrs := erofstest.DiffOptions{Ignore: func(path, f string) bool { return path == "." && f == "xattrs" }}
	if d := erofstest.Diff(want, got, ignoreRootXattrs); len(d) > 0 {
		t.Errorf("kernel mount of the converted directory differs:\n%s", strings.Join(d, "\n"))
	}
	if x, err := linux.Lxattrs(mnt); err != nil || len(x) != 1 || string(x["trusted.overlay.origin"]) != "" {
		t.Errorf("root xattrs %v (%v), want only trusted.overlay.origin=\"\"", x, err)
	}
	if _, b2 := conv(); !bytes.Equal(b1, b2) {
		t.Error("the same tree converted to other bytes")
	}
}
