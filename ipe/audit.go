package ipe

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Audit record types IPE emits (include/uapi/linux/audit.h).
const (
	AuditMACStatus       = 1404 // enforce toggled (lsm=ipe)
	AuditIPEAccess       = 1420 // an evaluation (denials; allows with success_audit)
	AuditIPEConfigChange = 1421 // a policy was activated
	AuditIPEPolicyLoad   = 1422 // a policy was loaded or updated
)

var auditTypeNames = map[string]int{
	"MAC_STATUS": AuditMACStatus, "IPE_ACCESS": AuditIPEAccess,
	"IPE_CONFIG_CHANGE": AuditIPEConfigChange, "IPE_POLICY_LOAD": AuditIPEPolicyLoad,
}

// Limits on audit input.
const (
	// MaxAuditLine caps one record line; longer lines are skipped.
	MaxAuditLine = 64 << 10
	// MaxAuditFields caps the fields of one record.
	MaxAuditFields = 64
)

// AuditField is one key=value of a record, with the value decoded (quotes
// removed, hex-encoded untrusted strings decoded, "?" kept as is).
type AuditField struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// AuditRecord is one IPE audit record from /dev/kmsg, dmesg, the journal
// or audit.log.
type AuditRecord struct {
	Type   int          `json:"type"`
	Time   time.Time    `json:"time,omitzero"`
	Serial uint64       `json:"serial,omitempty"`
	Fields []AuditField `json:"fields"`
	Raw    string       `json:"-"`
}

// Get returns a field's decoded value.
func (r *AuditRecord) Get(key string) (string, bool) {
	for _, f := range r.Fields {
		if f.Key == key {
			return f.Value, true
		}
	}
	return "", false
}

var (
	reType  = regexp.MustCompile(`(?:^|[\s;:])type=([A-Z_]+\[\d+\]|[A-Z_]+|\d+)\s`)
	reStamp = regexp.MustCompile(`(?:msg=)?audit\((\d+)\.(\d+):(\d+)\):\s?`)
	reAlgQ  = regexp.MustCompile(`=("[^"]*"):`)
)

// ParseAuditLine parses one line holding an IPE record (types 1420, 1421,
// 1422, and 1404 with lsm=ipe) in any of the usual shapes:
//
//	/dev/kmsg:  5,123,4567,-;audit: type=1420 audit(1700000000.123:45): ipe_op=...
//	dmesg:      [   12.3] audit: type=1420 audit(1700000000.123:45): ipe_op=...
//	audit.log:  type=IPE_ACCESS msg=audit(1700000000.123:45): ipe_op=...
//
// It returns ErrAuditRecord for any other line.
func ParseAuditLine(line string) (*AuditRecord, error) {
	if len(line) > MaxAuditLine {
		return nil, fmt.Errorf("%w: line longer than %d bytes", ErrAuditRecord, MaxAuditLine)
	}
	// auditd's enriched format appends translated fields after a GS byte.
	if i := strings.IndexByte(line, 0x1d); i >= 0 {
		line = line[:i]
	}
	line = strings.TrimRight(line, "\r\n")
	m := reType.FindStringSubmatchIndex(line + " ")
	if m == nil {
		return nil, ErrAuditRecord
	}
	ts := line[m[2]:m[3]]
	typ, err := strconv.Atoi(ts)
	if err != nil {
		if n, ok := auditTypeNames[ts]; ok {
			typ = n
		} else if i := strings.IndexByte(ts, '['); i >= 0 {
			typ, _ = strconv.Atoi(ts[i+1 : len(ts)-1])
		}
	}
	switch typ {
	case AuditIPEAccess, AuditIPEConfigChange, AuditIPEPolicyLoad, AuditMACStatus:
	default:
		return nil, ErrAuditRecord
	}
	rest := line[min(m[1], len(line)):]
	rec := &AuditRecord{Type: typ, Raw: line}
	if sm := reStamp.FindStringSubmatchIndex(rest); sm != nil && sm[0] < 8 {
		sec, _ := strconv.ParseInt(rest[sm[2]:sm[3]], 10, 64)
		frac := rest[sm[4]:sm[5]]
		ms, _ := strconv.ParseInt((frac + "000")[:3], 10, 64)
		rec.Time = time.Unix(sec, ms*int64(time.Millisecond)).UTC()
		rec.Serial, _ = strconv.ParseUint(rest[sm[6]:sm[7]], 10, 64)
		rest = rest[sm[1]:]
	}
	fields, err := parseAuditFields(rest)
	if err != nil {
		return nil, err
	}
	rec.Fields = fields
	if typ == AuditMACStatus {
		if v, _ := rec.Get("lsm"); v != "ipe" {
			return nil, ErrAuditRecord
		}
	}
	return rec, nil
}

