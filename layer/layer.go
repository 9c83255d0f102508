package layer

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/google/uuid"

	"github.com/intact-project/intact/erofs"
	"github.com/intact-project/intact/verity"
)

// Profile names a conversion profile. The name pins the output bytes: the
// same input converted under the same profile name gives the same output on
// any machine, forever.
type Profile string

// Profiles.
const (
	ProfileFull     Profile = "full"
	ProfileTarIndex Profile = "tar-index"
)

// ParseProfile checks a profile name.
func ParseProfile(s string) (Profile, error) {
	switch Profile(s) {
	case ProfileFull, ProfileTarIndex:
		return Profile(s), nil
	}
	return "", fmt.Errorf("%w: %q (want full or tar-index)", ErrUnknownProfile, s)
}

// Sentinel errors.
var (
	ErrUnknownProfile         = errors.New("unknown layer profile")
	ErrCorruptInput           = errors.New("corrupt layer input")
	ErrUnsupportedCompression = errors.New("unsupported layer compression")
	ErrTooLarge               = errors.New("layer too large")
	ErrNotLayerImage          = errors.New("not an intact layer image")
)

// DefaultMaxSize bounds the uncompressed size of a layer (decompression
// bombs) when Options.MaxSize is zero.
const DefaultMaxSize = 64 << 30

// FullSalt returns the dm-verity salt of ProfileFull: SHA-256 of the ASCII
// string "intact layer profile full v1"
// (b9841548fc1fb9e94ed9d176724abe53cadd27336b7f4c9902a545216a26a006).
func FullSalt() []byte {
	s := sha256.Sum256([]byte("intact layer profile full v1"))
	return s[:]
}

// TarIndexSalt returns the dm-verity salt of ProfileTarIndex: 32 zero bytes.
func TarIndexSalt() []byte { return make([]byte, 32) }

// Options configure Convert. The zero value converts with ProfileFull and
// the default limits.
type Options struct {
	Profile Profile
	// MaxSize caps the uncompressed layer size; 0 means DefaultMaxSize.
	MaxSize int64
	// MaxEntries caps the number of tar members; 0 means
	// erofs.DefaultMaxEntries.
	MaxEntries int
	// TempDir holds spill files (the tar of a tar-index conversion, verity
	// level-0 digests beyond memory); "" means os.TempDir().
	TempDir string
	// HashOutput, if set, receives the separate verity tree with a
	// veritysetup superblock at offset 0 (ProfileTarIndex only).
	HashOutput io.WriterAt
	// MetadataOutput, if set, receives the EROFS metadata blob
	// (ProfileTarIndex only).
	MetadataOutput io.Writer
	// Concurrency of the verity hashing; 0 means GOMAXPROCS.
	Concurrency int
	// Progress is called with the number of uncompressed bytes read so far.
	Progress func(uncompressed int64)
	Logger   *slog.Logger
}

// Output is where an image is written: sequentially through Write, with
// block 0 and the tree written through WriteAt. An *os.File is one.
type Output interface {
	io.Writer
	io.WriterAt
}

// Result describes a converted layer.
type Result struct {
	Profile Profile
	// Verity parameters (NoSuperblock, HashOffset = DataBlocks*DataBlockSize).
	Verity   verity.Params
	RootHash []byte
	// DiffID is sha256 of the uncompressed tar; Digest sha256 of the input.
	DiffID, Digest string
	Compression    Compression
	// TarSize is the uncompressed length; Entries the number of tar members.
	TarSize int64
	Entries int
	// ImageSize is the data device size (= hash offset); TreeSize the tree.
	ImageSize int64
	TreeSize  int64
	// MetadataSize is the EROFS metadata size (tar-index) or the metadata
	// part of a full image.
	MetadataSize int64
	// EROFSUUID and VerityUUID (tar-index: of the separate tree's superblock).
	EROFSUUID  [16]byte
	VerityUUID [16]byte
	Inodes     uint64
}

// RootHashHex returns the lowercase hex root hash.
func (r *Result) RootHashHex() string { return hex.EncodeToString(r.RootHash) }

// EROFSUUIDForDigest is the EROFS UUID of a tar-index image: UUIDv5 in the
// URL namespace of "erofs:blobs/" + the layer digest (containerd's and Azure
// Linux's derivation).
func EROFSUUIDForDigest(digest string) [16]byte {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("erofs:blobs/"+digest))
}

// VerityUUIDForDigest is the UUID of the separate tree's superblock:
// UUIDv5(URL, "dmverity:blobs/" + digest).
func VerityUUIDForDigest(digest string) [16]byte {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("dmverity:blobs/"+digest))
}

