package erofs_test

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"testing"

	"github.com/intact-project/intact/erofs"
	"github.com/intact-project/intact/erofs/erofstest"
)

// walkAll reads everything an image offers, bounding each file read.
func walkAll(fsys *erofs.FS) {
	_ = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		in, err := fsys.Inode(p)
		if err != nil {
			return nil
		}
		_, _ = in.Xattrs()
		switch {
		case in.Mode().IsRegular():
			f, err := fsys.Open(p)
			if err == nil {
				_, _ = io.Copy(io.Discard, io.LimitReader(f, 1<<16))
				f.Close()
			}
		case in.Mode()&fs.ModeSymlink != 0:
			_, _ = fsys.ReadLink(p)
		}
		return nil
	})
}

// FuzzReader parses arbitrary bytes as an image: no panic, no unbounded
// allocation, no endless walk.
func FuzzReader(f *testing.F) {
	for _, tb := range [][]byte{erofstest.Empty(), erofstest.Stack()[1]} {
		for _, l := range layouts {
			im, err := build(f, l, tb)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(im.dev)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fsys, err := erofs.Open(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		_ = fsys.Info()
		walkAll(fsys)
	})
}

// FuzzTar converts arbitrary bytes as a tar stream in both layouts; whatever
// is accepted must read back.
func FuzzTar(f *testing.F) {
	f.Add(erofstest.Empty())
	for _, tb := range erofstest.Stack() {
		f.Add(tb)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, l := range layouts {
			var out bytes.Buffer
			w, err := erofs.NewWriter(&out, erofs.Options{Layout: l, MaxEntries: 2000})
			if err != nil {
				t.Fatal(err)
			}
			tr, err := w.AddTar(context.Background(), bytes.NewReader(data))
			if err != nil {
				continue
			}
			res, err := w.Finish(context.Background(), tr.Size)
			if err != nil {
				continue
			}
			img := out.Bytes()
			if l == erofs.LayoutFull {
				copy(img, res.Head)
			} else {
				img = append(img, data...)
			}
			fsys, err := erofs.Open(bytes.NewReader(img), int64(len(img)))
			if err != nil {
				t.Fatalf("%s: accepted input gives an unreadable image: %v", l, err)
			}
			if _, err := erofstest.FromFS(fsys); err != nil {
				t.Fatalf("%s: accepted input gives an unreadable image: %v", l, err)
			}
		}
	})
}
