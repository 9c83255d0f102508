// Package pkcs7 owns the PKCS#7 / CMS SignedData format (RFC 2315, RFC 5652)
// in the profile the Linux kernel verifies: dm-verity root-hash signatures,
// fs-verity builtin signatures and kernel module signatures (detached, no
// signed attributes) and IPE policies (attached). It signs, parses and
// verifies such messages and loads the keys and certificates for them.
//
// What Linux 6.12 accepts (crypto/asymmetric_keys/pkcs7_parser.c,
// pkcs7_verify.c, public_key.c) and therefore what Sign writes:
//
//   - ContentInfo of type signedData; SignedData version 1 with SignerInfos
//     version 1 identified by issuerAndSerialNumber, or version 3 with
//     SignerInfos version 3 identified by subjectKeyIdentifier (the kernel
//     refuses mixing the two).
//   - encapContentInfo of type id-data, content present (attached) or
//     absent (detached).
//   - digestAlgorithm sha256, sha384 or sha512 (the kernel also knows sha1,
//     sha224, sm3, streebog and sha3; this package refuses those).
//   - digestEncryptionAlgorithm rsaEncryption for RSA keys (PKCS#1 v1.5).
//     The kernel rejects sha256WithRSAEncryption and friends with
//     "Unsupported pkey algo". For ECDSA keys ecdsa-with-SHA256/384/512
//     (the kernel accepts every ecdsa-with-* and uses digestAlgorithm for
//     the hash); the signature is the X9.62 DER Ecdsa-Sig-Value.
//   - No signed attributes. Module signatures must have none; other uses
//     accept them when contentType and messageDigest are present, but
//     S/MIME capabilities (which `openssl cms -sign` adds unless
//     -nosmimecap) make the kernel reject the message.
//   - Certificates: the signer's and optional chain certificates, or none
//     (fs-verity and module signatures conventionally carry none; the
//     kernel then needs the signer's key itself in its keyring).
//
// The DER matches `openssl smime -sign -noattr -binary -outform der`: digest
// AlgorithmIdentifiers carry NULL parameters, rsaEncryption carries NULL,
// ecdsa-with-* carries none. With RSA keys (deterministic signatures) the
// output is byte-identical to openssl's and to `fsverity sign`'s.
//
// Parse accepts BER (indefinite lengths, as sign-file writes them, and
// chunked content octets) by normalizing to DER, with limits on size,
// nesting, certificates and signers. Verify checks the signature and builds
// chains to an x509.CertPool with the message's certificates as
// intermediates, and refuses what the kernel would refuse.
package pkcs7

import "errors"

// Sentinel errors. Errors returned by this package wrap one of these (and
// add context), so callers test them with errors.Is.
var (
	// ErrMalformed: the input is not a well-formed SignedData message.
	ErrMalformed = errors.New("pkcs7: malformed message")
	// ErrTooLarge: the input exceeds a size or count limit.
	ErrTooLarge = errors.New("pkcs7: message too large")
	// ErrUnsupported: a well-formed message uses an algorithm, version or
	// content type this package (and usually the kernel) does not handle.
	ErrUnsupported = errors.New("pkcs7: unsupported")
	// ErrKernelIncompatible: the message is valid CMS but Linux would
	// reject it (for example sha256WithRSAEncryption as the signature
	// algorithm, or an S/MIME capabilities attribute).
	ErrKernelIncompatible = errors.New("pkcs7: the Linux kernel rejects this form")
	// ErrSignedAttributes: signed attributes are present but not allowed.
	ErrSignedAttributes = errors.New("pkcs7: signed attributes present")
	// ErrNoSigners: the message has no SignerInfo.
	ErrNoSigners = errors.New("pkcs7: no signers")
	// ErrSignerNotFound: no certificate matches a signer's identifier.
	ErrSignerNotFound = errors.New("pkcs7: signer certificate not found")
	// ErrBadSignature: a signature or signed-attribute check failed.
	ErrBadSignature = errors.New("pkcs7: signature verification failed")
	// ErrUntrusted: the signer certificate does not chain to a root.
	ErrUntrusted = errors.New("pkcs7: signer not trusted")
	// ErrContent: attached and detached content are both or neither given.
	ErrContent = errors.New("pkcs7: content mismatch")
	// ErrKeyMismatch: a private key does not belong to a certificate.
	ErrKeyMismatch = errors.New("key does not match certificate")
	// ErrNotPrivateKey: a key file holds no usable private key.
	ErrNotPrivateKey = errors.New("not a private key")
	// ErrNotCertificate: a certificate file holds no certificate.
	ErrNotCertificate = errors.New("not a certificate")
)

// Limits on untrusted input. Parse refuses larger inputs with ErrTooLarge.
const (
	// MaxSize bounds an encoded message (and a key or certificate file).
	MaxSize = 16 << 20
	// MaxCertificates bounds the certificates carried in one message.
	MaxCertificates = 64
	// MaxSigners bounds the SignerInfos in one message.
	MaxSigners = 16
	// MaxAttributes bounds the signed attributes of one SignerInfo.
	MaxAttributes = 64
	// maxDepth bounds BER nesting.
	maxDepth = 32
)
