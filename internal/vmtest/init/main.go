// Command init is PID 1 of the VM tier's initramfs (internal/vmtest). It
// mounts proc, sys, devtmpfs, securityfs, efivarfs and tmpfs, loads the
// kernel modules the run needs (xz modules are decompressed by the kernel,
// finit_module with MODULE_INIT_COMPRESSED_FILE), mounts the scratch ext4,
// runs the test program with its output on the second serial port, reports
// the exit status on the third, and powers the machine off. It must be
// built with CGO_ENABLED=0.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/internal/linux/vmguest"
	"github.com/intact-project/intact/internal/vmtest/guest"
)

func main() {
	status := io.Writer(os.Stdout)
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(status, "%s init panic: %v\n", guest.StatusError, r)
			poweroff()
		}
	}()
	mountBasics()
	st, err := openPort(guest.StatusPort)
	if err != nil {
		fail(os.Stdout, "open status port: %v", err)
	}
	status = st
	fmt.Fprintf(st, "\n%s uptime=%s\n", guest.StatusReady, uptime())
	code, err := run(st)
	if err != nil {
		fail(st, "%v", err)
	}
	fmt.Fprintf(st, "\n%s %d\n", guest.StatusExit, code)
	vmguest.Tcdrain(st.Fd())
	poweroff()
}

func fail(w io.Writer, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintf(os.Stdout, "intact-init: %s\n", msg)
	fmt.Fprintf(w, "\n%s %s\n", guest.StatusError, strings.ReplaceAll(msg, "\n", " "))
	if f, ok := w.(*os.File); ok {
		vmguest.Tcdrain(f.Fd())
	}
	poweroff()
}

func poweroff() {
	if err := linux.PowerOff(); err != nil {
		fmt.Fprintf(os.Stdout, "intact-init: %v\n", err)
	}
	select {}
}

func uptime() string {
	b, _ := os.ReadFile("/proc/uptime")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0] + "s"
}

// relocated maps a directory the initramfs carried under a path that a
// tmpfs is mounted over (/tmp, /run) to where keepOvermounted moved it. The
// host copies a package directory into the guest at its host path, and a
// fresh clone may well live under /tmp.
var relocated = map[string]string{}

// keepOvermounted moves a non-empty directory out of the way before a tmpfs
// hides it.
func keepOvermounted(dst string) {
	ents, err := os.ReadDir(dst)
	if err != nil || len(ents) == 0 {
		return
	}
	moved := "/intact/overmounted" + dst
	os.MkdirAll(filepath.Dir(moved), 0o755)
	if err := os.Rename(dst, moved); err != nil {
		fmt.Fprintf(os.Stdout, "intact-init: keep %s: %v\n", dst, err)
		return
	}
	relocated[dst] = moved
}

// guestPath rewrites p if it lies in a directory keepOvermounted moved.
func guestPath(p string) string {
	for from, to := range relocated {
		if p == from || strings.HasPrefix(p, from+"/") {
			return to + strings.TrimPrefix(p, from)
		}
	}
	return p
}

