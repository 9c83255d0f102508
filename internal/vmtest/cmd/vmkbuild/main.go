// Command vmkbuild builds out-of-tree kernel modules for the VM tier's
// kernel (Debian stable's cloud kernel, the one internal/vmtest boots),
// against Debian's linux-headers and linux-kbuild packages for exactly that
// release (vmtest.FetchKbuild), with the host's gcc:
//
//	go run ./internal/vmtest/cmd/vmkbuild -o bin/testmod \
//	    --variant v1:INTACT_TESTMOD_VERSION=1 --variant v2:INTACT_TESTMOD_VERSION=2 \
//	    kmod/testdata/testmod
//
// writes bin/testmod/v1/*.ko and bin/testmod/v2/*.ko (a build is reused
// while the sources, variables and kernel release are unchanged). With
// --sign-file it prints the path of the kernel's scripts/sign-file, made
// runnable on this host, and builds nothing.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/intact-project/intact/internal/vmtest"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	fs := flag.NewFlagSet("vmkbuild", flag.ExitOnError)
	out := fs.String("o", "", "output directory (one subdirectory per variant)")
	var variants listFlag
	fs.Var(&variants, "variant", "NAME[:VAR=VALUE,...]: build into OUT/NAME with these make variables (repeatable; default: one variant named 'default')")
	signFile := fs.Bool("sign-file", false, "print the path of the kernel's sign-file (runnable here) and exit")
	verbose := fs.Bool("v", false, "print the build log")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: vmkbuild -o OUT [--variant NAME:VAR=VAL,...] SRC\n       vmkbuild --sign-file\n\n")
		fs.PrintDefaults()
	}
	fs.Parse(os.Args[1:])
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	k, err := vmtest.FetchKbuild(ctx, vmtest.FetchOptions{})
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmkbuild: %v\n", err)
		os.Exit(1)
	}
	if *signFile {
		fmt.Println(k.SignFile)
		return
	}
	if fs.NArg() != 1 || *out == "" {
		fs.Usage()
		os.Exit(2)
	}
	src := fs.Arg(0)
	if len(variants) == 0 {
		variants = listFlag{"default"}
	}
	for _, v := range variants {
		name, vars, _ := strings.Cut(v, ":")
		var mv []string
		if vars != "" {
			mv = strings.Split(vars, ",")
		}
		dir := filepath.Join(*out, name)
		key, err := vmtest.SourceDigest(src, append([]string{k.Release}, mv...)...)
		if err != nil {
			fmt.Fprintf(os.Stderr, "vmkbuild: %v\n", err)
			os.Exit(1)
		}
		stamp := filepath.Join(dir, ".vmkbuild-key")
		if b, err := os.ReadFile(stamp); err == nil && string(b) == key {
			fmt.Fprintf(os.Stderr, "vmkbuild: %s up to date (%s)\n", dir, k.Release)
			continue
		}
		os.RemoveAll(dir)
		kos, log, err := k.BuildModule(ctx, vmtest.ModuleBuild{Src: src, Vars: mv}, dir)
		if *verbose || err != nil {
			fmt.Fprint(os.Stderr, log)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "vmkbuild: %v\n", err)
			os.Exit(1)
		}
		if err := os.WriteFile(stamp, []byte(key), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "vmkbuild: %v\n", err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "vmkbuild: built %s for %s\n", strings.Join(kos, " "), k.Release)
	}
}
