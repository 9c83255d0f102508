// Package testpki makes throwaway X.509 hierarchies for tests: a root CA, an
// optional intermediate CA and code-signing leaf certificates with RSA
// (2048/4096) or ECDSA (P-256/P-384) keys, as Go values, PEM and DER, and
// written to a directory for reference tools (openssl, fsverity, sbsign,
// virt-fw-vars, keyctl) and for the VM tier.
//
// The certificates carry the extensions real signing hierarchies use, so
// that both the kernel's X.509 parser and `openssl cms -verify` accept them:
// CAs have basicConstraints CA:TRUE (critical), keyUsage keyCertSign|cRLSign
// and a subjectKeyIdentifier; leaves have basicConstraints CA:FALSE,
// keyUsage digitalSignature, extKeyUsage codeSigning, subjectKeyIdentifier
// and authorityKeyIdentifier. openssl's default S/MIME purpose rejects a
// codeSigning-only leaf, so openssl verification uses `-purpose any` (the
// kernel ignores extKeyUsage).
//
// Keys are fresh for every hierarchy (never shared between two PKIs, so a
// test that expects a foreign CA to be rejected can rely on it). Nothing here
// is suitable for production keys.
package testpki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/intact-project/intact/internal/certs"
)

// KeyType names a key algorithm and size (package certs's).
type KeyType = certs.KeyType

// Key types. The zero value of KeyType means RSA2048.
const (
	RSA2048   = certs.RSA2048
	RSA4096   = certs.RSA4096
	ECDSAP256 = certs.ECDSAP256
	ECDSAP384 = certs.ECDSAP384
)

// KeyTypes lists every supported key type, for table-driven tests.
var KeyTypes = []KeyType{RSA2048, RSA4096, ECDSAP256, ECDSAP384}

// ErrKeyType is returned for an unknown KeyType.
var ErrKeyType = certs.ErrKeyType

// GenerateKey makes a fresh private key of type kt ("" means RSA2048).
func GenerateKey(kt KeyType) (crypto.Signer, error) { return certs.GenerateKey(kt) }

// Options configures a hierarchy. The zero value gives a root CA and one
// RSA-2048 code-signing leaf, valid from an hour ago for ten years.
type Options struct {
	// Key is the leaf's key type; zero means RSA2048.
	Key KeyType
	// CAKey is the key type of the root and the intermediate; zero means
	// the same as Key.
	CAKey KeyType
	// Depth is the number of CA certificates above the leaf: 1 (the root
	// signs the leaf) or 2 (root -> intermediate -> leaf). Zero means 1.
	Depth int
	// Name prefixes every subject common name; zero means "intact test".
	Name string
	// ExtKeyUsage of the leaf; nil means code signing only.
	ExtKeyUsage []x509.ExtKeyUsage
	// NotBefore and NotAfter bound every certificate's validity; zero
	// means one hour ago and ten years from now.
	NotBefore, NotAfter time.Time
}

// Cert is a certificate together with its private key.
type Cert struct {
	Certificate *x509.Certificate
	Key         crypto.Signer
}

// DER is the certificate's DER encoding.
func (c *Cert) DER() []byte { return c.Certificate.Raw }

// CertPEM is the certificate as one PEM CERTIFICATE block.
func (c *Cert) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate.Raw})
}

// KeyPEM is the private key as a PEM "PRIVATE KEY" (PKCS#8) block, the form
// fsverity-utils and sign-file require.
func (c *Cert) KeyPEM() []byte {
	b, err := certs.MarshalPrivateKeyPEM(c.Key)
	if err != nil {
		panic(err) // only our own key types reach here
	}
	return b
}

// KeyPEMLegacy is the private key in its algorithm-specific PEM form: "RSA
// PRIVATE KEY" (PKCS#1) or "EC PRIVATE KEY" (SEC 1).
func (c *Cert) KeyPEMLegacy() []byte {
	switch k := c.Key.(type) {
	case *rsa.PrivateKey:
		return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			panic(fmt.Sprintf("testpki: marshal SEC 1: %v", err))
		}
		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	}
	panic(fmt.Sprintf("testpki: unexpected key type %T", c.Key))
}

// PKI is a generated hierarchy.
type PKI struct {
	Root         *Cert
	Intermediate *Cert // nil when Depth is 1
	Leaf         *Cert

	opts Options
}

