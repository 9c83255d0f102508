// Package guest is the contract between the VM test harness
// (internal/vmtest, on the host) and what runs inside the VM: the run
// configuration the guest init reads, the serial ports results travel on,
// and the environment the test binary sees (INTACT_IN_VM, the scratch ext4
// mount, the test keys). Tests running in the guest use its helpers to find
// the keys the firmware trusts.
package guest

import (
	"os"
	"testing"
)

// ConfigPath is where the harness puts the run configuration in the
// initramfs.
const ConfigPath = "/intact/run.json"

// Serial ports (ttyS0 is the kernel console).
const (
	// OutputPort carries the test binary's stdout and stderr, byte for byte.
	OutputPort = "/dev/ttyS1"
	// StatusPort carries the init's status lines: StatusReady when the init
	// starts, then StatusExit with the exit code, or StatusError.
	StatusPort = "/dev/ttyS2"
)

// OutputBegin is the line the init writes on OutputPort right before the
// program starts; the firmware also prints on every serial port, so the host
// drops everything before it.
const OutputBegin = "\n--- INTACT-OUTPUT-BEGIN ---\n"

// Status line prefixes on StatusPort.
const (
	StatusReady = "INTACT-READY"
	StatusExit  = "INTACT-EXIT"
	StatusError = "INTACT-ERROR"
)

// Config is the run configuration (JSON at ConfigPath).
type Config struct {
	Args    []string `json:"args"`    // argv of the program to run; Args[0] is its guest path
	Env     []string `json:"env"`     // extra KEY=VALUE pairs
	Dir     string   `json:"dir"`     // working directory
	Modules []string `json:"modules"` // guest paths of kernel modules, in load order
	// ScratchSerial is the virtio serial of the scratch disk (an ext4 file
	// system with the verity feature), mounted at ScratchMount.
	ScratchSerial string `json:"scratch_serial,omitempty"`
	ScratchMount  string `json:"scratch_mount,omitempty"`
	SecureBoot    bool   `json:"secure_boot"`
}

// Environment variables of the guest test.
const (
	EnvInVM = "INTACT_IN_VM" // "1" inside the VM
	// EnvSecureBoot is "1" when the guest booted through OVMF Secure Boot
	// with the test CA enrolled in db (so the platform keyring trusts it).
	EnvSecureBoot  = "INTACT_VM_SECUREBOOT"
	EnvScratchExt4 = "INTACT_VM_SCRATCH_EXT4" // mount point of the scratch ext4 (verity feature on)
	EnvCACert      = "INTACT_VM_CA_CERT"      // PEM of the CA enrolled in db
	EnvSignKey     = "INTACT_VM_SIGN_KEY"     // PEM (PKCS#8) key of a leaf chained to that CA
	EnvSignCert    = "INTACT_VM_SIGN_CERT"    // PEM of that leaf
	// EnvCAKey is the db CA's own private key (PEM, PKCS#8): tests that
	// sign with the db key itself or issue further certificates under it.
	EnvCAKey = "INTACT_VM_CA_KEY"
	// Leaves under the db CA that the firmware's dbx revokes: one by the
	// SHA-256 of its TBSCertificate (EFI_CERT_X509_SHA256), one by the
	// whole certificate (EFI_CERT_X509).
	EnvRevokedTBSKey   = "INTACT_VM_REVOKED_TBS_KEY"
	EnvRevokedTBSCert  = "INTACT_VM_REVOKED_TBS_CERT"
	EnvRevokedX509Key  = "INTACT_VM_REVOKED_X509_KEY"
	EnvRevokedX509Cert = "INTACT_VM_REVOKED_X509_CERT"
	// An untrusted hierarchy of the same shape, for negative tests.
	EnvUntrustedCACert = "INTACT_VM_UNTRUSTED_CA_CERT"
	EnvUntrustedKey    = "INTACT_VM_UNTRUSTED_KEY"
	EnvUntrustedCert   = "INTACT_VM_UNTRUSTED_CERT"
)

// Keys are the PEM files of the test PKI inside the guest.
type Keys struct {
	CACert, SignKey, SignCert                    string
	UntrustedCACert, UntrustedKey, UntrustedCert string
	CAKey                                        string
	RevokedTBSKey, RevokedTBSCert                string
	RevokedX509Key, RevokedX509Cert              string
}

// LoadKeys returns the key paths from the environment and whether all are set.
func LoadKeys() (Keys, bool) {
	k := Keys{
		CACert: os.Getenv(EnvCACert), SignKey: os.Getenv(EnvSignKey), SignCert: os.Getenv(EnvSignCert),
		UntrustedCACert: os.Getenv(EnvUntrustedCACert), UntrustedKey: os.Getenv(EnvUntrustedKey),
		UntrustedCert: os.Getenv(EnvUntrustedCert),
		CAKey:         os.Getenv(EnvCAKey),
		RevokedTBSKey: os.Getenv(EnvRevokedTBSKey), RevokedTBSCert: os.Getenv(EnvRevokedTBSCert),
		RevokedX509Key: os.Getenv(EnvRevokedX509Key), RevokedX509Cert: os.Getenv(EnvRevokedX509Cert),
	}
	ok := k.CACert != "" && k.SignKey != "" && k.SignCert != "" && k.UntrustedKey != "" && k.UntrustedCert != ""
	return k, ok
}

// InVM reports whether this process runs inside the VM tier.
func InVM() bool { return os.Getenv(EnvInVM) == "1" }

// SecureBoot reports whether the guest booted through Secure Boot with the
// test CA enrolled.
func SecureBoot() bool { return os.Getenv(EnvSecureBoot) == "1" }

// RequireTrustedKeys skips a test outside the VM, and inside a VM booted
// without firmware (direct-kernel mode, where no key reaches the platform
// keyring) skips it with that reason; it returns the key paths.
func RequireTrustedKeys(t testing.TB) Keys {
	t.Helper()
	if !InVM() {
		t.Skip("runs inside the VM tier only (internal/vmtest; make test runs it under QEMU)")
	}
	if !SecureBoot() {
		t.Skip("needs the Secure Boot VM (test CA in the platform keyring); this guest was booted direct-kernel")
	}
	k, ok := LoadKeys()
	if !ok {
		t.Fatal("Secure Boot guest without the INTACT_VM_* key variables: harness bug")
	}
	return k
}
