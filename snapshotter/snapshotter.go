package snapshotter

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/continuity/fs"
	"github.com/containerd/errdefs"
)

// Errors. Each says what was refused; the wrapped cause says why. They map
// to gRPC codes through containerd's errdefs (failed precondition, data
// loss), so `ctr` and `crictl` show the sentence.
var (
	// ErrUnsigned: the image has no dm-verity referrer and unsigned images
	// are not allowed for its repository, or the kernel requires signatures.
	ErrUnsigned error = precondition("unsigned image refused")
	// ErrUntrusted: the root-hash signature's signer does not chain to a
	// trusted key (the userspace trust anchors, or the kernel's keyrings).
	ErrUntrusted error = precondition("root-hash signature by an untrusted key")
	// ErrBadSignature: the kernel rejected the signature itself.
	ErrBadSignature error = precondition("root-hash signature rejected")
	// ErrReferrer: the image's referrers could not be read or are malformed.
	ErrReferrer error = precondition("dm-verity referrer unusable")
	// ErrLayerMismatch: the layer's bytes do not match its signed artifacts.
	ErrLayerMismatch error = dataLoss("layer does not match its signed dm-verity artifacts")
	// ErrNoImage: containerd did not say which image a layer belongs to.
	ErrNoImage error = precondition("no image reference for the layer")
	// ErrNotSupported: the kernel lacks something intactd needs.
	ErrNotSupported = errors.New("kernel support missing")
)

type precondition string

func (e precondition) Error() string       { return string(e) }
func (e precondition) FailedPrecondition() {}

type dataLoss string

func (e dataLoss) Error() string { return string(e) }
func (e dataLoss) DataLoss()     {}

// ContentStore is what the differ needs from containerd's content store:
// layer blobs and the manifests that list them (containerd's own content
// API, over its socket, in intactd).
type ContentStore interface {
	content.Provider
	content.InfoProvider
}

// Options configure New.
type Options struct {
	// Root holds the metadata database, snapshots and layers.
	Root string
	// RequireSignatures refuses every layer without a signed dm-verity
	// referrer, except images that AllowUnsigned names. When false, an
	// image without a referrer is converted here and opened unsigned; a
	// signed image is still opened with its signature.
	RequireSignatures bool
	// AllowUnsigned names repositories whose images may be unsigned even
	// with RequireSignatures: "host/repo" (that repository), "host/path/*"
	// (every repository below host/path), "host/*" or "*".
	AllowUnsigned []string
	// TrustAnchors, if set, are CAs a root-hash signature must chain to
	// before the kernel is asked: an early refusal that names the signer.
	// The kernel's keyrings stay the authority.
	TrustAnchors *x509.CertPool
	// Content is containerd's content store (needed by Apply).
	Content ContentStore
	// ContentDir, if set, is the directory of containerd's content store
	// on this host (<containerd root>/io.containerd.content.v1.content):
	// Apply then reads a layer blob from its file directly instead of
	// through the content API, when the file is there with the expected
	// size. The layer's diff_id is checked either way.
	ContentDir string
	// Hosts resolves registries for referrers (RegistryHosts builds it from
	// a hosts.toml directory); nil means containerd's defaults.
	Hosts docker.RegistryHosts
	// MaxLayerSize caps a decompressed layer; zero means the layer
	// package's default.
	MaxLayerSize int64
	// OverlayOptions are added to every overlay mount (default
	// "index=off").
	OverlayOptions []string
	Logger         *slog.Logger
}

// Snapshotter is intactd's snapshotter and differ. It implements
// containerd's snapshots.Snapshotter, diff.Applier and diff.Comparer
// (Compare always answers "not implemented", so containerd's diff service
// falls through to its walking differ).
type Snapshotter struct {
	root  string
	tag   string
	opts  Options
	log   *slog.Logger
	ms    *storage.MetaStore
	hosts docker.RegistryHosts
	Probe Probe // what the kernel offered at New

	mu        sync.Mutex
	layers    map[string]*layer // by layer ID, installed layers
	byKey     map[string]*layer // by sharing key, including layers being built
	snapLayer map[string]string // snapshot ID -> layer ID
	nextID    int
	verdicts  verdictCache
	closed    bool
}

