package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/testpki"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/ipe"
	"github.com/intact-project/intact/kmod"
	"github.com/intact-project/intact/kmod/kmodtest"
)

func TestModuleSignVerifyInspect(t *testing.T) {
	testutil.RequireHost(t, "userspace only; the VM tier adds no kernel coverage")
	dir := t.TempDir()
	vendor := testpki.MustNew(t, testpki.Options{Key: testpki.RSA2048, Name: "cli vendor"})
	vf := vendor.MustWriteDir(t, filepath.Join(dir, "vendor"))
	rogue := testpki.MustNew(t, testpki.Options{Key: testpki.RSA2048, Name: "cli rogue"})
	rf := rogue.MustWriteDir(t, filepath.Join(dir, "rogue"))
	mod := filepath.Join(dir, "gpu.ko.xz")
	xz, err := kmod.Compress(kmodtest.Module("gpu", "3.0"), kmod.XZ)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(mod, xz, 0o644)

	// Unsigned: verify refuses with the kernel's words.
	code, out, _ := runCLI(t, "module", "verify", "--ca", vf.RootPEM, mod)
	if code != 1 || !strings.Contains(out, "EKEYREJECTED: unsigned module") {
		t.Errorf("verify unsigned: %d %q", code, out)
	}
	signed := filepath.Join(dir, "signed.ko.xz")
	if code, _, errs := runCLI(t, "module", "sign", "--key", vf.KeyPEM, "--cert", vf.CertPEM, "-o", signed, mod); code != 0 {
		t.Fatalf("sign: %d %s", code, errs)
	}
	if data, _ := os.ReadFile(signed); kmod.CompressionOf(data) != kmod.XZ {
		t.Error("the signed module is not xz any more")
	}
	if code, out, _ := runCLI(t, "module", "verify", "--ca", vf.RootPEM, signed); code != 0 || !strings.Contains(out, "loads") {
		t.Errorf("verify signed: %d %q", code, out)
	}
	code, out, _ = runCLI(t, "--json", "module", "verify", "--ca", rf.RootPEM, signed)
	var res []moduleVerifyJSON
	if code != 1 || json.Unmarshal([]byte(out), &res) != nil || len(res) != 1 || res[0].Errno != "EKEYREJECTED" || res[0].Reason != "module with unavailable key" || res[0].KernelLog != "Loading of module with unavailable key is rejected" {
		t.Errorf("verify against another CA: %d %q", code, out)
	}
	// --no-cert: only the signer's own key helps.
	nocert := filepath.Join(dir, "nocert.ko")
	if code, _, errs := runCLI(t, "module", "sign", "--no-cert", "--compress", "none", "--key", vf.KeyPEM, "--cert", vf.CertPEM, "-o", nocert, mod); code != 0 {
		t.Fatalf("sign --no-cert: %d %s", code, errs)
	}
	if code, out, _ := runCLI(t, "module", "verify", "--ca", vf.RootPEM, nocert); code != 1 || !strings.Contains(out, "signer not found") {
		t.Errorf("verify --no-cert against the CA: %d %q", code, out)
	}
	if code, out, _ := runCLI(t, "module", "verify", "--ca", vf.CertPEM, nocert); code != 0 {
		t.Errorf("verify --no-cert against the signer's own certificate: %d %q", code, out)
	}
	code, out, _ = runCLI(t, "module", "inspect", signed)
	for _, want := range []string{"name:        gpu", "version:     3.0", "compression: xz", "certificate: CN=cli vendor"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("inspect lacks %q (%d):\n%s", want, code, out)
		}
	}
	// Bad input: one line, exit status, no output file.
	notMod := filepath.Join(dir, "x.ko")
	os.WriteFile(notMod, []byte("not a module"), 0o644)
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"module", "sign", "--cert", vf.CertPEM, notMod}, 2},
		{[]string{"module", "sign", "--key", vf.KeyPEM, "--cert", vf.CertPEM, "-o", filepath.Join(dir, "out.ko"), notMod}, 1},
		{[]string{"module", "sign", "--key", rf.KeyPEM, "--cert", vf.CertPEM, "-o", filepath.Join(dir, "out.ko"), mod}, 1},
		{[]string{"module", "sign", "--key", vf.KeyPEM, "--cert", vf.CertPEM, "--hash", "md5", "-o", filepath.Join(dir, "out.ko"), mod}, 2},
		{[]string{"module", "verify", signed}, 2},
		{[]string{"module", "inspect", filepath.Join(dir, "missing.ko")}, 1},
	} {
		code, _, errs := runCLI(t, c.args...)
		if code != c.code || strings.Count(strings.TrimSpace(errs), "\n") > 1 || !strings.HasPrefix(errs, "intact: ") {
			t.Errorf("%v: exit %d (want %d), stderr %q", c.args, code, c.code, errs)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "out.ko")); !errors.Is(err, os.ErrNotExist) {
		t.Error("a failed sign left an output file")
	}
}

