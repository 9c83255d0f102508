package verity_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/verity"
)

// formatWithVeritysetup formats data with veritysetup (the reference) into
// a separate hash file and returns the hash file's bytes and the root hash.
func formatWithVeritysetup(t *testing.T, p verity.Params, data []byte) (hash []byte, root []byte) {
	t.Helper()
	dir := t.TempDir()
	dp, hp := filepath.Join(dir, "data"), filepath.Join(dir, "hash")
	writeFile(t, dp, data)
	out, err := veritysetup(t, append([]string{"format"}, append(layoutArgs(p), dp, hp)...)...)
	if err != nil {
		t.Fatal(err)
	}
	root, _ = hex.DecodeString(rootFromDump(t, out))
	return readFile(t, hp), root
}

// TestVerifyNamesFlippedBlock flips one bit in a data block or in a hash
// block of every level of a veritysetup-made tree and checks that Verify
// and VerifyBlock name exactly that block, and that veritysetup verify also
// rejects the damaged pair.
func TestVerifyNamesFlippedBlock(t *testing.T) {
	testutil.RequireHost(t, "userspace only; the VM tier adds no kernel coverage")
	ctx := context.Background()
	for _, tc := range []struct {
		alg      string
		htype    uint32
		dbs, hbs uint32
		blocks   uint64
	}{
		{"sha256", 1, 4096, 4096, 300},
		{"sha256", 1, 512, 512, 5000}, // 4 levels
		{"sha512", 0, 1024, 512, 700},
	} {
		p := verity.DefaultParams()
		p.Algorithm, p.HashType, p.DataBlockSize, p.HashBlockSize, p.DataBlocks = tc.alg, tc.htype, tc.dbs, tc.hbs, tc.blocks
		p.Salt = []byte("0123456789abcdef")
		p.NoSuperblock = true
		name := p.Algorithm + "-" + strconv.Itoa(int(tc.dbs)) + "-" + strconv.Itoa(int(tc.hbs))
		t.Run(name, func(t *testing.T) {
			data := randomBytes(uint64(tc.blocks), int(p.DataBlocks)*int(p.DataBlockSize))
			hash, root := formatWithVeritysetup(t, p, data)
			l, err := p.Layout()
			if err != nil {
				t.Fatal(err)
			}
			if err := verity.Verify(ctx, p, root, bytes.NewReader(data), bytes.NewReader(hash), nil); err != nil {
				t.Fatalf("intact tree: %v", err)
			}
			r := rand.New(rand.NewPCG(tc.blocks, 3))

			// A data block.
			for i := 0; i < 3; i++ {
				blk := uint64(r.IntN(int(p.DataBlocks)))
				bad := bytes.Clone(data)
				bad[blk*uint64(p.DataBlockSize)+uint64(r.IntN(int(p.DataBlockSize)))] ^= 1 << r.IntN(8)
				want := &verity.BlockError{Level: -1, Index: blk, Offset: blk * uint64(p.DataBlockSize)}
				err := verity.Verify(ctx, p, root, bytes.NewReader(bad), bytes.NewReader(hash), &verity.Options{Concurrency: 2})
				checkBlockError(t, err, want)
				v, err := verity.NewVerifier(p, root, bytes.NewReader(hash), nil)
				if err != nil {
					t.Fatal(err)
				}
				err = v.VerifyBlock(blk, bad[blk*uint64(p.DataBlockSize):(blk+1)*uint64(p.DataBlockSize)])
				checkBlockError(t, err, want)
				veritysetupRejects(t, p, root, bad, hash)
			}

			// A hash block of every level.
			for level := 0; level < l.Levels; level++ {
				k := uint64(r.IntN(int(l.LevelBlocks[level])))
				n := l.LevelStart[level] + k
				bad := bytes.Clone(hash)
				bad[n*uint64(p.HashBlockSize)+uint64(r.IntN(int(p.HashBlockSize)))] ^= 1 << r.IntN(8)
				want := &verity.BlockError{Hash: true, Level: level, Index: k, Offset: n * uint64(p.HashBlockSize), Root: level == l.Levels-1}
				err := verity.Verify(ctx, p, root, bytes.NewReader(data), bytes.NewReader(bad), nil)
				checkBlockError(t, err, want)
				// VerifyBlock of a data block below the damaged hash block.
				shift := uint(level+1) * l.HashPerBlockBits
				blk := k << shift
				v, err := verity.NewVerifier(p, root, bytes.NewReader(bad), nil)
				if err != nil {
					t.Fatal(err)
				}
				err = v.VerifyBlock(blk, data[blk*uint64(p.DataBlockSize):(blk+1)*uint64(p.DataBlockSize)])
				checkBlockError(t, err, want)
				veritysetupRejects(t, p, root, data, bad)
			}
		})
	}
}

