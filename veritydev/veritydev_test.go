package veritydev

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/intact-project/intact/verity"
)

// writeTree makes a 64 KiB data file and its tree (superblock at 0).
func writeTree(t *testing.T) (data, hash string, res *verity.Result) {
	t.Helper()
	dir := t.TempDir()
	data, hash = filepath.Join(dir, "data"), filepath.Join(dir, "hash")
	if err := os.WriteFile(data, make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	p := verity.DefaultParams()
	p.Salt = []byte{1, 2, 3}
	p.DataBlocks = 16
	df, _ := os.Open(data)
	defer df.Close()
	hf, _ := os.Create(hash)
	defer hf.Close()
	res, err := verity.Format(context.Background(), df, p, hf, nil)
	if err != nil {
		t.Fatal(err)
	}
	return data, hash, res
}

func TestResolveParams(t *testing.T) {
	data, hash, res := writeTree(t)
	// From the superblock: the caller's (empty) params are replaced.
	p, err := resolveParams(Config{Data: data, Hash: hash})
	if err != nil || p.DataBlocks != 16 || string(p.Salt) != "\x01\x02\x03" || p.NoSuperblock {
		t.Fatalf("superblock params: %+v %v", p, err)
	}
	// Without a superblock, DataBlocks defaults to the data size.
	np := res.Params
	np.NoSuperblock, np.DataBlocks, np.HashOffset = true, 0, 4096
	p, err = resolveParams(Config{Data: data, Hash: hash, Params: np})
	if err != nil || p.DataBlocks != 16 {
		t.Fatalf("no-superblock params: %+v %v", p, err)
	}
	// A hash file without a superblock at the offset is refused.
	if _, err := resolveParams(Config{Data: data, Hash: data}); err == nil {
		t.Error("data file accepted as a superblock")
	}
}

func TestOpenRejectsBadConfigBeforeTouchingTheKernel(t *testing.T) {
	data, hash, res := writeTree(t)
	_, err := OpenConfig(context.Background(), Config{Name: "x", Data: data, Hash: hash, RootHash: res.RootHash[:5]})
	if !errors.Is(err, ErrBadConfig) {
		t.Errorf("short root hash: %v, want ErrBadConfig", err)
	}
	_, err = OpenConfig(context.Background(), Config{Name: "x", Data: data, Hash: filepath.Join(t.TempDir(), "none"), RootHash: res.RootHash})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing hash file: %v", err)
	}
}

func TestSameFile(t *testing.T) {
	data, hash, _ := writeTree(t)
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(data, link)
	if !sameFile(data, link) || sameFile(data, hash) {
		t.Error("sameFile")
	}
}
