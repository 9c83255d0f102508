package oci

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/olareg/olareg"
	"github.com/olareg/olareg/config"
)

// ServerOptions configures the embedded registry (olareg). The zero value
// serves an in-memory registry on a free loopback port with the referrers
// API enabled.
type ServerOptions struct {
	// Addr is the listen address; empty means 127.0.0.1:0 (a free port).
	Addr string
	// Dir stores repositories as OCI layouts under this directory; empty
	// keeps everything in memory.
	Dir string
	// NoReferrersAPI disables the referrers API, so clients fall back to
	// the tag schema (for tests of that path).
	NoReferrersAPI bool
	// Logger receives olareg's logs; nil discards them.
	Logger *slog.Logger
}

// Server is a running embedded registry.
type Server struct {
	Addr string // host:port it listens on
	reg  *olareg.Server
	http *http.Server
	done chan error
}

// StartServer starts an embedded OCI registry (olareg, which implements the
// referrers API with artifactType filtering) and serves it until Close.
func StartServer(ctx context.Context, opts ServerOptions) (*Server, error) {
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	conf := config.Config{Log: opts.Logger}
	if opts.Dir != "" {
		conf.Storage.StoreType = config.StoreDir
		conf.Storage.RootDir = opts.Dir
	} else {
		conf.Storage.StoreType = config.StoreMem
	}
	enabled := !opts.NoReferrersAPI
	conf.API.Referrer.Enabled = &enabled
	// Keep untagged manifests (our referrers) and never collect during a run.
	conf.Storage.GC.Frequency = -1
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("registry: listen on %s: %w", addr, err)
	}
	reg := olareg.New(conf)
	s := &Server{
		Addr: ln.Addr().String(),
		reg:  reg,
		http: &http.Server{Handler: reg, ReadHeaderTimeout: 10 * time.Second},
		done: make(chan error, 1),
	}
	go func() {
		err := s.http.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.done <- err
	}()
	return s, nil
}

// Wait blocks until the server stops and returns why.
func (s *Server) Wait() error { return <-s.done }

// Close stops the server, waiting for requests in flight up to ctx, and
// releases the store.
func (s *Server) Close(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	if cerr := s.reg.Close(); err == nil {
		err = cerr
	}
	return err
}
