package layer_test

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/archive"

	"github.com/intact-project/intact/erofs/erofstest"
	"github.com/intact-project/intact/internal/testutil"
)

// aptArchive returns the main Debian archive URI and the suite of this
// machine, read from its apt configuration (no mirror is written here).
func aptArchive(t *testing.T) (uri, suite string) {
	t.Helper()
	osr, _ := os.ReadFile("/etc/os-release")
	for _, l := range strings.Split(string(osr), "\n") {
		if v, ok := strings.CutPrefix(l, "VERSION_CODENAME="); ok {
			suite = strings.Trim(v, `"`)
		}
	}
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, stanza := range strings.Split(string(b), "\n\n") {
			var uris, suites []string
			sc := bufio.NewScanner(strings.NewReader(stanza))
			for sc.Scan() {
				if v, ok := strings.CutPrefix(sc.Text(), "URIs:"); ok {
					uris = strings.Fields(v)
				}
				if v, ok := strings.CutPrefix(sc.Text(), "Suites:"); ok {
					suites = strings.Fields(v)
				}
			}
			for _, s := range suites {
				if s == suite && len(uris) > 0 {
					return uris[0], suite
				}
			}
		}
	}
	if b, err := os.ReadFile("/etc/apt/sources.list"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) >= 3 && f[0] == "deb" && f[2] == suite {
				return f[1], suite
			}
		}
	}
	testutil.Unavailable(t, "no Debian archive for suite "+suite+" in the apt configuration")
	return "", ""
}

// debianTar returns a tar of a minbase Debian tree of this machine's suite,
// made with debootstrap once and cached in $INTACT_CACHE (~/.cache/intact).
func debianTar(t *testing.T) string {
	t.Helper()
	cache := os.Getenv("INTACT_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "intact")
	}
	uri, suite := aptArchive(t)
	p := filepath.Join(cache, "debian-"+suite+"-minbase.tar")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	db := testutil.RequireTool(t, "debootstrap")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(t.TempDir(), "root")
	start := time.Now()
	if out, err := exec.Command(db, "--variant=minbase", suite, root, uri).CombinedOutput(); err != nil {
		t.Fatalf("debootstrap: %v\n%s", err, out)
	}
	tmp := p + ".tmp"
	if out, err := exec.Command("tar", "--format=pax", "--xattrs", "--numeric-owner", "-C", root, "-cf", tmp, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	t.Logf("debootstrap --variant=minbase %s took %v (cached in %s)", suite, time.Since(start), p)
	return p
}

// TestDebianTreeAsRoot converts a debootstrapped Debian tree in both
// profiles; the kernel mount of each equals the tree applied by containerd's
// archive.Apply, fsck.erofs and veritysetup accept the outputs.
func TestDebianTreeAsRoot(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: debootstraps Debian on the first run")
	}
	testutil.RequireRoot(t)
	tarball := debianTar(t)
	tb, err := os.ReadFile(tarball)
	if err != nil {
		t.Fatal(err)
	}
	applied := t.TempDir()
	if _, err := archive.Apply(context.Background(), applied, bytes.NewReader(tb)); err != nil {
		t.Fatalf("archive.Apply: %v", err)
	}
	want, err := erofstest.FromDir(applied)
	if err != nil {
		t.Fatal(err)
	}
	fsck := erofstest.ErofsUtils(t, "fsck.erofs")
	for _, p := range profiles {
		t.Run(string(p), func(t *testing.T) {
			start := time.Now()
			c := mustConvert(t, zst(t, tb), p, false)
			t.Logf("%s: %d MiB tar, %d entries -> %d MiB, %v, root %s", p, c.res.TarSize>>20, c.res.Entries, c.res.ImageSize>>20, time.Since(start), c.res.RootHashHex())
			veritysetupVerify(t, c)
			if p == "full" {
				if out, err := exec.Command(fsck, c.path).CombinedOutput(); err != nil {
					t.Fatalf("fsck.erofs: %v\n%s", err, out)
				}
			}
			got, err := erofstest.FromDir(erofstest.Mount(t, c.path))
			if err != nil {
				t.Fatal(err)
			}
			d := erofstest.Diff(want, got, erofstest.DiffOptions{Ignore: func(path, f string) bool {
				return path == "." && (f == "mtime" || f == "mode")
			}})
			if len(d) > 0 {
				if len(d) > 30 {
					d = append(d[:30], "...")
				}
				t.Errorf("kernel mount vs containerd archive.Apply:\n%s", strings.Join(d, "\n"))
			}
		})
	}
}
