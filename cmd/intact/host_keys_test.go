package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/testutil"
)

func TestHostKeysCLI(t *testing.T) {
	testutil.RequireHost(t, "userspace only; the VM tier adds no kernel coverage")
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	if code, out, stderr := runCLI(t, "host", "keys", "create", "--dir", keys, "--json"); code != 0 || !strings.Contains(out, "owner_guid") {
		t.Fatalf("create: exit %d %s %s", code, out, stderr)
	}
	if code, _, stderr := runCLI(t, "host", "keys", "create", "--dir", keys); code != 1 || !strings.Contains(stderr, "already holds a key set") {
		t.Errorf("create over existing keys: exit %d %s", code, stderr)
	}
	exp := filepath.Join(dir, "export")
	if code, _, stderr := runCLI(t, "host", "keys", "enroll", "--dir", keys, "--export", exp); code != 0 {
		t.Fatalf("export: %s", stderr)
	}
	for _, n := range []string{"PK", "KEK", "db"} {
		for _, ext := range []string{".esl", ".auth"} {
			if _, err := os.Stat(filepath.Join(exp, n+ext)); err != nil {
				t.Error(err)
			}
		}
	}
	// A fake efivarfs in user mode: refused with one clear line.
	vars := filepath.Join(dir, "efivars")
	os.MkdirAll(vars, 0o755)
	for name, v := range map[string]byte{"SetupMode": 0, "SecureBoot": 1} {
		b := append(binary.LittleEndian.AppendUint32(nil, 6), v)
		os.WriteFile(filepath.Join(vars, name+"-8be4df61-93ca-11d2-aa0d-00e098032b8c"), b, 0o644)
	}
	code, _, stderr := runCLI(t, "host", "keys", "enroll", "--dir", keys, "--efivars", vars)
	if code != 1 || !strings.Contains(stderr, "not in setup mode") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("user mode: exit %d %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(vars, "db-d719b2cb-3d3a-4596-a3bc-dad00e67656f")); err == nil {
		t.Error("db written in user mode")
	}
	os.WriteFile(filepath.Join(vars, "SetupMode-8be4df61-93ca-11d2-aa0d-00e098032b8c"), append(binary.LittleEndian.AppendUint32(nil, 6), 1), 0o644)
	if code, _, stderr := runCLI(t, "host", "keys", "enroll", "--dir", keys, "--efivars", vars); code != 0 {
		t.Errorf("setup mode: %s", stderr)
	}
	if code, _, stderr := runCLI(t, "host", "keys", "enroll", "--dir", filepath.Join(dir, "nokeys")); code != 1 || !strings.HasPrefix(stderr, "intact: ") {
		t.Errorf("missing key set: exit %d %q", code, stderr)
	}
}

func TestHostBuildRunUsage(t *testing.T) {
	dir := t.TempDir()
	spec := filepath.Join(dir, "host.toml")
	os.WriteFile(spec, []byte("[root]\nsource = \"rootfs\"\nbogus = 1\n"), 0o644)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"host", "build"}, 2, "-o DIR is required"},
		{[]string{"host", "build", "-o", filepath.Join(dir, "out")}, 1, "root.source (--root) is required"},
		{[]string{"host", "build", spec, "-o", filepath.Join(dir, "out")}, 1, "unknown key"},
		{[]string{"host", "build", filepath.Join(dir, "missing.toml"), "-o", filepath.Join(dir, "out")}, 1, "no such file"},
		{[]string{"host", "build", "--root", dir, "--var", "disk", "-o", filepath.Join(dir, "out")}, 1, "var.mode"},
		{[]string{"host", "build", "--root", dir, "--file", "nocolon", "-o", filepath.Join(dir, "out")}, 2, "SRC:DST"},
		{[]string{"host", "build", "--root", dir, "--drop-capability", "mac_admin", "--keep-capabilities", "-o", filepath.Join(dir, "out")}, 2, "exclude each other"},
		{[]string{"host", "build", "--root", dir, "--drop-capability", "sys_nonsense", "-o", filepath.Join(dir, "out")}, 1, "boot.drop_capabilities: \"sys_nonsense\""},
		{[]string{"host", "run", filepath.Join(dir, "disk.img")}, 2, "--keys"},
		{[]string{"host", "run", filepath.Join(dir, "disk.img"), "--setup-mode"}, 1, "no such file"},
	} {
		code, _, stderr := runCLI(t, c.args...)
		if code != c.code || !strings.Contains(stderr, c.want) || !strings.HasPrefix(stderr, "intact: ") {
			t.Errorf("%v: exit %d, stderr %q (want %d, %q)", c.args, code, stderr, c.code, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "out", "disk.img")); err == nil {
		t.Error("a failed build left disk.img")
	}
}
