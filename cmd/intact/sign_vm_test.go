package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/internal/vmtest/guest"
)

// TestVeritySignAcceptedByKernelInVM hands signatures made by `intact verity
// sign` to the real kernel: `veritysetup open --root-hash-signature` loads a
// dm-verity table with root_hash_sig_key_desc, and Linux 6.12 verifies the
// PKCS#7 against its keyrings (the test CA reaches the platform keyring
// through UEFI db). Signatures by the trusted leaf must open with sha256,
// sha384 and sha512; an untrusted signer, a signature over another root
// hash, one without the signer's certificate and one naming the signer by
// subjectKeyIdentifier (the keyring holds only the CA, and Linux finds
// embedded certificates by issuer and serial only) must be refused.
// `intact verity verify-signature` must agree with the kernel each time.
func TestVeritySignAcceptedByKernelInVM(t *testing.T) {
	keys := guest.RequireTrustedKeys(t)
	testutil.RequireRoot(t)
	veritysetup := testutil.RequireTool(t, "veritysetup")
	dir := t.TempDir()
	data, hashes := filepath.Join(dir, "data"), filepath.Join(dir, "hash")
	randFile(t, data, 1<<20)
	out, err := exec.Command(veritysetup, "format", data, hashes).CombinedOutput()
	if err != nil {
		t.Fatalf("veritysetup format: %v %s", err, out)
	}
	var rootHash string
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "Root hash:"); ok {
			rootHash = strings.TrimSpace(v)
		}
	}
	if len(rootHash) != 64 {
		t.Fatalf("no root hash in %s", out)
	}
	trusted := []string{"--key", keys.SignKey, "--cert", keys.SignCert}
	untrusted := []string{"--key", keys.UntrustedKey, "--cert", keys.UntrustedCert}
	cases := []struct {
		name   string
		args   []string
		signed string
		ok     bool
	}{
		{"sha256", trusted, rootHash, true},
		{"sha384", append([]string{"--md", "sha384"}, trusted...), rootHash, true},
		{"sha512", append([]string{"--md", "sha512"}, trusted...), rootHash, true},
		// pkcs7_find_key matches embedded certificates by issuer and serial
		// only: a SKID-named leaf is looked up in the keyring, which holds
		// only the CA (ENOKEY).
		{"skid", append([]string{"--skid"}, trusted...), rootHash, false},
		{"untrusted", untrusted, rootHash, false},
		{"other-root-hash", trusted, strings.Repeat("0", 64), false},
		{"nocerts", append([]string{"--no-cert"}, trusted...), rootHash, false},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sig := filepath.Join(dir, c.name+".p7s")
			args := append(append([]string{"verity", "sign", "-o", sig}, c.args...), c.signed)
			if code, _, stderr := runCLI(t, args...); code != 0 {
				t.Fatalf("intact verity sign: exit %d %s", code, stderr)
			}
			name := fmt.Sprintf("intact-sign-%d", i)
			out, err := exec.Command(veritysetup, "open", data, name, hashes, rootHash, "--root-hash-signature="+sig).CombinedOutput()
			if err == nil {
				if out, err := exec.Command(veritysetup, "close", name).CombinedOutput(); err != nil {
					t.Errorf("veritysetup close: %v %s", err, out)
				}
			}
			if c.ok && err != nil {
				t.Fatalf("kernel refused our signature: %v %s", err, out)
			}
			if !c.ok && err == nil {
				t.Fatal("kernel accepted a signature it must refuse")
			}
			code, _, stderr := runCLI(t, "verity", "verify-signature", "--ca", keys.CACert, rootHash, sig)
			if (code == 0) != c.ok {
				t.Fatalf("verify-signature exit %d (%s) disagrees with the kernel (accepted=%v)", code, stderr, c.ok)
			}
		})
	}
	// The kernel compares the table's string exactly; veritysetup always
	// writes lowercase, so check the upper-case case with verify-signature.
	sig := filepath.Join(dir, "sha256.p7s")
	if code, _, _ := runCLI(t, "verity", "verify-signature", "--ca", keys.CACert, strings.ToUpper(rootHash), sig); code == 0 {
		t.Fatal("signature over the lowercase root hash verified for the upper-case string")
	}
}
