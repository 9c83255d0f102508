package vmtest

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/internal/vmtest/guest"
	"github.com/intact-project/intact/keyring"
)

// TestGuestEnvironmentInVM checks what the init promises every guest test.
func TestGuestEnvironmentInVM(t *testing.T) {
	testutil.RequireVM(t)
	for _, m := range []string{"dm_mod", "dm_verity", "loop", "erofs", "overlay", "virtio_blk"} {
		if _, err := os.Stat("/sys/module/" + m); err != nil {
			t.Errorf("module %s not loaded: %v", m, err)
		}
	}
	lsm, err := os.ReadFile("/sys/kernel/security/lsm")
	if err != nil || !strings.Contains(","+string(lsm)+",", ",ipe,") {
		t.Errorf("IPE not an active LSM: %q %v", lsm, err)
	}
	mnt := os.Getenv(guest.EnvScratchExt4)
	mounts, _ := os.ReadFile("/proc/mounts")
	if mnt == "" || !bytes.Contains(mounts, []byte(" "+mnt+" ext4 ")) {
		t.Errorf("scratch ext4 %q not mounted:\n%s", mnt, mounts)
	}
	if wd, _ := os.Getwd(); !strings.HasSuffix(wd, "/internal/vmtest") {
		t.Errorf("working directory %s is not the package directory", wd)
	}
	if _, err := os.Stat("testdata/guestpass/pass_test.go"); err != nil {
		t.Errorf("testdata not copied: %v", err)
	}
}

// TestSecureBootStateInVM: the firmware booted us with Secure Boot on, the
// kernel locked itself down, and the platform keyring holds exactly the db
// CA the harness generated (whose certificate the guest gets as
// INTACT_VM_CA_CERT).
func TestSecureBootStateInVM(t *testing.T) {
	keys := guest.RequireTrustedKeys(t)
	sb, err := os.ReadFile("/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c")
	if err != nil || len(sb) != 5 || sb[4] != 1 {
		t.Errorf("SecureBoot variable: %x %v", sb, err)
	}
	sm, err := os.ReadFile("/sys/firmware/efi/efivars/SetupMode-8be4df61-93ca-11d2-aa0d-00e098032b8c")
	if err != nil || len(sm) != 5 || sm[4] != 0 {
		t.Errorf("SetupMode variable: %x %v (want user mode)", sm, err)
	}
	if ld, err := os.ReadFile("/sys/kernel/security/lockdown"); err != nil || !bytes.Contains(ld, []byte("[integrity]")) {
		t.Errorf("lockdown: %q %v", ld, err)
	}
	pemBytes, err := os.ReadFile(keys.CACert)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(pemBytes)
	if blk == nil {
		t.Fatal("CA PEM")
	}
	ca, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := keyring.FindKeyring(".platform")
	if err != nil {
		t.Fatal(err)
	}
	all, err := keyring.ProcKeys()
	if err != nil {
		t.Fatal(err)
	}
	var platform []string
	for _, k := range all {
		if k.Type == "asymmetri" && strings.HasPrefix(k.Description, ca.Subject.CommonName+": ") {
			platform = append(platform, k.Description)
		}
	}
	if len(platform) != 1 {
		t.Errorf("keys named %q: %v (platform keyring %d)", ca.Subject.CommonName, platform, ring)
	}
	ids, err := keyring.Members(ring)
	if err == nil && len(ids) != 1 {
		t.Errorf("platform keyring holds %d keys, want only our db CA", len(ids))
	}
}
