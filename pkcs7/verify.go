package pkcs7

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"math/big"
	"time"
)

// VerifyOptions configures Verify. Roots is required; every other zero
// value is the kernel's behaviour where it has one.
type VerifyOptions struct {
	// Roots are the trust anchors (the kernel's keyring). A signer
	// certificate that is itself in Roots is trusted directly, as a key
	// in a kernel keyring is.
	Roots *x509.CertPool
	// Intermediates are CA certificates to build chains with, in addition
	// to the certificates the message carries. The kernel does not have
	// them: a chain that needs one fails with ErrKernelIncompatible (see
	// below), so they only help to explain which certificate is missing.
	Intermediates []*x509.Certificate
	// Certificates are candidate signer certificates for messages that
	// carry none (fs-verity and module signatures), searched after the
	// message's own. As for the kernel, such a signer must itself be in
	// Roots.
	Certificates []*x509.Certificate
	// Content is the signed content of a detached message; it must be nil
	// for an attached one. A detached signature over empty content needs
	// a non-nil empty slice.
	Content []byte
	// AllowSignedAttributes accepts SignerInfos with signed attributes,
	// which are then checked as the kernel checks them: contentType and
	// messageDigest present once each and matching, signingTime (if any)
	// within the signer's validity, no S/MIME capabilities. Module
	// signatures must leave this false.
	AllowSignedAttributes bool
	// KeyUsages the signer certificate's chain must allow; nil means any
	// (the kernel does not look at extKeyUsage).
	KeyUsages []x509.ExtKeyUsage
	// CurrentTime is the time certificates must be valid at; zero means
	// now. (The kernel itself does not check certificate validity times.)
	CurrentTime time.Time
}

// Verified is the result of a successful verification.
type Verified struct {
	// Message is the parsed message.
	Message *SignedData
	// Signer is the certificate of the first SignerInfo.
	Signer *x509.Certificate
	// Chains are the first signer's verified chains, signer first.
	Chains [][]*x509.Certificate
	// Content is the content the signature covers (attached or supplied).
	Content []byte
	// Hash is the first signer's digest algorithm.
	Hash crypto.Hash
}

// Verify parses data (see Parse) and verifies it (see SignedData.Verify).
func Verify(data []byte, opts VerifyOptions) (*Verified, error) {
	sd, err := Parse(data)
	if err != nil {
		return nil, err
	}
	return sd.Verify(opts)
}

// Verify checks that the message has content of type id-data, at least one
// signer, and that every signer's signature is valid over the content and
// its certificate chains to opts.Roots the way Linux 6.12 builds chains:
// the signer found among the message's certificates by issuer and serial
// number, intermediates taken only from the message, or else the signer's
// own certificate in Roots (ErrKernelIncompatible otherwise). It is
// stricter than the kernel in two ways: every signer must verify (the
// kernel is content with one trusted signer), and certificates must be
// valid at opts.CurrentTime.
func (sd *SignedData) Verify(opts VerifyOptions) (*Verified, error) {
	if opts.Roots == nil {
		return nil, fmt.Errorf("%w: no trust anchors given", ErrUntrusted)
	}
	if !sd.ContentType.Equal(OIDData) {
		return nil, fmt.Errorf("%w: content type %v (the kernel verifies id-data)", ErrUnsupported, sd.ContentType)
	}
	content := sd.Content
	switch {
	case sd.Content != nil && opts.Content != nil:
		return nil, fmt.Errorf("%w: content given for a message that carries its own", ErrContent)
	case sd.Content == nil && opts.Content == nil:
		return nil, fmt.Errorf("%w: detached signature and no content given", ErrContent)
	case sd.Content == nil:
		content = opts.Content
	}
	if len(sd.Signers) == 0 {
		return nil, ErrNoSigners
	}
	v := &Verified{Message: sd, Content: content}
	for i := range sd.Signers {
		cert, chains, err := sd.verifySigner(&sd.Signers[i], content, &opts)
		if err != nil {
			if len(sd.Signers) > 1 {
				return nil, fmt.Errorf("signer %d: %w", i, err)
			}
			return nil, err
		}
		if i == 0 {
			v.Signer, v.Chains, v.Hash = cert, chains, sd.Signers[i].Hash
		}
	}
	return v, nil
}

