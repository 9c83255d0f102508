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
	// TempDir holds spill files (verity level-0 digests beyond memory; the
	// tar of a tar-index conversion whose output cannot be read back);
	// "" means os.TempDir().
	TempDir string
	// HashOutput, if set, receives the separate verity tree with a
	// veritysetup superblock at offset 0 (ProfileTarIndex only).
	HashOutput io.WriterAt
	// MetadataOutput, if set, receives the EROFS metadata blob
	// (ProfileTarIndex only).
	MetadataOutput io.Writer
	// StartWriteback, for a file output that the caller syncs afterwards
	// (fsync), starts writing finished parts of the image back to disk while
	// the conversion goes on (sync_file_range), so that the final fsync has
	// little left to wait for.
	StartWriteback bool
	// Concurrency of the verity hashing; 0 means GOMAXPROCS.
	Concurrency int
	// Progress is called with the number of uncompressed bytes read so far.
	Progress func(uncompressed int64)
	Logger   *slog.Logger
}

// Output is where an image is written. ProfileFull writes it sequentially
// through Write, then block 0 and the tree through WriteAt; ProfileTarIndex
// writes only through WriteAt, and if the Output is also an io.ReaderAt
// (and, for FALLOC_FL_INSERT_RANGE and early writeback, a file: SyscallConn)
// it writes the tar into it directly and moves it. An *os.File is all of
// these.
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
//
// out may be nil: then only Options.MetadataOutput and Options.HashOutput
// are written (what a publisher of ProfileTarIndex metadata and trees
// needs); the decompressed tar touches no disk at all and the Result is the
// same as with an output.
//
// With ProfileTarIndex an out that is also an io.ReaderAt (a file) receives
// the tar directly while it streams, then the metadata is put in front of it
// (see package doc); any other Output gets the tar through a spill file.
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
	vp := VerityParams(opts.Profile)
	vopts := &verity.Options{Concurrency: opts.Concurrency, TempDir: opts.TempDir, Logger: log}
	vb, err := verity.NewBuilder(vp, vopts)
	if err != nil {
		return nil, err
	}
	defer vb.Close()

	// Sinks of the decompressed stream besides the tar parser: the diff_id
	// (added below, for compressed input only), and for tar-index the
	// tar's own verity level 0 and its destination.
	var sinks []func([]byte) error
	var tb *verity.Builder
	var dest *tarDest
	if opts.Profile == ProfileTarIndex {
		if tb, err = verity.NewBuilder(vp, vopts); err != nil {
			return nil, err
		}
		defer tb.Close()
		sinks = append(sinks, func(b []byte) error { _, err := tb.Write(b); return err })
		if out != nil {
			if dest, err = newTarDest(out, opts.TempDir); err != nil {
				return nil, err
			}
			defer dest.close()
			sinks = append(sinks, dest.write)
		}
	}

	// Input digest over every input byte, read and hashed in its own
	// goroutine; decompression in another (see pipeline.go).
	inHash := sha256.New()
	pre := newPrefetch(ctx, in, inHash)
	br := bufio.NewReaderSize(pre, 1<<20)
	raw, comp, err := decompress(br)
	if err != nil {
		pre.stop()
		return nil, err
	}
	defer raw.Close()
	// The diff_id is the SHA-256 of the decompressed stream. Uncompressed,
	// that is every input byte, which the input digest already hashes.
	var diffHash hash.Hash
	if comp != CompressionNone {
		diffHash = sha256.New()
		sinks = append([]func([]byte) error{func(b []byte) error { diffHash.Write(b); return nil }}, sinks...)
	}
	lim := &limitReader{r: &decodeReader{r: raw, kind: comp}, max: opts.MaxSize}
	fan := newFanout(lim, sinks...)
	// Cancellation stops the pipeline at once (Read, the sinks and the
	// producer), also while the input stalls.
	stopCancel := context.AfterFunc(ctx, func() { fan.fail(ctx.Err()) })
	defer func() {
		stopCancel()
		// The input first: the decompressor may be waiting for it.
		pre.stop()
		fan.stop()
	}()
	tarStream := &countReader{ctx: ctx, r: fan, progress: opts.Progress}

	res := &Result{Profile: opts.Profile, Compression: comp}
	finishInput := func() error {
		if err := fan.wait(); err != nil {
			return err
		}
		// The input must end where the compressed stream ends (gzip and
		// zstd reject trailing bytes; the digest covers them all).
		if _, err := io.Copy(io.Discard, br); err != nil {
			return err
		}
		if err := pre.wait(); err != nil {
			return err
		}
		res.Digest = digestString(inHash)
		res.DiffID = res.Digest
		if diffHash != nil {
			res.DiffID = digestString(diffHash)
		}
		return nil
	}

	wb := newWriteback(out, opts.StartWriteback, log)
	defer wb.wait()
	var dataSize int64
	switch opts.Profile {
	case ProfileFull:
		var w io.Writer = vb
		if out != nil {
			w = io.MultiWriter(&seqWriter{w: out, wb: wb}, vb)
		}
		bw := bufio.NewWriterSize(w, 1<<20)
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
		er, dataStart, err := finishFull(ctx, ew, bw, vb, out, tr.Size)
		if err != nil {
			return nil, err
		}
		dataSize = er.Size
		res.MetadataSize = er.Size - int64(dataStart)
		res.Inodes = er.Inodes
	case ProfileTarIndex:
		// The metadata is known only after the whole tar, and precedes it
		// in the data device. erofs writes it in one piece: place the tar
		// behind it (in a goroutine) while the metadata and the tar's
		// digests go into the tree, then write the metadata in front.
		var tarSize int64
		meta := &onceWriter{write: func(p []byte) error {
			m := int64(len(p))
			placed := make(chan error, 1)
			if dest != nil {
				go func() { placed <- dest.place(ctx, m, wb) }()
			} else {
				placed <- nil
			}
			err := composeLevel0(ctx, vb, tb, p, m+tarSize, opts.MetadataOutput)
			if perr := <-placed; err == nil {
				err = perr
			}
			if err != nil || dest == nil {
				return err
			}
			log.Debug("tar placed behind the metadata", "method", dest.method, "metadata", m, "elapsed", time.Since(start).String())
			if _, err := out.WriteAt(p, 0); err != nil {
				return fmt.Errorf("write image: %w", err)
			}
			// Zeros from the end of the tar to a multiple of 4096.
			pad := (4096 - (m+tarSize)%4096) % 4096
			if pad > 0 {
				if _, err := out.WriteAt(make([]byte, pad), m+tarSize); err != nil {
					return fmt.Errorf("write image: %w", err)
				}
			}
			// The data device is final: write it out while the tree is
			// computed.
			wb.async(0, m+tarSize+pad)
			return nil
		}}
		ew, err := erofs.NewWriter(meta, erofs.Options{Layout: erofs.LayoutTarIndex, MaxEntries: opts.MaxEntries, Logger: log})
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
		tarSize = tr.Size
		if dest != nil && dest.n != tarSize {
			return nil, fmt.Errorf("layer: internal error: wrote %d tar bytes, parsed %d", dest.n, tarSize)
		}
		res.TarSize, res.Entries = tr.Size, tr.Entries
		log.Debug("tar streamed and hashed", "bytes", tr.Size, "elapsed", time.Since(start).String())
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
		if !meta.done || er.Size%512 != 0 {
			return nil, fmt.Errorf("layer: internal error: metadata of %d bytes not written in one piece", er.Size)
		}
		if dest != nil && testPlaced != nil {
			testPlaced(dest.method)
		}
		dataSize = (er.Size + tr.Size + 4095) / 4096 * 4096
		res.MetadataSize = er.Size
		res.Inodes = er.Inodes
	}
	if uint64(dataSize) != vb.Size() {
		return nil, fmt.Errorf("layer: internal error: wrote %d bytes, hashed %d", dataSize, vb.Size())
	}
	tw := &treeWriter{out: out, outOff: dataSize}
	if opts.HashOutput != nil && opts.Profile == ProfileTarIndex {
		tw.hash, tw.hashOff = opts.HashOutput, 512
	}
	log.Debug("data written", "bytes", dataSize, "elapsed", time.Since(start).String())
	vr, err := vb.Finish(ctx, tw, uint64(dataSize))
	if err != nil {
		return nil, err
	}
	res.Verity = vr.Params
	res.RootHash = vr.RootHash
	res.ImageSize = dataSize
	res.TreeSize = int64(vr.Layout.TreeBlocks) * int64(vr.Params.HashBlockSize)
	if tw.hash != nil {
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
	log.Debug("layer converted", "profile", string(res.Profile), "root_hash", res.RootHashHex(), "size", dataSize, "elapsed", time.Since(start).String())
	return res, nil
}

