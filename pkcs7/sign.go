package pkcs7

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"io"
	"slices"
)

// SignerID selects how a SignerInfo names the signer's certificate.
type SignerID int

const (
	// IssuerAndSerial names the certificate by issuer and serial number
	// (SignedData and SignerInfo version 1). openssl's and fsverity-utils'
	// default, and the zero value.
	IssuerAndSerial SignerID = iota
	// SubjectKeyID names it by its subjectKeyIdentifier extension
	// (version 3), as `sign-file -k` and `openssl cms -keyid` do. Linux
	// matches such a signer only against keys in its keyrings, never
	// against the message's certificates: use it only when the signer's
	// own key is in the keyring (module signing keys), not for leaves
	// trusted through a CA.
	SubjectKeyID
)

// SignOptions configures Sign. The zero value makes a detached SHA-256
// signature with the signer's certificate embedded and no signed
// attributes: the dm-verity root-hash signature format.
type SignOptions struct {
	// Hash is the digest algorithm: crypto.SHA256 (the zero value means
	// SHA256), crypto.SHA384 or crypto.SHA512. fs-verity signatures use
	// the file digest's algorithm.
	Hash crypto.Hash
	// Attached includes the content in the message (IPE policies).
	Attached bool
	// NoCerts omits every certificate, as fs-verity and module
	// signatures conventionally do; the verifier must then already hold
	// the signer's certificate or key.
	NoCerts bool
	// Chain holds further certificates to embed after the signer's
	// (intermediate CAs); ignored with NoCerts.
	Chain []*x509.Certificate
	// SignerID selects issuerAndSerialNumber (zero) or
	// subjectKeyIdentifier.
	SignerID SignerID
	// DigestParamsAbsent writes the digest AlgorithmIdentifiers without
	// NULL parameters, as OpenSSL's CMS API (`openssl cms -sign`, the
	// kernel's scripts/sign-file) does; the zero value writes NULL, as
	// `openssl smime -sign` does. The kernel accepts both.
	DigestParamsAbsent bool
}

func (o *SignOptions) hash() (crypto.Hash, error) {
	h := o.Hash
	if h == 0 {
		h = crypto.SHA256
	}
	if oidByHash(h) == nil {
		return 0, fmt.Errorf("%w: digest algorithm %v (use SHA-256, SHA-384 or SHA-512)", ErrUnsupported, h)
	}
	return h, nil
}

// Signer is a private key with its certificate, checked to belong together
// and to be of a kind the kernel verifies.
type Signer struct {
	Certificate *x509.Certificate
	Key         crypto.Signer
	// Chain holds certificates that came with the signer's certificate
	// (for example from a bundle file); Sign embeds them after the
	// signer's unless SignOptions.NoCerts is set.
	Chain []*x509.Certificate
}

// NewSigner pairs key with cert. It fails with ErrKeyMismatch when the key
// is not the certificate's, and with ErrUnsupported for key types the
// kernel cannot verify (only RSA and ECDSA on P-256, P-384 and P-521).
func NewSigner(cert *x509.Certificate, key crypto.Signer, chain ...*x509.Certificate) (*Signer, error) {
	if cert == nil || key == nil {
		return nil, fmt.Errorf("pkcs7: NewSigner needs a certificate and a key")
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, ErrKeyMismatch
	}
	if err := checkKernelKey(cert.PublicKey); err != nil {
		return nil, err
	}
	return &Signer{Certificate: cert, Key: key, Chain: chain}, nil
}

func checkKernelKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return fmt.Errorf("%w: ECDSA curve %s (the kernel verifies P-256, P-384 and P-521)", ErrUnsupported, k.Curve.Params().Name)
	}
	return fmt.Errorf("%w: %T keys (the kernel verifies RSA and ECDSA signers)", ErrUnsupported, pub)
}

// Sign signs content with cert and key (see NewSigner) and returns the DER
// ContentInfo.
func Sign(content []byte, cert *x509.Certificate, key crypto.Signer, opts SignOptions) ([]byte, error) {
	s, err := NewSigner(cert, key)
	if err != nil {
		return nil, err
	}
	return s.Sign(content, opts)
}

// Sign signs content and returns the DER ContentInfo: attached if
// opts.Attached, else detached.
func (s *Signer) Sign(content []byte, opts SignOptions) ([]byte, error) {
	h, err := opts.hash()
	if err != nil {
		return nil, err
	}
	hh := h.New()
	hh.Write(content)
	var attached []byte
	if opts.Attached {
		attached = content
		if attached == nil {
			attached = []byte{}
		}
	}
	return s.sign(hh.Sum(nil), attached, h, opts)
}

// SignReader signs everything r yields and returns a detached signature;
// it reads r once, streaming, so the content may be large.
func (s *Signer) SignReader(r io.Reader, opts SignOptions) ([]byte, error) {
	if opts.Attached {
		return nil, fmt.Errorf("%w: SignReader makes detached signatures only", ErrContent)
	}
	h, err := opts.hash()
	if err != nil {
		return nil, err
	}
	hh := h.New()
	if _, err := io.Copy(hh, r); err != nil {
		return nil, fmt.Errorf("pkcs7: read content: %w", err)
	}
	return s.sign(hh.Sum(nil), nil, h, opts)
}

