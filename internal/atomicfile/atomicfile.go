// Package atomicfile writes output files so that a failed, interrupted or
// killed command never leaves a partial file behind, and never replaces
// something that is not a file.
//
// Data goes to an unnamed file in the target's directory (open(2) with
// O_TMPFILE), which gets its name only on Commit: a process killed before
// that (even with SIGKILL) leaves nothing. Where the filesystem has no
// O_TMPFILE, a hidden named temporary file (".NAME.tmp-*") is used and
// renamed over the target. A target that exists and is not a regular file
// (a symlink, a device node, a directory, a FIFO, a socket) is refused when
// the file is created, before any work.
package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/intact-project/intact/internal/linux"
)

// ErrNotRegular: the output path exists and is not a regular file.
var ErrNotRegular = errors.New("not a regular file")

// File is an output file under construction. Write to it like an *os.File;
// call Commit to publish it or Abort to discard it. Abort after Commit is a
// no-op, so `defer f.Abort()` is the usual pattern.
type File struct {
	*os.File
	target string
	tmp    string // name of a named temporary file; "" for an unnamed one
	done   bool
}

// procFD reports whether /proc/self/fd is there, which LinkTmpfile uses to
// name an unnamed file without privileges.
var procFD = sync.OnceValue(func() bool {
	_, err := os.Stat("/proc/self/fd")
	return err == nil
})

// CheckTarget returns an error wrapping ErrNotRegular when path exists and
// is not a regular file (it does not follow a symlink), and nil when path
// does not exist or is a regular file.
func CheckTarget(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("output %s: %w", path, err)
	}
	if st.Mode().IsRegular() {
		return nil
	}
	return fmt.Errorf("output %s is a %s, %w: refusing to replace it", path, kind(st.Mode()), ErrNotRegular)
}

func kind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	case m.IsDir():
		return "directory"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeSocket != 0:
		return "socket"
	}
	return "special file"
}

// Create starts a new output file that will replace path on Commit. It
// fails with ErrNotRegular when path exists and is not a regular file.
// perm is applied as given (no umask, unlike os.Create).
func Create(path string, perm os.FileMode) (*File, error) {
	if err := CheckTarget(path); err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	f := &File{target: path}
	if procFD() || os.Geteuid() == 0 {
		// Where the file system has no O_TMPFILE, a named file instead.
		if tf, err := linux.OpenTmpfile(dir, path, perm); err == nil {
			f.File = tf
		}
	}
	if f.File == nil {
		var err error
		f.File, err = os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
		if err != nil {
			return nil, fmt.Errorf("create output %s: %w", path, err)
		}
		f.tmp = f.File.Name()
	}
	if err := f.File.Chmod(perm); err != nil {
		f.Abort()
		return nil, fmt.Errorf("create output %s: %w", path, err)
	}
	return f, nil
}

// Target is the path the file will have after Commit.
func (f *File) Target() string { return f.target }

// Commit flushes the file to stable storage and gives it its name.
func (f *File) Commit() error { return CommitAll(f) }

// CommitAll publishes several files together (nil entries are skipped):
// every file is flushed to stable storage first, so the usual late failure
// (EIO, ENOSPC at writeback) publishes none of them; then each gets its
// name, and if that fails for one, the names given before are taken back
// (a target that existed gets its previous file back). Every file is closed
// afterwards, committed or aborted.
func CommitAll(files ...*File) error {
	var list []*File
	for _, f := range files {
		if f != nil {
			if f.done {
				abortAll(files)
				return errors.New("atomicfile: commit after commit or abort")
			}
			list = append(list, f)
		}
	}
	for _, f := range list {
		if err := f.File.Sync(); err != nil {
			abortAll(list)
			return fmt.Errorf("write %s: %w", f.target, err)
		}
	}
	type published struct{ target, backup string }
	var done []published
	rollback := func() {
		for i := len(done) - 1; i >= 0; i-- {
			if p := done[i]; p.backup != "" {
				os.Rename(p.backup, p.target)
			} else {
				os.Remove(p.target)
			}
		}
	}
	for i, f := range list {
		if err := CheckTarget(f.target); err != nil {
			rollback()
			abortAll(list)
			return err
		}
		backup := ""
		if i < len(list)-1 { // a later failure must be able to undo this one
			var err error
			if backup, err = linkBackup(f.target); err != nil {
				rollback()
				abortAll(list)
				return fmt.Errorf("write %s: %w", f.target, err)
			}
		}
		existed := backup != ""
		if !existed && i == len(list)-1 {
			_, err := os.Lstat(f.target)
			existed = err == nil
		}
		if err := f.publish(existed); err != nil {
			if backup != "" {
				os.Remove(backup)
			}
			rollback()
			abortAll(list)
			return fmt.Errorf("write %s: %w", f.target, err)
		}
		f.done = true
		done = append(done, published{f.target, backup})
	}
	var err error
	for _, p := range done {
		if p.backup != "" {
			os.Remove(p.backup)
		}
	}
	dirs := map[string]bool{}
	for _, f := range list {
		if cerr := f.File.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("write %s: %w", f.target, cerr)
		}
		dirs[filepath.Dir(f.target)] = true
	}
	// The new names are durable only once their directories are.
	for d := range dirs {
		if df, derr := os.Open(d); derr == nil {
			df.Sync()
			df.Close()
		}
	}
	return err
}

// publish gives the flushed file its target name.
func (f *File) publish(targetExists bool) error {
	if f.tmp != "" {
		if err := os.Rename(f.tmp, f.target); err != nil {
			return err
		}
		f.tmp = ""
		return nil
	}
	if !targetExists {
		err := linux.LinkTmpfile(f.File, f.target)
		if !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	// linkat never replaces a name: link under a fresh name, then rename.
	for {
		staging := stagingName(f.target, "tmp")
		err := linux.LinkTmpfile(f.File, staging)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := os.Rename(staging, f.target); err != nil {
			os.Remove(staging)
			return err
		}
		return nil
	}
}

// linkBackup makes a second name for an existing target so that a failed
// group commit can put it back; "" when there is no target.
func linkBackup(target string) (string, error) {
	if _, err := os.Lstat(target); errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	for {
		b := stagingName(target, "old")
		err := os.Link(target, b)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		return b, nil
	}
}

func stagingName(target, what string) string {
	var r [6]byte
	rand.Read(r[:])
	return filepath.Join(filepath.Dir(target), "."+filepath.Base(target)+"."+what+"-"+hex.EncodeToString(r[:]))
}

func abortAll(list []*File) {
	for _, f := range list {
		if f != nil {
			f.Abort()
		}
	}
}

// Abort discards the file. It is safe to call more than once and after
// Commit.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.File.Close()
	if f.tmp != "" {
		os.Remove(f.tmp)
	}
}

// WriteFile writes data to path atomically with the given permissions.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Commit()
}
