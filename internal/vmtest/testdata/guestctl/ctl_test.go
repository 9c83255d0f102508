// Package guestctl holds guest programs for the harness's negative
// controls: a test that fails, one that hangs, a Go panic and a kernel
// panic, selected by INTACT_GUESTCTL so that `go test` of the whole package
// runs only the failing test.
package guestctl

import (
	"os"
	"testing"
	"time"
)

func TestFailsInVM(t *testing.T) {
	if os.Getenv("INTACT_IN_VM") != "1" {
		t.Skip("guest program")
	}
	if os.Getenv("INTACT_GUESTCTL") != "" {
		t.Skip("another control selected")
	}
	t.Error("GUESTCTL-DELIBERATE-FAILURE")
}

func TestHang(t *testing.T) {
	if os.Getenv("INTACT_GUESTCTL") != "hang" {
		t.Skip("not selected")
	}
	t.Log("hanging on purpose")
	time.Sleep(24 * time.Hour)
}

func TestGoPanic(t *testing.T) {
	if os.Getenv("INTACT_GUESTCTL") != "gopanic" {
		t.Skip("not selected")
	}
	panic("GUESTCTL-GO-PANIC")
}

func TestKernelPanic(t *testing.T) {
	if os.Getenv("INTACT_GUESTCTL") != "kpanic" {
		t.Skip("not selected")
	}
	if err := os.WriteFile("/proc/sys/kernel/sysrq", []byte("1"), 0o644); err != nil {
		t.Log(err)
	}
	if err := os.WriteFile("/proc/sysrq-trigger", []byte("c"), 0o200); err != nil {
		t.Fatalf("sysrq: %v", err)
	}
	time.Sleep(time.Hour)
}
