package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	diffapi "github.com/containerd/containerd/api/services/diff/v1"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/diffservice"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"google.golang.org/grpc"
)

// Serve serves s as containerd's snapshots API and diff API on one unix
// socket at address (replacing a stale socket file) until ctx is done; it
// then stops accepting and waits for requests in flight.
func Serve(ctx context.Context, s *Snapshotter, address string) error {
	if err := os.MkdirAll(filepath.Dir(address), 0o700); err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	if err := os.Remove(address); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	l, err := net.Listen("unix", address)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", address, err)
	}
	if err := os.Chmod(address, 0o600); err != nil {
		l.Close()
		return err
	}
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(s))
	diffapi.RegisterDiffServer(srv, diffservice.FromApplierAndComparer(s, s))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	select {
	case <-ctx.Done():
		srv.GracefulStop()
		<-done
		os.Remove(address)
		return nil
	case err := <-done:
		return err
	}
}
