package verity_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/verity"
)

// These tests compare the package with veritysetup (cryptsetup), the
// reference implementation of the format: same root hash and byte-identical
// hash areas for a seeded random matrix of parameters, veritysetup verify
// accepting our trees, and our verification naming the block that a flipped
// bit damaged.

func veritysetup(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := testutil.RequireTool(t, "veritysetup")
	cmd := exec.Command(bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("veritysetup %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// rootFromDump extracts "Root hash:" from veritysetup format output.
func rootFromDump(t *testing.T, out string) string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "Root hash" {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no root hash in veritysetup output:\n%s", out)
	return ""
}

// layoutArgs are the veritysetup options that describe p.
func layoutArgs(p verity.Params) []string {
	a := []string{
		"--hash", p.Algorithm,
		"--format", strconv.Itoa(int(p.HashType)),
		"--data-block-size", strconv.Itoa(int(p.DataBlockSize)),
		"--hash-block-size", strconv.Itoa(int(p.HashBlockSize)),
		"--data-blocks", strconv.FormatUint(p.DataBlocks, 10),
		"--salt", p.SaltHex(),
		"--hash-offset", strconv.FormatUint(p.HashOffset, 10),
	}
	if p.NoSuperblock {
		a = append(a, "--no-superblock")
	} else {
		a = append(a, "--uuid", p.UUIDString())
	}
	return a
}

type matrixCase struct {
	size     int
	p        verity.Params // DataBlocks filled in
	appended bool          // tree appended to the data file at p.HashOffset
	floor    bool          // DataBlocks = floor(size/dbs), veritysetup's default
	seed     uint64
}

func (c matrixCase) String() string {
	mode := "separate"
	if c.appended {
		mode = "appended"
	}
	sb := "sb"
	if c.p.NoSuperblock {
		sb = "nosb"
	}
	fl := ""
	if c.floor {
		fl = "-floor"
	}
	return fmt.Sprintf("%d-%s-v%d-%d-%d-salt%d-%s-off%d-%s%s", c.size, c.p.Algorithm, c.p.HashType,
		c.p.DataBlockSize, c.p.HashBlockSize, len(c.p.Salt), sb, c.p.HashOffset, mode, fl)
}

func randomCases(seed uint64, n int) []matrixCase {
	r := rand.New(rand.NewPCG(seed, 1))
	sizes := []uint32{512, 1024, 2048, 4096}
	saltLens := []int{0, 1, 16, 32, 33, 64, 255, 256}
	var cases []matrixCase
	for i := 0; i < n; i++ {
		var c matrixCase
		c.seed = r.Uint64()
		p := verity.DefaultParams()
		// Every block-size pair appears in every 16 cases.
		p.DataBlockSize = sizes[i%4]
		p.HashBlockSize = sizes[(i/4)%4]
		p.Algorithm = []string{"sha256", "sha512"}[r.IntN(2)]
		p.HashType = uint32(r.IntN(2))
		p.Salt = make([]byte, saltLens[r.IntN(len(saltLens))])
		for j := range p.Salt {
			p.Salt[j] = byte(r.Uint32())
		}
		if len(p.Salt) == 0 {
			p.Salt = nil
		}
		p.NoSuperblock = r.IntN(2) == 0
		for j := range p.UUID {
			p.UUID[j] = byte(r.Uint32())
		}
		switch r.IntN(8) {
		case 0:
			c.size = 1
		case 1:
			c.size = r.IntN(4 << 20) // up to several MiB, odd sizes
		case 2:
			c.size = int(p.DataBlockSize) * (1 + r.IntN(3)) // 1-3 blocks
		case 3:
			// exactly enough blocks to fill a level, and one more
			hpb := 1
			for hpb*2*digestSlot(p) <= int(p.HashBlockSize) {
				hpb *= 2
			}
			c.size = int(p.DataBlockSize) * (hpb + r.IntN(2))
		default:
			c.size = r.IntN(256 << 10)
		}
		dbs := int(p.DataBlockSize)
		if c.size%dbs != 0 && c.size > dbs && r.IntN(4) == 0 {
			c.floor = true
			p.DataBlocks = uint64(c.size / dbs)
		} else {
			p.DataBlocks = uint64((c.size + dbs - 1) / dbs)
		}
		c.appended = r.IntN(3) == 0
		align := uint64(512)
		if p.NoSuperblock {
			align = uint64(p.HashBlockSize)
		}
		if c.appended {
			end := p.DataBlocks * uint64(dbs)
			if uint64(c.size) > end {
				end = uint64(c.size)
			}
			p.HashOffset = (end+align-1)/align*align + uint64(r.IntN(3))*align
		} else if r.IntN(3) == 0 {
			p.HashOffset = uint64(1+r.IntN(8)) * align
		}
		c.p = p
		cases = append(cases, c)
	}
	return cases
}

func digestSlot(p verity.Params) int {
	d := p.DigestSize()
	if p.HashType == verity.HashTypeChromeOS {
		return d
	}
	s := 1
	for s < d {
		s *= 2
	}
	return s
}

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24), byte(seed >> 32)})
	r.Read(b)
	return b
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCompatVeritysetupMatrix(t *testing.T) {
	testutil.RequireTool(t, "veritysetup")
	n := 96
	if testing.Short() {
		n = 24
	}
	for _, c := range randomCases(20261101, n) {
		t.Run(c.String(), func(t *testing.T) {
			t.Parallel()
			checkCase(t, c)
		})
	}
}

