package vmtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/intact-project/intact/efi"
	"github.com/intact-project/intact/internal/testpki"
	"github.com/intact-project/intact/uki"
)

// ownerGUID is the signature owner recorded with our keys in PK, KEK and db.
const ownerGUID = "9f3f8c1e-6a71-4d8e-9a0e-1ee7a5c7e57a"

// PKI is the throwaway key hierarchy of one run: the Secure Boot platform
// key and key-exchange key, the db CA (whose certificate the firmware
// enrolls and the kernel loads into its platform keyring), a leaf under it
// for the guest's test signatures, a leaf that signs the UKI, and an
// untrusted hierarchy of the same shape for negative tests.
type PKI struct {
	PK, KEK   *testpki.PKI
	DB        *testpki.PKI // Root = the db CA, Leaf = the guest's signer
	UKISigner *testpki.Cert
	Untrusted *testpki.PKI

	Dir                  string // where the PEM files are written
	DBFiles, UntrustFile testpki.Files
	UKIKey, UKICert      string
	PKCert, KEKCert      string
}

// NewPKI generates a fresh hierarchy and writes it under dir.
func NewPKI(dir string) (*PKI, error) {
	p := &PKI{Dir: dir}
	var err error
	for _, x := range []struct {
		dst  **testpki.PKI
		name string
	}{{&p.PK, "intact test PK"}, {&p.KEK, "intact test KEK"}, {&p.DB, "intact test db"}, {&p.Untrusted, "intact UNTRUSTED"}} {
		if *x.dst, err = testpki.New(testpki.Options{Name: x.name}); err != nil {
			return nil, fmt.Errorf("vmtest: test PKI: %w", err)
		}
	}
	if p.UKISigner, err = p.DB.IssueLeaf("intact test UKI signer", ""); err != nil {
		return nil, fmt.Errorf("vmtest: test PKI: %w", err)
	}
	if p.DBFiles, err = p.DB.WriteDir(filepath.Join(dir, "db")); err != nil {
		return nil, err
	}
	if p.UntrustFile, err = p.Untrusted.WriteDir(filepath.Join(dir, "untrusted")); err != nil {
		return nil, err
	}
	p.PKCert = filepath.Join(dir, "pk.pem")
	p.KEKCert = filepath.Join(dir, "kek.pem")
	p.UKICert = filepath.Join(dir, "uki.pem")
	p.UKIKey = filepath.Join(dir, "uki.key")
	for _, w := range []struct {
		path string
		data []byte
		perm os.FileMode
	}{
		{p.PKCert, p.PK.Root.CertPEM(), 0o644},
		{p.KEKCert, p.KEK.Root.CertPEM(), 0o644},
		{p.UKICert, p.UKISigner.CertPEM(), 0o644},
		{p.UKIKey, p.UKISigner.KeyPEM(), 0o600},
	} {
		if err := os.WriteFile(w.path, w.data, w.perm); err != nil {
			return nil, fmt.Errorf("vmtest: %w", err)
		}
	}
	return p, nil
}

// pyShim makes virt-firmware (Debian stable) run on an older Python whose
// standard library already has importlib.resources but which lacks the
// importlib_resources backport package.
const pyShim = "from importlib.resources import *  # noqa: F401,F403\nfrom importlib.resources import files, as_file  # noqa: F401\n"

// EnrollVars writes a copy of the empty OVMF variable store with our PK, KEK
// and db enrolled and Secure Boot enabled (virt-fw-vars from Debian's
// python3-virt-firmware; no Microsoft keys).
func EnrollVars(ctx context.Context, a *Assets, p *PKI, out string) error {
	shim := filepath.Join(filepath.Dir(out), "pyshim")
	if err := os.MkdirAll(filepath.Join(shim, "importlib_resources"), 0o755); err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(shim, "importlib_resources", "__init__.py"), []byte(pyShim), 0o644); err != nil {
		return fmt.Errorf("vmtest: %w", err)
	}
	cmd := exec.CommandContext(ctx, "python3", "-c",
		"import sys; from virt.firmware.vars import main; sys.argv[0] = 'virt-fw-vars'; sys.exit(main())",
		"-i", a.OVMFVars(), "-o", out,
		"--set-pk", ownerGUID, p.PKCert,
		"--add-kek", ownerGUID, p.KEKCert,
		"--add-db", ownerGUID, p.DBFiles.RootPEM,
		"--secure-boot", "--no-microsoft")
	cmd.Env = append(os.Environ(), "PYTHONPATH="+a.PythonPath()+":"+shim)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("vmtest: virt-fw-vars: %w: %s", err, lastLines(string(b), 5))
	}
	return nil
}

// UKIInput is what goes into a unified kernel image.
type UKIInput struct {
	Stub    string // systemd's linuxx64.efi.stub
	Kernel  string // vmlinuz
	Initrd  string
	Cmdline string
	Uname   string
}

// UKIBuilder assembles an unsigned UKI at out. BuildUKI is the default.
type UKIBuilder func(ctx context.Context, in UKIInput, out string) error

// BuildUKI assembles a UKI with package uki from systemd's EFI stub, the
// kernel, the initramfs, the command line and the kernel release.
func BuildUKI(ctx context.Context, in UKIInput, out string) error {
	stub, err := os.ReadFile(in.Stub)
	if err != nil {
		return fmt.Errorf("vmtest: UKI: %w", err)
	}
	kernel, err := os.ReadFile(in.Kernel)
	if err != nil {
		return fmt.Errorf("vmtest: UKI: %w", err)
	}
	initrd, err := os.ReadFile(in.Initrd)
	if err != nil {
		return fmt.Errorf("vmtest: UKI: %w", err)
	}
	img, err := uki.Build(uki.Input{Stub: stub, Linux: kernel, Initrds: [][]byte{initrd}, Cmdline: in.Cmdline, Uname: in.Uname})
	if err != nil {
		return fmt.Errorf("vmtest: UKI: %w", err)
	}
	return os.WriteFile(out, img, 0o644)
}

// SignEFI signs the EFI image in with Authenticode (package efi) by
// signer and writes it to out.
func SignEFI(signer *testpki.Cert, in, out string) error {
	img, err := os.ReadFile(in)
	if err != nil {
		return fmt.Errorf("vmtest: sign: %w", err)
	}
	signed, err := efi.Sign(img, efi.Signer{Certificate: signer.Certificate, Key: signer.Key}, efi.SignOptions{})
	if err != nil {
		return fmt.Errorf("vmtest: sign: %w", err)
	}
	return os.WriteFile(out, signed, 0o644)
}

// VirtFirmware returns the command that runs one of virt-firmware's tools
// (module "vars" for virt-fw-vars, "sigdb" for virt-fw-sigdb) from the
// fetched assets on this machine's python3; shimDir is a scratch directory
// for the importlib_resources shim.
func VirtFirmware(ctx context.Context, a *Assets, module, shimDir string, args ...string) (*exec.Cmd, error) {
	if err := os.MkdirAll(filepath.Join(shimDir, "importlib_resources"), 0o755); err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(shimDir, "importlib_resources", "__init__.py"), []byte(pyShim), 0o644); err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	cmd := exec.CommandContext(ctx, "python3", append([]string{"-c",
		"import sys; from virt.firmware." + module + " import main; sys.argv[0] = 'virt-fw-" + module + "'; sys.exit(main())"}, args...)...)
	cmd.Env = append(os.Environ(), "PYTHONPATH="+a.PythonPath()+":"+shimDir)
	return cmd, nil
}
