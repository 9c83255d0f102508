// Command vmexec runs a program (usually a Go test binary) inside the VM
// test tier's guest (internal/vmtest) and exits with its exit status, so it
// works as `go test -exec`:
//
//	go build -o bin/vmexec ./internal/vmtest/cmd/vmexec
//	CGO_ENABLED=0 go test -exec "$PWD/bin/vmexec --mode secureboot" ./dm/...
//
// The program's stdout and stderr come back on stdout; the kernel console
// is shown (on stderr) only with --console or when the guest dies without
// an exit status, which is always a failure. Flags may also come from the
// environment: INTACT_VM_MODE, INTACT_VM_TOOLS (comma-separated),
// INTACT_VM_APPEND, INTACT_VM_TIMEOUT, INTACT_VM_CONSOLE=1,
// INTACT_VM_TIMING_LOG (a file to which one line of boot and run times per
// run is appended).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/intact-project/intact/internal/vmtest"
)

type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			*l = append(*l, v)
		}
	}
	return nil
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(argv []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("vmexec", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: vmexec [flags] PROGRAM [ARGS...]\n\nRuns PROGRAM inside the intact test VM and exits with its status.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	mode := fs.String("mode", envOr("INTACT_VM_MODE", "secureboot"), "boot mode: secureboot (OVMF, signed UKI, test CA in db) or direct (-kernel, no keys)")
	var tools, files, modules listFlag
	tools.Set(os.Getenv("INTACT_VM_TOOLS"))
	fs.Var(&tools, "tool", "host tool to carry into the guest with its libraries (repeatable or comma-separated)")
	fs.Var(&files, "file", "HOST:GUEST file to copy into the guest (repeatable)")
	fs.Var(&modules, "module", "kernel module to load in addition to the defaults (repeatable)")
	appendArgs := fs.String("append", os.Getenv("INTACT_VM_APPEND"), "extra kernel command line")
	timeout := fs.Duration("timeout", 0, "bound on the whole run (default: the test binary's -test.timeout plus 3m, else 10m; env INTACT_VM_TIMEOUT)")
	mem := fs.Int("mem", 2048, "guest memory in MiB")
	cpus := fs.Int("cpus", 2, "guest CPUs")
	console := fs.Bool("console", os.Getenv("INTACT_VM_CONSOLE") == "1", "stream the kernel console to stderr")
	noScratch := fs.Bool("no-scratch", false, "do not attach the scratch ext4 disk")
	keep := fs.Bool("keep", false, "keep the work directory (initramfs, UKI, logs) and print its path")
	unsigned := fs.Bool("unsigned", false, "negative control: boot an unsigned UKI (Secure Boot must refuse it)")
	dir := fs.String("dir", "", "host directory copied into the guest and used as working directory (default: the current directory)")
	verbose := fs.Bool("v", false, "log what the harness does on stderr")
	if err := fs.Parse(argv); err != nil {
		return 2
	}
	if fs.NArg() < 1 {
		fs.Usage()
		return 2
	}
	prog, args := fs.Arg(0), fs.Args()[1:]
	var fm []vmtest.FileMap
	for _, f := range files {
		host, guestPath, ok := strings.Cut(f, ":")
		if !ok || host == "" || guestPath == "" {
			fmt.Fprintf(stderr, "vmexec: --file %q: want HOST:GUEST\n", f)
			return 2
		}
		fm = append(fm, vmtest.FileMap{Host: host, Guest: guestPath})
	}
	if *timeout == 0 {
		if t := os.Getenv("INTACT_VM_TIMEOUT"); t != "" {
			d, err := time.ParseDuration(t)
			if err != nil {
				fmt.Fprintf(stderr, "vmexec: INTACT_VM_TIMEOUT=%q: %v\n", t, err)
				return 2
			}
			*timeout = d
		}
	}
	// go test passes -test.testlogfile for its cache; the file lives on the
	// host, so drop it (the run is then simply not cached).
	var keptArgs []string
	for _, a := range args {
		if strings.HasPrefix(a, "-test.testlogfile=") {
			continue
		}
		if strings.HasPrefix(a, "-test.timeout=") && *timeout == 0 {
			if d, err := time.ParseDuration(strings.TrimPrefix(a, "-test.timeout=")); err == nil && d > 0 {
				*timeout = d + 3*time.Minute
			}
		}
		keptArgs = append(keptArgs, a)
	}
	if *dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			fmt.Fprintf(stderr, "vmexec: %v\n", err)
			return 1
		}
		*dir = wd
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	opts := vmtest.Options{
		Mode: vmtest.Mode(*mode), Program: prog, Args: keptArgs, Dir: *dir, Files: fm, Tools: tools,
		Append: *appendArgs, Timeout: *timeout, MemoryMB: *mem, CPUs: *cpus, NoScratch: *noScratch,
		Output: stdout, Log: log, KeepDir: *keep, Unsigned: *unsigned,
	}
	for _, k := range []string{"INTACT_TEST_STRICT", "GOTRACEBACK", "GODEBUG"} {
		if v, ok := os.LookupEnv(k); ok {
			opts.Env = append(opts.Env, k+"="+v)
		}
	}
	if len(modules) > 0 {
		opts.Modules = append(append([]string(nil), vmtest.DefaultModules...), modules...)
	}
	if *console {
		opts.Console = stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	res, err := vmtest.Run(ctx, opts)
	if res != nil {
		logTiming(prog, *mode, res, time.Since(start))
		if *keep && res.WorkDir != "" {
			fmt.Fprintf(stderr, "vmexec: work directory kept: %s\n", res.WorkDir)
		}
		if *verbose {
			fmt.Fprintf(stderr, "vmexec: %s boot %s (guest uptime at init %s), VM %s, total %s, exit %d\n",
				*mode, res.Boot.Round(time.Millisecond), res.GuestUptime, res.Total.Round(time.Millisecond),
				time.Since(start).Round(time.Millisecond), res.ExitCode)
		}
	}
	if err != nil {
		// A *vmtest.GuestError carries the console tail in its message.
		fmt.Fprintf(stderr, "vmexec: %v\n", err)
		return 1
	}
	return res.ExitCode
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// logTiming appends one line per run to $INTACT_VM_TIMING_LOG.
func logTiming(prog, mode string, res *vmtest.Result, total time.Duration) {
	path := os.Getenv("INTACT_VM_TIMING_LOG")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	wd, _ := os.Getwd()
	fmt.Fprintf(f, "%-40s %-10s boot %6.1fs  guest-uptime-at-init %-8s  vm %6.1fs  total %6.1fs  exit %d\n",
		filepath.Base(wd)+"/"+filepath.Base(prog), mode, res.Boot.Seconds(), res.GuestUptime, res.Total.Seconds(), total.Seconds(), res.ExitCode)
}
