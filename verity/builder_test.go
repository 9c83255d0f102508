package verity_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"testing/iotest"

	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/verity"
)

// buildRef returns veritysetup's hash area (from p.HashOffset on) and root
// for data zero-padded to p's data blocks.
func buildRef(t *testing.T, p verity.Params, data []byte) ([]byte, []byte) {
	t.Helper()
	l, err := p.Layout()
	if err != nil {
		t.Fatal(err)
	}
	padded := make([]byte, l.DataSize)
	copy(padded, data)
	hash, root := formatWithVeritysetup(t, p, padded)
	return area(hash, p.HashOffset, l.HashEnd), root
}

// TestBuilderUpdateBlock writes data with some blocks wrong, then replaces
// them with UpdateBlock (blocks already spilled to the temporary file, still
// in memory, in the batch being filled, and a trailing partial block) and
// compares the tree with veritysetup's for the final data.
func TestBuilderUpdateBlock(t *testing.T) {
	for _, conc := range []int{1, 2, 3} {
		p := verity.DefaultParams()
		p.DataBlockSize, p.HashBlockSize = 512, 512
		p.Salt = make([]byte, 32) // the tar-index profile
		size := 3<<20 + 1000      // 6146 blocks, the last one partial
		final := randomBytes(11, size)
		data := bytes.Clone(final)
		patched := []uint64{0, 2, 3000, 6100, 6144, 6145}
		for _, b := range patched {
			end := min(int(b+1)*512, size)
			clear(data[b*512 : end])
		}
		b, err := verity.NewBuilder(p, &verity.Options{Concurrency: conc, MemoryLimit: 4096})
		if err != nil {
			t.Fatal(err)
		}
		// Feed all but the last 10 blocks, patch, feed the rest, patch again.
		cut := 6135 * 512
		if _, err := b.Write(data[:cut]); err != nil {
			t.Fatal(err)
		}
		for _, blk := range patched[:3] {
			if err := b.UpdateBlock(blk, final[blk*512:(blk+1)*512]); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := b.ReadFrom(iotest.HalfReader(bytes.NewReader(data[cut:]))); err != nil {
			t.Fatal(err)
		}
		for _, blk := range patched[3:] {
			end := min(int(blk+1)*512, size)
			if err := b.UpdateBlock(blk, final[blk*512:end]); err != nil {
				t.Fatal(err)
			}
		}
		// Wrong lengths and blocks never written are refused.
		if err := b.UpdateBlock(6145, make([]byte, 512)); !errors.Is(err, verity.ErrBlockRange) {
			t.Fatalf("full-size update of the partial block: %v", err)
		}
		if err := b.UpdateBlock(6146, make([]byte, 512)); !errors.Is(err, verity.ErrBlockRange) {
			t.Fatalf("update past the end: %v", err)
		}
		var out bytes.Buffer
		res, err := b.Finish(context.Background(), writerAt{&out}, 0)
		if err != nil {
			t.Fatal(err)
		}
		p.DataBlocks = res.Params.DataBlocks
		wantArea, wantRoot := buildRef(t, p, final)
		if !bytes.Equal(res.RootHash, wantRoot) || !bytes.Equal(out.Bytes(), wantArea) {
			t.Fatalf("concurrency %d: tree after updates differs from veritysetup's for the final data", conc)
		}
		if _, err := b.Write([]byte{1}); err == nil {
			t.Fatal("Write after Finish succeeded")
		}
	}
}

// TestBuilderAppendedOutput streams the "full" layer profile into one
// output: the image followed by the tree at the 4 KiB-aligned end, without
// superblock, and checks it with veritysetup.
func TestBuilderAppendedOutput(t *testing.T) {
	p := verity.DefaultParams()
	p.NoSuperblock = true
	p.Salt = bytes.Repeat([]byte{0xa5}, 32)
	data := randomBytes(12, 5<<20+123)
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "image"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := verity.NewBuilder(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	w := io.MultiWriter(f, b)
	if _, err := io.Copy(w, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	off := (b.Size() + 4095) / 4096 * 4096
	res, err := b.Finish(context.Background(), f, off)
	if err != nil {
		t.Fatal(err)
	}
	if res.Params.HashOffset != off || res.Layout.HashStartBlock != off/4096 {
		t.Fatalf("params %v layout %+v", res.Params, res.Layout)
	}
	if _, err := veritysetup(t, append(append([]string{"verify"}, layoutArgs(res.Params)...), f.Name(), f.Name(), verity.RootHashHex(res.RootHash))...); err != nil {
		t.Fatalf("veritysetup verify: %v", err)
	}
}

func TestBuilderRejects(t *testing.T) {
	p := verity.DefaultParams()
	for _, tc := range []struct {
		name string
		mod  func(*verity.Params)
		want error
	}{
		{"sha1", func(p *verity.Params) { p.Algorithm = "sha1" }, verity.ErrUnsupported},
		{"md5", func(p *verity.Params) { p.Algorithm = "md5" }, verity.ErrUnsupported},
		{"type2", func(p *verity.Params) { p.HashType = 2 }, verity.ErrUnsupported},
		{"bs1000", func(p *verity.Params) { p.DataBlockSize = 1000 }, verity.ErrInvalidParams},
		{"bs256", func(p *verity.Params) { p.HashBlockSize = 256 }, verity.ErrInvalidParams},
		{"bs8192", func(p *verity.Params) { p.HashBlockSize = 8192 }, verity.ErrUnsupported},
		{"salt257", func(p *verity.Params) { p.Salt = make([]byte, 257) }, verity.ErrInvalidParams},
	} {
		q := p
		tc.mod(&q)
		if _, err := verity.NewBuilder(q, nil); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// An expected block count that the data does not meet.
	q := p
	q.DataBlocks = 3
	b, err := verity.NewBuilder(q, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Write(make([]byte, 4097))
	if _, err := b.Finish(context.Background(), writerAt{&bytes.Buffer{}}, 0); !errors.Is(err, verity.ErrInvalidParams) {
		t.Fatalf("block count mismatch: %v", err)
	}
	// Without a superblock, the hash offset must be a multiple of the hash
	// block size (the tree would otherwise start before it).
	q = p
	q.NoSuperblock = true
	b, _ = verity.NewBuilder(q, nil)
	b.Write(make([]byte, 4096))
	if _, err := b.Finish(context.Background(), writerAt{&bytes.Buffer{}}, 512); !errors.Is(err, verity.ErrInvalidParams) {
		t.Fatalf("misaligned hash offset: %v", err)
	}
}

// TestBuilderWriteDoesNotAllocate: once level 0 spills, hashing more data
// allocates nothing in the calling goroutine's hot path.
func TestBuilderWriteDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	p := verity.DefaultParams()
	b, err := verity.NewBuilder(p, &verity.Options{Concurrency: 1, MemoryLimit: 8192})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	chunk := make([]byte, 1<<20)
	for i := 0; i < 4; i++ {
		b.Write(chunk)
	}
	if n := testing.AllocsPerRun(20, func() { b.Write(chunk) }); n != 0 {
		t.Fatalf("%v allocations per 1 MiB written", n)
	}
}

// TestBuilderMemoryBounded: building a tree whose level 0 is 32 MiB keeps
// the live heap far below that (level 0 spills to the temporary file).
func TestBuilderMemoryBounded(t *testing.T) {
	testutil.RequireHost(t, "userspace only; the VM tier adds no kernel coverage")
	if testing.Short() {
		t.Skip("hashes 512 MiB")
	}
	p := verity.DefaultParams()
	p.DataBlockSize, p.HashBlockSize = 512, 512 // level 0 = data/16
	b, err := verity.NewBuilder(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	var peak uint64
	var ms runtime.MemStats
	sample := func() {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapAlloc)
	}
	for i := 0; i < 512; i++ {
		b.Write(chunk)
		if i%64 == 63 {
			sample()
		}
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "tree"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := b.Finish(context.Background(), f, 0); err != nil {
		t.Fatal(err)
	}
	sample()
	if peak > 16<<20 {
		t.Fatalf("live heap reached %d MiB for a 32 MiB level 0", peak>>20)
	}
	t.Logf("peak live heap %.1f MiB", float64(peak)/(1<<20))
}

// TestCopyTreeTarIndexProfile: one streaming build of the tar-index profile
// (512/512, 32 zero-byte salt) appended to the data without superblock, then
// copied into a separate hash file with its superblock at 0, equals what
// veritysetup writes for the separate file.
func TestCopyTreeTarIndexProfile(t *testing.T) {
	p := verity.DefaultParams()
	p.DataBlockSize, p.HashBlockSize = 512, 512
	p.Salt = make([]byte, 32)
	p.NoSuperblock = true
	data := randomBytes(31, 700*512)
	var out bytes.Buffer
	w := writerAt{&out}
	w.WriteAt(data, 0)
	b, err := verity.NewBuilder(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Write(data)
	res, err := b.Finish(context.Background(), w, 700*512)
	if err != nil {
		t.Fatal(err)
	}
	sep := res.Params.Clone()
	sep.NoSuperblock, sep.HashOffset = false, 0
	sep.UUID = [16]byte{0xc1, 0xb9, 0xd5, 0xa2}
	var hash bytes.Buffer
	if err := verity.CopyTree(context.Background(), bytes.NewReader(out.Bytes()), res.Params, writerAt{&hash}, sep); err != nil {
		t.Fatal(err)
	}
	want, root := buildRef(t, sep, data)
	if !bytes.Equal(res.RootHash, root) || !bytes.Equal(hash.Bytes(), want) {
		t.Fatal("copied tree differs from veritysetup's separate hash file")
	}
	other := sep
	other.Salt = nil
	if err := verity.CopyTree(context.Background(), bytes.NewReader(out.Bytes()), res.Params, writerAt{&hash}, other); !errors.Is(err, verity.ErrInvalidParams) {
		t.Fatalf("CopyTree to a different tree: %v", err)
	}
}

// TestBuilderComposeDigests: the tar-index layout (metadata ‖ tar ‖ zeros)
// built from a tar hashed on its own while it streams, then metadata, the
// tar's digests and the padding in a second Builder, equals veritysetup's
// tree of the assembled data.
func TestBuilderComposeDigests(t *testing.T) {
	p := verity.DefaultParams()
	p.DataBlockSize, p.HashBlockSize = 512, 512
	p.Salt = make([]byte, 32)
	tar := randomBytes(41, 3000*512)
	meta := randomBytes(42, 37*512)
	pad := make([]byte, 4096-(len(meta)+len(tar))%4096)

	tb, err := verity.NewBuilder(p, &verity.Options{MemoryLimit: 1024})
	if err != nil {
		t.Fatal(err)
	}
	writeChunks(t, tb, tar, 5)
	fb, err := verity.NewBuilder(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	fb.Write(meta)
	if err := tb.Digests(context.Background(), fb.WriteDigests); err != nil {
		t.Fatal(err)
	}
	// Blocks written after the digests can still be updated.
	fb.Write(pad)
	if err := fb.UpdateBlock(uint64(len(meta)+len(tar))/512, pad[:512]); err != nil {
		t.Fatal(err)
	}
	if err := fb.UpdateBlock(3, meta[3*512:4*512]); err != nil {
		t.Fatal(err)
	}
	if err := fb.WriteDigests(make([]byte, 31)); !errors.Is(err, verity.ErrBlockRange) {
		t.Fatalf("partial digest: %v", err)
	}
	var out bytes.Buffer
	res, err := fb.Finish(context.Background(), writerAt{&out}, 0)
	if err != nil {
		t.Fatal(err)
	}
	all := append(append(append([]byte{}, meta...), tar...), pad...)
	q := res.Params
	want, root := buildRef(t, q, all)
	if !bytes.Equal(res.RootHash, root) || !bytes.Equal(out.Bytes(), want) {
		t.Fatal("composed tree differs from veritysetup's")
	}
}
