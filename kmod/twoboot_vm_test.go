package kmod_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/intact-project/intact/driver"
	"github.com/intact-project/intact/efi"
	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/internal/testpki"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/internal/vmtest"
	"github.com/intact-project/intact/internal/vmtest/guest"
	"github.com/intact-project/intact/ipe"
	"github.com/intact-project/intact/keyring"
	"github.com/intact-project/intact/kmod"
	"github.com/intact-project/intact/pkcs7"
	"github.com/intact-project/intact/verity"
	"github.com/intact-project/intact/veritydev"
)

// The two-boot experiments: what root can make the next boot trust through
// UEFI variables, on Debian's 6.12 booted as intact hosts boot (OVMF Secure
// Boot, our db, a signed UKI started by the firmware, no shim). Three boots
// share one OVMF variable store:
//
//  1. root writes a non-volatile MokListRT (shim's GUID) holding an
//     attacker's CA certificate, a MokListXRT revoking Debian's own
//     dummy.ko by file hash, and an authenticated dbx append signed by the
//     KEK; it activates an IPE policy;
//  2. the kernel has read those variables: where the attacker's
//     certificate landed, which modules load, whether IPE under the
//     recommended policy stops the attacker's module and whether the
//     attacker can replace that policy; root adds a key to
//     .secondary_trusted_keys, then deletes the MOK variables (the
//     remedy) and writes MokIgnoreDB;
//  3. what survived: the runtime key, the IPE policies, the MOK variables
//     (gone), dbx (kept), MokIgnoreDB (db no longer loaded).
//
// The host prepares every input (modules signed on the host, signature
// lists, the signed dbx append, signed IPE policies) and runs this test
// binary in the guest (TestTwoBootStageInVM, one stage per boot); the
// guest reports what the kernel and the firmware said, the host asserts.

// shimGUID is SHIM_LOCK_GUID, the vendor GUID of MokListRT, MokListXRT,
// MokIgnoreDB and MokListTrustedRT.
const shimGUID = "605dab50-e046-4300-abb6-3dd810dd8b23"

// EFI signature types (UEFI 2.10, 32.4.1).
const (
	certSHA256GUID     = "c1c41626-504c-4092-aca9-41f936934328"
	certX509SHA256GUID = "3bd2a492-96c0-4079-b420-fcf98ef103ed"
	attackerOwnerGUID  = "a77ac4e2-0bad-4bad-8bad-000000000001"
)

// Attributes of a variable root writes: NV|BS|RT, and without NV.
const (
	attrNVBSRT = 0x7
	attrBSRT   = 0x6
)

// Environment of the guest stage.
const (
	envStage       = "INTACT_TWOBOOT_STAGE"
	envDir         = "INTACT_TWOBOOT_DIR"
	envAttackerCN  = "INTACT_TWOBOOT_ATTACKER_CN"
	envSecondaryCN = "INTACT_TWOBOOT_SECONDARY_CN"
	envDBCN        = "INTACT_TWOBOOT_DB_CN"
	twobootDir     = "/intact/twoboot"
	resultsPrefix  = "TWOBOOT-RESULTS "
)

// The guest files of the experiment (under twobootDir).
const (
	fMokList      = "moklist.esl"  // MokListRT: the attacker's CA certificate
	fMokListX     = "moklistx.esl" // MokListXRT: sha256 of Debian's dummy.ko
	fDBXAppend    = "dbx-kek.auth" // dbx append signed by the KEK
	fDBXBadSigner = "dbx-db.auth"  // the same append signed by the db CA (not a KEK)
	fSecondary    = "secondary.der"
	fSecondary2   = "secondary2.der" // another attacker-signed key, offered after the remedy
	fVerityData   = "verity.data"    // a dm-verity volume of the attacker's ...
	fVerityHash   = "verity.hash"
	fVerityRoot   = "verity.root"   // ... its root hash (hex) ...
	fVeritySig    = "verity.p7s"    // ... signed by the attacker's CA
	fPolicyRogue2 = "attacker2.p7s" // version 1.0.2, signed by the attacker's CA
	fPolicyBoot1  = "boot1.p7s"     // a policy activated in boot 1
	fPolicyDriver = "drivers.p7s"   // the recommended KMODULE policy, signed by the db leaf
	fPolicyRogue  = "attacker.p7s"  // a newer version of it, signed by the attacker's CA
	fBlacklist    = "blacklist.json"
)

