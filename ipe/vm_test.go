package ipe

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/internal/vmtest/guest"
	"github.com/intact-project/intact/pkcs7"
)

// Tests named TestVM* run inside the VM tier (a booted Debian 6.12 kernel
// with the test CA in the platform keyring), e.g.
//
//	go build -o bin/vmexec ./internal/vmtest/cmd/vmexec
//	go test -exec "$PWD/bin/vmexec --mode secureboot --tool openssl" -run TestVM -v ./ipe
//
// To (re-)record the kernel's answers for the unit tier:
//
//	go test -exec "$PWD/bin/vmexec --mode secureboot" -run TestVMKernelDifferential \
//	    -v ./ipe -args -update-kernel-answers > /tmp/ipe-vm.log
//	go test ./ipe -run TestImportKernelAnswers -args -import-kernel-answers=/tmp/ipe-vm.log

var (
	updateAnswers = flag.Bool("update-kernel-answers", false, "VM: print the kernel's answers for the corpus (between markers) for -import-kernel-answers")
	importAnswers = flag.String("import-kernel-answers", "", "host: write "+answersFile+" from the answers block in this VM test log")
)

const (
	answersBegin = "INTACT-IPE-KERNEL-ANSWERS-BEGIN"
	answersEnd   = "INTACT-IPE-KERNEL-ANSWERS-END"
)

// vmSecurityFS returns the real securityfs, after checking IPE is there.
func vmSecurityFS(t *testing.T) *SecurityFS {
	t.Helper()
	s := &SecurityFS{}
	if err := s.Available(); err != nil {
		t.Fatalf("IPE securityfs missing in the VM (Debian 6.12 has ipe in its LSM list): %v", err)
	}
	return s
}