func TestDriverPackCLI(t *testing.T) {
	testutil.RequireHost(t, "userspace only; the VM tier adds no kernel coverage")
	dir := t.TempDir()
	vendor := testpki.MustNew(t, testpki.Options{Key: testpki.RSA2048, Name: "cli vendor"})
	vf := vendor.MustWriteDir(t, filepath.Join(dir, "vendor"))
	vol := filepath.Join(dir, "vol")
	os.MkdirAll(filepath.Join(vol, "firmware"), 0o755)
	os.WriteFile(filepath.Join(vol, "gpu.ko"), kmodtest.Module("gpu", "3.0"), 0o644)
	os.WriteFile(filepath.Join(vol, "firmware", "gpu.bin"), []byte("firmware"), 0o644)
	img := filepath.Join(dir, "driver.img")
	// A missing source says so; a file is not a volume directory.
	for src, want := range map[string]string{filepath.Join(dir, "missing"): "no such file", vf.KeyPEM: "is not a directory"} {
		if code, _, errs := runCLI(t, "driver", "pack", src, "-o", img, "--key", vf.KeyPEM, "--cert", vf.CertPEM); code != 1 || !strings.Contains(errs, want) {
			t.Errorf("pack %s: %d %q, want %q", src, code, errs, want)
		}
	}
	// The module is unsigned: refused, nothing written.
	if code, _, errs := runCLI(t, "driver", "pack", vol, "-o", img, "--key", vf.KeyPEM, "--cert", vf.CertPEM); code != 1 || !strings.Contains(errs, "not signed") {
		t.Errorf("pack of an unsigned module: %d %q", code, errs)
	}
	if _, err := os.Stat(img); !errors.Is(err, os.ErrNotExist) {
		t.Error("refused pack left the image")
	}
	if code, _, errs := runCLI(t, "module", "sign", "--key", vf.KeyPEM, "--cert", vf.CertPEM, filepath.Join(vol, "gpu.ko")); code != 0 {
		t.Fatalf("sign in place: %s", errs)
	}
	base := filepath.Join(dir, "host.pol")
	os.WriteFile(base, []byte("policy_name=host policy_version=1.0.0\nDEFAULT action=ALLOW\nDEFAULT op=KMODULE action=DENY\n"), 0o644)
	polOut := filepath.Join(dir, "host-1.0.1.pol")
	code, out, errs := runCLI(t, "--json", "driver", "pack", vol, "-o", img, "--key", vf.KeyPEM, "--cert", vf.CertPEM,
		"--policy", base, "--policy-version", "1.0.1", "--policy-out", polOut)
	if code != 0 {
		t.Fatalf("pack: %d %s", code, errs)
	}
	var j map[string]any
	if err := json.Unmarshal([]byte(out), &j); err != nil || j["root_hash"] == "" {
		t.Fatalf("pack --json: %v %s", err, out)
	}
	for _, f := range []string{img, img + ".p7s", img + ".json", img + ".ipe", polOut} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("missing %s", f)
		}
	}
	text, _ := os.ReadFile(polOut)
	pol, err := ipe.Parse(text)
	if err != nil || pol.Version.String() != "1.0.1" || len(pol.RulesFor(ipe.OpKModule)) != 1 || !strings.Contains(string(text), j["root_hash"].(string)) {
		t.Errorf("extended policy (%v):\n%s", err, text)
	}
	if code, _, _ := runCLI(t, "driver", "pack", vol, "-o", img, "--policy", base, "--policy-version", "1.0.0", "--policy-out", polOut); code != 1 {
		t.Error("a policy version that is not newer was accepted")
	}
}
