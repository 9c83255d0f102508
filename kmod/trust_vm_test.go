package kmod_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/intact-project/intact/driver"
	"github.com/intact-project/intact/erofs"
	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/internal/testpki"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/internal/vmtest/guest"
	"github.com/intact-project/intact/ipe"
	"github.com/intact-project/intact/keyring"
	"github.com/intact-project/intact/kmod"
	"github.com/intact-project/intact/pkcs7"
	"github.com/intact-project/intact/verity"
	"github.com/intact-project/intact/veritydev"
)

// TestModuleDir is where `make test-vm` carries the out-of-tree test module
// (internal/vmtest/cmd/vmkbuild, kmod/testdata/testmod): v1/ and v2/.
const TestModuleDir = "/intact/testmod"

const modName = "intact_testmod"

// kmsg reads the kernel log records newer than the last call.
type kmsg struct{ seq int64 }

func (k *kmsg) since(t *testing.T) []string {
	t.Helper()
	f, err := os.OpenFile("/dev/kmsg", os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("open /dev/kmsg: %v", err)
	}
	defer f.Close()
	var out []string
	buf := make([]byte, 8192)
	for {
		// O_NONBLOCK files go through Go's poller, which waits instead of
		// returning EAGAIN: a short deadline ends the read at the end of
		// the log.
		f.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := f.Read(buf)
		if err != nil {
			break
		}
		rec := string(buf[:n])
		head, msg, ok := strings.Cut(rec, ";")
		if !ok {
			continue
		}
		fields := strings.Split(head, ",")
		if len(fields) < 2 {
			continue
		}
		seq, _ := strconv.ParseInt(fields[1], 10, 64)
		if seq <= k.seq {
			continue
		}
		k.seq = seq
		msg, _, _ = strings.Cut(msg, "\n")
		out = append(out, msg)
	}
	return out
}

// relevant picks the log lines that say why a load or request failed.
func relevant(lines []string) string {
	var keep []string
	for _, l := range lines {
		for _, w := range []string{"Loading of", "module", "blacklisted", "Cert", "ipe_op", "firmware", "intact_testmod", "PKCS#7", "X.509", "Invalid", "Direct firmware", "failed with error", "Request for unknown", "key"} {
			if strings.Contains(l, w) {
				keep = append(keep, l)
				break
			}
		}
	}
	return strings.Join(keep, " | ")
}

func errnoOf(err error) linux.Errno {
	if err == nil {
		return 0
	}
	var e linux.Errno
	if errors.As(err, &e) {
		return e
	}
	return linux.EINVAL
}

func errnoName(e linux.Errno) string {
	if e == 0 {
		return "0"
	}
	names := map[linux.Errno]string{linux.EKEYREJECTED: "EKEYREJECTED", linux.EACCES: "EACCES", linux.EPERM: "EPERM",
		linux.ENOKEY: "ENOKEY", linux.EBADMSG: "EBADMSG", linux.ENOEXEC: "ENOEXEC", linux.EINVAL: "EINVAL", linux.ENOENT: "ENOENT",
		linux.EEXIST: "EEXIST", linux.ESTALE: "ESTALE"}
	if n, ok := names[e]; ok {
		return n
	}
	return fmt.Sprintf("errno %d", int(e))
}

type keys struct {
	ca                        *x509.Certificate
	caSigner, leaf, untrusted *pkcs7.Signer
	revokedTBS, revokedX509   *pkcs7.Signer
	verifyTrust               kmod.VerifyOptions
	guest                     guest.Keys
}