func (sd *SignedData) verifySigner(s *SignerInfo, content []byte, opts *VerifyOptions) (*x509.Certificate, [][]*x509.Certificate, error) {
	if s.Hash == 0 {
		return nil, nil, fmt.Errorf("%w: digest algorithm %v", ErrUnsupported, s.DigestAlgorithm)
	}
	switch {
	case s.SignatureAlgorithm.Equal(OIDRSAEncryption), isECDSAOID(s.SignatureAlgorithm):
	case isCombinedRSAOID(s.SignatureAlgorithm):
		return nil, nil, fmt.Errorf("%w: signature algorithm %v; the kernel accepts only rsaEncryption for RSA signers", ErrKernelIncompatible, s.SignatureAlgorithm)
	default:
		return nil, nil, fmt.Errorf("%w: signature algorithm %v", ErrUnsupported, s.SignatureAlgorithm)
	}
	cert := findSigner(s, sd.Certificates, opts.Certificates)
	if cert == nil {
		return nil, nil, fmt.Errorf("%w: %s", ErrSignerNotFound, s.describe())
	}
	h := s.Hash.New()
	h.Write(content)
	digest := h.Sum(nil)
	if s.SignedAttributes != nil {
		if !opts.AllowSignedAttributes {
			return nil, nil, ErrSignedAttributes
		}
		if err := checkSignedAttributes(s, sd.ContentType, digest, cert); err != nil {
			return nil, nil, err
		}
		// The signature covers the attributes' DER with the [0] IMPLICIT
		// tag replaced by SET OF (RFC 5652 section 5.4).
		h = s.Hash.New()
		h.Write([]byte{0x31})
		h.Write(s.rawSignedAttrs[1:])
		digest = h.Sum(nil)
	}
	if err := verifySignature(cert.PublicKey, s.SignatureAlgorithm, s.Hash, digest, s.Signature); err != nil {
		return nil, nil, err
	}
	inter := x509.NewCertPool()
	for _, c := range sd.Certificates {
		inter.AddCert(c)
	}
	for _, c := range opts.Intermediates {
		inter.AddCert(c)
	}
	usages := opts.KeyUsages
	if usages == nil {
		usages = []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
	}
	chains, err := cert.Verify(x509.VerifyOptions{
		Roots:         opts.Roots,
		Intermediates: inter,
		CurrentTime:   opts.CurrentTime,
		KeyUsages:     usages,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrUntrusted, err)
	}
	chains, err = kernelChains(s, cert, sd.Certificates, chains)
	if err != nil {
		return nil, nil, err
	}
	return cert, chains, nil
}

// kernelChains keeps the chains along which Linux would trust the signer
// (pkcs7_find_key, pkcs7_verify_sig_chain, pkcs7_validate_trust_one). The
// kernel finds the signer among the message's certificates by issuer and
// serial number only, and climbs from it only through the message's
// certificates, looking for one issued by (or equal to) a keyring key; as
// a last resort it looks the signer's own key up in the keyring. So:
//   - a signer named by subjectKeyIdentifier, or whose certificate the
//     message does not carry, is trusted only if its own key is a trust
//     anchor (a chain of length one);
//   - otherwise every certificate between the signer and the anchor must be
//     embedded (VerifyOptions.Intermediates alone do not reach the kernel).
func kernelChains(s *SignerInfo, signer *x509.Certificate, embedded []*x509.Certificate, chains [][]*x509.Certificate) ([][]*x509.Certificate, error) {
	isEmbedded := func(c *x509.Certificate) bool {
		for _, e := range embedded {
			if e.Equal(c) {
				return true
			}
		}
		return false
	}
	direct := s.Version == 3 || !isEmbedded(signer)
	var keep [][]*x509.Certificate
	for _, ch := range chains {
		if len(ch) == 1 {
			keep = append(keep, ch)
			continue
		}
		if direct {
			continue
		}
		ok := true
		for _, c := range ch[1 : len(ch)-1] {
			if !isEmbedded(c) {
				ok = false
				break
			}
		}
		if ok {
			keep = append(keep, ch)
		}
	}
	// Linux climbs from a certificate to its issuer only through the
	// certificate's authorityKeyIdentifier (x509_akid_note_kid,
	// pkcs7_verify_sig_chain, pkcs7_validate_trust_one): every link of a
	// chain needs one that names the next certificate.
	linked := keep[:0:0]
	var linkErr string
	for _, ch := range keep {
		ok := true
		for i := 0; i+1 < len(ch); i++ {
			if why := kernelLink(ch[i], ch[i+1]); why != "" {
				ok = false
				if linkErr == "" {
					linkErr = why
				}
				break
			}
		}
		if ok {
			linked = append(linked, ch)
		}
	}
	if len(linked) > 0 {
		return linked, nil
	}
	if linkErr != "" {
		return nil, fmt.Errorf("%w: %s", ErrKernelIncompatible, linkErr)
	}
	switch {
	case s.Version == 3:
		return nil, fmt.Errorf("%w: the signer is named by subjectKeyIdentifier, which Linux matches only against keys in its keyrings, not against the message's certificates; sign with issuer and serial number or trust the signer's key itself", ErrKernelIncompatible)
	case direct:
		return nil, fmt.Errorf("%w: the message does not carry the signer's certificate, so Linux trusts it only if the signer's own key is in its keyring; embed the certificate", ErrKernelIncompatible)
	}
	return nil, fmt.Errorf("%w: the chain to the trust anchor needs certificates the message does not carry; Linux chains only through embedded certificates, so embed the intermediates", ErrKernelIncompatible)
}

