// Package guestpass is a guest test for the harness's own tests: it passes
// inside the VM and checks what the guest init promises.
package guestpass

import (
	"os"
	"strings"
	"testing"
)

func TestInVM(t *testing.T) {
	if os.Getenv("INTACT_IN_VM") != "1" {
		t.Fatal("INTACT_IN_VM is not 1")
	}
	if os.Getpid() == 1 {
		t.Fatal("test runs as PID 1")
	}
	if _, err := os.Stat("testdata-marker.txt"); err != nil {
		t.Fatalf("package directory not copied or not the working directory: %v", err)
	}
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cmdline: %s", strings.TrimSpace(string(b)))
	mnt := os.Getenv("INTACT_VM_SCRATCH_EXT4")
	if mnt == "" {
		t.Fatal("INTACT_VM_SCRATCH_EXT4 unset")
	}
	if err := os.WriteFile(mnt+"/probe", []byte("x"), 0o644); err != nil {
		t.Fatalf("scratch ext4 not writable: %v", err)
	}
	t.Log("GUEST-PASS-MARKER")
}
