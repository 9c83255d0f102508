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

	"github.com/foxboron/go-uefi/efivar"

	"github.com/intact-project/intact/internal/testutil"
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

// TestVariableNames: what an update's signature covers (name, vendor GUID,
// attributes) equals go-uefi's definitions of the standard variables, and
// Append only adds EFI_VARIABLE_APPEND_WRITE.
func TestVariableNames(t *testing.T) {
	for _, c := range []struct {
		v    Variable
		want efivar.Efivar
	}{{VarPK, efivar.PK}, {VarKEK, efivar.KEK}, {VarDB, efivar.Db}, {VarDBX, efivar.Dbx}} {
		got := c.v.efivar()
		if got.Name != c.want.Name || *got.GUID != *c.want.GUID || got.Attributes != c.want.Attributes {
			t.Errorf("%s: %s %x %#x, want %s %x %#x", c.v.Name, got.Name, *got.GUID, got.Attributes, c.want.Name, *c.want.GUID, c.want.Attributes)
		}
	}
	if a := VarDBX.Append(); a.Attributes != 0x67 || VarDBX.Attributes != 0x27 {
		t.Errorf("append attributes %#x (dbx %#x)", a.Attributes, VarDBX.Attributes)
	}
}
