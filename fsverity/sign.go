package fsverity

import (
	"fmt"

	"github.com/intact-project/intact/pkcs7"
)

// SignOptions configures Sign. The zero value is what `fsverity sign`
// writes.
type SignOptions struct {
	// EmbedCertificate includes the signer's certificate (fsverity-utils
	// omits it; the kernel finds the key in the .fs-verity keyring).
	EmbedCertificate bool
}

// Sign makes the builtin signature of d: a detached PKCS#7 over
// d.SignedPayload() with d's hash algorithm, no signed attributes and, by
// default, no certificates. With an RSA key the bytes equal `fsverity sign`'s.
func Sign(d Digest, s *pkcs7.Signer, opts SignOptions) ([]byte, error) {
	if !d.Algorithm.Valid() || len(d.Sum) != d.Algorithm.Size() {
		return nil, fmt.Errorf("%w: digest %s", ErrParams, d)
	}
	sig, err := s.Sign(d.SignedPayload(), pkcs7.SignOptions{
		Hash:    d.Algorithm.CryptoHash(),
		NoCerts: !opts.EmbedCertificate,
	})
	if err != nil {
		return nil, fmt.Errorf("fsverity: sign %s: %w", d, err)
	}
	if len(sig) > MaxSignatureSize {
		return nil, fmt.Errorf("%w: signature of %d bytes exceeds the kernel's %d", ErrParams, len(sig), MaxSignatureSize)
	}
	return sig, nil
}

// VerifySignature checks that sig is a valid builtin signature of d under
// opts as the kernel checks it against the .fs-verity keyring: opts.Roots
// stands for the keyring (for a signature without certificates it must
// hold the signer's own certificate, which opts.Certificates also supplies
// to find it). opts.Content is set to d's payload and signed attributes are
// refused.
func VerifySignature(d Digest, sig []byte, opts pkcs7.VerifyOptions) (*pkcs7.Verified, error) {
	if len(sig) > MaxSignatureSize {
		return nil, fmt.Errorf("%w: signature of %d bytes exceeds the kernel's %d", ErrMalformed, len(sig), MaxSignatureSize)
	}
	opts.Content = d.SignedPayload()
	opts.AllowSignedAttributes = false
	v, err := pkcs7.Verify(sig, opts)
	if err != nil {
		return nil, fmt.Errorf("fsverity: signature of %s: %w", d, err)
	}
	return v, nil
}
