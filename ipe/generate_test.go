package ipe

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// TestGenerateSemantics: every combination of intent flags gives a policy
// that lints valid, is in canonical form, and (by the evaluator that the VM
// tests hold to the kernel) allows exactly what was asked for.
func TestGenerateSemantics(t *testing.T) {
	root := Digest{Alg: "sha256", Value: bytes.Repeat([]byte{1}, 32)}
	other := Digest{Alg: "sha256", Value: bytes.Repeat([]byte{2}, 32)}
	fsv := Digest{Alg: "sha256", Value: bytes.Repeat([]byte{3}, 32)}
	for mask := 0; mask < 64; mask++ {
		in := Intent{Name: "gen", Version: Version{1, 0, 0},
			AllowInitramfs: mask&1 != 0, AllowSignedVerity: mask&2 != 0, AllowAnonymousExec: mask&4 != 0, AuditOnly: mask&8 != 0}
		if mask&16 != 0 {
			in.RootHashes = []Digest{root}
		}
		if mask&32 != 0 {
			in.FSVerityDigests = []Digest{fsv}
			in.Ops = []Op{OpExecute, OpKModule}
		}
		text, err := Generate(in)
		if err != nil {
			t.Fatalf("mask %d: %v", mask, err)
		}
		res := Lint(text, LintOptions{})
		if !res.Valid() {
			t.Fatalf("mask %d: %v\n%s", mask, res.Err, text)
		}
		danger := false
		for _, w := range res.Warnings {
			if w.Code == "anon-exec-denied" || w.Code == "exec-default-allow" || w.Code == "shadowed" || w.Code == "never-matches" {
				t.Errorf("mask %d: warning %v\n%s", mask, w, text)
			}
			if w.Code == "allows-untrusted" {
				danger = true
				if !w.Danger {
					t.Errorf("mask %d: allows-untrusted is not marked dangerous", mask)
				}
			}
		}
		if danger != in.AllowAnonymousExec {
			t.Errorf("mask %d: allows-untrusted reported %v, --allow-anonymous-exec %v\n%s", mask, danger, in.AllowAnonymousExec, text)
		}
		if f, _ := Format(text); !bytes.Equal(f, text) {
			t.Errorf("mask %d: not canonical", mask)
		}
		p := res.Policy
		ops := in.Ops
		if len(ops) == 0 {
			ops = []Op{OpExecute}
		}
		for _, op := range ops {
			cases := []struct {
				ctx  Context
				want bool
			}{
				{Context{Op: op, BootVerified: true}, in.AllowInitramfs},
				{Context{Op: op, DMVerity: &other, DMVeritySigned: true}, in.AllowSignedVerity},
				{Context{Op: op, DMVerity: &root}, in.RootHashes != nil || (in.AllowAnonymousExec && op == OpExecute)},
				{Context{Op: op, FSVerity: &fsv}, in.FSVerityDigests != nil || (in.AllowAnonymousExec && op == OpExecute)},
				{Context{Op: op}, in.AllowAnonymousExec && op == OpExecute},
				{Context{Op: op, Anonymous: true}, in.AllowAnonymousExec && op == OpExecute},
			}
			for i, c := range cases {
				if got := p.Evaluate(c.ctx).Action == ActionAllow; got != c.want {
					t.Errorf("mask %d op %s case %d: allowed=%v, want %v\n%s", mask, op, i, got, c.want, text)
				}
			}
		}
		if in.AuditOnly != strings.Contains(string(text), "Audit-only") {
			t.Errorf("mask %d: audit-only comment", mask)
		}
		// Operations outside Ops stay allowed.
		if p.Evaluate(Context{Op: OpFirmware}).Action != ActionAllow {
			t.Errorf("mask %d: FIRMWARE denied", mask)
		}
	}
}

