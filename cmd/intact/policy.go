package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/intact-project/intact/dm"
	"github.com/intact-project/intact/fsverity"
	"github.com/intact-project/intact/internal/atomicfile"
	"github.com/intact-project/intact/ipe"
	"github.com/intact-project/intact/pkcs7"
)

func init() { register(newPolicyCmd) }

// maxPolicyFile bounds a policy, signed policy or audit input read whole.
const maxPolicyFile = 16 << 20

func newPolicyCmd(e *env) *cobra.Command {
	g := &cobra.Command{
		Use:   "policy",
		Short: "Write, check, sign, deploy and debug IPE policies",
		Long: `Work with policies of the Linux IPE LSM (Integrity Policy Enforcement), as
Linux 6.12 parses and enforces them:

  new       generate a policy from intent (initramfs, signed dm-verity, root hashes)
  lint      check policies exactly as the kernel would, with line, column and hints
  fmt       rewrite policies in canonical form
  sign      sign a policy (PKCS#7, policy attached) for loading
  verify    verify a signed policy against a CA
  load, update, activate, delete, list, show, enforce
            deploy and manage policies through securityfs
  audit     explain IPE audit records (denials) from /dev/kmsg, dmesg or audit.log
  eval      predict IPE's decision for files, from their properties

docs/formats.md ("IPE policies") describes the language and every errno.`,
		Args: cobra.NoArgs,
	}
	g.AddCommand(newPolicyLintCmd(e), newPolicyFmtCmd(e), newPolicyNewCmd(e), newPolicySignCmd(e),
		newPolicyVerifyCmd(e), newPolicyLoadCmd(e), newPolicyUpdateCmd(e), newPolicyActivateCmd(e),
		newPolicyDeleteCmd(e), newPolicyListCmd(e), newPolicyShowCmd(e), newPolicyEnforceCmd(e),
		newPolicyAuditCmd(e), newPolicyEvalCmd(e))
	return g
}

func readBounded(path string) ([]byte, error) {
	var r io.Reader
	if path == "-" {
		r = os.Stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil && st.IsDir() {
			return nil, fmt.Errorf("%s is a directory", path)
		}
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxPolicyFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxPolicyFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxPolicyFile)
	}
	return b, nil
}

// lintJSON is one file's verdict for `policy lint --json`.
type lintJSON struct {
	File     string        `json:"file"`
	Valid    bool          `json:"valid"`
	Signed   bool          `json:"signed,omitempty"`
	Errno    string        `json:"errno,omitempty"`
	Line     int           `json:"line,omitempty"`
	Column   int           `json:"column,omitempty"`
	Message  string        `json:"message,omitempty"`
	Expected string        `json:"expected,omitempty"`
	Hint     string        `json:"hint,omitempty"`
	Warnings []ipe.Finding `json:"warnings"`
	// Dangerous: a warning says the policy lets untrusted code run.
	Dangerous bool `json:"dangerous"`
}

