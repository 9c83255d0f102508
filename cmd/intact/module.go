package main

import (
	"crypto"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/intact-project/intact/internal/atomicfile"
	"github.com/intact-project/intact/kmod"
	"github.com/intact-project/intact/pkcs7"
	"github.com/spf13/cobra"
)

func init() { register(newModuleCmd) }

func newModuleCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "module",
		Short: "Sign, verify and inspect kernel module signatures",
		Long: `Kernel modules (.ko, .ko.xz, .ko.zst) carry an appended PKCS#7 signature that
the kernel checks on every load when it enforces signatures (Secure Boot with
lockdown, module.sig_enforce=1). These commands append such signatures, predict
whether a kernel that trusts given CAs would load a module, and show what a
module says about itself. Compressed modules are signed inside the compression,
as distributions ship them. See docs/drivers.md.`,
	}
	c.AddCommand(newModuleSignCmd(e), newModuleVerifyCmd(e), newModuleInspectCmd(e))
	return c
}

func parseHashFlag(s string) (crypto.Hash, error) {
	switch strings.ToLower(s) {
	case "sha256":
		return crypto.SHA256, nil
	case "sha384":
		return crypto.SHA384, nil
	case "sha512":
		return crypto.SHA512, nil
	}
	return 0, usagef("--hash %q: use sha256, sha384 or sha512", s)
}

type moduleSignJSON struct {
	Output      string `json:"output"`
	Name        string `json:"name"`
	Compression string `json:"compression"`
	Signer      string `json:"signer"`
	Certs       bool   `json:"certificates_embedded"`
	Replaced    bool   `json:"replaced_signature"`
}

func newModuleSignCmd(e *env) *cobra.Command {
	var keyPath, certPath, chainPath, out, hashName, compress string
	var noCert, keyID, appendSig bool
	c := &cobra.Command{
		Use:   "sign --key KEY --cert CERT [--chain FILE] [--no-cert] [-o OUT] MODULE",
		Short: "Append a kernel module signature",
		Long: `Sign MODULE (.ko, .ko.xz or .ko.zst) with KEY and CERT and write it to OUT (default:
in place). An existing signature is replaced (--append keeps it, as sign-file
does).

By default the signer's certificate and --chain are embedded in the PKCS#7, so
a vendor leaf issued by a CA the kernel trusts (a key in its builtin,
secondary or machine keyring; on Debian's kernel also the UEFI db) is accepted
without adding anything to a keyring. --no-cert embeds nothing and produces
exactly what the kernel's scripts/sign-file produces: the kernel then needs
the signer's own key in a keyring.

A compressed module is decompressed, signed and compressed again the same way
(xz with CRC32, as Debian ships them); --compress xz|zstd|none changes that.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyPath == "" || certPath == "" {
				return usagef("--key and --cert are required")
			}
			h, err := parseHashFlag(hashName)
			if err != nil {
				return err
			}
			key, cert, chain, err := loadSigningKey(keyPath, certPath, chainPath)
			if err != nil {
				return err
			}
			signer, err := pkcs7.NewSigner(cert, key, chain...)
			if err != nil {
				return err
			}
			raw, comp, err := kmod.ReadFile(args[0])
			if err != nil {
				return err
			}
			info, err := kmod.ReadInfo(raw)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			prev, _ := kmod.Parse(raw)
			signed, err := kmod.Sign(raw, signer, kmod.SignOptions{Hash: h, NoCerts: noCert, KeyID: keyID, Append: appendSig})
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			if compress != "" {
				switch compress {
				case "none":
					comp = kmod.None
				case "xz":
					comp = kmod.XZ
				case "zstd":
					comp = kmod.Zstd
				default:
					return usagef("--compress %q: use xz, zstd or none", compress)
				}
			}
			final, err := kmod.Compress(signed, comp)
			if err != nil {
				return err
			}
			if out == "" {
				out = args[0]
			}
			if err := atomicfile.WriteFile(out, final, 0o644); err != nil {
				return err
			}
			j := moduleSignJSON{Output: out, Name: info.Name, Compression: comp.String(), Signer: cert.Subject.String(),
				Certs: !noCert, Replaced: prev != nil && prev.Signature != nil && !appendSig}
			if e.json {
				return e.printJSON(j)
			}
			e.printf("%s: module %s signed by %s (%s, certificates %s)\n", out, info.Name, j.Signer, comp, map[bool]string{true: "embedded", false: "not embedded"}[j.Certs])
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&keyPath, "key", "", "private key (PEM or DER; RSA or ECDSA)")
	f.StringVar(&certPath, "cert", "", "signer certificate (PEM or DER; further certificates in the file count as --chain)")
	f.StringVar(&chainPath, "chain", "", "intermediate certificates to embed after the signer's")
	f.BoolVar(&noCert, "no-cert", false, "embed no certificate (byte-identical to scripts/sign-file)")
	f.BoolVar(&keyID, "key-id", false, "name the signer by subjectKeyIdentifier (sign-file -k); the kernel then needs the signer's own key")
	f.BoolVar(&appendSig, "append", false, "keep an existing signature and append the new one after it")
	f.StringVarP(&out, "output", "o", "", "output file (default: sign in place)")
	f.StringVar(&hashName, "hash", "sha256", "digest: sha256, sha384 or sha512")
	f.StringVar(&compress, "compress", "", "compression of the output: xz, zstd or none (default: as the input)")
	return c
}

type moduleVerifyJSON struct {
	Module      string   `json:"module"`
	Name        string   `json:"name,omitempty"`
	Compression string   `json:"compression"`
	Loads       bool     `json:"loads"`
	Errno       string   `json:"errno,omitempty"`
	Reason      string   `json:"reason,omitempty"`
	KernelLog   string   `json:"kernel_log,omitempty"`
	Detail      string   `json:"detail"`
	Chain       []string `json:"chain,omitempty"`
}

func newModuleVerifyCmd(e *env) *cobra.Command {
	var cas, revoked []string
	var notEnforcing bool
	c := &cobra.Command{
		Use:   "verify --ca CA [--ca CA...] MODULE...",
		Short: "Predict whether a kernel trusting CA would load the module's signature",
		Long: `Check each MODULE's signature the way Linux 6.12 does (kernel/module/signing.c,
crypto/asymmetric_keys/pkcs7_verify.c) for a kernel whose keyrings hold the
certificates in the --ca files: keys in .builtin_trusted_keys,
.secondary_trusted_keys or .machine, and on Debian's kernel (which retries
module signatures against the platform keyring) the UEFI db certificates.

