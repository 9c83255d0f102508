package kmod

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/pkcs7"
)

// VerifyOptions describes the kernel whose answer Verify predicts.
type VerifyOptions struct {
	// Trusted are the certificates whose keys the kernel uses for module
	// signatures: .builtin_trusted_keys, .secondary_trusted_keys (and
	// .machine, linked into it) and, on kernels that carry the
	// distributions' platform-keyring patch (Debian, Fedora, SUSE), the
	// UEFI db keys in .platform.
	Trusted []*x509.Certificate
	// RevokedTBS are SHA-256 hashes of certificates' TBSCertificate that
	// the kernel's .blacklist keyring holds ("tbs:" entries, loaded from
	// dbx and MokListXRT entries of type EFI_CERT_X509_SHA256). A
	// certificate so listed is never loaded into a keyring, and a
	// signature whose signer or embedded chain contains one is rejected.
	RevokedTBS [][32]byte
	// NotEnforcing predicts a kernel that neither enforces module
	// signatures (module.sig_enforce) nor is locked down: unsigned modules
	// and unknown keys then load (tainting the kernel). The zero value is
	// the Secure Boot kernel, which enforces.
	NotEnforcing bool
}

// TBSHash is what a dbx EFI_CERT_X509_SHA256 entry holds for cert.
func TBSHash(cert *x509.Certificate) [32]byte { return sha256.Sum256(cert.RawTBSCertificate) }

// Verdict is the kernel's predicted answer to loading a module.
type Verdict struct {
	// Loads is true if the kernel would accept the signature.
	Loads bool `json:"loads"`
	// Errno is what finit_module would return (0 when it loads).
	Errno linux.Errno `json:"-"`
	// ErrnoName is Errno's name ("EKEYREJECTED"); empty when it loads.
	ErrnoName string `json:"errno,omitempty"`
	// Reason is the kernel's own wording where it has one ("unsigned
	// module", "module with unavailable key"), else a short cause.
	Reason string `json:"reason,omitempty"`
	// KernelLog is the line the kernel logs, where it logs one.
	KernelLog string `json:"kernel_log,omitempty"`
	// Detail explains the verdict.
	Detail string `json:"detail"`
	// Signer is the certificate the signature was verified with (nil if
	// none was found); Chain the certificates from it to the trusted key.
	Signer *x509.Certificate   `json:"-"`
	Chain  []*x509.Certificate `json:"-"`
}

