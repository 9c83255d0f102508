package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/intact-project/intact/efi"
	"github.com/intact-project/intact/internal/atomicfile"
	"github.com/intact-project/intact/uki"
)

func init() { register(newUKICmd) }

// DefaultStub is where Debian's systemd-boot-efi installs systemd-stub.
const DefaultStub = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"

// maxUKIInput bounds each file read into a UKI.
const maxUKIInput = uki.MaxSize

func newUKICmd(e *env) *cobra.Command {
	g := &cobra.Command{
		Use:   "uki",
		Short: "Build and inspect unified kernel images (systemd-stub UKIs)",
		Long: `Assemble and inspect unified kernel images: systemd's EFI stub with the
kernel, initrd, command line, os-release, kernel release and SBAT data as PE
sections, laid out as systemd's ukify does (docs/formats.md, "UKI and
Authenticode"). Sign the result with 'intact efi sign' (or --key/--cert).`,
		Args: cobra.NoArgs,
	}
	g.AddCommand(newUKIBuildCmd(e), newUKIInspectCmd(e))
	return g
}

// readInput reads a whole input file, bounded.
func readInput(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%s is a directory", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}

// textOrFile resolves ukify's TEXT|@PATH convention.
func textOrFile(v string) (string, error) {
	if p, ok := strings.CutPrefix(v, "@"); ok {
		b, err := readInput(p, 16<<20)
		return string(b), err
	}
	return v, nil
}

type ukiBuildFlags struct {
	stub, linux, cmdline, osrel, uname, ucode, splash, dtb string
	initrds, sbat, sections                                []string
}

func (f *ukiBuildFlags) input() (uki.Input, error) {
	var in uki.Input
	var err error
	if f.linux == "" {
		return in, usagef("--linux is required")
	}
	if in.Stub, err = readInput(f.stub, 16<<20); err != nil {
		return in, fmt.Errorf("stub: %w (systemd-boot-efi ships it; or pass --stub)", err)
	}
	if in.Linux, err = readInput(f.linux, maxUKIInput); err != nil {
		return in, err
	}
	for _, p := range f.initrds {
		b, err := readInput(p, maxUKIInput)
		if err != nil {
			return in, err
		}
		in.Initrds = append(in.Initrds, b)
	}
	if in.Cmdline, err = textOrFile(f.cmdline); err != nil {
		return in, err
	}
	if !strings.HasPrefix(f.cmdline, "@") {
		in.Cmdline = strings.Join(strings.Fields(in.Cmdline), " ") // as ukify: whitespace of a literal has no meaning
	}
	if in.OSRelease, err = textOrFile(f.osrel); err != nil {
		return in, err
	}
	in.Uname = f.uname
	if in.Uname == "" {
		in.Uname, _ = uki.KernelRelease(in.Linux) // stays empty for kernels without a version string
	}
	for _, x := range []struct {
		path string
		dst  *[]byte
	}{{f.ucode, &in.Microcode}, {f.splash, &in.Splash}, {f.dtb, &in.DeviceTree}} {
		if x.path != "" {
			if *x.dst, err = readInput(x.path, maxUKIInput); err != nil {
				return in, err
			}
		}
	}
	for _, s := range f.sbat {
		t, err := textOrFile(s)
		if err != nil {
			return in, err
		}
		in.SBAT = append(in.SBAT, t)
	}
	for _, s := range f.sections {
		name, val, ok := strings.Cut(s, ":")
		if !ok {
			return in, usagef("--section %q: want NAME:TEXT or NAME:@FILE", s)
		}
		var data []byte
		if p, ok := strings.CutPrefix(val, "@"); ok {
			if data, err = readInput(p, maxUKIInput); err != nil {
				return in, err
			}
		} else {
			data = []byte(val)
		}
		in.Sections = append(in.Sections, uki.Section{Name: name, Data: data})
	}
	return in, nil
}

func (f *ukiBuildFlags) register(c *cobra.Command) {
	fl := c.Flags()
	fl.StringVar(&f.stub, "stub", DefaultStub, "systemd EFI stub (from systemd-boot-efi)")
	fl.StringVar(&f.linux, "linux", "", "kernel image, EFI-stub vmlinuz (required)")
	fl.StringArrayVar(&f.initrds, "initrd", nil, "initrd file; repeat to concatenate several (each padded to 4 bytes)")
	fl.StringVar(&f.cmdline, "cmdline", "", "kernel command line, TEXT or @FILE (a file is taken verbatim)")
	fl.StringVar(&f.osrel, "os-release", "", "os-release for .osrel, TEXT or @FILE (default: no .osrel)")
	fl.StringVar(&f.uname, "uname", "", "kernel release for .uname (default: read from the kernel's setup header)")
	fl.StringVar(&f.ucode, "microcode", "", "microcode initrd for .ucode")
	fl.StringVar(&f.splash, "splash", "", "splash BMP for .splash")
	fl.StringVar(&f.dtb, "devicetree", "", "device tree blob for .dtb")
	fl.StringArrayVar(&f.sbat, "sbat", nil, "SBAT CSV lines, TEXT or @FILE (default: the generic uki line); repeatable")
	fl.StringArrayVar(&f.sections, "section", nil, "extra section NAME:TEXT or NAME:@FILE; repeatable")
}

func newUKIBuildCmd(e *env) *cobra.Command {
	var f ukiBuildFlags
	var out, keyPath, certPath string
	c := &cobra.Command{
		Use:   "build --linux VMLINUZ [--initrd F]... [--cmdline S] -o OUT",
		Short: "Assemble a unified kernel image",
		Long: `Assemble a unified kernel image from systemd's EFI stub (--stub) and the
given kernel, initrds, command line, os-release, kernel release and SBAT data.

The layout is ukify's (upstream rules): sections .osrel .cmdline .dtb .uname
.splash .initrd .ucode, extra sections, then .linux (VirtualSize = the
kernel's SizeOfImage), back to back after the stub's sections; the stub's,
the kernel's and the given SBAT entries merged into the stub's .sbat;
CheckSum 0. The output depends only on the inputs (no timestamps), so
SOURCE_DATE_EPOCH has nothing to change. Unlike ukify, the build machine's
/etc/os-release is never embedded: .osrel comes only from --os-release.

With --key and --cert the UKI is signed (Authenticode, as 'intact efi sign'
does); otherwise it is unsigned. --json prints the section list.`,
		Example: `  intact uki build --linux /boot/vmlinuz-6.12.0 --initrd initrd.img \
      --cmdline "console=ttyS0 ro" --os-release @/etc/os-release -o uki.efi
  intact efi sign --key keys/db.key --cert keys/db.crt uki.efi -o BOOTX64.EFI`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usagef("-o OUT is required")
			}
			in, err := f.input()
			if err != nil {
				return err
			}
			img, err := uki.Build(in)
			if err != nil {
				return err
			}
			signed := keyPath != "" || certPath != ""
			if signed {
				s, err := loadEFISigner(keyPath, certPath)
				if err != nil {
					return err
				}
				if img, err = efi.Sign(img, s, efi.SignOptions{}); err != nil {
					return err
				}
			}
			if err := atomicfile.WriteFile(out, img, 0o644); err != nil {
				return err
			}
			info, err := uki.Inspect(bytes.NewReader(img), int64(len(img)))
			if err != nil {
				return err
			}
			if e.json {
				return e.printJSON(struct {
					Path string `json:"path"`
					Size int    `json:"size"`
					*uki.Info
				}{out, len(img), info})
			}
			state := "unsigned"
			if signed {
				state = "signed"
			}
			e.printf("wrote %s (%d bytes, %s)\n", out, len(img), state)
			return nil
		},
	}
	f.register(c)
	c.Flags().StringVarP(&out, "output", "o", "", "output file (required)")
	c.Flags().StringVar(&keyPath, "key", "", "sign with this RSA key (a db key, see 'intact efi sign')")
	c.Flags().StringVar(&certPath, "cert", "", "certificate of --key")
	return c
}

