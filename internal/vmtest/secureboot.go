package vmtest

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

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
	// RevokedTBS and RevokedX509 are leaves of the db CA that dbx revokes,
	// by TBS hash and by certificate.
	RevokedTBS, RevokedX509 *testpki.Cert

	Dir                  string // where the PEM files are written
	DBFiles, UntrustFile testpki.Files
	UKIKey, UKICert      string
	PKCert, KEKCert      string
	RevokedTBSKey        string
	RevokedTBSCert       string
	RevokedX509Key       string
	RevokedX509Cert      string
	DBXJSON              string // the dbx variable, for virt-fw-vars --set-json
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
	if p.RevokedTBS, err = p.DB.IssueLeaf("intact test revoked by TBS hash", ""); err != nil {
		return nil, fmt.Errorf("vmtest: test PKI: %w", err)
	}
	if p.RevokedX509, err = p.DB.IssueLeaf("intact test revoked by certificate", ""); err != nil {
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
	p.RevokedTBSCert, p.RevokedTBSKey = filepath.Join(dir, "revoked-tbs.pem"), filepath.Join(dir, "revoked-tbs.key")
	p.RevokedX509Cert, p.RevokedX509Key = filepath.Join(dir, "revoked-x509.pem"), filepath.Join(dir, "revoked-x509.key")
	p.DBXJSON = filepath.Join(dir, "dbx.json")
	dbx, err := dbxJSON(p.RevokedTBS.Certificate, p.RevokedX509.Certificate)
	if err != nil {
		return nil, err
	}
	for _, w := range []struct {
		path string
		data []byte
		perm os.FileMode
	}{
		{p.PKCert, p.PK.Root.CertPEM(), 0o644},
		{p.KEKCert, p.KEK.Root.CertPEM(), 0o644},
		{p.UKICert, p.UKISigner.CertPEM(), 0o644},
		{p.UKIKey, p.UKISigner.KeyPEM(), 0o600},
		{p.RevokedTBSCert, p.RevokedTBS.CertPEM(), 0o644},
		{p.RevokedTBSKey, p.RevokedTBS.KeyPEM(), 0o600},
		{p.RevokedX509Cert, p.RevokedX509.CertPEM(), 0o644},
		{p.RevokedX509Key, p.RevokedX509.KeyPEM(), 0o600},
		{p.DBXJSON, dbx, 0o644},
	} {
		if err := os.WriteFile(w.path, w.data, w.perm); err != nil {
			return nil, fmt.Errorf("vmtest: %w", err)
		}
	}
	return p, nil
}

// EnrollVars writes a copy of the empty OVMF variable store with our PK, KEK
// and db enrolled and Secure Boot enabled (virt-fw-vars from Debian's
// python3-virt-firmware; no Microsoft keys).
func EnrollVars(ctx context.Context, a *Assets, p *PKI, out string) error {
	cmd, err := VirtFirmware(ctx, a, "vars", filepath.Join(filepath.Dir(out), "pyshim"),
		"-i", a.OVMFVars(), "-o", out,
		"--set-pk", ownerGUID, p.PKCert,
		"--add-kek", ownerGUID, p.KEKCert,
		"--add-db", ownerGUID, p.DBFiles.RootPEM,
		"--set-json", p.DBXJSON,
		"--secure-boot", "--no-microsoft")
	if err != nil {
		return err
	}
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

// EFI signature list types (UEFI 2.10, section 32.4.1) and the variable
// GUID of db and dbx.
var (
	certX509SHA256GUID = "3bd2a492-96c0-4079-b420-fcf98ef103ed"
	certX509GUID       = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072"
	imageSecurityGUID  = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
)

// guidBytes encodes a GUID string in UEFI's mixed-endian layout.
func guidBytes(s string) []byte {
	h := strings.ReplaceAll(s, "-", "")
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 16 {
		panic("vmtest: bad GUID " + s)
	}
	out := make([]byte, 16)
	binary.LittleEndian.PutUint32(out[0:], binary.BigEndian.Uint32(b[0:]))
	binary.LittleEndian.PutUint16(out[4:], binary.BigEndian.Uint16(b[4:]))
	binary.LittleEndian.PutUint16(out[6:], binary.BigEndian.Uint16(b[6:]))
	copy(out[8:], b[8:])
	return out
}

// SignatureList encodes one EFI_SIGNATURE_LIST of type typeGUID whose
// entries (each owned by owner) all have the size of the first.
func SignatureList(typeGUID, owner string, entries ...[]byte) []byte {
	size := 16 + len(entries[0])
	var b []byte
	b = append(b, guidBytes(typeGUID)...)
	b = binary.LittleEndian.AppendUint32(b, uint32(28+size*len(entries)))
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(size))
	for _, e := range entries {
		b = append(b, guidBytes(owner)...)
		b = append(b, e...)
	}
	return b
}

// DBXEntries are the signature lists that revoke tbs by the SHA-256 of its
// TBSCertificate (EFI_CERT_X509_SHA256, revocation time zero: forever)
// and x509 by the certificate itself (EFI_CERT_X509).
func DBXEntries(tbs, x509c *x509.Certificate) []byte {
	h := sha256.Sum256(tbs.RawTBSCertificate)
	var out []byte
	out = append(out, SignatureList(certX509SHA256GUID, ownerGUID, append(h[:], make([]byte, 16)...))...)
	out = append(out, SignatureList(certX509GUID, ownerGUID, x509c.Raw)...)
	return out
}

// dbxJSON is a virt-fw-vars variable list (efijson) that sets dbx to
// DBXEntries, as a time-based authenticated variable.
func dbxJSON(tbs, x509c *x509.Certificate) ([]byte, error) {
	// EFI_TIME 2026-01-01 00:00:00.
	t := make([]byte, 16)
	binary.LittleEndian.PutUint16(t, 2026)
	t[2], t[3] = 1, 1
	v := map[string]any{
		"version": 2,
		"variables": []map[string]any{{
			"name": "dbx", "guid": imageSecurityGUID, "attr": 0x27,
			"data": hex.EncodeToString(DBXEntries(tbs, x509c)), "time": hex.EncodeToString(t),
		}},
	}
	return json.Marshal(v)
}
