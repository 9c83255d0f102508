package layer_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/intact-project/intact/erofs/erofstest"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/layer"
)

var profiles = []layer.Profile{layer.ProfileFull, layer.ProfileTarIndex}

func gz(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func zst(t testing.TB, b []byte) []byte {
	w, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	return w.EncodeAll(b, nil)
}

type converted struct {
	path, hashPath, metaPath string
	res                      *layer.Result
}

func convert(t testing.TB, in []byte, p layer.Profile, extra bool) (*converted, error) {
	t.Helper()
	dir := t.TempDir()
	c := &converted{path: filepath.Join(dir, "layer.img")}
	out, err := os.Create(c.path)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	opts := layer.Options{Profile: p, TempDir: dir}
	if extra {
		c.hashPath, c.metaPath = filepath.Join(dir, "layer.hash"), filepath.Join(dir, "layer.meta")
		hf, _ := os.Create(c.hashPath)
		defer hf.Close()
		mf, _ := os.Create(c.metaPath)
		defer mf.Close()
		opts.HashOutput, opts.MetadataOutput = hf, mf
	}
	c.res, err = layer.Convert(context.Background(), bytes.NewReader(in), out, opts)
	return c, err
}

func mustConvert(t testing.TB, in []byte, p layer.Profile, extra bool) *converted {
	t.Helper()
	c, err := convert(t, in, p, extra)
	if err != nil {
		t.Fatalf("convert (%s): %v", p, err)
	}
	return c
}

// veritysetupVerify checks an output file with veritysetup, the reference.
func veritysetupVerify(t testing.TB, c *converted) {
	t.Helper()
	vs := testutil.RequireTool(t, "veritysetup")
	r := c.res
	args := []string{"verify", "--no-superblock", fmt.Sprintf("--hash-offset=%d", r.ImageSize),
		fmt.Sprintf("--data-blocks=%d", r.Verity.DataBlocks), fmt.Sprintf("--data-block-size=%d", r.Verity.DataBlockSize),
		fmt.Sprintf("--hash-block-size=%d", r.Verity.HashBlockSize), "--hash=sha256", "--salt=" + hex.EncodeToString(r.Verity.Salt),
		c.path, c.path, r.RootHashHex()}
	if out, err := exec.Command(vs, args...).CombinedOutput(); err != nil {
		t.Fatalf("veritysetup %v: %v\n%s", args, err, out)
	}
	if c.hashPath != "" {
		// The separate tree carries its own superblock (veritysetup's default mode).
		if out, err := exec.Command(vs, "verify", c.path, c.hashPath, r.RootHashHex()).CombinedOutput(); err != nil {
			t.Fatalf("veritysetup verify with the separate tree: %v\n%s", err, out)
		}
		out, err := exec.Command(vs, "dump", c.hashPath).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "UUID:            \t"+uuidString(r.VerityUUID)) {
			t.Fatalf("veritysetup dump: %v\n%s", err, out)
		}
	}
}