func checkCase(t *testing.T, c matrixCase) {
	ctx := context.Background()
	dir := t.TempDir()
	p := c.p
	l, err := p.Layout()
	if err != nil {
		t.Fatalf("layout: %v", err)
	}
	data := randomBytes(c.seed, c.size)
	padded := make([]byte, max(int(l.DataSize), c.size))
	copy(padded, data)

	// Reference: veritysetup on the zero-padded data.
	theirData := filepath.Join(dir, "their.data")
	writeFile(t, theirData, padded)
	theirHash := filepath.Join(dir, "their.hash")
	if c.appended {
		theirHash = theirData
	} else {
		// veritysetup cannot write a superblock past the end of an empty
		// file when the tree has no levels; give it a zero-filled file.
		writeFile(t, theirHash, make([]byte, l.HashEnd))
	}
	out, err := veritysetup(t, append([]string{"format"}, append(layoutArgs(p), theirData, theirHash)...)...)
	if err != nil {
		t.Fatal(err)
	}
	wantRoot := rootFromDump(t, out)
	theirArea := area(readFile(t, theirHash), p.HashOffset, l.HashEnd)

	// Ours, file-based: on the unpadded data.
	ourData := filepath.Join(dir, "our.data")
	writeFile(t, ourData, data)
	ourHash := filepath.Join(dir, "our.hash")
	if c.appended {
		ourHash = ourData
		if err := p.ValidateSameDevice(); err != nil {
			t.Fatal(err)
		}
	}
	df, err := os.Open(ourData)
	if err != nil {
		t.Fatal(err)
	}
	defer df.Close()
	hf, err := os.OpenFile(ourHash, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer hf.Close()
	// Half the cases hash with crypto/sha256 only (the portable path).
	opts := func(o verity.Options) *verity.Options {
		if c.seed%2 == 0 {
			verity.DisableSIMD(&o)
		}
		return &o
	}
	res, err := verity.Format(ctx, df, p, hf, opts(verity.Options{Concurrency: 1 + int(c.seed%3)}))
	if err != nil {
		t.Fatalf("Format: %v", err)
	}
	if got := verity.RootHashHex(res.RootHash); got != wantRoot {
		t.Fatalf("root hash %s, veritysetup %s", got, wantRoot)
	}
	ourFile := readFile(t, ourHash)
	if ourArea := area(ourFile, p.HashOffset, l.HashEnd); !bytes.Equal(ourArea, theirArea) {
		t.Fatalf("hash area differs from veritysetup's (%s)", firstDiff(ourArea, theirArea))
	}
	if c.appended {
		// The whole file, data and padding included, equals veritysetup's.
		if !bytes.Equal(ourFile, readFile(t, theirData)) {
			t.Fatalf("appended file differs from veritysetup's (%s)", firstDiff(ourFile, readFile(t, theirData)))
		}
	}

	// Ours, streaming: random chunk sizes, tiny memory limit (forces the
	// spill file), into a fresh file.
	b, err := verity.NewBuilder(withoutBlocks(p, c.floor), opts(verity.Options{Concurrency: 1 + int(c.seed%3), MemoryLimit: 1}))
	if err != nil {
		t.Fatal(err)
	}
	stream := data
	if c.floor {
		stream = data[:l.DataSize]
	}
	writeChunks(t, b, stream, c.seed)
	sf, err := os.Create(filepath.Join(dir, "stream.hash"))
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	sres, err := b.Finish(ctx, sf, p.HashOffset)
	if err != nil {
		t.Fatalf("Builder.Finish: %v", err)
	}
	if got := verity.RootHashHex(sres.RootHash); got != wantRoot {
		t.Fatalf("streaming root hash %s, veritysetup %s", got, wantRoot)
	}
	if sres.Params.DataBlocks != p.DataBlocks {
		t.Fatalf("streaming data blocks %d, want %d", sres.Params.DataBlocks, p.DataBlocks)
	}
	streamFile := readFile(t, sf.Name())
	if streamArea := area(streamFile, p.HashOffset, uint64(max(len(streamFile), int(p.HashOffset)))); !bytes.Equal(streamArea, theirArea) {
		t.Fatalf("streaming hash area differs from veritysetup's (%s)", firstDiff(streamArea, theirArea))
	}

	// veritysetup verify accepts our tree (on the padded data, which is what
	// a kernel would map), and our Verify accepts veritysetup's.
	verifyData := theirData
	if c.appended {
		verifyData = ourData
	}
	vargs := []string{"verify"}
	if p.NoSuperblock {
		vargs = append(vargs, layoutArgs(p)...)
	} else {
		vargs = append(vargs, "--hash-offset", strconv.FormatUint(p.HashOffset, 10))
	}
	if _, err := veritysetup(t, append(vargs, verifyData, ourHash, wantRoot)...); err != nil {
		t.Fatalf("veritysetup verify rejects our tree: %v", err)
	}
	root, _ := hex.DecodeString(wantRoot)
	tf, err := os.Open(theirHash)
	if err != nil {
		t.Fatal(err)
	}
	defer tf.Close()
	vf, err := os.Open(theirData)
	if err != nil {
		t.Fatal(err)
	}
	defer vf.Close()
	if err := verity.Verify(ctx, p, root, vf, tf, opts(verity.Options{})); err != nil {
		t.Fatalf("Verify of veritysetup's tree: %v", err)
	}
	if !p.NoSuperblock {
		sp, err := verity.ReadSuperblock(tf, p.HashOffset)
		if err != nil {
			t.Fatalf("ReadSuperblock of veritysetup's superblock: %v", err)
		}
		if sp.String() != p.String() || sp.UUID != p.UUID || !bytes.Equal(sp.Salt, p.Salt) {
			t.Fatalf("superblock parsed as %v, want %v", sp, p)
		}
	}
}

// area returns b[from:to], reading bytes past the end of b as zeros (a tree
// without levels writes nothing; a hole reads as zeros).
func area(b []byte, from, to uint64) []byte {
	out := make([]byte, to-from)
	if from < uint64(len(b)) {
		copy(out, b[from:min(to, uint64(len(b)))])
	}
	return out
}

func withoutBlocks(p verity.Params, keep bool) verity.Params {
	if !keep {
		p.DataBlocks = 0
	}
	p.HashOffset = 0
	return p
}

func writeChunks(t *testing.T, b *verity.Builder, data []byte, seed uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 2))
	for len(data) > 0 {
		n := min(len(data), 1+r.IntN(3<<20))
		if r.IntN(2) == 0 {
			n = min(len(data), 1+r.IntN(1000))
		}
		if m, err := b.Write(data[:n]); err != nil || m != n {
			t.Fatalf("Write: %d, %v", m, err)
		}
		data = data[n:]
	}
}

