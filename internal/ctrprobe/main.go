// Command ctrprobe is the program inside the container images that the
// intactd tests pull and run (package snapshotter's VM tests): one small
// static binary that prints a greeting, reads files, executes files (also
// after copying them into the container's writable layer) and waits, and
// reports every refusal with the kernel's errno name, so a test can assert
// what the kernel (dm-verity, IPE) decided. It is not part of intact.
//
//	ctrprobe hello              print "hello from a verified layer"
//	ctrprobe read PATH          read PATH; "read N bytes" or the errno
//	ctrprobe exec PATH [ARG..]  execute PATH; on refusal print the errno, exit 126
//	ctrprobe copyexec SRC DST   copy SRC to DST (mode 0755), then execute DST
//	ctrprobe pause              wait for SIGTERM or SIGINT (a pod sandbox)
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/intact-project/intact/internal/linux"
)

// Greeting is what `ctrprobe hello` prints.
const Greeting = "hello from a verified layer"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: ctrprobe hello|read PATH|exec PATH [ARG...]|copyexec SRC DST|pause")
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
	case "exec":
		need(args, 1)
		run(args[0], args)
	case "copyexec":
		need(args, 2)
		data, err := os.ReadFile(args[0])
		if err != nil {
			fail("read", args[0], err, 1)
		}
		if err := os.WriteFile(args[1], data, 0o755); err != nil {
			fail("write", args[1], err, 1)
		}
		run(args[1], []string{args[1], "hello"})
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

func run(path string, argv []string) {
	err := linux.Exec(path, argv, os.Environ())
	fail("exec", path, err, 126)
}

// fail prints "OP PATH: ENAME (message)" and exits with code.
func fail(op, path string, err error, code int) {
	name := "?"
	var errno linux.Errno
	if errors.As(err, &errno) {
		name = linux.ErrnoName(errno)
	}
	fmt.Printf("%s %s: %s (%v)\n", op, path, name, err)
	os.Exit(code)
}
