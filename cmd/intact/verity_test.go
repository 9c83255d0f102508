package main

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/intact-project/intact/internal/testutil"
)

func veritysetupCLI(t *testing.T, args ...string) string {
	t.Helper()
	bin := testutil.RequireTool(t, "veritysetup")
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("veritysetup %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func randFile(t *testing.T, path string, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// dropFirstLine removes the "VERITY header information for PATH" line.
func dropFirstLine(s string) string {
	_, rest, _ := strings.Cut(s, "\n")
	return rest
}

// TestVerityFormatLikeVeritysetup: same flags give the same output lines
// and the same hash file as veritysetup format.
func TestVerityFormatLikeVeritysetup(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	randFile(t, data, 3<<20)
	for _, flags := range [][]string{
		{"--salt", "0011223344", "--uuid", "0b6a8ab8-0c2b-4e4a-9e2a-6e1d2a3b4c5d"},
		{"--salt", "-", "--no-superblock", "--hash", "sha512", "--data-block-size", "512", "--hash-block-size", "1024"},
		{"--salt", "ab", "--format", "0", "--hash-offset", "8192", "--uuid", "0b6a8ab8-0c2b-4e4a-9e2a-6e1d2a3b4c5d"},
	} {
		ours, theirs := filepath.Join(dir, "ours"), filepath.Join(dir, "theirs")
		os.Remove(ours)
		os.Remove(theirs)
		code, out, errb := runCLI(t, append([]string{"verity", "format", data, ours}, flags...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", flags, code, errb)
		}
		ref := veritysetupCLI(t, append([]string{"format", data, theirs}, flags...)...)
		if dropFirstLine(out) != dropFirstLine(ref) {
			t.Fatalf("%v: output differs:\n%s\nveritysetup:\n%s", flags, out, ref)
		}
		a, _ := os.ReadFile(ours)
		b, _ := os.ReadFile(theirs)
		if !bytes.Equal(a, b) {
			t.Fatalf("%v: hash files differ", flags)
		}
	}
}

// TestVerityFormatAppendedJSON: without HASH the tree goes to the 4 KiB-
// aligned end of DATA (zero-padding a partial block); the JSON has the
// documented keys; verify (ours and veritysetup's) accepts the result.
func TestVerityFormatAppendedJSON(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "image")
	orig := randFile(t, data, 10000)
	code, out, errb := runCLI(t, "verity", "format", data, "--json", "--no-superblock", "--salt", "-", "--data-block-size", "512", "--hash-block-size", "512")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, k := range []string{"root_hash", "hash_algorithm", "hash_type", "data_block_size", "hash_block_size", "data_blocks", "hash_offset", "hash_start_block", "salt", "uuid", "superblock"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, out)
		}
	}
	if m["hash_offset"].(float64) != 12288 || m["data_blocks"].(float64) != 20 || m["hash_start_block"].(float64) != 24 || m["superblock"] != false || m["salt"] != "" {
		t.Fatalf("unexpected layout: %s", out)
	}
	got, _ := os.ReadFile(data)
	if !bytes.Equal(got[:len(orig)], orig) || !bytes.Equal(got[len(orig):12288], make([]byte, 12288-len(orig))) {
		t.Fatal("data changed or padding not zero")
	}
	root := m["root_hash"].(string)
	veritysetupCLI(t, "verify", "--no-superblock", "--salt", "-", "--data-block-size", "512", "--hash-block-size", "512", "--data-blocks", "20", "--hash-offset", "12288", data, data, root)
	code, _, errb = runCLI(t, "verity", "verify", data, root, "--no-superblock", "--salt", "-", "--data-block-size", "512", "--hash-block-size", "512", "--data-blocks", "20", "--hash-offset", "12288")
	if code != 0 {
		t.Fatalf("verify: exit %d: %s", code, errb)
	}
}

