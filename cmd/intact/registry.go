package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/intact-project/intact/oci"
)

func init() { register(newRegistryCmd) }

func newRegistryCmd(e *env) *cobra.Command {
	g := &cobra.Command{
		Use:   "registry",
		Short: "Run the embedded OCI registry (olareg) for demos and tests",
		Args:  cobra.NoArgs,
	}
	g.AddCommand(newRegistryServeCmd(e))
	return g
}

func newRegistryServeCmd(e *env) *cobra.Command {
	var (
		addr        string
		dir         string
		noReferrers bool
		allowRemote bool
	)
	c := &cobra.Command{
		Use:   "serve [--addr 127.0.0.1:5000] [--dir D]",
		Short: "Serve an OCI registry with the referrers API on loopback",
		Long: `Serve the same embedded OCI registry (olareg) that 'intact quickstart' and the
tests use, as a process, until interrupted (Ctrl-C or SIGTERM).

It implements the OCI distribution API including the referrers API with
artifactType filtering, which 'intact image sign' and 'intact image verify'
use. Without --dir everything is kept in memory and lost on exit; with --dir
each repository is stored as an OCI image layout under D.

It listens on loopback only unless --allow-remote is given: the registry has
no authentication. Talk to it with --plain-http, for example:

  intact registry serve --addr 127.0.0.1:5000 &
  intact image sign 127.0.0.1:5000/app:v1 --plain-http --key key.pem --cert cert.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return usagef("--addr %q: %v", addr, err)
			}
			if !allowRemote {
				ip := net.ParseIP(host)
				if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
					return usagef("--addr %q is not a loopback address; the registry has no authentication (add --allow-remote to serve it anyway)", addr)
				}
			}
			if dir != "" {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return fmt.Errorf("--dir: %w", err)
				}
			}
			var logger = e.log
			if !e.debug {
				logger = nil
			}
			s, err := oci.StartServer(e.ctx, oci.ServerOptions{Addr: addr, Dir: dir, NoReferrersAPI: noReferrers, Logger: logger})
			if err != nil {
				return err
			}
			info := struct {
				Addr           string `json:"addr"`
				Dir            string `json:"dir,omitempty"`
				ReferrersAPI   bool   `json:"referrers_api"`
				ExampleRefBase string `json:"example_ref"`
			}{s.Addr, dir, !noReferrers, s.Addr + "/NAME:TAG"}
			if e.json {
				if err := e.printJSON(info); err != nil {
					return err
				}
			} else {
				store := "in memory"
				if dir != "" {
					store = "in " + dir
				}
				e.printf("serving an OCI registry on %s (%s); use --plain-http with references like %s/app:v1\n", s.Addr, store, s.Addr)
			}
			errc := make(chan error, 1)
			go func() { errc <- s.Wait() }()
			select {
			case <-e.ctx.Done():
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := s.Close(ctx); err != nil {
					return fmt.Errorf("registry: shutdown: %w", err)
				}
				e.infof("registry stopped\n")
				return nil
			case err := <-errc:
				if err != nil {
					return fmt.Errorf("registry: %w", err)
				}
				return nil
			}
		},
	}
	c.Flags().StringVar(&addr, "addr", "127.0.0.1:5000", "listen address (host:port; port 0 picks a free port)")
	c.Flags().StringVar(&dir, "dir", "", "store repositories as OCI layouts under this directory (default: in memory)")
	c.Flags().BoolVar(&noReferrers, "no-referrers-api", false, "disable the referrers API (clients fall back to the sha256-<hex> tag schema)")
	c.Flags().BoolVar(&allowRemote, "allow-remote", false, "allow a non-loopback --addr (the registry has no authentication)")
	return c
}
