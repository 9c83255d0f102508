package ipe

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"syscall"

	"github.com/intact-project/intact/pkcs7"
)

// Sign checks that text is a policy the kernel accepts and signs it as IPE
// expects: PKCS#7 SignedData of type id-data with the text attached,
// SHA-256, rsaEncryption (or ECDSA) without signed attributes, the signer's
// certificate (and chain, if the signer has one) embedded.
func Sign(text []byte, signer *pkcs7.Signer) ([]byte, error) {
	if signer == nil {
		return nil, errors.New("ipe: sign: no signer")
	}
	res := Lint(text, LintOptions{})
	if res.Err != nil {
		return nil, fmt.Errorf("ipe: sign: the kernel would refuse this policy: %w", res.Err)
	}
	blob, err := signer.Sign(text, pkcs7.SignOptions{Attached: true, Chain: signer.Chain})
	if err != nil {
		return nil, fmt.Errorf("ipe: sign: %w", err)
	}
	if err := sizeError(len(blob), len(text)); err != nil {
		return nil, fmt.Errorf("ipe: sign: %w", err)
	}
	return blob, nil
}

// ExtractPolicy returns the policy text attached to a PKCS#7 blob, without
// verifying the signature.
func ExtractPolicy(blob []byte) ([]byte, error) {
	sd, err := pkcs7.Parse(blob)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotSigned, err)
	}
	if sd.Detached() {
		return nil, fmt.Errorf("%w: the PKCS#7 message is detached (no policy inside)", ErrNotSigned)
	}
	return sd.Content, nil
}

// IsPKCS7 reports whether b looks like a DER/BER PKCS#7 ContentInfo rather
// than policy text (a SEQUENCE tag where policy text has a letter or '#').
func IsPKCS7(b []byte) bool { return len(b) > 1 && b[0] == 0x30 }

// Verified is a signed policy whose signature chains to a trusted CA.
type Verified struct {
	Text   []byte
	Policy *Policy
	Signer *x509.Certificate
	Chain  []*x509.Certificate
}

// Verify checks a signed policy offline the way the kernel will: the
// message parses, carries id-data content, its signature verifies with the
// embedded certificate, that certificate chains to roots (standing in for
// the kernel's builtin, secondary and platform keyrings), and the policy
// inside is accepted by the parser. Signed attributes are allowed as the
// kernel allows them for IPE (contentType and messageDigest, no S/MIME
// capabilities).
func Verify(blob []byte, roots *x509.CertPool, intermediates []*x509.Certificate) (*Verified, error) {
	if err := sizeError(len(blob), 0); err != nil {
		return nil, err
	}
	if sd, err := pkcs7.Parse(blob); err == nil {
		for i := range sd.Signers {
			if sd.Signers[i].Version == 3 && !signerIsRoot(sd, &sd.Signers[i], roots) {
				return nil, &KernelError{Errno: syscall.ENOKEY, Stage: "pkcs7",
					Msg:  "the signer is identified by subjectKeyIdentifier and is not itself a trusted key (Linux 6.12 matches embedded certificates only by issuer and serial)",
					Hint: "sign with issuer and serial number (intact policy sign does)"}
			}
		}
	}
	v, err := pkcs7.Verify(blob, pkcs7.VerifyOptions{Roots: roots, Intermediates: intermediates, AllowSignedAttributes: true})
	if err != nil {
		return nil, envelopeError(err)
	}
	p, err := Parse(v.Content)
	if err != nil {
		return nil, fmt.Errorf("policy inside the signature: %w", err)
	}
	out := &Verified{Text: v.Content, Policy: p, Signer: v.Signer}
	if len(v.Chains) > 0 {
		out.Chain = v.Chains[0]
	}
	return out, nil
}

// envelopeError maps a pkcs7 error to the errno the kernel returns for the
// same defect (asn1_ber_decoder, pkcs7_parser.c, pkcs7_verify.c,
// pkcs7_trust.c).
func envelopeError(err error) error {
	ke := &KernelError{Stage: "pkcs7", Msg: err.Error()}
	switch {
	case errors.Is(err, pkcs7.ErrUntrusted), errors.Is(err, pkcs7.ErrSignerNotFound):
		ke.Errno = syscall.ENOKEY
		ke.Hint = "sign with a certificate that chains to a key in the kernel's keyrings (for the test VM: the CA enrolled in the firmware db)"
	case errors.Is(err, pkcs7.ErrBadSignature), errors.Is(err, pkcs7.ErrKernelIncompatible):
		ke.Errno = syscall.EKEYREJECTED
	case errors.Is(err, pkcs7.ErrContent):
		ke.Errno = syscall.EKEYREJECTED
		ke.Hint = "IPE needs the policy attached to the signature (intact policy sign does that)"
	case errors.Is(err, pkcs7.ErrUnsupported):
		ke.Errno = syscall.ENOPKG
	default:
		ke.Errno = syscall.EBADMSG
	}
	return ke
}