// TestVerityVerifyNamesBlock: a flipped bit fails verify with exit 1 and a
// line naming the block; veritysetup's own tree verifies with our verify.
func TestVerityVerifyNamesBlock(t *testing.T) {
	dir := t.TempDir()
	data, hash := filepath.Join(dir, "data"), filepath.Join(dir, "hash")
	randFile(t, data, 1<<20)
	root := strings.TrimSpace(veritysetupRoot(t, veritysetupCLI(t, "format", data, hash)))
	if code, out, errb := runCLI(t, "verity", "verify", data, hash, root); code != 0 || !strings.Contains(out, "Verified 256 data blocks") {
		t.Fatalf("exit %d: %s %s", code, out, errb)
	}
	f, _ := os.OpenFile(data, os.O_RDWR, 0)
	f.WriteAt([]byte{0xff}, 77*4096+5)
	f.Close()
	code, _, errb := runCLI(t, "verity", "verify", data, hash, root)
	if code != 1 || !strings.Contains(errb, "data block 77 ") || strings.Count(errb, "\n") != 1 {
		t.Fatalf("exit %d, stderr %q", code, errb)
	}
}

func veritysetupRoot(t *testing.T, out string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "Root hash:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "Root hash:"))
		}
	}
	t.Fatalf("no root hash in %s", out)
	return ""
}

// TestVerityBadInput: every bad input gives one line on stderr, a non-zero
// exit and no output file.
func TestVerityBadInput(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	randFile(t, data, 64<<10)
	odd := filepath.Join(dir, "odd")
	randFile(t, odd, 5000)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o644)
	noise := filepath.Join(dir, "noise")
	randFile(t, noise, 4096)
	// A superblock with absurd sizes: valid magic, data block size 1 MiB.
	absurd := filepath.Join(dir, "absurd")
	sb := make([]byte, 4096)
	copy(sb, "verity\x00\x00")
	binary.LittleEndian.PutUint32(sb[8:], 1)
	binary.LittleEndian.PutUint32(sb[12:], 1)
	copy(sb[32:], "sha256")
	binary.LittleEndian.PutUint32(sb[64:], 1<<20)
	binary.LittleEndian.PutUint32(sb[68:], 4096)
	binary.LittleEndian.PutUint64(sb[72:], 1<<62)
	os.WriteFile(absurd, sb, 0o644)
	// A wrong-size hash device: a good tree cut short.
	short := filepath.Join(dir, "short")
	if code, _, errb := runCLI(t, "verity", "format", data, short, "--salt", "-"); code != 0 {
		t.Fatal(errb)
	}
	st, _ := os.Stat(short)
	os.Truncate(short, st.Size()-4096)
	out := filepath.Join(dir, "out")
	zero64 := strings.Repeat("0", 64)

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing data", []string{"format", filepath.Join(dir, "nope"), out}, "no such file"},
		{"bad salt hex", []string{"format", data, out, "--salt", "xyz"}, "--salt"},
		{"long salt", []string{"format", data, out, "--salt", strings.Repeat("00", 257)}, "at most 256"},
		{"bad block size", []string{"format", data, out, "--data-block-size", "1000"}, "power of two"},
		{"big block size", []string{"format", data, out, "--hash-block-size", "8192"}, "8192"},
		{"unknown hash", []string{"format", data, out, "--hash", "md5"}, "md5"},
		{"sha1 build", []string{"format", data, out, "--hash", "sha1"}, "sha1"},
		{"format 2", []string{"format", data, out, "--format", "2"}, "hash type 2"},
		{"bad uuid", []string{"format", data, out, "--uuid", "nope"}, "UUID"},
		{"misaligned offset", []string{"format", data, out, "--hash-offset", "100"}, "512"},
		{"empty data", []string{"format", empty, out}, "empty"},
		{"odd data separate", []string{"format", odd, out}, "not a multiple"},
		{"too many blocks", []string{"format", data, out, "--data-blocks", "100"}, "--data-blocks 100"},
		{"overlap", []string{"format", data, "--hash-offset", "4096"}, "overlaps"},
		{"bad root hex", []string{"verify", data, short, "zz"}, "ROOT_HASH"},
		{"short root", []string{"verify", data, short, "abcd"}, "64"},
		{"wrong-size hash device", []string{"verify", data, short, zero64}, "too small"},
		{"bad magic", []string{"dump", noise}, "magic"},
		{"absurd sizes", []string{"dump", absurd}, "data block size"},
		{"dump missing", []string{"dump", filepath.Join(dir, "nope")}, "no such file"},
		{"dump short", []string{"dump", empty}, "too small"},
		{"tree inside data needs offset", []string{"verify", data, zero64}, "--hash-offset"},
		{"contradicting flag", []string{"verify", data, short, zero64, "--hash", "sha512"}, "contradicts"},
		{"table two modes", []string{"table", data, short, zero64, "--ignore-corruption", "--panic-on-corruption"}, "choose one"},
		{"table bad key desc", []string{"table", data, short, zero64, "--root-hash-sig-key-desc", "a b"}, "white space"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errb := runCLI(t, append([]string{"verity"}, tc.args...)...)
			if code == 0 {
				t.Fatalf("exit 0")
			}
			first, _, _ := strings.Cut(errb, "\n")
			if !strings.HasPrefix(first, "intact: ") || !strings.Contains(first, tc.want) || strings.Contains(errb, "goroutine ") {
				t.Fatalf("stderr %q, want one line containing %q", errb, tc.want)
			}
			if _, err := os.Stat(out); err == nil {
				t.Fatal("output file left behind")
			}
			if leftovers, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(leftovers) > 0 {
				t.Fatalf("temporary files left: %v", leftovers)
			}
		})
	}
	if got, _ := os.ReadFile(data); len(got) != 64<<10 {
		t.Fatal("data changed by a failed format")
	}
}