func newPolicyLintCmd(e *env) *cobra.Command {
	var loaded []string
	var root, ca string
	var useRoot, strict bool
	c := &cobra.Command{
		Use:   "lint FILE...",
		Short: "Check policies as the Linux 6.12 kernel would accept or refuse them",
		Long: `Check each policy file (plain text, or a signed .p7s/.p7b whose attached policy
is checked together with its envelope) the way the kernel's new_policy write
would: the same policies are accepted and refused, with the same errno
(EBADMSG, EINVAL, ERANGE; EACCES, ENAMETOOLONG, EEXIST, EMSGSIZE, ENOMEM,
EKEYREJECTED, ENOKEY from checks outside the parser), plus line, column, what
was expected and a hint. Warnings flag accepted but ineffective or dangerous
policies; DANGER marks the ones that let untrusted code run (a rule that
allows files on untrusted storage), and such a policy is never called ok.

Exit status: 0 if every file would be accepted (warnings do not count; with
--strict they do), 1 otherwise. "-" reads standard input.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if useRoot {
				fs := &ipe.SecurityFS{Root: root, Logger: e.log}
				l, err := fs.List(e.ctx)
				if err != nil {
					return err
				}
				for _, p := range l {
					loaded = append(loaded, p.Name)
				}
			}
			var pool *x509.CertPool
			if ca != "" {
				p, err := pkcs7.LoadCertPool(ca)
				if err != nil {
					return usagef("--ca: %v", err)
				}
				pool = p
			}
			var out []lintJSON
			bad := 0
			for _, f := range args {
				j := lintFile(f, loaded, pool)
				if !j.Valid || (strict && len(j.Warnings) > 0) {
					bad++
				}
				out = append(out, j)
				if !e.json {
					printLint(e, j)
				}
			}
			if e.json {
				if err := e.printJSON(out); err != nil {
					return err
				}
			}
			if bad > 0 {
				msg := ""
				if len(args) > 1 {
					msg = fmt.Sprintf("%d of %d policies would be refused by the kernel", bad, len(args))
					if strict {
						msg = fmt.Sprintf("%d of %d policies would be refused by the kernel or have warnings (--strict)", bad, len(args))
					}
				}
				return &exitError{code: 1, msg: msg}
			}
			return nil
		},
	}
	c.Flags().StringSliceVar(&loaded, "loaded", nil, "names of policies already loaded in the target kernel (a name collision is EEXIST)")
	c.Flags().BoolVar(&useRoot, "check-loaded", false, "read the loaded policies' names from securityfs (see --root)")
	c.Flags().BoolVar(&strict, "strict", false, "exit 1 also for a policy the kernel accepts but lint warns about")
	c.Flags().StringVar(&root, "root", ipe.DefaultSecurityFS, "securityfs mount point for --check-loaded")
	c.Flags().StringVar(&ca, "ca", "", "for signed policies: PEM CA certificate(s) standing in for the kernel's keyrings (the trust check is skipped without it)")
	return c
}

func lintFile(f string, loaded []string, pool *x509.CertPool) lintJSON {
	j := lintJSON{File: f, Warnings: []ipe.Finding{}}
	b, err := readBounded(f)
	if err != nil {
		j.Message = "read: " + err.Error()
		return j
	}
	var res *ipe.LintResult
	if ipe.IsPKCS7(b) {
		j.Signed = true
		res = ipe.LintSigned(b, pool, ipe.LintOptions{Loaded: loaded})
	} else {
		res = ipe.Lint(b, ipe.LintOptions{Loaded: loaded})
	}
	j.Valid = res.Valid()
	if res.Warnings != nil {
		j.Warnings = res.Warnings
	}
	for _, w := range j.Warnings {
		j.Dangerous = j.Dangerous || w.Danger
	}
	if !j.Valid {
		j.Errno = ipe.ErrnoName(res.Errno())
		var pe *ipe.ParseError
		var ke *ipe.KernelError
		switch {
		case errors.As(res.Err, &pe):
			j.Line, j.Column, j.Message, j.Expected, j.Hint = pe.Line, pe.Col, pe.Msg, pe.Expected, pe.Hint
		case errors.As(res.Err, &ke):
			j.Message, j.Hint = ke.Msg, ke.Hint
		default:
			j.Message = res.Err.Error()
		}
	}
	return j
}

func printLint(e *env, j lintJSON) {
	loc := j.File
	if j.Line > 0 {
		loc = fmt.Sprintf("%s:%d", j.File, j.Line)
		if j.Column > 0 {
			loc = fmt.Sprintf("%s:%d", loc, j.Column)
		}
	}
	switch {
	case j.Valid && j.Dangerous:
		fmt.Fprintf(e.stdout, "%s: the kernel accepts it, but it lets untrusted code run (DANGER below)\n", j.File)
	case j.Valid:
		e.printf("%s: ok (the kernel accepts it)\n", j.File)
	default:
		msg := j.Message
		if j.Errno != "" {
			msg += " [kernel: " + j.Errno + "]"
		}
		fmt.Fprintf(e.stdout, "%s: error: %s\n", loc, msg)
		if j.Expected != "" {
			fmt.Fprintf(e.stdout, "%s: expected %s\n", loc, j.Expected)
		}
		if j.Hint != "" {
			fmt.Fprintf(e.stdout, "%s: hint: %s\n", loc, j.Hint)
		}
	}
	for _, w := range j.Warnings {
		wl := j.File
		if w.Line > 0 {
			wl = fmt.Sprintf("%s:%d", j.File, w.Line)
		}
		level := "warning"
		if w.Danger {
			level = "DANGER"
		}
		fmt.Fprintf(e.stdout, "%s: %s: %s [%s]\n", wl, level, w.Message, w.Code)
		if w.Hint != "" {
			fmt.Fprintf(e.stdout, "%s: hint: %s\n", wl, w.Hint)
		}
	}
}

func newPolicyFmtCmd(e *env) *cobra.Command {
	var write, check bool
	c := &cobra.Command{
		Use:   "fmt FILE...",
		Short: "Print or rewrite policies in canonical form",
		Long: `Print the canonical form of each policy (header; DEFAULTs, global first then
per operation in kernel order; rules in their order with single spaces and
lowercase hex; LF line endings; comments kept with their statement). The
canonical form parses to exactly the same policy.

With -w the files are rewritten in place (atomically); with --check nothing
is written and the command exits 1 listing the files that are not in
canonical form. A policy the kernel would refuse is an error.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if write && check {
				return usagef("-w and --check exclude each other")
			}
			if !write && !check && len(args) > 1 {
				return usagef("printing more than one file: use -w to rewrite them or --check")
			}
			var unformatted []string
			for _, f := range args {
				b, err := readBounded(f)
				if err != nil {
					return err
				}
				if ipe.IsPKCS7(b) {
					return fmt.Errorf("%s is a signed policy: format the text, then sign it again", f)
				}
				out, err := ipe.Format(b)
				if err != nil {
					return fmt.Errorf("%s: %w", f, err)
				}
				switch {
				case check:
					if !bytes.Equal(out, b) {
						unformatted = append(unformatted, f)
						e.printf("%s\n", f)
					}
				case write:
					if f == "-" {
						return usagef("-w cannot rewrite standard input")
					}
					if bytes.Equal(out, b) {
						continue
					}
					st, err := os.Stat(f)
					if err != nil {
						return err
					}
					if err := atomicfile.WriteFile(f, out, st.Mode().Perm()); err != nil {
						return err
					}
				default:
					if _, err := e.stdout.Write(out); err != nil {
						return err
					}
				}
			}
			if len(unformatted) > 0 {
				return &exitError{code: 1, msg: fmt.Sprintf("%d file(s) not in canonical form", len(unformatted))}
			}
			return nil
		},
	}
	c.Flags().BoolVarP(&write, "write", "w", false, "rewrite the files in place")
	c.Flags().BoolVar(&check, "check", false, "list files not in canonical form and exit 1 if any")
	return c
}