The answer names what finit_module would return and the line the kernel logs,
e.g. "EKEYREJECTED: module with unavailable key" for a signature whose signer
certificate is neither embedded nor in a keyring. --revoked takes certificates
whose TBS hash the kernel's blacklist holds (dbx EFI_CERT_X509_SHA256 entries).
Exit status 1 if any module would be refused.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(cas) == 0 {
				return usagef("--ca is required (the certificates whose keys the kernel trusts)")
			}
			var opts kmod.VerifyOptions
			opts.NotEnforcing = notEnforcing
			for _, p := range cas {
				certs, err := pkcs7.LoadCertificates(p)
				if err != nil {
					return fmt.Errorf("--ca %s: %w", p, err)
				}
				opts.Trusted = append(opts.Trusted, certs...)
			}
			for _, p := range revoked {
				certs, err := pkcs7.LoadCertificates(p)
				if err != nil {
					return fmt.Errorf("--revoked %s: %w", p, err)
				}
				for _, c := range certs {
					opts.RevokedTBS = append(opts.RevokedTBS, kmod.TBSHash(c))
				}
			}
			var res []moduleVerifyJSON
			refused := 0
			for _, p := range args {
				raw, comp, err := kmod.ReadFile(p)
				if err != nil {
					return err
				}
				v, err := kmod.Verify(raw, opts)
				if err != nil {
					return fmt.Errorf("%s: %w", p, err)
				}
				j := moduleVerifyJSON{Module: p, Compression: comp.String(), Loads: v.Loads, Errno: v.ErrnoName, Reason: v.Reason, KernelLog: v.KernelLog, Detail: v.Detail}
				if info, err := kmod.ReadInfo(raw); err == nil {
					j.Name = info.Name
				}
				for _, c := range v.Chain {
					j.Chain = append(j.Chain, c.Subject.String())
				}
				if !v.Loads {
					refused++
				}
				res = append(res, j)
			}
			if e.json {
				if err := e.printJSON(res); err != nil {
					return err
				}
			} else {
				for _, j := range res {
					if j.Loads {
						fmt.Fprintf(e.stdout, "%s: loads: %s\n", j.Module, j.Detail)
						continue
					}
					fmt.Fprintf(e.stdout, "%s: refused: %s: %s (%s)\n", j.Module, j.Errno, j.Reason, j.Detail)
					if j.KernelLog != "" && !e.quiet {
						fmt.Fprintf(e.stdout, "  kernel log: %s\n", j.KernelLog)
					}
				}
			}
			if refused > 0 {
				return &exitError{code: 1, msg: fmt.Sprintf("%d of %d modules would be refused", refused, len(args))}
			}
			return nil
		},
	}
	c.Flags().StringArrayVar(&cas, "ca", nil, "certificates (PEM/DER file) whose keys the kernel trusts for modules (repeatable)")
	c.Flags().StringArrayVar(&revoked, "revoked", nil, "certificates the kernel's blacklist revokes by TBS hash (repeatable)")
	c.Flags().BoolVar(&notEnforcing, "not-enforcing", false, "predict a kernel that neither enforces signatures nor is locked down")
	return c
}