// SignDigest makes a detached signature over content whose opts.Hash digest
// the caller computed.
func (s *Signer) SignDigest(digest []byte, opts SignOptions) ([]byte, error) {
	if opts.Attached {
		return nil, fmt.Errorf("%w: SignDigest makes detached signatures only", ErrContent)
	}
	h, err := opts.hash()
	if err != nil {
		return nil, err
	}
	if len(digest) != h.Size() {
		return nil, fmt.Errorf("pkcs7: digest is %d bytes, %v needs %d", len(digest), h, h.Size())
	}
	return s.sign(digest, nil, h, opts)
}

// sign builds the message. attached is nil for a detached message.
func (s *Signer) sign(digest, attached []byte, h crypto.Hash, opts SignOptions) ([]byte, error) {
	var sigAlg pkix.AlgorithmIdentifier
	switch s.Certificate.PublicKey.(type) {
	case *rsa.PublicKey:
		sigAlg = pkix.AlgorithmIdentifier{Algorithm: OIDRSAEncryption, Parameters: asn1.NullRawValue}
	case *ecdsa.PublicKey:
		sigAlg = pkix.AlgorithmIdentifier{Algorithm: ecdsaOIDByHash(h)}
	default:
		return nil, checkKernelKey(s.Certificate.PublicKey)
	}
	sig, err := s.Key.Sign(rand.Reader, digest, h)
	if err != nil {
		return nil, fmt.Errorf("pkcs7: sign: %w", err)
	}
	// Check the signature once: a key behind crypto.Signer (a token, an
	// agent) could use another padding or curve than its certificate says.
	if err := verifySignature(s.Certificate.PublicKey, sigAlg.Algorithm, h, digest, sig); err != nil {
		return nil, fmt.Errorf("pkcs7: the key produced a signature its certificate does not verify: %w", err)
	}

	digestAlg := pkix.AlgorithmIdentifier{Algorithm: oidByHash(h), Parameters: asn1.NullRawValue}
	if opts.DigestParamsAbsent {
		digestAlg.Parameters = asn1.RawValue{}
	}
	version := 1
	var sid asn1.RawValue
	switch opts.SignerID {
	case IssuerAndSerial:
		sidDER, err := asn1.Marshal(issuerAndSerial{
			Issuer:       asn1.RawValue{FullBytes: s.Certificate.RawIssuer},
			SerialNumber: s.Certificate.SerialNumber,
		})
		if err != nil {
			return nil, fmt.Errorf("pkcs7: encode signer identifier: %w", err)
		}
		sid = asn1.RawValue{FullBytes: sidDER}
	case SubjectKeyID:
		if len(s.Certificate.SubjectKeyId) == 0 {
			return nil, fmt.Errorf("pkcs7: certificate %q has no subjectKeyIdentifier", s.Certificate.Subject)
		}
		version = 3
		sid = asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, Bytes: s.Certificate.SubjectKeyId}
	default:
		return nil, fmt.Errorf("pkcs7: unknown SignerID %d", opts.SignerID)
	}
	si := signerInfoASN1{
		Version:            version,
		SID:                sid,
		DigestAlgorithm:    digestAlg,
		SignatureAlgorithm: sigAlg,
		Signature:          sig,
	}
	siDER, err := asn1.Marshal(si)
	if err != nil {
		return nil, fmt.Errorf("pkcs7: encode SignerInfo: %w", err)
	}

	eci := contentInfo{ContentType: OIDData}
	if attached != nil {
		octets, err := asn1.Marshal(attached)
		if err != nil {
			return nil, fmt.Errorf("pkcs7: encode content: %w", err)
		}
		eci.Content = explicit0(octets)
	}
	sd := signedDataASN1{
		Version:          version,
		DigestAlgorithms: []pkix.AlgorithmIdentifier{digestAlg},
		ContentInfo:      eci,
		SignerInfos:      asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true, Bytes: siDER},
	}
	if !opts.NoCerts {
		// CertificateSet is a SET OF: DER wants its elements sorted by
		// their encodings, and openssl writes them so.
		var ders [][]byte
		for _, c := range append(append([]*x509.Certificate{s.Certificate}, s.Chain...), opts.Chain...) {
			if c != nil {
				ders = append(ders, c.Raw)
			}
		}
		slices.SortFunc(ders, bytes.Compare)
		ders = slices.CompactFunc(ders, bytes.Equal)
		var certs []byte
		for _, d := range ders {
			certs = append(certs, d...)
		}
		sd.Certificates = asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: certs}
	}
	sdDER, err := asn1.Marshal(sd)
	if err != nil {
		return nil, fmt.Errorf("pkcs7: encode SignedData: %w", err)
	}
	out, err := asn1.Marshal(contentInfo{ContentType: OIDSignedData, Content: explicit0(sdDER)})
	if err != nil {
		return nil, fmt.Errorf("pkcs7: encode ContentInfo: %w", err)
	}
	return out, nil
}

// explicit0 wraps DER in a [0] EXPLICIT tag.
func explicit0(der []byte) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: der}
}