func firstDiff(a, b []byte) string {
	if len(a) != len(b) {
		return fmt.Sprintf("lengths %d and %d", len(a), len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			return fmt.Sprintf("first difference at byte %d", i)
		}
	}
	return "equal"
}

// TestCompatEmptyData: veritysetup refuses empty data, and so do we.
func TestCompatEmptyData(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	writeFile(t, empty, nil)
	if _, err := veritysetup(t, "format", empty, filepath.Join(dir, "hash")); err == nil {
		t.Fatal("veritysetup formatted empty data")
	}
	b, err := verity.NewBuilder(verity.DefaultParams(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := b.Finish(context.Background(), writerAt{&buf}, 0); !errors.Is(err, verity.ErrInvalidParams) {
		t.Fatalf("Finish on empty data: %v, want ErrInvalidParams", err)
	}
}

type writerAt struct{ b *bytes.Buffer }

func (w writerAt) WriteAt(p []byte, off int64) (int, error) {
	if need := int(off) + len(p); need > w.b.Len() {
		w.b.Write(make([]byte, need-w.b.Len()))
	}
	copy(w.b.Bytes()[off:], p)
	return len(p), nil
}

// TestCompatSHA1ReadOnly: trees veritysetup builds with sha1 verify here,
// building one is refused.
func TestCompatSHA1ReadOnly(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	writeFile(t, data, randomBytes(7, 300*1024))
	hash := filepath.Join(dir, "hash")
	out, err := veritysetup(t, "format", "--hash", "sha1", "--data-block-size", "1024", "--hash-block-size", "512", data, hash)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := hex.DecodeString(rootFromDump(t, out))
	hf, _ := os.Open(hash)
	defer hf.Close()
	df, _ := os.Open(data)
	defer df.Close()
	p, err := verity.ReadSuperblock(hf, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := verity.Verify(context.Background(), p, root, df, hf, nil); err != nil {
		t.Fatalf("Verify sha1: %v", err)
	}
	l, _ := p.Layout()
	if st, _ := hf.Stat(); uint64(st.Size()) != l.HashEnd {
		t.Fatalf("layout says hash device of %d bytes, veritysetup wrote %d", l.HashEnd, st.Size())
	}
	if _, err := verity.NewBuilder(p, nil); !errors.Is(err, verity.ErrUnsupported) {
		t.Fatalf("NewBuilder sha1: %v, want ErrUnsupported", err)
	}
}

// mapped is a Mapped data source over a byte slice: the same path Format
// and Verify take for a memory-mapped file.
type mapped struct{ *bytes.Reader }

func (m mapped) Bytes() []byte {
	b := make([]byte, m.Size())
	m.ReadAt(b, 0)
	return b
}

// TestMappedSource: a Mapped source (hashed in place) gives veritysetup's
// tree, including a final partial block that is zero-padded by copy.
func TestMappedSource(t *testing.T) {
	p := verity.DefaultParams()
	p.NoSuperblock = true
	p.Salt = []byte{1}
	data := randomBytes(21, 3<<20+100)
	p.DataBlocks = uint64(len(data)+4095) / 4096
	want, root := buildRef(t, p, data)
	var out bytes.Buffer
	src := mapped{bytes.NewReader(data)}
	res, err := verity.Format(context.Background(), src, p, writerAt{&out}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.RootHash, root) || !bytes.Equal(out.Bytes(), want) {
		t.Fatal("tree from a Mapped source differs from veritysetup's")
	}
	padded := make([]byte, p.DataBlocks*4096)
	copy(padded, data)
	if err := verity.Verify(context.Background(), p, root, mapped{bytes.NewReader(padded)}, bytes.NewReader(want), nil); err != nil {
		t.Fatal(err)
	}
}

// TestFormatFile: a data file of many batches, ending in a partial block,
// gives veritysetup's tree on one core as on several (more batches than
// the pipeline keeps in flight).
func TestFormatFile(t *testing.T) {
	testutil.RequireHost(t, "userspace only; the VM tier adds no kernel coverage")
	if testing.Short() {
		t.Skip("writes 21 MiB")
	}
	p := verity.DefaultParams()
	p.NoSuperblock = true
	p.Salt = []byte{7, 7}
	data := randomBytes(23, 21<<20+1000)
	p.DataBlocks = uint64(len(data)+4095) / 4096
	want, root := buildRef(t, p, data)
	path := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, workers := range []int{1, 3} {
		o := verity.Options{Concurrency: workers}
		var out bytes.Buffer
		res, err := verity.Format(context.Background(), f, p, writerAt{&out}, &o)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(res.RootHash, root) || !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("workers=%d: tree differs from veritysetup's", workers)
		}
	}
}
