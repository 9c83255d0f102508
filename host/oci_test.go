package host

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	orasoci "oras.land/oras-go/v2/content/oci"

	"github.com/intact-project/intact/erofs/erofstest"
	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/internal/sampleimage"
	"github.com/intact-project/intact/internal/testutil"
)

// TestBuildFromOCILayout builds the root from the sample image (three
// layers: a file replaced, one removed by a whiteout, a directory made
// opaque) in an OCI layout, and checks the flattened result fsck.erofs
// extracts against what the layers say.
func TestBuildFromOCILayout(t *testing.T) {
	testutil.RequireRoot(t) // applying layers keeps owners and xattrs only as root
	f := getFixture(t)
	img, err := sampleimage.Build(sampleimage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	layout := filepath.Join(t.TempDir(), "layout")
	store, err := orasoci.New(layout)
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Push(context.Background(), store, "v1"); err != nil {
		t.Fatal(err)
	}
	initFile := filepath.Join(t.TempDir(), "init")
	os.WriteFile(initFile, []byte("#!/bin/sh\n"), 0o755)
	s := f.spec("oci-layout:" + layout + ":v1")
	s.Root.Files = []File{{Src: initFile, Dst: "/sbin/init"}}
	out, _ := build(t, s, 1700000000)
	ext := filepath.Join(t.TempDir(), "x")
	fsck := erofstest.ErofsUtils(t, "fsck.erofs")
	if b, err := exec.Command(fsck, "--extract="+ext, "--xattrs", filepath.Join(out, RootFile)).CombinedOutput(); err != nil {
		t.Fatalf("fsck.erofs: %v %s", err, b)
	}
	read := func(p string) string { b, _ := os.ReadFile(filepath.Join(ext, p)); return string(b) }
	if got := read("etc/motd"); !strings.HasPrefix(got, "motd replaced by the platform layer") {
		t.Errorf("etc/motd = %q", got)
	}
	for _, gone := range []string{"usr/share/intact/removed-later", "var/cache/sample/old"} {
		if _, err := os.Lstat(filepath.Join(ext, gone)); err == nil {
			t.Errorf("%s survived its whiteout", gone)
		}
	}
	for _, p := range []string{"var/cache/sample/new", "bin/hello", "app2/README", "usr/share/intact/platform", "sbin/init"} {
		if _, err := os.Lstat(filepath.Join(ext, p)); err != nil {
			t.Errorf("%s missing: %v", p, err)
		}
	}
	if x, err := linux.Lxattrs(filepath.Join(ext, "usr/share/intact/with-xattr")); err != nil || string(x["user.intact.sample"]) != "yes" {
		t.Errorf("xattr: %v %v", x, err)
	}
	a, _ := os.Stat(filepath.Join(ext, "bin/hello"))
	b, _ := os.Stat(filepath.Join(ext, "bin/hello-again"))
	if a == nil || b == nil || !os.SameFile(a, b) {
		t.Error("the hardlink is not a hardlink")
	}
	if target, _ := os.Readlink(filepath.Join(ext, "bin/hi")); target != "hello" {
		t.Errorf("bin/hi -> %q", target)
	}
}
