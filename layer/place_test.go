package layer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/intact-project/intact/erofs/erofstest"
	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/layer"
)

// manyFiles is a tar of n small files (and their directory) followed by
// extra zero bytes after the end-of-archive marker, so that its length need
// not be a multiple of 512.
func manyFiles(n, extra int) []byte {
	m := []erofstest.Member{erofstest.Dir("d", 0o755, 0)}
	for i := 0; i < n; i++ {
		m = append(m, erofstest.File(fmt.Sprintf("d/file-%04d", i), 0o644, erofstest.Pattern(100+i*37%3000, byte(i)), i))
	}
	return append(erofstest.Tar(m), make([]byte, extra)...)
}

// metadataSize converts tb without a data device and returns the metadata
// size.
func metadataSize(t *testing.T, tb []byte) int64 {
	t.Helper()
	res, err := layer.Convert(context.Background(), bytes.NewReader(tb), nil, layer.Options{Profile: layer.ProfileTarIndex, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return res.MetadataSize
}

// insertRangeWorks reports whether dir's filesystem supports
// FALLOC_FL_INSERT_RANGE at 4096-byte granularity.
func insertRangeWorks(t *testing.T, dir string) bool {
	f, err := os.CreateTemp(dir, "probe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Write(make([]byte, 8192))
	bs, err := linux.FSBlockSize(f)
	return err == nil && 4096%bs == 0 && linux.InsertRange(f, 0, 4096) == nil
}

// plainOutput is an Output that cannot be read back (so the tar goes
// through a spill file).
type plainOutput struct{ f *os.File }

func (p plainOutput) Write(b []byte) (int, error)              { return p.f.Write(b) }
func (p plainOutput) WriteAt(b []byte, off int64) (int, error) { return p.f.WriteAt(b, off) }

// TestTarIndexPlacement converts tar-index layers whose metadata size is
// and is not a multiple of 4096, and whose tar ends inside a 512-byte block,
// through every way the tar reaches its place behind the metadata
// (FALLOC_FL_INSERT_RANGE, moving it within the output, a spill file) and
// without a data device. veritysetup verifies every output; all give the
// same bytes, and the metadata and tree files are the same with and without
// a data device.
func TestTarIndexPlacement(t *testing.T) {
	dir := t.TempDir()
	insert := insertRangeWorks(t, dir)
	if !insert {
		t.Logf("%s does not support FALLOC_FL_INSERT_RANGE: only the move and copy paths run", dir)
	}
	// Find a layer whose metadata is a multiple of 4096 bytes.
	var aligned []byte
	for n := 1; n < 400 && aligned == nil; n++ {
		if tb := manyFiles(n, 100); metadataSize(t, tb)%4096 == 0 {
			aligned = tb
		}
	}
	if aligned == nil {
		t.Fatal("no layer with 4096-aligned metadata among 400 candidates")
	}
	inputs := map[string][]byte{
		"aligned-metadata":   aligned,
		"unaligned-metadata": manyFiles(7, 700),
		"features":           erofstest.Features(),
		"features+gzip":      gz(t, erofstest.Features()),
	}
	for name, in := range inputs {
		t.Run(name, func(t *testing.T) {
			var method string
			defer layer.OnPlaced(func(m string) { method = m })()
			var first *converted
			var firstImg, firstHash, firstMeta []byte
			for _, how := range []string{"default", "move", "copy", "none"} {
				restore := layer.SetNoInsertRange(how == "move")
				c := &converted{path: filepath.Join(t.TempDir(), "layer.img")}
				c.hashPath, c.metaPath = c.path+".hash", c.path+".meta"
				hf, _ := os.Create(c.hashPath)
				mf, _ := os.Create(c.metaPath)
				opts := layer.Options{Profile: layer.ProfileTarIndex, TempDir: t.TempDir(), HashOutput: hf, MetadataOutput: mf, StartWriteback: how == "default"}
				var out *os.File
				var err error
				method = ""
				switch how {
				case "none":
					c.res, err = layer.Convert(context.Background(), bytes.NewReader(in), nil, opts)
				case "copy":
					out, _ = os.Create(c.path)
					c.res, err = layer.Convert(context.Background(), bytes.NewReader(in), plainOutput{out}, opts)
				default:
					out, _ = os.Create(c.path)
					c.res, err = layer.Convert(context.Background(), bytes.NewReader(in), out, opts)
				}
				restore()
				hf.Close()
				mf.Close()
				if out != nil {
					out.Close()
				}
				if err != nil {
					t.Fatalf("%s: %v", how, err)
				}
				want := map[string]string{"default": "move", "move": "move", "copy": "copy", "none": ""}[how]
				if how == "default" && insert && c.res.MetadataSize%4096 == 0 {
					want = "insert-range"
				}
				if method != want {
					t.Fatalf("%s: the tar was placed by %q, want %q (metadata %d bytes)", how, method, want, c.res.MetadataSize)
				}
				if name == "aligned-metadata" && c.res.MetadataSize%4096 != 0 || name == "unaligned-metadata" && c.res.MetadataSize%4096 == 0 {
					t.Fatalf("metadata size %d", c.res.MetadataSize)
				}
				if c.res.TarSize%512 == 0 && strings.Contains(name, "metadata") {
					t.Fatalf("tar size %d: the test wants a partial last block", c.res.TarSize)
				}
				hashB, _ := os.ReadFile(c.hashPath)
				metaB, _ := os.ReadFile(c.metaPath)
				if how == "none" {
					// Materialize the data device from the metadata and
					// the tar, as a host does, for veritysetup.
					tb := in
					if strings.HasSuffix(name, "gzip") {
						tb = erofstest.Features()
					}
					dev := append(append([]byte{}, metaB...), tb...)
					dev = append(dev, make([]byte, int(c.res.ImageSize)-len(dev))...)
					os.WriteFile(c.path, dev, 0o644)
					if !bytes.Equal(dev, firstImg[:c.res.ImageSize]) {
						t.Fatal("none: metadata ‖ tar ‖ zeros differs from the data device of the other conversions")
					}
					vs := testutil.RequireTool(t, "veritysetup")
					if out, err := exec.Command(vs, "verify", c.path, c.hashPath, c.res.RootHashHex()).CombinedOutput(); err != nil {
						t.Fatalf("none: veritysetup verify of metadata ‖ tar ‖ zeros with the tree file: %v\n%s", err, out)
					}
				} else {
					veritysetupVerify(t, c)
				}
				img, _ := os.ReadFile(c.path)
				if first == nil {
					first, firstImg, firstHash, firstMeta = c, img, hashB, metaB
					continue
				}
				if how != "none" && !bytes.Equal(img, firstImg) {
					t.Fatalf("%s: output differs from the default conversion", how)
				}
				if !bytes.Equal(hashB, firstHash) || !bytes.Equal(metaB, firstMeta) {
					t.Fatalf("%s: hash or metadata output differs", how)
				}
				r, f := c.res, first.res
				if r.RootHashHex() != f.RootHashHex() || r.ImageSize != f.ImageSize || r.TreeSize != f.TreeSize || r.MetadataSize != f.MetadataSize ||
					r.DiffID != f.DiffID || r.Digest != f.Digest || r.TarSize != f.TarSize || r.Entries != f.Entries || r.Inodes != f.Inodes ||
					r.EROFSUUID != f.EROFSUUID || r.VerityUUID != f.VerityUUID || r.Verity.String() != f.Verity.String() {
					t.Fatalf("%s: result %+v differs from %+v", how, r, f)
				}
			}
		})
	}
}

// TestConvertWithoutOutput: the full profile without an output gives the
// same result as with one (written with early writeback, whose output
// veritysetup verifies).
func TestConvertWithoutOutput(t *testing.T) {
	tb := bigLayer(t, 10) // 40 MiB: more than one unit of early writeback
	c := &converted{path: filepath.Join(t.TempDir(), "layer.img")}
	out, err := os.Create(c.path)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c.res, err = layer.Convert(context.Background(), bytes.NewReader(tb), out, layer.Options{TempDir: t.TempDir(), StartWriteback: true, Logger: log})
	out.Close()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "writeback off") {
		t.Fatalf("early writeback failed:\n%s", logs.String())
	}
	veritysetupVerify(t, c)
	res, err := layer.Convert(context.Background(), bytes.NewReader(tb), nil, layer.Options{TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if res.RootHashHex() != c.res.RootHashHex() || res.ImageSize != c.res.ImageSize || res.MetadataSize != c.res.MetadataSize {
		t.Fatalf("without output: %+v, with: %+v", res, c.res)
	}
}

// TestMoveUp moves byte ranges up within a file by distances below, at and
// above the unit of the move, and compares with a copy made in memory.
func TestMoveUp(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "m")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := int64(layer.MoveBuf)
	for _, c := range []struct{ n, by int64 }{{1, 512}, {5000, 512}, {u, 4096}, {3*u + 777, 1536}, {2*u + 1, u}, {u + 5, 3 * u}, {3 * u, u + 512}} {
		data := erofstest.Pattern(int(c.n), byte(c.by))
		if err := f.Truncate(0); err != nil {
			t.Fatal(err)
		}
		f.WriteAt(data, 0)
		if err := layer.MoveUp(context.Background(), f, c.n, c.by); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, c.n)
		if _, err := f.ReadAt(got, c.by); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("move of %d bytes by %d: wrong content", c.n, c.by)
		}
	}
	// A short source is an error, not a silent hole.
	f.Truncate(100)
	if err := layer.MoveUp(context.Background(), f, 5000, 512); !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		t.Fatalf("short source: %v", err)
	}
}

