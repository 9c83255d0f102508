// Package efi owns the UEFI Secure Boot formats intact writes and checks:
// Authenticode signatures of PE/COFF images (what firmware verifies before
// it runs a UKI), EFI signature lists (the contents of PK, KEK and db),
// time-based authenticated variable updates (.auth files), and enrolling
// them through Linux's efivarfs.
//
// Authenticode: Digest hashes an image exactly as UEFI firmware (edk2's
// DxeImageVerificationLib) and sbsign do: the headers without CheckSum and
// the certificate table entry, the sections in file order, then the
// trailing data up to the certificate table. Sign appends a
// WIN_CERTIFICATE (revision 2.0, PKCS_SIGNED_DATA) holding a PKCS#7
// SignedData over an SpcIndirectDataContent with that digest (the content
// bytes come from github.com/foxboron/go-uefi, as sbsign writes them), with
// only contentType and messageDigest as signed attributes, so the same
// image and key give the same bytes (sbsign and go-uefi add a signing
// time); it updates the certificate table entry and the CheckSum as sbsign
// does. Verify checks every signature the way firmware does: the digest in
// the signature equals the image's, the messageDigest attribute equals the
// hash of the signed content, the RSA signature verifies, and the signer
// chains to a given certificate (validity times are not checked, as
// firmware does not check them).
//
// The byte layout is in docs/formats.md, section "UKI and Authenticode".
package efi

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/big"

	"github.com/foxboron/go-uefi/authenticode"

	"github.com/intact-project/intact/internal/peimage"
)

// Errors.
var (
	// ErrImage: the input is not a PE image this package can hash.
	ErrImage = errors.New("efi: unusable PE image")
	// ErrSigned: Sign was given an already-signed image without Append
	// or Replace.
	ErrSigned = errors.New("efi: image is already signed")
	// ErrUnsigned: Verify found no signature.
	ErrUnsigned = errors.New("efi: image is not signed")
	// ErrSignature: a signature is malformed, does not match the image or
	// does not chain to a trusted certificate.
	ErrSignature = errors.New("efi: signature does not verify")
	// ErrKey: the signing key cannot make Authenticode signatures.
	ErrKey = errors.New("efi: unusable signing key")
)

// MaxImageSize bounds the images Sign and Verify read into memory.
const MaxImageSize = 1 << 30

// maxCertTable bounds a certificate table (a few signatures).
const maxCertTable = 1 << 20

// WIN_CERTIFICATE constants.
const (
	winCertRevision2     = 0x0200
	winCertTypePKCSSign  = 0x0002
	winCertificateHeader = 8
)

// OIDs.
var (
	oidSignedData            = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidSpcIndirectData       = authenticode.OIDSpcIndirectDataContent
	oidSHA256                = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384                = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512                = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
	oidRSAEncryption         = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidSHA256WithRSA         = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidAttributeContentType  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	oidAttributeMessageDigst = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
)

// hashRange is a byte range of the image that Authenticode hashes.
type hashRange struct{ off, n int64 }

// layout parses the image and returns the ranges Authenticode hashes and
// the header.
func layout(r io.ReaderAt, size int64) (*peimage.Image, []hashRange, error) {
	im, err := peimage.Parse(r, size)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrImage, err)
	}
	if im.NumberOfRvaAndSizes < 5 {
		return nil, nil, fmt.Errorf("%w: no certificate table entry (%d data directories)", ErrImage, im.NumberOfRvaAndSizes)
	}
	end := size
	if im.SecuritySize != 0 {
		if int64(im.SecurityOffset)+int64(im.SecuritySize) != size {
			return nil, nil, fmt.Errorf("%w: the certificate table [%d,+%d) is not at the end of the file (%d bytes)", ErrImage, im.SecurityOffset, im.SecuritySize, size)
		}
		end = int64(im.SecurityOffset)
	}
	ck, dd := int64(im.CheckSumOffset()), int64(im.SecurityDirOffset())
	rs := []hashRange{{0, ck}, {ck + 4, dd - ck - 4}, {dd + 8, int64(im.SizeOfHeaders) - dd - 8}}
	sum := int64(im.SizeOfHeaders)
	for _, s := range im.ByFileOffset() {
		if int64(s.PointerToRawData)+int64(s.SizeOfRawData) > end {
			return nil, nil, fmt.Errorf("%w: section %s reaches into the certificate table", ErrImage, s.Name)
		}
		rs = append(rs, hashRange{int64(s.PointerToRawData), int64(s.SizeOfRawData)})
		sum += int64(s.SizeOfRawData)
	}
	if end > sum {
		rs = append(rs, hashRange{sum, end - sum})
	}
	return im, rs, nil
}

