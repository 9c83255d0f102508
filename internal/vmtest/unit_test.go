package vmtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/testutil"
)

// TestVMRunsStaticCLI runs the intact CLI itself (a static binary) in the
// guest with files carried by FileMap, as `vmexec --file` does.
func TestVMRunsStaticCLI(t *testing.T) {
	requireHostVM(t)
	dir := t.TempDir()
	intact := filepath.Join(dir, "intact")
	root, err := RepoRoot(".")
	if err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", intact, "./cmd/intact")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build intact: %v\n%s", err, b)
	}
	data, hash := filepath.Join(dir, "data"), filepath.Join(dir, "hash")
	os.WriteFile(data, bytes.Repeat([]byte("intact"), 100000), 0o644)
	os.Truncate(data, 1<<20)
	rootHash, err := exec.Command(intact, "verity", "format", "-q", data, hash).Output()
	if err != nil {
		t.Fatalf("intact verity format: %v", err)
	}
	var out bytes.Buffer
	res, err := Run(context.Background(), Options{Mode: Direct, Program: intact, NoScratch: true, Output: &out,
		Args:  []string{"verity", "open", "--json", "cli", "/data", strings.TrimSpace(string(rootHash)), "--hash-file", "/hash"},
		Files: []FileMap{{Host: data, Guest: "/data"}, {Host: hash, Guest: "/hash"}}})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || !strings.Contains(out.String(), `"device": "/dev/dm-`) {
		t.Fatalf("exit %d:\n%s", res.ExitCode, out.String())
	}
}

// TestEnrollVarsDBX: the variable store the Secure Boot guest boots with
// has dbx holding the revoked leaves (virt-fw-vars reads it back).
func TestEnrollVarsDBX(t *testing.T) {
	testutil.RequireHost(t, "runs virt-fw-vars from the VM cache")
	a, err := Fetch(context.Background(), FetchOptions{})
	if err != nil {
		testutil.Unavailable(t, "VM assets: "+err.Error())
	}
	dir := t.TempDir()
	p, err := NewPKI(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	vars := filepath.Join(dir, "vars.fd")
	if err := EnrollVars(context.Background(), a, p, vars); err != nil {
		t.Fatal(err)
	}
	shim := filepath.Join(dir, "pyshim")
	cmd := exec.Command("python3", "-c",
		"import sys; from virt.firmware.vars import main; sys.argv[0] = 'virt-fw-vars'; sys.exit(main())",
		"-i", vars, "--print", "--verbose")
	cmd.Env = append(os.Environ(), "PYTHONPATH="+a.PythonPath()+":"+shim)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("virt-fw-vars --print: %v\n%s", err, out)
	}
	s := string(out)
	for _, want := range []string{"name=dbx", "siglist type=3bd2a492-96c0-4079-b420-fcf98ef103ed count=1",
		"subject CN=" + p.RevokedX509.Certificate.Subject.CommonName, "subject CN=intact test db root CA"} {
		if !strings.Contains(s, want) {
			t.Errorf("varstore print lacks %q:\n%s", want, s)
		}
	}
	// The TBS entry's bytes (virt-fw-vars does not print them).
	tbs := sha256.Sum256(p.RevokedTBS.Certificate.RawTBSCertificate)
	esl := DBXEntries(p.RevokedTBS.Certificate, p.RevokedX509.Certificate)
	if !bytes.Contains(esl, tbs[:]) || !bytes.Contains(esl, guidBytes(certX509SHA256GUID)) {
		t.Errorf("dbx lists lack the TBS hash %s", hex.EncodeToString(tbs[:]))
	}
}
