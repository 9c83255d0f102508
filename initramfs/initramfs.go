// Package initramfs writes initramfs archives in the "newc" cpio format the
// Linux kernel unpacks at boot (init/initramfs.c: magic 070701, 110-byte ASCII
// header, name and data each padded to 4 bytes, "TRAILER!!!" last).
//
// The kernel creates nothing implicitly: a file whose parent directory is not
// in the archive is dropped. Writer therefore emits an explicit directory
// record for every parent before the first entry below it, once. Entries get
// distinct inode numbers and a link count of 1 (2 for directories), so the
// kernel never mistakes two entries for hard links, and a fixed modification
// time (zero unless set), so the same inputs give the same bytes.
package initramfs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// Errors returned by Writer.
var (
	ErrBadPath = errors.New("initramfs: bad path")
	ErrExists  = errors.New("initramfs: entry already written")
	ErrClosed  = errors.New("initramfs: writer closed")
	ErrSize    = errors.New("initramfs: size mismatch")
)

// File type bits of the mode field.
const (
	typeDir     = 0o040000
	typeReg     = 0o100000
	typeSymlink = 0o120000
	typeChar    = 0o020000
	typeBlock   = 0o060000
	maxFileSize = 1<<32 - 1 // the header's filesize field is 8 hex digits
)

// Writer writes a newc archive. Paths are slash-separated and relative to the
// archive root ("init", "usr/bin/x"); a leading "/" is stripped.
type Writer struct {
	w       *bufio.Writer
	ino     uint32
	written map[string]bool
	mtime   uint32
	closed  bool
	err     error
}

// NewWriter returns a Writer on w. Call Close to write the trailer.
func NewWriter(w io.Writer) *Writer {
	return &Writer{w: bufio.NewWriterSize(w, 1<<16), written: map[string]bool{}, ino: 1}
}

// SetModTime sets the modification time recorded for later entries
// (seconds since the epoch; default 0).
func (w *Writer) SetModTime(sec uint32) { w.mtime = sec }

func clean(p string) (string, error) {
	p = strings.TrimPrefix(p, "/")
	c := path.Clean(p)
	if p == "" || c == "." || c == ".." || strings.HasPrefix(c, "../") || strings.ContainsRune(c, 0) {
		return "", fmt.Errorf("%w: %q", ErrBadPath, p)
	}
	return c, nil
}

// Dir writes a directory record (and any missing parents).
func (w *Writer) Dir(name string, perm fs.FileMode) error {
	p, err := clean(name)
	if err != nil {
		return err
	}
	if w.written[p] {
		return nil
	}
	if err := w.parents(p); err != nil {
		return err
	}
	return w.record(p, typeDir|uint32(perm.Perm()), 2, 0, 0, nil, 0)
}

// File writes a regular file of exactly size bytes read from r.
func (w *Writer) File(name string, perm fs.FileMode, size int64, r io.Reader) error {
	p, err := clean(name)
	if err != nil {
		return err
	}
	if size < 0 || size > maxFileSize {
		return fmt.Errorf("%w: %s: %d bytes (newc limit %d)", ErrSize, p, size, int64(maxFileSize))
	}
	if err := w.entry(p); err != nil {
		return err
	}
	return w.record(p, typeReg|uint32(perm&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)), 1, 0, 0, r, size)
}

// Bytes writes a regular file with the given contents.
func (w *Writer) Bytes(name string, perm fs.FileMode, data []byte) error {
	return w.File(name, perm, int64(len(data)), strings.NewReader(string(data)))
}

// CopyFile writes the host file src as name, keeping its permission bits.
func (w *Writer) CopyFile(name, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is not a regular file", ErrBadPath, src)
	}
	return w.File(name, st.Mode().Perm(), st.Size(), f)
}

// Symlink writes a symbolic link name -> target.
func (w *Writer) Symlink(name, target string) error {
	p, err := clean(name)
	if err != nil {
		return err
	}
	if err := w.entry(p); err != nil {
		return err
	}
	return w.record(p, typeSymlink|0o777, 1, 0, 0, strings.NewReader(target), int64(len(target)))
}

// CharDev writes a character device node.
func (w *Writer) CharDev(name string, perm fs.FileMode, major, minor uint32) error {
	p, err := clean(name)
	if err != nil {
		return err
	}
	if err := w.entry(p); err != nil {
		return err
	}
	return w.record(p, typeChar|uint32(perm.Perm()), 1, major, minor, nil, 0)
}

// Has reports whether name (or a directory of that name) was written.
func (w *Writer) Has(name string) bool {
	p, err := clean(name)
	return err == nil && w.written[p]
}

func (w *Writer) entry(p string) error {
	if w.written[p] {
		return fmt.Errorf("%w: %s", ErrExists, p)
	}
	return w.parents(p)
}

func (w *Writer) parents(p string) error {
	dir := path.Dir(p)
	if dir == "." || w.written[dir] {
		return nil
	}
	if err := w.parents(dir); err != nil {
		return err
	}
	return w.record(dir, typeDir|0o755, 2, 0, 0, nil, 0)
}

func (w *Writer) record(name string, mode, nlink, rmaj, rmin uint32, r io.Reader, size int64) error {
	if w.closed {
		return ErrClosed
	}
	if w.err != nil {
		return w.err
	}
	if err := w.header(name, mode, nlink, rmaj, rmin, size); err != nil {
		w.err = err
		return err
	}
	if size > 0 {
		n, err := io.Copy(w.w, io.LimitReader(r, size))
		if err == nil && n != size {
			err = fmt.Errorf("%w: %s: got %d bytes, declared %d", ErrSize, name, n, size)
		}
		if err != nil {
			w.err = fmt.Errorf("initramfs: write %s: %w", name, err)
			return w.err
		}
		if err := w.pad(size); err != nil {
			return err
		}
	}
	w.written[name] = true
	return nil
}

func (w *Writer) header(name string, mode, nlink, rmaj, rmin uint32, size int64) error {
	ino := w.ino
	w.ino++
	if name == "TRAILER!!!" {
		ino = 0
	}
	_, err := fmt.Fprintf(w.w, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\x00",
		ino, mode, 0, 0, nlink, w.mtime, uint32(size), 0, 0, rmaj, rmin, len(name)+1, 0, name)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return w.pad(int64(110 + len(name) + 1))
}

func (w *Writer) pad(n int64) error {
	if p := (4 - n%4) % 4; p > 0 {
		if _, err := w.w.Write(make([]byte, p)); err != nil {
			w.err = fmt.Errorf("initramfs: %w", err)
			return w.err
		}
	}
	return nil
}

// Close writes the trailer and flushes. It does not close the underlying
// writer.
func (w *Writer) Close() error {
	if w.closed {
		return ErrClosed
	}
	if w.err != nil {
		return w.err
	}
	if err := w.header("TRAILER!!!", 0, 1, 0, 0, 0); err != nil {
		return err
	}
	w.closed = true
	if err := w.w.Flush(); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return nil
}