func parseOpList(ss []string) ([]ipe.Op, error) {
	var out []ipe.Op
	for _, s := range ss {
		op, ok := ipe.ParseOp(strings.ToUpper(strings.TrimSpace(s)))
		if !ok {
			return nil, fmt.Errorf("unknown operation %q (one of EXECUTE FIRMWARE KMODULE KEXEC_IMAGE KEXEC_INITRAMFS POLICY X509_CERT)", s)
		}
		out = append(out, op)
	}
	return out, nil
}

func parseActionFlag(s string) (ipe.Action, error) {
	a, ok := ipe.ParseAction(strings.ToUpper(s))
	if !ok {
		return 0, fmt.Errorf("action %q is not ALLOW or DENY", s)
	}
	return a, nil
}

func newPolicyNewCmd(e *env) *cobra.Command {
	var (
		name, version, def, out            string
		ops, opDefaults, roothashes, fsvds []string
		roothashFiles, fromLayer           []string
		initramfs, signedVerity, auditOnly bool
		anonExec                           bool
	)
	c := &cobra.Command{
		Use:   "new --name NAME [flags]",
		Short: "Generate a policy from what it should allow",
		Long: `Generate an IPE policy from intent. By default the operations in --op (EXECUTE)
are denied unless a rule allows them, every other operation is allowed, and
the allow rules come from the flags:

  --allow-initramfs          files from the initramfs (boot_verified=TRUE; for
                             the policy active before switch_root)
  --allow-signed-verity      files on dm-verity devices whose root-hash signature
                             the kernel verified (dmverity_signature=TRUE)
  --allow-roothash HASH      files on the dm-verity device with this root hash
                             ([ALG:]HEX, repeatable; sha256 if no ALG)
  --roothash-file FILE       one root hash per line (# comments allowed)
  --from-layer JSON          root hashes from 'intact layer convert --json' output
                             (its "root_hash" and "hash_algorithm" fields)
  --allow-fsverity-digest D  files with this fs-verity digest (sha256:HEX)

--audit-only marks the policy for permissive deployment (IPE has no per-policy
audit mode: deploy with 'intact policy enforce off' and every would-be denial
is logged with enforcing=0). The output is in canonical form and lints valid.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if name == "" {
				return usagef("--name is required")
			}
			if err := checkOutputs(out); err != nil {
				return err
			}
			v, err := ipe.ParseVersion(version)
			if err != nil {
				return usagef("--version %q: %v", version, err)
			}
			in := ipe.Intent{Name: name, Version: v, AllowInitramfs: initramfs, AllowSignedVerity: signedVerity,
				AuditOnly: auditOnly, AllowAnonymousExec: anonExec}
			if in.Ops, err = parseOpList(ops); err != nil {
				return usagef("--op: %v", err)
			}
			if def != "" {
				if in.Default, err = parseActionFlag(def); err != nil {
					return usagef("--default: %v", err)
				}
			}
			for _, od := range opDefaults {
				k, a, ok := strings.Cut(od, "=")
				if !ok {
					return usagef("--op-default %q: want OP=ALLOW|DENY", od)
				}
				opl, err := parseOpList([]string{k})
				if err != nil {
					return usagef("--op-default: %v", err)
				}
				act, err := parseActionFlag(a)
				if err != nil {
					return usagef("--op-default: %v", err)
				}
				if in.OpDefaults == nil {
					in.OpDefaults = map[ipe.Op]ipe.Action{}
				}
				in.OpDefaults[opl[0]] = act
			}
			for _, h := range roothashes {
				d, err := ipe.ParseDigest(h, "sha256")
				if err != nil {
					return usagef("--allow-roothash: %v", err)
				}
				in.RootHashes = append(in.RootHashes, d)
			}
			for _, f := range roothashFiles {
				b, err := readBounded(f)
				if err != nil {
					return err
				}
				for i, l := range strings.Split(string(b), "\n") {
					if j := strings.IndexByte(l, '#'); j >= 0 {
						l = l[:j]
					}
					if l = strings.TrimSpace(l); l == "" {
						continue
					}
					d, err := ipe.ParseDigest(l, "sha256")
					if err != nil {
						return fmt.Errorf("%s:%d: %w", f, i+1, err)
					}
					in.RootHashes = append(in.RootHashes, d)
				}
			}
			for _, f := range fromLayer {
				b, err := readBounded(f)
				if err != nil {
					return err
				}
				ds, err := ipe.RootHashesFromLayerJSON(b)
				if err != nil {
					return fmt.Errorf("%s: %w", f, err)
				}
				in.RootHashes = append(in.RootHashes, ds...)
				in.Comment = append(in.Comment, "root hashes from "+filepath.Base(f))
			}
			for _, h := range fsvds {
				d, err := ipe.ParseDigest(h, "sha256")
				if err != nil {
					return usagef("--allow-fsverity-digest: %v", err)
				}
				in.FSVerityDigests = append(in.FSVerityDigests, d)
			}
			text, err := ipe.Generate(in)
			if err != nil {
				return err
			}
			res := ipe.Lint(text, ipe.LintOptions{})
			if !res.Valid() {
				return fmt.Errorf("generated policy does not lint: %v", res.Err)
			}
			for _, w := range res.Warnings {
				if w.Danger {
					// Never silenced by --quiet.
					fmt.Fprintf(e.stderr, "intact: DANGER: line %d: %s [%s]\nintact: hint: %s\n", w.Line, w.Message, w.Code, w.Hint)
					continue
				}
				e.infof("intact: warning: %s [%s]\n", w.Message, w.Code)
			}
			if out == "" || out == "-" {
				_, err := e.stdout.Write(text)
				return err
			}
			return atomicfile.WriteFile(out, text, 0o644)
		},
	}
	f := c.Flags()
	f.StringVar(&name, "name", "", "policy_name (required; no spaces, '#' or '/')")
	f.StringVar(&version, "version", "0.0.1", "policy_version MAJOR.MINOR.REV (each 0-65535); updates need a greater version")
	f.StringSliceVar(&ops, "op", []string{"EXECUTE"}, "operations the allow rules cover and that default to DENY")
	f.StringVar(&def, "default", "ALLOW", "global DEFAULT for operations not in --op")
	f.StringArrayVar(&opDefaults, "op-default", nil, "per-operation DEFAULT, OP=ALLOW|DENY (repeatable)")
	f.BoolVar(&initramfs, "allow-initramfs", false, "allow files from the initramfs (boot_verified=TRUE)")
	f.BoolVar(&signedVerity, "allow-signed-verity", false, "allow files on dm-verity devices with a kernel-verified root-hash signature")
	f.StringArrayVar(&roothashes, "allow-roothash", nil, "allow the dm-verity device with this root hash, [ALG:]HEX (repeatable)")
	f.StringArrayVar(&roothashFiles, "roothash-file", nil, "file of root hashes, one [ALG:]HEX per line (repeatable)")
	f.StringArrayVar(&fromLayer, "from-layer", nil, "JSON printed by 'intact layer convert --json' (repeatable)")
	f.StringArrayVar(&fsvds, "allow-fsverity-digest", nil, "allow files with this fs-verity digest, ALG:HEX (repeatable)")
	f.BoolVar(&anonExec, "allow-anonymous-exec", false, "DANGEROUS: allow anonymous executable memory for JITs; IPE cannot tell it from an untrusted file, so every untrusted file may run too")
	f.BoolVar(&auditOnly, "audit-only", false, "mark the policy for permissive deployment (enforce=0)")
	f.StringVarP(&out, "output", "o", "", "write the policy to this file (default: standard output)")
	return c
}

func newPolicySignCmd(e *env) *cobra.Command {
	var key, cert, chain, out string
	c := &cobra.Command{
		Use:   "sign --key KEY --cert CERT [--chain CHAIN] POLICY",
		Short: "Sign a policy for the kernel (PKCS#7, policy attached)",
		Long: `Sign a policy as IPE loads it: PKCS#7 SignedData of type data with the policy
text attached, SHA-256, rsaEncryption (or ECDSA), no signed attributes, the
signer's certificate (and --chain) embedded, signer named by issuer and
serial. The policy is linted first; one the kernel would refuse is not signed.
The kernel trusts the signature if the certificate chains to a key in its
builtin, secondary or platform (UEFI db) keyring.

Output defaults to POLICY.p7s.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if key == "" || cert == "" {
				return usagef("--key and --cert are required")
			}
			if out == "" && args[0] != "-" {
				out = args[0] + ".p7s"
			}
			if err := checkOutputs(out); err != nil {
				return err
			}
			text, err := readBounded(args[0])
			if err != nil {
				return err
			}
			if ipe.IsPKCS7(text) {
				return fmt.Errorf("%s is already signed", args[0])
			}
			s, err := pkcs7.LoadSigner(key, cert)
			if err != nil {
				return err
			}
			if chain != "" {
				cs, err := pkcs7.LoadCertificates(chain)
				if err != nil {
					return fmt.Errorf("--chain: %w", err)
				}
				s.Chain = append(s.Chain, cs...)
			}
			blob, err := ipe.Sign(text, s)
			if err != nil {
				return err
			}
			if out == "" {
				if args[0] == "-" {
					return usagef("-o is required when the policy comes from standard input")
				}
				out = args[0] + ".p7s"
			}
			if out == "-" {
				_, err := e.stdout.Write(blob)
				return err
			}
			if err := atomicfile.WriteFile(out, blob, 0o644); err != nil {
				return err
			}
			if e.json {
				return e.printJSON(map[string]any{"output": out, "bytes": len(blob), "policy_digest": ipe.AuditDigest(blob)})
			}
			e.printf("%s (%d bytes, policy_digest=%s)\n", out, len(blob), ipe.AuditDigest(blob))
			return nil
		},
	}
	c.Flags().StringVar(&key, "key", "", "PEM private key of the signer")
	c.Flags().StringVar(&cert, "cert", "", "PEM certificate of the signer (further certificates in the file are embedded as chain)")
	c.Flags().StringVar(&chain, "chain", "", "PEM file of intermediate CA certificates to embed")
	c.Flags().StringVarP(&out, "output", "o", "", "output file (default POLICY.p7s; - for standard output)")
	return c
}

