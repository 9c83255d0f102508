package containerhost

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/intact-project/intact/efi"
	"github.com/intact-project/intact/host/agent"
	"github.com/intact-project/intact/ipe"
	"github.com/intact-project/intact/pkcs7"
)

// attackDir is the host path mounted into the attacker's container
// (/attack there), on the host's writable /var.
const attackDir = "/var/lib/attack"

// strerrors maps the messages tools print (nsenter, insmod, ld.so) to
// errno names.
var strerrors = map[string]string{
	"Permission denied": "EACCES", "Operation not permitted": "EPERM", "Required key not available": "ENOKEY",
	"Key was rejected by service": "EKEYREJECTED", "Bad message": "EBADMSG", "Exec format error": "ENOEXEC",
	"Invalid argument": "EINVAL", "Stale file handle": "ESTALE", "No such file or directory": "ENOENT",
}

var probeResult = regexp.MustCompile(`: (E[A-Z0-9]+) \(`)

// errnoOf finds the errno a refusal reported: ctrprobe's "OP X: ENAME
// (...)" or a tool's strerror text.
func errnoOf(s string) string {
	if m := probeResult.FindStringSubmatch(s); m != nil {
		return m[1]
	}
	for msg, name := range strerrors {
		if strings.Contains(s, msg) {
			return name
		}
	}
	return ""
}

type attack struct {
	name, expected, mechanism string
	prep                      [][]string // ctrprobe commands that must succeed first
	argv                      []string   // the attack (ctrprobe arguments)
	// allowed: the attack is expected to work (a known limit); ok is then
	// what its output must contain.
	allowed bool
	ok      string
	// errnos the refusal may carry (any, when empty).
	errnos []string
	// audit, if set, must appear in a new IPE denial record (type 1420)
	// of the kernel log, which then gives the errno (IPE denies with
	// EACCES): for tools that print no errno.
	audit string
}