func findSigner(s *SignerInfo, lists ...[]*x509.Certificate) *x509.Certificate {
	for _, l := range lists {
		for _, c := range l {
			if s.matches(c) {
				return c
			}
		}
	}
	return nil
}

func (s *SignerInfo) describe() string {
	if s.Version == 3 {
		return fmt.Sprintf("subjectKeyIdentifier %x", s.SubjectKeyID)
	}
	return fmt.Sprintf("serial %x", s.SerialNumber)
}

// verifySignature checks sig over digest with pub, for the signature
// algorithm sigAlg (rsaEncryption: PKCS#1 v1.5; ecdsa-with-*: X9.62 DER).
func verifySignature(pub crypto.PublicKey, sigAlg asn1.ObjectIdentifier, h crypto.Hash, digest, sig []byte) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if !sigAlg.Equal(OIDRSAEncryption) {
			return fmt.Errorf("%w: RSA certificate but signature algorithm %v", ErrBadSignature, sigAlg)
		}
		if err := rsa.VerifyPKCS1v15(k, h, digest, sig); err != nil {
			return fmt.Errorf("%w: %v", ErrBadSignature, err)
		}
		return nil
	case *ecdsa.PublicKey:
		if !isECDSAOID(sigAlg) {
			return fmt.Errorf("%w: ECDSA certificate but signature algorithm %v", ErrBadSignature, sigAlg)
		}
		if !ecdsa.VerifyASN1(k, digest, sig) {
			return fmt.Errorf("%w: ECDSA signature does not verify", ErrBadSignature)
		}
		return nil
	}
	return fmt.Errorf("%w: %T public key", ErrUnsupported, pub)
}