func newPolicyVerifyCmd(e *env) *cobra.Command {
	var ca, chain string
	c := &cobra.Command{
		Use:   "verify --ca CA SIGNED",
		Short: "Verify a signed policy against a CA, as the kernel will",
		Long: `Verify a signed policy offline: the PKCS#7 envelope is one the kernel accepts,
the signature verifies, the signer chains to --ca (standing in for the
kernel's keyrings) and the policy inside is accepted by the parser.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ca == "" {
				return usagef("--ca is required")
			}
			roots, err := pkcs7.LoadCertPool(ca)
			if err != nil {
				return err
			}
			var intermediates []*x509.Certificate
			if chain != "" {
				cs, err := pkcs7.LoadCertificates(chain)
				if err != nil {
					return fmt.Errorf("--chain: %w", err)
				}
				intermediates = cs
			}
			blob, err := readBounded(args[0])
			if err != nil {
				return err
			}
			v, err := ipe.Verify(blob, roots, intermediates)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			if e.json {
				return e.printJSON(map[string]any{"file": args[0], "valid": true, "policy_name": v.Policy.Name,
					"policy_version": v.Policy.Version.String(), "signer": v.Signer.Subject.String(), "policy_digest": ipe.AuditDigest(blob)})
			}
			e.printf("%s: valid signature by %s; policy %s version %s (policy_digest=%s)\n", args[0], v.Signer.Subject, v.Policy.Name, v.Policy.Version, ipe.AuditDigest(blob))
			return nil
		},
	}
	c.Flags().StringVar(&ca, "ca", "", "PEM CA certificate(s) to trust")
	c.Flags().StringVar(&chain, "chain", "", "PEM intermediate certificates")
	return c
}

func securityFSFlag(c *cobra.Command, root *string) {
	c.Flags().StringVar(root, "root", ipe.DefaultSecurityFS, "securityfs mount point (a directory laid out like securityfs, for tests)")
}

func readSigned(path string) ([]byte, error) {
	b, err := readBounded(path)
	if err != nil {
		return nil, err
	}
	if !ipe.IsPKCS7(b) {
		return nil, fmt.Errorf("%s is not a signed policy: the kernel loads only signed policies (intact policy sign)", path)
	}
	return b, nil
}

func newPolicyLoadCmd(e *env) *cobra.Command {
	var root string
	var activate bool
	c := &cobra.Command{
		Use:   "load SIGNED",
		Short: "Load a signed policy into the kernel (ipe/new_policy)",
		Long: `Write a signed policy to securityfs ipe/new_policy in one write(). The policy
inside is checked first (name collision, size, syntax), so the common mistakes
get a clear message rather than a bare errno. --activate also makes it the
active policy. Needs CAP_MAC_ADMIN.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			blob, err := readSigned(args[0])
			if err != nil {
				return err
			}
			fs := &ipe.SecurityFS{Root: root, Logger: e.log}
			p, err := fs.Load(e.ctx, blob)
			if err != nil {
				return err
			}
			if activate {
				if err := fs.Activate(e.ctx, p.Name); err != nil {
					return fmt.Errorf("loaded %s but could not activate it: %w", p.Name, err)
				}
			}
			if e.json {
				return e.printJSON(map[string]any{"name": p.Name, "version": p.Version.String(), "active": activate, "policy_digest": ipe.AuditDigest(blob)})
			}
			state := "loaded"
			if activate {
				state = "loaded and active"
			}
			e.printf("%s %s version %s (policy_digest=%s)\n", state, p.Name, p.Version, ipe.AuditDigest(blob))
			return nil
		},
	}
	c.Flags().BoolVar(&activate, "activate", false, "make the policy active after loading it")
	securityFSFlag(c, &root)
	return c
}

