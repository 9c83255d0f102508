package ipe

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/intact-project/intact/dm"
	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/internal/vmtest/guest"
	"github.com/intact-project/intact/pkcs7"
	"github.com/intact-project/intact/verity"
	"github.com/intact-project/intact/veritydev"
)

// Markers around the raw IPE records this test prints, for
// testdata/audit (see TestImportKmsgRecords).
const (
	kmsgBegin = "INTACT-IPE-KMSG-BEGIN"
	kmsgEnd   = "INTACT-IPE-KMSG-END"
)

// vmInspector is the Inspector the CLI builds, with device-mapper access.
func vmInspector() *Inspector {
	return &Inspector{DMTable: dm.TableText}
}

// verityImage puts a copy of the running test binary (a static program
// that exits 0 with -test.run=^$) into an EROFS image with a dm-verity
// tree, opens it (with a root-hash signature if signer is not nil) and
// mounts it. It returns the binary's path and the device's root hash.
func verityImage(t *testing.T, name string, signer *pkcs7.Signer) (string, []byte) {
	t.Helper()
	mkfs := testutil.RequireTool(t, "mkfs.erofs")
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, self, filepath.Join(src, "prog"), 0o755)
	img, hash := filepath.Join(dir, "img.erofs"), filepath.Join(dir, "img.hash")
	if out, err := exec.Command(mkfs, "-T0", img, src).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.erofs: %v\n%s", err, out)
	}
	df, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer df.Close()
	hf, err := os.Create(hash)
	if err != nil {
		t.Fatal(err)
	}
	defer hf.Close()
	st, err := df.Stat()
	if err != nil {
		t.Fatal(err)
	}
	p := verity.DefaultParams()
	p.DataBlocks = uint64(st.Size()) / uint64(p.DataBlockSize)
	res, err := verity.Format(context.Background(), df, p, hf, nil)
	if err != nil {
		t.Fatal(err)
	}
	var sig []byte
	if signer != nil {
		if sig, err = signer.Sign([]byte(verity.RootHashHex(res.RootHash)), pkcs7.SignOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	d, err := veritydev.OpenConfig(context.Background(), veritydev.Config{Name: name, Data: img, Hash: hash, RootHash: res.RootHash, Signature: sig})
	if err != nil {
		t.Fatalf("open verity device: %v", err)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := linux.Mount(d.Path, mnt, "erofs", linux.MS_RDONLY, ""); err != nil {
		d.Close(context.Background())
		t.Fatalf("mount %s: %v", d.Path, err)
	}
	t.Cleanup(func() {
		linux.Unmount(mnt, 0)
		d.Close(context.Background())
	})
	return filepath.Join(mnt, "prog"), res.RootHash
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// runProg execs a copy of the test binary and returns the exec error.
func runProg(path string) error {
	cmd := exec.Command(path, "-test.run=^$")
	out, err := cmd.CombinedOutput()
	if err != nil && !errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("%w: %s", err, out)
	}
	return err
}

// signPolicy signs text for the kernel.
func signPolicy(t *testing.T, s *pkcs7.Signer, text string) []byte {
	t.Helper()
	b, err := Sign([]byte(text), s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVMEnforcement proves the chain in a real kernel: with DEFAULT
// op=EXECUTE action=DENY plus initramfs and signed dm-verity allowed, a
// binary on a signed verity EROFS device runs, the same binary on tmpfs or
// on an unsigned verity device fails with EACCES, the audit record of the
// denial is explained, and eval predicts every outcome. It also checks the
// deployment paths: update to an older version (ESTALE), deleting the
// active policy (EPERM), activating an older version (EINVAL), list's
// policy digests against the kernel's audit records.
func TestVMEnforcement(t *testing.T) {
	testutil.RequireVM(t)
	keys := guest.RequireTrustedKeys(t)
	testutil.RequireRoot(t)
	s := vmSecurityFS(t)
	ctx := context.Background()
	// The audit records reach /dev/kmsg through printk_ratelimit; lift it so
	// that no record of this test is dropped.
	os.WriteFile("/proc/sys/kernel/printk_ratelimit_burst", []byte("100000"), 0)
	trusted := loadSigner(t, keys.SignKey, keys.SignCert)
	untrusted := loadSigner(t, keys.UntrustedKey, keys.UntrustedCert)

	signedProg, _ := verityImage(t, "ipe-signed", trusted)
	unsignedProg, unsignedRoot := verityImage(t, "ipe-unsigned", nil)
	tmpfs := filepath.Join(t.TempDir(), "tmpfs")
	os.MkdirAll(tmpfs, 0o755)
	if err := linux.Mount("tmpfs", tmpfs, "tmpfs", 0, "size=64m"); err != nil {
		t.Fatal(err)
	}
	defer linux.Unmount(tmpfs, 0)
	tmpProg := filepath.Join(tmpfs, "prog")
	copyFile(t, signedProg, tmpProg, 0o755)
	self, _ := os.Executable()

	// Everything runs before a policy is active.
	for _, p := range []string{signedProg, unsignedProg, tmpProg} {
		if err := runProg(p); err != nil {
			t.Fatalf("%s before any policy: %v", p, err)
		}
	}

	policyV1 := "policy_name=enforce-test policy_version=1.0.0\nDEFAULT action=ALLOW\nDEFAULT op=EXECUTE action=DENY\n" +
		"op=EXECUTE boot_verified=TRUE action=ALLOW\nop=EXECUTE dmverity_signature=TRUE action=ALLOW\n"
	blobV1 := signPolicy(t, trusted, policyV1)
	pol, err := Parse([]byte(policyV1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, blobV1); err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := s.Activate(ctx, "enforce-test"); err != nil {
		t.Fatalf("activate: %v", err)
	}
	t.Cleanup(func() {
		// Leave an allow-all policy active for whatever runs next.
		b := signPolicy(t, trusted, "policy_name=zz-allow-all policy_version=65535.0.0\nDEFAULT action=ALLOW\n")
		if _, err := s.Load(ctx, b); err == nil {
			s.Activate(ctx, "zz-allow-all")
		}
	})

	// List: the active flag and the digest audit records use.
	info, err := s.Info("enforce-test")
	if err != nil {
		t.Fatal(err)
	}
	if !info.Active || info.Digest != AuditDigest(blobV1) || info.VersionString != "1.0.0" {
		t.Errorf("list: %+v, want active, version 1.0.0, digest %s", info, AuditDigest(blobV1))
	}
	if got, _ := s.PKCS7("enforce-test"); sha256.Sum256(got) != sha256.Sum256(blobV1) {
		t.Errorf("pkcs7 node differs from the loaded blob")
	}

	insp := vmInspector()
	check := func(path string, wantAllowed bool) {
		t.Helper()
		err := runProg(path)
		allowed := err == nil
		if !allowed && !errors.Is(err, syscall.EACCES) {
			t.Fatalf("%s: %v", path, err)
		}
		if allowed != wantAllowed {
			t.Errorf("%s: exec allowed=%v, want %v (%v)", path, allowed, wantAllowed, err)
		}
		fp, err := insp.Inspect(ctx, path)
		if err != nil {
			t.Fatalf("inspect %s: %v", path, err)
		}
		d := pol.Evaluate(fp.Context(OpExecute))
		if (d.Action == ActionAllow) != allowed {
			t.Errorf("eval %s: predicted %s by %s, kernel allowed=%v; props %v unknown %v", path, d.Action, d.AuditRule(), allowed, fp.Properties(), fp.Unknown)
		}
		t.Logf("%s: exec allowed=%v; eval %s by %q; %v", path, allowed, d.Action, d.AuditRule(), fp.Properties())
	}
	check(signedProg, true)
	check(tmpProg, false)
	check(unsignedProg, false)
	// The test binary itself lives in the initramfs (boot_verified).
	check(self, true)
	if fp, err := insp.Inspect(ctx, self); err != nil || !fp.BootVerified {
		t.Errorf("inspect %s (initramfs): %+v %v", self, fp, err)
	}
	// A container's view: overlayfs with the signed verity EROFS as lower
	// layer and tmpfs as upper. IPE judges the lower file (d_real_inode), so
	// the layer's binary runs; a file written through the overlay lands in
	// the upper layer and is denied.
	ovl := filepath.Join(tmpfs, "ovl")
	for _, d := range []string{"upper", "work", "merged"} {
		os.MkdirAll(filepath.Join(ovl, d), 0o755)
	}
	merged := filepath.Join(ovl, "merged")
	if err := linux.Mount("overlay", merged, "overlay", 0, fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s",
		filepath.Dir(signedProg), filepath.Join(ovl, "upper"), filepath.Join(ovl, "work"))); err != nil {
		t.Fatalf("overlay: %v", err)
	}
	defer linux.Unmount(merged, 0)
	check(filepath.Join(merged, "prog"), true)
	if fp, _ := insp.Inspect(ctx, filepath.Join(merged, "prog")); fp == nil || fp.RealPath != signedProg {
		t.Errorf("overlay file resolved to %+v, want %s", fp, signedProg)
	}
	copyFile(t, signedProg, filepath.Join(merged, "written"), 0o755)
	check(filepath.Join(merged, "written"), false)

	// The kernel's audit record of the tmpfs denial, explained.
	time.Sleep(200 * time.Millisecond)
	recs, err := ReadKmsg(ctx, "/dev/kmsg")
	if err != nil {
		t.Fatal(err)
	}
	var denial *Access
	var loadDigest string
	for _, r := range recs {
		switch r.Type {
		case AuditIPEAccess:
			a, err := ParseAccess(r)
			if err != nil {
				t.Errorf("parse %q: %v", r.Raw, err)
				continue
			}
			if a.Path == tmpProg && a.Hook == "BPRM_CHECK" {
				denial = a
			}
		case AuditIPEPolicyLoad:
			if ev := ParsePolicyEvent(r); ev.Name == "enforce-test" {
				loadDigest = ev.Digest
			}
		}
	}
	if denial == nil {
		t.Fatalf("no IPE_ACCESS record for %s in /dev/kmsg (%d IPE records)", tmpProg, len(recs))
	}
	if denial.Action != ActionDeny || denial.Match != MatchOpDefault || denial.Op != OpExecute || !denial.Enforcing || denial.Dev != "tmpfs" {
		t.Errorf("denial record decoded as %+v", denial)
	}
	fp, _ := insp.Inspect(ctx, tmpProg)
	ex := Explain(denial, pol, fp)
	t.Logf("explanation: %+v", ex)
	if !strings.Contains(ex.DecidedBy, "DEFAULT op=EXECUTE action=DENY (line 3)") || len(ex.Allow) == 0 {
		t.Errorf("explanation %+v", ex)
	}
	checkAuditCLI(t, policyV1, tmpProg)
	if loadDigest != AuditDigest(blobV1) {
		t.Errorf("1422 policy_digest %q, list says %q", loadDigest, AuditDigest(blobV1))
	}

	// Update: v2 adds the unsigned device's root hash; an older version is
	// refused by our check (ESTALE) and by the kernel (ESTALE).
	policyV2 := strings.Replace(policyV1, "1.0.0", "1.1.0", 1) + "op=EXECUTE dmverity_roothash=sha256:" + fmt.Sprintf("%x", unsignedRoot) + " action=ALLOW\n"
	if _, err := s.Update(ctx, signPolicy(t, trusted, policyV2)); err != nil {
		t.Fatalf("update to 1.1.0: %v", err)
	}
	if pol, err = Parse([]byte(policyV2)); err != nil {
		t.Fatal(err)
	}
	// success_audit=1 logs allowed accesses too (the rule then carries the
	// root hash with its quoted algorithm name).
	if err := writeOnce(ctx, filepath.Join(s.dir(), "success_audit"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	check(unsignedProg, true)
	writeOnce(ctx, filepath.Join(s.dir(), "success_audit"), []byte("0"))
	check(tmpProg, false)
	// Permissive (audit-only): the denial is logged with enforcing=0 and
	// the program runs.
	if err := s.SetEnforce(ctx, false); err != nil {
		t.Fatal(err)
	}
	if on, err := s.Enforce(); err != nil || on {
		t.Errorf("enforce after switching off: %v %v", on, err)
	}
	if err := runProg(tmpProg); err != nil {
		t.Errorf("permissive mode: %s refused: %v", tmpProg, err)
	}
	if err := s.SetEnforce(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := runProg(tmpProg); !errors.Is(err, syscall.EACCES) {
		t.Errorf("enforcing again: %s: %v, want EACCES", tmpProg, err)
	}
	older := signPolicy(t, trusted, strings.Replace(policyV1, "1.0.0", "1.0.5", 1))
	if _, err := s.Update(ctx, older); !errors.Is(err, ErrStaleVersion) || !errors.Is(err, syscall.ESTALE) {
		t.Errorf("update to an older version: %v, want ErrStaleVersion/ESTALE", err)
	} else {
		t.Logf("our message: %v", err)
	}
	if e := writeErrno(t, filepath.Join(s.dir(), "policies", "enforce-test", "update"), older); e != syscall.ESTALE {
		t.Errorf("kernel answered %v to an older update, want ESTALE", e)
	}
	same := signPolicy(t, trusted, policyV2+"# same version, other text\n")
	if e := writeErrno(t, filepath.Join(s.dir(), "policies", "enforce-test", "update"), same); e != syscall.ESTALE {
		t.Errorf("kernel answered %v to an update with the same version, want ESTALE", e)
	}

	// Refused blobs: unsigned text, untrusted signer.
	if e := writeErrno(t, filepath.Join(s.dir(), "new_policy"), []byte("policy_name=plain policy_version=1.0.0\nDEFAULT action=ALLOW\n")); e != syscall.EBADMSG {
		t.Errorf("unsigned policy: kernel %v, want EBADMSG", e)
	}
	if _, err := s.Load(ctx, []byte("policy_name=plain policy_version=1.0.0\nDEFAULT action=ALLOW\n")); !errors.Is(err, syscall.EBADMSG) {
		t.Errorf("our load of an unsigned policy: %v", err)
	}
	ub, err := untrusted.Sign([]byte("policy_name=untrusted policy_version=1.0.0\nDEFAULT action=ALLOW\n"), pkcs7.SignOptions{Attached: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx, ub); !errors.Is(err, syscall.ENOKEY) {
		t.Errorf("untrusted signer: %v, want ENOKEY", err)
	}

	// Delete of the active policy: EPERM from our check and the kernel.
	if err := s.Delete(ctx, "enforce-test"); !errors.Is(err, ErrActive) {
		t.Errorf("delete active: %v", err)
	}
	if e := writeErrno(t, filepath.Join(s.dir(), "policies", "enforce-test", "delete"), []byte("1")); e != syscall.EPERM {
		t.Errorf("kernel answered %v to deleting the active policy, want EPERM", e)
	}
	// Activating an older policy: EINVAL.
	if _, err := s.Load(ctx, signPolicy(t, trusted, "policy_name=older policy_version=0.9.0\nDEFAULT action=ALLOW\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.Activate(ctx, "older"); !errors.Is(err, ErrStaleVersion) {
		t.Errorf("activate older: %v", err)
	}
	if e := writeErrno(t, filepath.Join(s.dir(), "policies", "older", "active"), []byte("1")); e != syscall.EINVAL {
		t.Errorf("kernel answered %v to activating an older policy, want EINVAL", e)
	}
	if err := s.Delete(ctx, "older"); err != nil {
		t.Errorf("delete inactive: %v", err)
	}

	// Every IPE record of this test, for testdata/audit (-import-kmsg);
	// check the permissive denial and the allowed root-hash access.
	time.Sleep(200 * time.Millisecond)
	recs, err = ReadKmsg(ctx, "/dev/kmsg")
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println(kmsgBegin)
	var permissive, allowedRoot, toggles bool
	for _, r := range recs {
		fmt.Println(r.Raw)
		if r.Type == AuditMACStatus {
			toggles = true
		}
		a, err := ParseAccess(r)
		if err != nil {
			continue
		}
		if a.Path == tmpProg && !a.Enforcing && a.Action == ActionDeny {
			permissive = true
		}
		if a.Path == unsignedProg && a.Action == ActionAllow && a.Matched != nil && a.Matched.Props[0].Kind == PropDMVerityRootHash &&
			a.Matched.Props[0].Digest.Equal(Digest{Alg: "sha256", Value: unsignedRoot}) {
			allowedRoot = true
		}
	}
	fmt.Println(kmsgEnd)
	if !permissive || !allowedRoot || !toggles {
		t.Errorf("records: permissive denial %v, allowed by root hash %v, enforce toggles %v", permissive, allowedRoot, toggles)
	}
}

// checkAuditCLI runs the intact binary the VM tier carries into the guest
// (/usr/bin/intact) as an operator would, `intact policy audit --json`, and
// checks that it explains the kernel's denial of prog by the DEFAULT rule.
func checkAuditCLI(t *testing.T, policyText, prog string) {
	t.Helper()
	bin, err := exec.LookPath("intact")
	if err != nil {
		testutil.Unavailable(t, "the intact binary is not in the guest (make test-vm carries it with --file bin/intact:/usr/bin/intact)")
		return
	}
	pf := filepath.Join(t.TempDir(), "policy.pol")
	if err := os.WriteFile(pf, []byte(policyText), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "policy", "audit", "--json", "--policy", pf).Output()
	if err != nil {
		t.Fatalf("intact policy audit: %v\n%s", err, out)
	}
	var recs []struct {
		Record      string       `json:"record"`
		Explanation *Explanation `json:"explanation"`
	}
	if err := json.Unmarshal(out, &recs); err != nil {
		t.Fatalf("intact policy audit --json: %v\n%s", err, out)
	}
	for _, r := range recs {
		if ex := r.Explanation; ex != nil && strings.Contains(r.Record, `path="`+prog+`"`) && strings.Contains(r.Record, "BPRM_CHECK") {
			if !strings.Contains(ex.DecidedBy, "DEFAULT op=EXECUTE action=DENY (line 3)") || len(ex.Allow) == 0 {
				t.Errorf("intact policy audit explained the denial of %s as %+v", prog, ex)
			}
			return
		}
	}
	t.Errorf("intact policy audit --json has no explanation for %s:\n%s", prog, out)
}
