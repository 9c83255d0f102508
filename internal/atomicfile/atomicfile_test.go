package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestCommitAndAbort(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out")

	f, err := Create(p, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("partial")); err != nil {
		t.Fatal(err)
	}
	f.Abort()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("abort left %d entries behind", len(ents))
	}

	if err := WriteFile(p, []byte("whole"), 0o640); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil || string(got) != "whole" {
		t.Fatalf("got %q, %v", got, err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v", st.Mode().Perm())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("expected only the target, got %d entries", len(ents))
	}
}

// TestUnnamedUntilCommit: before Commit the directory holds nothing (the
// file is an O_TMPFILE), so a killed process leaves nothing; Commit
// replaces an existing regular file.
func TestUnnamedUntilCommit(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out")
	if err := os.WriteFile(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Create(p, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Abort()
	if f.tmp != "" {
		t.Fatalf("named temporary file %s on a filesystem with O_TMPFILE", f.tmp)
	}
	f.Write([]byte("new"))
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("%d entries before commit", len(ents))
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "new" {
		t.Fatalf("got %q", b)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("%d entries after commit", len(ents))
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v", st.Mode())
	}
}

// TestRefusesNonRegular: symlinks, FIFOs and directories are refused by
// Create and left alone.
func TestRefusesNonRegular(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("v"), 0o644)
	link := filepath.Join(dir, "link")
	os.Symlink(victim, link)
	dangling := filepath.Join(dir, "dangling")
	os.Symlink(filepath.Join(dir, "nowhere"), dangling)
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	for _, p := range []string{link, dangling, sub} {
		if _, err := Create(p, 0o644); !errors.Is(err, ErrNotRegular) {
			t.Errorf("%s: %v, want ErrNotRegular", p, err)
		}
		if err := WriteFile(p, []byte("x"), 0o644); !errors.Is(err, ErrNotRegular) {
			t.Errorf("%s: WriteFile: %v", p, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "nowhere")); err == nil {
		t.Error("a dangling symlink was followed")
	}
	if b, _ := os.ReadFile(victim); string(b) != "v" {
		t.Error("symlink target written")
	}
}

// TestCommitAllRollsBack: when the last of three files cannot be published
// (its target turned into a non-empty directory after Create), the first
// two are taken back: a new target disappears, a replaced one gets its old
// content back, and no temporary name remains.
func TestCommitAllRollsBack(t *testing.T) {
	for _, named := range []bool{false, true} {
		dir := t.TempDir()
		a, b, c := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c")
		os.WriteFile(b, []byte("old b"), 0o644)
		var fs []*File
		for _, p := range []string{a, b, c} {
			f, err := Create(p, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			if named { // the fallback for filesystems without O_TMPFILE
				f.File.Close()
				tmp, err := os.CreateTemp(dir, "."+filepath.Base(p)+".tmp-*")
				if err != nil {
					t.Fatal(err)
				}
				f.File, f.tmp = tmp, tmp.Name()
			}
			f.Write([]byte("new " + filepath.Base(p)))
			fs = append(fs, f)
		}
		os.MkdirAll(filepath.Join(c, "x"), 0o755)
		err := CommitAll(fs...)
		if !errors.Is(err, ErrNotRegular) {
			t.Fatalf("named=%v: CommitAll: %v", named, err)
		}
		if _, err := os.Lstat(a); err == nil {
			t.Errorf("named=%v: a was published", named)
		}
		if got, _ := os.ReadFile(b); string(got) != "old b" {
			t.Errorf("named=%v: b is %q, want its old content", named, got)
		}
		ents, _ := os.ReadDir(dir)
		if len(ents) != 2 {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Errorf("named=%v: directory holds %v, want b and c", named, names)
		}
		// And all three publish when nothing is in the way.
		os.RemoveAll(c)
		fs = fs[:0]
		for _, p := range []string{a, b, c} {
			f, err := Create(p, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			f.Write([]byte("new " + filepath.Base(p)))
			fs = append(fs, f)
		}
		if err := CommitAll(fs[0], nil, fs[1], fs[2]); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{a, b, c} {
			if got, _ := os.ReadFile(p); string(got) != "new "+filepath.Base(p) {
				t.Errorf("%s: %q", p, got)
			}
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 3 {
			t.Errorf("%d entries after a group commit", len(ents))
		}
	}
}
