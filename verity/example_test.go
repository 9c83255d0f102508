package verity_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"

	"github.com/intact-project/intact/verity"
)

// A converter streams an image of unknown size into a file, patches its
// first block at the end, and appends the tree at the 4 KiB-aligned end
// (the "full" layer profile: sha256, 4 KiB blocks, fixed salt, no
// superblock). The root hash below was confirmed with
// `veritysetup format --no-superblock --salt 5a5a...5a --hash-offset 12288`.
func ExampleBuilder() {
	f, err := os.CreateTemp("", "image-*")
	if err != nil {
		panic(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()

	p := verity.DefaultParams()
	p.NoSuperblock = true
	p.Salt = bytes.Repeat([]byte{0x5a}, 32)
	b, err := verity.NewBuilder(p, nil)
	if err != nil {
		panic(err)
	}
	defer b.Close()

	// Stream the image: written once, hashed as it goes.
	image := bytes.Repeat([]byte("intact "), 1500) // 10500 bytes
	if _, err := io.Copy(io.MultiWriter(f, b), bytes.NewReader(image)); err != nil {
		panic(err)
	}
	// Patch block 0 (say, a superblock written last) in the file and tell
	// the Builder.
	block0 := bytes.Repeat([]byte{0xe0}, 4096)
	if _, err := f.WriteAt(block0, 0); err != nil {
		panic(err)
	}
	if err := b.UpdateBlock(0, block0); err != nil {
		panic(err)
	}
	// Append the tree at the 4 KiB-aligned end of the image.
	off := (b.Size() + 4095) &^ 4095
	res, err := b.Finish(context.Background(), f, off)
	if err != nil {
		panic(err)
	}
	fmt.Println(res.Params.DataBlocks, res.Params.HashOffset, verity.RootHashHex(res.RootHash))
	// Output:
	// 3 12288 f025039f84ad5e152d58ec1225ecc90583af3cf3f6eb1cbec74b00738bb10f7e
}
