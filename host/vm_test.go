package host

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/intact-project/intact/efi"
	"github.com/intact-project/intact/host/bootcfg"
	"github.com/intact-project/intact/internal/peimage"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/internal/vmtest"
	"github.com/intact-project/intact/pkcs7"
)

// The VM tests of this file boot built disk images the way hardware does:
// OVMF with Secure Boot, the UKI found on the ESP, no -kernel. They run on
// the host (make test-vm sets INTACT_VM_HOST_TESTS=1) and cost four boots
// in all, each showing several things at once:
//
//  1. the key set is enrolled by `intact host keys enroll` in a guest
//     booted in setup mode (vmtest, OVMF's empty variable store);
//  2. with that variable store (Secure Boot now on) the firmware refuses a
//     UKI whose command line changed after signing, an unsigned UKI and a
//     UKI signed by a key outside db, then boots ours: the agent (the
//     root's /sbin/init) checks the verity root, the signed table, IPE,
//     exec and insmod denials, the audit explanation, Secure Boot on, and
//     that a byte flipped in the root partition reads as EIO, and /var is
//     the ext4 state partition;
//  3. a root-hash signature by a key outside db: the init fails closed at
//     dm-verity;
//  4. another signed root (root, tree and signature of another build)
//     swapped into the partitions: the init fails closed because the
//     signature names another root hash than the initramfs expects.

func requireHostVM(t *testing.T) {
	t.Helper()
	testutil.RequireHost(t, "boots VMs under QEMU")
	if os.Getenv("INTACT_VM_HOST_TESTS") != "1" {
		t.Skip("boots VMs under QEMU; make test-vm runs it (INTACT_VM_HOST_TESTS=1)")
	}
	for _, tool := range []string{"qemu-system-x86_64", "python3", "go"} {
		testutil.RequireTool(t, tool)
	}
}

var (
	agentOnce           sync.Once
	agentBin, intactBin string
	agentErr            error
)

// agentRoot writes the test root: the agent as /sbin/init and as
// /usr/bin/hello, a static intact, a module to insmod, a canary file and
// (optionally) the public half of a key set for enrollment.
func agentRoot(t *testing.T, f *fixture, canary []byte, motd string) string {
	t.Helper()
	agentOnce.Do(func() {
		for _, b := range []struct{ out, pkg string }{
			{filepath.Join(f.buildDir, "agent"), "./host/testdata/agent"},
			{filepath.Join(f.buildDir, "intact"), "./cmd/intact"},
		} {
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", b.out, b.pkg)
			cmd.Dir, cmd.Env = f.repoRoot, append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				agentErr = fmt.Errorf("build %s: %v: %s", b.pkg, err, out)
				return
			}
		}
		agentBin, intactBin = filepath.Join(f.buildDir, "agent"), filepath.Join(f.buildDir, "intact")
	})
	if agentErr != nil {
		t.Fatal(agentErr)
	}
	root := filepath.Join(t.TempDir(), "root")
	mods, _ := filepath.Glob(filepath.Join(f.assets.ModulesDir(), "kernel/drivers/net/dummy.ko*"))
	if len(mods) == 0 {
		t.Fatal("no dummy module in the kernel's modules")
	}
	copies := map[string]string{"sbin/init": agentBin, "usr/bin/hello": agentBin, "usr/bin/intact": intactBin,
		"usr/lib/agent-modules/" + filepath.Base(mods[0]): mods[0]}
	for dst, src := range copies {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(root, dst), b, 0o755)
	}
	writeFile(t, filepath.Join(root, "usr/lib/agent-data/canary"), canary, 0o644)
	writeFile(t, filepath.Join(root, "etc/os-release"), []byte("ID=intact-test\n"), 0o644)
	writeFile(t, filepath.Join(root, "etc/motd"), []byte(motd), 0o644)
	return root
}

func writeFile(t *testing.T, p string, b []byte, mode os.FileMode) {
	t.Helper()
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
}

// console collects the serial console and cancels the boot when a line
// matches stop.
type console struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	stop   *regexp.Regexp
	cancel func()
	done   bool
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	if !c.done && c.stop != nil && c.stop.Match(c.buf.Bytes()) {
		c.done = true
		// Let the guest finish its line; QEMU exits on its own when the
		// guest powers off.
		time.AfterFunc(3*time.Second, c.cancel)
	}
	return len(p), nil
}

func (c *console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.ReplaceAll(c.buf.String(), "\r", "")
}

// boot runs opts under QEMU until the guest powers off, stop matches or
// the timeout ends, and returns the console.
func boot(t *testing.T, opts RunOptions, stop string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	con := &console{stop: regexp.MustCompile(stop), cancel: cancel}
	opts.Console, opts.Snapshot = con, true
	start := time.Now()
	err := Run(ctx, opts)
	t.Logf("boot took %s", time.Since(start).Round(time.Millisecond))
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("run: %v\nconsole tail:\n%s", err, tail(con.String(), 40))
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("the guest did not finish in time; console tail:\n%s", tail(con.String(), 40))
	}
	return con.String()
}

