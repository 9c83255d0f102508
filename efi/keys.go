package efi

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/foxboron/go-uefi/efi/attributes"
	"github.com/foxboron/go-uefi/efi/signature"
	"github.com/foxboron/go-uefi/efi/util"
	"github.com/foxboron/go-uefi/efivar"
	"github.com/google/uuid"

	"github.com/intact-project/intact/internal/atomicfile"
	"github.com/intact-project/intact/internal/certs"
)

// ErrKeys is wrapped by key set errors (missing or mismatched files).
var ErrKeys = errors.New("efi: bad key set")

// KeyPair is a certificate and its private key.
type KeyPair struct {
	Certificate *x509.Certificate
	Key         crypto.Signer
}

// KeySet is a Secure Boot key hierarchy as intact uses it: the platform
// key (PK), the key exchange key (KEK), the db key (enrolled in db: it
// signs UKIs, and the kernel loads its certificate into the platform
// keyring) and a signing leaf issued by the db key, for dm-verity root
// hashes, layers and IPE policies (its authorityKeyIdentifier names the db
// key, which is how Linux chains it).
type KeySet struct {
	PK, KEK, DB, Signing KeyPair
	// Owner is the signature owner GUID recorded with the certificates in
	// the signature lists.
	Owner string
}

// Key set file names (in KeySet.WriteDir's directory).
var keyNames = []string{"PK", "KEK", "db", "signing"}

// KeyOptions configures GenerateKeys.
type KeyOptions struct {
	// Name prefixes the certificates' common names; empty means "intact".
	Name string
	// Bits is the RSA key size; zero means 2048 (what every UEFI
	// implementation accepts).
	Bits int
	// NotBefore and NotAfter bound the certificates; zero means now and
	// 20 years later (firmware does not check validity times, Linux does
	// not either for keyring keys).
	NotBefore, NotAfter time.Time
}

// GenerateKeys makes a fresh key set: PK, KEK and db as self-signed RSA CAs
// (as sbctl makes them) and the signing leaf under db.
func GenerateKeys(opts KeyOptions) (*KeySet, error) {
	if opts.Name == "" {
		opts.Name = "intact"
	}
	if opts.Bits == 0 {
		opts.Bits = 2048
	}
	if opts.NotBefore.IsZero() {
		opts.NotBefore = time.Now().Add(-time.Hour).Truncate(time.Second).UTC()
	}
	if opts.NotAfter.IsZero() {
		opts.NotAfter = opts.NotBefore.AddDate(20, 0, 0)
	}
	ks := &KeySet{Owner: uuid.NewString()}
	var err error
	for _, x := range []struct {
		dst  *KeyPair
		name string
	}{{&ks.PK, "Platform Key"}, {&ks.KEK, "Key Exchange Key"}, {&ks.DB, "db"}} {
		if *x.dst, err = issue(nil, opts, opts.Name+" "+x.name, true); err != nil {
			return nil, err
		}
	}
	if ks.Signing, err = issue(&ks.DB, opts, opts.Name+" signing", false); err != nil {
		return nil, err
	}
	return ks, nil
}

func issue(parent *KeyPair, opts KeyOptions, cn string, ca bool) (KeyPair, error) {
	key, err := rsa.GenerateKey(rand.Reader, opts.Bits)
	if err != nil {
		return KeyPair{}, fmt.Errorf("efi: generate key: %w", err)
	}
	subject := pkix.Name{CommonName: cn}
	tmpl := certs.CodeSigningTemplate(subject, opts.NotBefore, opts.NotAfter)
	if ca {
		tmpl = certs.CATemplate(subject, opts.NotBefore, opts.NotAfter, -1)
	}
	var issuer *x509.Certificate
	signer := crypto.Signer(key)
	if parent != nil {
		issuer, signer = parent.Certificate, parent.Key
	}
	cert, err := certs.Issue(tmpl, key.Public(), issuer, signer)
	if err != nil {
		return KeyPair{}, fmt.Errorf("efi: %w", err)
	}
	return KeyPair{Certificate: cert, Key: key}, nil
}

