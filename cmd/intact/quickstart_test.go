package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/testutil"
)

func runQuickstartJSON(t *testing.T, extra ...string) quickstartReport {
	t.Helper()
	needRegistryCommand(t)
	dir := t.TempDir()
	code, out, stderr := runCLI(t, append([]string{"quickstart", "--dir", dir, "--json"}, extra...)...)
	if code != 0 {
		t.Fatalf("quickstart: exit %d\n%s\n%s", code, out, stderr)
	}
	var rep quickstartReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("quickstart --json: %v\n%s", err, out)
	}
	want := []string{"keys", "registry", "sample image", "sign", "verify", "tampered layer", "forged signature", "mount"}
	if len(rep.Steps) != len(want) {
		t.Fatalf("steps %+v", rep.Steps)
	}
	for i, s := range rep.Steps {
		if s.Step != want[i] || !s.OK {
			t.Errorf("step %d: %+v", i, s)
		}
	}
	if !strings.Contains(rep.Steps[5].Detail, "refused") || !strings.Contains(rep.Steps[6].Detail, "not trusted") {
		t.Errorf("tamper steps: %+v", rep.Steps[5:7])
	}
	for _, p := range []string{"keys/root.pem", "keys/key.pem", "registry"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("%s not kept: %v", p, err)
		}
	}
	if len(rep.Next) == 0 {
		t.Error("no next commands")
	}
	return rep
}

// TestQuickstart runs the README's main command in process, without the
// mount step.
func TestQuickstart(t *testing.T) {
	testutil.RequireHost(t, "userspace only; the VM tier adds no kernel coverage")
	rep := runQuickstartJSON(t, "--no-mount")
	if rep.Steps[7].Detail != "skipped (--no-mount)" {
		t.Errorf("mount step %+v", rep.Steps[7])
	}
}

// TestQuickstartMountAsRoot runs it with the mount step, which needs root
// and a kernel with EROFS (this machine kind has both).
func TestQuickstartMountAsRoot(t *testing.T) {
	testutil.RequireRoot(t)
	rep := runQuickstartJSON(t)
	if !strings.Contains(rep.Steps[7].Detail, "mounted read-only") {
		t.Fatalf("mount step %+v", rep.Steps[7])
	}
}