// breakoutMatrix runs the attacks from a privileged container (all
// capabilities the host allows, the host's pid namespace, /var/lib/attack
// of the host mounted at /attack) and records each row.
func breakoutMatrix(t *testing.T, g *guest, rep *report, ref, keys string) {
	g.sh("mkdir -p " + attackDir)
	policies(t, g, keys)
	// The host's nsenter (from the verified root) enters pid 1's
	// namespaces; ctrprobe hostexec runs it in the host's root, where its
	// loader and libraries are.
	nsenter := []string{"hostexec", "/usr/bin/nsenter", "-t", "1", "-a"}
	ipeDeny := "IPE: DEFAULT op=EXECUTE action=DENY (the file is on no signed dm-verity device)"
	attacks := []attack{
		{name: "control: the signed layer's binary, privileged", expected: "runs", allowed: true, ok: greeting, argv: []string{"hello"}},
		{name: "binary dropped in /var, run on the host (nsenter)", expected: "denied", mechanism: ipeDeny, errnos: []string{"EACCES"},
			prep: [][]string{{"write", "/attack/x"}}, argv: append(nsenter, attackDir+"/x", "hello")},
		{name: "binary dropped in /tmp, run on the host (nsenter)", expected: "denied", mechanism: ipeDeny, errnos: []string{"EACCES"},
			prep: [][]string{{"write", "/proc/1/root/tmp/x"}}, argv: append(nsenter, "/tmp/x", "hello")},
		{name: "binary dropped in /dev/shm, run on the host (nsenter)", expected: "denied", mechanism: ipeDeny, errnos: []string{"EACCES"},
			prep: [][]string{{"write", "/proc/1/root/dev/shm/x"}}, argv: append(nsenter, "/dev/shm/x", "hello")},
		{name: "ld.so /tmp/true (a host binary copied to tmpfs)", expected: "denied", mechanism: "IPE: mmap(PROT_EXEC) of a file on tmpfs (MMAP hook)", errnos: []string{"EACCES"},
			prep: [][]string{{"write", "/proc/1/root/tmp/true", "/proc/1/root/usr/bin/true"}},
			argv: append(nsenter, "/lib64/ld-linux-x86-64.so.2", "/tmp/true"), audit: `hook=MMAP`},
		{name: "memfd_create + fexecve", expected: "denied", mechanism: ipeDeny + " (memfd)", errnos: []string{"EACCES"}, argv: []string{"memfdexec"}},
		{name: "mmap(PROT_EXEC) of a file on tmpfs", expected: "denied", mechanism: "IPE: MMAP hook", errnos: []string{"EACCES"},
			prep: [][]string{{"write", "/proc/1/root/dev/shm/m"}}, argv: []string{"mmapexec", "/proc/1/root/dev/shm/m"}},
		{name: "mprotect(PROT_EXEC) of a file on tmpfs", expected: "denied", mechanism: "IPE: MPROTECT hook", errnos: []string{"EACCES"},
			argv: []string{"mprotectexec", "/proc/1/root/dev/shm/m"}},
		{name: "insmod of a module copied to /tmp", expected: "denied", mechanism: "IPE: DEFAULT op=KMODULE action=DENY", errnos: []string{"EACCES", "EPERM"},
			prep: [][]string{{"write", "/proc/1/root/tmp/dummy.ko.xz", "/proc/1/root" + dummyModule(t, g)}},
			argv: append(nsenter, "/usr/sbin/insmod", "/tmp/dummy.ko.xz")},
		{name: "finit_module of a module in /tmp", expected: "denied", mechanism: "IPE: DEFAULT op=KMODULE action=DENY", errnos: []string{"EACCES"},
			argv: []string{"finit", "/proc/1/root/tmp/dummy.ko.xz"}},
		{name: "init_module from memory", expected: "denied", mechanism: "IPE: op=KMODULE with no file matches no rule (DEFAULT DENY)",
			argv: []string{"initmod", "/proc/1/root" + dummyModule(t, g)}},
		{name: "IPE policy replaced by an unsigned one", expected: "refused", mechanism: "capability bound: no CAP_MAC_ADMIN (unbounded: EBADMSG, signature required)",
			errnos: []string{"EPERM"}, argv: []string{"ipe-load", "/attack/unsigned.pol"}},
		{name: "IPE policy signed by a key outside the chain", expected: "refused", mechanism: "capability bound: no CAP_MAC_ADMIN (unbounded: ENOKEY, signer not trusted)",
			errnos: []string{"EPERM"}, argv: []string{"ipe-load", "/attack/foreign.p7s"}},
		{name: "IPE policy: a lower version of ours", expected: "refused", mechanism: "capability bound: no CAP_MAC_ADMIN (unbounded: ESTALE, the kernel refuses a lower version)",
			errnos: []string{"EPERM"}, argv: []string{"ipe-update", "container_host", "/attack/older.p7s"}},
		{name: "new dm-verity device without a signature, run from it", expected: "denied", mechanism: "dm-verity: dm_verity.require_signatures=1 (table refused); IPE would deny its files (dmverity_signature=FALSE)",
			errnos: []string{"ENOKEY"}, argv: []string{"verity-exec", "none"}},
		{name: "new dm-verity device with a forged signature, run from it", expected: "denied", mechanism: "dm-verity: the kernel refuses the root-hash signature (signer not in its keyrings)",
			errnos: []string{"ENOKEY", "EKEYREJECTED"}, argv: []string{"verity-exec", "forged"}},
		{name: "plant a key for the next boot: MokListRT through efivarfs", expected: "refused",
			mechanism: "no efivarfs on the host: not loaded, and no module file it could load (KMODULE only from the initramfs and the root); were it written, intact-init distrusts .machine at every boot (kmod.TestTwoBootMokListInVM)",
			errnos:    []string{"ENODEV"}, argv: []string{"efivar-write", "MokListRT"}},
		{name: "trust MOK keys again: link .machine into .secondary_trusted_keys", expected: "refused",
			mechanism: "intact-init unlinked .machine at boot; the keyring's restriction refuses the link",
			errnos:    []string{"EACCES"}, argv: []string{"keylink", ".machine", ".secondary_trusted_keys"}},
		{name: "IPE enforcement off (/sys/kernel/security/ipe/enforce)", expected: "refused", mechanism: "capability bound: no CAP_MAC_ADMIN (with it, root in a privileged container CAN switch IPE off: measured in snapshotter.TestPrivilegedContainerIPEInVM)",
			errnos: []string{"EPERM"}, argv: []string{"ipe-enforce", "0"}},
		{name: "interpreter: sh reading a script from /var", expected: "runs (known limit: IPE checks executables, not scripts read by an interpreter)", allowed: true, ok: "pwned by a script",
			mechanism: "none; would need interpreters that check scripts (AT_EXECVE_CHECK, Linux 6.14+) or no interpreter on the host",
			argv:      append(nsenter, "/bin/sh", attackDir+"/x.sh")},
		{name: "interpreter: python3 reading a script from /var", expected: "runs (known limit)", allowed: true, ok: "pwned by python",
			mechanism: "none; as above",
			argv:      append(nsenter, "/usr/bin/python3", attackDir+"/x.py")},
	}
	g.write(attackDir+"/x.sh", []byte("echo pwned by a script\n"), 0o644)
	g.write(attackDir+"/x.py", []byte("print('pwned by python')\n"), 0o644)
	privileged := []string{"ctr", "--namespace", "default", "run", "--rm", "--privileged", "--snapshotter", "intact",
		"--with-ns", "pid:/proc/1/ns/pid", "--mount", "type=bind,src=" + attackDir + ",dst=/attack,options=rbind:rw", ref}
	n := 0
	inContainer := func(args ...string) agent.Response {
		n++
		return g.run(3*time.Minute, append(append(append([]string{}, privileged...), fmt.Sprintf("attack-%d", n), "/bin/ctrprobe"), args...)...)
	}
	for _, a := range attacks {
		t0 := time.Now()
		prepOK := true
		for _, p := range a.prep {
			if r := inContainer(p...); r.Exit != 0 {
				prepOK = false
				rep.add(row{Name: a.name, Expected: a.expected, Observed: "preparation failed: " + out(r), Matrix: true})
			}
		}
		if !prepOK {
			continue
		}
		mark := fmt.Sprintf("intact-e2e-mark-%d", n)
		if a.audit != "" {
			g.sh("echo " + mark + " > /dev/kmsg")
		}
		r := inContainer(a.argv...)
		o := out(r)
		if a.audit != "" {
			// The denial's IPE record, after the mark.
			rec := g.sh("dmesg | sed -n '/" + mark + "/,$p' | grep 'type=1420' | grep -- '" + a.audit + "' | tail -1")
			if line := strings.TrimSpace(rec.Stdout); line != "" && errnoOf(o) == "" {
				o += "\nIPE: " + line[strings.Index(line, "ipe_op="):] + ": Permission denied"
			}
		}
		x := row{Name: a.name, Expected: a.expected, Mechanism: a.mechanism, Observed: lastLine(o), Errno: errnoOf(o), Matrix: true, Seconds: time.Since(t0).Seconds()}
		if a.allowed {
			x.Pass = r.Exit == 0 && strings.Contains(o, a.ok)
			if x.Pass {
				x.Observed = "ran: " + lastLine(o)
				if a.mechanism == "" {
					x.Mechanism = "none needed"
				}
			}
		} else {
			x.Pass = r.Exit != 0 && !strings.Contains(o, greeting) && !strings.Contains(o, ": ok (")
			if len(a.errnos) > 0 {
				found := false
				for _, e := range a.errnos {
					found = found || x.Errno == e
				}
				x.Pass = x.Pass && found
			}
			if x.Pass {
				x.Observed = "denied: " + lastLine(o)
			}
		}
		rep.add(x)
	}
}

