package layer

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/intact-project/intact/erofs"
	"github.com/intact-project/intact/verity"
)

// DirUUID is the EROFS UUID of an image converted from a directory:
// UUIDv5(URL, "intact:erofs-full:dir"). A directory has no diff_id to
// derive one from, and a constant keeps the output a function of the tree.
var DirUUID = uuid.NewSHA1(uuid.NameSpaceURL, []byte("intact:erofs-full:dir"))

// ConvertDir converts the directory tree below dir (every file, owner, mode,
// nanosecond mtime, xattr, device number and hardlink; see erofs.AddDir) to
// a ProfileFull image and its dm-verity tree, written to out as Convert
// writes a layer: the data device, then the tree at Result.ImageSize. An
// overlayfs upper directory converts to a layer that overlayfs reads back
// the same way: whiteouts (0:0 character devices) and opaque directories
// (trusted.overlay.opaque) are kept as they are. Result.DiffID, Digest and
// TarSize are empty; Entries counts the files.
func ConvertDir(ctx context.Context, dir string, out Output, opts Options) (*Result, error) {
	if opts.Profile != "" && opts.Profile != ProfileFull {
		return nil, fmt.Errorf("%w: a directory converts with the %s profile only", ErrUnknownProfile, ProfileFull)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	vb, err := verity.NewBuilder(VerityParams(ProfileFull), &verity.Options{Concurrency: opts.Concurrency, TempDir: opts.TempDir, Logger: log})
	if err != nil {
		return nil, err
	}
	defer vb.Close()
	wb := newWriteback(out, opts.StartWriteback, log)
	defer wb.wait()
	var w io.Writer = vb
	if out != nil {
		w = io.MultiWriter(&seqWriter{w: out, wb: wb}, vb)
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	ew, err := erofs.NewWriter(bw, erofs.Options{Layout: erofs.LayoutFull, UUID: DirUUID, MaxEntries: opts.MaxEntries, Logger: log})
	if err != nil {
		return nil, err
	}
	if err := ew.AddDir(ctx, dir); err != nil {
		return nil, fmt.Errorf("convert %s: %w", dir, err)
	}
	er, dataStart, err := finishFull(ctx, ew, bw, vb, out, 0)
	if err != nil {
		return nil, err
	}
	if uint64(er.Size) != vb.Size() {
		return nil, fmt.Errorf("layer: internal error: wrote %d bytes, hashed %d", er.Size, vb.Size())
	}
	vr, err := vb.Finish(ctx, &treeWriter{out: out, outOff: er.Size}, uint64(er.Size))
	if err != nil {
		return nil, err
	}
	res := &Result{
		Profile:      ProfileFull,
		Verity:       vr.Params,
		RootHash:     vr.RootHash,
		ImageSize:    er.Size,
		TreeSize:     int64(vr.Layout.TreeBlocks) * int64(vr.Params.HashBlockSize),
		MetadataSize: er.Size - int64(dataStart),
		EROFSUUID:    DirUUID,
		Inodes:       er.Inodes,
		Entries:      int(er.Inodes),
	}
	log.Debug("directory converted", "dir", dir, "root_hash", res.RootHashHex(), "size", er.Size, "elapsed", time.Since(start).String())
	return res, nil
}
