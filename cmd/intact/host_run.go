package main

import (
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/intact-project/intact/host"
)

func init() {
	hostSubcommands = append(hostSubcommands, newHostRunCmd)
}

func newHostRunCmd(e *env) *cobra.Command {
	var o host.RunOptions
	var console string
	c := &cobra.Command{
		Use:   "run DISK --keys DIR [-- QEMU-ARGS...]",
		Short: "Boot a built disk under QEMU with OVMF Secure Boot",
		Long: `Boot DISK (from 'intact host build') the way real hardware would: OVMF
with Secure Boot enforcing and the key set's PK, KEK and db enrolled (no
Microsoft keys) finds the signed UKI on the ESP; no -kernel, no -initrd.

The serial console is this terminal (Ctrl-A X quits QEMU), or FILE with
--console FILE (- for standard output). The guest has no network, except:

  --registry HOST:PORT   the guest reaches this address (a registry on the
                         host's loopback, say) as 10.0.2.100:5000, and
                         nothing else (QEMU user networking, restrict=on,
                         one guestfwd running 'intact host forward')
  --agent SOCKET         the guest's second serial port (ttyS1) on a unix
                         socket: the command agent of images that start one
                         ('intact host exec --agent SOCKET -- CMD...')

or QEMU arguments after -- add a network of their own.

--vars FILE keeps the variable store in FILE (created on first use), so
enrollment done inside the guest survives a restart; --setup-mode starts
from an empty store (setup mode, Secure Boot off: try 'intact host keys
enroll' in the guest). --snapshot discards writes to DISK. OVMF and
virt-firmware come from the VM tier's cache (internal/vmtest; fetched from
Debian stable on first use).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Disk = args[0]
			o.QEMUArgs = args[1:]
			if o.Keys == "" && !o.SetupMode && o.Vars == "" {
				return usagef("--keys DIR (or --setup-mode, or an existing --vars FILE) is required")
			}
			if o.Vars != "" {
				if _, err := os.Stat(o.Vars); err != nil && o.Keys == "" && !o.SetupMode {
					return usagef("--vars %s does not exist yet: give --keys or --setup-mode to create it", o.Vars)
				}
			}
			switch console {
			case "":
			case "-":
				o.Console = e.stdout
			default:
				// A live log (tail -f it), not an output that appears whole.
				f, err := os.OpenFile(console, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
				if err != nil {
					return err
				}
				defer f.Close()
				o.Console = io.Writer(f)
			}
			if o.Registry != "" {
				self, err := os.Executable()
				if err != nil {
					return err
				}
				o.Forward = []string{self, "host", "forward"}
			}
			o.Logger = e.log
			return host.Run(cmd.Context(), o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.Keys, "keys", "", "key set whose PK, KEK and db are enrolled")
	f.StringVar(&o.Vars, "vars", "", "variable store file to use and keep")
	f.BoolVar(&o.SetupMode, "setup-mode", false, "boot with an empty variable store (setup mode)")
	f.BoolVar(&o.Snapshot, "snapshot", false, "discard writes to the disk")
	f.IntVar(&o.MemoryMB, "memory", 2048, "guest memory in MiB")
	f.IntVar(&o.CPUs, "cpus", 2, "guest CPUs")
	f.StringVar(&o.Registry, "registry", "", "HOST:PORT the guest reaches as 10.0.2.100:5000 (its only network)")
	f.StringVar(&o.Agent, "agent", "", "unix socket for the guest's ttyS1 (the command agent)")
	f.StringVar(&console, "console", "", "write the serial console to FILE (- for standard output) instead of the terminal")
	return c
}
