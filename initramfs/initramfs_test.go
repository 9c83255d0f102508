package initramfs

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/testutil"
)

func build(t *testing.T, fn func(w *Writer)) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	fn(w)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestExtractsWithGNUCpio unpacks our archive with GNU cpio (the reference
// reader of the newc format) and compares every entry.
func TestExtractsWithGNUCpio(t *testing.T) {
	cpio := testutil.RequireTool(t, "cpio")
	big := bytes.Repeat([]byte("0123456789abcdef"), 70000) // not a multiple of 4 after the cut
	big = big[:len(big)-3]
	arc := build(t, func(w *Writer) {
		must(t, w.Dir("etc", 0o755))
		must(t, w.Bytes("etc/a", 0o644, []byte("abc")))
		must(t, w.Bytes("usr/lib/deep/b", 0o600, nil)) // parents implicit
		must(t, w.Bytes("usr/lib/deep/big", 0o755, big))
		must(t, w.Symlink("lib", "usr/lib"))
		must(t, w.Bytes("/x1", 0o644, []byte("1")))
		must(t, w.Bytes("x22", 0o644, []byte("22")))
	})
	dir := t.TempDir()
	cmd := exec.Command(cpio, "-idm", "--quiet", "--no-absolute-filenames")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(arc)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	check := func(p string, want []byte, perm os.FileMode) {
		t.Helper()
		got, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes, err %v", p, len(got), err)
			return
		}
		st, _ := os.Stat(filepath.Join(dir, p))
		if st.Mode().Perm() != perm {
			t.Errorf("%s: mode %v, want %v", p, st.Mode().Perm(), perm)
		}
	}
	check("etc/a", []byte("abc"), 0o644)
	check("usr/lib/deep/b", nil, 0o600)
	check("usr/lib/deep/big", big, 0o755)
	check("x1", []byte("1"), 0o644)
	check("x22", []byte("22"), 0o644)
	if l, err := os.Readlink(filepath.Join(dir, "lib")); err != nil || l != "usr/lib" {
		t.Errorf("symlink: %q %v", l, err)
	}
	// cpio -t lists the explicit directory records before their contents.
	cmd = exec.Command(cpio, "-t", "--quiet")
	cmd.Stdin = bytes.NewReader(arc)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	want := "etc\netc/a\nusr\nusr/lib\nusr/lib/deep\nusr/lib/deep/b\nusr/lib/deep/big\nlib\nx1\nx22\n"
	if string(out) != want {
		t.Errorf("cpio -t:\n%s\nwant:\n%s", out, want)
	}
}

func TestLayout(t *testing.T) {
	arc := build(t, func(w *Writer) { must(t, w.Bytes("a", 0o644, []byte("xyz"))) })
	if !bytes.HasPrefix(arc, []byte("070701")) || len(arc)%4 != 0 {
		t.Fatalf("archive starts %q, %d bytes", arc[:6], len(arc))
	}
	if !bytes.Contains(arc, []byte("TRAILER!!!\x00")) {
		t.Fatal("no trailer")
	}
	// Same input, same bytes.
	if again := build(t, func(w *Writer) { must(t, w.Bytes("a", 0o644, []byte("xyz"))) }); !bytes.Equal(arc, again) {
		t.Fatal("not deterministic")
	}
}

func TestErrors(t *testing.T) {
	w := NewWriter(&bytes.Buffer{})
	for _, p := range []string{"", "/", "..", "../x", "a/../../x", "a\x00b"} {
		if err := w.Bytes(p, 0o644, nil); !errors.Is(err, ErrBadPath) {
			t.Errorf("path %q: %v", p, err)
		}
	}
	must(t, w.Bytes("f", 0o644, nil))
	if err := w.Bytes("f", 0o644, nil); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate: %v", err)
	}
	if err := w.File("short", 0o644, 10, strings.NewReader("abc")); !errors.Is(err, ErrSize) {
		t.Errorf("short reader: %v", err)
	}
	if err := w.Close(); err == nil {
		t.Error("close after a failed write succeeded")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
