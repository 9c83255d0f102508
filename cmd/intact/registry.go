package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
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

The server is the intact-registry command, which must be next to intact (make
build and go install put it there), on PATH or named by $INTACT_REGISTRY: olareg
costs every process that links it about 60 ms of CPU at start, so intact does
not link it.

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
			s, err := startRegistryProcess(e, registryOptions{Addr: addr, Dir: dir, NoReferrersAPI: noReferrers, AllowRemote: allowRemote})
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
			select {
			case <-e.ctx.Done():
				if err := s.Stop(); err != nil {
					return fmt.Errorf("registry: shutdown: %w", err)
				}
				e.infof("registry stopped\n")
				return nil
			case <-s.done:
				if err := s.Stop(); err != nil {
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

// The registry runs as its own process, the intact-registry command: the
// olareg package it serves spends about 60 ms of CPU initialising in every
// process that links it, so the intact binary does not.

// registryCommand is the intact-registry binary: $INTACT_REGISTRY, else the
// one next to this executable (what make build and go install put there),
// else the one on $PATH.
func registryCommand() (string, error) {
	if p := os.Getenv("INTACT_REGISTRY"); p != "" {
		return p, nil
	}
	if self, err := os.Executable(); err == nil {
		if self, err = filepath.EvalSymlinks(self); err == nil {
			p := filepath.Join(filepath.Dir(self), "intact-registry")
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
				return p, nil
			}
		}
	}
	if p, err := exec.LookPath("intact-registry"); err == nil {
		return p, nil
	}
	return "", errors.New("the registry is served by the intact-registry command, which is neither next to intact nor on PATH: " +
		"build both with 'make build' (or 'go build -o DIR ./cmd/intact ./cmd/intact-registry'), or set INTACT_REGISTRY to its path")
}

type registryOptions struct {
	Addr           string // default 127.0.0.1:0
	Dir            string
	NoReferrersAPI bool
	AllowRemote    bool
}

// registryProcess is a running intact-registry serve.
type registryProcess struct {
	Addr string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has ended
	err  error         // its end, valid after done
	once sync.Once
}

// startRegistryProcess starts intact-registry serve and waits until it
// listens. It stops with Stop; it also ends if intact dies (SIGTERM on the
// parent's death), and a Ctrl-C at a terminal reaches intact only, which
// stops it.
func startRegistryProcess(e *env, o registryOptions) (*registryProcess, error) {
	bin, err := registryCommand()
	if err != nil {
		return nil, err
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	args := []string{"serve", "--addr", o.Addr}
	if o.Dir != "" {
		args = append(args, "--dir", o.Dir)
	}
	if o.NoReferrersAPI {
		args = append(args, "--no-referrers-api")
	}
	if o.AllowRemote {
		args = append(args, "--allow-remote")
	}
	if e.debug {
		args = append(args, "--debug")
	}
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	// Its standard error is held back until it listens (a failure to
	// start becomes this command's error), then passed through (--debug).
	stderr := &heldWriter{w: e.stderr}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("registry: start %s: %w", bin, err)
	}
	p := &registryProcess{cmd: cmd, done: make(chan struct{})}
	line := make(chan []byte, 1)
	go func() {
		r := bufio.NewReader(out)
		b, _ := r.ReadBytes('\n')
		line <- b
		io.Copy(io.Discard, r) // it prints nothing else
		p.err = cmd.Wait()
		close(p.done)
	}()
	var ready struct {
		Addr string `json:"addr"`
	}
	select {
	case b := <-line:
		if json.Unmarshal(b, &ready) == nil && ready.Addr != "" {
			p.Addr = ready.Addr
			stderr.release()
			return p, nil
		}
		<-p.done
		if msg := bytes.TrimSpace(stderr.held()); len(msg) > 0 {
			return nil, errors.New(string(bytes.TrimPrefix(msg, []byte("intact-registry: "))))
		}
		return nil, fmt.Errorf("registry: %s ended without serving: %v", bin, p.err)
	case <-e.ctx.Done():
		p.Stop()
		return nil, e.ctx.Err()
	}
}

// Stop ends the registry (SIGTERM; it finishes requests in flight for up to
// 10 s) and returns how it ended.
func (p *registryProcess) Stop() error {
	p.once.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	<-p.done
	var ee *exec.ExitError
	if errors.As(p.err, &ee) && ee.ExitCode() > 0 {
		return fmt.Errorf("intact-registry exited with status %d", ee.ExitCode())
	}
	return p.err
}

// heldWriter keeps what is written until release, then writes through.
type heldWriter struct {
	mu   sync.Mutex
	w    io.Writer
	buf  bytes.Buffer
	live bool
}

func (h *heldWriter) Write(b []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.live {
		return h.w.Write(b)
	}
	return h.buf.Write(b)
}

func (h *heldWriter) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.live = true
	h.w.Write(h.buf.Bytes())
}

func (h *heldWriter) held() []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return bytes.Clone(h.buf.Bytes())
}
