package host

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/intact-project/intact/efi"
	"github.com/intact-project/intact/internal/vmassets"
)

// RunOptions configures Run.
type RunOptions struct {
	// Disk is the disk image to boot from (the firmware finds
	// EFI/BOOT/BOOTX64.EFI on its ESP; no -kernel).
	Disk string
	// Disks are more disks, tried by the firmware before Disk in this
	// order (tests put images it must refuse there).
	Disks []string
	// Keys is a key set directory: its PK, KEK and db certificates are
	// enrolled into a fresh copy of OVMF's variable store (Secure Boot
	// on, no Microsoft keys). Ignored when Vars names an existing file.
	Keys string
	// Vars is a variable store to use and keep (enrollment done inside the
	// guest persists there); empty means a temporary one.
	Vars string
	// SetupMode starts from OVMF's empty variable store (setup mode,
	// Secure Boot off) instead of enrolling Keys.
	SetupMode bool
	// Snapshot discards the guest's writes to Disk.
	Snapshot bool
	MemoryMB int // zero means 2048
	CPUs     int // zero means 2
	// QEMUArgs are appended to QEMU's arguments (for example
	// "-nic", "user,restrict=on,guestfwd=..."); without any -nic/-net
	// argument the guest has no network (-nic none).
	QEMUArgs []string
	// Console receives the serial console (ttyS0); nil means QEMU's
	// stdin/stdout are the terminal's (interactive).
	Console io.Writer
	// Agent, if set, is a unix socket QEMU serves the guest's second
	// serial port (ttyS1) on: the command agent of images that start one
	// (package host/agent).
	Agent string
	// Registry, if set, is a host:port (usually on the host's loopback)
	// the guest reaches as GuestRegistry, and nothing else: QEMU's user
	// network with restrict=on and one guestfwd, which runs Forward (plus
	// the address) for each connection the guest opens.
	Registry string
	// Forward is the command that connects its standard input and output
	// to the address appended to it (`intact host forward`).
	Forward []string
	// Assets are the VM tier's inputs (OVMF, virt-firmware); nil fetches
	// them (cached) with vmassets.Fetch.
	Assets *vmassets.Assets
	// Logger receives debug logs; nil discards them.
	Logger *slog.Logger
	// Deprecated: use Logger (the name every intact package uses).
	Log *slog.Logger
}

func (o *RunOptions) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return o.Log
}

// GuestRegistry is where the guest reaches RunOptions.Registry.
const GuestRegistry = "10.0.2.100:5000"

// ErrRun is wrapped by Run's errors.
var ErrRun = errors.New("host: run")

// Run boots a disk image under QEMU with OVMF Secure Boot, as the VM tier
// does (q35 with SMM, TCG unless INTACT_VM_ACCEL says otherwise), and
// returns when QEMU exits or ctx ends.
func Run(ctx context.Context, opts RunOptions) error {
	if opts.Disk == "" {
		return fmt.Errorf("%w: no disk", ErrRun)
	}
	if _, err := os.Stat(opts.Disk); err != nil {
		return fmt.Errorf("%w: %w", ErrRun, err)
	}
	a := opts.Assets
	if a == nil {
		var err error
		if a, err = vmassets.Fetch(ctx, vmassets.FetchOptions{Log: opts.logger()}); err != nil {
			return fmt.Errorf("%w: OVMF: %w", ErrRun, err)
		}
	}
	work, err := os.MkdirTemp("", "intact-host-run-")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRun, err)
	}
	defer os.RemoveAll(work)
	vars := opts.Vars
	if vars == "" {
		vars = filepath.Join(work, "vars.fd")
	}
	if _, err := os.Stat(vars); err != nil {
		if err := PrepareVars(ctx, a, opts.Keys, opts.SetupMode, vars, work); err != nil {
			return err
		}
	}
	args := QEMUArgs(a, vars, opts)
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	var stderr strings.Builder
	if opts.Console != nil {
		cmd.Stdout = opts.Console
		cmd.Stderr = &stderr
	} else {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	}
	if l := opts.logger(); l != nil {
		l.Debug("host: qemu", "args", strings.Join(args, " "))
	}
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: qemu: %w: %s", ErrRun, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// PrepareVars writes a variable store: OVMF's empty template in setup
// mode, else the template with the key set's PK, KEK and db enrolled and
// Secure Boot on (virt-fw-vars).
func PrepareVars(ctx context.Context, a *vmassets.Assets, keys string, setupMode bool, out, work string) error {
	if setupMode {
		b, err := os.ReadFile(a.OVMFVars())
		if err != nil {
			return fmt.Errorf("%w: %w", ErrRun, err)
		}
		return os.WriteFile(out, b, 0o644)
	}
	if keys == "" {
		return fmt.Errorf("%w: a key set (--keys) or setup mode is needed for the variable store", ErrRun)
	}
	ks, err := efi.LoadKeys(keys)
	if err != nil {
		return err
	}
	cmd, err := vmassets.VirtFirmware(ctx, a, "vars", filepath.Join(work, "pyshim"),
		"-i", a.OVMFVars(), "-o", out,
		"--set-pk", ks.Owner, filepath.Join(keys, "PK.crt"),
		"--add-kek", ks.Owner, filepath.Join(keys, "KEK.crt"),
		"--add-db", ks.Owner, filepath.Join(keys, "db.crt"),
		"--secure-boot", "--no-microsoft")
	if err != nil {
		return err
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: virt-fw-vars: %w: %s", ErrRun, err, strings.TrimSpace(string(b)))
	}
	return nil
}

