package efi_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/foxboron/go-uefi/efi/signature"

	"github.com/intact-project/intact/efi"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/internal/vmtest"
)

// TestSignatureListsMatchVirtFirmware: our EFI_SIGNATURE_LISTs equal what
// virt-fw-sigdb (python3-virt-firmware, the tool the VM tier enrolls
// keys with) writes for the same certificate and owner, and each .auth
// carries that list, signed by the right key.
func TestSignatureListsMatchVirtFirmware(t *testing.T) {
	testutil.RequireHost(t, "runs virt-fw-sigdb from the VM assets")
	testutil.RequireTool(t, "python3")
	a, err := vmtest.Fetch(context.Background(), vmtest.FetchOptions{})
	if err != nil {
		testutil.Unavailable(t, "VM assets: "+err.Error())
	}
	ks, err := efi.GenerateKeys(efi.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := ks.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	esl, auth, err := ks.Updates()
	if err != nil {
		t.Fatal(err)
	}
	signers := map[string]*x509.Certificate{"PK": ks.PK.Certificate, "KEK": ks.PK.Certificate, "db": ks.KEK.Certificate}
	for _, n := range []string{"PK", "KEK", "db"} {
		out := filepath.Join(dir, n+".ref.esl")
		cmd, err := vmtest.VirtFirmware(context.Background(), a, "sigdb", filepath.Join(dir, "shim"),
			"--add-cert", ks.Owner, filepath.Join(dir, n+".crt"), "-o", out)
		if err != nil {
			t.Fatal(err)
		}
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("virt-fw-sigdb: %v %s", err, b)
		}
		ref, _ := os.ReadFile(out)
		if !bytes.Equal(esl[n], ref) {
			t.Errorf("%s: signature list differs from virt-fw-sigdb's (%d vs %d bytes)", n, len(esl[n]), len(ref))
		}
		a2, err := signature.ReadEFIVariableAuthencation2(bytes.NewBuffer(auth[n]))
		if err != nil {
			t.Fatalf("%s.auth: %v", n, err)
		}
		if !bytes.HasSuffix(auth[n], esl[n]) {
			t.Errorf("%s.auth does not end with its signature list", n)
		}
		if ok, err := a2.Verify(signers[n]); !ok || err != nil {
			t.Errorf("%s.auth not signed by the expected key: %v", n, err)
		}
		if ok, _ := a2.Verify(ks.DB.Certificate); ok {
			t.Errorf("%s.auth verifies with the db key", n)
		}
	}
}
