// Package atomicfile writes output files so that a failed command never
// leaves a partial file behind: data goes to a temporary file in the target's
// directory, which is renamed over the target only on Commit.
package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// File is an output file under construction. Write to it like an *os.File;
// call Commit to publish it or Abort to discard it. Abort after Commit is a
// no-op, so `defer f.Abort()` is the usual pattern.
type File struct {
	*os.File
	target string
	done   bool
}

// Create starts a new output file that will replace path on Commit.
// perm is applied on Commit (subject to no umask, unlike os.Create).
func Create(path string, perm os.FileMode) (*File, error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("create output %s: %w", path, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, fmt.Errorf("create output %s: %w", path, err)
	}
	return &File{File: tmp, target: path}, nil
}

// Target is the path the file will have after Commit.
func (f *File) Target() string { return f.target }

// Commit flushes the file to stable storage and renames it into place.
func (f *File) Commit() error {
	if f.done {
		return errors.New("atomicfile: commit after commit or abort")
	}
	f.done = true
	name := f.File.Name()
	if err := f.File.Sync(); err != nil {
		f.File.Close()
		os.Remove(name)
		return fmt.Errorf("write %s: %w", f.target, err)
	}
	if err := f.File.Close(); err != nil {
		os.Remove(name)
		return fmt.Errorf("write %s: %w", f.target, err)
	}
	if err := os.Rename(name, f.target); err != nil {
		os.Remove(name)
		return fmt.Errorf("write %s: %w", f.target, err)
	}
	return nil
}

// Abort discards the temporary file. It is safe to call more than once and
// after Commit.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	name := f.File.Name()
	f.File.Close()
	os.Remove(name)
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