// LintSigned lints a signed policy blob: the envelope as far as it can be
// judged offline (the kernel's trust decision needs its keyrings; pass
// roots to model them, or nil to skip the trust check), then the policy
// inside with Lint.
func LintSigned(blob []byte, roots *x509.CertPool, opts LintOptions) *LintResult {
	opts.BlobSize = len(blob)
	if err := sizeError(len(blob), 0); err != nil {
		return &LintResult{Err: err}
	}
	sd, err := pkcs7.Parse(blob)
	if err != nil {
		ke := &KernelError{Errno: syscall.EBADMSG, Stage: "pkcs7", Msg: "not a PKCS#7 SignedData message: " + err.Error()}
		if errors.Is(err, pkcs7.ErrUnsupported) {
			ke.Errno = syscall.ENOPKG
		}
		if !IsPKCS7(blob) {
			ke.Hint = "this looks like a plain-text policy: the kernel accepts only signed policies"
		}
		return &LintResult{Err: ke}
	}
	if !sd.ContentType.Equal(pkcs7.OIDData) {
		return &LintResult{Err: &KernelError{Errno: syscall.EKEYREJECTED, Stage: "pkcs7",
			Msg: fmt.Sprintf("content type %v is not id-data (pkcs7_verify: \"Invalid unspecified sig\")", sd.ContentType)}}
	}
	for _, s := range sd.Signers {
		for _, a := range s.SignedAttributes {
			if a.Type.Equal(oidSMIMECapabilities) {
				return &LintResult{Err: &KernelError{Errno: syscall.EKEYREJECTED, Stage: "pkcs7",
					Msg:  "signed attribute S/MIME capabilities is only allowed in Authenticode (pkcs7_sig_note_authenticated_attr)",
					Hint: "sign without signed attributes (intact policy sign, or openssl smime -noattr)"}}
			}
		}
	}
	if sd.Detached() {
		return &LintResult{Err: &KernelError{Errno: syscall.EKEYREJECTED, Stage: "pkcs7",
			Msg:  "detached signature: the message carries no policy, and its signature does not cover empty content",
			Hint: "sign with the policy attached (openssl smime -nodetach, or intact policy sign)"}}
	}
	var skid []Finding
	for _, s := range sd.Signers {
		if s.Version != 3 {
			continue
		}
		// pkcs7_find_key matches embedded certificates by issuer and
		// serial only: a signer named by subjectKeyIdentifier must be a
		// key in the kernel's keyrings itself.
		msg := "the signer is identified by subjectKeyIdentifier: Linux 6.12 (pkcs7_find_key) matches embedded certificates only by issuer and serial, so the signer's own key must be in a kernel keyring"
		if roots != nil && !signerIsRoot(sd, &s, roots) {
			return &LintResult{Err: &KernelError{Errno: syscall.ENOKEY, Stage: "pkcs7", Msg: msg,
				Hint: "sign with the signer identified by issuer and serial number (intact policy sign does)"}}
		}
		skid = append(skid, Finding{Code: "signer-skid", Message: msg + "; a leaf that only chains to a trusted CA is refused with ENOKEY",
			Hint: "sign with issuer and serial number (intact policy sign does)"})
	}
	vopts := pkcs7.VerifyOptions{Roots: roots, AllowSignedAttributes: true}
	if roots == nil {
		// Check the signature against the embedded certificate only.
		pool := x509.NewCertPool()
		for _, c := range sd.Certificates {
			pool.AddCert(c)
		}
		vopts.Roots = pool
	}
	if _, err := sd.Verify(vopts); err != nil {
		ke := envelopeError(err)
		if roots == nil && (errors.Is(err, pkcs7.ErrUntrusted) || errors.Is(err, pkcs7.ErrSignerNotFound)) {
			ke = nil // trust is the kernel's keyrings' business
		}
		if ke != nil {
			return &LintResult{Err: ke}
		}
	}
	res := Lint(sd.Content, opts)
	res.Warnings = append(skid, res.Warnings...)
	if len(sd.Signers) > 0 && sd.Signers[0].SignedAttributes != nil {
		res.Warnings = append([]Finding{{Code: "signed-attributes",
			Message: "the signature has signed attributes: Linux 6.12 accepts them for IPE policies, intact's format has none",
			Hint:    "re-sign with intact policy sign"}}, res.Warnings...)
	}
	return res
}

// oidSMIMECapabilities is 1.2.840.113549.1.9.15.
var oidSMIMECapabilities = []int{1, 2, 840, 113549, 1, 9, 15}

// PolicyFromFile returns the policy text of a file that holds either text
// or a signed blob, and whether it was signed.
func PolicyFromFile(b []byte) ([]byte, bool, error) {
	if IsPKCS7(b) {
		t, err := ExtractPolicy(b)
		return t, true, err
	}
	return b, false, nil
}

// signerIsRoot reports whether the certificate of a subjectKeyIdentifier
// signer is itself one of roots (a key the kernel holds in a keyring).
func signerIsRoot(sd *pkcs7.SignedData, s *pkcs7.SignerInfo, roots *x509.CertPool) bool {
	for _, c := range sd.Certificates {
		if !bytes.Equal(c.SubjectKeyId, s.SubjectKeyID) {
			continue
		}
		chains, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if err != nil {
			return false
		}
		for _, ch := range chains {
			if len(ch) == 1 {
				return true
			}
		}
	}
	return false
}
