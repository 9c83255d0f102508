package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/intact-project/intact/fsverity"
	"github.com/intact-project/intact/internal/atomicfile"
)

// The fsverity group: fs-verity digests, builtin signatures and the
// enable/measure ioctls (package fsverity). Output matches fsverity-utils.
func init() { register(newFsverityCmd) }

func newFsverityCmd(e *env) *cobra.Command {
	g := &cobra.Command{
		Use:   "fsverity",
		Short: "Compute, sign, enable and measure fs-verity file digests (fsverity-utils compatible)",
		Long: `Compute fs-verity file digests offline, sign them for the kernel's builtin
signature check, and enable or measure fs-verity on files (ext4, f2fs and
btrfs with the verity feature).

digest and sign print exactly what 'fsverity digest' and 'fsverity sign'
(fsverity-utils) print for the same flags; measure prints what 'fsverity
measure' prints.`,
		Args: cobra.NoArgs,
	}
	g.AddCommand(newFsverityDigestCmd(e), newFsveritySignCmd(e), newFsverityEnableCmd(e), newFsverityMeasureCmd(e))
	return g
}

// fsvTreeFlags are the tree parameters shared by digest, sign and enable.
type fsvTreeFlags struct {
	hashAlg   string
	blockSize string
	salt      string
}

func (t *fsvTreeFlags) add(f *pflag.FlagSet) {
	f.StringVar(&t.hashAlg, "hash-alg", "sha256", "hash algorithm: sha256 or sha512")
	f.StringVar(&t.blockSize, "block-size", "4096", "Merkle tree block size: a power of two from 1024 to 65536 (the kernel also needs it <= the page and filesystem block size)")
	f.StringVar(&t.salt, "salt", "", "salt as hex, at most 32 bytes (default none)")
}

func (t *fsvTreeFlags) params() (fsverity.Params, error) {
	alg, err := fsverity.ParseHashAlgorithm(t.hashAlg)
	if err != nil {
		return fsverity.Params{}, usagef("--hash-alg %q: use sha256 or sha512", t.hashAlg)
	}
	bs, err := strconv.Atoi(t.blockSize)
	if err != nil {
		return fsverity.Params{}, usagef("--block-size %q is not a number", t.blockSize)
	}
	salt, err := hex.DecodeString(t.salt)
	if err != nil {
		return fsverity.Params{}, usagef("--salt %q is not hex", truncateArg(t.salt))
	}
	p, err := fsverity.Params{Algorithm: alg, BlockSize: bs, Salt: salt}.Normalize()
	if err != nil {
		switch {
		case len(salt) > fsverity.MaxSaltSize:
			return p, usagef("--salt has %d bytes; at most %d", len(salt), fsverity.MaxSaltSize)
		default:
			return p, usagef("--block-size %d: a power of two from %d to %d", bs, fsverity.MinBlockSize, fsverity.MaxBlockSize)
		}
	}
	return p, nil
}