// New opens (or creates) a snapshotter in opts.Root: it checks that the
// kernel has EROFS, overlayfs and dm-verity with root-hash signatures
// (ErrNotSupported otherwise), opens the metadata store and reconciles the
// layers with the kernel's device-mapper and mount state.
func New(ctx context.Context, opts Options) (*Snapshotter, error) {
	if opts.Root == "" {
		return nil, errors.New("snapshotter: no root directory")
	}
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, p := range opts.AllowUnsigned {
		if err := CheckPattern(p); err != nil {
			return nil, err
		}
	}
	if opts.OverlayOptions == nil {
		opts.OverlayOptions = []string{"index=off"}
	}
	for _, d := range []string{root, filepath.Join(root, "snapshots"), filepath.Join(root, layersDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("snapshotter: %w", err)
		}
	}
	s := &Snapshotter{
		root: root, tag: instanceTag(root), opts: opts, log: log,
		hosts:     opts.Hosts,
		layers:    map[string]*layer{},
		byKey:     map[string]*layer{},
		snapLayer: map[string]string{},
	}
	if s.hosts == nil {
		s.hosts = RegistryHosts(ctx, "", nil)
	}
	if s.Probe, err = ProbeKernel(ctx, root); err != nil {
		return nil, err
	}
	if s.ms, err = storage.NewMetaStore(filepath.Join(root, "metadata.db")); err != nil {
		return nil, fmt.Errorf("snapshotter: metadata: %w", err)
	}
	if err := s.reconcile(ctx); err != nil {
		s.ms.Close()
		return nil, fmt.Errorf("snapshotter: reconcile: %w", err)
	}
	return s, nil
}

func (s *Snapshotter) upperPath(id string) string {
	return filepath.Join(s.root, "snapshots", id, "fs")
}
func (s *Snapshotter) workPath(id string) string {
	return filepath.Join(s.root, "snapshots", id, "work")
}
func (s *Snapshotter) snapDir(id string) string { return filepath.Join(s.root, "snapshots", id) }

// Stat returns the info of a snapshot.
func (s *Snapshotter) Stat(ctx context.Context, key string) (info snapshots.Info, err error) {
	err = s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		_, info, _, err = storage.GetInfo(ctx, key)
		return err
	})
	return info, err
}

// Update updates a snapshot's labels.
func (s *Snapshotter) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (out snapshots.Info, err error) {
	err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		out, err = storage.UpdateInfo(ctx, info, fieldpaths...)
		return err
	})
	return out, err
}

// Usage returns the disk use of a snapshot: the upper directory of an
// active one, the layer's data file (device and tree) of a committed one.
func (s *Snapshotter) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	var (
		id    string
		info  snapshots.Info
		usage snapshots.Usage
	)
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
		id, info, usage, err = storage.GetInfo(ctx, key)
		return err
	})
	if err != nil {
		return snapshots.Usage{}, err
	}
	if info.Kind == snapshots.KindActive {
		du, err := fs.DiskUsage(ctx, s.upperPath(id))
		if err != nil {
			return snapshots.Usage{}, err
		}
		usage = snapshots.Usage(du)
	}
	return usage, nil
}

// Mounts returns the mounts of an active snapshot or a view.
func (s *Snapshotter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	var snap storage.Snapshot
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
		snap, err = storage.GetSnapshot(ctx, key)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", key, err)
	}
	return s.mounts(snap)
}

// Prepare creates an active snapshot. For an extraction snapshot of an
// image pull (containerd.io/snapshot.ref plus the cri.* labels), it first
// decides whether the image may run here at all, so that an unsigned image
// is refused before containerd downloads its layers, and answers
// AlreadyExists when the verified chain is already here (containerd then
// skips the layer).
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.create(ctx, snapshots.KindActive, key, parent, opts)
}