// TestGenerateScopedOps: SignedVerityOps and RootHashOps limit their rules
// to some operations (the host policy: every signed device may EXECUTE,
// kernel modules and firmware come only from named root hashes).
func TestGenerateScopedOps(t *testing.T) {
	root := Digest{Alg: "sha256", Value: bytes.Repeat([]byte{1}, 32)}
	other := Digest{Alg: "sha256", Value: bytes.Repeat([]byte{2}, 32)}
	text, err := Generate(Intent{Name: "scoped", Version: Version{1, 0, 0}, Ops: []Op{OpExecute, OpKModule, OpFirmware},
		AllowInitramfs: true, AllowSignedVerity: true, SignedVerityOps: []Op{OpExecute},
		RootHashes: []Digest{root}, RootHashOps: []Op{OpKModule, OpFirmware}})
	if err != nil {
		t.Fatal(err)
	}
	res := Lint(text, LintOptions{})
	if !res.Valid() {
		t.Fatalf("%v\n%s", res.Err, text)
	}
	for _, c := range []struct {
		ctx  Context
		want bool
	}{
		{Context{Op: OpExecute, DMVerity: &other, DMVeritySigned: true}, true},
		{Context{Op: OpKModule, DMVerity: &other, DMVeritySigned: true}, false}, // a container layer's module
		{Context{Op: OpFirmware, DMVerity: &other, DMVeritySigned: true}, false},
		{Context{Op: OpKModule, DMVerity: &root, DMVeritySigned: true}, true}, // the root's
		{Context{Op: OpFirmware, DMVerity: &root}, true},
		{Context{Op: OpExecute, DMVerity: &root}, false}, // unsigned: no EXECUTE rule names the root
		{Context{Op: OpKModule, BootVerified: true}, true},
		{Context{Op: OpKModule}, false},
	} {
		if got := res.Policy.Evaluate(c.ctx).Action == ActionAllow; got != c.want {
			t.Errorf("%+v: allowed=%v, want %v\n%s", c.ctx, got, c.want, text)
		}
	}
}

func TestGenerateRefuses(t *testing.T) {
	for _, in := range []Intent{
		{},
		{Name: "a b"},
		{Name: "a/b"},
		{Name: ".."},
		{Name: strings.Repeat("n", 256)},
		{Name: "x", RootHashes: []Digest{{Alg: "sha256", Value: []byte{1}}}},
		{Name: "x", RootHashes: []Digest{{Alg: "nope", Value: make([]byte, 32)}}},
		{Name: "x", FSVerityDigests: []Digest{{Alg: "sha1", Value: make([]byte, 20)}}},
	} {
		if _, err := Generate(in); !errors.Is(err, ErrIntent) {
			t.Errorf("%+v: %v", in, err)
		}
	}
}

