package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/intact-project/intact/erofs/erofstest"
	"github.com/intact-project/intact/internal/testutil"
)

// waitExit waits up to d for cmd to end and returns its state, or fails.
func waitExit(t *testing.T, cmd *exec.Cmd, d time.Duration) *os.ProcessState {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return cmd.ProcessState
	case <-time.After(d):
		cmd.Process.Kill()
		<-done
		t.Fatalf("process still running %v after the interrupt", d)
		return nil
	}
}

// TestInterruptStalledInput: Ctrl-C ends a conversion that waits for
// input that does not come (from standard input, and from a FIFO), with
// exit status 130, one line saying so and nothing left in the output
// directory. The old code waited for the input forever.
func TestInterruptStalledInput(t *testing.T) {
	half := erofstest.Stack()[0]
	half = half[:len(half)/2]
	for _, from := range []string{"stdin", "fifo"} {
		t.Run(from, func(t *testing.T) {
			dir := t.TempDir()
			outDir := filepath.Join(dir, "out")
			os.Mkdir(outDir, 0o755)
			in := "-"
			if from == "fifo" {
				testutil.RequireHost(t, "mkfifo")
				in = filepath.Join(dir, "fifo")
				if err := exec.Command("mkfifo", in).Run(); err != nil {
					t.Fatal(err)
				}
			}
			cmd := intactProcess(t, "layer", "convert", in, "-o", filepath.Join(outDir, "layer.img"))
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			var w interface {
				Write([]byte) (int, error)
				Close() error
			}
			if from == "stdin" {
				p, err := cmd.StdinPipe()
				if err != nil {
					t.Fatal(err)
				}
				w = p
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			if from == "fifo" {
				f, err := os.OpenFile(in, os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				w = f
			}
			defer w.Close()
			if _, err := w.Write(half); err != nil {
				t.Fatal(err)
			}
			waitOpenIn(t, cmd.Process.Pid, outDir)
			time.Sleep(100 * time.Millisecond) // let it block on the input
			cmd.Process.Signal(os.Interrupt)
			st := waitExit(t, cmd, 30*time.Second)
			if st.ExitCode() != 130 || strings.TrimSpace(stderr.String()) != "intact: interrupted" {
				t.Errorf("exit %d, stderr %q; want 130 and \"intact: interrupted\"", st.ExitCode(), stderr.String())
			}
			if ents, _ := os.ReadDir(outDir); len(ents) != 0 {
				t.Errorf("left behind: %v", ents)
			}
		})
	}
}

// TestSecondInterruptEnds: a process stuck where the first Ctrl-C cannot
// reach (open(2) of a FIFO without a writer blocks in the kernel) ends at
// the second Ctrl-C, by the signal. The old code swallowed every signal
// after the first.
func TestSecondInterruptEnds(t *testing.T) {
	testutil.RequireHost(t, "mkfifo")
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := exec.Command("mkfifo", fifo).Run(); err != nil {
		t.Fatal(err)
	}
	cmd := intactProcess(t, "layer", "convert", fifo, "-o", filepath.Join(dir, "layer.img"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFIFOOpen(t, cmd.Process.Pid)
	cmd.Process.Signal(os.Interrupt)
	time.Sleep(300 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the first interrupt ended a process blocked in open(2): %v", err)
	}
	cmd.Process.Signal(os.Interrupt)
	st := waitExit(t, cmd, 30*time.Second)
	ws, ok := st.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGINT {
		t.Errorf("process ended with %v, want death by SIGINT", st)
	}
}

// waitFIFOOpen waits until a thread of pid sleeps in the kernel's FIFO
// open (wait_for_partner), or gives up after a while and carries on.
func waitFIFOOpen(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/wchan")
		for _, w := range tasks {
			if b, _ := os.ReadFile(w); strings.Contains(string(b), "wait_for_partner") || strings.Contains(string(b), "fifo_open") {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Log("no thread seen in wait_for_partner; sending the interrupts anyway")
}
