// Command intact is the command-line interface to the intact toolkit: dm-verity
// and fs-verity formats, EROFS layers, IPE policies, image signing and the
// immutable host builder. Each subcommand group lives in its own file and is a
// thin layer over the library package that owns the format or kernel
// interface; see docs/cli.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