// FullUUIDForDiffID is the EROFS UUID of a full image: UUIDv5(URL,
// "intact:erofs-full:" + diff_id), so that it depends on the uncompressed
// tar only.
func FullUUIDForDiffID(diffID string) [16]byte {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("intact:erofs-full:"+diffID))
}

// VerityParams returns the dm-verity parameters of a profile (DataBlocks
// and HashOffset left 0).
func VerityParams(p Profile) verity.Params {
	vp := verity.DefaultParams()
	vp.NoSuperblock = true
	if p == ProfileTarIndex {
		vp.DataBlockSize, vp.HashBlockSize = 512, 512
		vp.Salt = TarIndexSalt()
	} else {
		vp.Salt = FullSalt()
	}
	return vp
}

// countReader counts bytes, reports progress and stops when ctx is done.
type countReader struct {
	ctx      context.Context
	r        io.Reader
	n        int64
	progress func(int64)
	next     int64
}

func (c *countReader) Read(p []byte) (int, error) {
	if c.ctx != nil {
		if err := c.ctx.Err(); err != nil {
			return 0, err
		}
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.progress != nil && c.n >= c.next {
		c.progress(c.n)
		c.next = c.n + 64<<20
	}
	return n, err
}

// Convert reads a layer blob from in and writes the image (data device
// followed by the verity tree at Result.ImageSize) to out, in one pass.
// On error out holds garbage; callers write to a temporary file (see
// internal/atomicfile) and discard it.
func Convert(ctx context.Context, in io.Reader, out Output, opts Options) (*Result, error) {
	if opts.Profile == "" {
		opts.Profile = ProfileFull
	}
	if _, err := ParseProfile(string(opts.Profile)); err != nil {
		return nil, err
	}
	if opts.MaxSize == 0 {
		opts.MaxSize = DefaultMaxSize
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	// Input digest over every input byte.
	inHash := sha256.New()
	inCount := &countReader{r: io.TeeReader(in, inHash)}
	br := bufio.NewReaderSize(inCount, 1<<20)
	raw, comp, err := decompress(br)
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	lim := &limitReader{r: &decodeReader{r: raw, kind: comp}, max: opts.MaxSize}
	diffHash := sha256.New()
	async := newAsyncReader(lim, diffHash)
	defer async.wait()
	tarStream := &countReader{ctx: ctx, r: async, progress: opts.Progress}

	vp := VerityParams(opts.Profile)
	vb, err := verity.NewBuilder(vp, &verity.Options{Concurrency: opts.Concurrency, TempDir: opts.TempDir, Logger: log})
	if err != nil {
		return nil, err
	}
	defer vb.Close()
	bw := bufio.NewWriterSize(io.MultiWriter(out, vb), 1<<20)

	res := &Result{Profile: opts.Profile, Compression: comp}
	finishInput := func() error {
		async.wait()
		// The input must end where the compressed stream ends.
		if _, err := io.Copy(io.Discard, br); err != nil {
			return fmt.Errorf("read layer: %w", err)
		}
		res.Digest = digestString(inHash)
		res.DiffID = digestString(diffHash)
		return nil
	}

	var dataSize int64
	switch opts.Profile {
	case ProfileFull:
		ew, err := erofs.NewWriter(bw, erofs.Options{Layout: erofs.LayoutFull, MaxEntries: opts.MaxEntries, Logger: log})
		if err != nil {
			return nil, err
		}
		tr, err := ew.AddTar(ctx, tarStream)
		if err != nil {
			return nil, err
		}
		if err := finishInput(); err != nil {
			return nil, err
		}
		res.TarSize, res.Entries = tr.Size, tr.Entries
		res.EROFSUUID = FullUUIDForDiffID(res.DiffID)
		ew.SetUUID(res.EROFSUUID)
		dataStart := vb.Size() + uint64(bw.Buffered())
		er, err := ew.Finish(ctx, tr.Size)
		if err != nil {
			return nil, err
		}
		if err := bw.Flush(); err != nil {
			return nil, fmt.Errorf("write image: %w", err)
		}
		if _, err := out.WriteAt(er.Head, 0); err != nil {
			return nil, fmt.Errorf("write image: %w", err)
		}
		if err := vb.UpdateBlock(0, er.Head); err != nil {
			return nil, err
		}
		dataSize = er.Size
		res.MetadataSize = er.Size - int64(dataStart)
		res.Inodes = er.Inodes
	case ProfileTarIndex:
		spill, err := os.CreateTemp(opts.TempDir, "intact-layer-tar-*")
		if err != nil {
			return nil, fmt.Errorf("spill file: %w", err)
		}
		os.Remove(spill.Name())
		defer spill.Close()
		sw := bufio.NewWriterSize(spill, 1<<20)
		meta := &metaWriter{w: bw, extra: opts.MetadataOutput}
		ew, err := erofs.NewWriter(meta, erofs.Options{Layout: erofs.LayoutTarIndex, MaxEntries: opts.MaxEntries, Logger: log})
		if err != nil {
			return nil, err
		}
		tr, err := ew.AddTar(ctx, io.TeeReader(tarStream, sw))
		if err != nil {
			return nil, err
		}
		if err := sw.Flush(); err != nil {
			return nil, fmt.Errorf("spill file: %w", err)
		}
		if err := finishInput(); err != nil {
			return nil, err
		}
		res.TarSize, res.Entries = tr.Size, tr.Entries
		log.Debug("tar streamed to the spill file", "bytes", tr.Size, "elapsed", time.Since(start).String())
		res.EROFSUUID = EROFSUUIDForDigest(res.Digest)
		res.VerityUUID = VerityUUIDForDigest(res.Digest)
		ew.SetUUID(res.EROFSUUID)
		er, err := ew.Finish(ctx, tr.Size)
		if err != nil {
			return nil, err
		}
		if meta.err != nil {
			return nil, meta.err
		}
		if _, err := spill.Seek(0, io.SeekStart); err != nil {
			return nil, fmt.Errorf("spill file: %w", err)
		}
		if n, err := io.Copy(bw, spill); err != nil || n != tr.Size {
			return nil, fmt.Errorf("copy tar behind the metadata: %d of %d bytes: %v", n, tr.Size, err)
		}
		dataSize = er.Size + tr.Size
		if pad := (4096 - dataSize%4096) % 4096; pad > 0 {
			if _, err := bw.Write(make([]byte, pad)); err != nil {
				return nil, fmt.Errorf("write image: %w", err)
			}
			dataSize += pad
		}
		if err := bw.Flush(); err != nil {
			return nil, fmt.Errorf("write image: %w", err)
		}
		res.MetadataSize = er.Size
		res.Inodes = er.Inodes
		log.Debug("tar copied behind the metadata", "elapsed", time.Since(start).String())
	}
	if uint64(dataSize) != vb.Size() {
		return nil, fmt.Errorf("layer: internal error: wrote %d bytes, hashed %d", dataSize, vb.Size())
	}
	var treeOut io.WriterAt = out
	if opts.HashOutput != nil && opts.Profile == ProfileTarIndex {
		treeOut = &teeWriterAt{a: out, b: opts.HashOutput, aOff: dataSize, bOff: 512}
	}
	log.Debug("data written", "bytes", dataSize, "elapsed", time.Since(start).String())
	vr, err := vb.Finish(ctx, treeOut, uint64(dataSize))
	if err != nil {
		return nil, err
	}
	res.Verity = vr.Params
	res.RootHash = vr.RootHash
	res.ImageSize = dataSize
	res.TreeSize = int64(vr.Layout.TreeBlocks) * int64(vr.Params.HashBlockSize)
	if opts.HashOutput != nil && opts.Profile == ProfileTarIndex {
		sp := vr.Params.Clone()
		sp.NoSuperblock = false
		sp.HashOffset = 0
		sp.UUID = res.VerityUUID
		sb, err := sp.MarshalSuperblock()
		if err != nil {
			return nil, err
		}
		if _, err := opts.HashOutput.WriteAt(sb, 0); err != nil {
			return nil, fmt.Errorf("write hash output: %w", err)
		}
	}
	log.Debug("layer converted", "profile", string(res.Profile), "root_hash", res.RootHashHex(), "size", dataSize)
	return res, nil
}

func digestString(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

// metaWriter writes the metadata to the image and, if set, a second output.
type metaWriter struct {
	w     io.Writer
	extra io.Writer
	err   error
}

func (m *metaWriter) Write(p []byte) (int, error) {
	if _, err := m.w.Write(p); err != nil {
		return 0, err
	}
	if m.extra != nil {
		if _, err := m.extra.Write(p); err != nil {
			m.err = fmt.Errorf("write metadata output: %w", err)
			return 0, m.err
		}
	}
	return len(p), nil
}

// teeWriterAt writes tree bytes to the image and to the separate hash file
// (shifted to follow its superblock).
type teeWriterAt struct {
	a, b       io.WriterAt
	aOff, bOff int64
}

func (t *teeWriterAt) WriteAt(p []byte, off int64) (int, error) {
	if n, err := t.a.WriteAt(p, off); err != nil {
		return n, err
	}
	if _, err := t.b.WriteAt(p, off-t.aOff+t.bOff); err != nil {
		return 0, fmt.Errorf("write hash output: %w", err)
	}
	return len(p), nil
}
