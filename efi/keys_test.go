package efi

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/foxboron/go-uefi/efi/signature"

	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/internal/vmtest"
	"github.com/intact-project/intact/pkcs7"
)

func TestKeySet(t *testing.T) {
	ks, err := GenerateKeys(KeyOptions{Name: "intact test"})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "keys")
	if err := ks.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := ks.WriteDir(dir); !errors.Is(err, ErrKeys) {
		t.Errorf("overwriting a key set: %v", err)
	}
	for _, n := range []string{"PK", "KEK", "db", "signing"} {
		for _, ext := range []string{".key", ".crt"} {
			st, err := os.Stat(filepath.Join(dir, n+ext))
			if err != nil {
				t.Fatal(err)
			}
			if ext == ".key" && st.Mode().Perm() != 0o600 {
				t.Errorf("%s%s mode %v", n, ext, st.Mode())
			}
		}
	}
	for _, n := range []string{"PK.auth", "KEK.auth", "db.auth", "GUID"} {
		if _, err := os.Stat(filepath.Join(dir, n)); err != nil {
			t.Error(err)
		}
	}
	back, err := LoadKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !back.DB.Certificate.Equal(ks.DB.Certificate) || back.Signing.Key == nil || back.Owner != ks.Owner {
		t.Error("LoadKeys does not give back the key set")
	}
	// The signing leaf chains to db the way Linux chains (AKID = db's SKID).
	if !bytes.Equal(ks.Signing.Certificate.AuthorityKeyId, ks.DB.Certificate.SubjectKeyId) || len(ks.DB.Certificate.SubjectKeyId) == 0 {
		t.Error("signing certificate's AKID is not db's SKID")
	}
	// The key files are what the rest of intact loads (PKCS#8), and a
	// root-hash signature by the leaf verifies against db as the kernel
	// would chain it.
	s, err := pkcs7.LoadSigner(filepath.Join(dir, "signing.key"), filepath.Join(dir, "signing.crt"))
	if err != nil {
		t.Fatal(err)
	}
	sig, err := s.Sign([]byte("abc"), pkcs7.SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ks.DB.Certificate)
	if _, err := pkcs7.Verify(sig, pkcs7.VerifyOptions{Roots: pool, Content: []byte("abc")}); err != nil {
		t.Errorf("signature by the signing key against db: %v", err)
	}
	if testutil.InVM() {
		return
	}
	openssl := testutil.RequireTool(t, "openssl")
	if out, err := exec.Command(openssl, "verify", "-purpose", "any", "-CAfile", filepath.Join(dir, "db.crt"), filepath.Join(dir, "signing.crt")).CombinedOutput(); err != nil {
		t.Errorf("openssl verify signing.crt: %v %s", err, out)
	}
	// Mismatched key file.
	os.Rename(filepath.Join(dir, "KEK.key"), filepath.Join(dir, "KEK.key.bak"))
	data, _ := os.ReadFile(filepath.Join(dir, "PK.key"))
	os.WriteFile(filepath.Join(dir, "KEK.key"), data, 0o600)
	if _, err := LoadKeys(dir); !errors.Is(err, ErrKeys) {
		t.Errorf("mismatched key: %v", err)
	}
	// An offline PK/KEK key is fine.
	os.Remove(filepath.Join(dir, "KEK.key"))
	if back, err := LoadKeys(dir); err != nil || back.KEK.Key != nil {
		t.Errorf("without KEK.key: %v", err)
	}
}

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
	ks, err := GenerateKeys(KeyOptions{})
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

// TestEnrollFakeEFIVars runs Enroll against a directory laid out like
// efivarfs: writes in the order db, KEK, PK with the authenticated-write
// attributes; refuses in user mode and without efivars.
func TestEnrollFakeEFIVars(t *testing.T) {
	ks, err := GenerateKeys(KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, auth, err := ks.Updates()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	v := EFIVars{Dir: dir}
	if err := v.Enroll(context.Background(), auth, nil); !errors.Is(err, ErrNoEFIVars) {
		t.Errorf("no SetupMode variable: %v", err)
	}
	setVar(t, dir, "SetupMode", []byte{0})
	setVar(t, dir, "SecureBoot", []byte{1})
	if err := v.Enroll(context.Background(), auth, nil); !errors.Is(err, ErrNotSetupMode) || !strings.Contains(err.Error(), "Secure Boot on") {
		t.Errorf("user mode: %v", err)
	}
	setVar(t, dir, "SetupMode", []byte{1})
	setVar(t, dir, "SecureBoot", []byte{0})
	var order []string
	if err := v.Enroll(context.Background(), auth, func(vr Variable) { order = append(order, vr.Name) }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(order, " ") != "db KEK PK" {
		t.Errorf("order %v", order)
	}
	for _, vr := range EnrollOrder {
		attrs, data, err := v.Read(vr.Name, vr.GUID)
		if err != nil || attrs != 0x27 || !bytes.Equal(data, auth[vr.Name]) {
			t.Errorf("%s: attrs %#x, %d bytes, %v", vr.Name, attrs, len(data), err)
		}
	}
	delete(auth, "KEK")
	if err := v.Enroll(context.Background(), auth, nil); !errors.Is(err, ErrKeys) {
		t.Errorf("missing KEK update: %v", err)
	}
}

func setVar(t *testing.T, dir, name string, data []byte) {
	b := binary.LittleEndian.AppendUint32(nil, 6)
	if err := os.WriteFile(filepath.Join(dir, name+"-"+globalGUID), append(b, data...), 0o644); err != nil {
		t.Fatal(err)
	}
}
