package verity_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/verity"
)

// veritysetupSuperblock returns the superblock veritysetup writes for the
// given format flags.
func veritysetupSuperblock(t testing.TB, dataSize int, args ...string) []byte {
	dir := t.TempDir()
	dp, hp := filepath.Join(dir, "data"), filepath.Join(dir, "hash")
	if err := os.WriteFile(dp, make([]byte, dataSize), 0o644); err != nil {
		t.Fatal(err)
	}
	tt, ok := t.(*testing.T)
	if !ok {
		t.Fatal("needs *testing.T")
	}
	if _, err := veritysetup(tt, append(append([]string{"format"}, args...), dp, hp)...); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(hp)
	if err != nil {
		t.Fatal(err)
	}
	return b[:verity.SuperblockSize]
}

// TestSuperblockRoundTrip: veritysetup's superblocks parse, and marshal back
// to the same 512 bytes.
func TestSuperblockRoundTrip(t *testing.T) {
	for _, args := range [][]string{
		{"--uuid", "12345678-9abc-def0-1234-56789abcdef0"},
		{"--salt", "-", "--hash", "sha512", "--format", "0", "--data-block-size", "512", "--hash-block-size", "1024"},
		{"--salt", strings.Repeat("ab", 256), "--hash", "sha1", "--data-block-size", "2048", "--hash-block-size", "512"},
	} {
		sb := veritysetupSuperblock(t, 1<<20, args...)
		p, err := verity.ParseSuperblock(sb)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		again, err := p.MarshalSuperblock()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, sb) {
			t.Fatalf("%v: marshal(parse(sb)) differs from veritysetup's superblock", args)
		}
		if p.DataBlocks*uint64(p.DataBlockSize) != 1<<20 {
			t.Fatalf("%v: %v", args, p)
		}
	}
}

// TestSuperblockRejects: corrupt or absurd superblocks fail with
// ErrBadSuperblock and a message naming the field.
func TestSuperblockRejects(t *testing.T) {
	good := veritysetupSuperblock(t, 1<<20, "--uuid", "12345678-9abc-def0-1234-56789abcdef0")
	le := binary.LittleEndian
	for _, tc := range []struct {
		name string
		mod  func(b []byte)
		want string
	}{
		{"magic", func(b []byte) { b[0] = 'V' }, "magic"},
		{"version", func(b []byte) { le.PutUint32(b[8:], 2) }, "version 2"},
		{"hash type", func(b []byte) { le.PutUint32(b[12:], 7) }, "hash type 7"},
		{"algorithm", func(b []byte) { copy(b[32:], "md5\x00") }, "md5"},
		{"algorithm no NUL", func(b []byte) { copy(b[32:64], strings.Repeat("x", 32)) }, "xxxx"},
		{"data block size", func(b []byte) { le.PutUint32(b[64:], 1000) }, "data block size 1000"},
		{"hash block size", func(b []byte) { le.PutUint32(b[68:], 1<<20) }, "hash block size 1048576"},
		{"zero blocks", func(b []byte) { le.PutUint64(b[72:], 0) }, "no data blocks"},
		{"huge blocks", func(b []byte) { le.PutUint64(b[72:], 1<<62) }, "too large"},
		{"salt size", func(b []byte) { le.PutUint16(b[80:], 257) }, "salt size 257"},
	} {
		b := bytes.Clone(good)
		tc.mod(b)
		_, err := verity.ParseSuperblock(b)
		if !errors.Is(err, verity.ErrBadSuperblock) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrBadSuperblock mentioning %q", tc.name, err, tc.want)
		}
	}
	if _, err := verity.ParseSuperblock(good[:100]); !errors.Is(err, verity.ErrBadSuperblock) {
		t.Errorf("short: %v", err)
	}
	if _, err := verity.ReadSuperblock(bytes.NewReader(good[:300]), 0); !errors.Is(err, verity.ErrTooSmall) {
		t.Errorf("short device: %v", err)
	}
	if _, err := verity.ReadSuperblock(bytes.NewReader(good), 100); !errors.Is(err, verity.ErrInvalidParams) {
		t.Errorf("misaligned offset: %v", err)
	}
}

func TestTableOptions(t *testing.T) {
	p := verity.DefaultParams()
	p.DataBlocks = 10
	root := make([]byte, 32)
	tb, err := verity.Table(p, root, "/dev/loop0", "/dev/loop1", verity.TableOptions{
		OnCorruption: verity.CorruptionIgnore, OnError: verity.ErrorRestart, IgnoreZeroBlocks: true,
		CheckAtMostOnce: true, TryVerifyInTasklet: true,
		FEC:                &verity.FEC{Device: "/dev/loop2", Roots: 2, Blocks: 12, Start: 11},
		RootHashSigKeyDesc: "cryptsetup:u-n",
	})
	if err != nil {
		t.Fatal(err)
	}
	// Field order and option order of cryptsetup's get_dm_verity_params.
	f := strings.Fields(tb.String())
	if len(f) != 13+1+5+8+2 || f[0] != "0" || f[1] != "80" || f[2] != "verity" || f[3] != "1" || f[9] != "1" || f[12] != "-" || f[13] != "15" {
		t.Fatalf("table %q", tb)
	}
	if got := strings.Join(f[14:], " "); got != "ignore_corruption restart_on_error ignore_zero_blocks check_at_most_once try_verify_in_tasklet use_fec_from_device /dev/loop2 fec_start 11 fec_blocks 12 fec_roots 2 root_hash_sig_key_desc cryptsetup:u-n" {
		t.Fatalf("options %q", got)
	}
	for _, bad := range []verity.TableOptions{
		{OnCorruption: "bogus"},
		{OnError: "bogus"},
		{RootHashSigKeyDesc: "a b"},
		{FEC: &verity.FEC{Device: "/dev/x", Roots: 30}},
	} {
		if _, err := verity.Table(p, root, "a", "b", bad); !errors.Is(err, verity.ErrInvalidParams) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	if _, err := verity.Table(p, root[:31], "a", "b", verity.TableOptions{}); !errors.Is(err, verity.ErrInvalidParams) {
		t.Errorf("short root: %v", err)
	}
	if _, err := verity.Table(p, root, "", "b", verity.TableOptions{}); !errors.Is(err, verity.ErrInvalidParams) {
		t.Errorf("empty device: %v", err)
	}
}

func TestParseStrings(t *testing.T) {
	p := verity.DefaultParams()
	if _, err := verity.ParseRootHash(p, strings.Repeat("A", 64)); err != nil {
		t.Errorf("upper-case root hash: %v", err)
	}
	for _, s := range []string{"", "zz", strings.Repeat("a", 63), strings.Repeat("a", 66)} {
		if _, err := verity.ParseRootHash(p, s); !errors.Is(err, verity.ErrInvalidParams) {
			t.Errorf("root %q: %v", s, err)
		}
	}
	u, err := verity.ParseUUID("12345678-9ABC-def0-1234-56789abcdef0")
	if err != nil || verity.FormatUUID(u) != "12345678-9abc-def0-1234-56789abcdef0" {
		t.Errorf("uuid: %v %v", u, err)
	}
	for _, s := range []string{"", "12345678-9abc-def0-1234-56789abcdef", "12345678x9abc-def0-1234-56789abcdef0", "g2345678-9abc-def0-1234-56789abcdef0"} {
		if _, err := verity.ParseUUID(s); err == nil {
			t.Errorf("uuid %q accepted", s)
		}
	}
}