func checkBlockError(t *testing.T, err error, want *verity.BlockError) {
	t.Helper()
	if !errors.Is(err, verity.ErrCorrupt) {
		t.Fatalf("got %v, want corruption of %v", err, want)
	}
	var be *verity.BlockError
	if !errors.As(err, &be) || *be != *want {
		t.Fatalf("got %#v (%v), want %#v", be, err, want)
	}
}

func veritysetupRejects(t *testing.T, p verity.Params, root, data, hash []byte) {
	t.Helper()
	dir := t.TempDir()
	dp, hp := filepath.Join(dir, "data"), filepath.Join(dir, "hash")
	writeFile(t, dp, data)
	writeFile(t, hp, hash)
	if _, err := veritysetup(t, append(append([]string{"verify"}, layoutArgs(p)...), dp, hp, hex.EncodeToString(root))...); err == nil {
		t.Fatal("veritysetup verify accepts the damaged tree; the test is not testing anything")
	}
}

// TestVerifierConcurrentRandomOrder reads every block of a veritysetup tree
// through one Verifier from several goroutines in random order with a tiny
// cache, then checks that a wrong root hash fails at the top block.
func TestVerifierConcurrentRandomOrder(t *testing.T) {
	p := verity.DefaultParams()
	p.DataBlockSize, p.HashBlockSize, p.DataBlocks = 512, 1024, 3000
	p.NoSuperblock = true
	data := randomBytes(99, int(p.DataBlocks)*512)
	hash, root := formatWithVeritysetup(t, p, data)
	v, err := verity.NewVerifier(p, root, bytes.NewReader(hash), &verity.VerifierOptions{CacheBlocks: 3})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for _, i := range rand.New(rand.NewPCG(uint64(g), 0)).Perm(int(p.DataBlocks)) {
				if err := v.VerifyBlock(uint64(i), data[i*512:(i+1)*512]); err != nil {
					errs <- err
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := v.VerifyBlock(p.DataBlocks, make([]byte, 512)); !errors.Is(err, verity.ErrBlockRange) {
		t.Fatalf("block past the end: %v", err)
	}
	if err := v.VerifyBlock(0, make([]byte, 511)); !errors.Is(err, verity.ErrBlockRange) {
		t.Fatalf("short block: %v", err)
	}
	wrong := bytes.Clone(root)
	wrong[0] ^= 1
	w, _ := verity.NewVerifier(p, wrong, bytes.NewReader(hash), nil)
	var be *verity.BlockError
	if err := w.VerifyBlock(5, data[5*512:6*512]); !errors.As(err, &be) || !be.Root || !be.Hash {
		t.Fatalf("wrong root hash: %v", err)
	}
}

// TestVerifyShortDevices: a truncated hash or data device is ErrTooSmall,
// not corruption and not a panic.
func TestVerifyShortDevices(t *testing.T) {
	p := verity.DefaultParams()
	p.DataBlocks = 40
	p.NoSuperblock = true
	data := randomBytes(5, 40*4096)
	hash, root := formatWithVeritysetup(t, p, data)
	ctx := context.Background()
	if err := verity.Verify(ctx, p, root, bytes.NewReader(data), bytes.NewReader(hash[:len(hash)-1]), nil); !errors.Is(err, verity.ErrTooSmall) {
		t.Fatalf("short hash device: %v", err)
	}
	if err := verity.Verify(ctx, p, root, bytes.NewReader(data[:len(data)-1]), bytes.NewReader(hash), nil); !errors.Is(err, verity.ErrTooSmall) {
		t.Fatalf("short data device: %v", err)
	}
	if _, err := verity.NewVerifier(p, root[:5], bytes.NewReader(hash), nil); !errors.Is(err, verity.ErrInvalidParams) {
		t.Fatalf("short root hash: %v", err)
	}
}

// TestVerifyCancel: Verify stops when its context is cancelled.
func TestVerifyCancel(t *testing.T) {
	p := verity.DefaultParams()
	p.DataBlocks = 1024
	p.NoSuperblock = true
	data := randomBytes(6, 1024*4096)
	dir := t.TempDir()
	hf, err := os.Create(filepath.Join(dir, "hash"))
	if err != nil {
		t.Fatal(err)
	}
	defer hf.Close()
	res, err := verity.Format(context.Background(), bytes.NewReader(data), p, hf, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := verity.Verify(ctx, p, res.RootHash, bytes.NewReader(data), hf, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Verify: %v", err)
	}
	if _, err := verity.Format(ctx, bytes.NewReader(data), p, hf, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Format: %v", err)
	}
}
