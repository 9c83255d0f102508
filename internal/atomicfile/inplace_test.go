package atomicfile

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func randomFile(t *testing.T, path string, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestInPlaceAbortRestores: Abort puts back the bytes the region
// overwrote and the old size; the backup is a named file next to the
// target until then, and gone afterwards; Commit keeps the new bytes and
// removes the backup.
func TestInPlaceAbortRestores(t *testing.T) {
	for _, commit := range []bool{false, true} {
		dir := t.TempDir()
		path := filepath.Join(dir, "f")
		orig := randomFile(t, path, 10000)
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		w, err := EditInPlace(f, 4096, 20000)
		if err != nil {
			t.Fatal(err)
		}
		if b := w.Backup(); filepath.Dir(b) != dir || !strings.HasPrefix(filepath.Base(b), ".f.intact-backup-at-4096-") {
			t.Fatalf("backup %q", b)
		}
		if got, _ := os.ReadFile(w.Backup()); !bytes.Equal(got, orig[4096:]) {
			t.Fatal("backup does not hold the region")
		}
		newBytes := bytes.Repeat([]byte{0xee}, 30000)
		if _, err := f.WriteAt(newBytes, 4096); err != nil {
			t.Fatal(err)
		}
		want := orig
		if commit {
			if err := w.Commit(); err != nil {
				t.Fatal(err)
			}
			want = append(orig[:4096:4096], newBytes...)
		} else if err := w.Abort(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if got, _ := os.ReadFile(path); !bytes.Equal(got, want) {
			t.Errorf("commit=%v: %d bytes, equal prefix %v", commit, len(got), bytes.Equal(got[:4096], orig[:4096]))
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Errorf("commit=%v: %d entries left", commit, len(ents))
		}
	}
}

// TestInPlaceRestoreFailureKeepsBackup: when the restore itself fails,
// Abort says so, names the backup and leaves it in place.
func TestInPlaceRestoreFailureKeepsBackup(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	orig := randomFile(t, path, 10000)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	w, err := EditInPlace(f, 100, 5000)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(make([]byte, 4900), 100)
	f.Close() // the restore's writes now fail
	err = w.Abort()
	if err == nil || !strings.Contains(err.Error(), w.Backup()) {
		t.Fatalf("Abort: %v; want an error naming the backup", err)
	}
	if got, _ := os.ReadFile(w.Backup()); !bytes.Equal(got, orig[100:5000]) {
		t.Fatal("the kept backup does not hold the original bytes")
	}
}

// TestInPlaceRefusesNonSizable: a directory or a FIFO is not a file to
// write into (a directory used to be sized as 2^63-1 bytes).
func TestInPlaceRefusesNonSizable(t *testing.T) {
	d, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := EditInPlace(d, 0, 10); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Fatalf("directory: %v", err)
	}
}

// TestInPlaceBackupFailureIsAnError: when the bytes to be overwritten
// cannot be saved (here: the file is open for writing only), EditInPlace
// fails instead of going on without a backup.
func TestInPlaceBackupFailureIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	randomFile(t, path, 10000)
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if w, err := EditInPlace(f, 100, 5000); err == nil {
		t.Fatalf("no error, backup %q", w.Backup())
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("a backup file was left: %v", ents)
	}
}
