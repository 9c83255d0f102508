// Package testutil holds helpers shared by intact's tests: requirements on
// tools, privileges and kernel features that skip a test only where the
// capability is genuinely absent, and fail it instead when the test run is
// strict (INTACT_TEST_STRICT=1, which `make test` and CI set).
package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// Strict reports whether missing capabilities must fail tests rather than
// skip them. `make test` sets INTACT_TEST_STRICT=1 after installing every
// tool the tests use.
func Strict() bool { return os.Getenv("INTACT_TEST_STRICT") == "1" }

// InVM reports whether the test runs inside the intact VM test tier
// (internal/vmtest sets INTACT_IN_VM=1 in the guest).
func InVM() bool { return os.Getenv("INTACT_IN_VM") == "1" }

// Unavailable skips the test with reason, or fails it in a strict run.
func Unavailable(t testing.TB, reason string) {
	t.Helper()
	if Strict() {
		t.Fatalf("required capability missing in a strict run: %s", reason)
	}
	t.Skip(reason)
}

// RequireTool returns the path of an external reference tool (veritysetup,
// fsverity, openssl, mkfs.erofs, ...), skipping or failing when it is absent.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(t, name+" not found in PATH (make test installs it)")
	}
	return p
}

// RequireRoot skips (or fails, in a strict run) unless the test runs as root.
// Tests that call it must say so in their name (TestRoot..., ...AsRoot).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root (mounts, loop devices or device-mapper)")
	}
}

// RequireVM skips a test that must run inside the VM tier. It never fails
// outside the VM, even in a strict run: `make test` runs such packages again
// under internal/vmtest, where they execute for real.
func RequireVM(t testing.TB) {
	t.Helper()
	if !InVM() {
		t.Skip("runs inside the VM tier only (internal/vmtest; make test runs it under QEMU)")
	}
}

// RequireHost skips a test inside the VM guest, which holds only the test
// binary, its package directory and the tools the tier carries: no source
// tree, no sibling packages' testdata, no host toolchain. why says what the
// test needs from the host; the host tier runs it.
func RequireHost(t testing.TB, why string) {
	t.Helper()
	if InVM() {
		t.Skip("host tier only: " + why)
	}
}
