package linux

import (
	"bytes"
	"errors"
	"os"
	"testing"
)

// insertRangeFile returns a file on a filesystem that supports
// FALLOC_FL_INSERT_RANGE (the test's temporary directory, else the package
// directory, usually on the disk's ext4 or xfs), holding data.
func insertRangeFile(t *testing.T, data []byte) (*os.File, int64) {
	t.Helper()
	dirs := []string{t.TempDir()}
	if d, err := os.MkdirTemp(".", ".falloc-test-"); err == nil {
		t.Cleanup(func() { os.RemoveAll(d) })
		dirs = append(dirs, d)
	}
	for _, dir := range dirs {
		f, err := os.CreateTemp(dir, "f")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		bs, err := FSBlockSize(f)
		if err != nil {
			t.Fatal(err)
		}
		err = InsertRange(f, 0, bs)
		if err == nil {
			if err := f.Truncate(0); err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(data, 0); err != nil {
				t.Fatal(err)
			}
			return f, bs
		}
		if !errors.Is(err, EOPNOTSUPP) {
			t.Fatalf("InsertRange in %s: %v (want success or EOPNOTSUPP)", dir, err)
		}
		var le *Error
		if !errors.As(err, &le) || le.Op != "fallocate FALLOC_FL_INSERT_RANGE" {
			t.Fatalf("error %v does not name the operation", err)
		}
	}
	// A property of the filesystems at hand, not a missing tool: skip.
	t.Skipf("no filesystem among %v supports FALLOC_FL_INSERT_RANGE", dirs)
	return nil, 0
}

// TestInsertRange: the bytes behind the offset move up by whole blocks, the
// gap reads as zeros, and unaligned requests fail with EINVAL.
func TestInsertRange(t *testing.T) {
	data := make([]byte, 5*8192+100)
	for i := range data {
		data[i] = byte(i*7 + i>>9)
	}
	f, bs := insertRangeFile(t, data)
	if err := InsertRange(f, bs, 2*bs); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	want := append(append(append([]byte{}, data[:bs]...), make([]byte, 2*bs)...), data[bs:]...)
	if !bytes.Equal(got, want) {
		t.Fatalf("after InsertRange(%d, %d): %d bytes, content differs from data[:%d] ‖ zeros ‖ data[%d:]", bs, 2*bs, len(got), bs, bs)
	}
	for _, c := range []struct{ off, n int64 }{{0, 512}, {100, bs}, {int64(len(got)) + bs, bs}} {
		if err := InsertRange(f, c.off, c.n); !errors.Is(err, EINVAL) {
			t.Errorf("InsertRange(%d, %d): %v, want EINVAL", c.off, c.n, err)
		}
	}
}

// TestStartWriteback: write-out of a written range starts (the call
// succeeds on a regular file) and a negative range is EINVAL.
func TestStartWriteback(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "w")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := StartWriteback(f, 0, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := StartWriteback(f, -1, 10); !errors.Is(err, EINVAL) {
		t.Fatalf("negative offset: %v, want EINVAL", err)
	}
}