// The dummy.ko variants (module name "dummy").
var twobootModules = []string{
	"debian.ko",          // Debian's own signature (build key in .builtin_trusted_keys)
	"mok-ca-nocert.ko",   // the attacker's CA key, no certificate
	"mok-ca-cert.ko",     // the attacker's CA key, certificate embedded
	"mok-leaf-cert.ko",   // a leaf of the attacker's CA, certificate embedded
	"mok-leaf-nocert.ko", // the same leaf, no certificate
	"untrusted.ko",       // an unrelated CA's leaf, certificate embedded
	"db-leaf.ko",         // a leaf of the db CA, certificate embedded
	"dbx-hash.ko",        // the db CA key, no certificate; its file hash goes into dbx
	"dbx-tbs.ko",         // another leaf of the db CA; its TBS hash goes into dbx
}

// blacklistWant are the .blacklist descriptions the variables should
// produce: MokListXRT's and dbx's file hashes, dbx's TBS entry.
type blacklistWant struct {
	DebianBin string `json:"debian_bin"`
	DBXBin    string `json:"dbx_bin"`
	DBXTBS    string `json:"dbx_tbs"`
}

// TestTwoBootMokListInVM boots the same Secure Boot machine three times
// (see the comment above) and asserts every observation. It runs on the
// host (make test-vm sets INTACT_VM_HOST_TESTS=1).
func TestTwoBootMokListInVM(t *testing.T) {
	testutil.RequireHost(t, "boots VMs under QEMU three times with one variable store")
	if os.Getenv("INTACT_VM_HOST_TESTS") != "1" {
		t.Skip("boots VMs under QEMU; make test-vm runs it (INTACT_VM_HOST_TESTS=1)")
	}
	for _, tool := range []string{"qemu-system-x86_64", "mkfs.ext4", "python3", "go"} {
		testutil.RequireTool(t, tool)
	}
	ctx := context.Background()
	wd, _ := os.Getwd()
	root, err := vmtest.RepoRoot(wd)
	if err != nil {
		t.Fatal(err)
	}
	a, err := vmtest.Fetch(ctx, vmtest.FetchOptions{RepoRoot: root})
	if err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// One key hierarchy and one variable store for all boots.
	pki, err := vmtest.NewPKI(filepath.Join(t.TempDir(), "pki"))
	if err != nil {
		t.Fatal(err)
	}
	vars := filepath.Join(t.TempDir(), "vars.fd")
	if err := vmtest.EnrollVars(ctx, a, pki, vars); err != nil {
		t.Fatal(err)
	}
	files, in := twobootInputs(t, a, pki)

	env := []string{envDir + "=" + twobootDir, envAttackerCN + "=" + in.attackerCN,
		envSecondaryCN + "=" + in.secondaryCN, envDBCN + "=" + pki.DB.Root.Certificate.Subject.CommonName}
	boot := func(stage string) map[string]string {
		t.Helper()
		var out bytes.Buffer
		start := time.Now()
		res, err := vmtest.Run(ctx, vmtest.Options{Mode: vmtest.SecureBoot, Vars: vars, PKI: pki, Program: self,
			Args: []string{"-test.run=^TestTwoBootStageInVM$", "-test.v", "-test.count=1"},
			Env:  append([]string{envStage + "=" + stage}, env...), Files: files, NoScratch: true,
			Output: &out, Timeout: 5 * time.Minute, Fetch: vmtest.FetchOptions{RepoRoot: root}})
		if res != nil {
			t.Logf("boot %s: firmware+kernel to init %s, VM %s, with preparation %s", stage,
				res.Boot.Round(time.Millisecond), res.Total.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		}
		if err != nil {
			t.Fatalf("boot %s: %v\n%s", stage, err, out.String())
		}
		got := map[string]string{}
		for _, l := range strings.Split(out.String(), "\n") {
			if i := strings.Index(l, resultsPrefix); i >= 0 {
				if err := json.Unmarshal([]byte(l[i+len(resultsPrefix):]), &got); err != nil {
					t.Fatalf("boot %s: results: %v", stage, err)
				}
			}
		}
		if res.ExitCode != 0 || len(got) == 0 {
			t.Fatalf("boot %s: guest exit %d, %d results:\n%s", stage, res.ExitCode, len(got), out.String())
		}
		return got
	}
	check := func(stage string, got, want map[string]string) {
		t.Helper()
		keys := make([]string, 0, len(got))
		for k := range got {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			t.Logf("RESULT | %s | %s | %s", stage, k, got[k])
		}
		for k, w := range want {
			if g, ok := got[k]; !ok {
				t.Errorf("boot %s: no observation %q", stage, k)
			} else if g != w {
				t.Errorf("boot %s: %s = %s, want %s", stage, k, g, w)
			}
		}
	}

	check("1", boot("1"), map[string]string{
		"kernel loaded MokListRT":              "false",
		"attacker CA in":                       "none",
		"db CA in .platform":                   "true",
		"load debian.ko":                       "0",
		"load mok-ca-cert.ko":                  "EKEYREJECTED",
		"write MokListRT BS|RT (volatile)":     "EINVAL",
		"load dbx-hash.ko":                     "0",
		"load dbx-tbs.ko":                      "0",
		"activate IPE policy":                  "0",
		"write MokListRT NV|BS|RT":             "0",
		"MokListRT attributes":                 "0x7",
		"write MokListXRT NV|BS|RT":            "0",
		"write dbx append signed by the db CA": "EACCES",
		"write dbx append signed by the KEK":   "0",
		"dbx grew by the append":               "true",
	})
	check("2", boot("2"), map[string]string{
		"kernel loaded MokListRT":                                            "true",
		"IPE policies at boot":                                               "none",
		"attacker CA in":                                                     "machine",
		"load debian.ko":                                                     "EKEYREJECTED",
		"load mok-ca-nocert.ko":                                              "0",
		"load mok-ca-cert.ko":                                                "0",
		"load mok-leaf-cert.ko":                                              "0",
		"load mok-leaf-nocert.ko":                                            "EKEYREJECTED",
		"load untrusted.ko":                                                  "EKEYREJECTED",
		"load db-leaf.ko":                                                    "0",
		"load dbx-hash.ko":                                                   "EKEYREJECTED",
		"load dbx-tbs.ko":                                                    "0",
		".blacklist has MokListXRT's debian.ko hash":                         "true",
		".blacklist has dbx's dbx-hash.ko hash":                              "true",
		".blacklist has dbx's TBS entry":                                     "true",
		"add attacker-signed key to .secondary_trusted_keys":                 "0",
		"runtime key in .secondary_trusted_keys":                             "true",
		"db CA in .platform":                                                 "true",
		"activate the recommended IPE policy":                                "0",
		"IPE: load mok-ca-cert.ko":                                           "EACCES",
		"IPE: update to the attacker-signed policy 1.0.1":                    "0",
		"IPE 1.0.1: load mok-ca-cert.ko":                                     "0",
		"open dm-verity signed by the attacker":                              "0",
		"intact-init: distrust .machine":                                     "0",
		"intact-init: keys distrusted":                                       "1",
		"after distrust: .machine linked into .secondary_trusted_keys":       "false",
		"after distrust: load mok-ca-cert.ko":                                "EKEYREJECTED",
		"after distrust: load mok-leaf-cert.ko":                              "EKEYREJECTED",
		"after distrust: load db-leaf.ko":                                    "0",
		"after distrust: open dm-verity signed by the attacker":              "ENOKEY",
		"after distrust: IPE update to the attacker-signed policy 1.0.2":     "ENOKEY",
		"after distrust: add attacker-signed key to .secondary_trusted_keys": "ENOKEY",
		"after distrust: link .machine into .secondary_trusted_keys again":   "EACCES",
		"after relink attempt: .machine linked into .secondary_trusted_keys": "false",
		"delete MokListRT":                                                   "0",
		"delete MokListXRT":                                                  "0",
		"write MokIgnoreDB NV|BS|RT":                                         "0",
	})
	check("3", boot("3"), map[string]string{
		"kernel loaded MokListRT":                "false",
		"IPE policies at boot":                   "none",
		"attacker CA in":                         "none",
		"runtime key in .secondary_trusted_keys": "false",
		"db CA in .platform":                     "false",
		"load mok-ca-cert.ko":                    "EKEYREJECTED",
		"load db-leaf.ko":                        "EKEYREJECTED",
		"load debian.ko":                         "0",
		".blacklist has dbx's dbx-hash.ko hash":  "true",
		".blacklist has dbx's TBS entry":         "true",
		"MokListRT present":                      "false",
	})
}

type twobootIn struct{ attackerCN, secondaryCN string }

// twobootInputs writes every input of the guest stages and returns their
// mapping into the guest.
func twobootInputs(t *testing.T, a *vmtest.Assets, pki *vmtest.PKI) ([]vmtest.FileMap, twobootIn) {
	t.Helper()
	dir := t.TempDir()
	var files []vmtest.FileMap
	put := func(name string, b []byte) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, vmtest.FileMap{Host: p, Guest: twobootDir + "/" + name})
	}
	signer := func(c *testpki.Cert) *pkcs7.Signer {
		s, err := pkcs7.NewSigner(c.Certificate, c.Key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	attacker, err := testpki.New(testpki.Options{Name: "intact attacker MOK"})
	if err != nil {
		t.Fatal(err)
	}
	secondary, err := attacker.IssueLeaf("intact attacker runtime secondary key", "")
	if err != nil {
		t.Fatal(err)
	}
	dbxLeaf, err := pki.DB.IssueLeaf("intact test revoked by a runtime dbx append", "")
	if err != nil {
		t.Fatal(err)
	}

	// Debian's dummy.ko (signed by Debian's build key) and its variants.
	mods, _ := filepath.Glob(filepath.Join(a.ModulesDir(), "kernel/drivers/net/dummy.ko*"))
	if len(mods) != 1 {
		t.Fatalf("dummy module: %v", mods)
	}
	packed, err := os.ReadFile(mods[0])
	if err != nil {
		t.Fatal(err)
	}
	debian, _, err := kmod.Decompress(packed)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := kmod.Strip(debian)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(s *pkcs7.Signer, noCert bool) []byte {
		b, err := kmod.Sign(raw, s, kmod.SignOptions{NoCerts: noCert})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	mod := map[string][]byte{
		"debian.ko":          debian,
		"mok-ca-nocert.ko":   sign(signer(attacker.Root), true),
		"mok-ca-cert.ko":     sign(signer(attacker.Root), false),
		"mok-leaf-cert.ko":   sign(signer(attacker.Leaf), false),
		"mok-leaf-nocert.ko": sign(signer(attacker.Leaf), true),
		"untrusted.ko":       sign(signer(pki.Untrusted.Leaf), false),
		"db-leaf.ko":         sign(signer(pki.DB.Leaf), false),
		"dbx-hash.ko":        sign(signer(pki.DB.Root), true),
		"dbx-tbs.ko":         sign(signer(dbxLeaf), false),
	}
	for _, n := range twobootModules {
		put(n, mod[n])
	}

	// MokListRT: the attacker's CA as an EFI_CERT_X509 list.
	esl, err := efi.SignatureList(attacker.Root.Certificate, attackerOwnerGUID)
	if err != nil {
		t.Fatal(err)
	}
	put(fMokList, esl)
	// MokListXRT: Debian's dummy.ko by the SHA-256 of the whole file (what
	// Debian's module hash blacklist check hashes).
	debianHash := sha256.Sum256(debian)
	put(fMokListX, vmtest.SignatureList(certSHA256GUID, attackerOwnerGUID, debianHash[:]))
	// dbx append: dbx-hash.ko by file hash, dbxLeaf by TBS hash (the UEFI
	// format: hash and a zero revocation time).
	dbxHash := sha256.Sum256(mod["dbx-hash.ko"])
	tbs := kmod.TBSHash(dbxLeaf.Certificate)
	lists := append(vmtest.SignatureList(certSHA256GUID, attackerOwnerGUID, dbxHash[:]),
		vmtest.SignatureList(certX509SHA256GUID, attackerOwnerGUID, append(tbs[:], make([]byte, 16)...))...)
	for _, x := range []struct {
		name string
		by   *testpki.Cert
	}{{fDBXAppend, pki.KEK.Root}, {fDBXBadSigner, pki.DB.Root}} {
		auth, err := efi.AuthVariable(efi.VarDBX.Append(), lists, efi.KeyPair{Certificate: x.by.Certificate, Key: x.by.Key})
		if err != nil {
			t.Fatal(err)
		}
		put(x.name, auth)
	}
	bl, _ := json.Marshal(blacklistWant{DebianBin: "bin:" + hex.EncodeToString(debianHash[:]),
		DBXBin: "bin:" + hex.EncodeToString(dbxHash[:]), DBXTBS: "tbs:" + hex.EncodeToString(tbs[:]) + strings.Repeat("00", 16)})
	put(fBlacklist, bl)
	put(fSecondary, secondary.Certificate.Raw)
	secondary2, err := attacker.IssueLeaf("intact attacker key offered after the remedy", "")
	if err != nil {
		t.Fatal(err)
	}
	put(fSecondary2, secondary2.Certificate.Raw)

	// The attacker's dm-verity volume: 16 blocks, tree in its own file,
	// root hash signed by the attacker's CA.
	vp := twobootVerityParams()
	data := make([]byte, int(vp.DataBlocks)*int(vp.DataBlockSize))
	rand.Read(data)
	put(fVerityData, data)
	hashFile, err := os.Create(filepath.Join(dir, fVerityHash))
	if err != nil {
		t.Fatal(err)
	}
	res, err := verity.Format(context.Background(), bytes.NewReader(data), vp, hashFile, nil)
	if err := errors.Join(err, hashFile.Close()); err != nil {
		t.Fatal(err)
	}
	files = append(files, vmtest.FileMap{Host: hashFile.Name(), Guest: twobootDir + "/" + fVerityHash})
	rootHex := hex.EncodeToString(res.RootHash)
	put(fVerityRoot, []byte(rootHex))
	vsig, err := signer(attacker.Root).Sign([]byte(rootHex), pkcs7.SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	put(fVeritySig, vsig)

	// IPE policies: one for boot 1, the recommended driver policy (signed
	// by the db leaf, as the host's policy is) naming a driver volume's
	// root hash, and the attacker's newer version of it.
	policy := func(s *pkcs7.Signer, text string) []byte {
		b, err := ipe.Sign([]byte(text), s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	volume := make([]byte, 32)
	rand.Read(volume)
	put(fPolicyBoot1, policy(signer(pki.DB.Leaf), "policy_name=intact_twoboot policy_version=1.0.0\nDEFAULT action=ALLOW\n"))
	put(fPolicyDriver, policy(signer(pki.DB.Leaf), "policy_name=intact_drivers policy_version=1.0.0\nDEFAULT action=ALLOW\n"+
		"DEFAULT op=KMODULE action=DENY\nDEFAULT op=FIRMWARE action=DENY\n"+strings.Join(driver.Rules(volume), "\n")+"\n"))
	put(fPolicyRogue, policy(signer(attacker.Root), "policy_name=intact_drivers policy_version=1.0.1\nDEFAULT action=ALLOW\n"))
	put(fPolicyRogue2, policy(signer(attacker.Root), "policy_name=intact_drivers policy_version=1.0.2\nDEFAULT action=ALLOW\n"))
	return files, twobootIn{attackerCN: attacker.Root.Certificate.Subject.CommonName, secondaryCN: secondary.Certificate.Subject.CommonName}
}

// TestTwoBootStageInVM is one boot of TestTwoBootMokListInVM inside the
// guest; it does nothing unless that test started it. It fails only when
// the experiment cannot run; what the kernel says is reported, and the
// host asserts it.
func TestTwoBootStageInVM(t *testing.T) {
	testutil.RequireVM(t)
	stage := os.Getenv(envStage)
	if stage == "" {
		t.Skip("one boot of TestTwoBootMokListInVM, which runs it on the host with " + envStage + " set")
	}
	guest.RequireTrustedKeys(t)
	g := &twobootGuest{t: t, dir: os.Getenv(envDir), res: map[string]string{}}
	defer func() {
		b, _ := json.Marshal(g.res)
		fmt.Printf("%s%s\n", resultsPrefix, b)
	}()
	if ld, _ := os.ReadFile("/sys/kernel/security/lockdown"); !bytes.Contains(ld, []byte("[integrity]")) {
		t.Fatalf("kernel not locked down: %q", ld)
	}
	if se, _ := os.ReadFile("/sys/module/module/parameters/sig_enforce"); strings.TrimSpace(string(se)) != "Y" {
		t.Fatalf("module.sig_enforce is %q", se)
	}
	st, err := (efi.EFIVars{}).State()
	if err != nil || !st.SecureBoot || st.SetupMode {
		t.Fatalf("Secure Boot state %+v: %v", st, err)
	}
	// A tmpfs of our own: the modules are loaded from there (IPE sees no
	// dm-verity property on it).
	g.tmp = filepath.Join(t.TempDir(), "tmpfs")
	os.MkdirAll(g.tmp, 0o755)
	if err := linux.Mount("tmpfs", g.tmp, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer linux.Unmount(g.tmp, 0)
	for _, n := range twobootModules {
		b, err := os.ReadFile(filepath.Join(g.dir, n))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(g.tmp, n), b, 0o644)
	}
	var bl blacklistWant
	if err := json.Unmarshal(g.file(fBlacklist), &bl); err != nil {
		t.Fatal(err)
	}
	// What the kernel said at boot about the UEFI certificate sources.
	var bootLog []string
	for _, l := range g.log.since(t) {
		if strings.Contains(l, "UEFI:") || strings.Contains(l, "MokList") || strings.Contains(l, "eyring initialized") {
			bootLog = append(bootLog, l)
		}
	}
	g.res["kernel log at boot"] = strings.Join(bootLog, " | ")
	g.set("kernel loaded MokListRT", fmt.Sprint(strings.Contains(g.res["kernel log at boot"], "UEFI:MokListRT")))
	attacker := os.Getenv(envAttackerCN)
	g.set("db CA in .platform", fmt.Sprint(g.where(os.Getenv(envDBCN)) == "platform"))
	switch stage {
	case "1":
		g.set("attacker CA in", g.where(attacker))
		for _, n := range []string{"debian.ko", "mok-ca-cert.ko", "dbx-hash.ko", "dbx-tbs.ko"} {
			g.load(n)
		}
		g.setErr("activate IPE policy", deploy(g.file(fPolicyBoot1), false))
		// A volatile MokListRT cannot be created at run time; if the
		// firmware took it, remove it before the real write.
		err := g.writeVar("MokListRT", shimGUID, attrBSRT, g.file(fMokList))
		g.setErr("write MokListRT BS|RT (volatile)", err)
		if err == nil {
			g.setErr("delete volatile MokListRT", g.deleteVar("MokListRT", shimGUID))
		}
		g.setErr("write MokListRT NV|BS|RT", g.writeVar("MokListRT", shimGUID, attrNVBSRT, g.file(fMokList)))
		if attr, _, err := (efi.EFIVars{}).Read("MokListRT", shimGUID); err == nil {
			g.set("MokListRT attributes", fmt.Sprintf("%#x", attr))
		} else {
			g.setErr("MokListRT attributes", err)
		}
		g.setErr("write MokListXRT NV|BS|RT", g.writeVar("MokListXRT", shimGUID, attrNVBSRT, g.file(fMokListX)))
		_, before, _ := (efi.EFIVars{}).Read(efi.VarDBX.Name, efi.VarDBX.GUID)
		g.setErr("write dbx append signed by the db CA", (efi.EFIVars{}).Write(efi.VarDBX.Append(), g.file(fDBXBadSigner)))
		g.setErr("write dbx append signed by the KEK", (efi.EFIVars{}).Write(efi.VarDBX.Append(), g.file(fDBXAppend)))
		_, after, _ := (efi.EFIVars{}).Read(efi.VarDBX.Name, efi.VarDBX.GUID)
		g.set("dbx grew by the append", fmt.Sprint(len(after) > len(before)))
		g.t.Logf("dbx: %d bytes before, %d after", len(before), len(after))
	case "2":
		g.policiesAtBoot()
		g.set("attacker CA in", g.where(attacker))
		g.blacklist(bl, true)
		for _, n := range twobootModules {
			g.load(n)
		}
		// A key signed by the attacker's CA, added at run time.
		ring, err := keyring.FindKeyring(".secondary_trusted_keys")
		if err != nil {
			t.Fatal(err)
		}
		_, err = keyring.AddCertificate(g.file(fSecondary), ring)
		g.setErr("add attacker-signed key to .secondary_trusted_keys", err)
		g.set("runtime key in .secondary_trusted_keys", fmt.Sprint(g.where(os.Getenv(envSecondaryCN)) == "secondary"))
		// IPE as recommended: KMODULE only from a named driver volume.
		g.setErr("activate the recommended IPE policy", deploy(g.file(fPolicyDriver), false))
		g.load("mok-ca-cert.ko", "IPE: ")
		g.setErr("IPE: update to the attacker-signed policy 1.0.1", deploy(g.file(fPolicyRogue), true))
		g.load("mok-ca-cert.ko", "IPE 1.0.1: ")
		// Code execution: a dm-verity volume whose root hash the attacker
		// signed opens with a kernel-verified signature, which IPE's
		// dmverity_signature=TRUE (every intact host's policy) trusts.
		g.setErr("open dm-verity signed by the attacker", g.openVerity())
		// intact-init's remedy, at the start of every boot: unlink .machine.
		descs, err := keyring.DistrustMachine()
		g.setErr("intact-init: distrust .machine", err)
		g.set("intact-init: keys distrusted", fmt.Sprint(len(descs)))
		g.set("after distrust: .machine linked into .secondary_trusted_keys", fmt.Sprint(g.machineLinked()))
		g.load("mok-ca-cert.ko", "after distrust: ")
		g.load("mok-leaf-cert.ko", "after distrust: ")
		g.load("db-leaf.ko", "after distrust: ")
		g.setErr("after distrust: open dm-verity signed by the attacker", g.openVerity())
		g.setErr("after distrust: IPE update to the attacker-signed policy 1.0.2", deploy(g.file(fPolicyRogue2), true))
		_, err = keyring.AddCertificate(g.file(fSecondary2), ring)
		g.setErr("after distrust: add attacker-signed key to .secondary_trusted_keys", err)
		if m, err := keyring.FindKeyring(keyring.MachineKeyring); err == nil {
			g.setErr("after distrust: link .machine into .secondary_trusted_keys again", keyring.Link(m, ring))
		}
		g.set("after relink attempt: .machine linked into .secondary_trusted_keys", fmt.Sprint(g.machineLinked()))
		// The remedy: delete the variables; and MokIgnoreDB for boot 3.
		g.setErr("delete MokListRT", g.deleteVar("MokListRT", shimGUID))
		g.setErr("delete MokListXRT", g.deleteVar("MokListXRT", shimGUID))
		g.setErr("write MokIgnoreDB NV|BS|RT", g.writeVar("MokIgnoreDB", shimGUID, attrNVBSRT, []byte{1}))
	case "3":
		g.policiesAtBoot()
		g.set("attacker CA in", g.where(attacker))
		g.set("runtime key in .secondary_trusted_keys", fmt.Sprint(g.where(os.Getenv(envSecondaryCN)) == "secondary"))
		g.blacklist(bl, false)
		for _, n := range []string{"mok-ca-cert.ko", "db-leaf.ko", "debian.ko"} {
			g.load(n)
		}
		_, _, err := (efi.EFIVars{}).Read("MokListRT", shimGUID)
		g.set("MokListRT present", fmt.Sprint(err == nil))
		g.deleteVar("MokIgnoreDB", shimGUID)
	default:
		t.Fatalf("unknown stage %q", stage)
	}
}

type twobootGuest struct {
	t        *testing.T
	dir, tmp string
	res      map[string]string
	log      kmsg
}

func (g *twobootGuest) set(k, v string) {
	g.res[k] = v
	g.t.Logf("%s: %s", k, v)
}

// setErr records err's errno name (and logs its text).
func (g *twobootGuest) setErr(k string, err error) {
	g.set(k, errName(err))
	if err != nil {
		g.t.Logf("  %v", err)
	}
}

func (g *twobootGuest) file(name string) []byte {
	b, err := os.ReadFile(filepath.Join(g.dir, name))
	if err != nil {
		g.t.Fatal(err)
	}
	return b
}

// load loads a module variant from the tmpfs with finit_module and
// unloads it again.
func (g *twobootGuest) load(name string, prefix ...string) {
	if kmod.IsLoaded("", "dummy") {
		if err := kmod.Unload("dummy"); err != nil {
			g.t.Fatal(err)
		}
	}
	g.log.since(g.t)
	_, err := kmod.Load(filepath.Join(g.tmp, name), kmod.LoadOptions{})
	g.setErr(strings.Join(prefix, "")+"load "+name, err)
	if l := relevant(g.log.since(g.t)); err != nil && l != "" {
		g.res["kernel log: "+strings.Join(prefix, "")+"load "+name] = l
	}
	if kmod.IsLoaded("", "dummy") {
		if err := kmod.Unload("dummy"); err != nil {
			g.t.Fatal(err)
		}
	}
}

// where names the kernel keyring holding a key whose description starts
// with cn (X.509 keys are described "CN: key identifier").
func (g *twobootGuest) where(cn string) string {
	for _, r := range []struct{ ring, name string }{{".builtin_trusted_keys", "builtin"},
		{".secondary_trusted_keys", "secondary"}, {".machine", "machine"}, {".platform", "platform"}} {
		id, err := keyring.FindKeyring(r.ring)
		if err != nil {
			continue
		}
		m, err := keyring.Members(id)
		if err != nil {
			g.t.Fatalf("members of %s: %v", r.ring, err)
		}
		for _, k := range m {
			d, err := keyring.Describe(k)
			if err == nil && d.Type == "asymmetric" && strings.HasPrefix(d.Description, cn+": ") {
				return r.name
			}
		}
	}
	return "none"
}

// machineLinked reports whether .machine is a member of
// .secondary_trusted_keys.
func (g *twobootGuest) machineLinked() bool {
	m, err1 := keyring.FindKeyring(keyring.MachineKeyring)
	sec, err2 := keyring.FindKeyring(keyring.SecondaryKeyring)
	if err1 != nil || err2 != nil {
		g.t.Fatalf("keyrings: %v %v", err1, err2)
	}
	members, err := keyring.Members(sec)
	if err != nil {
		g.t.Fatal(err)
	}
	return slices.Contains(members, m)
}

// openVerity opens (and closes again) the attacker's dm-verity volume
// with its signature.
func (g *twobootGuest) openVerity() error {
	root, err := hex.DecodeString(string(g.file(fVerityRoot)))
	if err != nil {
		g.t.Fatal(err)
	}
	ctx := context.Background()
	d, err := veritydev.Open(ctx, "intact-attacker", filepath.Join(g.dir, fVerityData), filepath.Join(g.dir, fVerityHash),
		twobootVerityParams(), root, g.file(fVeritySig))
	if err != nil {
		return err
	}
	if !d.Signed {
		g.t.Errorf("attacker volume opened without its signature")
	}
	return d.Close(ctx)
}

// twobootVerityParams are the attacker volume's dm-verity parameters.
func twobootVerityParams() verity.Params {
	p := verity.DefaultParams()
	p.Salt = bytes.Repeat([]byte{0x5a}, 32)
	p.DataBlocks = 16
	return p
}

// blacklist reports whether .blacklist holds the entries the variables
// should have produced.
func (g *twobootGuest) blacklist(w blacklistWant, mokx bool) {
	all, err := keyring.ProcKeys()
	if err != nil {
		g.t.Fatal(err)
	}
	have := map[string]bool{}
	for _, k := range all {
		if k.Type == "blacklist" {
			d, _, _ := strings.Cut(k.Description, ": ")
			have[d] = true
		}
	}
	if mokx {
		g.set(".blacklist has MokListXRT's debian.ko hash", fmt.Sprint(have[w.DebianBin]))
	}
	g.set(".blacklist has dbx's dbx-hash.ko hash", fmt.Sprint(have[w.DBXBin]))
	g.set(".blacklist has dbx's TBS entry", fmt.Sprint(have[w.DBXTBS]))
}

func (g *twobootGuest) policiesAtBoot() {
	ps, err := (&ipe.SecurityFS{}).List(context.Background())
	if err != nil {
		g.t.Fatal(err)
	}
	var names []string
	for _, p := range ps {
		names = append(names, p.Name)
	}
	if len(names) == 0 {
		names = []string{"none"}
	}
	g.set("IPE policies at boot", strings.Join(names, ","))
}

// writeVar creates or replaces a variable through efivarfs (attributes
// and data in one write).
func (g *twobootGuest) writeVar(name, guid string, attr uint32, data []byte) error {
	return (efi.EFIVars{}).Write(efi.Variable{Name: name, GUID: guid, Attributes: attr}, data)
}

// deleteVar deletes a variable through efivarfs (clearing the immutable
// flag efivarfs may set).
func (g *twobootGuest) deleteVar(name, guid string) error {
	p := filepath.Join(efi.DefaultEFIVars, name+"-"+guid)
	if f, err := os.Open(p); err == nil {
		linux.ClearImmutable(f)
		f.Close()
	}
	return os.Remove(p)
}

func deploy(blob []byte, update bool) error {
	fs := &ipe.SecurityFS{}
	ctx := context.Background()
	if update {
		_, err := fs.Update(ctx, blob)
		return err
	}
	p, err := fs.Load(ctx, blob)
	if err != nil {
		return err
	}
	return fs.Activate(ctx, p.Name)
}

// errName is "0" for success, the errno's name, or the error's text.
func errName(err error) string {
	if err == nil {
		return "0"
	}
	var e linux.Errno
	if errors.As(err, &e) {
		switch e {
		case linux.EROFS:
			return "EROFS"
		case linux.ENOSPC:
			return "ENOSPC"
		case linux.EIO:
			return "EIO"
		}
		return errnoName(e)
	}
	return err.Error()
}
