package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/internal/vmtest"
)

// TestUKIBuildInspectAgainstUkify builds a UKI with `intact uki build` and
// with Debian stable's `ukify build` from the same inputs, and requires
// `intact uki inspect` to print exactly what `ukify inspect` prints, for
// both images, and the section contents to agree (the .linux section
// aside, whose VirtualSize rule differs between ukify 257 and upstream).
func TestUKIBuildInspectAgainstUkify(t *testing.T) {
	testutil.RequireHost(t, "needs Debian stable's ukify and the VM assets")
	testutil.RequireTool(t, "python3")
	ctx := context.Background()
	a, err := vmtest.Fetch(ctx, vmtest.FetchOptions{})
	if err != nil {
		testutil.Unavailable(t, "VM assets: "+err.Error())
	}
	root, err := vmtest.FetchPackages(ctx, vmtest.FetchOptions{}, "ukify", vmtest.UkifyPackages...)
	if err != nil {
		testutil.Unavailable(t, "ukify: "+err.Error())
	}
	dir := t.TempDir()
	initrd := filepath.Join(dir, "initrd")
	os.WriteFile(initrd, bytes.Repeat([]byte("initrd\x00"), 9999), 0o644)
	osrel := filepath.Join(dir, "os-release")
	os.WriteFile(osrel, []byte("ID=intact\n\nPRETTY_NAME=\"intact\"\n"), 0o644)
	common := []string{"--linux", a.Vmlinuz(), "--stub", a.Stub(), "--initrd", initrd, "--cmdline", "  console=ttyS0   ro ",
		"--os-release", "@" + osrel}
	ours, theirs := filepath.Join(dir, "ours.efi"), filepath.Join(dir, "theirs.efi")
	if code, _, stderr := runCLI(t, append([]string{"uki", "build", "-o", ours}, common...)...); code != 0 {
		t.Fatalf("intact uki build: exit %d: %s", code, stderr)
	}
	if out, err := vmtest.Ukify(ctx, root, append([]string{"build", "--uname", a.KernelRelease, "--output", theirs}, common...)...).CombinedOutput(); err != nil {
		t.Fatalf("ukify build: %v\n%s", err, out)
	}
	for _, img := range []string{ours, theirs} {
		want, err := vmtest.Ukify(ctx, root, "inspect", img).Output()
		if err != nil {
			t.Fatalf("ukify inspect: %v", err)
		}
		code, got, stderr := runCLI(t, "uki", "inspect", img)
		if code != 0 || got != string(want) {
			t.Errorf("%s: intact uki inspect (exit %d, %s):\n%s\nukify inspect:\n%s", filepath.Base(img), code, stderr, got, want)
		}
	}
	_, o, _ := runCLI(t, "uki", "inspect", "--json", ours)
	_, th, _ := runCLI(t, "uki", "inspect", "--json", theirs)
	for _, name := range []string{`".osrel"`, `".cmdline"`, `".uname"`, `".initrd"`, `".sbat"`} {
		if sectionDigest(o, name) == "" || sectionDigest(o, name) != sectionDigest(th, name) {
			t.Errorf("%s: ours %s, ukify %s", name, sectionDigest(o, name), sectionDigest(th, name))
		}
	}
}

// sectionDigest picks a section's sha256 out of `uki inspect --json`.
func sectionDigest(js, name string) string {
	i := strings.Index(js, `"name": `+name)
	if i < 0 {
		return ""
	}
	j := strings.Index(js[i:], `"sha256": "`)
	if j < 0 {
		return ""
	}
	s := js[i+j+len(`"sha256": "`):]
	return s[:strings.IndexByte(s, '"')]
}

func TestUKIBadInput(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk")
	os.WriteFile(junk, []byte("MZ junk"), 0o644)
	out := filepath.Join(dir, "out.efi")
	for _, args := range [][]string{
		{"uki", "build", "-o", out},
		{"uki", "build", "--linux", junk},
		{"uki", "build", "--linux", junk, "--stub", junk, "-o", out},
		{"uki", "build", "--linux", filepath.Join(dir, "missing"), "--stub", junk, "-o", out},
		{"uki", "build", "--linux", junk, "--stub", junk, "--section", "nocolon", "-o", out},
		{"uki", "inspect", junk},
		{"uki", "inspect", dir},
	} {
		code, _, stderr := runCLI(t, args...)
		if code == 0 || !strings.HasPrefix(stderr, "intact: ") || strings.Count(stderr, "\n") > 2 {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr)
		}
		if _, err := os.Stat(out); err == nil {
			t.Fatalf("%v left %s behind", args, out)
		}
	}
}
