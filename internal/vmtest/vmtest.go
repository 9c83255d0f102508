// Package vmtest boots Debian's current stable cloud kernel under QEMU and
// runs a program, usually a Go test binary, inside it: the real-kernel test
// tier for device-mapper, dm-verity signatures, fs-verity, keyrings and IPE.
//
// Run fetches and verifies the inputs (Fetch: kernel and modules, OVMF, the
// systemd EFI stub, virt-firmware; cached under ~/.cache/intact/vm), builds
// an initramfs (package initramfs) around the guest init
// (internal/vmtest/init), the program, the modules it needs, optional host
// tools with their shared libraries and a throwaway test PKI, and boots it
// either directly (-kernel/-initrd, no firmware: fast, no keys trusted) or
// through OVMF Secure Boot: a fresh PK/KEK/db hierarchy is enrolled into a
// copy of the variable store, the kernel, initramfs and command line are
// assembled into a UKI (package uki) signed with Authenticode (package efi)
// by a leaf of the db CA, and the firmware boots it from an ESP. The kernel then loads the db CA into its platform keyring,
// so dm-verity root-hash signatures and IPE policies signed by the guest's
// test key are trusted.
//
// The guest's kernel console (ttyS0), the program's output (ttyS1) and the
// init's status lines (ttyS2) travel on separate serial ports, so kernel
// noise never mixes with test output and a guest that dies or hangs cannot
// be mistaken for one that passed. The command internal/vmtest/cmd/vmexec
// wraps Run for `go test -exec`.
package vmtest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/intact-project/intact/initramfs"
	"github.com/intact-project/intact/internal/vmassets"
	"github.com/intact-project/intact/internal/vmtest/guest"
)

// Mode is how the guest boots.
type Mode string

// Boot modes.
const (
	// Direct boots the kernel with QEMU's -kernel/-initrd: no firmware, no
	// keys in the platform keyring.
	Direct Mode = "direct"
	// SecureBoot boots a signed UKI through OVMF with Secure Boot enforcing
	// and the run's test CA enrolled in db.
	SecureBoot Mode = "secureboot"
)

// FileMap copies a host file to a path in the guest.
type FileMap struct{ Host, Guest string }

// Options configures Run.
type Options struct {
	Mode    Mode     // zero means Direct
	Program string   // host path of the program to run (a test binary or any executable)
	Args    []string // its arguments
	Env     []string // extra environment (KEY=VALUE) for the program
	// Dir is a host directory copied into the guest at the same path and
	// used as the working directory (go test runs a test binary in its
	// package directory; tests read testdata/ relative to it). Empty: "/".
	Dir     string
	Files   []FileMap
	Tools   []string // host tools carried along with their shared libraries (veritysetup, openssl, ...)
	Modules []string // kernel modules; nil means DefaultModules
	Append  string   // extra kernel command line
	// Timeout bounds the whole run from QEMU's start; zero means 10 minutes.
	Timeout  time.Duration
	MemoryMB int // zero means 2048
	CPUs     int // zero means 2
	// NoScratch omits the scratch ext4 disk; ScratchMB is its size (zero: 256).
	NoScratch bool
	ScratchMB int

	Output  io.Writer // the program's stdout and stderr; nil discards
	Console io.Writer // the live kernel console; nil keeps only the tail for errors
	Log     *slog.Logger
	Fetch   FetchOptions
	UKI     UKIBuilder // nil means BuildUKI

	// Unsigned boots the UKI without signing it (a negative control: Secure
	// Boot must refuse it and the run must fail).
	Unsigned bool
	// Vars, in Secure Boot mode, is a variable store file to boot with (and
	// write to) instead of a fresh one with the run's keys enrolled: for
	// example OVMF's empty store, in which the firmware is in setup mode.
	// The guest then gets no trusted keys (INTACT_VM_SECUREBOOT unset),
	// unless PKI is set.
	Vars string
	// PKI, if set, is the run's key hierarchy instead of a fresh one
	// (NewPKI): the UKI is signed by its UKI signer and the guest gets its
	// keys. With Vars, the caller enrolled it in that store (EnrollVars),
	// so several runs can boot one persistent variable store with Secure
	// Boot on and the same trusted keys.
	PKI *PKI
	// KeepDir keeps the work directory (initramfs, UKI, logs) for debugging.
	KeepDir bool
}

