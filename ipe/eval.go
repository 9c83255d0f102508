package ipe

import (
	"encoding/hex"
	"strings"
)

// Context is what the kernel knows about one access when it evaluates a
// policy (struct ipe_eval_ctx): the operation and the properties of the
// file, or no file at all for anonymous memory and kernel_load_data.
type Context struct {
	Op Op
	// Anonymous is true when there is no file (PROT_EXEC on anonymous
	// memory, or a kernel_load_data buffer). Every other field is then
	// ignored.
	Anonymous bool
	// BootVerified: the file's mount superblock is the initramfs rootfs.
	BootVerified bool
	// DMVerity is the root hash the kernel bound to the block device of the
	// file's real inode (d_real_inode); nil if the device is not dm-verity
	// or the filesystem has no block device.
	DMVerity *Digest
	// DMVeritySigned: that device's root hash signature was verified.
	DMVeritySigned bool
	// FSVerity is the file's fs-verity digest (nil if verity is not
	// enabled on the file); FSVeritySigned its builtin signature state.
	FSVerity       *Digest
	FSVeritySigned bool
}

// MatchKind says what decided an evaluation.
type MatchKind int

// Match kinds, as IPE's audit record distinguishes them.
const (
	MatchNoPolicy  MatchKind = iota // no active policy: everything is allowed
	MatchRule                       // a rule matched
	MatchOpDefault                  // DEFAULT op=X action=...
	MatchGlobal                     // DEFAULT action=...
)

// Decision is the outcome of evaluating a Context.
type Decision struct {
	Action Action
	Match  MatchKind
	Rule   *Rule // the matching rule for MatchRule
	Op     Op
}

// AuditRule returns the rule= value the kernel's 1420 record carries for
// this decision (digests in uppercase hex; the kernel also quotes the
// algorithm name, which this form leaves out).
func (d Decision) AuditRule() string {
	switch d.Match {
	case MatchRule:
		var b strings.Builder
		b.WriteString("op=" + d.Rule.Op.String() + " ")
		for _, p := range d.Rule.Props {
			if p.Kind.HasDigest() {
				b.WriteString(propTokens[p.Kind] + p.Digest.Alg + ":" + strings.ToUpper(hex.EncodeToString(p.Digest.Value)))
			} else {
				b.WriteString(propTokens[p.Kind])
			}
			b.WriteByte(' ')
		}
		b.WriteString("action=" + d.Rule.Action.String())
		return b.String()
	case MatchOpDefault:
		return "DEFAULT op=" + d.Op.String() + " action=" + d.Action.String()
	case MatchGlobal:
		return "DEFAULT action=" + d.Action.String()
	}
	return ""
}

// Evaluate decides ctx the way ipe_evaluate_event does: per operation,
// rules in order, properties ANDed (a rule without properties matches
// everything), first match wins, then the operation's DEFAULT, then the
// global DEFAULT. A nil policy allows everything.
func (p *Policy) Evaluate(ctx Context) Decision {
	if p == nil {
		return Decision{Action: ActionAllow, Match: MatchNoPolicy, Op: ctx.Op}
	}
	for i := range p.Rules {
		r := &p.Rules[i]
		if r.Op != ctx.Op {
			continue
		}
		if r.Matches(ctx) {
			return Decision{Action: r.Action, Match: MatchRule, Rule: r, Op: ctx.Op}
		}
	}
	if ctx.Op >= 0 && ctx.Op < NumOps && p.OpDefault[ctx.Op] != ActionUnset {
		return Decision{Action: p.OpDefault[ctx.Op], Match: MatchOpDefault, Op: ctx.Op}
	}
	return Decision{Action: p.GlobalDefault, Match: MatchGlobal, Op: ctx.Op}
}

// Matches reports whether every property of r holds for ctx.
func (r *Rule) Matches(ctx Context) bool {
	for _, pr := range r.Props {
		if !pr.Holds(ctx) {
			return false
		}
	}
	return true
}

// Holds evaluates one property as security/ipe/eval.c does (with every
// IPE_PROP_* Kconfig option enabled, as in Debian's kernel).
func (pr Property) Holds(ctx Context) bool {
	switch pr.Kind {
	case PropBootVerifiedTrue:
		return !ctx.Anonymous && ctx.BootVerified
	case PropBootVerifiedFalse:
		return ctx.Anonymous || !ctx.BootVerified
	case PropDMVerityRootHash:
		return !ctx.Anonymous && ctx.DMVerity != nil && pr.Digest.Equal(*ctx.DMVerity)
	case PropDMVeritySignatureTrue:
		return !ctx.Anonymous && ctx.DMVerity != nil && ctx.DMVeritySigned
	case PropDMVeritySignatureFalse:
		return ctx.Anonymous || ctx.DMVerity == nil || !ctx.DMVeritySigned
	case PropFSVerityDigest:
		return !ctx.Anonymous && ctx.FSVerity != nil && pr.Digest.Equal(*ctx.FSVerity)
	case PropFSVeritySignatureTrue:
		return !ctx.Anonymous && ctx.FSVerity != nil && ctx.FSVeritySigned
	case PropFSVeritySignatureFalse:
		return ctx.Anonymous || ctx.FSVerity == nil || !ctx.FSVeritySigned
	}
	return false
}
