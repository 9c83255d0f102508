package layer_test

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/layer"
)

// offsetPattern is an endless stream whose every 4 KiB block starts with its
// own offset, so misplaced data cannot go unnoticed.
type offsetPattern struct {
	off int64
	buf [4096]byte
}

func (p *offsetPattern) Read(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		i := int(p.off % 4096)
		if i == 0 {
			for j := range p.buf {
				p.buf[j] = byte(j * 7)
			}
			binary.LittleEndian.PutUint64(p.buf[:], uint64(p.off))
		}
		m := copy(b[n:], p.buf[i:])
		n += m
		p.off += int64(m)
	}
	return n, nil
}

// bigTar streams a tar with one file of size bytes followed by a small file,
// and records the big file's sha256 in sum.
func bigTar(size int64, sum hash.Hash) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		mt := time.Unix(1700000000, 42)
		err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "big", Mode: 0o644, Size: size, ModTime: mt, Format: tar.FormatPAX})
		if err == nil {
			_, err = io.CopyN(io.MultiWriter(tw, sum), &offsetPattern{}, size)
		}
		if err == nil {
			err = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "after", Mode: 0o644, Size: 5, ModTime: mt})
		}
		if err == nil {
			_, err = tw.Write([]byte("after"))
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr
}

// TestLargeFileOver4GiB converts a layer with a file beyond 4 GiB (extended
// inode with a 64-bit size; tar-index chunk addresses beyond 2^23 blocks)
// and reads it back through the package reader and, as root, the kernel.
func TestLargeFileOver4GiB(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: writes about 10 GB")
	}
	const size = 4<<30 + 3<<20 + 123
	for _, p := range profiles {
		t.Run(string(p), func(t *testing.T) {
			t.Parallel() // CPU-bound hashing: one profile per core
			dir := t.TempDir()
			sum := sha256.New()
			c := &converted{path: filepath.Join(dir, "big.img")}
			out, err := os.Create(c.path)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			c.res, err = layer.Convert(context.Background(), bigTar(size, sum), out, layer.Options{Profile: p, TempDir: dir})
			out.Close()
			if err != nil {
				t.Fatal(err)
			}
			want := hex.EncodeToString(sum.Sum(nil))
			t.Logf("%s: converted %d MiB in %v, root %s", p, c.res.TarSize>>20, time.Since(start), c.res.RootHashHex())
			f, _ := os.Open(c.path)
			defer f.Close()
			st, _ := f.Stat()
			im, err := layer.OpenImage(f, st.Size())
			if err != nil {
				t.Fatal(err)
			}
			check := func(how string, r io.Reader, after []byte) {
				h := sha256.New()
				n, err := io.Copy(h, r)
				if err != nil || n != size || hex.EncodeToString(h.Sum(nil)) != want {
					t.Fatalf("%s: read %d bytes (%v), sha256 mismatch: %v", how, n, err, hex.EncodeToString(h.Sum(nil)) != want)
				}
				if string(after) != "after" {
					t.Fatalf("%s: file after the big one reads %q", how, after)
				}
			}
			bf, err := im.FS.Open("big")
			if err != nil {
				t.Fatal(err)
			}
			after, _ := fsReadFile(im, "after")
			check("package reader", bf, after)
			t.Run("kernel-mount-as-root", func(t *testing.T) {
				testutil.RequireRoot(t)
				mnt := erofsMount(t, c.path)
				kf, err := os.Open(filepath.Join(mnt, "big"))
				if err != nil {
					t.Fatal(err)
				}
				defer kf.Close()
				after, _ := os.ReadFile(filepath.Join(mnt, "after"))
				check("kernel", kf, after)
			})
			veritysetupVerify(t, c)
		})
	}
}

func fsReadFile(im *layer.Image, name string) ([]byte, error) {
	f, err := im.FS.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}
