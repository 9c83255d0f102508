package ipe

import (
	"fmt"
	"strings"
)

// Explanation tells a person why IPE decided an access the way it did and
// what rule would change the decision.
type Explanation struct {
	// Summary is one line: "DENY EXECUTE of /tmp/x (tmpfs ino 12) by sh[123] via BPRM_CHECK".
	Summary string `json:"summary"`
	// DecidedBy names the rule or DEFAULT that decided, with its policy
	// line when the policy is known.
	DecidedBy string `json:"decided_by"`
	// Why lists the reasons (properties of the file, rules that did not
	// match and why).
	Why []string `json:"why,omitempty"`
	// Allow lists rules that would allow the access, or says that none
	// can.
	Allow []string `json:"allow,omitempty"`
	// Permissive is true when enforcing=0: the access went ahead.
	Permissive bool `json:"permissive"`
}

// Explain explains one IPE_ACCESS record. pol (the policy that was active,
// may be nil) locates the deciding rule and lists rules that did not match;
// props (may be nil) are the file's current properties, from Inspect.
func Explain(a *Access, pol *Policy, props *FileProps) *Explanation {
	e := &Explanation{Permissive: !a.Enforcing}
	what := "anonymous memory (no file)"
	if a.Hook == "KERNEL_LOAD" {
		what = "a buffer from userspace (no file)"
	}
	if !a.Anonymous() {
		what = fmt.Sprintf("%s (%s ino %d)", a.Path, a.Dev, a.Ino)
	}
	e.Summary = fmt.Sprintf("%s %s of %s by %s[%d] via %s", a.Action, a.OpName, what, a.Comm, a.PID, a.Hook)
	if e.Permissive && a.Action == ActionDeny {
		e.Summary += " (permissive: enforce=0, the access went ahead)"
	}
	line := 0
	if pol != nil {
		switch a.Match {
		case MatchRule:
			for _, r := range pol.Rules {
				if a.Matched != nil && r.Equal(*a.Matched) {
					line = r.Line
					break
				}
			}
		case MatchOpDefault:
			if a.Op >= 0 && a.Op < NumOps {
				line = pol.OpDefaultLine[a.Op]
			}
		case MatchGlobal:
			line = pol.GlobalDefaultLine
		}
	}
	e.DecidedBy = describeMatch(a.Match, a.Rule, a.OpName, line)
	if a.Anonymous() {
		e.Why = append(e.Why, "there is no file: for anonymous memory boot_verified, dmverity_signature and fsverity_signature are FALSE and no digest matches")
		if a.Op == OpExecute {
			e.Why = append(e.Why, "this is a JIT or a program that maps memory executable (mmap/mprotect with PROT_EXEC)")
			e.Allow = append(e.Allow, "no rule allows anonymous executable memory without also allowing every untrusted file "+
				"(op=EXECUTE boot_verified=FALSE dmverity_signature=FALSE fsverity_signature=FALSE action=ALLOW); prefer disabling the JIT")
		}
		return e
	}
	if props != nil {
		e.Why = append(e.Why, "the file's properties now: "+strings.Join(props.Properties(), " "))
		if props.RealPath != props.Path {
			e.Why = append(e.Why, "overlayfs: IPE evaluates the real file "+props.RealPath+" ("+props.RealFSType+")")
		}
		for _, u := range props.Unknown {
			e.Why = append(e.Why, "unknown: "+u)
		}
		if pol != nil && a.Op >= 0 && a.Op < NumOps {
			ctx := props.Context(a.Op)
			for _, r := range pol.Rules {
				if r.Op != a.Op || r.Action != ActionAllow {
					continue
				}
				var failed []string
				for _, pr := range r.Props {
					if !pr.Holds(ctx) {
						failed = append(failed, pr.String())
					}
				}
				if len(failed) > 0 {
					e.Why = append(e.Why, fmt.Sprintf("line %d (%s) does not match: %s is not true of this file", r.Line, r.String(), strings.Join(failed, ", ")))
				}
			}
		}
		e.Allow = append(e.Allow, AllowRules(props, a.Op)...)
	} else {
		e.Why = append(e.Why, describeDev(a.Dev))
		e.Allow = append(e.Allow, "run `intact policy eval` on the file to see its properties and the rule that would allow it")
	}
	return e
}

func describeDev(dev string) string {
	switch {
	case dev == "rootfs":
		return "the file is on the initramfs rootfs: only boot_verified=TRUE matches it"
	case strings.HasPrefix(dev, "dm-"):
		return "the file is on device-mapper device " + dev + ": if it is dm-verity, dmverity_roothash or dmverity_signature can match it"
	case dev == "tmpfs" || dev == "ramfs" || dev == "devtmpfs":
		return "the file is on " + dev + ": no IPE property vouches for files there (anything root writes can land there)"
	case dev == "overlay":
		return "the file is on overlayfs: IPE evaluates the lower (or upper) file it resolves to"
	}
	return "the file is on " + dev
}

// AllowRules suggests rules that would allow op on a file with props, most
// specific first; if no property vouches for the file it says so.
func AllowRules(props *FileProps, op Op) []string {
	o := "op=" + op.String()
	var out []string
	if props.DMVerity != nil {
		out = append(out, o+" dmverity_roothash="+props.DMVerity.String()+" action=ALLOW")
		if props.DMVeritySigned {
			out = append(out, o+" dmverity_signature=TRUE action=ALLOW")
		}
	}
	if props.FSVerity != nil {
		out = append(out, o+" fsverity_digest="+props.FSVerity.String()+" action=ALLOW")
	}
	if props.BootVerified {
		out = append(out, o+" boot_verified=TRUE action=ALLOW (initramfs only)")
	}
	if len(out) == 0 {
		out = append(out, "no IPE rule can allow this file without allowing untrusted files: it is not on dm-verity, has no fs-verity digest and is not from the initramfs; ship it in a signed dm-verity image (intact layer convert / intact image sign)")
	}
	return out
}

// DecidedBy names what decided d under pol, in the words Explain uses for
// audit records ("rule on line 4: op=...", "DEFAULT op=EXECUTE action=DENY
// (line 3): no EXECUTE rule matched", "no active policy"), and the policy
// line (0 if none).
func (d Decision) DecidedBy(pol *Policy) (string, int) {
	line := 0
	switch {
	case d.Match == MatchRule && d.Rule != nil:
		line = d.Rule.Line
	case d.Match == MatchOpDefault && pol != nil && d.Op >= 0 && d.Op < NumOps:
		line = pol.OpDefaultLine[d.Op]
	case d.Match == MatchGlobal && pol != nil:
		line = pol.GlobalDefaultLine
	}
	text := d.AuditRule()
	if d.Match == MatchRule && d.Rule != nil {
		text = d.Rule.String()
	}
	return describeMatch(d.Match, text, d.Op.String(), line), line
}

// describeMatch words a decision: rule is the rule or DEFAULT as text,
// line its policy line (0 if unknown).
func describeMatch(m MatchKind, rule, op string, line int) string {
	at := ""
	if line > 0 {
		at = fmt.Sprintf(" (line %d)", line)
	}
	switch m {
	case MatchNoPolicy:
		return "no active policy"
	case MatchRule:
		if line > 0 {
			return fmt.Sprintf("rule on line %d: %s", line, rule)
		}
		return "rule " + rule
	case MatchOpDefault:
		return fmt.Sprintf("%s%s: no %s rule matched", rule, at, op)
	case MatchGlobal:
		return fmt.Sprintf("%s%s: no %s rule matched and the operation has no DEFAULT of its own", rule, at, op)
	}
	return ""
}