// Result is the outcome of a run whose guest reported an exit status.
type Result struct {
	ExitCode int
	// Boot is the host time from QEMU's start to the guest init's first
	// status line (firmware, kernel and initramfs unpacking included).
	Boot time.Duration
	// GuestUptime is the guest kernel's uptime when the init started.
	GuestUptime string
	Total       time.Duration
	ConsoleTail string
	WorkDir     string // set when KeepDir
}

// Errors of Run. A *GuestError wraps ErrTimeout, ErrNoStatus or ErrGuest.
var (
	ErrTimeout  = errors.New("vmtest: guest did not finish before the timeout")
	ErrNoStatus = errors.New("vmtest: guest ended without reporting an exit status (kernel panic, init crash or firmware refused to boot)")
	ErrGuest    = errors.New("vmtest: guest init failed")
)

// GuestError is a run that did not produce an exit status; it carries the
// tail of the kernel console.
type GuestError struct {
	Err         error
	Detail      string
	ConsoleTail string
}

func (e *GuestError) Error() string {
	msg := e.Err.Error()
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg + "\n--- console tail ---\n" + e.ConsoleTail + "\n--- end of console ---"
}

func (e *GuestError) Unwrap() error { return e.Err }

// DefaultCPU is the QEMU CPU model; see vmassets.DefaultCPU.
const DefaultCPU = vmassets.DefaultCPU

const (
	scratchSerial = "intact-scratch"
	scratchMount  = "/scratch/ext4"
	consoleTail   = 6000
)

// Run boots a VM and runs opts.Program in it.
func Run(ctx context.Context, opts Options) (*Result, error) {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Mode == "" {
		opts.Mode = Direct
	}
	if opts.Mode != Direct && opts.Mode != SecureBoot {
		return nil, fmt.Errorf("vmtest: unknown mode %q (direct or secureboot)", opts.Mode)
	}
	if opts.Program == "" {
		return nil, errors.New("vmtest: no program to run")
	}
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Minute
	}
	if opts.Fetch.Log == nil {
		opts.Fetch.Log = log
	}
	a, err := Fetch(ctx, opts.Fetch)
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "intact-vm-")
	if err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	if !opts.KeepDir {
		defer os.RemoveAll(work)
	}
	root := opts.Fetch.RepoRoot
	if root == "" {
		wd, _ := os.Getwd()
		if root, err = RepoRoot(wd); err != nil {
			return nil, err
		}
	}
	t0 := time.Now()
	initBin := filepath.Join(work, "init")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", initBin, "./internal/vmtest/init")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("vmtest: build guest init: %w: %s", err, out)
	}
	pki := opts.PKI
	if pki == nil {
		if pki, err = NewPKI(filepath.Join(work, "pki")); err != nil {
			return nil, err
		}
	}
	initrd := filepath.Join(work, "initrd.cpio")
	if err := buildInitramfs(ctx, a, opts, initBin, pki, initrd); err != nil {
		return nil, err
	}
	// no_timer_check: under a loaded TCG host the kernel otherwise sometimes
	// panics with "IO-APIC + timer doesn't work".
	cmdline := "console=ttyS0,115200 panic=-1 oops=panic loglevel=4 no_timer_check"
	if opts.Append != "" {
		cmdline += " " + opts.Append
	}
	args := []string{
		"-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-no-reboot",
		"-nic", "none",
		"-m", strconv.Itoa(cmp0(opts.MemoryMB, 2048)), "-smp", strconv.Itoa(cmp0(opts.CPUs, 2)),
		"-cpu", envOr("INTACT_VM_CPU", DefaultCPU),
		"-serial", "file:" + filepath.Join(work, "console.log"),
		"-serial", "file:" + filepath.Join(work, "output.log"),
		"-serial", "file:" + filepath.Join(work, "status.log"),
	}
	// TCG (CI has no KVM), single-threaded: multi-threaded TCG added its own
	// early-boot crashes. INTACT_VM_ACCEL=kvm uses KVM where it exists.
	accel := envOr("INTACT_VM_ACCEL", "tcg,thread=single")
	if !opts.NoScratch {
		img := filepath.Join(work, "scratch.img")
		if err := makeScratch(ctx, img, cmp0(opts.ScratchMB, 256)); err != nil {
			return nil, err
		}
		args = append(args, "-drive", "if=none,id=scratch,format=raw,file="+img,
			"-device", "virtio-blk-pci,drive=scratch,serial="+scratchSerial)
	}
	switch opts.Mode {
	case Direct:
		args = append(args, "-machine", "q35", "-accel", accel,
			"-kernel", a.Vmlinuz(), "-initrd", initrd, "-append", cmdline)
	case SecureBoot:
		vars := opts.Vars
		if vars == "" {
			vars = filepath.Join(work, "vars.fd")
			if err := EnrollVars(ctx, a, pki, vars); err != nil {
				return nil, err
			}
		}
		esp := filepath.Join(work, "esp")
		if err := os.MkdirAll(filepath.Join(esp, "EFI", "BOOT"), 0o755); err != nil {
			return nil, fmt.Errorf("vmtest: %w", err)
		}
		uki := filepath.Join(work, "uki.efi")
		builder := opts.UKI
		if builder == nil {
			builder = BuildUKI
		}
		if err := builder(ctx, UKIInput{Stub: a.Stub(), Kernel: a.Vmlinuz(), Initrd: initrd, Cmdline: cmdline, Uname: a.KernelRelease}, uki); err != nil {
			return nil, err
		}
		bootx64 := filepath.Join(esp, "EFI", "BOOT", "BOOTX64.EFI")
		if opts.Unsigned {
			err = os.Rename(uki, bootx64)
		} else {
			err = SignEFI(pki.UKISigner, uki, bootx64)
		}
		if err != nil {
			return nil, err
		}
		os.Remove(uki)
		args = append(args, "-machine", "q35,smm=on", "-accel", accel,
			"-global", "driver=cfi.pflash01,property=secure,value=on",
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+a.OVMFCode(),
			"-drive", "if=pflash,format=raw,unit=1,file="+vars,
			"-drive", "if=none,id=esp,format=raw,readonly=on,file=fat:"+esp,
			"-device", "virtio-blk-pci,drive=esp,bootindex=1")
	}
	log.Debug("vmtest: prepared", "took", time.Since(t0).Round(time.Millisecond), "mode", opts.Mode)
	res, err := runQEMU(ctx, opts, work, args, log)
	if res != nil && opts.KeepDir {
		res.WorkDir = work
	}
	return res, err
}