// checkSignedAttributes applies RFC 5652 section 5.4 and the kernel's rules
// (pkcs7_sig_note_authenticated_attr, pkcs7_digest, pkcs7_verify_one).
func checkSignedAttributes(s *SignerInfo, contentType asn1.ObjectIdentifier, digest []byte, cert *x509.Certificate) error {
	for _, oid := range []asn1.ObjectIdentifier{OIDAttributeContentType, OIDAttributeMessageDigest, OIDAttributeSigningTime, OIDAttributeSMIMECapabilities} {
		vals, n := s.attribute(oid)
		if n > 1 || len(vals) > 1 {
			return fmt.Errorf("%w: attribute %v repeated or multi-valued", ErrKernelIncompatible, oid)
		}
	}
	if _, n := s.attribute(OIDAttributeSMIMECapabilities); n != 0 {
		return fmt.Errorf("%w: S/MIME capabilities attribute (sign with -nosmimecap)", ErrKernelIncompatible)
	}
	ct, n := s.attribute(OIDAttributeContentType)
	if n == 0 || len(ct) == 0 {
		return fmt.Errorf("%w: signed attributes without contentType", ErrBadSignature)
	}
	var ctOID asn1.ObjectIdentifier
	if rest, err := asn1.Unmarshal(ct[0].FullBytes, &ctOID); err != nil || len(rest) != 0 {
		return fmt.Errorf("%w: contentType attribute is not an OID", ErrMalformed)
	}
	if !ctOID.Equal(contentType) {
		return fmt.Errorf("%w: contentType attribute %v, content is %v", ErrBadSignature, ctOID, contentType)
	}
	md, n := s.attribute(OIDAttributeMessageDigest)
	if n == 0 || len(md) == 0 {
		return fmt.Errorf("%w: signed attributes without messageDigest", ErrBadSignature)
	}
	if md[0].Class != asn1.ClassUniversal || md[0].Tag != asn1.TagOctetString || md[0].IsCompound {
		return fmt.Errorf("%w: messageDigest attribute is not an OCTET STRING", ErrMalformed)
	}
	if !bytes.Equal(md[0].Bytes, digest) {
		return fmt.Errorf("%w: messageDigest attribute does not match the content", ErrBadSignature)
	}
	if st, n := s.attribute(OIDAttributeSigningTime); n != 0 && len(st) == 1 {
		var t time.Time
		if rest, err := asn1.Unmarshal(st[0].FullBytes, &t); err != nil || len(rest) != 0 {
			return fmt.Errorf("%w: signingTime attribute is not a time", ErrMalformed)
		}
		if t.Before(cert.NotBefore) || t.After(cert.NotAfter) {
			return fmt.Errorf("%w: signed at %s, outside the certificate's validity", ErrKernelIncompatible, t.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

var oidAuthorityKeyID = asn1.ObjectIdentifier{2, 5, 29, 35}

// kernelLink says why Linux cannot find parent as the issuer of child ("" if
// it can): child must carry an authorityKeyIdentifier whose keyIdentifier is
// parent's subjectKeyIdentifier, or whose issuer and serial number are
// parent's.
func kernelLink(child, parent *x509.Certificate) string {
	var raw []byte
	for _, e := range child.Extensions {
		if e.Id.Equal(oidAuthorityKeyID) {
			raw = e.Value
		}
	}
	if raw == nil {
		return fmt.Sprintf("certificate %q (version %d) has no authorityKeyIdentifier: Linux finds a certificate's issuer only through that extension, "+
			"so the kernel refuses this signer with ENOKEY unless the certificate's own key is in its keyring "+
			"(openssl x509 -req adds it only with an -extfile holding authorityKeyIdentifier=keyid)", child.Subject.String(), child.Version)
	}
	var akid struct {
		KeyID  []byte        `asn1:"optional,tag:0"`
		Issuer asn1.RawValue `asn1:"optional,tag:1"`
		Serial *big.Int      `asn1:"optional,tag:2"`
	}
	if rest, err := asn1.Unmarshal(raw, &akid); err != nil || len(rest) != 0 {
		return fmt.Sprintf("certificate %q has a malformed authorityKeyIdentifier", child.Subject.String())
	}
	switch {
	case len(akid.KeyID) == 0 && akid.Serial == nil:
		return fmt.Sprintf("certificate %q has an authorityKeyIdentifier that names neither a key nor an issuer: the kernel cannot find its issuer (ENOKEY)", child.Subject.String())
	case len(akid.KeyID) > 0 && !bytes.Equal(akid.KeyID, parent.SubjectKeyId):
		return fmt.Sprintf("the authorityKeyIdentifier %x of certificate %q is not the subjectKeyIdentifier %x of its issuer %q: the kernel cannot find the issuer (ENOKEY)",
			akid.KeyID, child.Subject.String(), parent.SubjectKeyId, parent.Subject.String())
	case akid.Serial != nil && akid.Serial.Cmp(parent.SerialNumber) != 0:
		return fmt.Sprintf("the authorityKeyIdentifier of certificate %q names issuer serial %x, its issuer %q has %x: the kernel cannot find the issuer (ENOKEY)",
			child.Subject.String(), akid.Serial, parent.Subject.String(), parent.SerialNumber)
	}
	return ""
}

// CheckKernelSigner checks, before anything is signed, that Linux can climb
// from the signer certificate cert to a trust anchor: a certificate that is
// not self-signed needs an authorityKeyIdentifier naming its issuer, and so
// does every certificate of chain (intermediates, issuer first) that links
// on. Without one the kernel answers ENOKEY however the signature is made,
// unless cert's own key is in its keyring. The error wraps
// ErrKernelIncompatible.
func CheckKernelSigner(cert *x509.Certificate, chain []*x509.Certificate) error {
	for c := cert; c != nil; {
		if bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil {
			return nil // self-signed: a trust anchor itself
		}
		var issuer *x509.Certificate
		for _, p := range chain {
			if p != c && bytes.Equal(c.RawIssuer, p.RawSubject) && c.CheckSignatureFrom(p) == nil {
				issuer = p
				break
			}
		}
		if issuer == nil {
			if hasExtension(c, oidAuthorityKeyID) {
				return nil // its issuer is outside the chain: the keyring's
			}
			return fmt.Errorf("%w: %s", ErrKernelIncompatible, kernelLink(c, &x509.Certificate{}))
		}
		if why := kernelLink(c, issuer); why != "" {
			return fmt.Errorf("%w: %s", ErrKernelIncompatible, why)
		}
		c = issuer
	}
	return nil
}

func hasExtension(c *x509.Certificate, oid asn1.ObjectIdentifier) bool {
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return true
		}
	}
	return false
}

// CheckKernelSigners applies CheckKernelSigner to the certificate of each
// signer the message carries (with the message's certificates as the
// chain). A signer whose certificate is not embedded is not checked here.
func (sd *SignedData) CheckKernelSigners() error {
	for i := range sd.Signers {
		if c := findSigner(&sd.Signers[i], sd.Certificates); c != nil {
			if err := CheckKernelSigner(c, sd.Certificates); err != nil {
				return err
			}
		}
	}
	return nil
}
