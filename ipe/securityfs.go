package ipe

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
)

// DefaultSecurityFS is where securityfs is mounted.
const DefaultSecurityFS = "/sys/kernel/security"

// maxNodeRead caps reads of securityfs nodes (the largest is a policy's
// pkcs7, limited by MaxBlobSize).
const maxNodeRead = MaxBlobSize + 1

// SecurityFS is IPE's securityfs interface under Root/ipe. Root may point
// at any directory laid out like securityfs (tests use a temporary one).
type SecurityFS struct {
	// Root is the securityfs mount point; empty means DefaultSecurityFS.
	Root string
	// Logger receives debug messages; nil discards them.
	Logger *slog.Logger
	// Deprecated: use Logger (the name every intact package uses).
	Log *slog.Logger
}

func (s *SecurityFS) root() string {
	if s.Root == "" {
		return DefaultSecurityFS
	}
	return s.Root
}

func (s *SecurityFS) dir() string { return filepath.Join(s.root(), "ipe") }

func (s *SecurityFS) log() *slog.Logger {
	switch {
	case s.Logger != nil:
		return s.Logger
	case s.Log != nil:
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Available reports whether the IPE directory exists at the root.
func (s *SecurityFS) Available() error {
	st, err := os.Stat(s.dir())
	if err != nil || !st.IsDir() {
		return fmt.Errorf("%w: %s (is ipe in the kernel's lsm= list and securityfs mounted?)", ErrNoIPE, s.dir())
	}
	return nil
}

// PolicyInfo describes one loaded policy.
type PolicyInfo struct {
	Name    string  `json:"name"`
	Version Version `json:"-"`
	// VersionString is the version as securityfs prints it.
	VersionString string `json:"version"`
	Active        bool   `json:"active"`
	// Digest is sha256 of the policy's pkcs7 blob in the form IPE's audit
	// records use (sha256:UPPERCASE-HEX); for an unsigned boot policy it is
	// the digest of nothing, as the kernel audits it.
	Digest string `json:"policy_digest"`
	// Signed is false for the boot policy (reading pkcs7 gives ENOENT).
	Signed bool `json:"signed"`
}

// AuditDigest returns the policy digest as IPE's audit records print it.
func AuditDigest(pkcs7 []byte) string {
	sum := sha256.Sum256(pkcs7)
	return fmt.Sprintf("sha256:%X", sum[:])
}

// List returns every loaded policy, sorted by name.
func (s *SecurityFS) List(ctx context.Context) ([]PolicyInfo, error) {
	if err := s.Available(); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(filepath.Join(s.dir(), "policies"))
	if err != nil {
		return nil, fmt.Errorf("ipe: list policies: %w", err)
	}
	var out []PolicyInfo
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if !e.IsDir() {
			continue
		}
		pi, err := s.Info(e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, pi)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Info reads one policy's name, version, active flag and pkcs7 digest.
func (s *SecurityFS) Info(name string) (PolicyInfo, error) {
	d, err := s.policyDir(name)
	if err != nil {
		return PolicyInfo{}, err
	}
	pi := PolicyInfo{Name: name}
	if b, err := readNode(filepath.Join(d, "name")); err == nil && len(b) > 0 {
		pi.Name = string(b)
	}
	vb, err := readNode(filepath.Join(d, "version"))
	if err != nil {
		return PolicyInfo{}, fmt.Errorf("ipe: read version of %s: %w", name, err)
	}
	pi.VersionString = strings.TrimSpace(string(vb))
	if pi.Version, err = ParseVersion(pi.VersionString); err != nil {
		return PolicyInfo{}, fmt.Errorf("ipe: version of %s: %q: %w", name, pi.VersionString, err)
	}
	ab, err := readNode(filepath.Join(d, "active"))
	if err != nil {
		return PolicyInfo{}, fmt.Errorf("ipe: read active flag of %s: %w", name, err)
	}
	pi.Active = strings.TrimSpace(string(ab)) == "1"
	p7, err := readNode(filepath.Join(d, "pkcs7"))
	switch {
	case err == nil:
		pi.Signed = true
		pi.Digest = AuditDigest(p7)
	case errors.Is(err, fs.ErrNotExist):
		pi.Digest = AuditDigest(nil)
	default:
		return PolicyInfo{}, fmt.Errorf("ipe: read pkcs7 of %s: %w", name, err)
	}
	return pi, nil
}

// PolicyText returns the plain-text policy as loaded.
func (s *SecurityFS) PolicyText(name string) ([]byte, error) {
	d, err := s.policyDir(name)
	if err != nil {
		return nil, err
	}
	b, err := readNode(filepath.Join(d, "policy"))
	if err != nil {
		return nil, fmt.Errorf("ipe: read policy %s: %w", name, err)
	}
	return b, nil
}

// PKCS7 returns the signed blob of a loaded policy (ErrNotSigned for the
// boot policy).
func (s *SecurityFS) PKCS7(name string) ([]byte, error) {
	d, err := s.policyDir(name)
	if err != nil {
		return nil, err
	}
	b, err := readNode(filepath.Join(d, "pkcs7"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: policy %s has no pkcs7 (the boot policy)", ErrNotSigned, name)
	}
	if err != nil {
		return nil, fmt.Errorf("ipe: read pkcs7 of %s: %w", name, err)
	}
	return b, nil
}

// Active returns the active policy (ok false if none is active).
func (s *SecurityFS) Active(ctx context.Context) (PolicyInfo, bool, error) {
	l, err := s.List(ctx)
	if err != nil {
		return PolicyInfo{}, false, err
	}
	for _, p := range l {
		if p.Active {
			return p, true, nil
		}
	}
	return PolicyInfo{}, false, nil
}

// ActivePolicy returns the policy IPE enforces now. A nil policy with a nil
// error means IPE decides nothing, for the reason given: no policy is
// active, or IPE is not among the kernel's LSMs (securityfs's lsm file says
// so). Whatever cannot be read is an error, never "no policy": a caller
// must not conclude ALLOW from a securityfs it could not read (not
// mounted, not permitted, a policy without its text).
func (s *SecurityFS) ActivePolicy(ctx context.Context) (*Policy, string, error) {
	if err := s.Available(); err != nil {
		lsm, lerr := os.ReadFile(filepath.Join(s.root(), "lsm"))
		if lerr != nil {
			return nil, "", fmt.Errorf("%w; cannot tell whether IPE is active: %w", err, lerr)
		}
		list := strings.TrimSpace(string(lsm))
		if !slices.Contains(strings.Split(list, ","), "ipe") {
			return nil, "IPE is not among the kernel's LSMs (" + list + ")", nil
		}
		return nil, "", err
	}
	act, ok, err := s.Active(ctx)
	if err != nil {
		return nil, "", err
	}
	if !ok {
		return nil, "no IPE policy is active", nil
	}
	text, err := s.PolicyText(act.Name)
	if err != nil {
		return nil, "", err
	}
	p, err := Parse(text)
	if err != nil {
		return nil, "", fmt.Errorf("ipe: active policy %s: %w", act.Name, err)
	}
	return p, "", nil
}

func (s *SecurityFS) policyDir(name string) (string, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') {
		return "", fmt.Errorf("%w: %q is not a policy name", ErrNotFound, name)
	}
	if err := s.Available(); err != nil {
		return "", err
	}
	d := filepath.Join(s.dir(), "policies", name)
	if st, err := os.Stat(d); err != nil || !st.IsDir() {
		return "", fmt.Errorf("%w: %s (not in %s)", ErrNotFound, name, filepath.Join(s.dir(), "policies"))
	}
	return d, nil
}

// Load writes a signed policy blob to new_policy in one write(). Before
// writing it checks what it can (the blob holds a parseable policy, no
// policy of that name is loaded, the size) so that the common mistakes get
// a clear message instead of a bare errno.
func (s *SecurityFS) Load(ctx context.Context, blob []byte) (*Policy, error) {
	if err := s.Available(); err != nil {
		return nil, err
	}
	p, err := s.precheck(blob)
	if err != nil {
		return nil, err
	}
	if p != nil {
		if _, err := s.policyDir(p.Name); err == nil {
			return nil, &DeployError{Op: "load", Path: filepath.Join(s.dir(), "new_policy"), Errno: syscall.EEXIST,
				Msg: fmt.Sprintf("a policy named %q is already loaded; use update to replace it with a newer version", p.Name)}
		}
	}
	s.log().Debug("ipe: writing new_policy", "bytes", len(blob))
	if err := writeOnce(ctx, filepath.Join(s.dir(), "new_policy"), blob); err != nil {
		return nil, deployError("load", filepath.Join(s.dir(), "new_policy"), err)
	}
	return p, nil
}

// Update replaces the loaded policy of the same name by a newer version
// (policies/<name>/update). The version is checked against the loaded one
// first: the kernel refuses an equal or older version with ESTALE.
func (s *SecurityFS) Update(ctx context.Context, blob []byte) (*Policy, error) {
	p, err := s.precheck(blob)
	if err != nil {
		return nil, err
	}
	if p == nil {
		return nil, fmt.Errorf("%w: cannot find the policy name inside the blob to pick policies/<name>/update", ErrNotSigned)
	}
	cur, err := s.Info(p.Name)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(s.dir(), "policies", p.Name, "update")
	if !cur.Version.Less(p.Version) {
		return nil, &DeployError{Op: "update", Path: path, Errno: syscall.ESTALE, Sentinel: ErrStaleVersion,
			Msg: fmt.Sprintf("policy %q version %s is not newer than the loaded version %s (versions must increase strictly)", p.Name, p.Version, cur.Version)}
	}
	if err := writeOnce(ctx, path, blob); err != nil {
		return nil, deployError("update", path, err)
	}
	return p, nil
}

// Activate makes a loaded policy the active one. The kernel refuses
// (EINVAL) a version older than the active policy's.
func (s *SecurityFS) Activate(ctx context.Context, name string) error {
	pi, err := s.Info(name)
	if err != nil {
		return err
	}
	path := filepath.Join(s.dir(), "policies", name, "active")
	if act, ok, err := s.Active(ctx); err == nil && ok && act.Name != name && pi.Version.Less(act.Version) {
		return &DeployError{Op: "activate", Path: path, Errno: syscall.EINVAL, Sentinel: ErrStaleVersion,
			Msg: fmt.Sprintf("policy %q version %s is older than the active policy %q version %s", name, pi.Version, act.Name, act.Version)}
	}
	if err := writeOnce(ctx, path, []byte("1")); err != nil {
		return deployError("activate", path, err)
	}
	return nil
}

// Delete removes a loaded policy that is not active.
func (s *SecurityFS) Delete(ctx context.Context, name string) error {
	pi, err := s.Info(name)
	if err != nil {
		return err
	}
	path := filepath.Join(s.dir(), "policies", name, "delete")
	if pi.Active {
		return &DeployError{Op: "delete", Path: path, Errno: syscall.EPERM, Sentinel: ErrActive,
			Msg: fmt.Sprintf("policy %q is active; activate another policy first", name)}
	}
	if err := writeOnce(ctx, path, []byte("1")); err != nil {
		return deployError("delete", path, err)
	}
	return nil
}

// Enforce reports whether IPE enforces (enforce=1) or only audits.
func (s *SecurityFS) Enforce() (bool, error) {
	if err := s.Available(); err != nil {
		return false, err
	}
	b, err := readNode(filepath.Join(s.dir(), "enforce"))
	if err != nil {
		return false, fmt.Errorf("ipe: read enforce: %w", err)
	}
	return strings.TrimSpace(string(b)) == "1", nil
}

// SetEnforce switches enforcement on or off (audited as type 1404).
func (s *SecurityFS) SetEnforce(ctx context.Context, on bool) error {
	if err := s.Available(); err != nil {
		return err
	}
	v := "0"
	if on {
		v = "1"
	}
	path := filepath.Join(s.dir(), "enforce")
	if err := writeOnce(ctx, path, []byte(v)); err != nil {
		return deployError("enforce", path, err)
	}
	return nil
}

// precheck finds the policy in a blob (nil if the blob is not a PKCS#7 we
// can read: the kernel then decides) and lints it.
func (s *SecurityFS) precheck(blob []byte) (*Policy, error) {
	if err := sizeError(len(blob), 0); err != nil {
		var ke *KernelError
		errors.As(err, &ke)
		return nil, &DeployError{Op: "load", Errno: ke.Errno, Msg: ke.Msg}
	}
	text, err := ExtractPolicy(blob)
	if err != nil {
		if isPlainPolicy(blob) {
			return nil, &DeployError{Op: "load", Errno: syscall.EBADMSG, Sentinel: ErrNotSigned,
				Msg: "this is a plain-text policy; the kernel accepts only signed policies (sign it with `intact policy sign`)"}
		}
		return nil, &DeployError{Op: "load", Errno: syscall.EBADMSG, Sentinel: ErrNotSigned,
			Msg: "not a PKCS#7 signed policy: " + err.Error()}
	}
	p, err := Parse(text)
	if err != nil {
		return nil, fmt.Errorf("policy inside the signature: %w", err)
	}
	if err := checkName(p.Name, nil); err != nil {
		return nil, err
	}
	return p, nil
}

func isPlainPolicy(b []byte) bool {
	_, err := Parse(b)
	var pe *ParseError
	return err == nil || (errors.As(err, &pe) && strings.Contains(string(b), "policy_name="))
}

// DeployError is a securityfs write the kernel (or our pre-check) refused,
// with a message for the errno.
type DeployError struct {
	Op       string // load, update, activate, delete, enforce
	Path     string
	Errno    syscall.Errno
	Sentinel error // ErrStaleVersion, ErrActive, ... (may be nil)
	Msg      string
}

func (e *DeployError) Error() string {
	s := "ipe: " + e.Op
	if e.Path != "" {
		s += " (" + e.Path + ")"
	}
	return s + ": " + e.Msg + " [" + ErrnoName(e.Errno) + "]"
}

// Unwrap lets errors.Is match the errno and the package sentinel.
func (e *DeployError) Unwrap() []error {
	errs := []error{e.Errno}
	if e.Sentinel != nil {
		errs = append(errs, e.Sentinel)
	}
	return errs
}

// deployMessages explains each errno the IPE securityfs writes return
// (security/ipe/fs.c, policy_fs.c, policy.c and the PKCS#7 verifier).
var deployMessages = map[string]map[syscall.Errno]string{
	"*": {
		syscall.EPERM:        "permission denied: writing IPE's securityfs nodes needs CAP_MAC_ADMIN in the initial user namespace",
		syscall.EACCES:       "access denied (not root, or the policy name cannot be a securityfs directory name)",
		syscall.EBADMSG:      "the kernel could not parse the blob: not a DER PKCS#7 message, or the policy inside has a syntax error (run `intact policy lint` on it)",
		syscall.EINVAL:       "the kernel refused the blob: a bad version number or digest in the policy, or inconsistent signed attributes",
		syscall.ERANGE:       "a policy version number is larger than 65535",
		syscall.ENOKEY:       "the signing certificate does not chain to a key in the kernel's builtin, secondary or platform (UEFI db) keyring",
		syscall.EKEYREJECTED: "the signature does not verify (wrong key, modified policy, or the content type is not pkcs7-data)",
		syscall.ENOPKG:       "the signature uses an algorithm the kernel does not support (use rsaEncryption or ECDSA with SHA-256)",
		syscall.ENODATA:      "the PKCS#7 message has no policy inside (detached signature: sign with the policy attached)",
		syscall.EEXIST:       "a policy of that name is already loaded (use update)",
		syscall.ENAMETOOLONG: "the policy name is longer than 255 bytes",
		syscall.ENOMEM:       "the kernel could not allocate memory for the blob (more than 4 MiB?)",
		syscall.EMSGSIZE:     "the signed policy is larger than 65535 bytes, the most the kernel's ASN.1 decoder parses",
		syscall.ENOENT:       "the policy was deleted meanwhile",
		syscall.EKEYREVOKED:  "the signing key is on the kernel's revocation (blacklist) keyring",
	},
	"update": {
		syscall.ESTALE: "the new policy's version is not greater than the loaded one",
		syscall.EINVAL: "the new policy's name differs from the policy being updated, or it has a bad version or digest",
	},
	"activate": {
		syscall.EINVAL: "the policy's version is older than the active policy's",
	},
	"delete": {
		syscall.EPERM: "the active policy cannot be deleted; activate another policy first",
	},
}

func deployError(op, path string, err error) error {
	var en syscall.Errno
	if !errors.As(err, &en) {
		return fmt.Errorf("ipe: %s (%s): %w", op, path, err)
	}
	msg, ok := deployMessages[op][en]
	if !ok {
		msg, ok = deployMessages["*"][en]
	}
	if !ok {
		msg = en.Error()
	}
	de := &DeployError{Op: op, Path: path, Errno: en, Msg: msg}
	switch {
	case en == syscall.ESTALE || (op == "activate" && en == syscall.EINVAL):
		de.Sentinel = ErrStaleVersion
	case en == syscall.EEXIST:
		de.Sentinel = ErrExists
	case op == "delete" && en == syscall.EPERM:
		de.Sentinel = ErrActive
	case en == syscall.ENOENT:
		de.Sentinel = ErrNotFound
	}
	return de
}

// writeOnce writes data to a securityfs node with exactly one write():
// IPE parses each write as a whole blob. The IPE handlers return either the
// full length or an error, so os.File.Write never loops.
func writeOnce(ctx context.Context, path string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	n, werr := f.Write(data)
	cerr := f.Close()
	if werr != nil {
		var pe *os.PathError
		if errors.As(werr, &pe) {
			return pe.Err
		}
		return werr
	}
	if n != len(data) {
		return fmt.Errorf("short write: %d of %d bytes", n, len(data))
	}
	return cerr
}

func readNode(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxNodeRead))
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) && errors.Is(pe.Err, syscall.ENOENT) {
			return nil, fs.ErrNotExist
		}
		return nil, err
	}
	return b, nil
}
