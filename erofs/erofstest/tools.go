package erofstest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/testutil"
)

// ErofsUtils returns the path of an erofs-utils tool (mkfs.erofs,
// fsck.erofs, dump.erofs) of version 1.9 or newer: from $INTACT_EROFS_UTILS,
// else the build cache of scripts/build-erofs-utils
// ($INTACT_CACHE/erofs-utils/bin, default ~/.cache/intact). It skips the
// test (fails it in a strict run) when the tool is missing or too old.
func ErofsUtils(t testing.TB, tool string) string {
	t.Helper()
	dir := os.Getenv("INTACT_EROFS_UTILS")
	if dir == "" {
		cache := os.Getenv("INTACT_CACHE")
		if cache == "" {
			home, _ := os.UserHomeDir()
			cache = filepath.Join(home, ".cache", "intact")
		}
		dir = filepath.Join(cache, "erofs-utils", "bin")
	}
	p := filepath.Join(dir, tool)
	out, err := exec.Command(p, "-V").CombinedOutput()
	if err != nil {
		testutil.Unavailable(t, tool+" 1.9+ not found in "+dir+" (scripts/build-erofs-utils builds it)")
	}
	version := ""
	for _, f := range strings.Fields(string(out)) {
		if f != "" && f[0] >= '0' && f[0] <= '9' {
			version = f
			break
		}
	}
	if !(strings.HasPrefix(version, "1.9") || strings.HasPrefix(version, "2.")) {
		testutil.Unavailable(t, tool+" is "+strings.TrimSpace(string(out))+", need 1.9 or newer")
	}
	return p
}

// Mount mounts an image read-only through a loop device and returns the
// mount point; it is unmounted when the test ends. Needs root.
func Mount(t testing.TB, image string) string {
	t.Helper()
	testutil.RequireRoot(t)
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "erofs", "-o", "loop,ro", image, dir).CombinedOutput(); err != nil {
		t.Fatalf("mount %s: %v: %s", image, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}
