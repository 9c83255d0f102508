// Package certs issues the X.509 certificates intact's signatures need: CAs
// and code-signing leaves with keys the Linux kernel verifies (RSA, ECDSA
// P-256/P-384) and the key identifiers by which Linux climbs from a signer
// to its CA (subjectKeyIdentifier as openssl computes it, and
// authorityKeyIdentifier naming the issuer's: without it the kernel
// answers ENOKEY, see pkcs7.CheckKernelSigner). The quickstart's keys, the
// test PKI (internal/testpki) and the Secure Boot key sets are made here.
// It imports nothing of intact, so every package may use it.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// KeyType names a key algorithm and size the kernel verifies.
type KeyType string

// Key types. The zero value of KeyType means RSA2048.
const (
	RSA2048   KeyType = "rsa2048"
	RSA4096   KeyType = "rsa4096"
	ECDSAP256 KeyType = "ecdsa-p256"
	ECDSAP384 KeyType = "ecdsa-p384"
)

// ErrKeyType is returned for an unknown KeyType.
var ErrKeyType = errors.New("certs: unknown key type")

// GenerateKey makes a fresh private key of type kt ("" means RSA2048).
func GenerateKey(kt KeyType) (crypto.Signer, error) {
	switch kt {
	case RSA2048, "":
		return rsa.GenerateKey(rand.Reader, 2048)
	case RSA4096:
		return rsa.GenerateKey(rand.Reader, 4096)
	case ECDSAP256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case ECDSAP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	}
	return nil, fmt.Errorf("%w %q", ErrKeyType, kt)
}

// CATemplate is a CA certificate's shape: basicConstraints CA:TRUE
// (critical) with maxPathLen (0: it signs leaves only), keyUsage
// keyCertSign|cRLSign|digitalSignature.
func CATemplate(subject pkix.Name, notBefore, notAfter time.Time, maxPathLen int) *x509.Certificate {
	return &x509.Certificate{
		Subject:               subject,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            maxPathLen,
		MaxPathLenZero:        maxPathLen == 0,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
}

// CodeSigningTemplate is a signing leaf's shape: basicConstraints CA:FALSE,
// keyUsage digitalSignature, extKeyUsage codeSigning (the kernel ignores
// extKeyUsage; openssl's default S/MIME purpose rejects such a leaf, so
// openssl verifies with -purpose any).
func CodeSigningTemplate(subject pkix.Name, notBefore, notAfter time.Time) *x509.Certificate {
	return &x509.Certificate{
		Subject:               subject,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
	}
}

// Issue signs tmpl for the public key pub with issuerKey, as issuer
// (self-signed when issuer is nil: issuerKey must then be pub's private
// key). It fills in what Linux needs to chain the certificate: a random
// serial number unless tmpl has one, the subjectKeyIdentifier (SHA-1 of the
// public key, RFC 5280 method 1, as openssl computes it) and the
// authorityKeyIdentifier (the issuer's subjectKeyIdentifier).
func Issue(tmpl *x509.Certificate, pub crypto.PublicKey, issuer *x509.Certificate, issuerKey crypto.Signer) (*x509.Certificate, error) {
	t := *tmpl
	if t.SerialNumber == nil {
		serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
		if err != nil {
			return nil, fmt.Errorf("certs: serial: %w", err)
		}
		t.SerialNumber = serial.Add(serial, big.NewInt(1))
	}
	var err error
	if t.SubjectKeyId, err = KeyID(pub); err != nil {
		return nil, err
	}
	parent := &t
	if issuer != nil {
		parent = issuer
		t.AuthorityKeyId = issuer.SubjectKeyId
	}
	switch pub.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey:
	default:
		return nil, fmt.Errorf("%w: %T keys are not verified by the kernel", ErrKeyType, pub)
	}
	der, err := x509.CreateCertificate(rand.Reader, &t, parent, pub, issuerKey)
	if err != nil {
		return nil, fmt.Errorf("certs: issue %q: %w", t.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: issue %q: %w", t.Subject.CommonName, err)
	}
	return cert, nil
}

// KeyID is the RFC 5280 section 4.2.1.2 method (1) key identifier of pub:
// SHA-1 of the subjectPublicKey bit string, as openssl computes it.
func KeyID(pub crypto.PublicKey) ([]byte, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	var info struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(spki, &info); err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	sum := sha1.Sum(info.PublicKey.Bytes)
	return sum[:], nil
}

// MarshalPrivateKeyPEM encodes key as a PEM "PRIVATE KEY" (PKCS#8) block,
// the form fsverity-utils, sign-file and pkcs7.LoadPrivateKey take.
func MarshalPrivateKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// MarshalCertificatePEM encodes certificates as PEM CERTIFICATE blocks.
func MarshalCertificatePEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}