// Digest returns the Authenticode digest of the PE image in r (size
// bytes) with hash function h (crypto.SHA256 for UEFI).
func Digest(r io.ReaderAt, size int64, h crypto.Hash) ([]byte, error) {
	_, rs, err := layout(r, size)
	if err != nil {
		return nil, err
	}
	return digestRanges(r, rs, h)
}

func digestRanges(r io.ReaderAt, rs []hashRange, h crypto.Hash) ([]byte, error) {
	if !h.Available() {
		return nil, fmt.Errorf("%w: hash %v not available", ErrImage, h)
	}
	d := h.New()
	for _, x := range rs {
		if x.n < 0 {
			return nil, fmt.Errorf("%w: overlapping header fields", ErrImage)
		}
		if _, err := io.Copy(d, io.NewSectionReader(r, x.off, x.n)); err != nil {
			return nil, fmt.Errorf("efi: read image: %w", err)
		}
	}
	return d.Sum(nil), nil
}

// Signer is an Authenticode signing identity (a db key, or a leaf under a
// db CA).
type Signer struct {
	Certificate *x509.Certificate
	Key         crypto.Signer
	// Chain holds intermediate certificates to embed after the signer's.
	Chain []*x509.Certificate
}

// SignOptions configures Sign.
type SignOptions struct {
	// Append adds the signature to an already-signed image's table
	// (firmware accepts the image if any signature verifies).
	Append bool
	// Replace drops existing signatures first.
	Replace bool
}

