package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/intact-project/intact/host/agent"
)

func init() {
	hostSubcommands = append(hostSubcommands, newHostExecCmd, newHostForwardCmd)
}

func newHostExecCmd(e *env) *cobra.Command {
	var (
		sock    string
		timeout time.Duration
		files   []string
	)
	c := &cobra.Command{
		Use:   "exec --agent SOCKET [--file LOCAL:GUEST]... -- CMD [ARG...]",
		Short: "Run a command on a booted host through its agent",
		Long: `Run CMD on a host booted with 'intact host run --agent SOCKET' whose image
starts the command agent (the example container host does, when its signed
command line says intact.agent=ttyS1). The command's output is printed, and
its exit status is this command's. --file copies a local file into the guest
first. With --json the whole response is printed: exit, stdout, stderr, the
errno of a command that could not start, seconds.

  intact host exec --agent /tmp/agent.sock -- ctr image pull --snapshotter intact 10.0.2.100:5000/app:1`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if sock == "" {
				return usagef("--agent SOCKET is required")
			}
			req := agent.Request{Argv: args, Timeout: timeout.Seconds()}
			for _, f := range files {
				local, guest, ok := strings.Cut(f, ":")
				if !ok || guest == "" {
					return usagef("--file %q: want LOCAL:GUEST", f)
				}
				b, err := os.ReadFile(local)
				if err != nil {
					return err
				}
				st, _ := os.Stat(local)
				req.Files = append(req.Files, agent.File{Path: guest, Data: b, Mode: uint32(st.Mode().Perm())})
			}
			ctx, cancel := context.WithTimeout(e.ctx, timeout+time.Minute)
			defer cancel()
			c, err := agent.Dial(ctx, sock)
			if err != nil {
				return err
			}
			defer c.Close()
			// A request sent before the guest opened its serial port is
			// lost: ping until the agent answers (at once when it is up).
			if err := c.Wait(ctx); err != nil {
				return err
			}
			resp, err := c.Do(ctx, req)
			if err != nil {
				return err
			}
			if e.json {
				if err := e.printJSON(resp); err != nil {
					return err
				}
			} else {
				io.WriteString(e.stdout, resp.Stdout)
				io.WriteString(e.stderr, resp.Stderr)
			}
			switch {
			case resp.Error != "":
				return &exitError{code: 1, msg: fmt.Sprintf("%s: %s", args[0], resp.Error)}
			case resp.Exit != 0:
				return &exitError{code: min(max(resp.Exit, 1), 125)}
			}
			return nil
		},
	}
	c.Flags().StringVar(&sock, "agent", "", "unix socket of the guest's agent (intact host run --agent)")
	c.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "kill the command after this long")
	c.Flags().StringSliceVar(&files, "file", nil, "LOCAL:GUEST file to write in the guest first (repeatable)")
	return c
}

func newHostForwardCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:    "forward HOST:PORT",
		Short:  "Connect standard input and output to HOST:PORT (QEMU's guestfwd runs it per connection)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			conn, err := net.DialTimeout("tcp", args[0], 10*time.Second)
			if err != nil {
				return err
			}
			defer conn.Close()
			done := make(chan struct{}, 2)
			go func() { io.Copy(conn, os.Stdin); conn.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
			go func() { io.Copy(os.Stdout, conn); done <- struct{}{} }()
			<-done
			<-done
			return nil
		},
	}
}