func mountBasics() {
	mounts := []struct {
		src, dst, fs string
		flags        uintptr
		data         string
	}{
		{"proc", "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", linux.MS_NOSUID, "mode=0755"},
		{"securityfs", "/sys/kernel/security", "securityfs", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC, ""},
		{"tmpfs", "/tmp", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=0755"},
	}
	for _, m := range mounts {
		if m.fs == "tmpfs" {
			keepOvermounted(m.dst)
		}
		os.MkdirAll(m.dst, 0o755)
		if err := linux.Mount(m.src, m.dst, m.fs, m.flags, m.data); err != nil {
			fmt.Fprintf(os.Stdout, "intact-init: %v\n", err)
		}
	}
	os.MkdirAll("/dev/mapper", 0o755)
	os.Symlink("/proc/self/fd", "/dev/fd")
}

func openPort(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	if err := vmguest.MakeRaw(f.Fd()); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

func run(st *os.File) (int, error) {
	data, err := os.ReadFile(guest.ConfigPath)
	if err != nil {
		return 0, fmt.Errorf("read run configuration: %w", err)
	}
	var cfg guest.Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		return 0, fmt.Errorf("parse %s: %w", guest.ConfigPath, err)
	}
	if len(cfg.Args) == 0 {
		return 0, errors.New("run configuration names no program")
	}
	for _, m := range cfg.Modules {
		if err := loadModule(m); err != nil {
			return 0, err
		}
	}
	// Loopback only: the VM has no network card (-nic none), but tests run
	// servers on 127.0.0.1 (an in-process registry, for example).
	if err := vmguest.LinkUp("lo"); err != nil {
		return 0, fmt.Errorf("loopback: %w", err)
	}
	if _, err := os.Stat("/sys/firmware/efi/efivars"); err == nil {
		linux.Mount("efivarfs", "/sys/firmware/efi/efivars", "efivarfs", linux.MS_NOSUID|linux.MS_NODEV|linux.MS_NOEXEC, "")
	}
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root", "TMPDIR=/tmp", "TERM=dumb",
		guest.EnvInVM + "=1",
	}
	if cfg.SecureBoot {
		env = append(env, guest.EnvSecureBoot+"=1")
	}
	if cfg.ScratchSerial != "" {
		mnt, err := mountScratch(cfg.ScratchSerial, cfg.ScratchMount)
		if err != nil {
			return 0, err
		}
		env = append(env, guest.EnvScratchExt4+"="+mnt)
	}
	env = append(env, cfg.Env...)
	os.MkdirAll("/root", 0o700)
	out, err := openPort(guest.OutputPort)
	if err != nil {
		return 0, fmt.Errorf("open output port: %w", err)
	}
	defer out.Close()
	if _, err := io.WriteString(out, guest.OutputBegin); err != nil {
		return 0, fmt.Errorf("output port: %w", err)
	}
	fmt.Fprintf(os.Stdout, "intact-init: running %s (uptime %s)\n", strings.Join(cfg.Args, " "), uptime())
	cmd := exec.Command(cfg.Args[0], cfg.Args[1:]...)
	cmd.Env = env
	cmd.Dir = guestPath(cfg.Dir)
	cmd.Stdout = out
	cmd.Stderr = out
	start := time.Now()
	err = cmd.Run()
	vmguest.Tcdrain(out.Fd())
	fmt.Fprintf(os.Stdout, "intact-init: %s finished after %s: %v\n", filepath.Base(cfg.Args[0]), time.Since(start).Round(time.Millisecond), err)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee):
		if ee.ExitCode() < 0 {
			return 128 + 9, nil // killed by a signal
		}
		return ee.ExitCode(), nil
	}
	return 0, fmt.Errorf("run %s: %w", cfg.Args[0], err)
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("load module: %w", err)
	}
	defer f.Close()
	flags := 0
	if strings.HasSuffix(path, ".xz") || strings.HasSuffix(path, ".zst") || strings.HasSuffix(path, ".gz") {
		flags = linux.ModuleInitCompressedFile
	}
	if err := linux.FinitModule(f, "", flags); err != nil && !errors.Is(err, linux.EEXIST) {
		return fmt.Errorf("load module: %w", err)
	}
	return nil
}

// mountScratch finds the virtio disk whose serial is serial and mounts its
// ext4 file system at mnt.
func mountScratch(serial, mnt string) (string, error) {
	var dev string
	for i := 0; i < 50 && dev == ""; i++ {
		matches, _ := filepath.Glob("/sys/block/*/serial")
		for _, m := range matches {
			b, err := os.ReadFile(m)
			if err == nil && strings.TrimSpace(string(b)) == serial {
				dev = "/dev/" + filepath.Base(filepath.Dir(m))
			}
		}
		if dev == "" {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if dev == "" {
		return "", fmt.Errorf("scratch disk with serial %q not found", serial)
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return "", err
	}
	if err := linux.Mount(dev, mnt, "ext4", 0, ""); err != nil {
		return "", fmt.Errorf("scratch ext4: %w", err)
	}
	return mnt, nil
}