type moduleInspectJSON struct {
	Module      string            `json:"module"`
	Compression string            `json:"compression"`
	Info        *kmod.Info        `json:"modinfo"`
	Signed      bool              `json:"signed"`
	Signature   *signatureSummary `json:"signature,omitempty"`
}

type signatureSummary struct {
	IDType       int      `json:"id_type"`
	Bytes        int      `json:"pkcs7_bytes"`
	Digest       string   `json:"digest,omitempty"`
	SignerIssuer string   `json:"signer_issuer,omitempty"`
	SignerSerial string   `json:"signer_serial,omitempty"`
	SignerKeyID  string   `json:"signer_key_id,omitempty"`
	Certificates []string `json:"certificates,omitempty"`
	Problem      string   `json:"problem,omitempty"`
}

func newModuleInspectCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect MODULE",
		Short: "Show a module's .modinfo and signature",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, comp, err := kmod.ReadFile(args[0])
			if err != nil {
				return err
			}
			info, err := kmod.ReadInfo(raw)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			m, err := kmod.Parse(raw)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			j := moduleInspectJSON{Module: args[0], Compression: comp.String(), Info: info, Signed: m.Signature != nil}
			if m.Signature != nil {
				s := &signatureSummary{IDType: int(m.Signature.IDType), Bytes: len(m.Signature.PKCS7)}
				if sd, err := pkcs7.Parse(m.Signature.PKCS7); err != nil {
					s.Problem = err.Error()
				} else {
					if len(sd.Signers) > 0 {
						si := sd.Signers[0]
						s.Digest = strings.ToLower(si.Hash.String())
						if si.SerialNumber != nil {
							s.SignerSerial = hex.EncodeToString(si.SerialNumber.Bytes())
							s.SignerIssuer = rdn(si.Issuer)
						}
						if si.SubjectKeyID != nil {
							s.SignerKeyID = hex.EncodeToString(si.SubjectKeyID)
						}
					}
					for _, c := range sd.Certificates {
						s.Certificates = append(s.Certificates, c.Subject.String()+" (issuer "+c.Issuer.String()+")")
					}
				}
				j.Signature = s
			}
			if e.json {
				return e.printJSON(j)
			}
			fmt.Fprintf(e.stdout, "module:      %s\nname:        %s\nversion:     %s\nvermagic:    %s\ncompression: %s\n", args[0], info.Name, dash(info.Version), dash(info.Vermagic), comp)
			if len(info.Depends) > 0 {
				fmt.Fprintf(e.stdout, "depends:     %s\n", strings.Join(info.Depends, ","))
			}
			for _, fw := range info.Firmware {
				fmt.Fprintf(e.stdout, "firmware:    %s\n", fw)
			}
			if j.Signature == nil {
				fmt.Fprintf(e.stdout, "signature:   none\n")
				return nil
			}
			s := j.Signature
			fmt.Fprintf(e.stdout, "signature:   PKCS#7, %d bytes, %s\n", s.Bytes, dash(s.Digest))
			if s.SignerSerial != "" {
				fmt.Fprintf(e.stdout, "signer:      issuer %s, serial %s\n", s.SignerIssuer, s.SignerSerial)
			}
			if s.SignerKeyID != "" {
				fmt.Fprintf(e.stdout, "signer:      subjectKeyIdentifier %s\n", s.SignerKeyID)
			}
			if len(s.Certificates) == 0 {
				fmt.Fprintf(e.stdout, "certificates: none embedded (the kernel needs the signer's own key)\n")
			}
			for _, c := range s.Certificates {
				fmt.Fprintf(e.stdout, "certificate: %s\n", c)
			}
			if s.Problem != "" {
				fmt.Fprintf(e.stdout, "problem:     %s\n", s.Problem)
			}
			return nil
		},
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// rdn renders a DER Name.
func rdn(der []byte) string {
	var seq pkix.RDNSequence
	if rest, err := asn1.Unmarshal(der, &seq); err != nil || len(rest) != 0 {
		return hex.EncodeToString(der)
	}
	var n pkix.Name
	n.FillFromRDNSequence(&seq)
	return n.String()
}
