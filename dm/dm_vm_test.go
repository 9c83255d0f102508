package dm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/loop"
)

// TestLifecycleInVM drives a linear and a zero target through create, load,
// resume, suspend, info, table, status, list and remove, and compares what
// the kernel reports with dmsetup.
func TestLifecycleInVM(t *testing.T) {
	testutil.RequireVM(t)
	testutil.RequireRoot(t)
	dmsetup := testutil.RequireTool(t, "dmsetup")
	ctx := context.Background()
	ctl, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	v, err := ctl.Version()
	if err != nil || v[0] != 4 {
		t.Fatalf("version %v %v", v, err)
	}
	file := filepath.Join(t.TempDir(), "backing")
	content := bytes.Repeat([]byte("intact-dm-test!\n"), 64<<10) // 1 MiB
	if err := os.WriteFile(file, content, 0o644); err != nil {
		t.Fatal(err)
	}
	ld, err := loop.Attach(ctx, file, loop.Options{ReadOnly: true, Autoclear: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ld.Close()

	info, err := ctl.Create("intact-dm-test", "INTACT-TEST-1")
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Remove(ctx, "intact-dm-test")
	if _, err := ctl.Create("intact-dm-test", ""); !errors.Is(err, ErrExists) {
		t.Errorf("second create: %v, want ErrExists", err)
	}
	if info.ActivePresent {
		t.Errorf("fresh device has a live table: %+v", info)
	}
	targets := []Target{
		{Start: 0, Length: 1024, Type: "linear", Params: ld.DevNum() + " 1024"},
		{Start: 1024, Length: 8, Type: "error", Params: ""}, // built into dm-mod
	}
	if _, err := ctl.Load("intact-dm-test", []Target{{0, 8, "no-such-target", ""}}, LoadOptions{ReadOnly: true}); err == nil {
		t.Error("unknown target type loaded")
	}
	if info, err = ctl.Load("intact-dm-test", targets, LoadOptions{ReadOnly: true}); err != nil || !info.InactivePresent {
		t.Fatalf("load: %+v %v", info, err)
	}
	if info, err = ctl.Resume("intact-dm-test"); err != nil || !info.ActivePresent || !info.ReadOnly {
		t.Fatalf("resume: %+v %v", info, err)
	}
	dev, err := os.Open(info.DevPath())
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 512<<10)
	if _, err := dev.ReadAt(got, 0); err != nil || !bytes.Equal(got, content[512<<10:]) {
		t.Fatalf("reading the linear part of %s: %v", info.DevPath(), err)
	}
	if _, err := dev.ReadAt(got[:4096], 512<<10); err == nil {
		t.Error("reading the error target succeeded")
	}
	dev.Close()
	tbl, err := ctl.Table("intact-dm-test")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, tg := range tbl {
		lines = append(lines, tg.String())
	}
	out, err := exec.Command(dmsetup, "table", "intact-dm-test").Output()
	if err != nil {
		t.Fatal(err)
	}
	// dmsetup prints a target without parameters with a trailing space.
	want := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	for i := range want {
		want[i] = strings.TrimRight(want[i], " ")
	}
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " ")
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("table:\n%s\ndmsetup:\n%s", strings.Join(lines, "\n"), out)
	}
	st, err := ctl.Status("intact-dm-test")
	if err != nil || len(st) != 2 || st[0].Type != "linear" || st[1].Type != "error" {
		t.Errorf("status: %+v %v", st, err)
	}
	devs, err := ctl.List()
	found := false
	for _, d := range devs {
		found = found || d.Name == "intact-dm-test" && d.Minor == info.Minor
	}
	if err != nil || !found {
		t.Errorf("list: %+v %v", devs, err)
	}
	if err := ctl.Suspend("intact-dm-test"); err != nil {
		t.Fatal(err)
	}
	if info, err = ctl.Info("intact-dm-test"); err != nil || !info.Suspended {
		t.Errorf("after suspend: %+v %v", info, err)
	}
	if _, err = ctl.Resume("intact-dm-test"); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(info.DevPath())
	if err != nil {
		t.Fatal(err)
	}
	if err := ctl.Remove(ctx, "intact-dm-test"); !errors.Is(err, ErrBusy) {
		t.Errorf("removing an open device: %v, want ErrBusy", err)
	}
	f.Close()
	if err := ctl.Remove(ctx, "intact-dm-test"); err != nil {
		t.Fatal(err)
	}
	if _, err := ctl.Info("intact-dm-test"); !errors.Is(err, ErrNotFound) {
		t.Errorf("info after remove: %v, want ErrNotFound", err)
	}
}
