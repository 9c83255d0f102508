package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/testpki"
	"github.com/intact-project/intact/internal/testutil"
)

// TestEFISignVerifyCLI: `intact efi sign` output passes sbverify and
// `intact efi verify`; sbsign output passes `intact efi verify`; tampered,
// unsigned and foreign-signed images fail with exit 1; bad input gives one
// line and no output file.
func TestEFISignVerifyCLI(t *testing.T) {
	testutil.RequireHost(t, "needs sbsigntool")
	sbsign, sbverify := testutil.RequireTool(t, "sbsign"), testutil.RequireTool(t, "sbverify")
	dir := t.TempDir()
	p := testpki.MustNew(t, testpki.Options{Name: "cli db"})
	files := p.MustWriteDir(t, filepath.Join(dir, "db"))
	foreign := testpki.MustNew(t, testpki.Options{Name: "cli foreign"}).MustWriteDir(t, filepath.Join(dir, "foreign"))
	img := filepath.Join(dir, "img.efi")
	os.WriteFile(img, testPE(), 0o644)
	signed := filepath.Join(dir, "signed.efi")
	code, out, stderr := runCLI(t, "efi", "sign", "--json", "--key", files.KeyPEM, "--cert", files.CertPEM, img, "-o", signed)
	if code != 0 {
		t.Fatalf("efi sign: exit %d: %s", code, stderr)
	}
	var js struct {
		Digest string `json:"authenticode_sha256"`
	}
	if err := json.Unmarshal([]byte(out), &js); err != nil || len(js.Digest) != 64 {
		t.Errorf("--json: %q %v", out, err)
	}
	if b, err := exec.Command(sbverify, "--cert", files.RootPEM, signed).CombinedOutput(); err != nil {
		t.Errorf("sbverify: %v %s", err, b)
	}
	if code, _, stderr := runCLI(t, "efi", "verify", "--cert", files.RootPEM, signed); code != 0 {
		t.Errorf("efi verify: exit %d %s", code, stderr)
	}
	sbsigned := filepath.Join(dir, "sbsigned.efi")
	if b, err := exec.Command(sbsign, "--key", files.KeyPEM, "--cert", files.CertPEM, "--output", sbsigned, img).CombinedOutput(); err != nil {
		t.Fatalf("sbsign: %v %s", err, b)
	}
	code, out, _ = runCLI(t, "efi", "verify", "--json", "--cert", files.CertPEM, sbsigned)
	if code != 0 || !strings.Contains(out, `"authenticode_sha256": "`+js.Digest+`"`) {
		t.Errorf("efi verify of sbsign output: exit %d %s (want digest %s)", code, out, js.Digest)
	}
	tampered := filepath.Join(dir, "tampered.efi")
	b, _ := os.ReadFile(signed)
	b[0x500] ^= 1
	os.WriteFile(tampered, b, 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"efi", "verify", "--cert", files.RootPEM, tampered}, "no signature verifies"},
		{[]string{"efi", "verify", "--cert", files.RootPEM, img}, "is not signed"},
		{[]string{"efi", "verify", "--cert", foreign.RootPEM, signed}, "no signature verifies"},
		{[]string{"efi", "sign", "--key", files.KeyPEM, "--cert", files.CertPEM, signed, "-o", filepath.Join(dir, "x")}, "already signed"},
		{[]string{"efi", "sign", "--key", foreign.KeyPEM, "--cert", files.CertPEM, img, "-o", filepath.Join(dir, "x")}, "does not belong"},
		{[]string{"efi", "sign", "--key", files.KeyPEM, "--cert", files.CertPEM, files.CertPEM, "-o", filepath.Join(dir, "x")}, "PE"},
		{[]string{"efi", "sign", "--cert", files.CertPEM, img, "-o", filepath.Join(dir, "x")}, "--key"},
	} {
		code, _, stderr := runCLI(t, c.args...)
		if code == 0 || !strings.Contains(stderr, c.want) || !strings.HasPrefix(stderr, "intact: ") {
			t.Errorf("%v: exit %d, stderr %q (want %q)", c.args, code, stderr, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
		t.Error("a failed sign left its output behind")
	}
	// --append keeps the first signature; both verify with their CAs.
	two := filepath.Join(dir, "two.efi")
	if code, _, stderr := runCLI(t, "efi", "sign", "--append", "--key", foreign.KeyPEM, "--cert", foreign.CertPEM, signed, "-o", two); code != 0 {
		t.Fatalf("--append: %s", stderr)
	}
	for _, ca := range []string{files.RootPEM, foreign.RootPEM} {
		if code, _, stderr := runCLI(t, "efi", "verify", "--cert", ca, two); code != 0 {
			t.Errorf("verify two signatures with %s: %s", ca, stderr)
		}
	}
}

// testPE is a small PE32+ image (one section, some trailing data).
func testPE() []byte {
	img := make([]byte, 0x600+5)
	put32 := func(o int, v uint32) {
		img[o], img[o+1], img[o+2], img[o+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
	put16 := func(o int, v uint16) { img[o], img[o+1] = byte(v), byte(v>>8) }
	copy(img, "MZ")
	put32(0x3c, 0x80)
	copy(img[0x80:], "PE\x00\x00")
	put16(0x84, 0x8664)
	put16(0x86, 1)
	put16(0x84+16, 240)
	opt := 0x84 + 20
	put16(opt, 0x20b)
	put32(opt+32, 0x1000)
	put32(opt+36, 0x200)
	put32(opt+56, 0x2000)
	put32(opt+60, 0x400)
	put16(opt+68, 10)
	put32(opt+108, 16)
	sec := opt + 240
	copy(img[sec:], ".text")
	put32(sec+8, 0x10)
	put32(sec+12, 0x1000)
	put32(sec+16, 0x200)
	put32(sec+20, 0x400)
	for i := 0x400; i < len(img); i++ {
		img[i] = byte(i)
	}
	return img
}
