package ipe

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strings"
)

// Op is an IPE operation, in the kernel's enum ipe_op_type order.
type Op int

// The operations of Linux 6.12 (security/ipe/policy.h).
const (
	OpExecute Op = iota
	OpFirmware
	OpKModule
	OpKexecImage
	OpKexecInitramfs
	OpPolicy
	OpX509Cert
	NumOps // number of operations; not an operation
)

// OpNone marks a global DEFAULT (no op= token).
const OpNone Op = -1

var opNames = [NumOps]string{"EXECUTE", "FIRMWARE", "KMODULE", "KEXEC_IMAGE", "KEXEC_INITRAMFS", "POLICY", "X509_CERT"}

// String returns the operation's policy name (EXECUTE, KMODULE, ...).
func (o Op) String() string {
	if o >= 0 && o < NumOps {
		return opNames[o]
	}
	if o == OpNone {
		return ""
	}
	return fmt.Sprintf("Op(%d)", int(o))
}

// ParseOp returns the operation named s (as written after "op=").
func ParseOp(s string) (Op, bool) {
	for i, n := range opNames {
		if n == s {
			return Op(i), true
		}
	}
	return OpNone, false
}

// Ops returns every operation in kernel order.
func Ops() []Op {
	ops := make([]Op, NumOps)
	for i := range ops {
		ops[i] = Op(i)
	}
	return ops
}

// Action is a rule's decision. The zero value means "not set".
type Action int

// Actions.
const (
	ActionUnset Action = iota
	ActionAllow
	ActionDeny
)

// String returns ALLOW, DENY or "" for ActionUnset.
func (a Action) String() string {
	switch a {
	case ActionAllow:
		return "ALLOW"
	case ActionDeny:
		return "DENY"
	}
	return ""
}

// ParseAction parses ALLOW or DENY.
func ParseAction(s string) (Action, bool) {
	switch s {
	case "ALLOW":
		return ActionAllow, true
	case "DENY":
		return ActionDeny, true
	}
	return ActionUnset, false
}

// PropKind is a property type, in the kernel's enum ipe_prop_type order.
type PropKind int

// Property kinds of Linux 6.12.
const (
	PropBootVerifiedFalse PropKind = iota
	PropBootVerifiedTrue
	PropDMVerityRootHash
	PropDMVeritySignatureFalse
	PropDMVeritySignatureTrue
	PropFSVerityDigest
	PropFSVeritySignatureFalse
	PropFSVeritySignatureTrue
	numPropKinds
)

var propTokens = [numPropKinds]string{
	"boot_verified=FALSE",
	"boot_verified=TRUE",
	"dmverity_roothash=",
	"dmverity_signature=FALSE",
	"dmverity_signature=TRUE",
	"fsverity_digest=",
	"fsverity_signature=FALSE",
	"fsverity_signature=TRUE",
}

// HasDigest reports whether the property carries a digest value.
func (k PropKind) HasDigest() bool { return k == PropDMVerityRootHash || k == PropFSVerityDigest }

// Key returns the property's name without value (boot_verified, ...).
func (k PropKind) Key() string {
	t := propTokens[k]
	return t[:strings.IndexByte(t, '=')]
}

// Digest is a digest property value: an algorithm name exactly as written
// (the kernel compares it with strcmp) and the raw digest bytes.
type Digest struct {
	Alg   string
	Value []byte
}

// String returns alg:lowercase-hex, the canonical policy form.
func (d Digest) String() string { return d.Alg + ":" + hex.EncodeToString(d.Value) }

// Equal reports whether two digests are the same for the kernel's
// ipe_digest_eval (same length, same algorithm string, same bytes).
func (d Digest) Equal(o Digest) bool { return d.Alg == o.Alg && bytes.Equal(d.Value, o.Value) }

// Property is one rule condition.
type Property struct {
	Kind   PropKind
	Digest Digest // for PropDMVerityRootHash and PropFSVerityDigest
}

// String returns the property in canonical policy form.
func (p Property) String() string {
	if p.Kind.HasDigest() {
		return propTokens[p.Kind] + p.Digest.String()
	}
	return propTokens[p.Kind]
}

