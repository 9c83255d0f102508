// Command ctrprobe is the program inside the container images that the
// intactd and host tests pull and run (packages snapshotter and the e2e
// test): one small static binary that prints a greeting, reads files,
// executes files, and tries the ways root in a privileged container could
// run code the host's IPE policy does not trust, reporting each refusal with
// the kernel's errno name, so that a test can assert what the kernel
// (dm-verity, IPE, module signatures) decided. It is not part of intact.
//
// Every command but hello and pause prints one result line,
//
//	OP TARGET: ok (DETAIL)          the operation succeeded
//	OP TARGET: ENAME (MESSAGE)      the kernel refused it with errno ENAME
//
// and exits 0 on success, 1 on refusal (126 when an exec was refused).
//
//	ctrprobe hello                   print "hello from a verified layer"
//	ctrprobe read PATH               read PATH
//	ctrprobe write DST [SRC]         copy SRC (default: this program) to DST, mode 0755
//	ctrprobe exec PATH [ARG...]      execute PATH
//	ctrprobe copyexec SRC DST        copy SRC to DST (mode 0755), then execute DST hello
//	ctrprobe hostexec PROG [ARG...]  chroot to /proc/1/root (the host's root, with the
//	                                 host's pid namespace) and execute PROG there
//	ctrprobe memfdexec               copy this program into a memfd and fexecve it (hello)
//	ctrprobe mmapexec PATH           mmap PATH with PROT_EXEC
//	ctrprobe mprotectexec PATH       mmap PATH readable, then mprotect it PROT_EXEC
//	ctrprobe finit PATH              load the kernel module PATH (finit_module)
//	ctrprobe initmod PATH            load the kernel module from memory (init_module)
//	ctrprobe ipe-load FILE           write FILE to IPE's new_policy (securityfs mounted if needed)
//	ctrprobe ipe-update NAME FILE    write FILE to IPE's policies/NAME/update (a new version)
//	ctrprobe ipe-enforce 0|1         write IPE's enforce switch
//	ctrprobe verity-exec none|forged open a dm-verity device over a fresh EROFS image of this
//	                                 program with no / a self-made root-hash signature, mount it,
//	                                 execute the program from it
//	ctrprobe efivar-write NAME       mount efivarfs and create NAME under shim's GUID,
//	                                 non-volatile, holding a certificate of its own (a key
//	                                 planted for the next boot: MokListRT)
//	ctrprobe keylink FROM TO         link the keyring FROM into the keyring TO (by name,
//	                                 e.g. .machine .secondary_trusted_keys)
//	ctrprobe pause                   wait for SIGTERM or SIGINT (a pod sandbox)
//	ctrprobe dropcap CAP PROG [ARG..] remove CAP (e.g. mac_admin) from the bounding set,
//	                                 then execute PROG: everything it starts lacks CAP for good
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"github.com/intact-project/intact/internal/linux"
)