// Verify predicts whether Linux would accept the signature of an
// uncompressed module, following kernel/module/signing.c (mod_verify_sig,
// module_sig_check), certs/system_keyring.c (verify_pkcs7_signature, with
// the platform-keyring retry of Debian's kernel folded into Trusted) and
// crypto/asymmetric_keys/pkcs7_verify.c. It returns an error only for
// input that is not a module at all.
func Verify(module []byte, opts VerifyOptions) (*Verdict, error) {
	m, err := Parse(module)
	if err != nil {
		if errors.Is(err, ErrMalformed) {
			return reject(linux.EBADMSG, "malformed signature trailer", "", err.Error()), nil
		}
		return nil, err
	}
	if m.Signature == nil {
		return unavailable(opts, "unsigned module", "the module carries no signature"), nil
	}
	if err := m.Signature.checkTrailer(); err != nil {
		return reject(linux.EBADMSG, "not a PKCS#7 module signature", "", err.Error()), nil
	}
	sd, err := pkcs7.Parse(m.Signature.PKCS7)
	if err != nil {
		return reject(linux.EBADMSG, "unparsable PKCS#7 message", "", err.Error()), nil
	}
	if !sd.Detached() {
		return reject(linux.EBADMSG, "PKCS#7 signature with non-detached data", "", "module signatures must be detached"), nil
	}
	revoked := map[[32]byte]bool{}
	for _, h := range opts.RevokedTBS {
		revoked[h] = true
	}
	// A trusted certificate that is itself revoked never made it into a
	// keyring (x509_key_preparse refuses blacklisted certificates).
	pool := x509.NewCertPool()
	var trusted []*x509.Certificate
	for _, c := range opts.Trusted {
		if !revoked[TBSHash(c)] {
			pool.AddCert(c)
			trusted = append(trusted, c)
		}
	}
	for _, s := range sd.Signers {
		if s.SignedAttributes != nil {
			return reject(linux.EKEYREJECTED, "module signature with authenticated attributes", "Invalid module sig (has authattrs)",
				"the kernel refuses module signatures with signed attributes (sign with -noattr)"), nil
		}
	}
	// Embedded certificates on a revoked list mark every signature that
	// chains through them (pkcs7_verify_sig_chain): EKEYREJECTED even
	// before trust is looked at.
	for _, c := range sd.Certificates {
		if revoked[TBSHash(c)] && signsThrough(sd, c) {
			return reject(linux.EKEYREJECTED, "blacklisted certificate", fmt.Sprintf("Cert %X is blacklisted", TBSHashSlice(c)),
				fmt.Sprintf("certificate %q is on the kernel's blacklist (a dbx/MokListX TBS hash)", c.Subject.String())), nil
		}
	}
	v, err := sd.Verify(pkcs7.VerifyOptions{Roots: pool, Certificates: trusted, Content: m.Content})
	switch {
	case err == nil:
	case errors.Is(err, pkcs7.ErrBadSignature):
		return reject(linux.EKEYREJECTED, "signature does not verify", "", err.Error()), nil
	case errors.Is(err, pkcs7.ErrUnsupported):
		return unavailable(opts, "module with unsupported crypto", err.Error()), nil
	case errors.Is(err, pkcs7.ErrSignerNotFound), errors.Is(err, pkcs7.ErrUntrusted), errors.Is(err, pkcs7.ErrKernelIncompatible):
		detail := err.Error()
		if len(sd.Certificates) == 0 {
			detail = "signer not found: the signature embeds no certificate, so the kernel needs the signer's own key in a keyring (" + err.Error() + ")"
		}
		return unavailable(opts, "module with unavailable key", detail), nil
	case errors.Is(err, pkcs7.ErrMalformed), errors.Is(err, pkcs7.ErrTooLarge), errors.Is(err, pkcs7.ErrNoSigners):
		return reject(linux.EBADMSG, "malformed PKCS#7 message", "", err.Error()), nil
	default:
		return reject(linux.EKEYREJECTED, "signature refused", "", err.Error()), nil
	}
	chain := v.Chains[0]
	detail := "signed by " + v.Signer.Subject.String()
	if len(chain) > 1 {
		detail += ", chained through the embedded certificates to trusted " + chain[len(chain)-1].Subject.String()
	} else {
		detail += ", a trusted key itself"
	}
	return &Verdict{Loads: true, Detail: detail, Signer: v.Signer, Chain: chain}, nil
}

// TBSHashSlice is TBSHash as a slice (for printing).
func TBSHashSlice(c *x509.Certificate) []byte { h := TBSHash(c); return h[:] }

// signsThrough reports whether some signer's chain through the message's
// certificates contains c (by issuer/serial lookup as the kernel walks it).
func signsThrough(sd *pkcs7.SignedData, c *x509.Certificate) bool {
	for i := range sd.Signers {
		s := &sd.Signers[i]
		var cur *x509.Certificate
		for _, x := range sd.Certificates {
			if s.Version == 1 && s.SerialNumber != nil && x.SerialNumber.Cmp(s.SerialNumber) == 0 && string(x.RawIssuer) == string(s.Issuer) {
				cur = x
			}
		}
		for seen := 0; cur != nil && seen < len(sd.Certificates); seen++ {
			if cur.Equal(c) {
				return true
			}
			var next *x509.Certificate
			for _, x := range sd.Certificates {
				if !x.Equal(cur) && string(x.RawSubject) == string(cur.RawIssuer) {
					next = x
				}
			}
			cur = next
		}
	}
	return false
}

func reject(errno linux.Errno, reason, log, detail string) *Verdict {
	return &Verdict{Errno: errno, ErrnoName: errnoName(errno), Reason: reason, KernelLog: log, Detail: detail}
}

// unavailable is module_sig_check's path for ENODATA, ENOPKG and ENOKEY:
// rejected with EKEYREJECTED and a notice when signatures are enforced,
// allowed (tainting) otherwise.
func unavailable(opts VerifyOptions, reason, detail string) *Verdict {
	if opts.NotEnforcing {
		return &Verdict{Loads: true, Reason: reason, Detail: detail + " (allowed: signatures not enforced; the kernel is tainted)"}
	}
	return reject(linux.EKEYREJECTED, reason, "Loading of "+reason+" is rejected", detail)
}

func errnoName(e linux.Errno) string {
	switch e {
	case 0:
		return ""
	case linux.EKEYREJECTED:
		return "EKEYREJECTED"
	case linux.EBADMSG:
		return "EBADMSG"
	case linux.ENOKEY:
		return "ENOKEY"
	case linux.EACCES:
		return "EACCES"
	case linux.ENOEXEC:
		return "ENOEXEC"
	case linux.EPERM:
		return "EPERM"
	}
	return fmt.Sprintf("errno %d", int(e))
}