// fsvCompute computes a file's descriptor with a progress line for big
// files on a terminal.
func (e *env) fsvCompute(path string, p fsverity.Params) (*fsverity.Descriptor, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%s: is a directory", path)
	}
	opts := fsverity.ComputeOptions{}
	if st.Size() > 64<<20 {
		prog, done := e.progress("fs-verity " + path)
		defer done()
		if prog != nil {
			total := uint64(st.Size())
			opts.Progress = func(n uint64) { prog(n, total) }
		}
	}
	d, err := fsverity.ComputeDescriptor(e.ctx, f, p, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

type fsvDigestJSON struct {
	Path           string `json:"path"`
	Digest         string `json:"digest"`
	HashAlgorithm  string `json:"hash_algorithm"`
	BlockSize      int    `json:"block_size"`
	Salt           string `json:"salt"`
	Size           uint64 `json:"size"`
	BuiltinPayload string `json:"builtin_sig_payload,omitempty"`
}

func newFsverityDigestCmd(e *env) *cobra.Command {
	var tf fsvTreeFlags
	var compact, forBuiltin bool
	c := &cobra.Command{
		Use:   "digest FILE...",
		Short: "Print the fs-verity digest of files, as 'fsverity digest' does",
		Long: `Print the fs-verity digest of each FILE as 'fsverity digest' prints it:
"sha256:<hex> FILE". The file need not be on a verity-capable filesystem.

--for-builtin-sig prints instead the hex of the data a builtin signature
signs ("FSVerity", algorithm, size, digest); --compact drops the
algorithm prefix and the file name.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := tf.params()
			if err != nil {
				return err
			}
			var list []fsvDigestJSON
			for _, path := range args {
				desc, err := e.fsvCompute(path, p)
				if err != nil {
					return err
				}
				d, err := desc.Digest()
				if err != nil {
					return err
				}
				payload := hex.EncodeToString(d.SignedPayload())
				if e.json {
					j := fsvDigestJSON{Path: path, Digest: d.String(), HashAlgorithm: p.Algorithm.String(),
						BlockSize: p.BlockSize, Salt: hex.EncodeToString(p.Salt), Size: desc.DataSize}
					if forBuiltin {
						j.BuiltinPayload = payload
					}
					list = append(list, j)
					continue
				}
				switch {
				case compact && forBuiltin:
					fmt.Fprintln(e.stdout, payload)
				case compact:
					fmt.Fprintln(e.stdout, hex.EncodeToString(d.Sum))
				case forBuiltin:
					fmt.Fprintf(e.stdout, "%s %s\n", payload, path)
				default:
					fmt.Fprintf(e.stdout, "%s %s\n", d, path)
				}
			}
			if e.json {
				return e.printJSON(list)
			}
			return nil
		},
	}
	tf.add(c.Flags())
	c.Flags().BoolVar(&compact, "compact", false, "print only the hex digest (or payload), without algorithm and file name")
	c.Flags().BoolVar(&forBuiltin, "for-builtin-sig", false, "print the builtin-signature payload in hex instead of the digest")
	return c
}

func newFsveritySignCmd(e *env) *cobra.Command {
	var tf fsvTreeFlags
	var keyPath, certPath string
	var embed bool
	c := &cobra.Command{
		Use:   "sign FILE OUT_SIGFILE --key KEY --cert CERT",
		Short: "Sign a file's fs-verity digest for the kernel's builtin signatures, as 'fsverity sign' does",
		Long: `Compute FILE's fs-verity digest and write its builtin signature to
OUT_SIGFILE (atomically): a detached DER PKCS#7 over "FSVerity" ‖ algorithm ‖
size ‖ digest with the file's hash algorithm, no signed attributes and, like
fsverity-utils, no certificates. Prints "Signed file 'FILE' (ALG:HEX)".

The kernel checks such signatures against the .fs-verity keyring when
verity is enabled with them ('intact fsverity enable --signature').`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, out := args[0], args[1]
			p, err := tf.params()
			if err != nil {
				return err
			}
			if err := checkOutputs(out); err != nil {
				return err
			}
			s, err := loadPKCS7Signer(keyPath, certPath, "")
			if err != nil {
				return err
			}
			desc, err := e.fsvCompute(path, p)
			if err != nil {
				return err
			}
			d, err := desc.Digest()
			if err != nil {
				return err
			}
			sig, err := fsverity.Sign(d, s, fsverity.SignOptions{EmbedCertificate: embed})
			if err != nil {
				return err
			}
			if err := atomicfile.WriteFile(out, sig, 0o644); err != nil {
				return err
			}
			if e.json {
				sum := sha256.Sum256(sig)
				return e.printJSON(struct {
					Path      string `json:"path"`
					Digest    string `json:"digest"`
					Signature string `json:"signature"`
					SigDigest string `json:"signature_digest"`
					Signer    string `json:"signer"`
				}{path, d.String(), out, "sha256:" + hex.EncodeToString(sum[:]), s.Certificate.Subject.String()})
			}
			e.printf("Signed file '%s' (%s)\n", path, d)
			return nil
		},
	}
	tf.add(c.Flags())
	c.Flags().StringVar(&keyPath, "key", "", "signing key file, PEM or DER (required)")
	c.Flags().StringVar(&certPath, "cert", "", "signer certificate file, PEM or DER (required)")
	c.Flags().BoolVar(&embed, "embed-cert", false, "embed the signer's certificate (fsverity-utils does not)")
	return c
}

func newFsverityEnableCmd(e *env) *cobra.Command {
	var tf fsvTreeFlags
	var sigPath string
	c := &cobra.Command{
		Use:   "enable FILE",
		Short: "Enable fs-verity on a file (FS_IOC_ENABLE_VERITY), making it read-only",
		Long: `Enable fs-verity on FILE, as 'fsverity enable' does: the kernel builds the
Merkle tree, and from then on the file is immutable and every read is
verified. FILE must be on a filesystem with verity support (ext4 or f2fs
made with the verity feature, btrfs) and must not be open for writing.

With --signature the kernel also checks the builtin signature (see 'intact
fsverity sign') against the .fs-verity keyring and refuses to enable verity
if it does not verify.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := tf.params()
			if err != nil {
				return err
			}
			var sig []byte
			if sigPath != "" {
				st, err := os.Stat(sigPath)
				if err != nil {
					return err
				}
				if st.Size() > fsverity.MaxSignatureSize {
					return fmt.Errorf("%s: %d bytes; the kernel accepts signatures up to %d", sigPath, st.Size(), fsverity.MaxSignatureSize)
				}
				if sig, err = os.ReadFile(sigPath); err != nil {
					return err
				}
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			if err := fsverity.Enable(f, fsverity.EnableOptions{Params: p, Signature: sig}); err != nil {
				return err
			}
			d, err := fsverity.Measure(f)
			if err != nil {
				return err
			}
			if e.json {
				return e.printJSON(struct {
					Path   string `json:"path"`
					Digest string `json:"digest"`
					Signed bool   `json:"signed"`
				}{args[0], d.String(), sig != nil})
			}
			e.infof("fs-verity enabled on %s (%s)\n", args[0], d)
			return nil
		},
	}
	tf.add(c.Flags())
	c.Flags().StringVar(&sigPath, "signature", "", "builtin signature file (DER PKCS#7) for the kernel to check")
	return c
}

func newFsverityMeasureCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "measure FILE...",
		Short: "Print the fs-verity digest the kernel holds for verity files (FS_IOC_MEASURE_VERITY)",
		Long: `Print the digest of each verity FILE as the kernel reports it, in the form
'fsverity measure' uses: "sha256:<hex> FILE". Fails for a file without
fs-verity enabled.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			type item struct {
				Path   string `json:"path"`
				Digest string `json:"digest"`
			}
			var list []item
			for _, path := range args {
				f, err := os.Open(path)
				if err != nil {
					return err
				}
				d, err := fsverity.Measure(f)
				f.Close()
				if err != nil {
					if errors.Is(err, fsverity.ErrNotVerity) {
						return fmt.Errorf("%s: fs-verity is not enabled on this file", path)
					}
					return err
				}
				if e.json {
					list = append(list, item{path, d.String()})
					continue
				}
				fmt.Fprintf(e.stdout, "%s %s\n", d, path)
			}
			if e.json {
				return e.printJSON(list)
			}
			return nil
		},
	}
}
