package fsverity

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var updateSeeds = flag.Bool("update-seeds", false, "regenerate testdata/fuzz seeds with fsverity digest --out-descriptor")

// FuzzParseDescriptor: ParseDescriptor must never panic, and what it accepts
// must re-encode to the same bytes. Seeds are descriptors written by
// `fsverity digest --out-descriptor`.
func FuzzParseDescriptor(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseDescriptor(b)
		if err != nil {
			return
		}
		again, err := d.MarshalBinary()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("round trip: %v\n in %x\nout %x", err, b, again)
		}
		if _, err := d.Digest(); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzParseDigest: ParseDigest must never panic and must round-trip.
func FuzzParseDigest(f *testing.F) {
	f.Add("sha256:893cb3b821a471f9e6b39addf5645c21cbf65365d8f4a704ed4f31be82f31bb4")
	f.Add("sha512:" + string(bytes.Repeat([]byte("0a"), 64)))
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDigest(s)
		if err != nil {
			return
		}
		back, err := ParseDigest(d.String())
		if err != nil || back.String() != d.String() {
			t.Fatalf("round trip of %q: %v", s, err)
		}
	})
}

func TestUpdateFuzzSeeds(t *testing.T) {
	if !*updateSeeds {
		t.Skip("run with -update-seeds to regenerate testdata/fuzz")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzParseDescriptor")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	for i, args := range [][]string{
		{"--hash-alg=sha256"},
		{"--hash-alg=sha512", "--block-size=1024", "--salt=00112233"},
		{"--block-size=65536", "--salt=" + string(bytes.Repeat([]byte("ff"), 32))},
	} {
		file := testFile(t, tmp, 1000*i*i, uint64(i))
		out := filepath.Join(tmp, "desc")
		fsverityTool(t, append(append([]string{"digest", "--out-descriptor=" + out}, args...), file)...)
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("fsverity-digest-%d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
