package erofs

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
)

// countingReader counts the bytes consumed from r and keeps the last 1024
// of them (to check the end-of-archive marker).
type countingReader struct {
	r    io.Reader
	n    int64
	tail [1024]byte
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if n >= len(c.tail) {
		copy(c.tail[:], p[n-len(c.tail):n])
	} else if n > 0 {
		copy(c.tail[:], c.tail[n:])
		copy(c.tail[len(c.tail)-n:], p[:n])
	}
	return n, err
}

func (c *countingReader) tailZero() bool {
	for _, b := range c.tail {
		if b != 0 {
			return false
		}
	}
	return true
}

// TarResult describes a consumed tar stream.
type TarResult struct {
	// Size is the length of the whole stream, including the end-of-archive
	// blocks and any record padding after them.
	Size int64
	// Entries is the number of tar members read.
	Entries int
}

const paxXattrPrefix = "SCHILY.xattr."

// EntryFromTar converts a tar header to an Entry. Global PAX headers and
// other members without a filesystem meaning return (nil, nil).
func EntryFromTar(h *tar.Header) (*Entry, error) {
	e := &Entry{Path: h.Name, Mode: uint32(h.Mode & 0o7777)}
	if h.Uid < 0 || int64(h.Uid) > math.MaxUint32 || h.Gid < 0 || int64(h.Gid) > math.MaxUint32 {
		return nil, fmt.Errorf("%w: %q: uid/gid %d/%d out of range", ErrInvalidEntry, truncate(h.Name), h.Uid, h.Gid)
	}
	e.UID, e.GID = uint32(h.Uid), uint32(h.Gid)
	e.MtimeSec = h.ModTime.Unix()
	e.MtimeNsec = uint32(h.ModTime.Nanosecond())
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeCont: // archive/tar reports TypeRegA as TypeReg
		e.Type = TypeRegular
		e.Size = h.Size
	case tar.TypeLink:
		e.Type = TypeHardlink
		e.Linkname = h.Linkname
	case tar.TypeSymlink:
		e.Type = TypeSymlink
		e.Linkname = h.Linkname
	case tar.TypeChar, tar.TypeBlock:
		e.Type = TypeCharDev
		if h.Typeflag == tar.TypeBlock {
			e.Type = TypeBlockDev
		}
		if h.Devmajor < 0 || h.Devminor < 0 || h.Devmajor > math.MaxUint32 || h.Devminor > math.MaxUint32 {
			return nil, fmt.Errorf("%w: %q: device %d:%d out of range", ErrInvalidEntry, truncate(h.Name), h.Devmajor, h.Devminor)
		}
		e.DevMajor, e.DevMinor = uint32(h.Devmajor), uint32(h.Devminor)
	case tar.TypeDir:
		e.Type = TypeDir
	case tar.TypeFifo:
		e.Type = TypeFIFO
	case tar.TypeXGlobalHeader:
		return nil, nil
	case tar.TypeGNUSparse:
		return nil, fmt.Errorf("%w: %q is a GNU sparse file", ErrUnsupportedTar, truncate(h.Name))
	default:
		return nil, fmt.Errorf("%w: %q has tar type %q", ErrUnsupportedTar, truncate(h.Name), h.Typeflag)
	}
	for k, v := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return nil, fmt.Errorf("%w: %q is a sparse file", ErrUnsupportedTar, truncate(h.Name))
		}
		if name, ok := strings.CutPrefix(k, paxXattrPrefix); ok {
			if e.Xattrs == nil {
				e.Xattrs = map[string][]byte{}
			}
			e.Xattrs[name] = []byte(v)
		}
	}
	return e, nil
}

// AddTar reads a whole uncompressed tar stream and adds its members. In
// LayoutFull the file data is copied into the image; in LayoutTarIndex the
// chunk indexes point at each member's data offset in the stream. After the
// end-of-archive marker the rest of r is read (and counted) to EOF. A stream
// that ends without the end-of-archive marker is an error.
func (w *Writer) AddTar(ctx context.Context, r io.Reader) (*TarResult, error) {
	cr := &countingReader{r: r}
	tr := tar.NewReader(cr)
	res := &TarResult{}
	var lastEnd int64
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, tarError(err, cr.n, res.Entries == 0)
		}
		res.Entries++
		dataOff := cr.n
		if dataOff < lastEnd {
			return nil, fmt.Errorf("%w: member %q overlaps the previous one", ErrUnsupportedTar, truncate(h.Name))
		}
		e, err := EntryFromTar(h)
		if err != nil {
			return nil, err
		}
		lastEnd = dataOff
		if h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeCont {
			lastEnd = dataOff + align(h.Size, 512)
		}
		if e == nil {
			continue
		}
		if w.opts.Layout == LayoutTarIndex {
			err = w.AddIndexed(e, dataOff)
		} else {
			err = w.Add(e, tr)
		}
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("truncated tar stream: %w", err)
			}
			return nil, err
		}
	}
	if cr.n < lastEnd+1024 || !cr.tailZero() {
		if res.Entries == 0 && cr.n == 0 {
			return nil, fmt.Errorf("%w: empty input is not a tar stream", ErrUnsupportedTar)
		}
		return nil, fmt.Errorf("truncated tar stream: no end-of-archive marker after %d bytes: %w", cr.n, io.ErrUnexpectedEOF)
	}
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return nil, fmt.Errorf("read tar stream: %w", err)
	}
	res.Size = cr.n
	return res, nil
}

// tarError words an error of the tar reader at stream offset off; first
// says that no member has been read yet, when the input is most likely not
// a tar stream at all rather than a damaged one.
func tarError(err error, off int64, first bool) error {
	const what = "a layer blob is a tar archive, plain or compressed with gzip or zstd"
	switch {
	case first && errors.Is(err, tar.ErrHeader):
		return fmt.Errorf("not a valid tar stream: the first 512 bytes are not a tar header (%s): %w", what, err)
	case first && errors.Is(err, io.ErrUnexpectedEOF) && off < 512:
		return fmt.Errorf("not a valid tar stream: the input ends after %d bytes, before the first 512-byte tar header (%s): %w", off, what, err)
	case errors.Is(err, tar.ErrHeader):
		return fmt.Errorf("not a valid tar stream (bad header at offset %d): %w", max(off-512, 0), err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("truncated tar stream at offset %d: %w", off, err)
	}
	return fmt.Errorf("read tar at offset %d: %w", off, err)
}
