package pkcs7

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
)

// ParsePrivateKey decodes a private key in PEM ("PRIVATE KEY" = PKCS#8,
// "RSA PRIVATE KEY" = PKCS#1, "EC PRIVATE KEY" = SEC 1; other blocks such as
// "EC PARAMETERS" are skipped) or in DER (any of the three). Encrypted keys
// are refused. Errors wrap ErrNotPrivateKey.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(data))
	}
	if !isPEM(data) {
		k, err := parseKeyDER(data)
		if err != nil {
			return nil, fmt.Errorf("%w (neither PEM nor a DER PKCS#8, PKCS#1 or SEC 1 key)", ErrNotPrivateKey)
		}
		return k, nil
	}
	var found []string
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch b.Type {
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY":
			if _, enc := b.Headers["Proc-Type"]; enc {
				return nil, fmt.Errorf("%w: the key is encrypted; decrypt it first (openssl pkey -in K -out K2)", ErrNotPrivateKey)
			}
			k, err := parseKeyDER(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%w: %s block: %v", ErrNotPrivateKey, b.Type, err)
			}
			return k, nil
		case "ENCRYPTED PRIVATE KEY":
			return nil, fmt.Errorf("%w: the key is encrypted; decrypt it first (openssl pkey -in K -out K2)", ErrNotPrivateKey)
		}
		found = append(found, b.Type)
	}
	if len(found) > 0 {
		return nil, fmt.Errorf("%w (found %q)", ErrNotPrivateKey, found)
	}
	return nil, fmt.Errorf("%w (no PEM block)", ErrNotPrivateKey)
}

func parseKeyDER(der []byte) (crypto.Signer, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err == nil {
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%T is not a signing key", k)
		}
		return s, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	return nil, err // the PKCS#8 error: the most general of the three
}

// ParseCertificates decodes every CERTIFICATE block of PEM data (other
// blocks are skipped), or one or more concatenated DER certificates. Errors
// wrap ErrNotCertificate.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(data))
	}
	if !isPEM(data) {
		certs, err := x509.ParseCertificates(data)
		if err != nil || len(certs) == 0 {
			return nil, fmt.Errorf("%w (neither PEM nor DER)", ErrNotCertificate)
		}
		if len(certs) > MaxCertificates {
			return nil, fmt.Errorf("%w: more than %d certificates", ErrTooLarge, MaxCertificates)
		}
		return certs, nil
	}
	var certs []*x509.Certificate
	var found []string
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			found = append(found, b.Type)
			continue
		}
		if len(certs) == MaxCertificates {
			return nil, fmt.Errorf("%w: more than %d certificates", ErrTooLarge, MaxCertificates)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %d: %v", ErrNotCertificate, len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		if len(found) > 0 {
			return nil, fmt.Errorf("%w (found %q)", ErrNotCertificate, found)
		}
		return nil, fmt.Errorf("%w (no PEM block)", ErrNotCertificate)
	}
	return certs, nil
}

func isPEM(data []byte) bool { return bytes.Contains(data, []byte("-----BEGIN ")) }

// ReadFile reads a file of at most MaxSize bytes, the bound every loader in
// this package applies to untrusted input.
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%s: %w: more than %d bytes", path, ErrTooLarge, MaxSize)
	}
	return data, nil
}

// LoadPrivateKey reads a key file (see ParsePrivateKey). The error names
// the file: "key.pem: not a private key (...)".
func LoadPrivateKey(path string) (crypto.Signer, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// LoadCertificates reads a certificate file (see ParseCertificates).
func LoadCertificates(path string) ([]*x509.Certificate, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := ParseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// LoadCertPool reads a certificate file into a pool (trust anchors).
func LoadCertPool(path string) (*x509.CertPool, error) {
	certs, err := LoadCertificates(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// LoadSigner reads a private key and a certificate file and pairs them (see
// NewSigner). The first certificate in certPath is the signer's; any further
// ones become its Chain, so a bundle file (leaf, then intermediates) works.
func LoadSigner(keyPath, certPath string) (*Signer, error) {
	key, err := LoadPrivateKey(keyPath)
	if err != nil {
		return nil, err
	}
	certs, err := LoadCertificates(certPath)
	if err != nil {
		return nil, err
	}
	s, err := NewSigner(certs[0], key, certs[1:]...)
	if err != nil {
		if errors.Is(err, ErrKeyMismatch) {
			return nil, fmt.Errorf("%s: %w %s", keyPath, err, certPath)
		}
		return nil, fmt.Errorf("%s: %w", certPath, err)
	}
	return s, nil
}