func newPolicyUpdateCmd(e *env) *cobra.Command {
	var root string
	c := &cobra.Command{
		Use:   "update SIGNED",
		Short: "Replace a loaded policy by a newer version (ipe/policies/NAME/update)",
		Long: `Replace the loaded policy of the same name by this signed policy. The version
must be strictly greater than the loaded one (checked first; the kernel
refuses otherwise with ESTALE). If the old policy was active, the new one is.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			blob, err := readSigned(args[0])
			if err != nil {
				return err
			}
			fs := &ipe.SecurityFS{Root: root, Logger: e.log}
			p, err := fs.Update(e.ctx, blob)
			if err != nil {
				return err
			}
			if e.json {
				return e.printJSON(map[string]any{"name": p.Name, "version": p.Version.String(), "policy_digest": ipe.AuditDigest(blob)})
			}
			e.printf("updated %s to version %s (policy_digest=%s)\n", p.Name, p.Version, ipe.AuditDigest(blob))
			return nil
		},
	}
	securityFSFlag(c, &root)
	return c
}

func newPolicyActivateCmd(e *env) *cobra.Command {
	var root string
	c := &cobra.Command{
		Use:   "activate NAME",
		Short: "Make a loaded policy the active one",
		Long: `Write 1 to ipe/policies/NAME/active. The kernel refuses (EINVAL) a policy
whose version is older than the active policy's; this is checked first.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fs := &ipe.SecurityFS{Root: root, Logger: e.log}
			if err := fs.Activate(e.ctx, args[0]); err != nil {
				return err
			}
			e.printf("%s is active\n", args[0])
			return nil
		},
	}
	securityFSFlag(c, &root)
	return c
}

