package ipe

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
)

// Limits the kernel applies outside the parser (Linux 6.12).
const (
	// MaxBlobSize is the largest blob a single write to new_policy or
	// update can carry: memdup_user_nul(len) allocates len+1 bytes with
	// kmalloc, whose limit is KMALLOC_MAX_SIZE = 1<<(MAX_PAGE_ORDER(10) +
	// PAGE_SHIFT(12)) = 4 MiB on x86-64; a larger write fails with ENOMEM.
	MaxBlobSize = 4<<20 - 1
	// MaxPKCS7Size is the largest PKCS#7 message the kernel parses:
	// asn1_ber_decoder (lib/asn1_decoder.c) refuses more than 65535 bytes
	// with EMSGSIZE. It bounds a signed IPE policy (text, signature and
	// certificates together) far below MaxBlobSize; measured in the VM.
	MaxPKCS7Size = 65535
	// MaxNameLen is NAME_MAX: policies/<name> is a securityfs directory and
	// simple_lookup refuses longer names with ENAMETOOLONG.
	MaxNameLen = 255
)

// Finding is one lint warning about a policy the kernel accepts.
type Finding struct {
	Code    string `json:"code"`
	Line    int    `json:"line,omitempty"`
	Col     int    `json:"column,omitempty"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
	// Danger marks findings that let untrusted code run: the policy is
	// accepted but does not protect what it seems to.
	Danger bool `json:"danger,omitempty"`
}

func (f Finding) String() string {
	s := f.Message
	if f.Line > 0 {
		s = fmt.Sprintf("line %d: %s", f.Line, s)
	}
	if f.Hint != "" {
		s += " (" + f.Hint + ")"
	}
	return s + " [" + f.Code + "]"
}

// LintOptions adds context the kernel has and a text file does not.
type LintOptions struct {
	// Loaded names policies already loaded in the target kernel: loading
	// another policy of the same name fails with EEXIST.
	Loaded []string
	// BlobSize is the size of the blob that will be written (the PKCS#7
	// message); 0 means unknown.
	BlobSize int
}

// KernelError is a refusal the kernel makes outside the policy parser.
type KernelError struct {
	Errno syscall.Errno
	Stage string // "pkcs7", "securityfs" or "write"
	Msg   string
	Hint  string
}

func (e *KernelError) Error() string {
	s := fmt.Sprintf("%s (kernel: %s from %s)", e.Msg, ErrnoName(e.Errno), e.Stage)
	if e.Hint != "" {
		s += "; hint: " + e.Hint
	}
	return s
}

// Unwrap lets errors.Is match ErrInvalidPolicy and the errno.
func (e *KernelError) Unwrap() []error { return []error{ErrInvalidPolicy, e.Errno} }

// LintResult is the verdict on one policy.
type LintResult struct {
	// Policy is the parsed policy (nil if the parser refused it).
	Policy *Policy
	// Err is nil when the kernel would accept the policy; otherwise a
	// *ParseError (the parser refused it) or a *KernelError (a check
	// outside the parser did).
	Err error
	// Warnings are findings about an accepted policy (or about the text
	// up to the error).
	Warnings []Finding
}

// Valid reports whether the kernel would accept the policy.
func (r *LintResult) Valid() bool { return r.Err == nil }

// Errno returns the errno the kernel's write would return (0 if valid).
func (r *LintResult) Errno() syscall.Errno {
	var pe *ParseError
	if errors.As(r.Err, &pe) {
		return pe.Errno
	}
	var ke *KernelError
	if errors.As(r.Err, &ke) {
		return ke.Errno
	}
	if r.Err != nil {
		var en syscall.Errno
		if errors.As(r.Err, &en) {
			return en
		}
		return syscall.EINVAL
	}
	return 0
}

// Line returns the line of the error (0 if none).
func (r *LintResult) Line() int {
	var pe *ParseError
	if errors.As(r.Err, &pe) {
		return pe.Line
	}
	return 0
}

// Lint parses text like the kernel, applies the checks the kernel makes
// after parsing (the securityfs directory for the name, collisions with
// loaded policies, the write size), and warns about accepted but dangerous
// or ineffective policies.
func Lint(text []byte, opts LintOptions) *LintResult {
	res := &LintResult{}
	p, err := Parse(text)
	if err != nil {
		res.Err = err
		return res
	}
	res.Policy = p
	if err := sizeError(opts.BlobSize, len(text)); err != nil {
		res.Err = err
	} else if err := checkName(p.Name, opts.Loaded); err != nil {
		res.Err = err
	}
	if res.Err == nil && opts.BlobSize == 0 && len(text) > MaxPKCS7Size-signatureReserve {
		res.Warnings = append(res.Warnings, Finding{Code: "size",
			Message: fmt.Sprintf("the policy text is %d bytes: signed, it will likely exceed the kernel's %d-byte PKCS#7 limit (EMSGSIZE)", len(text), MaxPKCS7Size),
			Hint:    "sign it and lint the .p7s to know for sure; shorten the policy"})
	}
	ignored := lintIgnores(text)
	for _, f := range Warnings(p) {
		if !ignored[f.Code] {
			res.Warnings = append(res.Warnings, f)
		}
	}
	return res
}

// lintIgnorePrefix starts a comment that silences lint codes file-wide:
// "# intact-lint: ignore=anon-exec-denied,boot-verified".
const lintIgnorePrefix = "intact-lint: ignore="

func lintIgnores(text []byte) map[string]bool {
	out := map[string]bool{}
	for _, l := range splitLines(string(text)) {
		i := strings.IndexByte(l.text, '#')
		if i < 0 {
			continue
		}
		c := strings.TrimSpace(strings.TrimLeft(l.text[i:], "#"))
		if v, ok := strings.CutPrefix(c, lintIgnorePrefix); ok {
			for _, code := range strings.Split(v, ",") {
				out[strings.TrimSpace(code)] = true
			}
		}
	}
	return out
}

// signatureReserve is a typical size of the signature and one embedded
// RSA-2048 certificate around a policy text.
const signatureReserve = 2048

// sizeError models the size limits of the new_policy write: memdup_user_nul
// (ENOMEM above MaxBlobSize), then asn1_ber_decoder (EMSGSIZE above
// MaxPKCS7Size). blobSize 0 means unknown; the text alone then decides
// when it is already too long to fit.
func sizeError(blobSize, textLen int) error {
	switch {
	case blobSize > MaxBlobSize:
		return &KernelError{Errno: syscall.ENOMEM, Stage: "write",
			Msg:  fmt.Sprintf("the signed policy is %d bytes; one write() to securityfs holds at most %d", blobSize, MaxBlobSize),
			Hint: "shorten the policy: the kernel parses at most 65535 bytes of PKCS#7 anyway"}
	case blobSize > MaxPKCS7Size:
		return &KernelError{Errno: syscall.EMSGSIZE, Stage: "pkcs7",
			Msg:  fmt.Sprintf("the signed policy is %d bytes; the kernel's ASN.1 decoder takes at most %d", blobSize, MaxPKCS7Size),
			Hint: "shorten the policy (fewer digests: prefer dmverity_signature=TRUE over long root-hash lists) or split it"}
	case blobSize == 0 && textLen > MaxPKCS7Size:
		return &KernelError{Errno: syscall.EMSGSIZE, Stage: "pkcs7",
			Msg:  fmt.Sprintf("the policy text is %d bytes; signed, it exceeds the %d bytes the kernel's ASN.1 decoder takes", textLen, MaxPKCS7Size),
			Hint: "shorten the policy (fewer digests: prefer dmverity_signature=TRUE over long root-hash lists) or split it"}
	}
	return nil
}

// checkName models ipe_new_policyfs_node -> securityfs_create_dir ->
// lookup_one_len and simple_lookup.
func checkName(name string, loaded []string) error {
	switch {
	case name == "." || name == "..":
		return &KernelError{Errno: syscall.EACCES, Stage: "securityfs",
			Msg:  fmt.Sprintf("policy name %q cannot be a directory name in securityfs", name),
			Hint: "choose another policy_name"}
	case strings.ContainsRune(name, '/'):
		return &KernelError{Errno: syscall.EACCES, Stage: "securityfs",
			Msg:  fmt.Sprintf("policy name %q contains '/' and cannot name the policies/<name> directory", name),
			Hint: "use letters, digits, '-', '_' and '.'"}
	case len(name) > MaxNameLen:
		return &KernelError{Errno: syscall.ENAMETOOLONG, Stage: "securityfs",
			Msg:  fmt.Sprintf("policy name is %d bytes; a securityfs name holds at most %d", len(name), MaxNameLen),
			Hint: "shorten policy_name"}
	case slices.Contains(loaded, name):
		return &KernelError{Errno: syscall.EEXIST, Stage: "securityfs",
			Msg:  fmt.Sprintf("a policy named %q is already loaded", name),
			Hint: "use `intact policy update` to replace it with a newer version"}
	}
	return nil
}

// digestSizes are the digest sizes of the kernel crypto API's hash names
// (the names dm-verity tables and fs-verity use).
var digestSizes = map[string]int{
	"md4": 16, "md5": 16, "sha1": 20, "rmd160": 20, "sha224": 28, "sha256": 32, "sha384": 48, "sha512": 64,
	"sha3-224": 28, "sha3-256": 32, "sha3-384": 48, "sha3-512": 64, "sm3": 32, "streebog256": 32,
	"streebog512": 64, "blake2b-160": 20, "blake2b-256": 32, "blake2b-384": 48, "blake2b-512": 64,
	"wp256": 32, "wp384": 48, "wp512": 64, "xxhash64": 8, "crc32c": 4, "crc32": 4,
}

// fsverityAlgs are the algorithms fs-verity reports (hash_algo_name).
var fsverityAlgs = map[string]bool{"sha256": true, "sha512": true}

// Warnings returns the lint findings for an accepted policy.
func Warnings(p *Policy) []Finding {
	var w []Finding
	add := func(f Finding) { w = append(w, f) }
	if p.Truncated {
		add(Finding{Code: "nul-byte", Line: p.TruncatedLine,
			Message: fmt.Sprintf("NUL byte at offset %d: the kernel ignores everything after it", p.TruncatedAt),
			Hint:    "remove the NUL byte"})
	}
	// Effective default for EXECUTE.
	if p.EffectiveDefault(OpExecute) == ActionAllow {
		line, what := p.GlobalDefaultLine, "DEFAULT action=ALLOW"
		if p.OpDefault[OpExecute] == ActionAllow {
			line, what = p.OpDefaultLine[OpExecute], "DEFAULT op=EXECUTE action=ALLOW"
		}
		add(Finding{Code: "exec-default-allow", Line: line,
			Message: what + ": any file that matches no rule may be executed, so the policy enforces nothing for EXECUTE",
			Hint:    "add DEFAULT op=EXECUTE action=DENY and ALLOW rules for trusted sources"})
	}
	// Anonymous executable memory.
	if d := p.Evaluate(Context{Op: OpExecute, Anonymous: true}); d.Action == ActionDeny && p.EffectiveDefault(OpExecute) == ActionDeny {
		line := p.OpDefaultLine[OpExecute]
		if line == 0 {
			line = p.GlobalDefaultLine
		}
		if d.Match == MatchRule {
			line = d.Rule.Line
		}
		add(Finding{Code: "anon-exec-denied", Line: line,
			Message: "EXECUTE is denied for anonymous executable memory (mmap/mprotect PROT_EXEC without a file): JITs (Java, V8/Node, .NET, LuaJIT, PCRE JIT) fail",
			Hint: "IPE has no property that tells anonymous memory apart from an untrusted file; allowing it needs a rule like " +
				"op=EXECUTE boot_verified=FALSE dmverity_signature=FALSE fsverity_signature=FALSE action=ALLOW, which also allows every untrusted file: run JITs with a non-executable mode or accept the denial"})
	}
	// Rules that let untrusted code through: a file on no trusted storage
	// (boot_verified, dmverity_* and fsverity_* all false: what an attacker
	// writes to /tmp, /dev/shm or a container's writable layer) is allowed
	// by a rule. An unsigned dm-verity device or an unsigned fs-verity file
	// with an unpinned digest, which anyone with root can make, satisfies
	// the same properties.
	for op := Op(0); op < NumOps; op++ {
		d := p.Evaluate(Context{Op: op})
		if d.Action != ActionAllow || d.Match != MatchRule {
			continue
		}
		msg := fmt.Sprintf("rule allows %s of any file on untrusted storage: whatever an attacker can write (/tmp, /dev/shm, a container's writable layer) passes, so the policy does not enforce code integrity for %s", op, op)
		if op == OpExecute && p.Evaluate(Context{Op: op, Anonymous: true}).Rule == d.Rule {
			msg += "; it is also what allows anonymous executable memory (JITs): IPE has no property that tells the two apart"
		}
		add(Finding{Code: "allows-untrusted", Line: d.Rule.Line, Danger: true, Message: msg,
			Hint: "allow trusted sources only (dmverity_signature=TRUE, dmverity_roothash=..., fsverity_digest=..., boot_verified=TRUE before switch_root); for JITs prefer a non-executable mode to this rule"})
	}
	for op := Op(0); op < NumOps; op++ {
		if op == OpExecute || p.EffectiveDefault(op) != ActionDeny {
			continue
		}
		allows := false
		for _, r := range p.Rules {
			if r.Op == op && r.Action == ActionAllow {
				allows = true
			}
		}
		if !allows && (op == OpKModule || op == OpFirmware) {
			line := p.OpDefaultLine[op]
			if line == 0 {
				line = p.GlobalDefaultLine
			}
			add(Finding{Code: "op-denied", Line: line,
				Message: fmt.Sprintf("every %s is denied: no rule allows it and its DEFAULT is DENY", op),
				Hint:    fmt.Sprintf("add op=%s boot_verified=TRUE action=ALLOW (or dmverity_roothash/dmverity_signature for the root) if modules or firmware load after activation", op)})
		}
	}
	for i, r := range p.Rules {
		w = append(w, ruleFindings(p, i, r)...)
	}
	return w
}

func ruleFindings(p *Policy, i int, r Rule) []Finding {
	var w []Finding
	add := func(code, msg, hint string) {
		w = append(w, Finding{Code: code, Line: r.Line, Message: msg, Hint: hint})
	}
	seen := map[string]bool{}
	for _, pr := range r.Props {
		if seen[pr.String()] {
			add("duplicate-property", fmt.Sprintf("property %s appears twice in one rule", pr.Kind.Key()), "remove the duplicate")
		}
		seen[pr.String()] = true
		if pr.Kind == PropBootVerifiedTrue && r.Action == ActionAllow {
			add("boot-verified", "boot_verified=TRUE allows every file on the initramfs rootfs, including files written to it after boot; after switch_root the rootfs stays mounted underneath and reachable",
				"keep boot_verified rules only in the policy active before switch_root, and activate one without them after it")
		}
		if pr.Kind.HasDigest() {
			w = append(w, digestFindings(r, pr)...)
		}
	}
	if why := unsatisfiable(r.Props); why != "" {
		add("never-matches", "rule can never match: "+why, "remove the rule or fix its properties")
	}
	for j := 0; j < i; j++ {
		e := p.Rules[j]
		if e.Op != r.Op || unsatisfiable(e.Props) != "" {
			continue
		}
		if propsSubset(e.Props, r.Props) {
			msg := fmt.Sprintf("rule is shadowed by line %d, which matches every file this rule matches (first match wins)", e.Line)
			if e.Action == r.Action {
				msg = fmt.Sprintf("rule is redundant: line %d already matches every file it matches, with the same action", e.Line)
			}
			add("shadowed", msg, "remove it, or move it before line "+fmt.Sprint(e.Line))
			break
		}
	}
	return w
}

func digestFindings(r Rule, pr Property) []Finding {
	var w []Finding
	add := func(code, msg, hint string) {
		w = append(w, Finding{Code: code, Line: r.Line, Message: msg, Hint: hint})
	}
	key, alg, n := pr.Kind.Key(), pr.Digest.Alg, len(pr.Digest.Value)
	want, known := digestSizes[alg]
	switch {
	case alg == "":
		add("unknown-algorithm", key+" has an empty algorithm name: it never matches", "write "+key+"=sha256:HEX")
	case !known && digestSizes[strings.ToLower(alg)] != 0:
		add("unknown-algorithm", fmt.Sprintf("%s algorithm %q never matches: the kernel compares names case-sensitively", key, alg),
			"write "+strings.ToLower(alg))
	case !known:
		add("unknown-algorithm", fmt.Sprintf("%s algorithm %q is not a kernel hash name: it never matches", key, alg),
			"use the crypto API name, e.g. sha256")
	case pr.Kind == PropFSVerityDigest && !fsverityAlgs[alg]:
		add("unknown-algorithm", fmt.Sprintf("fs-verity supports only sha256 and sha512; fsverity_digest=%s:... never matches", alg), "use sha256 or sha512")
	case n != want:
		add("digest-length", fmt.Sprintf("%s is %d bytes but %s digests are %d bytes: it never matches", key, n, alg, want),
			fmt.Sprintf("a %s digest is %d hex digits", alg, 2*want))
	}
	if n == 0 && alg != "" {
		add("digest-length", key+" has an empty digest: it never matches", "")
	}
	return w
}

// unsatisfiable explains why no file can satisfy all of props ("" if some
// file can).
func unsatisfiable(props []Property) string {
	has := map[PropKind]bool{}
	var rh, fd []Digest
	for _, p := range props {
		has[p.Kind] = true
		switch p.Kind {
		case PropDMVerityRootHash:
			rh = append(rh, p.Digest)
		case PropFSVerityDigest:
			fd = append(fd, p.Digest)
		}
	}
	switch {
	case has[PropBootVerifiedTrue] && has[PropBootVerifiedFalse]:
		return "boot_verified=TRUE and boot_verified=FALSE"
	case has[PropDMVeritySignatureTrue] && has[PropDMVeritySignatureFalse]:
		return "dmverity_signature=TRUE and dmverity_signature=FALSE"
	case has[PropFSVeritySignatureTrue] && has[PropFSVeritySignatureFalse]:
		return "fsverity_signature=TRUE and fsverity_signature=FALSE"
	case distinct(rh):
		return "two different dmverity_roothash values"
	case distinct(fd):
		return "two different fsverity_digest values"
	case has[PropBootVerifiedTrue] && (has[PropDMVerityRootHash] || has[PropDMVeritySignatureTrue]):
		return "boot_verified=TRUE files live on the initramfs rootfs, which has no block device and so no dm-verity"
	case has[PropBootVerifiedTrue] && (has[PropFSVerityDigest] || has[PropFSVeritySignatureTrue]):
		return "boot_verified=TRUE files live on the initramfs rootfs (ramfs/tmpfs), which has no fs-verity"
	}
	return ""
}

func distinct(ds []Digest) bool {
	for i := 1; i < len(ds); i++ {
		if !ds[i].Equal(ds[0]) {
			return true
		}
	}
	return false
}

// propsSubset reports whether every property of a is also in b: a rule with
// properties a then matches whatever a rule with properties b matches.
func propsSubset(a, b []Property) bool {
	for _, x := range a {
		if !slices.ContainsFunc(b, x.Equal) {
			return false
		}
	}
	return true
}
