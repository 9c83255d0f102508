// Command agent is /sbin/init of the test root the host VM tests boot
// (host/vm_test.go). Started by intact-init after switch_root, it checks
// what the host image promises from inside the running system and prints
// one "AGENT: CHECK <name> ok|FAIL <detail>" line per check on the
// console, then "AGENT: DONE" and powers off. Invoked as "hello" it
// prints a marker and exits (the binary executed from the root, /tmp and
// /var).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/intact-project/intact/dm"
	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/ipe"
	"github.com/intact-project/intact/keyring"
)

var out io.Writer = os.Stdout

func check(name string, err error) {
	if err != nil {
		fmt.Fprintf(out, "AGENT: CHECK %s FAIL %s\n", name, strings.Join(strings.Fields(err.Error()), " "))
		return
	}
	fmt.Fprintf(out, "AGENT: CHECK %s ok\n", name)
}

func main() {
	if filepath.Base(os.Args[0]) == "hello" || (len(os.Args) > 1 && os.Args[1] == "hello") {
		fmt.Println("HELLO-FROM-ROOT")
		return
	}
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		out = f
	}
	// Kernel notices (IPE's audit records, level 5) go to the same console
	// and can land inside an agent line; keep warnings and worse (the
	// corrupted-block error the test looks for is level 3).
	os.WriteFile("/proc/sys/kernel/printk", []byte("4"), 0)
	fmt.Fprintf(out, "AGENT: START pid %d uptime %s\n", os.Getpid(), uptime())
	ctx := context.Background()
	check("root-is-verity-erofs", rootMount())
	check("dm-table-signed", dmSigned(ctx))
	check("ipe-active-enforcing", ipeActive(ctx))
	check("var-writable", writable("/var/agent-test"))
	check("etc-writable-overlay", writable("/etc/agent-test"))
	check("exec-from-root", execOK("/usr/bin/hello"))
	for _, dir := range []string{"/tmp", "/var"} {
		dst := filepath.Join(dir, "hello-copy")
		check("exec-denied-"+strings.TrimPrefix(dir, "/"), execDenied("/usr/bin/hello", dst))
	}
	check("policy-audit-explains", auditExplains("/tmp/hello-copy"))
	check("insmod-denied-from-tmpfs", insmodDenied())
	check("machine-keyring-distrusted", machineDistrusted())
	secureBoot()
	canary()
	fmt.Fprintf(out, "AGENT: var %s\n", fstype("/var"))
	fmt.Fprintf(out, "AGENT: DONE\n")
	if f, ok := out.(*os.File); ok {
		f.Sync()
	}
	time.Sleep(200 * time.Millisecond)
	linux.PowerOff()
	select {}
}

func uptime() string {
	b, _ := os.ReadFile("/proc/uptime")
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

func rootMount() error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 10 || f[4] != "/" {
			continue
		}
		i := 6
		for i < len(f) && f[i] != "-" {
			i++
		}
		if i+2 >= len(f) {
			continue
		}
		fstype, src, opts := f[i+1], f[i+2], f[5]
		if fstype != "erofs" || !strings.HasPrefix(src, "/dev/dm-") || !strings.HasPrefix(opts, "ro") {
			return fmt.Errorf("/ is %s from %s (%s)", fstype, src, opts)
		}
		fmt.Fprintf(out, "AGENT: root %s %s %s\n", fstype, src, opts)
		return nil
	}
	return errors.New("no mount for /")
}

func dmSigned(ctx context.Context) error {
	t, err := dm.TableText(ctx, "root")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "AGENT: table %s\n", t)
	if !strings.Contains(t, " verity ") || !strings.Contains(t, "root_hash_sig_key_desc") {
		return fmt.Errorf("table %q", t)
	}
	if h := os.Getenv("INTACT_ROOT_HASH"); h == "" || !strings.Contains(t, " "+h+" ") {
		return fmt.Errorf("table does not carry the root hash %q", h)
	}
	return nil
}

func ipeActive(ctx context.Context) error {
	s := &ipe.SecurityFS{}
	p, ok, err := s.Active(ctx)
	if err != nil {
		return err
	}
	if !ok || p.Name != "intact_host" {
		return fmt.Errorf("active policy %+v", p)
	}
	on, err := s.Enforce()
	if err != nil || !on {
		return fmt.Errorf("enforce %v %v", on, err)
	}
	fmt.Fprintf(out, "AGENT: ipe %s %s enforcing\n", p.Name, p.Version)
	return nil
}

func writable(p string) error {
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		return err
	}
	return os.Remove(p)
}

