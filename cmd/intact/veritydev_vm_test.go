package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/internal/vmtest/guest"
)

// TestVerityOpenCloseInVM runs `intact verity open/close` against the real
// kernel: the device reads back the data, --json reports the device and
// table, signatures by the enrolled CA's leaf open and others are refused,
// and bad input gives one line and a non-zero exit.
func TestVerityOpenCloseInVM(t *testing.T) {
	testutil.RequireVM(t)
	testutil.RequireRoot(t)
	dir := t.TempDir()
	data, hash := filepath.Join(dir, "data"), filepath.Join(dir, "hash")
	content := randFile(t, data, 1<<20+8192)
	code, out, errb := runCLI(t, "verity", "format", "-q", data, hash)
	if code != 0 {
		t.Fatalf("format: %s", errb)
	}
	root := strings.TrimSpace(out)

	code, out, errb = runCLI(t, "verity", "open", "--json", "cli-plain", data, root, "--hash-file", hash)
	if code != 0 {
		t.Fatalf("open: exit %d: %s", code, errb)
	}
	var info verityOpenInfo
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("--json: %v: %q", err, out)
	}
	if info.Signed || !strings.HasPrefix(info.Device, "/dev/dm-") || !strings.Contains(info.Table, " verity 1 ") || info.RootHash != root {
		t.Errorf("--json: %+v", info)
	}
	got, err := os.ReadFile(info.Device)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("device %s: %v (%d bytes)", info.Device, err, len(got))
	}
	// A second device of the same name is refused with one line.
	code, _, errb = runCLI(t, "verity", "open", "cli-plain", data, root, "--hash-file", hash)
	if code != 1 || !strings.Contains(errb, "already exists") || strings.Count(errb, "\n") != 1 {
		t.Errorf("duplicate name: exit %d: %q", code, errb)
	}
	if code, _, errb = runCLI(t, "verity", "close", "cli-plain"); code != 0 {
		t.Fatalf("close: %s", errb)
	}
	if _, err := os.Stat(info.Device); err == nil {
		t.Errorf("%s still exists after close", info.Device)
	}
	if code, _, errb = runCLI(t, "verity", "close", "cli-plain"); code != 1 || !strings.Contains(errb, "no device-mapper device") {
		t.Errorf("closing twice: exit %d: %q", code, errb)
	}
	if code, _, errb = runCLI(t, "verity", "open", "cli-bad", data, "xyz", "--hash-file", hash); code != 2 {
		t.Errorf("bad root hash: exit %d: %q", code, errb)
	}
	if code, _, errb = runCLI(t, "verity", "open", "cli-bad", filepath.Join(dir, "missing"), root, "--hash-file", hash); code != 1 {
		t.Errorf("missing data: exit %d: %q", code, errb)
	}

	if !guest.SecureBoot() {
		t.Skip("signature part needs the Secure Boot VM (test CA in the platform keyring)")
	}
	keys := guest.RequireTrustedKeys(t)
	for _, c := range []struct {
		name, key, cert string
		ok              bool
	}{
		{"cli-signed", keys.SignKey, keys.SignCert, true},
		{"cli-untrusted", keys.UntrustedKey, keys.UntrustedCert, false},
	} {
		sig := filepath.Join(dir, c.name+".p7s")
		if code, _, errb := runCLI(t, "verity", "sign", "--key", c.key, "--cert", c.cert, "-o", sig, root); code != 0 {
			t.Fatalf("sign: %s", errb)
		}
		code, out, errb := runCLI(t, "verity", "open", "--json", c.name, data, root, "--hash-file", hash, "--signature", sig)
		if !c.ok {
			if code != 1 || !strings.Contains(errb, "refused the root-hash signature") || strings.Count(errb, "\n") != 1 {
				t.Errorf("%s: exit %d: %q", c.name, code, errb)
			}
			continue
		}
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", c.name, code, errb)
		}
		var si verityOpenInfo
		if err := json.Unmarshal([]byte(out), &si); err != nil || !si.Signed || !strings.Contains(si.Table, "root_hash_sig_key_desc") {
			t.Errorf("%s: --json %q (%v)", c.name, out, err)
		}
		if got, err := os.ReadFile(si.Device); err != nil || !bytes.Equal(got, content) {
			t.Errorf("%s: read: %v", c.name, err)
		}
		if code, _, errb := runCLI(t, "verity", "close", c.name); code != 0 {
			t.Errorf("close %s: %s", c.name, errb)
		}
	}
}
