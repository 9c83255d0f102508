// Command intact-registry serves the embedded OCI registry (package
// internal/registry, olareg) for 'intact registry serve' and 'intact
// quickstart', which start it: it is a command of its own so that the
// intact binary does not link olareg, whose package initialisation spends
// about 60 ms of CPU in every process (a bcrypt hash). Use 'intact registry
// serve'; this command's interface is plumbing:
//
//	intact-registry serve --addr HOST:PORT [--dir D] [--no-referrers-api] [--allow-remote] [--debug]
//
// It prints one JSON line on standard output once it listens,
// {"addr":"127.0.0.1:5000"}, serves until SIGINT or SIGTERM, then stops
// (waiting up to 10 s for requests in flight) and exits 0. Errors go to
// standard error, exit status 1 (2 for bad arguments).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/intact-project/intact/internal/registry"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "serve" {
		fmt.Fprintln(stderr, "usage: intact-registry serve --addr HOST:PORT [--dir D] [--no-referrers-api] [--allow-remote] [--debug]")
		return 2
	}
	fs := flag.NewFlagSet("intact-registry serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	dir := fs.String("dir", "", "store repositories as OCI layouts under this directory")
	noReferrers := fs.Bool("no-referrers-api", false, "disable the referrers API")
	allowRemote := fs.Bool("allow-remote", false, "allow a non-loopback --addr")
	debug := fs.Bool("debug", false, "olareg's logs on standard error")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "intact-registry: unexpected arguments %q\n", fs.Args())
		return 2
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		fmt.Fprintf(stderr, "intact-registry: --addr %q: %v\n", *addr, err)
		return 2
	}
	if ip := net.ParseIP(host); !*allowRemote && host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		fmt.Fprintf(stderr, "intact-registry: --addr %q is not a loopback address (the registry has no authentication; --allow-remote)\n", *addr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var logger *slog.Logger
	if *debug {
		logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s, err := registry.StartServer(ctx, registry.ServerOptions{Addr: *addr, Dir: *dir, NoReferrersAPI: *noReferrers, Logger: logger})
	if err != nil {
		fmt.Fprintf(stderr, "intact-registry: %v\n", err)
		return 1
	}
	if err := json.NewEncoder(stdout).Encode(map[string]string{"addr": s.Addr}); err != nil {
		fmt.Fprintf(stderr, "intact-registry: %v\n", err)
		return 1
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Wait() }()
	select {
	case <-ctx.Done():
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Close(cctx); err != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprintf(stderr, "intact-registry: shutdown: %v\n", err)
			return 1
		}
		return 0
	case err := <-errc:
		if err != nil {
			fmt.Fprintf(stderr, "intact-registry: %v\n", err)
			return 1
		}
		return 0
	}
}
