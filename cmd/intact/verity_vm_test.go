package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/testutil"
)

// TestVerityTableMatchesVeritysetupOpenInVM runs in the VM tier (real
// kernel with device-mapper): a tree built by `intact verity format` opens
// with `veritysetup open`, the whole device reads back the data, and the
// table the kernel holds (`dmsetup table`) equals `intact verity table` for
// the same loop devices, with and without optional arguments. A flipped bit
// makes the kernel fail the read of that block, and intact verity verify
// names the same block.
func TestVerityTableMatchesVeritysetupOpenInVM(t *testing.T) {
	testutil.RequireVM(t)
	testutil.RequireRoot(t)
	vs := testutil.RequireTool(t, "veritysetup")
	dmsetup := testutil.RequireTool(t, "dmsetup")
	dir := t.TempDir()
	data, hash := filepath.Join(dir, "data"), filepath.Join(dir, "hash")
	content := randFile(t, data, 3<<20)

	for i, tc := range []struct {
		format []string // intact verity format flags
		open   []string // veritysetup open flags
		table  []string // intact verity table flags (besides devices)
	}{
		{format: []string{"--salt", "-", "--data-block-size", "512", "--hash-block-size", "512"}},
		{
			format: []string{"--salt", "00112233"},
			open:   []string{"--ignore-zero-blocks", "--restart-on-corruption", "--check-at-most-once"},
			table:  []string{"--ignore-zero-blocks", "--restart-on-corruption", "--check-at-most-once"},
		},
	} {
		os.Remove(hash)
		code, out, errb := runCLI(t, append([]string{"verity", "format", "-q", data, hash}, tc.format...)...)
		if code != 0 {
			t.Fatalf("format: %s", errb)
		}
		root := strings.TrimSpace(out)
		name := "intact-table-test-" + string(rune('a'+i))
		if b, err := exec.Command(vs, append(append([]string{"open"}, tc.open...), data, name, hash, root)...).CombinedOutput(); err != nil {
			t.Fatalf("veritysetup open our tree: %v\n%s", err, b)
		}
		defer exec.Command(vs, "close", name).Run()
		got, err := os.ReadFile("/dev/mapper/" + name)
		if err != nil || !bytes.Equal(got, content) {
			t.Fatalf("reading the verity device: %v (%d bytes)", err, len(got))
		}
		kernel, err := exec.Command(dmsetup, "table", name).Output()
		if err != nil {
			t.Fatalf("dmsetup table: %v", err)
		}
		// The devices in the kernel's table are major:minor of the loop
		// devices veritysetup attached; use the same ones.
		f := strings.Fields(string(kernel))
		if len(f) < 6 {
			t.Fatalf("dmsetup table: %q", kernel)
		}
		args := append([]string{"verity", "table", data, hash, root, "--data-device", f[4], "--hash-device", f[5]}, tc.table...)
		code, ours, errb := runCLI(t, args...)
		if code != 0 {
			t.Fatalf("intact verity table: %s", errb)
		}
		if strings.TrimSpace(ours) != strings.TrimSpace(string(kernel)) {
			t.Fatalf("table differs:\n intact: %s\n kernel: %s", ours, kernel)
		}
		exec.Command(vs, "close", name).Run()
	}

	// The kernel refuses a flipped bit in data block 77 of our tree, and
	// intact verity verify names that block.
	os.Remove(hash)
	code, out, errb := runCLI(t, "verity", "format", "-q", data, hash)
	if code != 0 {
		t.Fatalf("format: %s", errb)
	}
	root := strings.TrimSpace(out)
	f, err := os.OpenFile(data, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{content[77*4096+9] ^ 0x10}, 77*4096+9)
	f.Close()
	name := "intact-table-test-corrupt"
	if b, err := exec.Command(vs, "open", data, name, hash, root).CombinedOutput(); err != nil {
		t.Fatalf("veritysetup open: %v\n%s", err, b)
	}
	defer exec.Command(vs, "close", name).Run()
	dev, err := os.Open("/dev/mapper/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	buf := make([]byte, 4096)
	if _, err := dev.ReadAt(buf, 76*4096); err != nil {
		t.Fatalf("block 76 (intact): %v", err)
	}
	if _, err := dev.ReadAt(buf, 77*4096); err == nil {
		t.Fatal("the kernel returned a corrupted block 77")
	}
	code, _, errb = runCLI(t, "verity", "verify", data, hash, root)
	if code != 1 || !strings.Contains(errb, "data block 77 ") {
		t.Fatalf("intact verity verify: exit %d, %s", code, errb)
	}
}
