package main

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/intact-project/intact/efi"
	"github.com/intact-project/intact/internal/atomicfile"
	"github.com/intact-project/intact/pkcs7"
)

func init() { register(newEFICmd) }

func newEFICmd(e *env) *cobra.Command {
	g := &cobra.Command{
		Use:   "efi",
		Short: "Sign and verify EFI executables (Authenticode) for Secure Boot",
		Long: `Sign PE/COFF EFI executables (UKIs, boot loaders, kernels) with
Authenticode as UEFI Secure Boot verifies them, and check signatures as the
firmware does. See docs/formats.md, "UKI and Authenticode".`,
		Args: cobra.NoArgs,
	}
	g.AddCommand(newEFISignCmd(e), newEFIVerifyCmd(e))
	return g
}

// loadEFISigner loads an RSA key and its certificate (optionally followed
// by intermediates) for Authenticode.
func loadEFISigner(keyPath, certPath string) (efi.Signer, error) {
	if keyPath == "" || certPath == "" {
		return efi.Signer{}, usagef("--key and --cert are required")
	}
	key, err := pkcs7.LoadPrivateKey(keyPath)
	if err != nil {
		return efi.Signer{}, err
	}
	certs, err := pkcs7.LoadCertificates(certPath)
	if err != nil {
		return efi.Signer{}, err
	}
	return efi.Signer{Certificate: certs[0], Key: key, Chain: certs[1:]}, nil
}

func newEFISignCmd(e *env) *cobra.Command {
	var keyPath, certPath, out string
	var appendSig, replace bool
	c := &cobra.Command{
		Use:   "sign --key KEY --cert CERT IMAGE -o OUT",
		Short: "Sign an EFI executable with Authenticode (a db key)",
		Long: `Sign the PE image IMAGE with Authenticode (SHA-256, PKCS#7 with the
signer certificate embedded) for UEFI Secure Boot, as sbsign does. KEY must
be RSA (what firmware verifies); CERT is the signer's certificate, enrolled
in db or issued by a CA in db, optionally followed by intermediates.

The signature carries only contentType and messageDigest as signed
attributes (no signing time), so the same image and key always give the
same signed bytes. An image that is already signed is refused unless
--append (add a second signature; firmware accepts the image if any
signature verifies) or --replace (drop the existing ones). OUT is written
atomically; it may be IMAGE itself.`,
		Example: `  intact efi sign --key keys/db.key --cert keys/db.crt uki.efi -o BOOTX64.EFI
  intact efi verify --cert keys/db.crt BOOTX64.EFI`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usagef("-o OUT is required")
			}
			if appendSig && replace {
				return usagef("--append and --replace exclude each other")
			}
			s, err := loadEFISigner(keyPath, certPath)
			if err != nil {
				return err
			}
			img, err := readInput(args[0], efi.MaxImageSize)
			if err != nil {
				return err
			}
			signed, err := efi.Sign(img, s, efi.SignOptions{Append: appendSig, Replace: replace})
			if err != nil {
				if errors.Is(err, efi.ErrSigned) {
					return fmt.Errorf("%s is already signed; use --append to add a signature or --replace to re-sign", args[0])
				}
				return err
			}
			if err := atomicfile.WriteFile(out, signed, 0o644); err != nil {
				return err
			}
			d, err := efi.Digest(bytes.NewReader(signed), int64(len(signed)), crypto.SHA256)
			if err != nil {
				return err
			}
			if e.json {
				return e.printJSON(struct {
					Path   string `json:"path"`
					Signer string `json:"signer"`
					Digest string `json:"authenticode_sha256"`
					Size   int    `json:"size"`
				}{out, s.Certificate.Subject.String(), hex.EncodeToString(d), len(signed)})
			}
			e.printf("signed %s by %s -> %s (Authenticode sha256 %x)\n", args[0], s.Certificate.Subject, out, d)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&keyPath, "key", "", "RSA signing key, PEM or DER (required)")
	f.StringVar(&certPath, "cert", "", "signer certificate, optionally followed by intermediates (required)")
	f.StringVarP(&out, "output", "o", "", "output file (required)")
	f.BoolVar(&appendSig, "append", false, "add a signature to an already-signed image")
	f.BoolVar(&replace, "replace", false, "replace the signatures of an already-signed image")
	return c
}

type efiSigJSON struct {
	Signer  string   `json:"signer,omitempty"`
	Chain   []string `json:"chain,omitempty"`
	Digest  string   `json:"digest,omitempty"`
	Trusted bool     `json:"trusted"`
	Error   string   `json:"error,omitempty"`
}

func newEFIVerifyCmd(e *env) *cobra.Command {
	var certPaths []string
	c := &cobra.Command{
		Use:   "verify --cert CERT IMAGE",
		Short: "Check an EFI executable's Authenticode signatures as firmware does",
		Long: `Check the Authenticode signatures of IMAGE against the certificates in
CERT (db entries: a CA or the signer itself; repeat --cert or put several in
one PEM file), as UEFI firmware does: the image's digest must equal the
signed digest, the signed attributes must match the signed content, the RSA
signature must verify, and the signer must chain to a CERT. Validity times
are not checked (firmware does not check them).

Exit status 0 if any signature verifies (what firmware requires), 1
otherwise (unsigned, changed after signing, untrusted signer). Without
--cert the signatures are only checked against the image. --json prints the
image's Authenticode digest and each signature's verdict.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var trusted []*x509.Certificate
			for _, p := range certPaths {
				cs, err := pkcs7.LoadCertificates(p)
				if err != nil {
					return err
				}
				trusted = append(trusted, cs...)
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return err
			}
			if st.IsDir() {
				return fmt.Errorf("%s is a directory", args[0])
			}
			res, err := efi.Verify(f, st.Size(), trusted)
			if err != nil && !errors.Is(err, efi.ErrUnsigned) {
				return err
			}
			out := struct {
				Path       string       `json:"path"`
				Digest     string       `json:"authenticode_sha256"`
				Signed     bool         `json:"signed"`
				Trusted    bool         `json:"trusted"`
				Signatures []efiSigJSON `json:"signatures"`
			}{Path: args[0], Signed: err == nil, Signatures: []efiSigJSON{}}
			if res != nil {
				out.Digest, out.Trusted = hex.EncodeToString(res.Digest), res.Trusted()
				for _, s := range res.Signatures {
					j := efiSigJSON{Trusted: s.Trusted, Digest: hex.EncodeToString(s.Digest)}
					if s.Signer != nil {
						j.Signer = s.Signer.Subject.String()
					}
					for _, c := range s.Chain {
						j.Chain = append(j.Chain, c.Subject.String())
					}
					if s.Err != nil {
						j.Error = s.Err.Error()
					}
					out.Signatures = append(out.Signatures, j)
				}
			}
			if e.json {
				if err := e.printJSON(out); err != nil {
					return err
				}
			} else {
				for i, s := range out.Signatures {
					verdict := "ok"
					if !s.Trusted {
						verdict = "FAILED: " + s.Error
					}
					e.printf("signature %d: %s: %s\n", i+1, s.Signer, verdict)
				}
			}
			switch {
			case !out.Signed:
				return &exitError{code: 1, msg: args[0] + " is not signed"}
			case !out.Trusted:
				return &exitError{code: 1, msg: args[0] + ": no signature verifies against the given certificates"}
			}
			if !e.json {
				e.printf("%s: signature verified (Authenticode sha256 %s)\n", args[0], out.Digest)
			}
			return nil
		},
	}
	c.Flags().StringArrayVar(&certPaths, "cert", nil, "trusted certificate file (PEM or DER; repeatable)")
	return c
}
