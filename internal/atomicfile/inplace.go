package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/intact-project/intact/internal/linux"
)

// InPlace writes into a region of an existing file or block device (a
// dm-verity tree appended to its data, a hash area at an offset of a file
// with other content) and can undo that: the bytes the region overwrites
// are first copied to a backup file, which stays named until Commit, so
// that even a killed process leaves the original bytes recoverable
// (".NAME.intact-backup-at-OFFSET-*" next to a regular file; in the
// system's temporary directory for a device). Abort writes them back and
// truncates a regular file to its old size.
type InPlace struct {
	f        *os.File
	regular  bool
	origSize int64
	from, to int64 // the saved region: [from, to)
	backup   *os.File
	done     bool
}

// EditInPlace prepares to write [start, end) of f, which must be open for
// reading and writing. A regular file may grow past its end; a device must
// already hold end bytes (ErrTooSmall otherwise).
func EditInPlace(f *os.File, start, end int64) (*InPlace, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size, err := linux.FileSize(f)
	if err != nil {
		return nil, err
	}
	if start < 0 || end < start {
		return nil, fmt.Errorf("atomicfile: bad region [%d, %d) of %s", start, end, f.Name())
	}
	if !st.Mode().IsRegular() && end > size {
		return nil, fmt.Errorf("%w: %s has %d bytes, the region ends at %d", ErrTooSmall, f.Name(), size, end)
	}
	w := &InPlace{f: f, regular: st.Mode().IsRegular(), origSize: size, from: start, to: min(end, size)}
	if w.to > w.from {
		dir := os.TempDir()
		if w.regular {
			dir = filepath.Dir(f.Name())
		}
		b, err := os.CreateTemp(dir, "."+filepath.Base(f.Name())+".intact-backup-at-"+strconv.FormatInt(w.from, 10)+"-*")
		if err != nil {
			return nil, fmt.Errorf("save the region about to be overwritten: %w", err)
		}
		_, err = io.Copy(b, io.NewSectionReader(f, w.from, w.to-w.from))
		if err == nil {
			err = b.Sync()
		}
		if err != nil {
			b.Close()
			os.Remove(b.Name())
			return nil, fmt.Errorf("save the region about to be overwritten: %w", err)
		}
		w.backup = b
	}
	return w, nil
}

// ErrTooSmall: a device is smaller than the region to write.
var ErrTooSmall = errors.New("device too small")

// File is the file being written.
func (w *InPlace) File() *os.File { return w.f }

// Backup is the path of the backup of the overwritten bytes ("" when
// nothing existing is overwritten).
func (w *InPlace) Backup() string {
	if w.backup == nil {
		return ""
	}
	return w.backup.Name()
}

// Flush flushes the file to stable storage and keeps the backup: what else
// must be committed together can still fail and Abort undo the write.
func (w *InPlace) Flush() error {
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", w.f.Name(), err)
	}
	return nil
}

// Commit flushes the file to stable storage, then removes the backup.
func (w *InPlace) Commit() error {
	if w.done {
		return errors.New("atomicfile: commit after commit or abort")
	}
	if err := w.f.Sync(); err != nil {
		// Not done: the caller's Abort puts the old bytes back.
		return fmt.Errorf("write %s: %w", w.f.Name(), err)
	}
	w.done = true
	w.dropBackup()
	return nil
}

// Abort puts the saved bytes back and truncates a regular file to its old
// size, and flushes that. If it cannot, the backup is kept and the error
// names it. Abort after Commit or Abort is a no-op returning nil.
func (w *InPlace) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	var err error
	if w.backup != nil {
		_, err = io.Copy(io.NewOffsetWriter(w.f, w.from), io.NewSectionReader(w.backup, 0, w.to-w.from))
	}
	if err == nil && w.regular {
		err = w.f.Truncate(w.origSize)
	}
	if err == nil {
		err = w.f.Sync()
	}
	if err != nil {
		if w.backup != nil {
			name := w.backup.Name()
			w.backup.Close()
			return fmt.Errorf("restore %s: %w; its original bytes %d..%d are in %s", w.f.Name(), err, w.from, w.to, name)
		}
		return fmt.Errorf("restore %s to its old size %d: %w", w.f.Name(), w.origSize, err)
	}
	w.dropBackup()
	return nil
}

func (w *InPlace) dropBackup() {
	if w.backup != nil {
		w.backup.Close()
		os.Remove(w.backup.Name())
	}
}
