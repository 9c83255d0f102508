package loop

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/internal/testutil"
)

// losetupEntry is one device of `losetup --json --list`, the reference view.
type losetupEntry struct {
	Name      string `json:"name"`
	BackFile  string `json:"back-file"`
	Offset    uint64 `json:"offset"`
	SizeLimit uint64 `json:"sizelimit"`
	RO        bool   `json:"ro"`
	AutoClear bool   `json:"autoclear"`
	DIO       bool   `json:"dio"`
}

func losetup(t *testing.T, dev string) *losetupEntry {
	t.Helper()
	out, err := exec.Command(testutil.RequireTool(t, "losetup"), "--json", "--list", "-O", "NAME,BACK-FILE,OFFSET,SIZELIMIT,RO,AUTOCLEAR,DIO", dev).Output()
	if err != nil {
		return nil
	}
	var v struct {
		Loopdevices []losetupEntry `json:"loopdevices"`
	}
	if err := json.Unmarshal(out, &v); err != nil || len(v.Loopdevices) != 1 {
		t.Fatalf("losetup --json: %v %s", err, out)
	}
	if v.Loopdevices[0].BackFile == "" {
		return nil // listed but detached
	}
	return &v.Loopdevices[0]
}

// TestRootAttach attaches files as root (the development kernel has loop;
// the VM tier runs it too) and checks the result against losetup and by
// reading the device.
func TestRootAttach(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := os.Stat(ControlPath); err != nil {
		testutil.Unavailable(t, "no "+ControlPath+": loop driver missing")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "backing")
	content := make([]byte, 1<<20)
	for i := range content {
		content[i] = byte(i * 7)
	}
	if err := os.WriteFile(file, content, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	d, err := Attach(ctx, file, Options{ReadOnly: true, Offset: 4096, SizeLimit: 65536, DirectIO: true})
	if err != nil {
		t.Fatal(err)
	}
	ref := losetup(t, d.Path)
	if ref == nil || ref.BackFile != file || ref.Offset != 4096 || ref.SizeLimit != 65536 || !ref.RO || ref.AutoClear || ref.DIO != d.DirectIO {
		t.Errorf("losetup sees %+v (DirectIO %v)", ref, d.DirectIO)
	}
	info, err := d.Info()
	if err != nil || info.BackingFile != file || info.Offset != 4096 || !info.ReadOnly {
		t.Errorf("Info: %+v %v", info, err)
	}
	got, err := os.ReadFile(d.Path)
	if err != nil || !bytes.Equal(got, content[4096:4096+65536]) {
		t.Errorf("read back: %v, %d bytes", err, len(got))
	}
	if f, err := os.OpenFile(d.Path, os.O_WRONLY, 0); err == nil {
		_, werr := f.Write([]byte("x"))
		f.Close()
		if werr == nil {
			t.Error("wrote to a read-only loop device")
		}
	}
	if err := d.Detach(); err != nil {
		t.Fatal(err)
	}
	if err := d.Detach(); !errors.Is(err, ErrDetached) {
		t.Errorf("second detach: %v", err)
	}
	waitGone(t, d.Path)

	// Autoclear: closing the only opener detaches it.
	d, err = Attach(ctx, file, Options{ReadOnly: true, Autoclear: true})
	if err != nil {
		t.Fatal(err)
	}
	if ref := losetup(t, d.Path); ref == nil || !ref.AutoClear {
		t.Errorf("autoclear not set: %+v", ref)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, d.Path)

	if _, err := Attach(ctx, filepath.Join(dir, "missing"), Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing backing file: %v", err)
	}
}

// waitGone waits until the loop device has no backing file any more.
func waitGone(t *testing.T, dev string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if losetup(t, dev) == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("%s still attached", dev)
}

func TestOptionsEncoding(t *testing.T) {
	// The flag values are the kernel's (include/uapi/linux/loop.h).
	if linux.LO_FLAGS_READ_ONLY != 1 || linux.LO_FLAGS_AUTOCLEAR != 4 || linux.LO_FLAGS_DIRECT_IO != 16 {
		t.Fatal("loop flag values differ from loop.h")
	}
}
