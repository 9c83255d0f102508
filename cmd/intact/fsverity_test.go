package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/testpki"
	"github.com/intact-project/intact/internal/testutil"
)

func fsvTool(t *testing.T, args ...string) string {
	t.Helper()
	bin := testutil.RequireTool(t, "fsverity")
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		t.Fatalf("fsverity %v: %v", args, err)
	}
	return string(out)
}

func fsvFiles(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	var paths []string
	for _, n := range []int{0, 1, 4096, 123457} {
		p := filepath.Join(dir, "f"+strings.Repeat("x", n%7))
		b := make([]byte, n)
		rand.Read(b)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

// TestFsverityDigestLikeFsverityUtils: same flags, same stdout.
func TestFsverityDigestLikeFsverityUtils(t *testing.T) {
	files := fsvFiles(t)
	for _, flags := range [][]string{
		nil,
		{"--compact"},
		{"--for-builtin-sig"},
		{"--for-builtin-sig", "--compact"},
		{"--hash-alg=sha512", "--block-size=1024", "--salt=00ff"},
		{"--block-size=65536", "--salt=" + strings.Repeat("ab", 32), "--for-builtin-sig"},
	} {
		want := fsvTool(t, append(append([]string{"digest"}, flags...), files...)...)
		code, got, stderr := runCLI(t, append(append([]string{"fsverity", "digest"}, flags...), files...)...)
		if code != 0 || got != want {
			t.Fatalf("%v: exit %d %s\n got %q\nwant %q", flags, code, stderr, got, want)
		}
	}
	code, out, _ := runCLI(t, "fsverity", "digest", "--json", "--for-builtin-sig", files[3])
	var list []map[string]any
	if err := json.Unmarshal([]byte(out), &list); err != nil || code != 0 || len(list) != 1 {
		t.Fatalf("json: exit %d %q %v", code, out, err)
	}
	want := strings.Fields(fsvTool(t, "digest", files[3]))[0]
	if list[0]["digest"] != want || list[0]["size"] != float64(123457) || list[0]["builtin_sig_payload"] == nil {
		t.Fatalf("json %v, want digest %s", list[0], want)
	}
}

// TestFsveritySignLikeFsverityUtils: same line printed, same signature bytes
// (RSA signatures are deterministic).
func TestFsveritySignLikeFsverityUtils(t *testing.T) {
	testutil.RequireHost(t, "userspace only; the VM tier adds no kernel coverage")
	p := testpki.MustNew(t, testpki.Options{Key: testpki.RSA2048})
	f := p.MustWriteDir(t, t.TempDir())
	file := fsvFiles(t)[3]
	dir := t.TempDir()
	for _, flags := range [][]string{nil, {"--hash-alg=sha512", "--block-size=2048", "--salt=0102"}} {
		theirs, ours := filepath.Join(dir, "theirs"), filepath.Join(dir, "ours")
		wantOut := fsvTool(t, append([]string{"sign", file, theirs, "--key=" + f.KeyPEM, "--cert=" + f.CertPEM}, flags...)...)
		code, gotOut, stderr := runCLI(t, append([]string{"fsverity", "sign", file, ours, "--key", f.KeyPEM, "--cert", f.CertPEM}, flags...)...)
		if code != 0 || gotOut != wantOut {
			t.Fatalf("%v: exit %d %s\n got %q\nwant %q", flags, code, stderr, gotOut, wantOut)
		}
		a, _ := os.ReadFile(theirs)
		b, _ := os.ReadFile(ours)
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Fatalf("%v: signature differs from fsverity sign's", flags)
		}
	}
}

func TestFsverityBadInput(t *testing.T) {
	p := testpki.MustNew(t, testpki.Options{Key: testpki.ECDSAP256})
	f := p.MustWriteDir(t, t.TempDir())
	file := fsvFiles(t)[2]
	dir := t.TempDir()
	out := filepath.Join(dir, "sig")
	cases := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"digest", filepath.Join(dir, "missing")}, 1, "no such file"},
		{[]string{"digest", dir}, 1, "is a directory"},
		{[]string{"digest", "--block-size=512", file}, 2, "--block-size 512"},
		{[]string{"digest", "--block-size=4k", file}, 2, "not a number"},
		{[]string{"digest", "--salt=abc", file}, 2, "not hex"},
		{[]string{"digest", "--salt=" + strings.Repeat("00", 33), file}, 2, "33 bytes"},
		{[]string{"digest", "--hash-alg=sha1", file}, 2, "sha256 or sha512"},
		{[]string{"digest"}, 2, "requires at least 1 arg"},
		{[]string{"sign", file, out, "--cert", f.CertPEM}, 2, "--key and --cert are required"},
		{[]string{"sign", file, out, "--key", f.CertPEM, "--cert", f.CertPEM}, 1, "not a private key"},
		{[]string{"sign", filepath.Join(dir, "missing"), out, "--key", f.KeyPEM, "--cert", f.CertPEM}, 1, "no such file"},
		{[]string{"enable", file, "--block-size=100"}, 2, "--block-size 100"},
		{[]string{"enable", filepath.Join(dir, "missing")}, 1, "no such file"},
		{[]string{"measure", filepath.Join(dir, "missing")}, 1, "no such file"},
	}
	for _, c := range cases {
		code, _, stderr := runCLI(t, append([]string{"fsverity"}, c.args...)...)
		first, _, _ := strings.Cut(stderr, "\n")
		if code != c.code || !strings.HasPrefix(first, "intact: ") || !strings.Contains(first, c.msg) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", c.args, code, stderr, c.code, c.msg)
		}
		if _, err := os.Stat(out); err == nil {
			t.Fatalf("%v: output written despite the error", c.args)
		}
	}
}

// TestFsverityMeasureNotVerity runs on the test's temporary directory,
// which is no verity file: measure must fail with one clear line.
func TestFsverityMeasureNotVerity(t *testing.T) {
	file := fsvFiles(t)[1]
	code, stdout, stderr := runCLI(t, "fsverity", "measure", file)
	if code != 1 || stdout != "" || strings.Count(stderr, "\n") != 1 ||
		!(strings.Contains(stderr, "not enabled") || strings.Contains(stderr, "not supported")) {
		t.Fatalf("exit %d stdout %q stderr %q", code, stdout, stderr)
	}
}