func newPolicyDeleteCmd(e *env) *cobra.Command {
	var root string
	c := &cobra.Command{
		Use:   "delete NAME",
		Short: "Remove a loaded policy that is not active",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fs := &ipe.SecurityFS{Root: root, Logger: e.log}
			if err := fs.Delete(e.ctx, args[0]); err != nil {
				return err
			}
			e.printf("deleted %s\n", args[0])
			return nil
		},
	}
	securityFSFlag(c, &root)
	return c
}

func newPolicyListCmd(e *env) *cobra.Command {
	var root string
	c := &cobra.Command{
		Use:   "list",
		Short: "List loaded policies: name, version, active, policy digest",
		Long: `List the loaded policies with their version, whether each is active, and the
sha256 of its pkcs7 in the form IPE's audit records print it (policy_digest),
so audit records can be matched to policies. The boot policy has no pkcs7;
its digest is that of nothing, as the kernel audits it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fs := &ipe.SecurityFS{Root: root, Logger: e.log}
			l, err := fs.List(e.ctx)
			if err != nil {
				return err
			}
			enf, err := fs.Enforce()
			if err != nil {
				return err
			}
			if e.json {
				if l == nil {
					l = []ipe.PolicyInfo{}
				}
				return e.printJSON(map[string]any{"enforce": enf, "policies": l})
			}
			mode := "enforcing"
			if !enf {
				mode = "permissive (enforce=0)"
			}
			fmt.Fprintf(e.stdout, "IPE: %s\n", mode)
			if len(l) == 0 {
				fmt.Fprintln(e.stdout, "no policies loaded (everything is allowed)")
				return nil
			}
			fmt.Fprintf(e.stdout, "%-24s %-17s %-6s %s\n", "NAME", "VERSION", "ACTIVE", "POLICY DIGEST")
			for _, p := range l {
				act := "no"
				if p.Active {
					act = "yes"
				}
				fmt.Fprintf(e.stdout, "%-24s %-17s %-6s %s\n", p.Name, p.VersionString, act, p.Digest)
			}
			return nil
		},
	}
	securityFSFlag(c, &root)
	return c
}

func newPolicyShowCmd(e *env) *cobra.Command {
	var root, out string
	var raw bool
	c := &cobra.Command{
		Use:   "show NAME",
		Short: "Print a loaded policy (its text, or with --pkcs7 the signed blob)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutputs(out); err != nil {
				return err
			}
			fs := &ipe.SecurityFS{Root: root, Logger: e.log}
			var b []byte
			var err error
			if raw {
				b, err = fs.PKCS7(args[0])
			} else {
				b, err = fs.PolicyText(args[0])
			}
			if err != nil {
				return err
			}
			if e.json && !raw {
				pi, err := fs.Info(args[0])
				if err != nil {
					return err
				}
				return e.printJSON(map[string]any{"policy": pi, "text": string(b)})
			}
			if out != "" && out != "-" {
				return atomicfile.WriteFile(out, b, 0o644)
			}
			_, err = e.stdout.Write(b)
			return err
		},
	}
	c.Flags().BoolVar(&raw, "pkcs7", false, "print the signed blob (policies/NAME/pkcs7) instead of the text")
	c.Flags().StringVarP(&out, "output", "o", "", "write to this file instead of standard output")
	securityFSFlag(c, &root)
	return c
}

func newPolicyEnforceCmd(e *env) *cobra.Command {
	var root string
	c := &cobra.Command{
		Use:   "enforce [on|off]",
		Short: "Show or switch IPE enforcement (off: audit only)",
		Long: `Without an argument, print whether IPE enforces. "off" switches to permissive
mode: decisions are still evaluated and denials audited (enforcing=0) but
nothing is refused. Switching is audited (type 1404).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fs := &ipe.SecurityFS{Root: root, Logger: e.log}
			if len(args) == 1 {
				var on bool
				switch strings.ToLower(args[0]) {
				case "on", "1", "true", "yes":
					on = true
				case "off", "0", "false", "no":
				default:
					return usagef("enforce %q: want on or off", args[0])
				}
				if err := fs.SetEnforce(e.ctx, on); err != nil {
					return err
				}
			}
			on, err := fs.Enforce()
			if err != nil {
				return err
			}
			if e.json {
				return e.printJSON(map[string]bool{"enforce": on})
			}
			if on {
				fmt.Fprintln(e.stdout, "on")
			} else {
				fmt.Fprintln(e.stdout, "off")
			}
			return nil
		},
	}
	securityFSFlag(c, &root)
	return c
}

// auditJSON is one explained record of `policy audit --json`.
type auditJSON struct {
	Type        int              `json:"type"`
	Time        string           `json:"time,omitempty"`
	Serial      uint64           `json:"serial,omitempty"`
	Record      string           `json:"record"`
	Explanation *ipe.Explanation `json:"explanation,omitempty"`
	Event       *ipe.PolicyEvent `json:"event,omitempty"`
}

