package kmod

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"fmt"

	"github.com/intact-project/intact/pkcs7"
)

// SignOptions configures Sign. The zero value embeds the signer's
// certificate (and its chain) and hashes with SHA-256.
type SignOptions struct {
	// Hash is the digest: crypto.SHA256 (zero), SHA384 or SHA512.
	Hash crypto.Hash
	// NoCerts embeds no certificate, as scripts/sign-file does: the
	// kernel then trusts the signature only if the signer's own key is in
	// one of its keyrings. With an RSA key the output is byte-identical
	// to sign-file's.
	NoCerts bool
	// Chain are certificates embedded after the signer's (intermediate
	// CAs up to, not necessarily including, the CA the kernel trusts).
	Chain []*x509.Certificate
	// KeyID names the signer by subjectKeyIdentifier (sign-file -k)
	// instead of issuer and serial number. Linux then matches only keys in
	// its keyrings, never embedded certificates.
	KeyID bool
	// Append keeps an existing signature and appends a new one after it
	// (what sign-file does to a signed module; the kernel checks only the
	// last). The default replaces it.
	Append bool
}

// Sign signs an uncompressed module and returns the signed module. An
// existing signature is replaced unless opts.Append.
func Sign(module []byte, signer *pkcs7.Signer, opts SignOptions) ([]byte, error) {
	m, err := Parse(module)
	if err != nil {
		return nil, err
	}
	content := m.Content
	if opts.Append {
		content = module
	}
	if !bytes.HasPrefix(content, []byte(elfMagic)) {
		return nil, fmt.Errorf("%w: no ELF header", ErrNotModule)
	}
	po := pkcs7.SignOptions{Hash: opts.Hash, NoCerts: opts.NoCerts, Chain: opts.Chain, DigestParamsAbsent: true}
	if opts.KeyID {
		po.SignerID = pkcs7.SubjectKeyID
	}
	sig, err := signer.Sign(content, po)
	if err != nil {
		return nil, fmt.Errorf("kmod: sign: %w", err)
	}
	out := make([]byte, 0, len(content)+len(sig)+signatureInfoSize+len(Marker))
	out = append(out, content...)
	return appendSignature(out, &Signature{IDType: idPKCS7, PKCS7: sig}), nil
}

const elfMagic = "\x7fELF"

// SignFile signs a module file's bytes, compressed or not: a compressed
// module is decompressed, signed and compressed again the same way (the
// signature lives inside the compression, where the kernel and kmod look
// for it).
func SignFile(data []byte, signer *pkcs7.Signer, opts SignOptions) ([]byte, Compression, error) {
	raw, c, err := Decompress(data)
	if err != nil {
		return nil, c, err
	}
	signed, err := Sign(raw, signer, opts)
	if err != nil {
		return nil, c, err
	}
	out, err := Compress(signed, c)
	return out, c, err
}

// Strip returns the module without its (last) signature.
func Strip(module []byte) ([]byte, error) {
	m, err := Parse(module)
	if err != nil {
		return nil, err
	}
	if m.Signature == nil {
		return nil, ErrNotSigned
	}
	return m.Content, nil
}