// finishFull ends a full-profile image: the EROFS metadata after the data
// written through bw, then block 0 (the superblock) written in place and
// re-hashed. It returns the erofs result and where the metadata started.
func finishFull(ctx context.Context, ew *erofs.Writer, bw *bufio.Writer, vb *verity.Builder, out Output, tarSize int64) (*erofs.Result, uint64, error) {
	dataStart := vb.Size() + uint64(bw.Buffered())
	er, err := ew.Finish(ctx, tarSize)
	if err != nil {
		return nil, 0, err
	}
	if err := bw.Flush(); err != nil {
		return nil, 0, fmt.Errorf("write image: %w", err)
	}
	if out != nil {
		if _, err := out.WriteAt(er.Head, 0); err != nil {
			return nil, 0, fmt.Errorf("write image: %w", err)
		}
	}
	if err := vb.UpdateBlock(0, er.Head); err != nil {
		return nil, 0, err
	}
	return er, dataStart, nil
}

// composeLevel0 gives vb the tar-index data device's level 0: the metadata
// blocks (hashed here, and copied to the metadata output), the tar's blocks
// (hashed by tb while the tar streamed; a partial last block was hashed
// zero-padded, as zeros follow it on the device), then the zero blocks from
// end (metadata + tar) up to a multiple of 4096.
func composeLevel0(ctx context.Context, vb, tb *verity.Builder, meta []byte, end int64, metaOut io.Writer) error {
	if _, err := vb.Write(meta); err != nil {
		return err
	}
	if metaOut != nil {
		if _, err := metaOut.Write(meta); err != nil {
			return fmt.Errorf("write metadata output: %w", err)
		}
	}
	if err := tb.Digests(ctx, vb.WriteDigests); err != nil {
		return err
	}
	if pad := (end+4095)/4096*4096 - int64(vb.Size()); pad > 0 {
		if _, err := vb.Write(make([]byte, pad)); err != nil {
			return err
		}
	}
	return nil
}

func digestString(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

// onceWriter takes the tar-index metadata, which erofs writes in a single
// Write call, and hands it to write; a second call is an internal error.
type onceWriter struct {
	write func(p []byte) error
	done  bool
	err   error
}

func (o *onceWriter) Write(p []byte) (int, error) {
	if o.done {
		o.err = errors.New("layer: internal error: metadata written in more than one piece")
		return 0, o.err
	}
	o.done = true
	if err := o.write(p); err != nil {
		o.err = err
		return 0, err
	}
	return len(p), nil
}

// treeWriter writes the tree to the image (at outOff: the tree starts at
// the data device's end) and, if set, to the separate hash file (at
// hashOff, behind its superblock). With neither it discards.
type treeWriter struct {
	out, hash       io.WriterAt
	outOff, hashOff int64
}

func (t *treeWriter) WriteAt(p []byte, off int64) (int, error) {
	if t.out != nil {
		if n, err := t.out.WriteAt(p, off); err != nil {
			return n, fmt.Errorf("write image: %w", err)
		}
	}
	if t.hash != nil {
		if _, err := t.hash.WriteAt(p, off-t.outOff+t.hashOff); err != nil {
			return 0, fmt.Errorf("write hash output: %w", err)
		}
	}
	return len(p), nil
}