// QEMUArgs returns the QEMU command line for booting opts.Disk with the
// variable store vars.
func QEMUArgs(a *vmassets.Assets, vars string, opts RunOptions) []string {
	mem, cpus := opts.MemoryMB, opts.CPUs
	if mem == 0 {
		mem = 2048
	}
	if cpus == 0 {
		cpus = 2
	}
	accel := os.Getenv("INTACT_VM_ACCEL")
	if accel == "" {
		accel = "tcg,thread=single"
	}
	cpu := os.Getenv("INTACT_VM_CPU")
	if cpu == "" {
		cpu = vmassets.DefaultCPU
	}
	var drives []string
	for i, d := range append(append([]string(nil), opts.Disks...), opts.Disk) {
		drive := "if=none,id=disk" + strconv.Itoa(i) + ",format=raw,file=" + d
		if opts.Snapshot {
			drive += ",snapshot=on"
		}
		drives = append(drives, "-drive", drive, "-device", "virtio-blk-pci,drive=disk"+strconv.Itoa(i)+",bootindex="+strconv.Itoa(i+1))
	}
	args := []string{"-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-no-reboot",
		"-machine", "q35,smm=on", "-accel", accel, "-cpu", cpu,
		"-m", strconv.Itoa(mem), "-smp", strconv.Itoa(cpus),
		"-global", "driver=cfi.pflash01,property=secure,value=on",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + a.OVMFCode(),
		"-drive", "if=pflash,format=raw,unit=1,file=" + vars,
		"-serial", "stdio"}
	args = append(args, drives...)
	if opts.Console == nil {
		for i := range args {
			if args[i] == "stdio" && args[i-1] == "-serial" {
				args[i] = "mon:stdio"
			}
		}
	}
	if opts.Agent != "" {
		args = append(args, "-serial", "unix:"+qemuEscape(opts.Agent)+",server=on,wait=off")
	}
	if opts.Registry != "" && len(opts.Forward) > 0 {
		fwd := strings.Join(append(append([]string{}, opts.Forward...), opts.Registry), " ")
		args = append(args, "-nic", "user,model=virtio-net-pci,restrict=on,guestfwd=tcp:"+GuestRegistry+"-cmd:"+qemuEscape(fwd))
	}
	net := false
	for _, x := range args[len(args)-2:] {
		net = net || strings.HasPrefix(x, "user,")
	}
	for _, x := range opts.QEMUArgs {
		net = net || x == "-nic" || x == "-net" || x == "-netdev"
	}
	if !net {
		args = append(args, "-nic", "none")
	}
	return append(args, opts.QEMUArgs...)
}

// qemuEscape doubles commas, QEMU's option separator.
func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }
