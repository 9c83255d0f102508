package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/intact-project/intact/host"
)

func init() {
	hostSubcommands = append(hostSubcommands, newHostBuildCmd)
}

func newHostBuildCmd(e *env) *cobra.Command {
	var (
		out                                              string
		root, kernel, modules, deb, keys, cmdline, pol   string
		rootInit, intactInit, stub, osrel, compression   string
		varMode, varSize, etcMode, espSize, seed, onFail string
		files, mods, verityOpts, dropCaps                []string
		pin, noSignedVerity, keepCaps, trustMachine      bool
	)
	c := &cobra.Command{
		Use:   "build [SPEC.toml] -o DIR",
		Short: "Build a Secure Boot disk image with a signed dm-verity EROFS root",
		Long: `Build an immutable host image into DIR:

  disk.img              GPT disk: ESP (FAT32, EFI/BOOT/BOOTX64.EFI = the signed
                        UKI), root (EROFS), root-verity (dm-verity tree with
                        superblock), root-verity-sig (JSON with the PKCS#7
                        signature of the root hash), optional var partition
  uki.efi               the signed UKI (systemd-stub, kernel, initramfs, cmdline)
  root.erofs, root.verity, root.verity-sig.json
  initramfs.img         intact-init, modules, expected root hash, IPE policy
  policy.p7s            the signed IPE policy
  manifest.json         root hash, digests, policy, partition UUIDs and sizes

SPEC.toml holds the keys below; every key also has a flag, and flags win.
Relative paths in SPEC are relative to its directory. See docs/host.md.

  [root] source (--root DIR|TAR|oci:REF|oci-layout:DIR:TAG), files
         (--file SRC:DST[:MODE])
  [kernel] vmlinuz (--kernel), modules (--modules lib/modules/<release>),
           deb (--kernel-deb, a Debian linux-image package instead)
  [boot] cmdline, stub, os_release, modules (--module), init (--init, the
         root's init, default /sbin/init), intact_init (--intact-init),
         initramfs_compression, on_failure, verity_options,
         drop_capabilities (--drop-capability, default mac_admin; --keep-capabilities
         drops none), trust_machine_keyring (--trust-machine-keyring: keep MOK keys
         trusted; by default intact-init distrusts them, see docs/drivers.md)
  [policy] file (--policy, text or signed; default: exec, kernel modules and
           firmware only from the initramfs and signed dm-verity), name,
           version, pin_root (--pin-root), signed_verity (--no-signed-verity)
  keys (--keys DIR from 'intact host keys create')
  [var] mode (tmpfs|partition), size     [etc] mode (overlay|readonly)
  [disk] esp_size, seed

The same inputs, specification and SOURCE_DATE_EPOCH (default 1980-01-01)
give a byte-identical disk.img. No mkfs, veritysetup, ukify or sbsign is
run. --json prints the manifest.`,
		Example: `  intact host keys create --dir keys
  intact host build --root rootfs/ --kernel /boot/vmlinuz-6.12.0 \
      --modules /lib/modules/6.12.0 --keys keys --cmdline "console=ttyS0" -o out
  intact host run out/disk.img --keys keys`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usagef("-o DIR is required")
			}
			spec := &host.Spec{}
			if len(args) == 1 {
				var err error
				if spec, err = host.LoadSpec(args[0]); err != nil {
					return err
				}
			}
			fl := cmd.Flags()
			set := func(name string, dst *string, v string) {
				if fl.Changed(name) {
					*dst = v
				}
			}
			set("root", &spec.Root.Source, root)
			set("kernel", &spec.Kernel.Vmlinuz, kernel)
			set("modules", &spec.Kernel.Modules, modules)
			set("kernel-deb", &spec.Kernel.Deb, deb)
			set("keys", &spec.Keys, keys)
			set("cmdline", &spec.Boot.Cmdline, cmdline)
			set("policy", &spec.Policy.File, pol)
			set("init", &spec.Boot.Init, rootInit)
			set("intact-init", &spec.Boot.IntactInit, intactInit)
			set("stub", &spec.Boot.Stub, stub)
			set("os-release", &spec.Boot.OSRelease, osrel)
			set("initramfs-compression", &spec.Boot.Compression, compression)
			set("var", &spec.Var.Mode, varMode)
			set("var-size", &spec.Var.Size, varSize)
			set("etc", &spec.Etc.Mode, etcMode)
			set("esp-size", &spec.Disk.ESPSize, espSize)
			set("seed", &spec.Disk.Seed, seed)
			set("on-failure", &spec.Boot.OnFailure, onFail)
			if fl.Changed("module") {
				spec.Boot.Modules = mods
			}
			if fl.Changed("verity-option") {
				spec.Boot.VerityOptions = verityOpts
			}
			if fl.Changed("pin-root") {
				spec.Policy.PinRoot = pin
			}
			if fl.Changed("drop-capability") && fl.Changed("keep-capabilities") {
				return usagef("--drop-capability and --keep-capabilities exclude each other")
			}
			if fl.Changed("drop-capability") {
				spec.Boot.DropCapabilities = dropCaps
			}
			if fl.Changed("keep-capabilities") && keepCaps {
				spec.Boot.DropCapabilities = []string{}
			}
			if fl.Changed("trust-machine-keyring") {
				spec.Boot.TrustMachineKeyring = trustMachine
			}
			if fl.Changed("no-signed-verity") {
				v := !noSignedVerity
				spec.Policy.SignedVerity = &v
			}
			for _, f := range files {
				parts := strings.Split(f, ":")
				if len(parts) < 2 || len(parts) > 3 {
					return usagef("--file %q: want SRC:DST or SRC:DST:MODE", f)
				}
				hf := host.File{Src: parts[0], Dst: parts[1]}
				if len(parts) == 3 {
					hf.Mode = parts[2]
				}
				spec.Root.Files = append(spec.Root.Files, hf)
			}
			var epoch int64
			if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
				var err error
				if epoch, err = strconv.ParseInt(v, 10, 64); err != nil || epoch <= 0 {
					return usagef("SOURCE_DATE_EPOCH=%q is not a positive number of seconds", v)
				}
			}
			showProgress := !e.quiet && !e.json && isTerminal(e.stderr)
			start := time.Now()
			m, err := host.Build(cmd.Context(), host.Options{Spec: spec, OutDir: out, SourceDateEpoch: epoch, Logger: e.log,
				Progress: func(step string) {
					if showProgress {
						fmt.Fprintf(e.stderr, "\r\033[K[%5.1fs] %s", time.Since(start).Seconds(), step)
					}
				}})
			if showProgress {
				fmt.Fprint(e.stderr, "\r\033[K")
			}
			if err != nil {
				return err
			}
			if e.json {
				return e.printJSON(m)
			}
			e.printf("built %s/disk.img (%d MiB) in %.1fs\n", out, m.Disk.Size>>20, m.Seconds)
			e.printf("  root hash %s (%d MiB EROFS, %d inodes)\n", m.RootHash, m.Root.Size>>20, m.Root.Inodes)
			e.printf("  UKI %s (%d MiB, signed by %s), initramfs %d KiB\n", m.UKI.SHA256[:16], m.UKI.Size>>20, m.UKI.Signer, m.Initramfs.Size>>10)
			e.printf("  IPE policy %s %s\n", m.Policy.Name, m.Policy.Version)
			return nil
		},
	}
	f := c.Flags()
	f.StringVarP(&out, "output", "o", "", "output directory (required)")
	f.StringVar(&root, "root", "", "root file system: a directory, a tar (gzip/zstd ok), oci:REF or oci-layout:DIR:TAG")
	f.StringArrayVar(&files, "file", nil, "extra file SRC:DST[:MODE] in the root (repeatable)")
	f.StringVar(&kernel, "kernel", "", "kernel image (EFI-stub vmlinuz)")
	f.StringVar(&modules, "modules", "", "the kernel's lib/modules/<release> directory")
	f.StringVar(&deb, "kernel-deb", "", "a Debian linux-image .deb (instead of --kernel and --modules)")
	f.StringVar(&keys, "keys", "", "key set directory (intact host keys create)")
	f.StringVar(&cmdline, "cmdline", "", "kernel command line (signed into the UKI)")
	f.StringVar(&pol, "policy", "", "IPE policy file, text (signed with keys/signing.key) or already signed")
	f.BoolVar(&pin, "pin-root", false, "add a dmverity_roothash rule for this root to the generated policy")
	f.BoolVar(&noSignedVerity, "no-signed-verity", false, "do not allow every signed dm-verity device (with --pin-root: only this root)")
	f.StringVar(&rootInit, "init", "", "the root's init, exec'd by intact-init (default /sbin/init)")
	f.StringVar(&intactInit, "intact-init", "", "intact-init binary (default: next to intact, then PATH)")
	f.StringVar(&stub, "stub", "", "systemd-stub (default "+host.DefaultStub+")")
	f.StringVar(&osrel, "os-release", "", "os-release for the UKI, TEXT or @FILE (default: the root's)")
	f.StringArrayVar(&mods, "module", nil, "extra kernel module for the initramfs (repeatable)")
	f.StringVar(&compression, "initramfs-compression", "", "zstd (default), gzip or none")
	f.StringVar(&varMode, "var", "", "/var: tmpfs (default) or partition")
	f.StringVar(&varSize, "var-size", "", "tmpfs size option, or the var partition size (e.g. 1G)")
	f.StringVar(&etcMode, "etc", "", "/etc: overlay (default, tmpfs upper) or readonly")
	f.StringVar(&espSize, "esp-size", "", "ESP size (default: what the UKI needs, at least 40M)")
	f.StringVar(&seed, "seed", "", "seed for salts and UUIDs (default intact)")
	f.StringVar(&onFail, "on-failure", "", "what intact-init does after a failure: halt (default), poweroff, reboot")
	f.StringArrayVar(&dropCaps, "drop-capability", nil, "capability removed from every process's bounding set at boot, without CAP_ (repeatable; default mac_admin)")
	f.BoolVar(&keepCaps, "keep-capabilities", false, "drop no capability at boot (root can then switch IPE off)")
	f.BoolVar(&trustMachine, "trust-machine-keyring", false, "keep the kernel's .machine keyring (MOK keys) trusted; only for hosts booted through shim")
	f.StringArrayVar(&verityOpts, "verity-option", nil, "dm-verity option for the root (restart_on_corruption, panic_on_corruption, ...)")
	return c
}
