package main

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/intact-project/intact/internal/atomicfile"
	"github.com/intact-project/intact/pkcs7"
)

// `intact verity sign` and `intact verity verify-signature`: PKCS#7
// signatures of dm-verity root hashes (package pkcs7), in the verity group.
func init() {
	registerSub("verity", newVeritySignCmd)
	registerSub("verity", newVerityVerifySignatureCmd)
}

// rootHashSizes are the digest sizes a dm-verity root hash can have (sha1,
// sha224, sha256, sha384, sha512 and the other kernel hashes of these sizes).
var rootHashSizes = map[int]bool{20: true, 28: true, 32: true, 48: true, 64: true}

// checkRootHash validates a root hash argument: hex of a digest size.
func checkRootHash(s string) error {
	b, err := hex.DecodeString(s)
	if err != nil {
		return usagef("root hash %q is not hex", truncateArg(s))
	}
	if !rootHashSizes[len(b)] {
		return usagef("root hash has %d hex characters; a digest has 40, 56, 64, 96 or 128", len(s))
	}
	return nil
}

func parseMD(name string) (crypto.Hash, error) {
	switch name {
	case "sha256":
		return crypto.SHA256, nil
	case "sha384":
		return crypto.SHA384, nil
	case "sha512":
		return crypto.SHA512, nil
	}
	return 0, usagef("--md %q: use sha256, sha384 or sha512", name)
}

// loadPKCS7Signer loads --key and --cert (a bundle: leaf first) and the
// optional --chain file.
func loadPKCS7Signer(keyPath, certPath, chainPath string) (*pkcs7.Signer, error) {
	if keyPath == "" || certPath == "" {
		return nil, usagef("--key and --cert are required")
	}
	s, err := pkcs7.LoadSigner(keyPath, certPath)
	if err != nil {
		return nil, err
	}
	if chainPath != "" {
		chain, err := pkcs7.LoadCertificates(chainPath)
		if err != nil {
			return nil, err
		}
		s.Chain = append(s.Chain, chain...)
	}
	return s, nil
}

func newVeritySignCmd(e *env) *cobra.Command {
	var keyPath, certPath, chainPath, out, md string
	var noCert, skid bool
	c := &cobra.Command{
		Use:   "sign --key KEY --cert CERT [-o OUT] ROOT_HASH",
		Short: "Sign a dm-verity root hash (PKCS#7, for root_hash_sig_key_desc)",
		Long: `Sign a dm-verity root hash for the kernel's root-hash signature check
(veritysetup open --root-hash-signature, the root_hash_sig_key_desc table
argument, IPE's dmverity_signature=TRUE).

The signature is a detached PKCS#7 SignedData in DER over exactly the
lowercase hex root hash, without a newline, with no signed attributes and the
signer's certificate embedded: what 'openssl smime -sign -noattr -binary
-outform der' makes. The kernel compares the table's root hash string
byte for byte, so a signature covers only the lowercase form that
veritysetup and intact write into tables; an upper-case ROOT_HASH is signed
in lowercase (with a note on stderr).

KEY is a PEM or DER private key (PKCS#8, PKCS#1 or SEC 1; RSA or ECDSA P-256,
P-384, P-521). CERT is the signer's certificate, optionally followed by its
intermediates; --chain adds more. The output goes to OUT, written
atomically, or to standard output with -o - (not to a terminal).`,
		Example: `  intact verity sign --key layer.key --cert layer.pem -o roothash.p7s 4392d6...e3f0
  intact verity verify-signature --ca ca.pem 4392d6...e3f0 roothash.p7s`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rootHash := args[0]
			if err := checkRootHash(rootHash); err != nil {
				return err
			}
			if lower := strings.ToLower(rootHash); lower != rootHash {
				e.infof("note: signing the lowercase root hash %s (the kernel compares the table's string exactly)\n", lower)
				rootHash = lower
			}
			h, err := parseMD(md)
			if err != nil {
				return err
			}
			if out == "-" && e.json {
				return usagef("--json needs -o FILE: the signature itself would go to standard output")
			}
			if out == "-" && isTerminal(e.stdout) {
				return usagef("refusing to write a binary signature to a terminal; use -o FILE or redirect")
			}
			if err := checkOutputs(out); err != nil {
				return err
			}
			s, err := loadPKCS7Signer(keyPath, certPath, chainPath)
			if err != nil {
				return err
			}
			if err := pkcs7.CheckKernelSigner(s.Certificate, s.Chain); err != nil {
				fmt.Fprintf(e.stderr, "intact: warning: %v\n", err)
			}
			opts := pkcs7.SignOptions{Hash: h, NoCerts: noCert}
			if skid {
				opts.SignerID = pkcs7.SubjectKeyID
			}
			der, err := s.Sign([]byte(rootHash), opts)
			if err != nil {
				return fmt.Errorf("sign root hash: %w", err)
			}
			if out == "-" {
				_, err := e.stdout.Write(der)
				return err
			}
			if err := atomicfile.WriteFile(out, der, 0o644); err != nil {
				return err
			}
			sum := sha256.Sum256(der)
			if e.json {
				return e.printJSON(struct {
					Path     string `json:"path"`
					Digest   string `json:"digest"`
					Signer   string `json:"signer"`
					RootHash string `json:"root_hash"`
				}{out, "sha256:" + hex.EncodeToString(sum[:]), s.Certificate.Subject.String(), rootHash})
			}
			e.printf("signed %s by %s -> %s (%d bytes)\n", rootHash, s.Certificate.Subject, out, len(der))
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&keyPath, "key", "", "signing key file, PEM or DER (required)")
	f.StringVar(&certPath, "cert", "", "signer certificate file, PEM or DER, optionally followed by intermediates (required)")
	f.StringVar(&chainPath, "chain", "", "file of further certificates to embed (intermediate CAs)")
	f.BoolVar(&noCert, "no-cert", false, "embed no certificates (the kernel must then hold the signer's key itself)")
	f.BoolVar(&skid, "skid", false, "identify the signer by subjectKeyIdentifier instead of issuer and serial number (Linux then needs the signer's own key in a keyring, not just its CA)")
	f.StringVar(&md, "md", "sha256", "digest algorithm: sha256, sha384 or sha512")
	f.StringVarP(&out, "output", "o", "-", "output file; - for standard output")
	return c
}

