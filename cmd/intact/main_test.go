package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/testpki"
	"github.com/intact-project/intact/internal/testutil"
)

// runCLI runs the CLI in-process and returns its exit code, stdout and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestUnknownCommandIsUsageError(t *testing.T) {
	code, _, stderr := runCLI(t, "no-such-command")
	if code != 2 {
		t.Fatalf("exit %d, want 2; stderr %q", code, stderr)
	}
	if !strings.HasPrefix(stderr, "intact: ") {
		t.Fatalf("stderr %q", stderr)
	}
}

func TestVersionJSON(t *testing.T) {
	code, out, _ := runCLI(t, "version", "--json")
	if code != 0 || !strings.Contains(out, `"go"`) {
		t.Fatalf("exit %d out %q", code, out)
	}
}

// TestExitStatusIsTyped: the exit status comes from the error's type, not
// its text. A kernel's EINVAL ("invalid argument") is a failure (exit 1,
// no help hint), not a usage error; cobra's argument and flag errors and
// unknown commands are usage errors (exit 2 with the hint).
func TestExitStatusIsTyped(t *testing.T) {
	testutil.RequireHost(t, "userspace only; the VM tier adds no kernel coverage")
	// The kernel answers EINVAL: a write of a signed policy to a file
	// that wants an integer (laid out where securityfs's new_policy is).
	pki := testpki.MustNew(t, testpki.Options{})
	files := pki.MustWriteDir(t, t.TempDir())
	pf := writeTemp(t, "p.pol", validPolicy)
	if code, _, stderr := runCLI(t, "policy", "sign", "--key", files.KeyPEM, "--cert", files.CertPEM, pf); code != 0 {
		t.Fatal(stderr)
	}
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "ipe", "policies"), 0o755)
	if err := os.Symlink("/proc/self/oom_score_adj", filepath.Join(root, "ipe", "new_policy")); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCLI(t, "policy", "load", "--root", root, pf+".p7s")
	if code != 1 || !strings.Contains(stderr, "EINVAL") || strings.Contains(stderr, "--help") {
		t.Errorf("kernel EINVAL: exit %d, stderr %q; want exit 1 without the usage hint", code, stderr)
	}
	// Go's own EINVAL for a path with a NUL byte.
	code, _, stderr = runCLI(t, "verity", "dump", "bad\x00path")
	if code != 1 || !strings.Contains(stderr, "invalid argument") || strings.Contains(stderr, "--help") {
		t.Errorf("EINVAL from open: exit %d, stderr %q; want exit 1 without the usage hint", code, stderr)
	}
	for _, args := range [][]string{
		{"no-such-command"},
		{"verity", "no-such-subcommand"},
		{"verity", "dump"},
		{"verity", "dump", "a", "b"},
		{"verity", "format", "--no-such-flag", "x"},
		{"verity", "format", "--data-block-size", "lots", "x"},
		{"version", "extra"},
		{"layer", "convert", "x", "-o"},
	} {
		code, _, stderr := runCLI(t, args...)
		if code != 2 || !strings.HasPrefix(stderr, "intact: ") || !strings.Contains(stderr, "Run 'intact --help'") {
			t.Errorf("%q: exit %d, stderr %q; want a usage error", args, code, stderr)
		}
	}
	// A handler's own error whose text looks like cobra's is still exit 1.
	code, _, stderr = runCLI(t, "layer", "convert", filepath.Join(t.TempDir(), "unknown command accepts invalid argument"), "-o", filepath.Join(t.TempDir(), "o"))
	if code != 1 {
		t.Errorf("handler error with usage-like text: exit %d %q", code, stderr)
	}
}
