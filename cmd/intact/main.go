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
	ctx, stop := interruptContext()
	code := run(ctx, os.Args[1:], newInterruptibleReader(ctx, os.Stdin), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// interruptContext returns a context that the first SIGINT or SIGTERM
// cancels: commands wind down, remove what they started and exit with
// status 130. After that first signal the default action is restored, so a
// second Ctrl-C ends a process that is stuck where cancellation cannot
// reach (a read from a hung device, an open(2) of a FIFO without writer).
func interruptContext() (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	return ctx, stop
}