func execOK(p string) error {
	b, err := exec.Command(p).CombinedOutput()
	if err != nil || !strings.Contains(string(b), "HELLO-FROM-ROOT") {
		return fmt.Errorf("%s: %v %q", p, err, b)
	}
	return nil
}

func execDenied(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		return err
	}
	err = exec.Command(dst).Run()
	if !errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("exec %s: %v, want EACCES", dst, err)
	}
	return nil
}

func auditExplains(prog string) error {
	outb, err := exec.Command("/usr/bin/intact", "policy", "audit", "--json").Output()
	if err != nil {
		return fmt.Errorf("intact policy audit: %v: %s", err, outb)
	}
	var recs []struct {
		Record      string `json:"record"`
		Explanation *struct {
			DecidedBy string   `json:"decided_by"`
			Allow     []string `json:"allow"`
		} `json:"explanation"`
	}
	if err := json.Unmarshal(outb, &recs); err != nil {
		return err
	}
	for _, r := range recs {
		if r.Explanation != nil && strings.Contains(r.Record, `path="`+prog+`"`) {
			fmt.Fprintf(out, "AGENT: audit %s decided by %s\n", prog, r.Explanation.DecidedBy)
			if !strings.Contains(r.Explanation.DecidedBy, "DEFAULT op=EXECUTE action=DENY") {
				return fmt.Errorf("explained as %+v", r.Explanation)
			}
			return nil
		}
	}
	return fmt.Errorf("no explanation for %s in %d records", prog, len(recs))
}

// fstype is the file system type mounted at dir.
func fstype(dir string) string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	t := "?"
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		for i := range f {
			if f[i] == "-" && i+1 < len(f) && len(f) > 4 && f[4] == dir {
				t = f[i+1] // the last mount on dir wins
			}
		}
	}
	return t
}

// secureBoot reports the firmware's Secure Boot state (efivarfs).
func secureBoot() {
	const dir = "/sys/firmware/efi/efivars"
	linux.Mount("efivarfs", dir, "efivarfs", linux.MS_NOSUID|linux.MS_NODEV|linux.MS_NOEXEC, "")
	get := func(name string) string {
		b, err := os.ReadFile(dir + "/" + name + "-8be4df61-93ca-11d2-aa0d-00e098032b8c")
		if err != nil || len(b) != 5 {
			return "?"
		}
		return fmt.Sprint(b[4])
	}
	fmt.Fprintf(out, "AGENT: secureboot=%s setupmode=%s\n", get("SecureBoot"), get("SetupMode"))
}

// canary reads a file the test may have corrupted on the disk: dm-verity
// must turn the changed block into an I/O error.
func canary() {
	b, err := os.ReadFile("/usr/lib/agent-data/canary")
	switch {
	case errors.Is(err, syscall.EIO):
		fmt.Fprintf(out, "AGENT: canary EIO\n")
	case err != nil:
		fmt.Fprintf(out, "AGENT: canary error %v\n", err)
	default:
		fmt.Fprintf(out, "AGENT: canary read %d bytes\n", len(b))
	}
}

// insmodDenied copies a module shipped on the root to /tmp and loads it
// from there: IPE's KMODULE rule must refuse it.
func insmodDenied() error {
	mods, _ := filepath.Glob("/usr/lib/agent-modules/*.ko*")
	if len(mods) == 0 {
		return errors.New("no test module on the root")
	}
	b, err := os.ReadFile(mods[0])
	if err != nil {
		return err
	}
	dst := filepath.Join("/tmp", filepath.Base(mods[0]))
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		return err
	}
	f, err := os.Open(dst)
	if err != nil {
		return err
	}
	defer f.Close()
	flags := 0
	if strings.HasSuffix(dst, ".xz") || strings.HasSuffix(dst, ".zst") {
		flags = linux.ModuleInitCompressedFile
	}
	err = linux.FinitModule(f, "", flags)
	if !errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("finit_module %s: %v, want EACCES", dst, err)
	}
	return nil
}

// machineDistrusted: intact-init unlinked .machine (MOK keys) from
// .secondary_trusted_keys.
func machineDistrusted() error {
	m, err := keyring.FindKeyring(keyring.MachineKeyring)
	if err != nil {
		return fmt.Errorf("the kernel has no .machine keyring: %w", err)
	}
	sec, err := keyring.FindKeyring(keyring.SecondaryKeyring)
	if err != nil {
		return err
	}
	members, err := keyring.Members(sec)
	if err != nil {
		return err
	}
	if slices.Contains(members, m) {
		return errors.New(".machine is still linked into .secondary_trusted_keys")
	}
	return nil
}