// TestVerityFormatRestoresOnFailureAsRoot: a format that fails after it
// started writing into an existing file leaves the file as it was, both
// when the tree is appended to DATA and when it overwrites the middle of an
// existing HASH file. The failure is real and comes in the middle of the
// writes: the files sit on a tmpfs too small for the tree (ENOSPC).
func TestVerityFormatRestoresOnFailureAsRoot(t *testing.T) {
	testutil.RequireRoot(t)
	mount := testutil.RequireTool(t, "mount")
	for _, c := range []struct {
		name string
		args func(data, hash string) []string
	}{
		{"appended", func(data, hash string) []string { return []string{"verity", "format", data} }},
		{"hash-in-place", func(data, hash string) []string {
			return []string{"verity", "format", data, "--data-blocks", "2048", "--data-block-size", "512", "--hash-block-size", "512", hash, "--hash-offset", "8192"}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if out, err := exec.Command(mount, "-t", "tmpfs", "-o", "size=2m", "tmpfs", dir).CombinedOutput(); err != nil {
				t.Fatalf("mount tmpfs: %v %s", err, out)
			}
			t.Cleanup(func() { exec.Command("umount", dir).Run() })
			data := filepath.Join(dir, "data")
			hash := filepath.Join(dir, "hash")
			var orig, origHash []byte
			// The tmpfs has 512 pages.
			if c.name == "appended" {
				// 510 pages of data leave 2: its tree with superblock
				// needs 6.
				orig = randFile(t, data, 510*4096)
			} else {
				// 486 pages of data and a HASH of 12 leave 14: the backup
				// of HASH's bytes past the offset takes 10, the tree of
				// 2048 512-byte blocks runs 8 pages past HASH's end.
				orig = randFile(t, data, 486*4096)
				origHash = randFile(t, hash, 12*4096)
			}
			code, _, stderr := runCLI(t, c.args(data, hash)...)
			if code != 1 || !strings.Contains(stderr, "no space left") {
				t.Fatalf("exit %d, stderr %q; want the format to fail with ENOSPC", code, stderr)
			}
			if got, _ := os.ReadFile(data); !bytes.Equal(got, orig) {
				t.Errorf("DATA not restored (%d bytes, was %d)", len(got), len(orig))
			}
			if origHash != nil {
				if got, _ := os.ReadFile(hash); !bytes.Equal(got, origHash) {
					t.Errorf("HASH not restored (%d bytes, was %d)", len(got), len(origHash))
				}
			}
			if ents, _ := os.ReadDir(dir); len(ents) != map[bool]int{true: 1, false: 2}[origHash == nil] {
				t.Errorf("left behind: %v", ents)
			}
		})
	}
}