func loadKeys(t *testing.T) *keys {
	g := guest.RequireTrustedKeys(t)
	if g.CAKey == "" || g.RevokedTBSKey == "" {
		t.Fatal("guest lacks INTACT_VM_CA_KEY / INTACT_VM_REVOKED_*: harness older than this test")
	}
	signer := func(key, cert string) *pkcs7.Signer {
		s, err := pkcs7.LoadSigner(key, cert)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	k := &keys{guest: g, caSigner: signer(g.CAKey, g.CACert), leaf: signer(g.SignKey, g.SignCert),
		untrusted: signer(g.UntrustedKey, g.UntrustedCert), revokedTBS: signer(g.RevokedTBSKey, g.RevokedTBSCert),
		revokedX509: signer(g.RevokedX509Key, g.RevokedX509Cert)}
	k.ca = k.caSigner.Certificate
	// What this kernel trusts for modules: the db CA (platform keyring,
	// Debian's retry); what its blacklist holds: the TBS entry of dbx. The
	// dbx entry that holds a whole certificate is not loaded by a kernel
	// without CONFIG_SYSTEM_REVOCATION_LIST, which Debian's lacks.
	k.verifyTrust = kmod.VerifyOptions{Trusted: []*x509.Certificate{k.ca}}
	// What the kernel's blacklist holds, as it loaded dbx: every
	// "tbs:<sha256>" key becomes a revoked TBS hash for the prediction.
	all, err := keyring.ProcKeys()
	if err != nil {
		t.Fatal(err)
	}
	want := kmod.TBSHash(k.revokedTBS.Certificate)
	wantHex := hex.EncodeToString(want[:])
	found := false
	for _, pk := range all {
		if pk.Type != "blacklist" {
			continue
		}
		desc, _, _ := strings.Cut(pk.Description, ":"+" ")
		t.Logf("BLACKLIST | %s (%d hex digits after tbs:)", desc, len(strings.TrimPrefix(desc, "tbs:")))
		if strings.HasPrefix(desc, "tbs:"+wantHex) {
			found = true
		}
		if b, err := hex.DecodeString(strings.TrimPrefix(desc, "tbs:")); err == nil && strings.HasPrefix(desc, "tbs:") && len(b) == 32 {
			k.verifyTrust.RevokedTBS = append(k.verifyTrust.RevokedTBS, [32]byte(b))
		}
	}
	if !found {
		t.Errorf("the kernel's .blacklist has no entry for the dbx TBS hash %s", wantHex)
	}
	return k
}

// variant is one signed form of the test module.
type variant struct {
	name string
	file string // file name in the volume and in tmpfs
	data []byte
}

func buildVariants(t *testing.T, k *keys, raw []byte) []variant {
	sign := func(s *pkcs7.Signer, o kmod.SignOptions) []byte {
		b, err := kmod.Sign(raw, s, o)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	leafCert := sign(k.leaf, kmod.SignOptions{})
	xz, err := kmod.Compress(leafCert, kmod.XZ)
	if err != nil {
		t.Fatal(err)
	}
	return []variant{
		{"unsigned", "unsigned.ko", raw},
		{"db key itself, no certificate", "dbkey.ko", sign(k.caSigner, kmod.SignOptions{NoCerts: true})},
		{"leaf of db, no certificate", "leaf-nocert.ko", sign(k.leaf, kmod.SignOptions{NoCerts: true})},
		{"leaf of db, certificate embedded", "leaf-cert.ko", leafCert},
		{"leaf of db, certificate embedded, xz", "leaf-cert.ko.xz", xz},
		{"untrusted key, certificate embedded", "untrusted.ko", sign(k.untrusted, kmod.SignOptions{})},
		{"leaf of db revoked in dbx by TBS hash", "revoked-tbs.ko", sign(k.revokedTBS, kmod.SignOptions{})},
		{"leaf of db revoked in dbx by certificate", "revoked-x509.ko", sign(k.revokedX509, kmod.SignOptions{})},
	}
}

// volume packs dir as an EROFS image with an appended verity tree, signs
// the root hash with s (nil: unsigned), opens and mounts it.
func volume(t *testing.T, dir, name string, s *pkcs7.Signer) (string, []byte) {
	t.Helper()
	img := filepath.Join(t.TempDir(), name+".img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := erofs.NewWriter(f, erofs.Options{Layout: erofs.LayoutFull})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.AddDir(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	res, err := w.Finish(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(res.Head, 0)
	p := verity.DefaultParams()
	p.DataBlocks = uint64(res.Size) / uint64(p.DataBlockSize)
	p.HashOffset = uint64(res.Size)
	p.Salt = bytes.Repeat([]byte{7}, 32)
	vr, err := verity.Format(context.Background(), f, p, f, nil)
	if err != nil {
		t.Fatal(err)
	}
	var sig []byte
	if s != nil {
		if sig, err = s.Sign([]byte(verity.RootHashHex(vr.RootHash)), pkcs7.SignOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	d, err := veritydev.OpenConfig(context.Background(), veritydev.Config{Name: name, Data: img, Params: p, RootHash: vr.RootHash, Signature: sig})
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	mnt := filepath.Join(t.TempDir(), "mnt")
	os.MkdirAll(mnt, 0o755)
	if err := linux.Mount(d.Path, mnt, "erofs", linux.MS_RDONLY, ""); err != nil {
		d.Close(context.Background())
		t.Fatal(err)
	}
	t.Cleanup(func() {
		linux.Unmount(mnt, 0)
		d.Close(context.Background())
	})
	return mnt, vr.RootHash
}

type recorder struct {
	t   *testing.T
	log kmsg
}

// result prints one measured cell in a grep-able form for docs/drivers.md.
func (r *recorder) result(model, cas, source, ipeState string, err error) {
	lines := relevant(r.log.since(r.t))
	r.t.Logf("RESULT | %s | %s | %s | %s | %s | %s", model, cas, source, ipeState, errnoName(errnoOf(err)), lines)
}

func unloadIfLoaded(t *testing.T) {
	if kmod.IsLoaded("", modName) {
		if err := kmod.Unload(modName); err != nil {
			t.Fatalf("unload: %v", err)
		}
	}
}

// tryLoad loads path, checks the outcome against want (0: loads) and
// unloads again.
func tryLoad(t *testing.T, r *recorder, model, cas, source, ipeState, path string, want linux.Errno) {
	t.Helper()
	unloadIfLoaded(t)
	_, err := kmod.Load(path, kmod.LoadOptions{})
	r.result(model, cas, source, ipeState, err)
	if got := errnoOf(err); got != want {
		t.Errorf("%s from %s (%s): kernel says %s (%v), want %s", cas, source, ipeState, errnoName(got), err, errnoName(want))
	}
	unloadIfLoaded(t)
}

func readParam(t *testing.T, name string) string {
	b, err := os.ReadFile("/sys/module/" + modName + "/parameters/" + name)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return strings.TrimSpace(string(b))
}

// requestFirmware makes the loaded test module request name with the
// firmware search path set to dir, and returns fw_status and fw_crc32.
func requestFirmware(t *testing.T, dir, name string) (int, uint32) {
	t.Helper()
	if err := os.WriteFile(driver.FirmwarePathParam, []byte(dir), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/sys/module/"+modName+"/parameters/request", []byte(name), 0o200); err != nil {
		t.Fatalf("request firmware: %v", err)
	}
	st, _ := strconv.Atoi(readParam(t, "fw_status"))
	crc, _ := strconv.ParseUint(readParam(t, "fw_crc32"), 10, 32)
	return st, uint32(crc)
}

func deployPolicy(t *testing.T, s *pkcs7.Signer, text string, update bool) error {
	t.Helper()
	blob, err := ipe.Sign([]byte(text), s)
	if err != nil {
		t.Fatal(err)
	}
	fs := &ipe.SecurityFS{}
	if update {
		_, err = fs.Update(context.Background(), blob)
		return err
	}
	p, err := fs.Load(context.Background(), blob)
	if err != nil {
		return err
	}
	return fs.Activate(context.Background(), p.Name)
}

// TestTrustModelsInVM measures both trust models for an out-of-tree
// module on Debian's 6.12 under Secure Boot (db = the test CA): every
// signature form from a signed verity volume and from tmpfs, without IPE,
// with IPE trusting signed verity volumes, and with IPE trusting only one
// volume's root hash; firmware from the volume and from tmpfs; what root
// can do to the keyrings; revocation and rollback in each model. Each cell
// is asserted, and every signature verdict must equal kmod.Verify's
// prediction. The RESULT lines are the table in docs/drivers.md.
func TestTrustModelsInVM(t *testing.T) {
	testutil.RequireVM(t)
	k := loadKeys(t)
	v1raw, err1 := os.ReadFile(filepath.Join(TestModuleDir, "v1", modName+".ko"))
	v2raw, err2 := os.ReadFile(filepath.Join(TestModuleDir, "v2", modName+".ko"))
	if err1 != nil || err2 != nil {
		testutil.Unavailable(t, fmt.Sprintf("test module not carried into the guest (make test-vm builds it with vmkbuild): %v %v", err1, err2))
	}
	if ld, _ := os.ReadFile("/sys/kernel/security/lockdown"); !bytes.Contains(ld, []byte("[integrity]")) {
		t.Fatalf("kernel not locked down: %q", ld)
	}
	if se, _ := os.ReadFile("/sys/module/module/parameters/sig_enforce"); strings.TrimSpace(string(se)) != "Y" {
		t.Fatalf("module.sig_enforce is %q, want Y (IMA's Secure Boot arch policy)", se)
	}
	r := &recorder{t: t}
	r.log.since(t)
	uname, _ := linux.Uname()
	if info, err := kmod.ReadInfo(v2raw); err != nil || info.KernelRelease() != uname {
		t.Fatalf("test module vermagic %v for kernel %s: %v", info, uname, err)
	}
	// The variants in a signed verity volume and in tmpfs.
	vars := buildVariants(t, k, v2raw)
	volDir := filepath.Join(t.TempDir(), "vol")
	tmpDir := filepath.Join(t.TempDir(), "tmpfs")
	fwBlob := make([]byte, 12345)
	rand.Read(fwBlob)
	fwCRC := ^crc32.ChecksumIEEE(fwBlob) // crc32_le(~0, data) without the final inversion
	for _, d := range []string{volDir, tmpDir} {
		os.MkdirAll(filepath.Join(d, "fw"), 0o755)
		for _, v := range vars {
			if err := os.WriteFile(filepath.Join(d, v.file), v.data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		os.WriteFile(filepath.Join(d, "fw", "intact-test.fw"), fwBlob, 0o644)
	}
	verityDir, _ := volume(t, volDir, "intact-kmod-variants", k.leaf)

	// The prediction for each variant.
	want := map[string]linux.Errno{}
	for _, v := range vars {
		raw, _, err := kmod.Decompress(v.data)
		if err != nil {
			t.Fatal(err)
		}
		p, err := kmod.Verify(raw, k.verifyTrust)
		if err != nil {
			t.Fatal(err)
		}
		want[v.name] = p.Errno
		t.Logf("PREDICT | %s | loads=%v %s %s | %s", v.name, p.Loads, p.ErrnoName, p.Reason, p.KernelLog)
	}

	matrix := func(ipeState string, tmpfsWant func(linux.Errno) linux.Errno) {
		for _, v := range vars {
			tryLoad(t, r, "signature", v.name, "signed verity volume", ipeState, filepath.Join(verityDir, v.file), want[v.name])
			tryLoad(t, r, "signature", v.name, "tmpfs", ipeState, filepath.Join(tmpDir, v.file), tmpfsWant(want[v.name]))
		}
	}
	fromMemory := func(ipeState string, wantErr linux.Errno) {
		unloadIfLoaded(t)
		err := linux.InitModule(vars[3].data, "")
		r.result("signature", vars[3].name+", init_module from memory", "memory", ipeState, err)
		if got := errnoOf(err); got != wantErr {
			t.Errorf("init_module from memory (%s): %s, want %s", ipeState, errnoName(got), errnoName(wantErr))
		}
		unloadIfLoaded(t)
	}
	firmware := func(ipeState string, tmpfsWant func(int) bool) {
		unloadIfLoaded(t)
		if _, err := kmod.Load(filepath.Join(verityDir, "leaf-cert.ko"), kmod.LoadOptions{}); err != nil {
			t.Fatalf("load the test module for firmware: %v", err)
		}
		r.log.since(t)
		st, crc := requestFirmware(t, filepath.Join(verityDir, "fw"), "intact-test.fw")
		r.result("firmware", "firmware blob", "signed verity volume", ipeState, errnoFromStatus(st))
		if st != 0 || crc != fwCRC {
			t.Errorf("firmware from the verity volume (%s): status %d crc %08x, want 0 and %08x", ipeState, st, crc, fwCRC)
		}
		st, crc = requestFirmware(t, filepath.Join(tmpDir, "fw"), "intact-test.fw")
		r.result("firmware", "firmware blob", "tmpfs", ipeState, errnoFromStatus(st))
		if !tmpfsWant(st) || (st == 0 && crc != fwCRC) {
			t.Errorf("firmware from tmpfs (%s): status %d crc %08x", ipeState, st, crc)
		}
		os.WriteFile(driver.FirmwarePathParam, []byte("\n"), 0o644)
		unloadIfLoaded(t)
	}

	same := func(e linux.Errno) linux.Errno { return e }
	t.Run("no IPE policy", func(t *testing.T) {
		matrix("IPE off", same)
		fromMemory("IPE off", 0)
		firmware("IPE off", func(st int) bool { return st == 0 })
	})

	// Model (b): keys. Adding a vendor certificate counter-signed by the
	// db CA to .secondary_trusted_keys; what root can do to the keyrings.
	t.Run("keyrings", func(t *testing.T) { keyringExperiments(t, k) })

	// Driver volumes v1 and v2 (packed by package driver, as the CLI
	// does), both signed (module: leaf with certificate; root hash: leaf).
	v1Vol, v1Root := driverVolume(t, k, v1raw, "v1", fwBlob)
	v2Vol, v2Root := driverVolume(t, k, v2raw, "v2", fwBlob)
	loadVolume := func(img, ipeState, what string, want linux.Errno) {
		t.Helper()
		unloadIfLoaded(t)
		r.log.since(t)
		v, err := driver.Load(context.Background(), img, driver.LoadOptions{SkipFirmwarePath: true, MountDir: filepath.Join(t.TempDir(), "m")})
		r.result("volume", what, "driver volume "+filepath.Base(img), ipeState, err)
		if got := errnoOf(err); got != want {
			t.Errorf("%s (%s): %s (%v), want %s", what, ipeState, errnoName(got), err, errnoName(want))
		}
		if err == nil {
			if ver := readSys(t, "/sys/module/"+modName+"/version"); "v"+ver != strings.TrimSuffix(filepath.Base(img), ".img") {
				t.Errorf("loaded version %q from %s", ver, img)
			}
		}
		unloadIfLoaded(t)
		if v != nil {
			if err := v.Close(context.Background()); err != nil {
				t.Errorf("close volume: %v", err)
			}
		}
	}
	t.Run("rollback without IPE", func(t *testing.T) {
		loadVolume(v2Vol, "IPE off", "current driver (v2)", 0)
		loadVolume(v1Vol, "IPE off", "older driver (v1), same trusted signer: rollback", 0)
	})

	// Model (a) on top: IPE trusts signed dm-verity volumes for modules
	// and firmware.
	sigPolicy := "policy_name=intact_drivers policy_version=1.0.0\nDEFAULT action=ALLOW\nDEFAULT op=KMODULE action=DENY\nDEFAULT op=FIRMWARE action=DENY\n" +
		"op=KMODULE dmverity_signature=TRUE action=ALLOW\nop=FIRMWARE dmverity_signature=TRUE action=ALLOW\n"
	if err := deployPolicy(t, k.leaf, sigPolicy, false); err != nil {
		t.Fatalf("deploy the IPE policy: %v", err)
	}
	r.log.since(t)
	denied := func(linux.Errno) linux.Errno { return linux.EACCES }
	t.Run("IPE dmverity_signature=TRUE", func(t *testing.T) {
		matrix("IPE: KMODULE+FIRMWARE dmverity_signature=TRUE", denied)
		fromMemory("IPE: KMODULE+FIRMWARE dmverity_signature=TRUE", linux.EACCES)
		firmware("IPE: KMODULE+FIRMWARE dmverity_signature=TRUE", func(st int) bool { return st != 0 })
		loadVolume(v1Vol, "IPE: dmverity_signature=TRUE", "older driver (v1): rollback", 0)
	})

	// Revocation in model (a): a policy that trusts only v2's root hash.
	rootPolicy := func(version string, roots ...[]byte) string {
		s := "policy_name=intact_drivers policy_version=" + version + "\nDEFAULT action=ALLOW\nDEFAULT op=KMODULE action=DENY\nDEFAULT op=FIRMWARE action=DENY\n"
		for _, rh := range roots {
			s += strings.Join(driver.Rules(rh), "\n") + "\n"
		}
		return s
	}
	t.Run("IPE dmverity_roothash", func(t *testing.T) {
		if err := deployPolicy(t, k.leaf, rootPolicy("1.0.1", v2Root), true); err != nil {
			t.Fatalf("update to root-hash rules: %v", err)
		}
		loadVolume(v2Vol, "IPE: roothash(v2)", "current driver (v2)", 0)
		loadVolume(v1Vol, "IPE: roothash(v2)", "older driver (v1): rollback", linux.EACCES)
		tryLoad(t, r, "signature", vars[3].name, "signed verity volume (other root hash)", "IPE: roothash(v2)", filepath.Join(verityDir, vars[3].file), linux.EACCES)
		// Revoke v2 by a newer policy without its rule.
		if err := deployPolicy(t, k.leaf, rootPolicy("1.0.2"), true); err != nil {
			t.Fatalf("update without v2: %v", err)
		}
		loadVolume(v2Vol, "IPE: v2 removed (1.0.2)", "revoked driver (v2)", linux.EACCES)
		// Rolling the policy back to the one that trusted v2 is refused.
		err := deployPolicy(t, k.leaf, rootPolicy("1.0.1", v2Root), true)
		r.result("volume", "policy rollback to 1.0.1", "securityfs update", "IPE 1.0.2 active", err)
		if !errors.Is(err, ipe.ErrStaleVersion) {
			t.Errorf("policy rollback: %v, want ESTALE", err)
		}
		_ = v1Root
	})
}

func errnoFromStatus(st int) error {
	if st == 0 {
		return nil
	}
	return linux.Errno(-st)
}

func readSys(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return strings.TrimSpace(string(b))
}

// driverVolume packs one version of the module (signed by the leaf, with
// its certificate) with the firmware blob, as `intact driver pack` does.
func driverVolume(t *testing.T, k *keys, raw []byte, version string, fw []byte) (string, []byte) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), version)
	os.MkdirAll(filepath.Join(dir, driver.FirmwareDir), 0o755)
	signed, err := kmod.Sign(raw, k.leaf, kmod.SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, modName+".ko"), signed, 0o644)
	os.WriteFile(filepath.Join(dir, driver.FirmwareDir, "intact-test.fw"), fw, 0o644)
	img := filepath.Join(t.TempDir(), version+".img")
	res, err := driver.Pack(context.Background(), dir, img, driver.PackOptions{Signer: k.leaf})
	if err != nil {
		t.Fatal(err)
	}
	root, _ := hex.DecodeString(res.Manifest.RootHash)
	return img, root
}

// keyringExperiments: model (b) needs a vendor key in a keyring that
// verifies modules; .secondary_trusted_keys takes keys signed by a key in
// .builtin_trusted_keys, itself or .machine, never by .platform.
func keyringExperiments(t *testing.T, k *keys) {
	r := &recorder{t: t}
	r.log.since(t)
	ring := func(name string) keyring.ID {
		id, err := keyring.FindKeyring(name)
		if err != nil {
			t.Fatalf("keyring %s: %v", name, err)
		}
		return id
	}
	secondary, platform, builtin, blacklist := ring(".secondary_trusted_keys"), ring(".platform"), ring(".builtin_trusted_keys"), ring(".blacklist")
	machine, machineErr := keyring.FindKeyring(".machine")
	members := func(id keyring.ID) []keyring.ID {
		m, err := keyring.Members(id)
		if err != nil {
			t.Fatalf("members of %d: %v", id, err)
		}
		return m
	}
	t.Logf("KEYRINGS | builtin %d keys | secondary %d members | platform %d keys | machine %v (%v) | blacklist %d", len(members(builtin)), len(members(secondary)), len(members(platform)), machine, machineErr, len(members(blacklist)))
	if machineErr == nil {
		if m := members(machine); len(m) != 0 {
			t.Errorf(".machine holds %d keys without shim", len(m))
		}
	}
	caKey := k.caSigner.Key
	vendorKey, err := testpki.GenerateKey(testpki.RSA2048)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(cn string, parent *x509.Certificate, parentKey any, isCA bool) []byte {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: isCA}
		if parent == nil {
			parent, parentKey = tmpl, vendorKey
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, vendorKey.Public(), parentKey)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	cases := []struct {
		name string
		der  []byte
	}{
		{"vendor certificate counter-signed by the db CA", issue("intact vendor signed by db", k.ca, caKey, false)},
		{"vendor CA counter-signed by the db CA", issue("intact vendor CA signed by db", k.ca, caKey, true)},
		{"self-signed vendor certificate", issue("intact vendor self-signed", nil, nil, true)},
	}
	for _, c := range cases {
		id, err := keyring.AddCertificate(c.der, secondary)
		r.result("keyring", c.name, "keyctl padd asymmetric \"\" %:.secondary_trusted_keys", "-", err)
		if !errors.Is(err, linux.ENOKEY) {
			t.Errorf("%s: .secondary_trusted_keys: key %d, %v; want ENOKEY (no key in .builtin, .secondary or .machine signed it)", c.name, id, err)
		}
		// The same certificate into .platform and .builtin_trusted_keys.
		for _, rg := range []struct {
			name string
			id   keyring.ID
		}{{".platform", platform}, {".builtin_trusted_keys", builtin}} {
			_, err := keyring.AddCertificate(c.der, rg.id)
			r.result("keyring", c.name, "add_key asymmetric into "+rg.name, "-", err)
			if !errors.Is(err, linux.EACCES) {
				t.Errorf("%s: %s: %v, want EACCES", c.name, rg.name, err)
			}
		}
	}
	// Root removing trust anchors: unlink the db CA from .platform and
	// the build key from .builtin_trusted_keys.
	for _, rg := range []struct {
		name string
		id   keyring.ID
	}{{".platform", platform}, {".builtin_trusted_keys", builtin}} {
		m := members(rg.id)
		if len(m) == 0 {
			t.Fatalf("%s is empty", rg.name)
		}
		err := keyring.Unlink(m[0], rg.id)
		r.result("keyring", "unlink a key", "keyctl unlink from "+rg.name, "-", err)
		if !errors.Is(err, linux.EACCES) {
			t.Errorf("unlink key %d from %s: %v, want EACCES", m[0], rg.name, err)
		}
	}
	// .secondary_trusted_keys is writable by root: it links .builtin and
	// .machine; unlinking .machine (empty here) succeeds. (Unlinking
	// .builtin_trusted_keys would make every in-tree module unloadable.)
	if machineErr == nil {
		err := keyring.Unlink(machine, secondary)
		r.result("keyring", "unlink the .machine keyring link", "keyctl unlink from .secondary_trusted_keys", "-", err)
		if err != nil {
			t.Errorf("unlink .machine from .secondary_trusted_keys: %v", err)
		}
	}
	// Revocation at run time: root adding a hash to .blacklist.
	h := kmod.TBSHash(k.leaf.Certificate)
	_, err = keyring.Add("blacklist", "tbs:"+hex.EncodeToString(h[:]), nil, blacklist)
	r.result("keyring", "blacklist the leaf's TBS hash at run time", "add_key blacklist tbs:<hash> into .blacklist", "-", err)
	if !errors.Is(err, linux.EACCES) {
		t.Errorf("add to .blacklist: %v, want EACCES", err)
	}
}
