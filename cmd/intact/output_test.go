package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/intact-project/intact/erofs/erofstest"
	"github.com/intact-project/intact/internal/testutil"
)

// TestMain lets a test run this binary as the intact command
// (INTACT_TEST_MAIN=1): the tests of kill -9 and Ctrl-C need a real
// process with main's signal handling.
func TestMain(m *testing.M) {
	if os.Getenv("INTACT_TEST_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// intactProcess returns a command that runs this test binary as intact.
func intactProcess(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), "INTACT_TEST_MAIN=1")
	return cmd
}

// TestOutputRefusesNonRegularTarget: an output path that exists and is not
// a regular file (a symlink, a FIFO, a directory) is refused before any
// work, and left exactly as it was. On the old atomicfile the rename
// replaced a symlink or a FIFO with a regular file and exited 0.
func TestOutputRefusesNonRegularTarget(t *testing.T) {
	testutil.RequireHost(t, "mkfifo")
	dir := t.TempDir()
	in := filepath.Join(dir, "layer.tar")
	if err := os.WriteFile(in, erofstest.Stack()[0], 0o644); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(victim, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := exec.Command("mkfifo", fifo).Run(); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.MkdirAll(filepath.Join(sub, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, target string
		mode         os.FileMode
	}{
		{"symlink", link, os.ModeSymlink},
		{"fifo", fifo, os.ModeNamedPipe},
		{"directory", sub, os.ModeDir},
	} {
		for _, args := range [][]string{
			{"layer", "convert", in, "-o", c.target},
			{"layer", "convert", in, "--profile", "tar-index", "--metadata-output", c.target, "--hash-output", filepath.Join(dir, "h-"+c.name)},
			{"verity", "sign", "--key", "k", "--cert", "c", "-o", c.target, strings.Repeat("ab", 32)},
		} {
			code, _, stderr := runCLI(t, args...)
			if code != 1 || !strings.Contains(stderr, "not a regular file") {
				t.Errorf("%s: %v: exit %d, stderr %q; want exit 1 naming the non-regular target", c.name, args, code, stderr)
			}
			st, err := os.Lstat(c.target)
			if err != nil || st.Mode().Type() != c.mode.Type() {
				t.Fatalf("%s: target changed: %v %v", c.name, st.Mode(), err)
			}
			if _, err := os.Lstat(filepath.Join(dir, "h-"+c.name)); err == nil {
				t.Errorf("%s: another output was left behind", c.name)
			}
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Fatalf("the symlink's target changed: %q", b)
	}
	leftovers(t, dir)
}

// TestOutputRefusesDeviceNodeAsRoot: a character device node as -o stays a
// device node (the old code renamed a regular file over it as root).
func TestOutputRefusesDeviceNodeAsRoot(t *testing.T) {
	testutil.RequireHost(t, "mknod")
	testutil.RequireRoot(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "layer.tar")
	if err := os.WriteFile(in, erofstest.Stack()[0], 0o644); err != nil {
		t.Fatal(err)
	}
	node := filepath.Join(dir, "null")
	if out, err := exec.Command("mknod", node, "c", "1", "3").CombinedOutput(); err != nil {
		t.Fatalf("mknod: %v %s", err, out)
	}
	code, _, stderr := runCLI(t, "layer", "convert", in, "-o", node)
	if code != 1 || !strings.Contains(stderr, "not a regular file") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	st, err := os.Lstat(node)
	if err != nil || st.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("device node replaced: %v %v", st.Mode(), err)
	}
}

// leftovers fails the test if dir holds a temporary file of ours.
func leftovers(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	}
}

// TestLayerConvertKilledLeavesNothing: kill -9 in the middle of a
// conversion leaves no file in the output directory (the output is an
// unnamed O_TMPFILE until it is committed).
func TestLayerConvertKilledLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	outDir := filepath.Join(dir, "out")
	if err := os.Mkdir(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := intactProcess(t, "layer", "convert", "-", "-o", filepath.Join(outDir, "layer.img"))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	// Half a layer, then the input stalls.
	tarb := erofstest.Stack()[0]
	if _, err := stdin.Write(tarb[:len(tarb)/2]); err != nil {
		t.Fatal(err)
	}
	waitOpenIn(t, cmd.Process.Pid, outDir)
	cmd.Process.Kill()
	cmd.Wait()
	ents, _ := os.ReadDir(outDir)
	for _, e := range ents {
		t.Errorf("kill -9 left %s behind", e.Name())
	}
}

// waitOpenIn waits until process pid has a file under dir open.
func waitOpenIn(t *testing.T, pid int, dir string) {
	t.Helper()
	fdDir := "/proc/" + strconv.Itoa(pid) + "/fd"
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		ents, _ := os.ReadDir(fdDir)
		for _, e := range ents {
			if l, err := os.Readlink(filepath.Join(fdDir, e.Name())); err == nil && strings.HasPrefix(l, dir+"/") {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("process %d never opened its output under %s", pid, dir)
}