func TestRootHashesFromLayerJSON(t *testing.T) {
	h := strings.Repeat("ab", 32)
	for _, doc := range []string{
		`{"output":"l.img","root_hash":"` + h + `","hash_algorithm":"sha256"}`,
		`[{"root_hash":"` + h + `"},{"root_hash":"sha256:` + h + `"}]`,
		`{"layers":[{"root_hash":"` + h + `"}]}` + "\n" + `{"root_hash":"` + h + `"}`,
	} {
		ds, err := RootHashesFromLayerJSON([]byte(doc))
		if err != nil || len(ds) == 0 {
			t.Fatalf("%s: %v", doc, err)
		}
		for _, d := range ds {
			if d.String() != "sha256:"+h {
				t.Errorf("%s: %v", doc, d)
			}
		}
	}
	for _, bad := range []string{`{}`, `{"root_hash":"xyz"}`, `not json`, `{"root_hash":"` + h[:10] + `"}`} {
		if _, err := RootHashesFromLayerJSON([]byte(bad)); !errors.Is(err, ErrIntent) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

// TestLintWarnings: each warning fires on the policy that shows the
// danger, and not on a policy without it.
func TestLintWarnings(t *testing.T) {
	hdr := "policy_name=w policy_version=1.0.0\n"
	h := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		code, bad, good string
	}{
		{"exec-default-allow", "DEFAULT action=ALLOW\n", "DEFAULT action=ALLOW\nDEFAULT op=EXECUTE action=DENY\nop=EXECUTE boot_verified=FALSE dmverity_signature=FALSE fsverity_signature=FALSE action=ALLOW\n"},
		{"anon-exec-denied", "DEFAULT action=DENY\nop=EXECUTE dmverity_signature=TRUE action=ALLOW\n", "DEFAULT action=DENY\nop=EXECUTE dmverity_signature=FALSE action=ALLOW\n"},
		{"shadowed", "DEFAULT action=ALLOW\nop=EXECUTE action=DENY\nop=EXECUTE boot_verified=TRUE action=ALLOW\n", "DEFAULT action=ALLOW\nop=EXECUTE boot_verified=TRUE action=ALLOW\nop=EXECUTE action=DENY\n"},
		{"shadowed", "DEFAULT action=ALLOW\nop=EXECUTE boot_verified=TRUE action=DENY\nop=EXECUTE boot_verified=TRUE dmverity_signature=TRUE action=ALLOW\n", "DEFAULT action=ALLOW\nop=KMODULE boot_verified=TRUE action=DENY\nop=EXECUTE boot_verified=TRUE action=ALLOW\n"},
		{"boot-verified", "DEFAULT action=ALLOW\nop=EXECUTE boot_verified=TRUE action=ALLOW\n", "DEFAULT action=ALLOW\nop=EXECUTE boot_verified=TRUE action=DENY\n"},
		{"never-matches", "DEFAULT action=ALLOW\nop=EXECUTE boot_verified=TRUE boot_verified=FALSE action=DENY\n", "DEFAULT action=ALLOW\nop=EXECUTE boot_verified=TRUE action=DENY\n"},
		{"never-matches", "DEFAULT action=ALLOW\nop=EXECUTE boot_verified=TRUE dmverity_signature=TRUE action=DENY\n", "DEFAULT action=ALLOW\nop=EXECUTE dmverity_signature=TRUE action=DENY\n"},
		{"digest-length", "DEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash=sha256:abcd action=DENY\n", "DEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash=sha256:" + h + " action=DENY\n"},
		{"digest-length", "DEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash=sha256: action=DENY\n", "DEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash=sha512:" + h + h + " action=DENY\n"},
		{"unknown-algorithm", "DEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash=SHA256:" + h + " action=DENY\n", "DEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash=sha256:" + h + " action=DENY\n"},
		{"unknown-algorithm", "DEFAULT action=ALLOW\nop=EXECUTE fsverity_digest=sha1:" + h[:40] + " action=DENY\n", "DEFAULT action=ALLOW\nop=EXECUTE dmverity_roothash=sha1:" + h[:40] + " action=DENY\n"},
		{"op-denied", "DEFAULT action=DENY\nop=EXECUTE action=ALLOW\n", "DEFAULT action=DENY\nop=EXECUTE action=ALLOW\nop=KMODULE boot_verified=TRUE action=ALLOW\nop=FIRMWARE boot_verified=TRUE action=ALLOW\n"},
		{"duplicate-property", "DEFAULT action=ALLOW\nop=EXECUTE boot_verified=FALSE boot_verified=FALSE action=DENY\n", "DEFAULT action=ALLOW\nop=EXECUTE boot_verified=FALSE action=DENY\n"},
		{"nul-byte", "DEFAULT action=ALLOW\n\x00junk", "DEFAULT action=ALLOW\n"},
		{"allows-untrusted", "DEFAULT action=DENY\nop=EXECUTE boot_verified=FALSE dmverity_signature=FALSE fsverity_signature=FALSE action=ALLOW\n", "DEFAULT action=DENY\nop=EXECUTE dmverity_signature=TRUE action=ALLOW\n"},
		{"allows-untrusted", "DEFAULT action=DENY\nop=EXECUTE action=ALLOW\n", "DEFAULT action=DENY\nop=EXECUTE dmverity_roothash=sha256:" + h + " action=ALLOW\n"},
		{"allows-untrusted", "DEFAULT action=ALLOW\nDEFAULT op=KMODULE action=DENY\nop=KMODULE dmverity_signature=FALSE action=ALLOW\n", "DEFAULT action=ALLOW\nDEFAULT op=KMODULE action=DENY\nop=KMODULE boot_verified=TRUE action=ALLOW\n"},
		// dmverity_signature=FALSE and fsverity_signature=FALSE hold for any file.
		{"allows-untrusted", "DEFAULT action=DENY\nop=EXECUTE dmverity_signature=FALSE boot_verified=FALSE action=ALLOW\n", "DEFAULT action=DENY\nop=EXECUTE boot_verified=FALSE action=DENY\nop=EXECUTE boot_verified=FALSE action=ALLOW\n"},
		{"allows-untrusted", "DEFAULT action=DENY\nop=EXECUTE fsverity_signature=FALSE boot_verified=FALSE action=ALLOW\n", "DEFAULT action=DENY\nop=EXECUTE fsverity_digest=sha256:" + h + " action=ALLOW\n"},
	} {
		has := func(text string) bool {
			res := Lint([]byte(hdr+text), LintOptions{})
			if !res.Valid() {
				t.Fatalf("%s: %q refused: %v", tc.code, text, res.Err)
			}
			for _, w := range res.Warnings {
				if w.Code == tc.code {
					return true
				}
			}
			return false
		}
		if !has(tc.bad) {
			t.Errorf("%s not reported for %q", tc.code, tc.bad)
		}
		if has(tc.good) {
			t.Errorf("%s reported for %q", tc.code, tc.good)
		}
	}
	// A suppression comment silences a code file-wide.
	res := Lint([]byte(hdr+"DEFAULT action=ALLOW\n# intact-lint: ignore=exec-default-allow\n"), LintOptions{})
	for _, w := range res.Warnings {
		if w.Code == "exec-default-allow" {
			t.Error("suppressed warning reported")
		}
	}
}
