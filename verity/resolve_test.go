package verity

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestResolveParams: the parameters of an existing tree come from its
// superblock, or from the caller with the data blocks taken from the data
// file's size (up to the hash offset when the tree is inside it); a data
// file that is a directory or smaller than one block is refused.
func TestResolveParams(t *testing.T) {
	dir := t.TempDir()
	data, hash := filepath.Join(dir, "data"), filepath.Join(dir, "hash")
	if err := os.WriteFile(data, make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	p := Params{HashType: 1, Algorithm: "sha256", DataBlockSize: 4096, HashBlockSize: 4096, DataBlocks: 16, Salt: []byte{1, 2}, UUID: NewUUID()}
	df, _ := os.Open(data)
	hf, _ := os.Create(hash)
	if _, err := Format(context.Background(), df, p, hf, nil); err != nil {
		t.Fatal(err)
	}
	df.Close()
	hf.Close()
	got, err := ResolveParams(Params{}, data, hash)
	if err != nil || got.DataBlocks != 16 || got.UUID != p.UUID || string(got.Salt) != string(p.Salt) {
		t.Fatalf("superblock: %+v %v", got, err)
	}
	ns := p
	ns.NoSuperblock, ns.DataBlocks = true, 0
	if got, err := ResolveParams(ns, data, hash); err != nil || got.DataBlocks != 16 {
		t.Fatalf("sized: %+v %v", got, err)
	}
	ns.HashOffset = 8192 // the tree inside DATA from 8 KiB on
	if got, err := ResolveParams(ns, data, data); err != nil || got.DataBlocks != 2 {
		t.Fatalf("inside data: %+v %v", got, err)
	}
	ns.HashOffset = 0
	if _, err := ResolveParams(ns, dir, hash); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Errorf("directory: %v", err)
	}
	tiny := filepath.Join(dir, "tiny")
	os.WriteFile(tiny, make([]byte, 100), 0o644)
	if _, err := ResolveParams(ns, tiny, hash); !errors.Is(err, ErrTooSmall) {
		t.Errorf("tiny: %v", err)
	}
	if u, v := NewUUID(), NewUUID(); u == v || u[6]>>4 != 4 || u[8]>>6 != 2 {
		t.Errorf("NewUUID: %x %x", u, v)
	}
}