func cmp0(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func makeScratch(ctx context.Context, img string, mb int) error {
	f, err := os.Create(img)
	if err != nil {
		return fmt.Errorf("vmtest: scratch disk: %w", err)
	}
	err = f.Truncate(int64(mb) << 20)
	f.Close()
	if err != nil {
		return fmt.Errorf("vmtest: scratch disk: %w", err)
	}
	if out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "verity", "-L", "intact-scratch", img).CombinedOutput(); err != nil {
		return fmt.Errorf("vmtest: mkfs.ext4 scratch disk: %w: %s", err, out)
	}
	return nil
}

func runQEMU(ctx context.Context, opts Options, work string, args []string, log *slog.Logger) (*Result, error) {
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	for _, f := range []string{"console.log", "output.log", "status.log"} {
		if err := os.WriteFile(filepath.Join(work, f), nil, 0o644); err != nil {
			return nil, fmt.Errorf("vmtest: %w", err)
		}
	}
	cmd := exec.Command("qemu-system-x86_64", args...)
	cmd.Stdin = nil
	var qemuOut strings.Builder
	cmd.Stdout = &qemuOut
	cmd.Stderr = &qemuOut
	log.Debug("vmtest: starting qemu", "args", strings.Join(args, " "))
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("vmtest: start qemu: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	outTail := newTail(filepath.Join(work, "output.log"), opts.Output)
	outTail.begin = []byte(guest.OutputBegin)
	conTail := newTail(filepath.Join(work, "console.log"), opts.Console)
	res := &Result{ExitCode: -1}
	var status statusState
	statusPath := filepath.Join(work, "status.log")
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var exitErr error
	timedOut, firmwareGaveUp := false, false
	var exitSeen time.Time
loop:
	for {
		select {
		case exitErr = <-exited:
			break loop
		case <-ctx.Done():
			timedOut = true
			cmd.Process.Kill()
			exitErr = <-exited
			break loop
		case <-tick.C:
			outTail.poll()
			conTail.poll()
			status.read(statusPath)
			if status.ready && res.Boot == 0 {
				res.Boot = time.Since(start)
				res.GuestUptime = status.uptime
				log.Debug("vmtest: guest init started", "boot", res.Boot.Round(time.Millisecond), "guest_uptime", status.uptime)
			}
			if !status.ready && conTail.firmwareGaveUp() {
				firmwareGaveUp = true
				cmd.Process.Kill()
			}
			if status.done && exitSeen.IsZero() {
				exitSeen = time.Now()
			}
			// The guest powers off after reporting; do not wait forever
			// for a machine that hangs on the way down.
			if !exitSeen.IsZero() && time.Since(exitSeen) > 30*time.Second {
				cmd.Process.Kill()
			}
		}
	}
	res.Total = time.Since(start)
	outTail.poll()
	conTail.poll()
	status.read(statusPath)
	res.ConsoleTail = readTail(filepath.Join(work, "console.log"), consoleTail)
	if status.ready && res.Boot == 0 {
		res.Boot = res.Total
		res.GuestUptime = status.uptime
	}
	detail := ""
	if q := strings.TrimSpace(qemuOut.String()); q != "" {
		detail = "qemu: " + lastLines(q, 5)
	}
	switch {
	case status.done:
		res.ExitCode = status.code
		return res, nil
	case status.errMsg != "":
		return res, &GuestError{Err: ErrGuest, Detail: status.errMsg, ConsoleTail: res.ConsoleTail}
	case firmwareGaveUp:
		return res, &GuestError{Err: ErrNoStatus, Detail: "the firmware found nothing it would boot (Secure Boot refused the UKI?)", ConsoleTail: res.ConsoleTail}
	case timedOut:
		return res, &GuestError{Err: ErrTimeout, Detail: fmt.Sprintf("after %s", opts.Timeout), ConsoleTail: res.ConsoleTail}
	}
	if exitErr != nil {
		detail = strings.TrimSpace(fmt.Sprintf("qemu: %v %s", exitErr, detail))
	}
	return res, &GuestError{Err: ErrNoStatus, Detail: detail, ConsoleTail: res.ConsoleTail}
}

type statusState struct {
	ready, done bool
	code        int
	uptime      string
	errMsg      string
}

func (s *statusState) read(path string) {
	b, err := readFileLimit(path, 1<<20)
	if err != nil {
		return
	}
	// Only complete lines count: the guest may be in the middle of one.
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i+1]
	} else {
		return
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, guest.StatusReady):
			s.ready = true
			s.uptime = strings.TrimPrefix(strings.TrimSpace(strings.TrimPrefix(line, guest.StatusReady)), "uptime=")
		case strings.HasPrefix(line, guest.StatusExit+" "):
			if n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, guest.StatusExit+" "))); err == nil {
				s.done, s.code = true, n
			}
		case strings.HasPrefix(line, guest.StatusError+" "):
			s.errMsg = strings.TrimPrefix(line, guest.StatusError+" ")
		}
	}
}