func newPolicyAuditCmd(e *env) *cobra.Command {
	var policyFile, root string
	var kmsg, all, inspect bool
	c := &cobra.Command{
		Use:   "audit [FILE...]",
		Short: "Explain IPE audit records (denials, policy loads and activations)",
		Long: `Read IPE audit records (1420 IPE_ACCESS, 1421 IPE_CONFIG_CHANGE, 1422
IPE_POLICY_LOAD, 1404 MAC_STATUS) from files (dmesg or journal output,
/var/log/audit/audit.log; "-" for standard input) or from /dev/kmsg (--kmsg,
the default without files), and explain each denial: the operation, the file,
the rule or DEFAULT that decided, and what rule would allow it.

--policy names the policy that was active (text or signed) to locate rules by
line; without it the active policy is read from securityfs when available.
--inspect looks at the denied files as they are now (see 'intact policy eval').
--all also explains allowed accesses (recorded with success_audit=1).`,
		RunE: func(cmd *cobra.Command, args []string) error {
			var recs []*ipe.AuditRecord
			if kmsg || len(args) == 0 {
				r, err := readKmsg(e.ctx)
				if err != nil {
					return err
				}
				recs = append(recs, r...)
			}
			for _, f := range args {
				var rd io.Reader
				if f == "-" {
					rd = e.stdin
				} else {
					fh, err := os.Open(f)
					if err != nil {
						return err
					}
					defer fh.Close()
					rd = fh
				}
				r, err := ipe.ReadAuditRecords(e.ctx, io.LimitReader(rd, 1<<30))
				if err != nil {
					return fmt.Errorf("%s: %w", f, err)
				}
				recs = append(recs, r...)
			}
			pol, _, err := activeOrFilePolicy(e, policyFile, root)
			if err != nil {
				if policyFile != "" {
					return err
				}
				// The records carry the decisions; the policy only
				// locates rules by line.
				fmt.Fprintf(e.stderr, "intact: warning: the active policy is unknown (%v): rules are not located by line; pass --policy\n", err)
			}
			insp := newInspector(e)
			var out []auditJSON
			denials := 0
			for _, r := range recs {
				j := auditJSON{Type: r.Type, Serial: r.Serial, Record: r.Raw}
				if !r.Time.IsZero() {
					j.Time = r.Time.Format("2006-01-02T15:04:05.000Z07:00")
				}
				if r.Type == ipe.AuditIPEAccess {
					a, err := ipe.ParseAccess(r)
					if err != nil {
						e.log.Debug("skipping record", "err", err)
						continue
					}
					if a.Action != ipe.ActionDeny && !all {
						continue
					}
					if a.Action == ipe.ActionDeny {
						denials++
					}
					var props *ipe.FileProps
					if inspect && !a.Anonymous() {
						if p, err := insp.Inspect(e.ctx, a.Path); err == nil {
							props = p
						}
					}
					j.Explanation = ipe.Explain(a, pol, props)
				} else {
					j.Event = ipe.ParsePolicyEvent(r)
				}
				out = append(out, j)
			}
			if e.json {
				if out == nil {
					out = []auditJSON{}
				}
				return e.printJSON(out)
			}
			for _, j := range out {
				printAudit(e, j)
			}
			if len(out) == 0 {
				e.infof("no IPE audit records found\n")
			}
			return nil
		},
	}
	c.Flags().BoolVar(&kmsg, "kmsg", false, "read /dev/kmsg (the default when no FILE is given)")
	c.Flags().StringVar(&policyFile, "policy", "", "the policy that was active (text or signed)")
	c.Flags().BoolVar(&all, "all", false, "also explain allowed accesses")
	c.Flags().BoolVar(&inspect, "inspect", false, "inspect the denied files as they are now")
	securityFSFlag(c, &root)
	return c
}

func printAudit(e *env, j auditJSON) {
	ts := j.Time
	if ts == "" {
		ts = "-"
	}
	if ex := j.Explanation; ex != nil {
		fmt.Fprintf(e.stdout, "%s %s\n", ts, ex.Summary)
		fmt.Fprintf(e.stdout, "  decided by: %s\n", ex.DecidedBy)
		for _, w := range ex.Why {
			fmt.Fprintf(e.stdout, "  why: %s\n", w)
		}
		for _, a := range ex.Allow {
			fmt.Fprintf(e.stdout, "  to allow: %s\n", a)
		}
		return
	}
	ev := j.Event
	switch ev.Type {
	case ipe.AuditIPEPolicyLoad:
		if ev.Name == "?" || ev.Name == "" {
			fmt.Fprintf(e.stdout, "%s policy load failed (errno=%s)\n", ts, ev.Errno)
		} else {
			fmt.Fprintf(e.stdout, "%s policy loaded: %s version %s (policy_digest=%s)\n", ts, ev.Name, ev.Version, ev.Digest)
		}
	case ipe.AuditIPEConfigChange:
		fmt.Fprintf(e.stdout, "%s policy activated: %s version %s (was %s %s)\n", ts, ev.Name, ev.Version, ev.OldName, ev.OldVersion)
	case ipe.AuditMACStatus:
		fmt.Fprintf(e.stdout, "%s IPE enforce set to %s\n", ts, ev.Enforcing)
	}
}

// activeOrFilePolicy loads the policy to evaluate or explain against:
// --policy, else the active one from securityfs. A nil policy with a nil
// error means IPE decides nothing (reason says why); a securityfs that
// cannot be read is an error (see ipe.SecurityFS.ActivePolicy).
func activeOrFilePolicy(e *env, file, root string) (*ipe.Policy, string, error) {
	if file != "" {
		b, err := readBounded(file)
		if err != nil {
			return nil, "", err
		}
		text, _, err := ipe.PolicyFromFile(b)
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", file, err)
		}
		p, err := ipe.Parse(text)
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", file, err)
		}
		return p, "", nil
	}
	return (&ipe.SecurityFS{Root: root, Logger: e.log}).ActivePolicy(e.ctx)
}