func uuidString(u [16]byte) string {
	h := hex.EncodeToString(u[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// TestConvert converts the corpus in both profiles from plain, gzip and
// zstd input; veritysetup verifies every output, the image reads back as
// the tar says, and the compression changes nothing but the digest (and,
// for tar-index, the digest-derived UUID).
func TestConvert(t *testing.T) {
	inputs := map[string][]byte{"features": erofstest.Features(), "empty": erofstest.Empty(), "stack2": erofstest.Stack()[1]}
	for name, tb := range inputs {
		want, err := erofstest.FromTar(tb)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(tb)
		diffID := "sha256:" + hex.EncodeToString(sum[:])
		for _, p := range profiles {
			t.Run(name+"/"+string(p), func(t *testing.T) {
				var first []byte
				for _, comp := range []struct {
					name string
					b    []byte
					c    layer.Compression
				}{{"none", tb, layer.CompressionNone}, {"gzip", gz(t, tb), layer.CompressionGzip}, {"zstd", zst(t, tb), layer.CompressionZstd}} {
					c := mustConvert(t, comp.b, p, p == layer.ProfileTarIndex)
					r := c.res
					dsum := sha256.Sum256(comp.b)
					if r.DiffID != diffID || r.Digest != "sha256:"+hex.EncodeToString(dsum[:]) || r.Compression != comp.c {
						t.Fatalf("%s: diff_id %s digest %s compression %s", comp.name, r.DiffID, r.Digest, r.Compression)
					}
					if r.TarSize != int64(len(tb)) || r.ImageSize%4096 != 0 {
						t.Fatalf("%s: tar size %d, image size %d", comp.name, r.TarSize, r.ImageSize)
					}
					veritysetupVerify(t, c)
					img, _ := os.ReadFile(c.path)
					data := img[:r.ImageSize]
					if p == layer.ProfileTarIndex {
						meta, _ := os.ReadFile(c.metaPath)
						if int64(len(meta)) != r.MetadataSize || !bytes.Equal(meta, data[:len(meta)]) {
							t.Fatalf("metadata output differs from the image's first %d bytes", len(meta))
						}
						if !bytes.Equal(data[len(meta):len(meta)+len(tb)], tb) || len(bytes.Trim(data[len(meta)+len(tb):], "\x00")) != 0 {
							t.Fatal("the data device is not metadata ‖ tar ‖ zeros")
						}
						if u := layer.EROFSUUIDForDigest(r.Digest); !bytes.Equal(data[1072:1088], u[:]) {
							t.Fatal("EROFS UUID is not derived from the digest")
						}
						// Only the digest-derived UUID may differ between compressions.
						data = append([]byte(nil), data...)
						clear(data[1072:1088])
					}
					if first == nil {
						first = data
					} else if !bytes.Equal(first, data) {
						t.Fatalf("%s input gives a different image than plain input", comp.name)
					}
					f, _ := os.Open(c.path)
					st, _ := f.Stat()
					im, err := layer.OpenImage(f, st.Size())
					if err != nil {
						t.Fatal(err)
					}
					if im.Profile != p || im.Verity.HashOffset != uint64(r.ImageSize) || im.Verity.DataBlocks != r.Verity.DataBlocks {
						t.Fatalf("OpenImage: %s %d %d", im.Profile, im.Verity.HashOffset, im.Verity.DataBlocks)
					}
					if err := im.Verify(context.Background(), r.RootHash, nil); err != nil {
						t.Fatalf("Verify: %v", err)
					}
					got, err := erofstest.FromFS(im.FS)
					if err != nil {
						t.Fatal(err)
					}
					if d := erofstest.Diff(want, got, erofstest.DiffOptions{}); len(d) > 0 {
						t.Fatalf("image vs tar: %s", strings.Join(d, "\n"))
					}
					f.Close()
				}
			})
		}
	}
}

// TestVerifyDetectsCorruption flips one byte in the data and one in the
// tree.
func TestVerifyDetectsCorruption(t *testing.T) {
	for _, p := range profiles {
		c := mustConvert(t, erofstest.Stack()[0], p, false)
		img, _ := os.ReadFile(c.path)
		for _, off := range []int64{c.res.MetadataSize / 2, c.res.ImageSize - 1, c.res.ImageSize + 100} {
			bad := append([]byte(nil), img...)
			bad[off] ^= 1
			im, err := layer.OpenImage(bytes.NewReader(bad), int64(len(bad)))
			if err != nil {
				continue // the flip broke the superblock: also a detection
			}
			if err := im.Verify(context.Background(), c.res.RootHash, nil); err == nil {
				t.Errorf("%s: flip at %d not detected", p, off)
			}
		}
	}
}

// TestHostileInput checks the input-level failures.
func TestHostileInput(t *testing.T) {
	tb := erofstest.Features()
	g := gz(t, tb)
	badGz := append([]byte(nil), g...)
	badGz[len(badGz)/2] ^= 0xff
	z := zst(t, tb)
	badZst := append([]byte(nil), z...)
	badZst[len(badZst)/2] ^= 0xff
	bomb := gz(t, make([]byte, 64<<20))
	cases := []struct {
		name string
		in   []byte
		max  int64
		want error
		msg  string
	}{
		{"corrupt-gzip", badGz, 0, layer.ErrCorruptInput, "gzip"},
		{"truncated-gzip", g[:len(g)/2], 0, layer.ErrCorruptInput, "gzip"},
		{"corrupt-zstd", badZst, 0, layer.ErrCorruptInput, "zstd"},
		{"truncated-zstd", z[:len(z)/2], 0, layer.ErrCorruptInput, "zstd"},
		{"bomb", bomb, 1 << 20, layer.ErrTooLarge, "exceeds 1048576 bytes"},
		{"xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0, 1, 2, 3}, 0, layer.ErrUnsupportedCompression, "xz"},
		{"not-tar", bytes.Repeat([]byte("hello world\n"), 200), 0, nil, "not a valid tar"},
	}
	for _, c := range cases {
		for _, p := range profiles {
			dir := t.TempDir()
			out, _ := os.Create(filepath.Join(dir, "o"))
			_, err := layer.Convert(context.Background(), bytes.NewReader(c.in), out, layer.Options{Profile: p, MaxSize: c.max, TempDir: dir})
			out.Close()
			if err == nil || (c.want != nil && !errors.Is(err, c.want)) || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("%s/%s: got %v, want %v containing %q", c.name, p, err, c.want, c.msg)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 1 {
				t.Errorf("%s/%s: temp files left behind: %v", c.name, p, ents)
			}
		}
	}
}

// Golden root hashes of the Features corpus (plain tar input). veritysetup
// confirms them in TestGoldenRootHashes; the kernel mount tests and
// fsck.erofs check the images they cover.
var goldenRoot = map[layer.Profile]string{
	layer.ProfileFull:     "59cc239308d83b241b7c07d035267cc6a45060999fdc09ae62d8ecd4b464ef67",
	layer.ProfileTarIndex: "839d06a1b782c53f6908e8ae52641440c9f98f4ef1d7ab3386bcec926a51ab4c",
}

func TestGoldenRootHashes(t *testing.T) {
	for _, p := range profiles {
		c := mustConvert(t, erofstest.Features(), p, false)
		if got := c.res.RootHashHex(); got != goldenRoot[p] {
			t.Errorf("%s: root hash %s, golden %s", p, got, goldenRoot[p])
		}
		veritysetupVerify(t, c)
	}
}

// TestMaxEntries: the entry limit surfaces as an error.
func TestMaxEntries(t *testing.T) {
	_, err := convert(t, erofstest.Features(), layer.ProfileFull, false)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out, _ := os.Create(filepath.Join(dir, "o"))
	defer out.Close()
	_, err = layer.Convert(context.Background(), bytes.NewReader(erofstest.Features()), out, layer.Options{MaxEntries: 100, TempDir: dir})
	if err == nil || !strings.Contains(err.Error(), "more than 100 entries") {
		t.Fatalf("got %v", err)
	}
}

// TestCancel: a canceled context stops the conversion with its error.
func TestCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := t.TempDir()
	out, _ := os.Create(filepath.Join(dir, "o"))
	defer out.Close()
	_, err := layer.Convert(ctx, bytes.NewReader(erofstest.Features()), out, layer.Options{TempDir: dir})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
}
