package layer

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Compression is the detected compression of a layer blob.
type Compression string

// Compressions intact detects.
const (
	CompressionNone Compression = "none"
	CompressionGzip Compression = "gzip"
	CompressionZstd Compression = "zstd"
)

var (
	magicGzip  = []byte{0x1f, 0x8b}
	magicZstd  = []byte{0x28, 0xb5, 0x2f, 0xfd}
	magicXz    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	magicBzip2 = []byte("BZh")
)

// zstdMaxWindow caps the zstd window (and so the decoder's memory).
const zstdMaxWindow = 128 << 20

// Decompress detects the compression of a layer blob from its first bytes
// (gzip, zstd or none; xz and bzip2 are recognized and refused with
// ErrUnsupportedCompression) and returns the uncompressed stream, as Convert
// reads it. Errors of the stream wrap ErrCorruptInput, except errors of r
// itself, which are returned wrapped as they are ("read layer: ...": a
// verifying reader's digest mismatch stays one). Close releases the decoder;
// it does not close r. There is no size limit: wrap the stream in one.
func Decompress(r io.Reader) (io.ReadCloser, Compression, error) {
	br := bufio.NewReaderSize(&sourceReader{r: r}, 1<<20)
	raw, comp, err := decompress(br)
	if err != nil {
		return nil, "", err
	}
	return &decompressed{Reader: &decodeReader{r: raw, kind: comp}, raw: raw}, comp, nil
}

type decompressed struct {
	io.Reader
	raw io.Closer
}

func (d *decompressed) Close() error { return d.raw.Close() }

// sourceReader marks the errors of the compressed input as input errors.
type sourceReader struct{ r io.Reader }

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = &inputError{err}
	}
	return n, err
}

// decompress detects the compression of r from its first bytes and returns
// the uncompressed stream.
func decompress(r *bufio.Reader) (io.ReadCloser, Compression, error) {
	head, err := r.Peek(6)
	if err != nil && !errors.Is(err, io.EOF) {
		var ie *inputError
		if errors.As(err, &ie) {
			return nil, "", err
		}
		return nil, "", fmt.Errorf("read layer: %w", err)
	}
	switch {
	case bytes.HasPrefix(head, magicGzip):
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, "", fmt.Errorf("%w: gzip: %v", ErrCorruptInput, err)
		}
		return zr, CompressionGzip, nil
	case bytes.HasPrefix(head, magicZstd):
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdMaxWindow), zstd.WithDecoderLowmem(false))
		if err != nil {
			return nil, "", fmt.Errorf("%w: zstd: %v", ErrCorruptInput, err)
		}
		return zstdCloser{zr}, CompressionZstd, nil
	case bytes.HasPrefix(head, magicXz):
		return nil, "", fmt.Errorf("%w: xz (OCI layers are plain, gzip or zstd)", ErrUnsupportedCompression)
	case bytes.HasPrefix(head, magicBzip2):
		return nil, "", fmt.Errorf("%w: bzip2 (OCI layers are plain, gzip or zstd)", ErrUnsupportedCompression)
	}
	return io.NopCloser(r), CompressionNone, nil
}

type zstdCloser struct{ *zstd.Decoder }

func (z zstdCloser) Close() error { z.Decoder.Close(); return nil }

// decodeReader wraps errors of the decompressor with the kind of input;
// errors of the input itself pass through.
type decodeReader struct {
	r    io.Reader
	kind Compression
}

func (d *decodeReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF {
		var ie *inputError
		if errors.Is(err, errLimit) || errors.As(err, &ie) ||
			errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return n, err // the input's, the limit's or the caller's
		}
		err = fmt.Errorf("%w: %s stream: %v", ErrCorruptInput, d.kind, err)
	}
	return n, err
}

var errLimit = errors.New("size limit")

// limitReader fails once more than max bytes were read.
type limitReader struct {
	r   io.Reader
	n   int64
	max int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.n += int64(n)
	if l.n > l.max {
		return n, fmt.Errorf("%w: the uncompressed layer exceeds %d bytes (--max-size): %w", ErrTooLarge, l.max, errLimit)
	}
	return n, err
}
