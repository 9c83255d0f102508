// Package registry is the embedded OCI registry that intact uses for demos
// and tests: olareg (github.com/olareg/olareg), which implements the OCI
// distribution API with the referrers API (artifactType filtering,
// OCI-Subject), served on loopback in memory or over per-repository OCI
// image layouts in a directory.
//
// It lives outside package oci, and outside the intact binary, on purpose:
// olareg's package initialisation computes a bcrypt hash (about 60 ms of
// CPU) in every process that links it. The intact-registry command serves
// it ('intact registry serve' and 'intact quickstart' start that command);
// tests link it directly.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/olareg/olareg"
	"github.com/olareg/olareg/config"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/intact-project/intact/internal/atomicfile"
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
	if opts.NoReferrersAPI && opts.Dir != "" {
		if err := unconvertReferrers(opts.Dir, opts.Logger); err != nil {
			return nil, fmt.Errorf("registry: %w", err)
		}
	}
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

// olareg's annotations (github.com/olareg/olareg/types): an index.json
// whose referrers were converted from the tag schema into referrers API
// responses, and such a response's subject.
const (
	olaregReferrerConvert = "org.olareg.referrer.convert"
	olaregReferrerSubject = "org.olareg.referrer.subject"
)

// unconvertReferrers prepares storage that was served with the referrers
// API for serving without it. olareg keeps, per repository, referrers API
// responses (indexes annotated with their subject) and marks index.json as
// converted; with the API off it refuses such an index, and every manifest
// by digest answers 404. Each response becomes what a client pushes when a
// registry lacks the API: a tag named sha256-<subject hex>. Served with the
// API again, olareg converts the tags back.
func unconvertReferrers(root string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "index.json" {
			return err
		}
		if _, err := os.Stat(filepath.Join(filepath.Dir(p), "oci-layout")); err != nil {
			return nil
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var idx map[string]json.RawMessage
		if err := json.Unmarshal(raw, &idx); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		var annots map[string]string
		if a, ok := idx["annotations"]; ok {
			if err := json.Unmarshal(a, &annots); err != nil {
				return fmt.Errorf("%s: annotations: %w", p, err)
			}
		}
		if annots[olaregReferrerConvert] != "true" {
			return nil
		}
		var manifests []map[string]any
		if err := json.Unmarshal(idx["manifests"], &manifests); err != nil {
			return fmt.Errorf("%s: manifests: %w", p, err)
		}
		for _, m := range manifests {
			a, _ := m["annotations"].(map[string]any)
			subj, _ := a[olaregReferrerSubject].(string)
			if subj == "" {
				continue
			}
			sd, err := digest.Parse(subj)
			if err != nil {
				return fmt.Errorf("%s: referrers of %q: %w", p, subj, err)
			}
			delete(a, olaregReferrerSubject)
			a[ocispec.AnnotationRefName] = sd.Algorithm().String() + "-" + sd.Encoded()
		}
		delete(annots, olaregReferrerConvert)
		if len(annots) == 0 {
			delete(idx, "annotations")
		} else if idx["annotations"], err = json.Marshal(annots); err != nil {
			return err
		}
		if idx["manifests"], err = json.Marshal(manifests); err != nil {
			return err
		}
		out, err := json.Marshal(idx)
		if err != nil {
			return err
		}
		log.Info("registry: referrers turned into sha256-<hex> tags for serving without the referrers API", "index", p)
		return atomicfile.WriteFile(p, out, 0o644)
	})
}