// Variable describes one of the Secure Boot key variables.
type Variable struct {
	Name string // "PK", "KEK", "db"
	GUID string // vendor GUID
	// Attributes are the variable attributes for an authenticated write
	// (non-volatile, boot and runtime access, time-based authenticated).
	Attributes uint32
}

// The Secure Boot key variables, in enrollment order (db, KEK, then PK,
// which ends setup mode), and the forbidden signature database dbx (an
// update to db or dbx is signed by a KEK).
var (
	VarDB  = Variable{"db", "d719b2cb-3d3a-4596-a3bc-dad00e67656f", 0x27}
	VarKEK = Variable{"KEK", "8be4df61-93ca-11d2-aa0d-00e098032b8c", 0x27}
	VarPK  = Variable{"PK", "8be4df61-93ca-11d2-aa0d-00e098032b8c", 0x27}
	VarDBX = Variable{"dbx", "d719b2cb-3d3a-4596-a3bc-dad00e67656f", 0x27}
)

// AttrAppendWrite is EFI_VARIABLE_APPEND_WRITE: the firmware appends the
// update's signature lists to the variable (dropping entries it already
// holds) instead of replacing it, and does not require a newer timestamp.
const AttrAppendWrite = 0x40

// Append returns v with EFI_VARIABLE_APPEND_WRITE set: an update signed
// for it adds to db or dbx (the attributes are part of the signed data, so
// the flag must be set before signing).
func (v Variable) Append() Variable {
	v.Attributes |= AttrAppendWrite
	return v
}

// EnrollOrder is the order in which the key variables are written.
var EnrollOrder = []Variable{VarDB, VarKEK, VarPK}

// efivar is v in go-uefi's terms: the signed data covers the name, the
// vendor GUID and the attributes.
func (v Variable) efivar() efivar.Efivar {
	return efivar.Efivar{Name: v.Name, GUID: util.StringToGUID(v.GUID), Attributes: attributes.Attributes(v.Attributes)}
}

// SignatureList returns the EFI_SIGNATURE_LIST (type EFI_CERT_X509_GUID)
// holding cert, owned by owner (a GUID string).
func SignatureList(cert *x509.Certificate, owner string) ([]byte, error) {
	if _, err := uuid.Parse(owner); err != nil {
		return nil, fmt.Errorf("%w: owner GUID %q: %v", ErrKeys, owner, err)
	}
	sl := signature.NewSignatureList(signature.CERT_X509_GUID)
	if err := sl.AppendBytes(*util.StringToGUID(owner), cert.Raw); err != nil {
		return nil, fmt.Errorf("efi: signature list: %w", err)
	}
	return sl.Bytes(), nil
}

type rawMarshal []byte

func (r rawMarshal) Marshal(b *bytes.Buffer) { b.Write(r) }
func (r rawMarshal) Bytes() []byte           { return r }

// AuthVariable returns the authenticated variable update (.auth: an
// EFI_VARIABLE_AUTHENTICATION_2 with a PKCS#7 signature by signer,
// followed by the data) that writes data into v.
func AuthVariable(v Variable, data []byte, signer KeyPair) ([]byte, error) {
	_, auth, err := signature.SignEFIVariable(v.efivar(), rawMarshal(data), signer.Key, signer.Certificate)
	if err != nil {
		return nil, fmt.Errorf("efi: sign %s update: %w", v.Name, err)
	}
	var b bytes.Buffer
	auth.Marshal(&b)
	return b.Bytes(), nil
}

