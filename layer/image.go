package layer

import (
	"context"
	"fmt"
	"io"

	"github.com/intact-project/intact/erofs"
	"github.com/intact-project/intact/verity"
)

// Image is a converted layer as found in an output file: the EROFS data
// device followed by its tree.
type Image struct {
	Profile Profile
	// FS reads the EROFS image (for tar-index, through the data device).
	FS   *erofs.FS
	Info erofs.Info
	// Verity holds the tree parameters implied by the profile and the data
	// size (DataBlocks, HashOffset = data device size, NoSuperblock).
	Verity verity.Params
	Layout verity.Layout
	// Size is the size of the whole file.
	Size int64
	r    io.ReaderAt
}

// OpenImage recognizes the profile of an output file from its EROFS
// superblock and derives the verity parameters.
func OpenImage(r io.ReaderAt, size int64) (*Image, error) {
	fsys, err := erofs.Open(r, size)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotLayerImage, err)
	}
	info := fsys.Info()
	im := &Image{Info: info, Size: size, r: r}
	var dataSize int64
	switch info.Layout {
	case erofs.LayoutFull:
		im.Profile = ProfileFull
		dataSize = int64(info.Blocks) * 4096
	case erofs.LayoutTarIndex:
		im.Profile = ProfileTarIndex
		if info.Device1MappedBlkaddr != uint32(info.Blocks) {
			return nil, fmt.Errorf("%w: tar device mapped at block %d, metadata has %d blocks", ErrNotLayerImage, info.Device1MappedBlkaddr, info.Blocks)
		}
		dataSize = (int64(info.Blocks) + int64(info.Device1Blocks)) * 512
		dataSize = (dataSize + 4095) / 4096 * 4096
	default:
		return nil, fmt.Errorf("%w: EROFS with %d-byte blocks and %d extra devices matches no profile", ErrNotLayerImage, info.BlockSize, info.ExtraDevices)
	}
	if dataSize <= 0 || dataSize > size {
		return nil, fmt.Errorf("%w: the image needs %d bytes of data, the file has %d", ErrNotLayerImage, dataSize, size)
	}
	p := VerityParams(im.Profile)
	p.DataBlocks = uint64(dataSize) / uint64(p.DataBlockSize)
	p.HashOffset = uint64(dataSize)
	l, err := p.Layout()
	if err != nil {
		return nil, err
	}
	if int64(l.HashEnd) > size {
		return nil, fmt.Errorf("%w: the tree needs %d bytes, the file has %d (truncated?)", ErrNotLayerImage, l.HashEnd, size)
	}
	im.Verity, im.Layout = p, l
	fsys, err = erofs.Open(io.NewSectionReader(r, 0, dataSize), dataSize)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotLayerImage, err)
	}
	im.FS = fsys
	return im, nil
}

// Verify checks the whole data device and tree against rootHash.
func (im *Image) Verify(ctx context.Context, rootHash []byte, opts *verity.Options) error {
	return verity.Verify(ctx, im.Verity, rootHash, im.r, im.r, opts)
}