func loadSigner(t *testing.T, key, cert string) *pkcs7.Signer {
	t.Helper()
	s, err := pkcs7.LoadSigner(key, cert)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// writeErrno writes blob to a securityfs node in one write() and returns
// the errno (0 on success).
func writeErrno(t *testing.T, path string, blob []byte) syscall.Errno {
	t.Helper()
	err := writeOnce(context.Background(), path, blob)
	if err == nil {
		return 0
	}
	var en syscall.Errno
	if !errors.As(err, &en) {
		t.Fatalf("write %s: %v", path, err)
	}
	return en
}

func answerOf(e syscall.Errno) string {
	if e == 0 {
		return "OK"
	}
	return ErrnoName(e)
}

func uname(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// deleteAll removes every loaded policy except the active one.
func deleteAll(t *testing.T, s *SecurityFS) {
	t.Helper()
	l, err := s.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range l {
		if !p.Active {
			if err := s.Delete(context.Background(), p.Name); err != nil {
				t.Errorf("delete %s: %v", p.Name, err)
			}
		}
	}
}

// TestVMKernelDifferential writes every corpus policy, signed by the
// trusted test key, to new_policy of the real kernel and checks that our
// verdict and errno equal the kernel's for each.
func TestVMKernelDifferential(t *testing.T) {
	testutil.RequireVM(t)
	keys := guest.RequireTrustedKeys(t)
	testutil.RequireRoot(t)
	s := vmSecurityFS(t)
	signer := loadSigner(t, keys.SignKey, keys.SignCert)
	newPolicy := filepath.Join(s.dir(), "new_policy")
	ans := kernelAnswers{Kernel: uname(t), Signer: "intact pkcs7 (attached, sha256, rsaEncryption, no signed attributes), test leaf chained to the CA enrolled in OVMF db",
		Note: "recorded by TestVMKernelDifferential: each corpus policy signed and written to /sys/kernel/security/ipe/new_policy in corpus order; accepted policies stay loaded until the end", Answers: map[string]string{}}
	var loaded []string
	mismatches := 0
	defer deleteAll(t, s)
	for _, c := range readCorpus(t) {
		blob, err := signer.Sign(c.Text, pkcs7.SignOptions{Attached: true})
		if err != nil {
			t.Fatal(err)
		}
		got := answerOf(writeErrno(t, newPolicy, blob))
		ans.Answers[c.Name] = got
		ours, res := lintCorpusCase(c, loaded, len(blob))
		if ours != got {
			mismatches++
			t.Errorf("%s: kernel %s, we say %s (%v)", c.Name, got, ours, res.Err)
		}
		if got == "OK" && res.Policy != nil {
			loaded = append(loaded, res.Policy.Name)
		}
	}
	t.Logf("%d corpus policies on %s: %d mismatches", len(ans.Answers), ans.Kernel, mismatches)
	if *updateAnswers {
		b, _ := json.MarshalIndent(ans, "", "  ")
		os.Stdout.Write([]byte("\n" + answersBegin + "\n" + string(b) + "\n" + answersEnd + "\n"))
	}
}

// TestImportKernelAnswers (host) writes testdata/kernel/answers.json from
// the answers block of a TestVMKernelDifferential -update-kernel-answers
// log.
func TestImportKernelAnswers(t *testing.T) {
	if *importAnswers == "" {
		t.Skip("only with -import-kernel-answers=LOG")
	}
	f, err := os.Open(*importAnswers)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var buf bytes.Buffer
	in := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		switch strings.TrimSpace(sc.Text()) {
		case answersBegin:
			in = true
			buf.Reset()
			continue
		case answersEnd:
			in = false
		}
		if in {
			buf.WriteString(sc.Text() + "\n")
		}
	}
	var a kernelAnswers
	if err := json.Unmarshal(buf.Bytes(), &a); err != nil || len(a.Answers) == 0 {
		t.Fatalf("no answers block in %s: %v", *importAnswers, err)
	}
	if len(a.Answers) != len(readCorpus(t)) {
		t.Fatalf("answers for %d cases, corpus has %d", len(a.Answers), len(readCorpus(t)))
	}
	b, _ := json.MarshalIndent(a, "", "  ")
	if err := os.WriteFile(answersFile, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s: %d answers from %s", answersFile, len(a.Answers), a.Kernel)
}

// TestVMEnvelope checks the kernel's answers for blobs that are not a
// correctly signed policy against LintSigned's model: an unsigned (plain
// text) policy, a foreign signer, a detached signature, a tampered blob,
// signed attributes with and without S/MIME capabilities (openssl cms), and
// a blob over the 4 MiB write limit.
func TestVMEnvelope(t *testing.T) {
	testutil.RequireVM(t)
	keys := guest.RequireTrustedKeys(t)
	testutil.RequireRoot(t)
	s := vmSecurityFS(t)
	defer deleteAll(t, s)
	trusted := loadSigner(t, keys.SignKey, keys.SignCert)
	untrusted := loadSigner(t, keys.UntrustedKey, keys.UntrustedCert)
	roots, err := pkcs7.LoadCertPool(keys.CACert)
	if err != nil {
		t.Fatal(err)
	}
	text := func(name string) []byte {
		return []byte("policy_name=" + name + " policy_version=1.0.0\nDEFAULT action=ALLOW\n")
	}
	sign := func(sg *pkcs7.Signer, b []byte, o pkcs7.SignOptions) []byte {
		blob, err := sg.Sign(b, o)
		if err != nil {
			t.Fatal(err)
		}
		return blob
	}
	type tc struct {
		name string
		blob []byte
	}
	cases := []tc{
		{"trusted", sign(trusted, text("env-trusted"), pkcs7.SignOptions{Attached: true})},
		{"unsigned-text", text("env-unsigned")},
		{"untrusted-signer", sign(untrusted, text("env-untrusted"), pkcs7.SignOptions{Attached: true})},
		{"detached", sign(trusted, text("env-detached"), pkcs7.SignOptions{})},
		{"subject-key-id", sign(trusted, text("env-skid"), pkcs7.SignOptions{Attached: true, SignerID: pkcs7.SubjectKeyID})},
		{"sha512", sign(trusted, text("env-sha512"), pkcs7.SignOptions{Attached: true, Hash: crypto.SHA512})},
		{"no-certs", sign(trusted, text("env-nocerts"), pkcs7.SignOptions{Attached: true, NoCerts: true})},
	}
	tampered := sign(trusted, text("env-tamper"), pkcs7.SignOptions{Attached: true})
	if i := bytes.Index(tampered, []byte("ALLOW")); i >= 0 {
		copy(tampered[i:], "DENY ") // still a valid policy, no longer the signed one
	}
	cases = append(cases, tc{"tampered", tampered})
	big := append([]byte("policy_name=env-big policy_version=1.0.0\nDEFAULT action=ALLOW\n"), bytes.Repeat([]byte("# padding to exceed the kmalloc limit\n"), (MaxBlobSize/38)+1000)...)
	cases = append(cases, tc{"over-4MiB", sign(trusted, big, pkcs7.SignOptions{Attached: true})})
	if openssl, err := exec.LookPath("openssl"); err == nil {
		dir := t.TempDir()
		for i, v := range []struct {
			name  string
			extra []string
		}{{"openssl-cms-signed-attributes", nil}, {"openssl-cms-signed-attributes-nosmimecap", []string{"-nosmimecap"}}} {
			in := filepath.Join(dir, v.name+".txt")
			if err := os.WriteFile(in, text("env-attrs-"+string(rune('a'+i))), 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, v.name+".p7b")
			args := append([]string{"cms", "-sign", "-in", in, "-signer", keys.SignCert, "-inkey", keys.SignKey, "-nodetach", "-binary", "-outform", "der", "-out", out}, v.extra...)
			if o, err := exec.Command(openssl, args...).CombinedOutput(); err != nil {
				t.Fatalf("openssl %v: %v %s", args, err, o)
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			cases = append(cases, tc{v.name, b})
		}
	} else {
		testutil.Unavailable(t, "openssl not in the guest (pass --tool openssl to vmexec)")
	}
	newPolicy := filepath.Join(s.dir(), "new_policy")
	var loaded []string
	for _, c := range cases {
		got := answerOf(writeErrno(t, newPolicy, c.blob))
		res := LintSigned(c.blob, roots, LintOptions{Loaded: loaded})
		ours := "OK"
		if !res.Valid() {
			ours = ErrnoName(res.Errno())
		}
		t.Logf("envelope %-45s kernel %-12s ours %-12s %v", c.name, got, ours, res.Err)
		if got != ours {
			t.Errorf("envelope %s: kernel %s, we say %s (%v)", c.name, got, ours, res.Err)
		}
		if got == "OK" && res.Policy != nil {
			loaded = append(loaded, res.Policy.Name)
		}
	}
}