// View creates a read-only view of parent.
func (s *Snapshotter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.create(ctx, snapshots.KindView, key, parent, opts)
}

func (s *Snapshotter) create(ctx context.Context, kind snapshots.Kind, key, parent string, opts []snapshots.Opt) ([]mount.Mount, error) {
	var base snapshots.Info
	for _, o := range opts {
		if err := o(&base); err != nil {
			return nil, err
		}
	}
	o := originFromLabels(base.Labels)
	if kind == snapshots.KindActive && o.Image != "" && o.Manifest != "" {
		if _, err := s.verdict(ctx, o); err != nil {
			return nil, fmt.Errorf("layer %s of %s: %w", o.Layer, o.Image, err)
		}
	}
	if target := base.Labels[snapshots.LabelSnapshotRef]; kind == snapshots.KindActive && target != "" {
		if info, err := s.Stat(ctx, target); err == nil && info.Kind == snapshots.KindCommitted {
			return nil, fmt.Errorf("snapshot %s: %w", target, errdefs.ErrAlreadyExists)
		}
	}
	var snap storage.Snapshot
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) (err error) {
		td, err := os.MkdirTemp(filepath.Join(s.root, "snapshots"), "new-")
		if err != nil {
			return err
		}
		defer func() {
			if err != nil {
				os.RemoveAll(td)
			}
		}()
		if err := os.Mkdir(filepath.Join(td, "fs"), 0o755); err != nil {
			return err
		}
		if kind == snapshots.KindActive {
			if err := os.Mkdir(filepath.Join(td, "work"), 0o711); err != nil {
				return err
			}
		}
		if o != (origin{}) {
			b, _ := json.Marshal(o)
			if err := os.WriteFile(filepath.Join(td, originFile), b, 0o600); err != nil {
				return err
			}
		}
		if snap, err = storage.CreateSnapshot(ctx, kind, key, parent, opts...); err != nil {
			return err
		}
		for _, pid := range snap.ParentIDs {
			if _, err := s.lowerOf(pid); err != nil {
				return err
			}
		}
		return os.Rename(td, s.snapDir(snap.ID))
	})
	if err != nil {
		return nil, err
	}
	return s.mounts(snap)
}

// mounts returns what containerd mounts for snap: a bind mount of the upper
// directory (no parent) or of the only lower (a view of one layer), else
// overlayfs over the parents' verified EROFS mounts.
func (s *Snapshotter) mounts(snap storage.Snapshot) ([]mount.Mount, error) {
	lowers := make([]string, 0, len(snap.ParentIDs))
	for _, pid := range snap.ParentIDs {
		l, err := s.lowerOf(pid)
		if err != nil {
			return nil, err
		}
		lowers = append(lowers, l)
	}
	if len(lowers) == 0 {
		rw := "rw"
		if snap.Kind == snapshots.KindView {
			rw = "ro"
		}
		return []mount.Mount{{Type: "bind", Source: s.upperPath(snap.ID), Options: []string{rw, "rbind"}}}, nil
	}
	if snap.Kind == snapshots.KindView && len(lowers) == 1 {
		return []mount.Mount{{Type: "bind", Source: lowers[0], Options: []string{"ro", "rbind"}}}, nil
	}
	var o []string
	if snap.Kind == snapshots.KindActive {
		o = append(o, "workdir="+s.workPath(snap.ID), "upperdir="+s.upperPath(snap.ID))
	}
	o = append(o, s.opts.OverlayOptions...)
	o = append(o, "lowerdir="+strings.Join(lowers, ":"))
	return []mount.Mount{{Type: "overlay", Source: "overlay", Options: o}}, nil
}

