package kmod

import (
	"bytes"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Compression is how a module file is compressed.
type Compression string

// Compressions of module files. The signature is always inside: sign the
// .ko, then compress it (what Debian's and Fedora's kernel packages do).
const (
	None Compression = ""
	XZ   Compression = "xz"
	Zstd Compression = "zstd"
	Gzip Compression = "gzip" // recognized, not handled
)

// Extension returns the file name suffix (".xz", ".zst" or "").
func (c Compression) Extension() string {
	switch c {
	case XZ:
		return ".xz"
	case Zstd:
		return ".zst"
	case Gzip:
		return ".gz"
	}
	return ""
}

// String names the compression ("none" for None).
func (c Compression) String() string {
	if c == None {
		return "none"
	}
	return string(c)
}

// CompressionOf recognizes a compressed module by its magic bytes.
func CompressionOf(data []byte) Compression {
	switch {
	case bytes.HasPrefix(data, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return XZ
	case bytes.HasPrefix(data, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return Zstd
	case bytes.HasPrefix(data, []byte{0x1f, 0x8b}):
		return Gzip
	}
	return None
}

// CompressionOfName returns the compression a file name announces
// (foo.ko.xz, foo.ko.zst), None for foo.ko.
func CompressionOfName(name string) Compression {
	switch filepath.Ext(name) {
	case ".xz":
		return XZ
	case ".zst":
		return Zstd
	case ".gz":
		return Gzip
	}
	return None
}

// IsModuleName reports whether name looks like a module file (.ko, .ko.xz,
// .ko.zst, .ko.gz).
func IsModuleName(name string) bool {
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if strings.HasSuffix(name, ext) {
			return true
		}
	}
	return false
}

// Decompress returns the uncompressed module and the compression found
// (data itself for an uncompressed module). Output is bounded by
// MaxModuleSize.
func Decompress(data []byte) ([]byte, Compression, error) {
	c := CompressionOf(data)
	if len(data) > MaxCompressedSize && c != None {
		return nil, c, fmt.Errorf("%w: %d compressed bytes (limit %d)", ErrTooLarge, len(data), MaxCompressedSize)
	}
	var r io.Reader
	switch c {
	case None:
		if len(data) > MaxModuleSize {
			return nil, c, fmt.Errorf("%w: %d bytes (limit %d)", ErrTooLarge, len(data), MaxModuleSize)
		}
		return data, c, nil
	case XZ:
		xr, err := xz.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, c, fmt.Errorf("%w: xz: %v", ErrCompression, err)
		}
		r = xr
	case Zstd:
		zr, err := zstd.NewReader(bytes.NewReader(data), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxModuleSize+1))
		if err != nil {
			return nil, c, fmt.Errorf("%w: zstd: %v", ErrCompression, err)
		}
		defer zr.Close()
		r = zr
	default:
		return nil, c, fmt.Errorf("%w: %s-compressed modules are not supported (use xz or zstd)", ErrCompression, c)
	}
	out, err := io.ReadAll(io.LimitReader(r, MaxModuleSize+1))
	if err != nil {
		return nil, c, fmt.Errorf("%w: %s: %v", ErrCompression, c, err)
	}
	if len(out) > MaxModuleSize {
		return nil, c, fmt.Errorf("%w: decompresses to more than %d bytes", ErrTooLarge, MaxModuleSize)
	}
	return out, c, nil
}

// Compress compresses a module the way Linux can decompress it in
// finit_module(MODULE_INIT_COMPRESSED_FILE): xz with a CRC32 check and a
// 1 MiB dictionary (Debian's `xz --check=crc32 --lzma2=dict=1MiB`), or
// zstd (one frame, with checksum).
func Compress(data []byte, c Compression) ([]byte, error) {
	var buf bytes.Buffer
	switch c {
	case None:
		return data, nil
	case XZ:
		w, err := xz.WriterConfig{CheckSum: xz.CRC32, DictCap: 1 << 20}.NewWriter(&buf)
		if err != nil {
			return nil, fmt.Errorf("kmod: xz: %w", err)
		}
		if _, err := w.Write(data); err != nil {
			return nil, fmt.Errorf("kmod: xz: %w", err)
		}
		if err := w.Close(); err != nil {
			return nil, fmt.Errorf("kmod: xz: %w", err)
		}
	case Zstd:
		w, err := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true))
		if err != nil {
			return nil, fmt.Errorf("kmod: zstd: %w", err)
		}
		if _, err := w.Write(data); err != nil {
			return nil, fmt.Errorf("kmod: zstd: %w", err)
		}
		if err := w.Close(); err != nil {
			return nil, fmt.Errorf("kmod: zstd: %w", err)
		}
	default:
		return nil, fmt.Errorf("%w: cannot write %s", ErrCompression, c)
	}
	return buf.Bytes(), nil
}
