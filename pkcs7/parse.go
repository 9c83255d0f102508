package pkcs7

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
)

// SignedData is a parsed PKCS#7 SignedData message.
type SignedData struct {
	// Version is the SignedData version (1 or 3).
	Version int
	// DigestAlgorithms lists the digestAlgorithms set.
	DigestAlgorithms []asn1.ObjectIdentifier
	// ContentType is the encapsulated content type (id-data for every
	// kernel use).
	ContentType asn1.ObjectIdentifier
	// Content is the attached content, nil when the message is detached.
	// An attached empty content is a non-nil empty slice.
	Content []byte
	// Certificates are the certificates the message carries, in order.
	Certificates []*x509.Certificate
	// Signers are the SignerInfos, in order.
	Signers []SignerInfo
}

// Detached reports whether the message carries no content.
func (sd *SignedData) Detached() bool { return sd.Content == nil }

// SignerInfo is one signer of a SignedData message.
type SignerInfo struct {
	// Version is 1 (issuerAndSerialNumber) or 3 (subjectKeyIdentifier).
	Version int
	// Issuer (DER Name) and SerialNumber identify the signer's
	// certificate when Version is 1.
	Issuer       []byte
	SerialNumber *big.Int
	// SubjectKeyID identifies the signer's certificate when Version is 3.
	SubjectKeyID []byte
	// DigestAlgorithm and Hash: Hash is zero when the algorithm is not
	// one this package verifies (sha256, sha384, sha512).
	DigestAlgorithm asn1.ObjectIdentifier
	Hash            crypto.Hash
	// SignatureAlgorithm is the digestEncryptionAlgorithm.
	SignatureAlgorithm asn1.ObjectIdentifier
	Signature          []byte
	// SignedAttributes are the authenticated attributes, nil when absent.
	SignedAttributes []Attribute
	// HasUnsignedAttributes reports unauthenticated attributes (ignored,
	// as the kernel ignores them).
	HasUnsignedAttributes bool

	// rawSignedAttrs is the DER of the [0] IMPLICIT attributes; the
	// signature covers it with the tag changed to SET OF.
	rawSignedAttrs []byte
}

// Attribute is one signed attribute: a type and its DER-encoded values.
type Attribute struct {
	Type   asn1.ObjectIdentifier
	Values []asn1.RawValue
}