func newPolicyEvalCmd(e *env) *cobra.Command {
	var policyFile, root, opName string
	c := &cobra.Command{
		Use:   "eval [--policy FILE] PATH...",
		Short: "Predict IPE's decision for files from their properties",
		Long: `Compute each file's IPE properties from userspace and print the decision the
policy would make and why: boot_verified (the file's mount is the initramfs
rootfs), dm-verity root hash and signature state (the block device of the real
inode, through overlayfs to the layer that holds the file, as d_real_inode()
does), fs-verity digest. The policy is --policy (text or signed) or, without
it, the active policy from securityfs.

What userspace cannot know is listed under "unknown": whether a built-in
fs-verity signature was verified, and a dm-verity table when device-mapper
cannot be queried. Exit status 0 even for DENY; 1 if a file cannot be
inspected.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			op, ok := ipe.ParseOp(strings.ToUpper(opName))
			if !ok {
				return usagef("--op %q: unknown operation", opName)
			}
			pol, reason, err := activeOrFilePolicy(e, policyFile, root)
			if err != nil {
				if policyFile == "" {
					return fmt.Errorf("cannot read the active IPE policy, so no decision can be predicted: %w (run as root where securityfs is mounted, or pass --policy FILE)", err)
				}
				return err
			}
			if pol == nil {
				e.infof("intact: %s: IPE allows everything\n", reason)
			}
			insp := newInspector(e)
			type evalJSON struct {
				Path       string         `json:"path"`
				Decision   string         `json:"decision"`
				DecidedBy  string         `json:"decided_by"`
				Line       int            `json:"line,omitempty"`
				Properties []string       `json:"properties"`
				Props      *ipe.FileProps `json:"file"`
				Allow      []string       `json:"allow,omitempty"`
			}
			var out []evalJSON
			failed := 0
			for _, p := range args {
				fp, err := insp.Inspect(e.ctx, p)
				if err != nil {
					failed++
					fmt.Fprintf(e.stderr, "intact: %v\n", err)
					continue
				}
				d := pol.Evaluate(fp.Context(op))
				j := evalJSON{Path: p, Decision: d.Action.String(), Properties: fp.Properties(), Props: fp}
				j.DecidedBy, j.Line = d.DecidedBy(pol)
				if d.Match == ipe.MatchNoPolicy {
					j.DecidedBy = reason
				}
				if d.Action == ipe.ActionDeny {
					j.Allow = ipe.AllowRules(fp, op)
				}
				out = append(out, j)
			}
			if e.json {
				if out == nil {
					out = []evalJSON{}
				}
				if err := e.printJSON(out); err != nil {
					return err
				}
			} else {
				for _, j := range out {
					fmt.Fprintf(e.stdout, "%s: %s %s by %s\n", j.Path, j.Decision, op, j.DecidedBy)
					if j.Props.RealPath != j.Props.Path {
						fmt.Fprintf(e.stdout, "  real file: %s (%s)\n", j.Props.RealPath, j.Props.RealFSType)
					}
					fmt.Fprintf(e.stdout, "  properties: %s\n", strings.Join(j.Properties, " "))
					for _, u := range j.Props.Unknown {
						fmt.Fprintf(e.stdout, "  unknown: %s\n", u)
					}
					for _, a := range j.Allow {
						fmt.Fprintf(e.stdout, "  to allow: %s\n", a)
					}
				}
			}
			if failed > 0 {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	c.Flags().StringVar(&policyFile, "policy", "", "policy to evaluate (text or signed; default: the active policy)")
	c.Flags().StringVar(&opName, "op", "EXECUTE", "operation to evaluate")
	securityFSFlag(c, &root)
	return c
}

// newInspector wires the property sources available in this build.
func newInspector(e *env) *ipe.Inspector {
	return &ipe.Inspector{Logger: e.log, DMTable: dm.TableText, FSVerity: fsverityDigest}
}

// readKmsg reads the kernel log's current records from /dev/kmsg.
func readKmsg(ctx context.Context) ([]*ipe.AuditRecord, error) {
	recs, err := ipe.ReadKmsg(ctx, "/dev/kmsg")
	if err != nil {
		if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
			return nil, fmt.Errorf("read /dev/kmsg: %w (run as root, or pass dmesg/audit.log output as FILE)", err)
		}
		return nil, err
	}
	return recs, nil
}

// fsverityDigest measures a file's fs-verity digest (FS_IOC_MEASURE_VERITY)
// and whether it carries a builtin signature.
func fsverityDigest(ctx context.Context, path string) (*ipe.FSVerityState, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d, err := fsverity.Measure(f)
	if errors.Is(err, fsverity.ErrNotVerity) || errors.Is(err, fsverity.ErrNotSupported) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	st := &ipe.FSVerityState{Digest: ipe.Digest{Alg: d.Algorithm.String(), Value: d.Sum}}
	sig, err := fsverity.ReadMetadata(f, fsverity.SignatureMetadata, 1<<16)
	if err == nil {
		st.Signed, st.SignatureKnown = len(sig) > 0, true
	}
	return st, nil
}