func newVerityVerifySignatureCmd(e *env) *cobra.Command {
	var caPath, chainPath, certPath string
	c := &cobra.Command{
		Use:   "verify-signature --ca CA ROOT_HASH SIGNATURE",
		Short: "Check a root-hash signature as the kernel would, against a CA",
		Long: `Check that SIGNATURE (DER PKCS#7, as 'intact verity sign' and
'openssl smime -sign' make it) is a valid signature over exactly the string
ROOT_HASH, by a certificate that chains to a certificate in CA (the trust
anchors: the keys of the kernel's keyring). Intermediate certificates come
from the signature and from --chain; a signature without certificates needs
the signer's certificate in --cert.

Exit status 0 only if the signature verifies. The checks follow Linux 6.12
(crypto/asymmetric_keys): rsaEncryption or ecdsa-with-SHA* signature
algorithms, sha256/384/512 digests, signed attributes only with contentType
and messageDigest and without S/MIME capabilities. Unlike the kernel, the
certificates must also be valid at the current time.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			rootHash, sigPath := args[0], args[1]
			if err := checkRootHash(rootHash); err != nil {
				return err
			}
			if caPath == "" {
				return usagef("--ca is required")
			}
			roots, err := pkcs7.LoadCertPool(caPath)
			if err != nil {
				return err
			}
			opts := pkcs7.VerifyOptions{Roots: roots, Content: []byte(rootHash), AllowSignedAttributes: true}
			if chainPath != "" {
				if opts.Intermediates, err = pkcs7.LoadCertificates(chainPath); err != nil {
					return err
				}
			}
			if certPath != "" {
				if opts.Certificates, err = pkcs7.LoadCertificates(certPath); err != nil {
					return err
				}
			}
			der, err := pkcs7.ReadFile(sigPath)
			if err != nil {
				return err
			}
			v, err := pkcs7.Verify(der, opts)
			if err != nil {
				if errors.Is(err, pkcs7.ErrBadSignature) {
					return fmt.Errorf("%s: not a valid signature of %s: %w", sigPath, rootHash, err)
				}
				return fmt.Errorf("%s: %w", sigPath, err)
			}
			chain := chainSubjects(v.Chains[0])
			if e.json {
				return e.printJSON(struct {
					Valid            bool     `json:"valid"`
					RootHash         string   `json:"root_hash"`
					Signer           string   `json:"signer"`
					Chain            []string `json:"chain"`
					DigestAlgorithm  string   `json:"digest_algorithm"`
					SignedAttributes bool     `json:"signed_attributes"`
				}{true, rootHash, v.Signer.Subject.String(), chain, strings.ToLower(strings.ReplaceAll(v.Hash.String(), "-", "")),
					v.Message.Signers[0].SignedAttributes != nil})
			}
			e.printf("%s: valid signature of %s\n  signer: %s\n  chain:  %s\n", sigPath, rootHash, v.Signer.Subject, strings.Join(chain, " <- "))
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&caPath, "ca", "", "trusted CA certificates, PEM or DER (required)")
	f.StringVar(&chainPath, "chain", "", "further intermediate certificates")
	f.StringVar(&certPath, "cert", "", "the signer's certificate, for signatures made without certificates")
	return c
}

func chainSubjects(chain []*x509.Certificate) []string {
	var s []string
	for _, c := range chain {
		s = append(s, c.Subject.String())
	}
	return s
}