// Equal reports whether two properties are the same condition.
func (p Property) Equal(o Property) bool {
	if p.Kind != o.Kind {
		return false
	}
	if p.Kind.HasDigest() {
		return p.Digest.Equal(o.Digest)
	}
	return true
}

// Version is a policy version; versions compare as the kernel's
// major<<32 | minor<<16 | rev.
type Version struct{ Major, Minor, Rev uint16 }

// U64 returns the kernel's ver_to_u64 value.
func (v Version) U64() uint64 { return uint64(v.Major)<<32 | uint64(v.Minor)<<16 | uint64(v.Rev) }

// Less reports whether v is older than o.
func (v Version) Less(o Version) bool { return v.U64() < o.U64() }

// String returns major.minor.rev as securityfs prints it (%hu.%hu.%hu).
func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Rev) }

// ParseVersion parses a version the way the kernel's parse_version does
// (three kstrtou16 fields separated by dots).
func ParseVersion(s string) (Version, error) {
	v, _, err := parseVersion(s)
	if err != nil {
		return Version{}, err
	}
	return v, nil
}

// Rule is one non-DEFAULT policy line.
type Rule struct {
	Op     Op
	Props  []Property
	Action Action
	Line   int // 1-based line in the source text; 0 if built in code
}

// String returns the rule in canonical form (also the form the kernel's
// audit record prints, minus digest case and quoting).
func (r Rule) String() string {
	var b strings.Builder
	b.WriteString("op=")
	b.WriteString(r.Op.String())
	for _, p := range r.Props {
		b.WriteByte(' ')
		b.WriteString(p.String())
	}
	b.WriteString(" action=")
	b.WriteString(r.Action.String())
	return b.String()
}

// Equal reports whether two rules have the same op, properties (in order)
// and action.
func (r Rule) Equal(o Rule) bool {
	if r.Op != o.Op || r.Action != o.Action || len(r.Props) != len(o.Props) {
		return false
	}
	for i := range r.Props {
		if !r.Props[i].Equal(o.Props[i]) {
			return false
		}
	}
	return true
}

// Policy is a parsed IPE policy.
type Policy struct {
	Name    string
	Version Version

	// GlobalDefault is the DEFAULT action=... decision (ActionUnset if
	// absent); OpDefault holds the DEFAULT op=X action=... decisions.
	GlobalDefault Action
	OpDefault     [NumOps]Action

	// Rules holds the rules in file order. The kernel keeps one list per
	// operation; the relative order of rules of different operations has
	// no meaning.
	Rules []Rule

	// Source positions (1-based lines, 0 if unknown) for diagnostics.
	HeaderLine        int
	GlobalDefaultLine int
	OpDefaultLine     [NumOps]int

	// Truncated is true when the text contained a NUL byte: the kernel
	// copies the policy with kmemdup_nul and parses it as a C string, so
	// everything from the first NUL on is ignored.
	Truncated     bool
	TruncatedAt   int // byte offset of the first NUL
	TruncatedLine int // line number at which the NUL occurs
}

// RulesFor returns the rules of one operation, in evaluation order.
func (p *Policy) RulesFor(op Op) []Rule {
	var out []Rule
	for _, r := range p.Rules {
		if r.Op == op {
			out = append(out, r)
		}
	}
	return out
}

// EffectiveDefault returns the action the kernel takes for op when no rule
// matches: the op's DEFAULT, else the global DEFAULT.
func (p *Policy) EffectiveDefault(op Op) Action {
	if op >= 0 && op < NumOps && p.OpDefault[op] != ActionUnset {
		return p.OpDefault[op]
	}
	return p.GlobalDefault
}

// SameRules reports whether two policies are equivalent for the kernel:
// same name, version, defaults and per-operation rule lists.
func (p *Policy) SameRules(o *Policy) bool {
	if p.Name != o.Name || p.Version != o.Version || p.GlobalDefault != o.GlobalDefault || p.OpDefault != o.OpDefault {
		return false
	}
	for op := Op(0); op < NumOps; op++ {
		a, b := p.RulesFor(op), o.RulesFor(op)
		if len(a) != len(b) {
			return false
		}
		for i := range a {
			if !a[i].Equal(b[i]) {
				return false
			}
		}
	}
	return true
}