// tail follows a file that QEMU appends to and copies new bytes to w.
type tail struct {
	path string
	w    io.Writer
	off  int64
	last []byte // the last bytes seen, for pattern checks
	// begin, if set, is a marker: nothing up to and including it is copied.
	begin []byte
	pre   []byte
}

func newTail(path string, w io.Writer) *tail { return &tail{path: path, w: w} }

// firmwareGaveUp reports OVMF's message after every boot option failed.
func (t *tail) firmwareGaveUp() bool {
	return bytes.Contains(t.last, []byte("No bootable option or device was found"))
}

func (t *tail) poll() {
	f, err := os.Open(t.path)
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := f.Seek(t.off, io.SeekStart); err != nil {
		return
	}
	b, _ := io.ReadAll(io.LimitReader(f, 16<<20))
	t.off += int64(len(b))
	if t.begin != nil {
		t.pre = append(t.pre, b...)
		i := bytes.Index(t.pre, t.begin)
		if i < 0 {
			if len(t.pre) > 1<<20 {
				t.pre = t.pre[len(t.pre)-len(t.begin):]
			}
			b = nil
		} else {
			b = t.pre[i+len(t.begin):]
			t.begin, t.pre = nil, nil
		}
	}
	if t.w != nil && len(b) > 0 {
		t.w.Write(b)
	}
	t.last = append(t.last, b...)
	if len(t.last) > 4096 {
		t.last = t.last[len(t.last)-4096:]
	}
}

func readTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	if st.Size() > n {
		f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return strings.ToValidUTF8(strings.ReplaceAll(string(b), "\r", ""), "?")
}