func tail(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func copyDisk(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// patchDisk replaces the first occurrence of old in the disk image (within
// [from, to)) with new of the same length.
func patchDisk(t *testing.T, disk string, from, to int64, old, new []byte) int64 {
	t.Helper()
	b, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b[from:to], old)
	if i < 0 || len(old) != len(new) {
		t.Fatalf("patch: %q not found in [%d,%d)", old, from, to)
	}
	off := from + int64(i)
	copy(b[off:], new)
	if err := os.WriteFile(disk, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return off
}

func lines(console, prefix string) []string {
	var out []string
	for _, l := range strings.Split(console, "\n") {
		if i := strings.Index(l, prefix); i >= 0 {
			out = append(out, strings.TrimSpace(l[i:]))
		}
	}
	return out
}

// TestVMHostImage is the VM acceptance test of the host image (four boots;
// see the comment at the top of the file).
func TestVMHostImage(t *testing.T) {
	requireHostVM(t)
	f := getFixture(t)
	ctx := context.Background()
	canary := bytes.Repeat([]byte("INTACT-CANARY-BLOCK-"), 1024)
	s := f.spec(agentRoot(t, f, canary, "motd A\n"))
	s.Boot.Modules = []string{"efivarfs"}
	s.Var.Mode, s.Var.Size = bootcfg.VarPartition, "32M" // /var on the ext4 state partition
	out, m := build(t, s, 1700000000)
	good := filepath.Join(out, DiskFile)
	esp, rootPart, sigPart := m.Disk.Partitions[len(m.Disk.Partitions)-1], m.Disk.Partitions[0], m.Disk.Partitions[2]

	// A byte flipped in the canary's data block: read as EIO in the guest.
	base := copyDisk(t, good)
	patchDisk(t, base, rootPart.Offset, rootPart.Offset+rootPart.Size, []byte("INTACT-CANARY-BLOCK-INTACT"), []byte("INTACT-CANARY-BLOCK-INTACt"))
	// The command line changed after signing.
	tampered := copyDisk(t, base)
	patchDisk(t, tampered, esp.Offset, esp.Offset+esp.Size, []byte(s.Boot.Cmdline), []byte(strings.Replace(s.Boot.Cmdline, "ttyS0", "ttyS1", 1)))
	// The same UKI without its signature (certificate table entry zeroed).
	unsigned := copyDisk(t, base)
	ukiBytes, _ := os.ReadFile(filepath.Join(out, UKIFile))
	im, err := peimage.Parse(bytes.NewReader(ukiBytes), int64(len(ukiBytes)))
	if err != nil {
		t.Fatal(err)
	}
	head := ukiBytes[:im.SizeOfHeaders]
	noSig := append([]byte(nil), head...)
	copy(noSig[im.SecurityDirOffset():], make([]byte, 8))
	patchDisk(t, unsigned, esp.Offset, esp.Offset+esp.Size, head, noSig)
	// A UKI signed by another key set's db.
	foreignKeys, err := efi.GenerateKeys(efi.KeyOptions{Name: "intact foreign"})
	if err != nil {
		t.Fatal(err)
	}
	fdir := filepath.Join(t.TempDir(), "foreign-keys")
	if err := foreignKeys.WriteDir(fdir); err != nil {
		t.Fatal(err)
	}
	fs := f.spec(agentRoot(t, f, canary, "motd F\n"))
	fs.Keys = fdir
	fout, _ := build(t, fs, 1700000000)

	// Boot 1: setup mode; intact host keys enroll in the guest.
	a := f.assets
	vars := filepath.Join(t.TempDir(), "vars.fd")
	if err := PrepareVars(ctx, a, "", true, vars, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	var enrollOut bytes.Buffer
	var files []vmtest.FileMap
	for _, n := range []string{"PK.crt", "KEK.crt", "db.crt", "signing.crt", "PK.auth", "KEK.auth", "db.auth", "GUID"} {
		files = append(files, vmtest.FileMap{Host: filepath.Join(f.keys, n), Guest: "/keys/" + n})
	}
	res, err := vmtest.Run(ctx, vmtest.Options{Mode: vmtest.SecureBoot, Vars: vars, Program: intactBin,
		Args: []string{"host", "keys", "enroll", "--json", "--dir", "/keys"}, Files: files, NoScratch: true,
		Output: &enrollOut, Timeout: 4 * time.Minute, Fetch: vmtest.FetchOptions{RepoRoot: f.repoRoot}})
	if err != nil || res.ExitCode != 0 || !strings.Contains(enrollOut.String(), `"setup_mode": false`) {
		t.Fatalf("enroll in setup mode: %v (exit %v):\n%s", err, res, enrollOut.String())
	}
	t.Logf("enrolled in the guest: %s", strings.Join(strings.Fields(enrollOut.String()), " "))

	// Boot 2: Secure Boot on with the enrolled store; three refusals, then ours.
	con := boot(t, RunOptions{Vars: vars, Disks: []string{tampered, unsigned, filepath.Join(fout, DiskFile)}, Disk: base, Assets: a},
		`AGENT: DONE|intact-init: refusing`)
	denied := regexp.MustCompile(`(?m)failed to load Boot\S+ .*: Access Denied`).FindAllString(con, -1)
	for _, l := range denied {
		t.Logf("firmware: %s", l)
	}
	if len(denied) != 3 {
		t.Errorf("firmware refused %d boot options, want 3 (changed cmdline, unsigned, foreign db):\n%s", len(denied), tail(con, 60))
	}
	agent := lines(con, "AGENT:")
	for _, l := range agent {
		t.Log(l)
	}
	checks := 0
	for _, l := range agent {
		if strings.HasPrefix(l, "AGENT: CHECK ") {
			checks++
			// "AGENT: CHECK <name> ok|FAIL <detail>"; a kernel line may
			// still be glued to the end of it.
			if f := strings.Fields(l); len(f) < 4 || f[3] != "ok" && !strings.HasPrefix(f[3], "ok[") {
				t.Errorf("%s", l)
			}
		}
	}
	want := []string{"AGENT: secureboot=1 setupmode=0", "AGENT: canary EIO", "AGENT: var ext4", "AGENT: DONE"}
	for _, w := range want {
		if !strings.Contains(con, w) {
			t.Errorf("console lacks %q", w)
		}
	}
	if checks != 11 {
		t.Errorf("%d agent checks, want 11:\n%s", checks, tail(con, 60))
	}
	if !regexp.MustCompile(`device-mapper: verity: \S+: data block \d+ is corrupted`).MatchString(con) {
		t.Error("the kernel did not report the corrupted block")
	}
	for _, l := range lines(con, "intact-init:") {
		t.Log(l)
	}

	// Boot 3: a root-hash signature by a key outside db.
	forged := copyDisk(t, good)
	other, err := pkcs7.NewSigner(foreignKeys.Signing.Certificate, foreignKeys.Signing.Key)
	if err != nil {
		t.Fatal(err)
	}
	der, err := other.Sign([]byte(m.RootHash), pkcs7.SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fp := sha256.Sum256(foreignKeys.Signing.Certificate.Raw)
	sj, err := (&bootcfg.Signature{RootHash: m.RootHash, Signature: base64.StdEncoding.EncodeToString(der), CertificateFingerprint: hex.EncodeToString(fp[:])}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	writeAt(t, forged, sigPart.Offset, sj)
	con = boot(t, RunOptions{Disk: forged, Keys: f.keys, Assets: a}, `intact-init: refusing|AGENT: DONE`)
	failLine := lines(con, "intact-init: FAILED")
	if len(failLine) != 1 || !strings.Contains(failLine[0], "FAILED at open dm-verity root: the kernel refused the root-hash signature") || strings.Contains(con, "AGENT:") {
		t.Errorf("foreign root-hash signature: %q\n%s", failLine, tail(con, 30))
	} else {
		t.Log(failLine[0])
	}

	// Boot 4: another signed root swapped in (root, tree and signature of
	// a build whose root differs in one file).
	bs := f.spec(agentRoot(t, f, canary, "motd B\n"))
	bs.Boot.Modules = []string{"efivarfs"}
	bs.Var = s.Var
	bout, bm := build(t, bs, 1700000000)
	if bm.Root.Size != m.Root.Size || bm.RootHash == m.RootHash {
		t.Fatalf("the other root: %d bytes (want %d), hash %s", bm.Root.Size, m.Root.Size, bm.RootHash)
	}
	swapped := copyDisk(t, good)
	for i, name := range []string{RootFile, VerityFile, SigFile} {
		b, err := os.ReadFile(filepath.Join(bout, name))
		if err != nil {
			t.Fatal(err)
		}
		if name == SigFile {
			b = append(b, make([]byte, bootcfg.SigPartitionSize-len(b))...)
		}
		writeAt(t, swapped, m.Disk.Partitions[i].Offset, b)
	}
	con = boot(t, RunOptions{Disk: swapped, Keys: f.keys, Assets: a}, `intact-init: refusing|AGENT: DONE`)
	failLine = lines(con, "intact-init: FAILED")
	if len(failLine) != 1 || !strings.Contains(failLine[0], "names root hash "+bm.RootHash+", but the initramfs expects "+m.RootHash) || strings.Contains(con, "AGENT:") {
		t.Errorf("swapped root: %q\n%s", failLine, tail(con, 30))
	} else {
		t.Log(failLine[0])
	}
}

func writeAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