func parseAuditFields(s string) ([]AuditField, error) {
	var out []AuditField
	for {
		s = strings.TrimLeft(s, " ")
		if s == "" {
			return out, nil
		}
		if len(out) >= MaxAuditFields {
			return nil, fmt.Errorf("%w: more than %d fields", ErrAuditRecord, MaxAuditFields)
		}
		eq := strings.IndexByte(s, '=')
		sp := strings.IndexByte(s, ' ')
		if eq < 0 || (sp >= 0 && sp < eq) {
			// A word without '=': skip it.
			if sp < 0 {
				return out, nil
			}
			s = s[sp:]
			continue
		}
		key, v := s[:eq], s[eq+1:]
		var val string
		switch {
		case key == "rule" && strings.HasPrefix(v, `"`):
			// The rule is the last field and may quote digest algorithm
			// names inside its own quotes.
			end := strings.LastIndexByte(v, '"')
			if end <= 0 {
				end = len(v)
			}
			val = v[1:end]
			s = v[min(end+1, len(v)):]
			val = reAlgQ.ReplaceAllStringFunc(val, func(m string) string {
				return "=" + strings.Trim(m[1:len(m)-1], `"`) + ":"
			})
		case strings.HasPrefix(v, `"`):
			end := strings.IndexByte(v[1:], '"')
			if end < 0 {
				val, s = v[1:], ""
			} else {
				val, s = v[1:1+end], v[2+end:]
			}
		default:
			end := strings.IndexByte(v, ' ')
			if end < 0 {
				end = len(v)
			}
			val, s = v[:end], v[end:]
			if untrustedKeys[key] {
				val = decodeUntrusted(val)
			}
		}
		out = append(out, AuditField{Key: key, Value: val})
	}
}

// untrustedKeys are fields the kernel logs with audit_log_untrustedstring:
// quoted when clean, else uppercase hex.
var untrustedKeys = map[string]bool{"comm": true, "path": true, "dev": true}

func decodeUntrusted(v string) string {
	if v == "?" || len(v)%2 != 0 || v == "" {
		return v
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if (c < '0' || c > '9') && (c < 'A' || c > 'F') {
			return v
		}
	}
	b, err := hex.DecodeString(v)
	if err != nil {
		return v
	}
	return string(b)
}