// Sign signs the PE image img and returns the signed image. An image that
// is already signed is refused (ErrSigned) unless opts says otherwise.
func Sign(img []byte, s Signer, opts SignOptions) ([]byte, error) {
	if len(img) > MaxImageSize {
		return nil, fmt.Errorf("%w: %d bytes (limit %d)", ErrImage, len(img), MaxImageSize)
	}
	if _, ok := s.Key.(*rsa.PrivateKey); !ok {
		return nil, fmt.Errorf("%w: %T; UEFI firmware verifies RSA signatures only", ErrKey, s.Key)
	}
	if !publicKeysEqual(s.Certificate.PublicKey, s.Key.Public()) {
		return nil, fmt.Errorf("%w: the key does not belong to certificate %q", ErrKey, s.Certificate.Subject)
	}
	im, _, err := layout(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		return nil, err
	}
	var table []byte
	if im.SecuritySize != 0 {
		switch {
		case opts.Replace:
		case opts.Append:
			table = append(table, img[im.SecurityOffset:]...)
		default:
			return nil, fmt.Errorf("%w (use Append to add a signature or Replace to re-sign)", ErrSigned)
		}
		img = img[:im.SecurityOffset]
	} else {
		img = append([]byte(nil), img...)
	}
	// The certificate table starts 8-aligned; sbsign pads the image with
	// zeros to get there, and the padding is hashed as trailing data.
	for len(img)%8 != 0 {
		img = append(img, 0)
	}
	le := binary.LittleEndian
	dd := im.SecurityDirOffset()
	le.PutUint64(img[dd:], 0)
	_, rs, err := layout(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		return nil, err
	}
	digest, err := digestRanges(bytes.NewReader(img), rs, crypto.SHA256)
	if err != nil {
		return nil, err
	}
	p7, err := signDigest(digest, s)
	if err != nil {
		return nil, err
	}
	entry := make([]byte, winCertificateHeader, winCertificateHeader+len(p7)+8)
	entry = append(entry, p7...)
	// dwLength covers header and signature; the entry is then padded to
	// 8 bytes (as sbsign writes it; firmware steps by the aligned length).
	le.PutUint32(entry[0:], uint32(len(entry)))
	for len(entry)%8 != 0 {
		entry = append(entry, 0)
	}
	le.PutUint16(entry[4:], winCertRevision2)
	le.PutUint16(entry[6:], winCertTypePKCSSign)
	table = append(table, entry...)
	if len(table) > maxCertTable {
		return nil, fmt.Errorf("%w: certificate table of %d bytes", ErrImage, len(table))
	}
	off := uint32(len(img))
	img = append(img, table...)
	le.PutUint32(img[dd:], off)
	le.PutUint32(img[dd+4:], uint32(len(table)))
	le.PutUint32(img[im.CheckSumOffset():], peimage.Checksum(img, im.CheckSumOffset()))
	return img, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// ASN.1 structures of PKCS#7 SignedData (RFC 2315) as Authenticode uses it.
type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"explicit,optional,tag:0"`
}

type issuerAndSerial struct {
	Issuer asn1.RawValue
	Serial *big.Int
}

type signerInfo struct {
	Version                   int
	IssuerAndSerial           issuerAndSerial
	DigestAlgorithm           pkix.AlgorithmIdentifier
	AuthenticatedAttributes   asn1.RawValue `asn1:"optional,tag:0"`
	DigestEncryptionAlgorithm pkix.AlgorithmIdentifier
	EncryptedDigest           []byte
	UnauthenticatedAttributes asn1.RawValue `asn1:"optional,tag:1"`
}

type signedData struct {
	Version          int
	DigestAlgorithms []pkix.AlgorithmIdentifier `asn1:"set"`
	ContentInfo      contentInfo
	Certificates     asn1.RawValue `asn1:"optional,tag:0"`
	CRLs             asn1.RawValue `asn1:"optional,tag:1"`
	SignerInfos      []signerInfo  `asn1:"set"`
}

type attribute struct {
	Type   asn1.ObjectIdentifier
	Values asn1.RawValue `asn1:"set"`
}

var asn1Null = asn1.RawValue{Tag: asn1.TagNull}

// signDigest makes the PKCS#7 SignedData for an Authenticode digest.
func signDigest(digest []byte, s Signer) ([]byte, error) {
	// SpcIndirectDataContent, as sbsign writes it (go-uefi builds the
	// same bytes): its inner bytes are what messageDigest covers.
	spc, err := authenticode.CreateSpcIndirectDataContent(digest, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("efi: SpcIndirectDataContent: %w", err)
	}
	spcSeq, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: spc})
	if err != nil {
		return nil, err
	}
	md := crypto.SHA256.New()
	md.Write(spc)
	ctAttr, err := marshalAttr(oidAttributeContentType, oidSpcIndirectData)
	if err != nil {
		return nil, err
	}
	mdAttr, err := marshalAttr(oidAttributeMessageDigst, md.Sum(nil))
	if err != nil {
		return nil, err
	}
	// DER SET OF: contentType (…9.3) sorts before messageDigest (…9.4).
	attrs := append(ctAttr, mdAttr...)
	setForSig, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true, Bytes: attrs})
	if err != nil {
		return nil, err
	}
	h := crypto.SHA256.New()
	h.Write(setForSig)
	sig, err := s.Key.Sign(rand.Reader, h.Sum(nil), crypto.SHA256) // RSA PKCS#1 v1.5: deterministic
	if err != nil {
		return nil, fmt.Errorf("efi: sign: %w", err)
	}
	var certs []byte
	certs = append(certs, s.Certificate.Raw...)
	for _, c := range s.Chain {
		certs = append(certs, c.Raw...)
	}
	sha256Alg := pkix.AlgorithmIdentifier{Algorithm: oidSHA256, Parameters: asn1Null}
	sd := signedData{
		Version:          1,
		DigestAlgorithms: []pkix.AlgorithmIdentifier{sha256Alg},
		ContentInfo:      contentInfo{ContentType: oidSpcIndirectData, Content: asn1.RawValue{FullBytes: explicit0(spcSeq)}},
		Certificates:     asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: certs},
		SignerInfos: []signerInfo{{
			Version:                   1,
			IssuerAndSerial:           issuerAndSerial{Issuer: asn1.RawValue{FullBytes: s.Certificate.RawIssuer}, Serial: s.Certificate.SerialNumber},
			DigestAlgorithm:           sha256Alg,
			AuthenticatedAttributes:   asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: attrs},
			DigestEncryptionAlgorithm: pkix.AlgorithmIdentifier{Algorithm: oidRSAEncryption, Parameters: asn1Null},
			EncryptedDigest:           sig,
		}},
	}
	sdDER, err := asn1.Marshal(sd)
	if err != nil {
		return nil, fmt.Errorf("efi: marshal SignedData: %w", err)
	}
	return asn1.Marshal(contentInfo{ContentType: oidSignedData, Content: asn1.RawValue{FullBytes: explicit0(sdDER)}})
}

func explicit0(inner []byte) []byte {
	b, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: inner})
	return b
}

func marshalAttr(oid asn1.ObjectIdentifier, v any) ([]byte, error) {
	val, err := asn1.Marshal(v)
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(attribute{Type: oid, Values: asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true, Bytes: val}})
}

// Signature is one verified (or rejected) signature of an image.
type Signature struct {
	Signer  *x509.Certificate   // the signing certificate (nil if not found)
	Chain   []*x509.Certificate // signer first, up to the trusted certificate
	Digest  []byte              // the digest the signature carries
	Hash    crypto.Hash
	Trusted bool  // verified and chained to a trusted certificate
	Err     error // why not, when not Trusted
}

// Result is the outcome of Verify.
type Result struct {
	// Digest is the image's Authenticode SHA-256 digest.
	Digest     []byte
	Signatures []Signature
}

// Trusted reports whether any signature verified (what firmware requires).
func (r *Result) Trusted() bool {
	for _, s := range r.Signatures {
		if s.Trusted {
			return true
		}
	}
	return false
}

// Verify checks the signatures of the PE image in r (size bytes) against
// the trusted certificates (db entries: CAs or signer certificates). It
// returns ErrUnsigned for an image without signatures, and a Result whose
// Trusted method says whether any signature verified. With an empty
// trusted pool it still parses the signatures and checks them against the
// image (Trusted stays false).
func Verify(r io.ReaderAt, size int64, trusted []*x509.Certificate) (*Result, error) {
	im, rs, err := layout(r, size)
	if err != nil {
		return nil, err
	}
	res := &Result{}
	if res.Digest, err = digestRanges(r, rs, crypto.SHA256); err != nil {
		return nil, err
	}
	if im.SecuritySize == 0 {
		return res, ErrUnsigned
	}
	if im.SecuritySize > maxCertTable {
		return nil, fmt.Errorf("%w: certificate table of %d bytes (limit %d)", ErrImage, im.SecuritySize, maxCertTable)
	}
	table := make([]byte, im.SecuritySize)
	if _, err := r.ReadAt(table, int64(im.SecurityOffset)); err != nil {
		return nil, fmt.Errorf("efi: read certificate table: %w", err)
	}
	for len(table) > 0 {
		if len(table) < winCertificateHeader {
			return nil, fmt.Errorf("%w: %d stray bytes after the last certificate", ErrImage, len(table))
		}
		le := binary.LittleEndian
		n := int(le.Uint32(table))
		if n < winCertificateHeader || n > len(table) {
			return nil, fmt.Errorf("%w: WIN_CERTIFICATE length %d (table has %d bytes left)", ErrImage, n, len(table))
		}
		rev, typ := le.Uint16(table[4:]), le.Uint16(table[6:])
		sig := Signature{}
		if rev != winCertRevision2 || typ != winCertTypePKCSSign {
			sig.Err = fmt.Errorf("%w: WIN_CERTIFICATE revision %#x type %#x (want 0x200, PKCS_SIGNED_DATA)", ErrSignature, rev, typ)
		} else {
			sig = checkSignature(table[winCertificateHeader:n], r, rs, trusted)
		}
		res.Signatures = append(res.Signatures, sig)
		n = (n + 7) &^ 7
		if n > len(table) {
			n = len(table)
		}
		table = table[n:]
	}
	return res, nil
}

func hashFor(oid asn1.ObjectIdentifier) crypto.Hash {
	switch {
	case oid.Equal(oidSHA256):
		return crypto.SHA256
	case oid.Equal(oidSHA384):
		return crypto.SHA384
	case oid.Equal(oidSHA512):
		return crypto.SHA512
	}
	return 0
}

// spcIndirectDataContent is the part of the content Verify reads.
type spcIndirectDataContent struct {
	Data          asn1.RawValue
	MessageDigest struct {
		Algorithm pkix.AlgorithmIdentifier
		Digest    []byte
	}
}

// checkSignature verifies one PKCS#7 Authenticode signature. The PKCS#7
// bytes may be followed by padding.
func checkSignature(der []byte, r io.ReaderAt, rs []hashRange, trusted []*x509.Certificate) (sig Signature) {
	fail := func(format string, args ...any) Signature {
		sig.Err = fmt.Errorf("%w: "+format, append([]any{ErrSignature}, args...)...)
		return sig
	}
	var ci contentInfo
	if _, err := asn1.Unmarshal(der, &ci); err != nil {
		return fail("PKCS#7: %v", err)
	}
	if !ci.ContentType.Equal(oidSignedData) {
		return fail("content type %v is not signedData", ci.ContentType)
	}
	var sd signedData
	if rest, err := asn1.Unmarshal(ci.Content.Bytes, &sd); err != nil || len(rest) != 0 {
		return fail("SignedData: %v", err)
	}
	if !sd.ContentInfo.ContentType.Equal(oidSpcIndirectData) {
		return fail("content type %v is not SpcIndirectDataContent", sd.ContentInfo.ContentType)
	}
	if len(sd.SignerInfos) != 1 {
		return fail("%d signer infos (Authenticode has exactly one)", len(sd.SignerInfos))
	}
	// The content: [0] EXPLICIT SEQUENCE; messageDigest covers the
	// SEQUENCE's contents (without tag and length).
	var spcSeq asn1.RawValue
	if rest, err := asn1.Unmarshal(sd.ContentInfo.Content.Bytes, &spcSeq); err != nil || len(rest) != 0 || spcSeq.Tag != asn1.TagSequence {
		return fail("SpcIndirectDataContent is not a SEQUENCE")
	}
	var spc spcIndirectDataContent
	if rest, err := asn1.Unmarshal(spcSeq.FullBytes, &spc); err != nil || len(rest) != 0 {
		return fail("SpcIndirectDataContent: %v", err)
	}
	sig.Hash = hashFor(spc.MessageDigest.Algorithm.Algorithm)
	sig.Digest = spc.MessageDigest.Digest
	if sig.Hash == 0 {
		return fail("digest algorithm %v", spc.MessageDigest.Algorithm.Algorithm)
	}
	imgDigest, err := digestRanges(r, rs, sig.Hash)
	if err != nil {
		sig.Err = err
		return sig
	}
	if !bytes.Equal(imgDigest, sig.Digest) {
		return fail("the image's %v digest %x differs from the signed digest %x (the image changed after signing)", sig.Hash, imgDigest, sig.Digest)
	}
	var certs []*x509.Certificate
	rest := sd.Certificates.Bytes
	for len(rest) > 0 {
		var raw asn1.RawValue
		var err error
		if rest, err = asn1.Unmarshal(rest, &raw); err != nil {
			return fail("certificates: %v", err)
		}
		c, err := x509.ParseCertificate(raw.FullBytes)
		if err != nil {
			continue // attribute certificates and the like: not ours to judge
		}
		certs = append(certs, c)
	}
	si := sd.SignerInfos[0]
	for _, c := range append(certs, trusted...) {
		if bytes.Equal(c.RawIssuer, si.IssuerAndSerial.Issuer.FullBytes) && c.SerialNumber.Cmp(si.IssuerAndSerial.Serial) == 0 {
			sig.Signer = c
			break
		}
	}
	if sig.Signer == nil {
		return fail("the signer's certificate is not in the signature")
	}
	h := hashFor(si.DigestAlgorithm.Algorithm)
	if h == 0 {
		return fail("signer digest algorithm %v", si.DigestAlgorithm.Algorithm)
	}
	content := spcSeq.Bytes
	signed := content
	if len(si.AuthenticatedAttributes.Bytes) > 0 {
		md := h.New()
		md.Write(content)
		var found []byte
		n := 0
		for a := si.AuthenticatedAttributes.Bytes; len(a) > 0; {
			var at attribute
			var err error
			if a, err = asn1.Unmarshal(a, &at); err != nil {
				return fail("signed attributes: %v", err)
			}
			if at.Type.Equal(oidAttributeMessageDigst) {
				n++
				if _, err := asn1.Unmarshal(at.Values.Bytes, &found); err != nil {
					return fail("messageDigest: %v", err)
				}
			}
		}
		if n != 1 || !bytes.Equal(found, md.Sum(nil)) {
			return fail("messageDigest attribute does not match the signed content")
		}
		set, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true, Bytes: si.AuthenticatedAttributes.Bytes})
		if err != nil {
			return fail("signed attributes: %v", err)
		}
		signed = set
	}
	if err := checkRSA(sig.Signer, si, h, signed); err != nil {
		return fail("%v", err)
	}
	pool, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range trusted {
		pool.AddCert(c)
		if c.Equal(sig.Signer) {
			sig.Trusted, sig.Chain = true, []*x509.Certificate{c}
			return sig
		}
	}
	for _, c := range certs {
		inter.AddCert(c)
	}
	if len(trusted) == 0 {
		return fail("no trusted certificate given")
	}
	// Firmware does not check validity times; verify at a time inside the
	// signer's validity so expired test or vendor certificates behave as
	// they do at boot.
	chains, err := sig.Signer.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter,
		CurrentTime: sig.Signer.NotBefore, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return fail("signer %q does not chain to a trusted certificate: %v", sig.Signer.Subject, err)
	}
	sig.Chain, sig.Trusted = chains[0], true
	return sig
}

func checkRSA(cert *x509.Certificate, si signerInfo, h crypto.Hash, signed []byte) error {
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return fmt.Errorf("signer key %T is not RSA", cert.PublicKey)
	}
	alg := si.DigestEncryptionAlgorithm.Algorithm
	if !alg.Equal(oidRSAEncryption) && !alg.Equal(oidSHA256WithRSA) {
		return fmt.Errorf("signature algorithm %v", alg)
	}
	var d hash.Hash = h.New()
	d.Write(signed)
	if err := rsa.VerifyPKCS1v15(pub, h, d.Sum(nil), si.EncryptedDigest); err != nil {
		return fmt.Errorf("RSA signature: %v", err)
	}
	return nil
}