// dummyModule returns the path of the module the root ships for the matrix.
func dummyModule(t *testing.T, g *guest) string {
	r := g.sh("ls /usr/lib/intact-e2e/dummy.ko*")
	p := strings.TrimSpace(r.Stdout)
	if r.Exit != 0 || p == "" {
		t.Fatalf("no module in /usr/lib/intact-e2e: %s", out(r))
	}
	return strings.Fields(p)[0]
}

// policies writes the three replacement policies into the attack
// directory: unsigned; signed by a key of another key set; ours at a
// lower version, signed by our signing key (what a replay of an older
// published policy would bring).
func policies(t *testing.T, g *guest, keys string) {
	text := func(version string) []byte {
		return []byte("policy_name=container_host policy_version=" + version + "\nDEFAULT action=ALLOW\n")
	}
	g.write(attackDir+"/unsigned.pol", text("9.0.0"), 0o644)
	foreign, err := efi.GenerateKeys(efi.KeyOptions{Name: "attacker"})
	if err != nil {
		t.Fatal(err)
	}
	fs, err := pkcs7.NewSigner(foreign.Signing.Certificate, foreign.Signing.Key)
	if err != nil {
		t.Fatal(err)
	}
	fb, err := ipe.Sign(text("9.0.0"), fs)
	if err != nil {
		t.Fatal(err)
	}
	g.write(attackDir+"/foreign.p7s", fb, 0o644)
	key, err := pkcs7.ParsePrivateKey(readFile(t, filepath.Join(keys, "signing.key")))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pkcs7.ParseCertificates(readFile(t, filepath.Join(keys, "signing.crt")))
	if err != nil {
		t.Fatal(err)
	}
	ours, err := pkcs7.NewSigner(certs[0], key)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := ipe.Sign(text("0.9.0"), ours)
	if err != nil {
		t.Fatal(err)
	}
	g.write(attackDir+"/older.p7s", ob, 0o644)
}

func readFile(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
