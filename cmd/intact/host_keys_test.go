package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHostKeysCLI(t *testing.T) {
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