func newUKIInspectCmd(e *env) *cobra.Command {
	var all bool
	c := &cobra.Command{
		Use:   "inspect IMAGE",
		Short: "List the sections of a UKI with sizes and SHA-256 digests",
		Long: `List the sections of a UKI (or any PE image) as 'ukify inspect' does: for
each section its size (the bytes of content in the file), SHA-256 and, for
text sections (.cmdline, .osrel, .uname, .sbat, ...), the text. By default
only the sections systemd-stub interprets are shown; --all shows the stub's
own sections too. --json prints every section with its virtual address,
virtual size, file offset and file size.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return err
			}
			info, err := uki.Inspect(f, st.Size())
			if err != nil {
				return err
			}
			if e.json {
				return e.printJSON(info)
			}
			for _, s := range info.Sections {
				if !s.UKI && !all {
					continue
				}
				fmt.Fprintf(e.stdout, "%s:\n  size: %d bytes\n  sha256: %s\n", s.Name, s.Size, s.SHA256)
				if s.Text != "" {
					fmt.Fprintf(e.stdout, "  text:\n")
					for _, l := range strings.Split(strings.TrimRight(s.Text, " \t\r\n"), "\n") {
						if strings.TrimSpace(l) == "" {
							fmt.Fprintln(e.stdout, l) // as textwrap.indent: blank lines stay unindented
							continue
						}
						fmt.Fprintf(e.stdout, "    %s\n", l)
					}
				}
			}
			if !info.IsUKI {
				e.infof("note: %s has no .linux section; it is not a UKI\n", args[0])
			}
			return nil
		},
	}
	c.Flags().BoolVar(&all, "all", false, "show every section, not only the UKI ones")
	return c
}
