package vmtest

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/intact-project/intact/internal/testutil"
)

// requireHostVM skips the host-side harness tests unless the run boots VMs
// (make test-vm sets INTACT_VM_HOST_TESTS=1) and never runs them inside a
// guest.
func requireHostVM(t *testing.T) {
	t.Helper()
	testutil.RequireHost(t, "boots VMs under QEMU")
	if os.Getenv("INTACT_VM_HOST_TESTS") != "1" {
		t.Skip("boots VMs under QEMU; make test-vm runs it (INTACT_VM_HOST_TESTS=1)")
	}
	for _, tool := range []string{"qemu-system-x86_64", "mkfs.ext4", "python3", "dpkg-deb", "xz", "go"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found (make test installs it): %v", tool, err)
		}
	}
}

// buildGuestTest compiles a testdata package's tests as a static binary.
func buildGuestTest(t *testing.T, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(pkg)+".test")
	cmd := exec.Command("go", "test", "-c", "-o", out, "./testdata/"+pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go test -c %s: %v\n%s", pkg, err, b)
	}
	return out
}

func runGuest(t *testing.T, opts Options) (*Result, string, error) {
	t.Helper()
	var out bytes.Buffer
	opts.Output = &out
	if opts.Timeout == 0 {
		opts.Timeout = 3 * time.Minute
	}
	start := time.Now()
	res, err := Run(context.Background(), opts)
	if res != nil {
		t.Logf("%s: boot %s (guest uptime at init %s), VM %s, run total %s", opts.Mode,
			res.Boot.Round(time.Millisecond), res.GuestUptime, res.Total.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	}
	return res, out.String(), err
}

func TestVMGuestPasses(t *testing.T) {
	requireHostVM(t)
	bin := buildGuestTest(t, "guestpass")
	for _, mode := range []Mode{Direct, SecureBoot} {
		t.Run(string(mode), func(t *testing.T) {
			res, out, err := runGuest(t, Options{Mode: mode, Program: bin, Args: []string{"-test.v"}, Dir: "testdata/guestpass"})
			if err != nil {
				t.Fatalf("run: %v\noutput:\n%s", err, out)
			}
			if res.ExitCode != 0 || !strings.Contains(out, "GUEST-PASS-MARKER") || !strings.Contains(out, "--- PASS: TestInVM") {
				t.Fatalf("exit %d, output:\n%s", res.ExitCode, out)
			}
			if strings.Contains(out, "Linux version") || strings.Contains(out, "[    0.") {
				t.Errorf("kernel console leaked into the test output:\n%s", out)
			}
		})
	}
}

// TestVMFailingGuestFailsGoTest is the negative control through the real
// interface: `go test -exec vmexec` of a package whose test fails in the
// guest must fail on the host.
func TestVMFailingGuestFailsGoTest(t *testing.T) {
	requireHostVM(t)
	vmexec := filepath.Join(t.TempDir(), "vmexec")
	if b, err := exec.Command("go", "build", "-o", vmexec, "./cmd/vmexec").CombinedOutput(); err != nil {
		t.Fatalf("build vmexec: %v\n%s", err, b)
	}
	cmd := exec.Command("go", "test", "-count=1", "-exec", vmexec+" --mode direct", "./testdata/guestctl")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("go test of a failing guest package did not fail (err %v):\n%s", err, out)
	}
	for _, want := range []string{"--- FAIL: TestFailsInVM", "GUESTCTL-DELIBERATE-FAILURE", "FAIL"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestVMGuestGoPanicFails(t *testing.T) {
	requireHostVM(t)
	bin := buildGuestTest(t, "guestctl")
	res, out, err := runGuest(t, Options{Mode: Direct, Program: bin, Args: []string{"-test.run=TestGoPanic"},
		Env: []string{"INTACT_GUESTCTL=gopanic"}, NoScratch: true})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if res.ExitCode == 0 || !strings.Contains(out, "GUESTCTL-GO-PANIC") {
		t.Fatalf("a panicking guest test reported exit %d; output:\n%s", res.ExitCode, out)
	}
}

func TestVMGuestHangTimesOut(t *testing.T) {
	requireHostVM(t)
	bin := buildGuestTest(t, "guestctl")
	start := time.Now()
	_, out, err := runGuest(t, Options{Mode: Direct, Program: bin, Args: []string{"-test.run=TestHang", "-test.v"},
		Env: []string{"INTACT_GUESTCTL=hang"}, NoScratch: true, Timeout: 30 * time.Second})
	var ge *GuestError
	if !errors.Is(err, ErrTimeout) || !errors.As(err, &ge) {
		t.Fatalf("hanging guest: err %v, want ErrTimeout", err)
	}
	if took := time.Since(start); took > 60*time.Second {
		t.Errorf("timeout of 30s took %s", took)
	}
	if !strings.Contains(ge.ConsoleTail, "intact-init: running") {
		t.Errorf("no console tail in the error: %q", ge.ConsoleTail)
	}
	if !strings.Contains(out, "hanging on purpose") {
		t.Errorf("output of the hanging test was not streamed: %q", out)
	}
}

func TestVMGuestKernelPanicFails(t *testing.T) {
	requireHostVM(t)
	bin := buildGuestTest(t, "guestctl")
	_, _, err := runGuest(t, Options{Mode: Direct, Program: bin, Args: []string{"-test.run=TestKernelPanic"},
		Env: []string{"INTACT_GUESTCTL=kpanic"}, NoScratch: true, Timeout: 2 * time.Minute})
	var ge *GuestError
	if !errors.Is(err, ErrNoStatus) || !errors.As(err, &ge) {
		t.Fatalf("kernel panic in the guest: err %v, want ErrNoStatus", err)
	}
	if !strings.Contains(ge.ConsoleTail, "Kernel panic") {
		t.Errorf("console tail lacks the panic:\n%s", ge.ConsoleTail)
	}
}

// TestVMSecureBootRefusesUnsignedUKI proves the firmware enforces Secure
// Boot: the same UKI, unsigned, never reaches the init.
func TestVMSecureBootRefusesUnsignedUKI(t *testing.T) {
	requireHostVM(t)
	bin := buildGuestTest(t, "guestpass")
	res, out, err := runGuest(t, Options{Mode: SecureBoot, Program: bin, Dir: "testdata/guestpass", Unsigned: true, Timeout: 45 * time.Second})
	if err == nil {
		t.Fatalf("unsigned UKI booted under Secure Boot (exit %d):\n%s", res.ExitCode, out)
	}
	var ge *GuestError
	if !errors.As(err, &ge) {
		t.Fatalf("unexpected error: %v", err)
	}
	if res.Boot != 0 {
		t.Fatalf("guest init started from an unsigned UKI: %v", err)
	}
	if strings.Contains(ge.ConsoleTail, "EFI stub") {
		t.Errorf("the kernel's EFI stub ran:\n%s", ge.ConsoleTail)
	}
	t.Logf("firmware output:\n%s", lastLines(ge.ConsoleTail, 8))
}
