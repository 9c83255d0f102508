package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/intact-project/intact/driver"
	"github.com/intact-project/intact/internal/atomicfile"
	"github.com/intact-project/intact/ipe"
	"github.com/intact-project/intact/pkcs7"
	"github.com/spf13/cobra"
)

func init() { register(newDriverCmd) }

func newDriverCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "driver",
		Short: "Pack out-of-tree drivers as signed dm-verity volumes and load them",
		Long: `A driver volume is an EROFS image of a directory of signed kernel modules (and
the firmware they request, under firmware/) with a dm-verity tree appended, a
PKCS#7 signature of its root hash, a JSON manifest and the IPE rules that
trust exactly this volume for op=KMODULE and op=FIRMWARE. 'driver load' opens
it on the host and loads its modules with finit_module, so IPE judges each
load by the volume it comes from, and the kernel still checks each module's
own signature. See docs/drivers.md for the workflow and what was measured.`,
	}
	c.AddCommand(newDriverPackCmd(e), newDriverLoadCmd(e), newDriverUnloadCmd(e))
	return c
}

func newDriverPackCmd(e *env) *cobra.Command {
	var out, keyPath, certPath, chainPath, policyPath, policyOut, version string
	var allowUnsigned bool
	c := &cobra.Command{
		Use:   "pack DIR -o driver.img --key KEY --cert CERT [--policy BASE --policy-version V]",
		Short: "Build a signed driver volume from a directory of modules",
		Long: `Pack DIR (modules anywhere below it: .ko, .ko.xz, .ko.zst; firmware below
DIR/firmware/) into OUT (EROFS + appended dm-verity tree), and write next to it
OUT.p7s (the root-hash signature by KEY/CERT, as dm-verity verifies it),
OUT.json (root hash, tree offset, modules with their signers) and OUT.ipe
(the IPE rules that trust this volume's root hash for module and firmware
loads).

Every module must already be signed ('intact module sign'): a Secure Boot
kernel checks module signatures whatever IPE allows. With --policy, the host's
current IPE policy text is extended with the rules and given
--policy-version (newer than its own, as the kernel's update requires) and
written to --policy-out; sign it with 'intact policy sign'.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usagef("-o OUT is required")
			}
			var opts driver.PackOptions
			opts.AllowUnsigned = allowUnsigned
			if keyPath != "" || certPath != "" {
				key, cert, chain, err := loadSigningKey(keyPath, certPath, chainPath)
				if err != nil {
					return err
				}
				if opts.Signer, err = pkcs7.NewSigner(cert, key, chain...); err != nil {
					return err
				}
			}
			var base []byte
			var ver ipe.Version
			if policyPath != "" {
				if version == "" || policyOut == "" {
					return usagef("--policy needs --policy-version and --policy-out")
				}
				var err error
				if ver, err = ipe.ParseVersion(version); err != nil {
					return usagef("--policy-version: %v", err)
				}
				if base, err = readBounded(policyPath); err != nil {
					return err
				}
				if text, signed, err := ipe.PolicyFromFile(base); err == nil && signed {
					base = text
				}
			}
			if st, err := os.Stat(args[0]); err != nil {
				return err
			} else if !st.IsDir() {
				return fmt.Errorf("%s is not a directory", args[0])
			}
			res, err := driver.Pack(e.ctx, args[0], out, opts)
			if err != nil {
				return err
			}
			if base != nil {
				text, err := driver.ExtendPolicy(base, res.Manifest.IPERules, ver)
				if err != nil {
					return err
				}
				if err := atomicfile.WriteFile(policyOut, text, 0o644); err != nil {
					return err
				}
			}
			if e.json {
				return e.printJSON(map[string]any{"image": res.Image, "signature": res.Signature, "manifest": res.ManifestFile,
					"rules": res.Rules, "policy": policyOut, "root_hash": res.Manifest.RootHash, "modules": res.Manifest.Modules, "firmware": res.Manifest.Firmware})
			}
			e.printf("%s: root hash %s\n", res.Image, res.Manifest.RootHash)
			for _, m := range res.Manifest.Modules {
				e.printf("  module %s %s (%s)\n", m.Name, dash(m.Version), m.Path)
			}
			for _, f := range res.Manifest.Firmware {
				e.printf("  firmware %s\n", f)
			}
			if res.Signature == "" {
				e.infof("no --key/--cert: the volume has no root-hash signature; only a dmverity_roothash rule trusts it\n")
			}
			e.printf("IPE rules (%s):\n  %s\n", res.Rules, strings.Join(res.Manifest.IPERules, "\n  "))
			if base != nil {
				e.printf("policy %s version %s written to %s (sign it with 'intact policy sign', deploy with 'intact policy update')\n", policyPath, ver, policyOut)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVarP(&out, "output", "o", "", "the volume image to write")
	f.StringVar(&keyPath, "key", "", "key that signs the root hash")
	f.StringVar(&certPath, "cert", "", "its certificate (embedded in the signature)")
	f.StringVar(&chainPath, "chain", "", "intermediate certificates to embed")
	f.BoolVar(&allowUnsigned, "allow-unsigned-modules", false, "pack modules that carry no signature (only for kernels that do not enforce module signatures)")
	f.StringVar(&policyPath, "policy", "", "the host's IPE policy (text or signed) to extend with the volume's rules")
	f.StringVar(&version, "policy-version", "", "version of the extended policy (newer than --policy's)")
	f.StringVar(&policyOut, "policy-out", "", "where to write the extended policy text")
	return c
}

func newDriverLoadCmd(e *env) *cobra.Command {
	var name, mountDir, sigPath string
	var noSig, skipFW bool
	var params []string
	c := &cobra.Command{
		Use:   "load IMAGE",
		Short: "Open a driver volume and load its modules with finit_module",
		Long: `Open IMAGE as a dm-verity device with its root-hash signature (IMAGE.p7s, checked
by the kernel), mount it read-only under /run/intact/drivers/NAME, make its
firmware/ directory the kernel's firmware search path, and load its modules
with finit_module in dependency order (modules already loaded are skipped).
The kernel checks each module's signature; IPE, if its policy has KMODULE or
FIRMWARE rules, checks that each file comes from a trusted volume. Needs root.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := driver.LoadOptions{Name: name, MountDir: mountDir, Signature: sigPath, NoSignature: noSig, SkipFirmwarePath: skipFW, Logger: e.log, Params: map[string]string{}}
			for _, p := range params {
				mod, val, ok := strings.Cut(p, ":")
				if !ok {
					return usagef("--param %q: want MODULE:key=value", p)
				}
				opts.Params[mod] = strings.TrimSpace(opts.Params[mod] + " " + val)
			}
			v, err := driver.Load(e.ctx, args[0], opts)
			if v != nil && e.json {
				e.printJSON(v)
			}
			if err != nil {
				if v != nil {
					return fmt.Errorf("%w (the volume stays open at %s; 'intact driver unload %s' closes it)", err, v.Mount, args[0])
				}
				if errors.Is(err, os.ErrPermission) {
					return fmt.Errorf("%w (needs root)", err)
				}
				return err
			}
			if !e.json {
				e.printf("%s: %s mounted on %s (root hash %s, signature %v)\n", args[0], v.Device, v.Mount, v.RootHash, v.Signed)
				if v.Firmware != "" {
					e.printf("  firmware path %s\n", v.Firmware)
				}
				for _, l := range v.Loaded {
					e.printf("  loaded %s %s (%s)\n", l.Name, dash(l.Version), l.Syscall)
				}
				for _, s := range v.Skipped {
					e.printf("  already loaded: %s\n", s)
				}
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&name, "name", "", "device-mapper name (default intact-driver-<root hash prefix>)")
	f.StringVar(&mountDir, "mount", "", "mount point (default /run/intact/drivers/NAME)")
	f.StringVar(&sigPath, "signature", "", "root-hash signature (default IMAGE.p7s)")
	f.BoolVar(&noSig, "no-signature", false, "open without a root-hash signature (trusted only by a dmverity_roothash IPE rule)")
	f.BoolVar(&skipFW, "no-firmware-path", false, "leave the kernel's firmware search path alone")
	f.StringArrayVar(&params, "param", nil, "module parameter as MODULE:key=value (repeatable)")
	return c
}

func newDriverUnloadCmd(e *env) *cobra.Command {
	var name, mountDir string
	c := &cobra.Command{
		Use:   "unload IMAGE",
		Short: "Unload a driver volume's modules and close it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			man, err := driver.ReadManifest(args[0])
			if err != nil {
				return err
			}
			if name == "" {
				name = "intact-driver-" + man.RootHash[:16]
			}
			if mountDir == "" {
				mountDir = "/run/intact/drivers/" + name
			}
			v := &driver.Volume{Name: name, Mount: mountDir}
			if err := driver.Unload(e.ctx, v, man); err != nil {
				return err
			}
			e.printf("%s: modules unloaded, %s closed\n", args[0], name)
			return nil
		},
	}
	c.Flags().StringVar(&name, "name", "", "device-mapper name given to load")
	c.Flags().StringVar(&mountDir, "mount", "", "mount point given to load")
	return c
}
