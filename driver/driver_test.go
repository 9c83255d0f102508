package driver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/erofs/erofstest"
	"github.com/intact-project/intact/internal/testpki"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/ipe"
	"github.com/intact-project/intact/kmod"
	"github.com/intact-project/intact/kmod/kmodtest"
	"github.com/intact-project/intact/pkcs7"
)

type fixture struct {
	dir    string
	signer *pkcs7.Signer
	files  testpki.Files
	pki    *testpki.PKI
}

// newDriverDir writes a volume directory: two signed modules (one xz) with
// a dependency between them and a firmware blob.
func newDriverDir(t *testing.T) *fixture {
	t.Helper()
	pki := testpki.MustNew(t, testpki.Options{Key: testpki.RSA2048, Name: "driver vendor"})
	fx := &fixture{dir: filepath.Join(t.TempDir(), "vol"), pki: pki, files: pki.MustWriteDir(t, filepath.Join(t.TempDir(), "pki"))}
	var err error
	if fx.signer, err = pkcs7.NewSigner(pki.Leaf.Certificate, pki.Leaf.Key); err != nil {
		t.Fatal(err)
	}
	write := func(rel string, data []byte) {
		p := filepath.Join(fx.dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	core, err := kmod.Sign(kmodtest.Module("gpu_core", "2.1"), fx.signer, kmod.SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	disp, _, err := kmod.SignFile(mustCompress(t, kmodtest.Module("gpu-display", "2.1", "gpu_core")), fx.signer, kmod.SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	write("gpu_core.ko", core)
	write("extra/gpu-display.ko.xz", disp)
	write("firmware/vendor/gpu.bin", bytes.Repeat([]byte{0xa5, 0x5a}, 5000))
	write("README", []byte("not a module\n"))
	return fx
}

func mustCompress(t *testing.T, b []byte) []byte {
	out, err := kmod.Compress(b, kmod.XZ)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPackAgreesWithReferenceTools(t *testing.T) {
	veritysetup := testutil.RequireTool(t, "veritysetup")
	openssl := testutil.RequireTool(t, "openssl")
	fx := newDriverDir(t)
	out := filepath.Join(t.TempDir(), "driver.img")
	res, err := Pack(context.Background(), fx.dir, out, PackOptions{Signer: fx.signer})
	if err != nil {
		t.Fatal(err)
	}
	man := res.Manifest
	if len(man.Modules) != 2 || len(man.Firmware) != 1 || man.Firmware[0] != "vendor/gpu.bin" {
		t.Fatalf("manifest: %+v", man)
	}
	for _, m := range man.Modules {
		if !m.Signed || !strings.Contains(m.Signer, "driver vendor") {
			t.Errorf("module %s: signed=%v signer=%q", m.Path, m.Signed, m.Signer)
		}
	}
	// veritysetup accepts the appended tree and gives the same root hash.
	cmd := exec.Command(veritysetup, "verify", out, out, man.RootHash, "--hash-offset="+itoa(man.HashOffset))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("veritysetup verify: %v\n%s", err, b)
	}
	// The signature is a detached PKCS#7 over the lowercase hex root hash
	// with the signer's certificate embedded: openssl verifies it.
	rh := filepath.Join(t.TempDir(), "roothash")
	os.WriteFile(rh, []byte(man.RootHash), 0o644)
	v := exec.Command(openssl, "cms", "-verify", "-binary", "-inform", "DER", "-in", res.Signature, "-content", rh,
		"-CAfile", fx.files.RootPEM, "-purpose", "any", "-out", os.DevNull)
	if b, err := v.CombinedOutput(); err != nil {
		t.Fatalf("openssl cms -verify: %v\n%s", err, b)
	}
	// The image holds the directory: fsck.erofs extracts the same files.
	{
		fsck := erofstest.ErofsUtils(t, "fsck.erofs")
		ext := filepath.Join(t.TempDir(), "x")
		if b, err := exec.Command(fsck, "--extract="+ext, out).CombinedOutput(); err != nil {
			t.Fatalf("fsck.erofs: %v\n%s", err, b)
		}
		for _, rel := range []string{"gpu_core.ko", "extra/gpu-display.ko.xz", "firmware/vendor/gpu.bin", "README"} {
			a, _ := os.ReadFile(filepath.Join(fx.dir, rel))
			b, err := os.ReadFile(filepath.Join(ext, rel))
			if err != nil || !bytes.Equal(a, b) {
				t.Errorf("%s differs in the image: %v", rel, err)
			}
		}
	}
	// The rules parse and name the root hash.
	text := "policy_name=t policy_version=0.0.1\nDEFAULT action=ALLOW\n" + strings.Join(man.IPERules, "\n") + "\n"
	pol, err := ipe.Parse([]byte(text))
	if err != nil {
		t.Fatalf("rules do not parse: %v\n%s", err, text)
	}
	if len(pol.RulesFor(ipe.OpKModule)) != 1 || len(pol.RulesFor(ipe.OpFirmware)) != 1 {
		t.Errorf("rules: %v", man.IPERules)
	}
	var onDisk Manifest
	b, _ := os.ReadFile(res.ManifestFile)
	if err := json.Unmarshal(b, &onDisk); err != nil || onDisk.RootHash != man.RootHash {
		t.Errorf("manifest file: %v %+v", err, onDisk)
	}
	// Deterministic: the same directory gives the same bytes.
	out2 := filepath.Join(t.TempDir(), "again.img")
	if _, err := Pack(context.Background(), fx.dir, out2, PackOptions{Signer: fx.signer}); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(out)
	c, _ := os.ReadFile(out2)
	if !bytes.Equal(a, c) {
		t.Error("packing the same directory twice gave different images")
	}
}

func itoa(n uint64) string { return strings.TrimSpace(strings.Replace(jsonNum(n), "\n", "", -1)) }

func jsonNum(n uint64) string { b, _ := json.Marshal(n); return string(b) }

func TestPackRefusals(t *testing.T) {
	fx := newDriverDir(t)
	out := filepath.Join(t.TempDir(), "d.img")
	// An unsigned module.
	os.WriteFile(filepath.Join(fx.dir, "plain.ko"), kmodtest.Module("plain", "1"), 0o644)
	if _, err := Pack(context.Background(), fx.dir, out, PackOptions{Signer: fx.signer}); err == nil || !strings.Contains(err.Error(), "not signed") {
		t.Errorf("unsigned module packed: %v", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("output left behind after a refusal: %v", err)
	}
	if _, err := Pack(context.Background(), fx.dir, out, PackOptions{Signer: fx.signer, AllowUnsigned: true}); err != nil {
		t.Errorf("AllowUnsigned: %v", err)
	}
	// Two modules of one name.
	os.WriteFile(filepath.Join(fx.dir, "again.ko"), kmodtest.Module("plain", "2"), 0o644)
	if _, err := Pack(context.Background(), fx.dir, out, PackOptions{AllowUnsigned: true}); !errors.Is(err, ErrBadVolume) {
		t.Errorf("duplicate module name: %v", err)
	}
	// No module at all.
	empty := t.TempDir()
	os.WriteFile(filepath.Join(empty, "x.txt"), []byte("x"), 0o644)
	if _, err := Pack(context.Background(), empty, out, PackOptions{}); !errors.Is(err, ErrNoModules) {
		t.Errorf("no modules: %v", err)
	}
	// A symlink.
	sl := newDriverDir(t)
	os.Symlink("/etc/passwd", filepath.Join(sl.dir, "link"))
	if _, err := Pack(context.Background(), sl.dir, out, PackOptions{Signer: sl.signer}); !errors.Is(err, ErrBadVolume) {
		t.Errorf("symlink: %v", err)
	}
}

func TestLoadOrder(t *testing.T) {
	mods := []Module{
		{Name: "c", Depends: []string{"b", "external"}},
		{Name: "a"},
		{Name: "b", Depends: []string{"a"}},
	}
	got, err := LoadOrder(mods)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range got {
		names = append(names, m.Name)
	}
	if strings.Join(names, ",") != "a,b,c" {
		t.Errorf("order %v", names)
	}
	if _, err := LoadOrder([]Module{{Name: "x", Depends: []string{"y"}}, {Name: "y", Depends: []string{"x"}}}); !errors.Is(err, ErrBadVolume) {
		t.Errorf("cycle: %v", err)
	}
}

func TestExtendPolicy(t *testing.T) {
	base := "policy_name=host policy_version=1.2.3\n\nDEFAULT action=ALLOW\nDEFAULT op=KMODULE action=DENY\nDEFAULT op=FIRMWARE action=DENY\n\nop=KMODULE boot_verified=TRUE action=ALLOW\n"
	rules := Rules(bytes.Repeat([]byte{0xab}, 32))
	out, err := ExtendPolicy([]byte(base), rules, ipe.Version{Major: 1, Minor: 2, Rev: 4})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := ipe.Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if pol.Version.String() != "1.2.4" || len(pol.RulesFor(ipe.OpKModule)) != 2 || len(pol.RulesFor(ipe.OpFirmware)) != 1 {
		t.Errorf("extended policy:\n%s", out)
	}
	if _, err := ExtendPolicy([]byte(base), rules, ipe.Version{Major: 1, Minor: 2, Rev: 3}); !errors.Is(err, ErrPolicy) {
		t.Errorf("same version accepted: %v", err)
	}
}