// ReadAuditRecords reads IPE records from r (one record per line; other
// lines are skipped). Lines longer than MaxAuditLine are skipped.
func ReadAuditRecords(ctx context.Context, r io.Reader) ([]*AuditRecord, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var out []*AuditRecord
	for {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		line, err := readLineCapped(br, MaxAuditLine)
		if line != "" {
			if rec, perr := ParseAuditLine(line); perr == nil {
				out = append(out, rec)
			}
		}
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

// readLineCapped returns the next line; a line over max bytes is consumed
// and returned empty.
func readLineCapped(br *bufio.Reader, max int) (string, error) {
	var b []byte
	over := false
	for {
		frag, err := br.ReadSlice('\n')
		if !over {
			if len(b)+len(frag) > max {
				over, b = true, nil
			} else {
				b = append(b, frag...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if over {
			return "", err
		}
		return string(b), err
	}
}

// ReadKmsg reads the records currently in the kernel log device (usually
// /dev/kmsg) and returns the IPE ones. Each read() of /dev/kmsg returns one
// record; reading stops when no more are buffered (the device would block),
// which a short read deadline detects. Records overwritten while reading
// (EPIPE) are skipped.
func ReadKmsg(ctx context.Context, path string) ([]*AuditRecord, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, 16<<10)
	var out []*AuditRecord
	for n := 0; n < 1<<20; n++ {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		f.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		k, err := f.Read(buf)
		if k > 0 {
			line := string(buf[:k])
			if i := strings.IndexByte(line, '\n'); i >= 0 {
				line = line[:i] // continuation lines (SUBSYSTEM=...) follow
			}
			if rec, perr := ParseAuditLine(line); perr == nil {
				out = append(out, rec)
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, syscall.EPIPE):
		case errors.Is(err, syscall.EAGAIN), errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, io.EOF):
			return out, nil
		default:
			return out, fmt.Errorf("ipe: read %s: %w", path, err)
		}
	}
	return out, nil
}

// Access is a decoded 1420 IPE_ACCESS record.
type Access struct {
	Op        Op
	OpName    string // as logged (UNKNOWN for an unknown op)
	Hook      string // BPRM_CHECK, MMAP, MPROTECT, KERNEL_READ, KERNEL_LOAD
	Enforcing bool
	PID       int
	Comm      string
	Path      string // "" when there was no file
	Dev       string // superblock s_id (tmpfs, dm-0, overlay, vda1, rootfs)
	Ino       uint64
	// Rule is the rule= value: "op=... action=X", "DEFAULT op=X action=Y"
	// or "DEFAULT action=Y".
	Rule   string
	Action Action
	Match  MatchKind
	// Matched is the parsed rule for MatchRule.
	Matched *Rule
}

// Anonymous reports whether the access had no file (anonymous memory or
// a kernel_load_data buffer).
func (a *Access) Anonymous() bool { return a.Path == "" }

// ParseAccess decodes a 1420 record.
func ParseAccess(r *AuditRecord) (*Access, error) {
	if r.Type != AuditIPEAccess {
		return nil, fmt.Errorf("%w: type %d is not IPE_ACCESS", ErrAuditRecord, r.Type)
	}
	a := &Access{Op: OpNone}
	a.OpName, _ = r.Get("ipe_op")
	if op, ok := ParseOp(a.OpName); ok {
		a.Op = op
	}
	a.Hook, _ = r.Get("ipe_hook")
	e, _ := r.Get("enforcing")
	a.Enforcing = e == "1"
	if v, ok := r.Get("pid"); ok {
		a.PID, _ = strconv.Atoi(v)
	}
	a.Comm, _ = r.Get("comm")
	if v, ok := r.Get("path"); ok && v != "?" {
		a.Path = v
	}
	if v, ok := r.Get("dev"); ok && v != "?" {
		a.Dev = v
	}
	if v, ok := r.Get("ino"); ok && v != "?" {
		a.Ino, _ = strconv.ParseUint(v, 10, 64)
	}
	rule, ok := r.Get("rule")
	if !ok {
		return nil, fmt.Errorf("%w: IPE_ACCESS record without rule=", ErrAuditRecord)
	}
	a.Rule = rule
	isDef, op, act, rl, err := parseRuleText(rule)
	if err != nil {
		return nil, fmt.Errorf("%w: rule=%q: %v", ErrAuditRecord, rule, err)
	}
	a.Action = act
	switch {
	case !isDef:
		a.Match, a.Matched = MatchRule, rl
	case op == OpNone:
		a.Match = MatchGlobal
	default:
		a.Match = MatchOpDefault
	}
	return a, nil
}

// parseRuleText parses one rule line (as audit records print it) with the
// policy parser.
func parseRuleText(s string) (isDefault bool, op Op, act Action, r *Rule, err error) {
	ps := &parser{p: &Policy{}, header: true}
	if err := ps.parseRule(1, s); err != nil {
		return false, OpNone, ActionUnset, nil, err
	}
	p := ps.p
	if len(p.Rules) == 1 {
		rr := p.Rules[0]
		rr.Line = 0
		return false, rr.Op, rr.Action, &rr, nil
	}
	if p.GlobalDefault != ActionUnset {
		return true, OpNone, p.GlobalDefault, nil, nil
	}
	for o := Op(0); o < NumOps; o++ {
		if p.OpDefault[o] != ActionUnset {
			return true, o, p.OpDefault[o], nil, nil
		}
	}
	return false, OpNone, ActionUnset, nil, errors.New("empty rule")
}

// PolicyEvent is a decoded 1421 or 1422 record (name, version, digest of
// the new or loaded policy) or a 1404 enforce change.
type PolicyEvent struct {
	Type       int
	Name       string
	Version    string
	Digest     string
	OldName    string
	OldVersion string
	OldDigest  string
	Result     string
	Errno      string // 1422 of newer kernels on failure
	Enforcing  string // 1404
}

// ParsePolicyEvent decodes a 1421, 1422 or 1404 record.
func ParsePolicyEvent(r *AuditRecord) *PolicyEvent {
	g := func(k string) string { v, _ := r.Get(k); return v }
	ev := &PolicyEvent{Type: r.Type, Result: g("res"), Errno: g("errno")}
	switch r.Type {
	case AuditIPEPolicyLoad:
		ev.Name, ev.Version, ev.Digest = g("policy_name"), g("policy_version"), g("policy_digest")
	case AuditIPEConfigChange:
		ev.Name, ev.Version, ev.Digest = g("new_active_pol_name"), g("new_active_pol_version"), g("new_policy_digest")
		ev.OldName, ev.OldVersion, ev.OldDigest = g("old_active_pol_name"), g("old_active_pol_version"), g("old_policy_digest")
	case AuditMACStatus:
		ev.Enforcing = g("enforcing")
	}
	return ev
}