// failingOutput fails every write that reaches beyond limit.
type failingOutput struct {
	f     *os.File
	limit int64
	off   int64
}

var errDiskFull = errors.New("test: disk full")

func (o *failingOutput) Write(b []byte) (int, error) {
	n, err := o.WriteAt(b, o.off)
	o.off += int64(n)
	return n, err
}
func (o *failingOutput) WriteAt(b []byte, off int64) (int, error) {
	if off+int64(len(b)) > o.limit {
		return 0, errDiskFull
	}
	return o.f.WriteAt(b, off)
}
func (o *failingOutput) ReadAt(b []byte, off int64) (int, error) { return o.f.ReadAt(b, off) }

// failingReader returns err after n bytes of r.
type failingReader struct {
	r   io.Reader
	n   int
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

// TestPipelineFailures: a failing output (while the tar streams, and while
// it is moved) and a failing input end the conversion with their own error,
// and no goroutine of the pipeline outlives Convert.
func TestPipelineFailures(t *testing.T) {
	big := bigLayer(t, 3)
	before := runtime.NumGoroutine()
	errInput := errors.New("test: connection reset")
	for _, c := range []struct {
		name  string
		in    io.Reader
		limit int64
		want  error
	}{
		{"output-while-streaming", bytes.NewReader(big), 3 << 20, errDiskFull},
		{"output-while-moving", bytes.NewReader(big), int64(len(big)) + 100, errDiskFull},
		{"input-plain", &failingReader{r: bytes.NewReader(big), n: 5 << 20, err: errInput}, 1 << 40, errInput},
		{"input-gzip", &failingReader{r: bytes.NewReader(gz(t, big)), n: 1 << 20, err: errInput}, 1 << 40, errInput},
	} {
		for _, p := range profiles {
			f, err := os.Create(filepath.Join(t.TempDir(), "o"))
			if err != nil {
				t.Fatal(err)
			}
			restore := layer.SetNoInsertRange(true)
			_, err = layer.Convert(context.Background(), c.in, &failingOutput{f: f, limit: c.limit}, layer.Options{Profile: p, TempDir: t.TempDir()})
			restore()
			f.Close()
			if r, ok := c.in.(*bytes.Reader); ok {
				r.Seek(0, io.SeekStart)
			} else if fr, ok := c.in.(*failingReader); ok {
				fr.r.(*bytes.Reader).Seek(0, io.SeekStart)
				fr.n = map[string]int{"input-plain": 5 << 20, "input-gzip": 1 << 20}[c.name]
			}
			if !errors.Is(err, c.want) {
				t.Errorf("%s/%s: got %v, want %v", c.name, p, err, c.want)
			}
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines left behind (%d before):\n%s", n-before, before, buf[:runtime.Stack(buf, true)])
	}
}

// bigLayer is a tar of n files of 4 MiB: several chunks of the pipeline
// and several units of the move.
func bigLayer(t *testing.T, n int) []byte {
	t.Helper()
	var m []erofstest.Member
	for i := 0; i < n; i++ {
		m = append(m, erofstest.File(fmt.Sprintf("f%d", i), 0o644, erofstest.Pattern(4<<20, byte(i)), i))
	}
	return erofstest.Tar(m)
}

// TestCancelWhileInputStalls: cancelling ctx ends a conversion whose input
// stopped sending (before any byte, and after half a layer, plain and
// gzip) with ctx's error at once. A pollable input (a pipe, which has
// SetReadDeadline) is released too: no goroutine outlives Convert.
func TestCancelWhileInputStalls(t *testing.T) {
	half := bigLayer(t, 2)
	half = half[:len(half)/2]
	before := runtime.NumGoroutine()
	for _, c := range []struct {
		name  string
		first []byte
	}{{"nothing", nil}, {"half-plain", half}, {"half-gzip", gz(t, half)[:len(half)/4]}} {
		for _, p := range profiles {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			go func() { w.Write(c.first) }() // then stall: w stays open
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(200*time.Millisecond, cancel)
			f, err := os.Create(filepath.Join(t.TempDir(), "o"))
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_, err = layer.Convert(ctx, r, f, layer.Options{Profile: p, TempDir: t.TempDir()})
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%s/%s: %v, want context.Canceled", c.name, p, err)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("%s/%s: Convert returned %v after it started", c.name, p, d)
			}
			f.Close()
			w.Close()
			r.Close()
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines left behind (%d before):\n%s", n-before, before, buf[:runtime.Stack(buf, true)])
	}
}