// buildInitramfs writes the guest's initramfs.
func buildInitramfs(ctx context.Context, a *Assets, opts Options, initBin string, pki *PKI, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("vmtest: initramfs: %w", err)
	}
	defer f.Close()
	w := initramfs.NewWriter(f)
	h := &hostFiles{w: w, done: map[string]bool{}}
	for _, d := range []string{"proc", "sys", "dev", "tmp", "run", "root", "intact"} {
		if err := w.Dir(d, 0o755); err != nil {
			return err
		}
	}
	if err := w.CharDev("dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	if err := w.CopyFile("init", initBin); err != nil {
		return err
	}
	// Kernel modules, dependencies first.
	mods := opts.Modules
	if mods == nil {
		mods = DefaultModules
	}
	rels, err := resolveModules(ctx, a.ModulesDir(), mods)
	if err != nil {
		return err
	}
	cfg := guest.Config{Dir: "/", SecureBoot: opts.Mode == SecureBoot && !opts.Unsigned && (opts.Vars == "" || opts.PKI != nil)}
	inKernel := a.KernelDecompressesModules()
	for _, rel := range rels {
		gp := "/intact/modules/" + filepath.ToSlash(rel)
		src := filepath.Join(a.ModulesDir(), rel)
		if !inKernel && strings.HasSuffix(rel, ".xz") {
			raw, err := exec.CommandContext(ctx, "xz", "-dc", src).Output()
			if err != nil {
				return fmt.Errorf("vmtest: decompress module %s: %w", rel, err)
			}
			gp = strings.TrimSuffix(gp, ".xz")
			if err := w.Bytes(gp, 0o644, raw); err != nil {
				return err
			}
		} else if err := w.CopyFile(gp, src); err != nil {
			return err
		}
		cfg.Modules = append(cfg.Modules, gp)
	}
	// The program; a dynamically linked one brings its libraries.
	prog := "/intact/bin/" + filepath.Base(opts.Program)
	if err := w.CopyFile(prog, opts.Program); err != nil {
		return err
	}
	if err := h.addLibs(ctx, opts.Program); err != nil {
		return err
	}
	cfg.Args = append([]string{prog}, opts.Args...)
	if opts.Dir != "" {
		dir, err := filepath.Abs(opts.Dir)
		if err != nil {
			return fmt.Errorf("vmtest: %w", err)
		}
		if err := h.addTree(dir); err != nil {
			return err
		}
		cfg.Dir = dir
	}
	for _, t := range opts.Tools {
		if err := h.addTool(ctx, t); err != nil {
			return err
		}
	}
	for _, fm := range opts.Files {
		if fm.Guest == "" {
			fm.Guest = fm.Host
		}
		if err := w.CopyFile(fm.Guest, fm.Host); err != nil {
			return err
		}
		if err := h.addLibs(ctx, fm.Host); err != nil {
			return err
		}
		h.done[filepath.Clean(fm.Guest)] = true
	}
	// The test PKI: a leaf under the db CA and an untrusted pair.
	keys := map[string]string{
		guest.EnvCACert:          pki.DBFiles.RootPEM,
		guest.EnvSignCert:        pki.DBFiles.CertPEM,
		guest.EnvSignKey:         pki.DBFiles.KeyPEM,
		guest.EnvUntrustedCACert: pki.UntrustFile.RootPEM,
		guest.EnvUntrustedCert:   pki.UntrustFile.CertPEM,
		guest.EnvUntrustedKey:    pki.UntrustFile.KeyPEM,
		guest.EnvCAKey:           pki.DBFiles.RootKey,
		guest.EnvRevokedTBSKey:   pki.RevokedTBSKey,
		guest.EnvRevokedTBSCert:  pki.RevokedTBSCert,
		guest.EnvRevokedX509Key:  pki.RevokedX509Key,
		guest.EnvRevokedX509Cert: pki.RevokedX509Cert,
	}
	for env, host := range keys {
		rel, _ := filepath.Rel(pki.Dir, host)
		gp := "/intact/pki/" + filepath.ToSlash(rel)
		if err := w.CopyFile(gp, host); err != nil {
			return err
		}
		cfg.Env = append(cfg.Env, env+"="+gp)
	}
	cfg.Env = append(cfg.Env, opts.Env...)
	if !opts.NoScratch {
		cfg.ScratchSerial = scratchSerial
		cfg.ScratchMount = scratchMount
	}
	js, err := json.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	if err := w.Bytes(guest.ConfigPath, 0o644, js); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return f.Close()
}