// ASN.1 shapes (RFC 5652 section 5, RFC 2315 section 9).
// contentInfo's Content is the [0] EXPLICIT wrapper itself (encoding/asn1
// does not unwrap explicit tags for RawValue fields); see explicitInner.
type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"optional,tag:0"`
}

// explicitInner returns the single element inside a [0] EXPLICIT wrapper,
// or a zero RawValue when the wrapper is absent.
func explicitInner(w asn1.RawValue) (asn1.RawValue, error) {
	var inner asn1.RawValue
	if len(w.FullBytes) == 0 {
		return inner, nil
	}
	if !w.IsCompound {
		return inner, fmt.Errorf("%w: [0] EXPLICIT wrapper is primitive", ErrMalformed)
	}
	rest, err := asn1.Unmarshal(w.Bytes, &inner)
	if err != nil {
		return inner, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(rest) != 0 {
		return inner, fmt.Errorf("%w: trailing data in [0] EXPLICIT", ErrMalformed)
	}
	return inner, nil
}

type signedDataASN1 struct {
	Version          int
	DigestAlgorithms []pkix.AlgorithmIdentifier `asn1:"set"`
	ContentInfo      contentInfo
	Certificates     asn1.RawValue `asn1:"optional,tag:0"`
	CRLs             asn1.RawValue `asn1:"optional,tag:1"`
	SignerInfos      asn1.RawValue `asn1:"set"`
}

type signerInfoASN1 struct {
	Version            int
	SID                asn1.RawValue
	DigestAlgorithm    pkix.AlgorithmIdentifier
	SignedAttrs        asn1.RawValue `asn1:"optional,tag:0"`
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Signature          []byte
	UnsignedAttrs      asn1.RawValue `asn1:"optional,tag:1"`
}

type issuerAndSerial struct {
	Issuer       asn1.RawValue
	SerialNumber *big.Int
}

type attributeASN1 struct {
	Type   asn1.ObjectIdentifier
	Values asn1.RawValue `asn1:"set"`
}

// Parse decodes a DER or BER PKCS#7 ContentInfo holding SignedData. It
// checks structure only; Verify checks signatures and trust.
func Parse(data []byte) (*SignedData, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes (limit %d)", ErrTooLarge, len(data), MaxSize)
	}
	der, err := toDER(data)
	if err != nil {
		return nil, err
	}
	var ci contentInfo
	if rest, err := asn1.Unmarshal(der, &ci); err != nil {
		return nil, fmt.Errorf("%w: ContentInfo: %v", ErrMalformed, err)
	} else if len(rest) != 0 {
		return nil, fmt.Errorf("%w: trailing data after ContentInfo", ErrMalformed)
	}
	if !ci.ContentType.Equal(OIDSignedData) {
		return nil, fmt.Errorf("%w: content type %v is not signedData", ErrUnsupported, ci.ContentType)
	}
	inner, err := explicitInner(ci.Content)
	if err != nil {
		return nil, fmt.Errorf("ContentInfo: %w", err)
	}
	if len(inner.FullBytes) == 0 {
		return nil, fmt.Errorf("%w: signedData without content", ErrMalformed)
	}
	var raw signedDataASN1
	if rest, err := asn1.Unmarshal(inner.FullBytes, &raw); err != nil {
		return nil, fmt.Errorf("%w: SignedData: %v", ErrMalformed, err)
	} else if len(rest) != 0 {
		return nil, fmt.Errorf("%w: trailing data after SignedData", ErrMalformed)
	}
	sd := &SignedData{Version: raw.Version, ContentType: raw.ContentInfo.ContentType}
	if raw.Version != 1 && raw.Version != 3 {
		return nil, fmt.Errorf("%w: SignedData version %d", ErrUnsupported, raw.Version)
	}
	for _, a := range raw.DigestAlgorithms {
		sd.DigestAlgorithms = append(sd.DigestAlgorithms, a.Algorithm)
	}
	c, err := explicitInner(raw.ContentInfo.Content)
	if err != nil {
		return nil, fmt.Errorf("encapsulated content: %w", err)
	}
	if len(c.FullBytes) != 0 {
		if c.Class != asn1.ClassUniversal || c.Tag != asn1.TagOctetString || c.IsCompound {
			return nil, fmt.Errorf("%w: encapsulated content is not an OCTET STRING", ErrMalformed)
		}
		sd.Content = append([]byte{}, c.Bytes...)
	}
	if len(raw.Certificates.FullBytes) != 0 {
		if !raw.Certificates.IsCompound {
			return nil, fmt.Errorf("%w: certificates field is primitive", ErrMalformed)
		}
		if sd.Certificates, err = parseCertificateSet(raw.Certificates.Bytes); err != nil {
			return nil, err
		}
	}
	if raw.SignerInfos.Class != asn1.ClassUniversal || raw.SignerInfos.Tag != asn1.TagSet || !raw.SignerInfos.IsCompound {
		return nil, fmt.Errorf("%w: signerInfos is not a SET", ErrMalformed)
	}
	rest := raw.SignerInfos.Bytes
	for len(rest) > 0 {
		if len(sd.Signers) == MaxSigners {
			return nil, fmt.Errorf("%w: more than %d signers", ErrTooLarge, MaxSigners)
		}
		var si signerInfoASN1
		rest, err = asn1.Unmarshal(rest, &si)
		if err != nil {
			return nil, fmt.Errorf("%w: SignerInfo %d: %v", ErrMalformed, len(sd.Signers), err)
		}
		s, err := parseSignerInfo(&si, sd.Version)
		if err != nil {
			return nil, fmt.Errorf("SignerInfo %d: %w", len(sd.Signers), err)
		}
		sd.Signers = append(sd.Signers, s)
	}
	return sd, nil
}

func parseCertificateSet(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for len(b) > 0 {
		if len(certs) == MaxCertificates {
			return nil, fmt.Errorf("%w: more than %d certificates", ErrTooLarge, MaxCertificates)
		}
		var rv asn1.RawValue
		var err error
		b, err = asn1.Unmarshal(b, &rv)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %d: %v", ErrMalformed, len(certs), err)
		}
		// The kernel accepts only plain X.509 certificates here, not the
		// other CertificateChoices.
		if rv.Class != asn1.ClassUniversal || rv.Tag != asn1.TagSequence {
			return nil, fmt.Errorf("%w: certificate %d is not an X.509 certificate", ErrUnsupported, len(certs))
		}
		c, err := x509.ParseCertificate(rv.FullBytes)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %d: %v", ErrMalformed, len(certs), err)
		}
		certs = append(certs, c)
	}
	return certs, nil
}

func parseSignerInfo(si *signerInfoASN1, sdVersion int) (SignerInfo, error) {
	s := SignerInfo{
		Version:               si.Version,
		DigestAlgorithm:       si.DigestAlgorithm.Algorithm,
		Hash:                  hashByOID(si.DigestAlgorithm.Algorithm),
		SignatureAlgorithm:    si.SignatureAlgorithm.Algorithm,
		Signature:             si.Signature,
		HasUnsignedAttributes: len(si.UnsignedAttrs.FullBytes) != 0,
	}
	switch {
	case si.Version == 1 && sdVersion == 1:
		if si.SID.Class != asn1.ClassUniversal || si.SID.Tag != asn1.TagSequence {
			return s, fmt.Errorf("%w: version 1 signer not identified by issuer and serial number", ErrMalformed)
		}
		var ias issuerAndSerial
		if rest, err := asn1.Unmarshal(si.SID.FullBytes, &ias); err != nil || len(rest) != 0 {
			return s, fmt.Errorf("%w: issuerAndSerialNumber", ErrMalformed)
		}
		if ias.Issuer.Class != asn1.ClassUniversal || ias.Issuer.Tag != asn1.TagSequence {
			return s, fmt.Errorf("%w: issuer is not a Name", ErrMalformed)
		}
		s.Issuer = ias.Issuer.FullBytes
		s.SerialNumber = ias.SerialNumber
	case si.Version == 3 && sdVersion == 3:
		if si.SID.Class != asn1.ClassContextSpecific || si.SID.Tag != 0 || si.SID.IsCompound {
			return s, fmt.Errorf("%w: version 3 signer not identified by subjectKeyIdentifier", ErrMalformed)
		}
		s.SubjectKeyID = si.SID.Bytes
	case si.Version == 1 || si.Version == 3:
		// The kernel returns EBADMSG for this mismatch.
		return s, fmt.Errorf("%w: SignerInfo version %d in SignedData version %d", ErrMalformed, si.Version, sdVersion)
	default:
		return s, fmt.Errorf("%w: SignerInfo version %d", ErrUnsupported, si.Version)
	}
	if len(si.SignedAttrs.FullBytes) != 0 {
		if !si.SignedAttrs.IsCompound {
			return s, fmt.Errorf("%w: signed attributes field is primitive", ErrMalformed)
		}
		s.rawSignedAttrs = si.SignedAttrs.FullBytes
		rest := si.SignedAttrs.Bytes
		s.SignedAttributes = []Attribute{}
		for len(rest) > 0 {
			if len(s.SignedAttributes) == MaxAttributes {
				return s, fmt.Errorf("%w: more than %d signed attributes", ErrTooLarge, MaxAttributes)
			}
			var a attributeASN1
			var err error
			rest, err = asn1.Unmarshal(rest, &a)
			if err != nil {
				return s, fmt.Errorf("%w: signed attribute: %v", ErrMalformed, err)
			}
			attr := Attribute{Type: a.Type}
			vals := a.Values.Bytes
			for len(vals) > 0 {
				if len(attr.Values) == MaxAttributes {
					return s, fmt.Errorf("%w: more than %d attribute values", ErrTooLarge, MaxAttributes)
				}
				var v asn1.RawValue
				vals, err = asn1.Unmarshal(vals, &v)
				if err != nil {
					return s, fmt.Errorf("%w: attribute value: %v", ErrMalformed, err)
				}
				attr.Values = append(attr.Values, v)
			}
			s.SignedAttributes = append(s.SignedAttributes, attr)
		}
	}
	return s, nil
}

// matches reports whether cert is the one s names.
func (s *SignerInfo) matches(cert *x509.Certificate) bool {
	if s.Version == 3 {
		return len(cert.SubjectKeyId) != 0 && bytes.Equal(cert.SubjectKeyId, s.SubjectKeyID)
	}
	return bytes.Equal(cert.RawIssuer, s.Issuer) && s.SerialNumber != nil && cert.SerialNumber.Cmp(s.SerialNumber) == 0
}

// attribute returns the values of the attribute of type oid and how many
// attributes of that type there are.
func (s *SignerInfo) attribute(oid asn1.ObjectIdentifier) ([]asn1.RawValue, int) {
	var vals []asn1.RawValue
	n := 0
	for _, a := range s.SignedAttributes {
		if a.Type.Equal(oid) {
			if n == 0 {
				vals = a.Values
			}
			n++
		}
	}
	return vals, n
}