// New generates a hierarchy.
func New(opts Options) (*PKI, error) {
	if opts.Key == "" {
		opts.Key = RSA2048
	}
	if opts.CAKey == "" {
		opts.CAKey = opts.Key
	}
	if opts.Depth == 0 {
		opts.Depth = 1
	}
	if opts.Depth < 1 || opts.Depth > 2 {
		return nil, fmt.Errorf("testpki: depth %d not supported (1 or 2)", opts.Depth)
	}
	if opts.Name == "" {
		opts.Name = "intact test"
	}
	if opts.NotBefore.IsZero() {
		opts.NotBefore = time.Now().Add(-time.Hour).Truncate(time.Second)
	}
	if opts.NotAfter.IsZero() {
		opts.NotAfter = opts.NotBefore.Add(10 * 365 * 24 * time.Hour)
	}
	p := &PKI{opts: opts}
	var err error
	p.Root, err = p.issue(nil, opts.CAKey, certs.CATemplate(p.name(opts.Name+" root CA"), opts.NotBefore, opts.NotAfter, 1))
	if err != nil {
		return nil, err
	}
	if opts.Depth == 2 {
		p.Intermediate, err = p.issue(p.Root, opts.CAKey, certs.CATemplate(p.name(opts.Name+" intermediate CA"), opts.NotBefore, opts.NotAfter, 0))
		if err != nil {
			return nil, err
		}
	}
	p.Leaf, err = p.IssueLeaf(opts.Name+" signer", opts.Key)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// TB is the part of testing.TB the Must helpers use (package testing stays
// out of tools that use testpki, such as internal/sampleimage/samplepush).
type TB interface {
	Helper()
	Fatal(args ...any)
}

// MustNew is New for tests: it fails t on error.
func MustNew(t TB, opts Options) *PKI {
	t.Helper()
	p, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Issuer is the CA that signs leaves: the intermediate if there is one,
// else the root.
func (p *PKI) Issuer() *Cert {
	if p.Intermediate != nil {
		return p.Intermediate
	}
	return p.Root
}

// IssueLeaf makes another code-signing leaf under Issuer with a fresh key of
// type kt ("" means the hierarchy's leaf key type), for tests that need
// several signers under one CA (layer signing, policy signing, ...).
func (p *PKI) IssueLeaf(commonName string, kt KeyType) (*Cert, error) {
	if kt == "" {
		kt = p.opts.Key
	}
	eku := p.opts.ExtKeyUsage
	if eku == nil {
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}
	}
	tmpl := certs.CodeSigningTemplate(p.name(commonName), p.opts.NotBefore, p.opts.NotAfter)
	tmpl.ExtKeyUsage = eku
	return p.issue(p.Issuer(), kt, tmpl)
}

// Roots is a pool holding only the root certificate.
func (p *PKI) Roots() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.Root.Certificate)
	return pool
}

// Chain is the certificates between the leaf and the root (the
// intermediate, if any), leaf-side first.
func (p *PKI) Chain() []*x509.Certificate {
	if p.Intermediate == nil {
		return nil
	}
	return []*x509.Certificate{p.Intermediate.Certificate}
}

// ChainPEM is Chain as concatenated PEM blocks (empty for depth 1).
func (p *PKI) ChainPEM() []byte {
	var out []byte
	for _, c := range p.Chain() {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// Files are the paths WriteDir wrote.
type Files struct {
	Dir       string
	RootPEM   string // root.pem: the root CA certificate (the -CAfile / trust anchor)
	RootDER   string // root.der: the same in DER (keyctl padd, UEFI db)
	RootKey   string // root.key: the root's private key, PKCS#8 PEM
	ChainPEM  string // chain.pem: intermediates, PEM (empty file for depth 1)
	CertPEM   string // cert.pem: the leaf certificate
	CertDER   string // cert.der: the leaf certificate in DER
	KeyPEM    string // key.pem: the leaf's private key, PKCS#8 PEM
	BundlePEM string // bundle.pem: leaf followed by the intermediates
}

// WriteDir writes the hierarchy to dir (created if needed) under fixed
// names and returns their paths. Private keys are mode 0600.
func (p *PKI) WriteDir(dir string) (Files, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Files{}, fmt.Errorf("testpki: %w", err)
	}
	f := Files{
		Dir:       dir,
		RootPEM:   filepath.Join(dir, "root.pem"),
		RootDER:   filepath.Join(dir, "root.der"),
		RootKey:   filepath.Join(dir, "root.key"),
		ChainPEM:  filepath.Join(dir, "chain.pem"),
		CertPEM:   filepath.Join(dir, "cert.pem"),
		CertDER:   filepath.Join(dir, "cert.der"),
		KeyPEM:    filepath.Join(dir, "key.pem"),
		BundlePEM: filepath.Join(dir, "bundle.pem"),
	}
	writes := []struct {
		path string
		data []byte
		perm os.FileMode
	}{
		{f.RootPEM, p.Root.CertPEM(), 0o644},
		{f.RootDER, p.Root.DER(), 0o644},
		{f.RootKey, p.Root.KeyPEM(), 0o600},
		{f.ChainPEM, p.ChainPEM(), 0o644},
		{f.CertPEM, p.Leaf.CertPEM(), 0o644},
		{f.CertDER, p.Leaf.DER(), 0o644},
		{f.KeyPEM, p.Leaf.KeyPEM(), 0o600},
		{f.BundlePEM, append(p.Leaf.CertPEM(), p.ChainPEM()...), 0o644},
	}
	for _, w := range writes {
		if err := os.WriteFile(w.path, w.data, w.perm); err != nil {
			return Files{}, fmt.Errorf("testpki: %w", err)
		}
	}
	return f, nil
}

// MustWriteDir is WriteDir for tests: it fails t on error.
func (p *PKI) MustWriteDir(t TB, dir string) Files {
	t.Helper()
	f, err := p.WriteDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (p *PKI) name(commonName string) pkix.Name {
	return pkix.Name{CommonName: commonName, Organization: []string{"intact tests"}}
}

// issue signs tmpl (certs.Issue fills in serial and key identifiers) with
// parent (self-signed when parent is nil) and returns it with a fresh key
// of type kt.
func (p *PKI) issue(parent *Cert, kt KeyType, tmpl *x509.Certificate) (*Cert, error) {
	key, err := GenerateKey(kt)
	if err != nil {
		return nil, err
	}
	var issuer *x509.Certificate
	issuerKey := key
	if parent != nil {
		issuer, issuerKey = parent.Certificate, parent.Key
	}
	cert, err := certs.Issue(tmpl, key.Public(), issuer, issuerKey)
	if err != nil {
		return nil, fmt.Errorf("testpki: %w", err)
	}
	return &Cert{Certificate: cert, Key: key}, nil
}