// TestVerityFormatKilledInPlaceIsRecoverable: kill -9 while format writes
// into an existing HASH file leaves the overwritten bytes in a named
// backup next to it, so the file can be restored. The old code unlinked the
// backup as soon as it had made it.
func TestVerityFormatKilledInPlaceIsRecoverable(t *testing.T) {
	testutil.RequireHost(t, "userspace only; the VM tier adds no kernel coverage")
	dir := t.TempDir()
	data, hash := filepath.Join(dir, "data"), filepath.Join(dir, "hash")
	// 512 MiB of zeros (sparse) in 512-byte blocks with sha512: 64 MiB of
	// level-0 digests, which go to HASH while the data is hashed.
	f, err := os.Create(data)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(512 << 20)
	f.Close()
	const off = 8192
	origHash := randFile(t, hash, off+72<<20)
	cmd := intactProcess(t, "verity", "format", data, hash, "--hash-offset", strconv.Itoa(off),
		"--hash", "sha512", "--data-block-size", "512", "--hash-block-size", "512")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it as soon as HASH's old bytes start to change.
	hf, err := os.Open(hash)
	if err != nil {
		t.Fatal(err)
	}
	defer hf.Close()
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	buf := make([]byte, 64<<10)
	changed := false
	for deadline := time.Now().Add(2 * time.Minute); !changed && time.Now().Before(deadline); {
		select {
		case <-exited:
			t.Skip("format finished before a change was seen; nothing to recover")
		default:
		}
		for pos := int64(off); pos < int64(len(origHash)); pos += 8 << 20 {
			n, _ := hf.ReadAt(buf, pos)
			if !bytes.Equal(buf[:n], origHash[pos:pos+int64(n)]) {
				changed = true
				break
			}
		}
	}
	cmd.Process.Kill()
	<-exited
	if !changed {
		t.Fatal("HASH never changed")
	}
	got, _ := os.ReadFile(hash)
	if bytes.Equal(got, origHash) {
		return
	}
	backups, _ := filepath.Glob(filepath.Join(dir, ".hash.intact-backup-at-"+strconv.Itoa(off)+"-*"))
	if len(backups) != 1 {
		t.Fatalf("HASH changed and %d backups found in %s", len(backups), dir)
	}
	b, _ := os.ReadFile(backups[0])
	restored := append(got[:off:off], b...)
	if len(restored) < len(origHash) {
		restored = append(restored, got[len(restored):]...)
	}
	if !bytes.Equal(restored[:len(origHash)], origHash) {
		t.Fatal("the backup does not hold the overwritten bytes")
	}
}

// TestVerityTableAndDump: table reads the superblock, prints veritysetup's
// field order with options; dump prints veritysetup dump's lines.
func TestVerityTableAndDump(t *testing.T) {
	dir := t.TempDir()
	data, hash := filepath.Join(dir, "data"), filepath.Join(dir, "hash")
	randFile(t, data, 1<<20)
	ref := veritysetupCLI(t, "format", "--salt", "-", "--data-block-size", "512", "--hash-block-size", "512", data, hash)
	root := veritysetupRoot(t, ref)
	code, out, errb := runCLI(t, "verity", "table", data, hash, root, "--data-device", "7:0", "--hash-device", "7:1",
		"--restart-on-corruption", "--panic-on-error", "--ignore-zero-blocks", "--root-hash-sig-key-desc", "cryptsetup:x-y")
	if code != 0 {
		t.Fatal(errb)
	}
	want := "0 2048 verity 1 7:0 7:1 512 512 2048 1 sha256 " + root + " - 5 restart_on_corruption panic_on_error ignore_zero_blocks root_hash_sig_key_desc cryptsetup:x-y\n"
	if out != want {
		t.Fatalf("table\n%q\nwant\n%q", out, want)
	}
	code, out, _ = runCLI(t, "verity", "dump", hash)
	vs := veritysetupCLI(t, "dump", hash)
	if code != 0 || dropFirstLine(out) != dropFirstLine(vs) {
		t.Fatalf("dump:\n%s\nveritysetup:\n%s", out, vs)
	}
}

// TestDirectoryIsNotData: a directory as DATA (or as a layer image) is
// refused as a directory; it used to be sized as 2^63-1 bytes.
func TestDirectoryIsNotData(t *testing.T) {
	dir := t.TempDir()
	hash := filepath.Join(t.TempDir(), "hash")
	randFile(t, hash, 8192)
	root := strings.Repeat("ab", 32)
	for _, args := range [][]string{
		{"verity", "format", dir},
		{"verity", "format", dir, hash},
		{"verity", "verify", dir, hash, root, "--no-superblock"},
		{"verity", "table", dir, hash, root, "--no-superblock"},
		{"layer", "verify", dir, root},
		{"layer", "inspect", dir},
	} {
		code, _, stderr := runCLI(t, args...)
		if code != 1 || !strings.Contains(stderr, "is a directory") || strings.Contains(stderr, "922337203685477") {
			t.Errorf("%v: exit %d, stderr %q; want exit 1 naming the directory", args[:2], code, stderr)
		}
	}
}