// Greeting is what `ctrprobe hello` prints.
const Greeting = "hello from a verified layer"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: ctrprobe hello|read|write|exec|copyexec|memfdexec|mmapexec|mprotectexec|finit|initmod|ipe-load|ipe-update|ipe-enforce|verity-exec|efivar-write|keylink|dropcap|pause ...")
		os.Exit(2)
	}
	switch args := os.Args[2:]; os.Args[1] {
	case "hello":
		fmt.Println(Greeting)
	case "read":
		need(args, 1)
		f, err := os.Open(args[0])
		if err != nil {
			fail("open", args[0], err, 1)
		}
		n, err := io.Copy(io.Discard, f)
		if err != nil {
			fail("read", args[0], err, 1)
		}
		fmt.Printf("read %d bytes\n", n)
	case "write":
		need(args, 1)
		src := "/proc/self/exe"
		if len(args) > 1 {
			src = args[1]
		}
		copyFile(src, args[0])
		ok("write", args[0], "from "+src)
	case "exec":
		need(args, 1)
		run(args[0], args)
	case "hostexec":
		need(args, 1)
		if err := linux.Chroot("/proc/1/root"); err != nil {
			fail("chroot", "/proc/1/root", err, 1)
		}
		if err := os.Chdir("/"); err != nil {
			fail("chdir", "/", err, 1)
		}
		run(args[0], args)
	case "copyexec":
		need(args, 2)
		copyFile(args[0], args[1])
		run(args[1], []string{args[1], "hello"})
	case "memfdexec":
		self, err := os.ReadFile("/proc/self/exe")
		if err != nil {
			fail("read", "/proc/self/exe", err, 1)
		}
		m, err := linux.MemfdCreate("ctrprobe")
		if err != nil {
			fail("memfd_create", "ctrprobe", err, 1)
		}
		if _, err := m.Write(self); err != nil {
			fail("write", m.Name(), err, 1)
		}
		err = linux.Fexecve(m, []string{"ctrprobe", "hello"}, os.Environ())
		fail("fexecve", m.Name(), err, 126)
	case "mmapexec", "mprotectexec":
		need(args, 1)
		f, err := os.Open(args[0])
		if err != nil {
			fail("open", args[0], err, 1)
		}
		op, do := "mmap-exec", linux.MapExec
		if os.Args[1] == "mprotectexec" {
			op, do = "mprotect-exec", linux.ProtectExec
		}
		if err := do(f); err != nil {
			fail(op, args[0], err, 1)
		}
		ok(op, args[0], "executable mapping made")
	case "finit":
		need(args, 1)
		f, err := os.Open(args[0])
		if err != nil {
			fail("open", args[0], err, 1)
		}
		flags := 0
		if strings.HasSuffix(args[0], ".xz") || strings.HasSuffix(args[0], ".zst") {
			flags = linux.ModuleInitCompressedFile
		}
		if err := linux.FinitModule(f, "", flags); err != nil {
			fail("finit_module", args[0], err, 1)
		}
		ok("finit_module", args[0], "module loaded")
	case "initmod":
		need(args, 1)
		b, err := os.ReadFile(args[0])
		if err != nil {
			fail("read", args[0], err, 1)
		}
		if err := linux.InitModule(b, ""); err != nil {
			fail("init_module", args[0], err, 1)
		}
		ok("init_module", args[0], "module loaded")
	case "ipe-load":
		need(args, 1)
		b, err := os.ReadFile(args[0])
		if err != nil {
			fail("read", args[0], err, 1)
		}
		writeIPE("new_policy", b)
	case "ipe-update":
		need(args, 2)
		b, err := os.ReadFile(args[1])
		if err != nil {
			fail("read", args[1], err, 1)
		}
		writeIPE("policies/"+args[0]+"/update", b)
	case "ipe-enforce":
		need(args, 1)
		writeIPE("enforce", []byte(args[0]))
	case "verity-exec":
		need(args, 1)
		verityExec(args[0])
	case "dropcap":
		need(args, 2)
		c, known := linux.CapabilityNumber(args[0])
		if !known {
			fmt.Fprintf(os.Stderr, "ctrprobe dropcap: unknown capability %q\n", args[0])
			os.Exit(2)
		}
		// The bounding set is per thread: drop it and exec on one thread.
		runtime.LockOSThread()
		if err := linux.DropBounding(c); err != nil {
			fail("capbset-drop", args[0], err, 1)
		}
		path, err := exec.LookPath(args[1])
		if err != nil {
			fail("exec", args[1], err, 126)
		}
		run(path, args[1:])
	case "efivar-write":
		need(args, 1)
		efivarWrite(args[0])
	case "keylink":
		need(args, 2)
		keyLink(args[0], args[1])
	case "pause":
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
		<-c
	default:
		fmt.Fprintf(os.Stderr, "ctrprobe: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

func need(args []string, n int) {
	if len(args) < n {
		fmt.Fprintf(os.Stderr, "ctrprobe %s: needs %d arguments\n", os.Args[1], n)
		os.Exit(2)
	}
}

func copyFile(src, dst string) {
	data, err := os.ReadFile(src)
	if err != nil {
		fail("read", src, err, 1)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		fail("write", dst, err, 1)
	}
}

func run(path string, argv []string) {
	err := linux.Exec(path, argv, os.Environ())
	fail("exec", path, err, 126)
}

// writeIPE writes data to an IPE securityfs node, mounting securityfs at
// /sys/kernel/security first when the container has none.
func writeIPE(node string, data []byte) {
	dir := "/sys/kernel/security"
	if _, err := os.Stat(dir + "/ipe"); err != nil {
		if err := linux.Mount("securityfs", dir, "securityfs", 0, ""); err != nil {
			fail("mount", "securityfs", err, 1)
		}
	}
	p := dir + "/ipe/" + node
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		fail("open", p, err, 1)
	}
	if _, err := f.Write(data); err != nil {
		fail("write", p, err, 1)
	}
	if err := f.Close(); err != nil {
		fail("write", p, err, 1)
	}
	ok("write", p, fmt.Sprintf("%d bytes accepted", len(data)))
}

func ok(op, target, detail string) {
	fmt.Printf("%s %s: ok (%s)\n", op, target, detail)
}

// fail prints "OP TARGET: ENAME (message)" and exits with code.
func fail(op, target string, err error, code int) {
	fmt.Printf("%s %s: %s (%v)\n", op, target, errnoName(err), err)
	os.Exit(code)
}

func errnoName(err error) string {
	var errno linux.Errno
	if errors.As(err, &errno) {
		return linux.ErrnoName(errno)
	}
	return "?"
}