// lowerOf returns the EROFS mount of a committed snapshot's layer.
func (s *Snapshotter) lowerOf(id string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	lid, ok := s.snapLayer[id]
	if !ok {
		return "", fmt.Errorf("snapshot %s has no verified layer: %w", id, errdefs.ErrFailedPrecondition)
	}
	l := s.layers[lid]
	if l == nil || l.dev == "" {
		return "", fmt.Errorf("layer %s of snapshot %s is not active (restart intactd to reconcile): %w", lid, id, errdefs.ErrUnavailable)
	}
	return l.mountpoint(), nil
}

// Commit turns an active snapshot into a committed one. A snapshot the
// differ applied a layer to commits that verified layer; any other content
// (files written into the snapshot) is converted to a layer here, which
// only an unsigned-allowed configuration permits.
func (s *Snapshotter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	var (
		id   string
		info snapshots.Info
	)
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
		id, info, _, err = storage.GetInfo(ctx, key)
		return err
	})
	if err != nil {
		return err
	}
	if info.Kind != snapshots.KindActive {
		return fmt.Errorf("snapshot %s is not active: %w", key, errdefs.ErrFailedPrecondition)
	}
	l := s.layerOf(id)
	created := false
	if l == nil {
		o := s.readOrigin(id)
		if !s.unsignedAllowed(o.Image) {
			return fmt.Errorf("snapshot %s: %w: its files were not applied from a signed layer by intact-diff (require_signatures is on; pull with the intact-diff differ, see `intactd containerd-config`)", key, ErrUnsigned)
		}
		if l, err = s.commitDir(ctx, id); err != nil {
			return fmt.Errorf("commit %s: %w", key, err)
		}
		created = true
	} else if empty, err := dirEmpty(s.upperPath(id)); err != nil || !empty {
		return fmt.Errorf("snapshot %s: files were written next to the verified layer %s: %w", key, l.rec.ID, errdefs.ErrFailedPrecondition)
	}
	usage := snapshots.Usage{Size: l.rec.Size, Inodes: 1}
	err = s.ms.WithTransaction(ctx, true, func(ctx context.Context) error {
		_, err := storage.CommitActive(ctx, key, name, usage, opts...)
		return err
	})
	if err != nil {
		if created {
			s.unlink(ctx, id)
		}
		return err
	}
	// The upper directory's files now live in the layer.
	if created {
		if err := os.RemoveAll(s.upperPath(id)); err == nil {
			os.Mkdir(s.upperPath(id), 0o755)
		}
	}
	os.RemoveAll(s.workPath(id))
	return nil
}

// Remove removes a snapshot; a layer no snapshot uses any more is
// unmounted, its device removed and its files deleted.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	var id string
	err := s.ms.WithTransaction(ctx, true, func(ctx context.Context) (err error) {
		id, _, err = storage.Remove(ctx, key)
		return err
	})
	if err != nil {
		return fmt.Errorf("remove snapshot %s: %w", key, err)
	}
	uerr := s.unlink(ctx, id)
	if err := os.RemoveAll(s.snapDir(id)); err != nil {
		return errors.Join(uerr, fmt.Errorf("remove snapshot %s: %w", key, err))
	}
	return uerr
}

// Walk calls fn for every snapshot matching filters.
func (s *Snapshotter) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	return s.ms.WithTransaction(ctx, false, func(ctx context.Context) error {
		return storage.WalkInfo(ctx, fn, filters...)
	})
}

// Close closes the metadata store. Layers stay mounted: running containers
// use them, and the next New reconciles.
func (s *Snapshotter) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	return s.ms.Close()
}

// Shutdown removes every layer device and mount and closes the store: for
// tests and for `intactd --cleanup-on-exit`; containers using the layers
// must be gone.
func (s *Snapshotter) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	ls := make([]*layer, 0, len(s.layers))
	for _, l := range s.layers {
		ls = append(ls, l)
	}
	s.mu.Unlock()
	var errs []error
	for _, l := range ls {
		if err := s.deactivate(ctx, l); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(append(errs, s.Close())...)
}

func dirEmpty(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if len(names) == 0 && err != nil {
		return true, nil
	}
	return false, err
}
