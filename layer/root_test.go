package layer_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/pkg/archive"

	"github.com/intact-project/intact/erofs/erofstest"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/layer"
)

// TestOverlayStackAsRoot converts three layers, mounts each with the
// kernel's EROFS, stacks them with overlayfs and compares the merged view
// with the same tars applied in order by containerd's archive.Apply (the
// applier containerd's own snapshotters use).
func TestOverlayStackAsRoot(t *testing.T) {
	testutil.RequireRoot(t)
	layers := erofstest.Stack()
	applied := t.TempDir()
	for i, tb := range layers {
		if _, err := archive.Apply(context.Background(), applied, bytes.NewReader(tb)); err != nil {
			t.Fatalf("containerd archive.Apply layer %d: %v", i, err)
		}
	}
	want, err := erofstest.FromDir(applied)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range profiles {
		t.Run(string(p), func(t *testing.T) {
			var lowers []string
			for i := len(layers) - 1; i >= 0; i-- {
				c := mustConvert(t, layers[i], p, false)
				veritysetupVerify(t, c)
				lowers = append(lowers, erofstest.Mount(t, c.path))
			}
			mnt := t.TempDir()
			if out, err := exec.Command("mount", "-t", "overlay", "overlay", "-o", "ro,lowerdir="+strings.Join(lowers, ":"), mnt).CombinedOutput(); err != nil {
				t.Fatalf("mount overlay: %v: %s", err, out)
			}
			defer exec.Command("umount", mnt).Run()
			got, err := erofstest.FromDir(mnt)
			if err != nil {
				t.Fatal(err)
			}
			d := erofstest.Diff(want, got, erofstest.DiffOptions{Ignore: func(path, f string) bool {
				// The root of the applied tree is a fresh temp dir.
				// overlayfs reports nlink 1 for merged directories and
				// the lower inode's nlink for files (a hardlinked file
				// keeps nlink 2 after its other name was replaced above).
				return (path == "." && (f == "mtime" || f == "mode")) || f == "nlink"
			}})
			if len(d) > 0 {
				t.Errorf("overlay of converted layers vs containerd archive.Apply:\n%s", strings.Join(d, "\n"))
			}
		})
	}
}

// TestGoTreeAsRoot converts a real tree, the Go toolchain at GOROOT, in both
// profiles: fsck.erofs accepts the images, veritysetup the trees, and the
// kernel mount shows every path exactly as the tree on disk.
func TestGoTreeAsRoot(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: converts GOROOT")
	}
	testutil.RequireRoot(t)
	goroot := strings.TrimSpace(mustOutput(t, "go", "env", "GOROOT"))
	tarball := filepath.Join(t.TempDir(), "goroot.tar")
	if out, err := exec.Command("tar", "--format=pax", "--xattrs", "-C", goroot, "-cf", tarball, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	tb, err := os.ReadFile(tarball)
	if err != nil {
		t.Fatal(err)
	}
	want, err := erofstest.FromDir(goroot)
	if err != nil {
		t.Fatal(err)
	}
	fsck := erofstest.ErofsUtils(t, "fsck.erofs")
	for _, p := range profiles {
		t.Run(string(p), func(t *testing.T) {
			c := mustConvert(t, gz(t, tb), p, p == layer.ProfileTarIndex)
			t.Logf("%s: %d MiB tar, %d entries -> %d MiB image, %d bytes metadata, root %s", p, c.res.TarSize>>20, c.res.Entries, c.res.ImageSize>>20, c.res.MetadataSize, c.res.RootHashHex())
			veritysetupVerify(t, c)
			img := c.path
			if p == layer.ProfileTarIndex {
				img = c.metaPath
				if out, err := exec.Command(fsck, "--device="+tarball, img).CombinedOutput(); err != nil {
					t.Fatalf("fsck.erofs: %v\n%s", err, out)
				}
			} else if out, err := exec.Command(fsck, img).CombinedOutput(); err != nil {
				t.Fatalf("fsck.erofs: %v\n%s", err, out)
			}
			got, err := erofstest.FromDir(erofstest.Mount(t, c.path))
			if err != nil {
				t.Fatal(err)
			}
			d := erofstest.Diff(want, got, erofstest.DiffOptions{Ignore: func(path, f string) bool {
				// Hardlink identity across the tree: GOROOT has none; the
				// (dev, ino) pairs of two filesystems never match.
				return f == "link"
			}})
			if len(d) > 0 {
				if len(d) > 30 {
					d = append(d[:30], "...")
				}
				t.Errorf("kernel mount of the image vs GOROOT:\n%s", strings.Join(d, "\n"))
			}
		})
	}
}

func mustOutput(t testing.TB, name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return string(out)
}

func erofsMount(t *testing.T, image string) string { return erofstest.Mount(t, image) }
