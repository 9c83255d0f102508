package pkcs7

import (
	"crypto"
	"encoding/asn1"
)

// Object identifiers this package reads or writes.
var (
	OIDData       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	OIDSignedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}

	OIDSHA1   = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	OIDSHA224 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 4}
	OIDSHA256 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	OIDSHA384 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	OIDSHA512 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}

	// OIDRSAEncryption is the only RSA signature algorithm identifier
	// Linux (6.12, crypto/asymmetric_keys/pkcs7_parser.c) accepts in a
	// SignerInfo.
	OIDRSAEncryption = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	// The combined hash+RSA identifiers, which Linux 6.12 rejects in a
	// SignerInfo ("Unsupported pkey algo"); they are recognized only to
	// report that precisely.
	OIDSHA256WithRSA = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	OIDSHA384WithRSA = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}
	OIDSHA512WithRSA = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}

	OIDECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	OIDECDSAWithSHA384 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	OIDECDSAWithSHA512 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}

	OIDAttributeContentType       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	OIDAttributeMessageDigest     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	OIDAttributeSigningTime       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 5}
	OIDAttributeSMIMECapabilities = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 15}
)

// hashByOID maps the digest algorithms this package signs and verifies with.
// SHA-1 and SHA-224 are recognized by the kernel but refused here.
func hashByOID(oid asn1.ObjectIdentifier) crypto.Hash {
	switch {
	case oid.Equal(OIDSHA256):
		return crypto.SHA256
	case oid.Equal(OIDSHA384):
		return crypto.SHA384
	case oid.Equal(OIDSHA512):
		return crypto.SHA512
	}
	return 0
}

func oidByHash(h crypto.Hash) asn1.ObjectIdentifier {
	switch h {
	case crypto.SHA256:
		return OIDSHA256
	case crypto.SHA384:
		return OIDSHA384
	case crypto.SHA512:
		return OIDSHA512
	}
	return nil
}

func ecdsaOIDByHash(h crypto.Hash) asn1.ObjectIdentifier {
	switch h {
	case crypto.SHA256:
		return OIDECDSAWithSHA256
	case crypto.SHA384:
		return OIDECDSAWithSHA384
	case crypto.SHA512:
		return OIDECDSAWithSHA512
	}
	return nil
}

func isECDSAOID(oid asn1.ObjectIdentifier) bool {
	return oid.Equal(OIDECDSAWithSHA256) || oid.Equal(OIDECDSAWithSHA384) || oid.Equal(OIDECDSAWithSHA512)
}

func isCombinedRSAOID(oid asn1.ObjectIdentifier) bool {
	return oid.Equal(OIDSHA256WithRSA) || oid.Equal(OIDSHA384WithRSA) || oid.Equal(OIDSHA512WithRSA)
}