// Updates returns the signature list and the signed update of each key
// variable: PK and KEK are signed by PK, db by KEK.
func (ks *KeySet) Updates() (esl, auth map[string][]byte, err error) {
	esl, auth = map[string][]byte{}, map[string][]byte{}
	for _, x := range []struct {
		v        Variable
		cert     *x509.Certificate
		signedBy KeyPair
	}{{VarPK, ks.PK.Certificate, ks.PK}, {VarKEK, ks.KEK.Certificate, ks.PK}, {VarDB, ks.DB.Certificate, ks.KEK}} {
		l, err := SignatureList(x.cert, ks.Owner)
		if err != nil {
			return nil, nil, err
		}
		a, err := AuthVariable(x.v, l, x.signedBy)
		if err != nil {
			return nil, nil, err
		}
		esl[x.v.Name], auth[x.v.Name] = l, a
	}
	return esl, auth, nil
}

// WriteDir writes the key set to dir (created 0700): NAME.key (PKCS#8
// PEM, 0600) and NAME.crt (PEM) for PK, KEK, db and signing; PK.auth,
// KEK.auth and db.auth (signed updates for enrollment); GUID (the owner).
// It refuses to overwrite an existing key set.
func (ks *KeySet) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("efi: %w", err)
	}
	for _, n := range keyNames {
		if _, err := os.Stat(filepath.Join(dir, n+".key")); err == nil {
			return fmt.Errorf("%w: %s already holds a key set (%s.key exists)", ErrKeys, dir, n)
		}
	}
	_, auth, err := ks.Updates()
	if err != nil {
		return err
	}
	files := map[string][]byte{"GUID": []byte(ks.Owner + "\n")}
	for n, a := range auth {
		files[n+".auth"] = a
	}
	for i, kp := range []KeyPair{ks.PK, ks.KEK, ks.DB, ks.Signing} {
		der, err := x509.MarshalPKCS8PrivateKey(kp.Key)
		if err != nil {
			return fmt.Errorf("efi: %w", err)
		}
		files[keyNames[i]+".key"] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		files[keyNames[i]+".crt"] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: kp.Certificate.Raw})
	}
	for name, data := range files {
		perm := os.FileMode(0o644)
		if strings.HasSuffix(name, ".key") {
			perm = 0o600
		}
		if err := atomicfile.WriteFile(filepath.Join(dir, name), data, perm); err != nil {
			return err
		}
	}
	return nil
}

// LoadKeys reads a key set written by WriteDir. Private keys that are
// absent are left nil (an operator may keep PK and KEK offline); a key
// that does not match its certificate is an error.
func LoadKeys(dir string) (*KeySet, error) {
	ks := &KeySet{}
	b, err := os.ReadFile(filepath.Join(dir, "GUID"))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeys, err)
	}
	ks.Owner = strings.TrimSpace(string(b))
	if _, err := uuid.Parse(ks.Owner); err != nil {
		return nil, fmt.Errorf("%w: %s/GUID: %v", ErrKeys, dir, err)
	}
	for i, dst := range []*KeyPair{&ks.PK, &ks.KEK, &ks.DB, &ks.Signing} {
		n := keyNames[i]
		cb, err := os.ReadFile(filepath.Join(dir, n+".crt"))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrKeys, err)
		}
		blk, _ := pem.Decode(cb)
		if blk == nil || blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: %s/%s.crt is not a PEM certificate", ErrKeys, dir, n)
		}
		if dst.Certificate, err = x509.ParseCertificate(blk.Bytes); err != nil {
			return nil, fmt.Errorf("%w: %s/%s.crt: %v", ErrKeys, dir, n, err)
		}
		kb, err := os.ReadFile(filepath.Join(dir, n+".key"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrKeys, err)
		}
		blk, _ = pem.Decode(kb)
		if blk == nil {
			return nil, fmt.Errorf("%w: %s/%s.key is not PEM", ErrKeys, dir, n)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %s/%s.key: %v (PKCS#8 expected)", ErrKeys, dir, n, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok || !publicKeysEqual(dst.Certificate.PublicKey, s.Public()) {
			return nil, fmt.Errorf("%w: %s/%s.key does not match %s.crt", ErrKeys, dir, n, n)
		}
		dst.Key = s
	}
	return ks, nil
}
