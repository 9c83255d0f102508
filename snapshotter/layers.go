package snapshotter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/intact-project/intact/dm"
	"github.com/intact-project/intact/internal/linux"
	layerpkg "github.com/intact-project/intact/layer"
	"github.com/intact-project/intact/verity"
	"github.com/intact-project/intact/veritydev"
)

// record is a layer's layer.json: what was verified, and how to open it
// again.
type record struct {
	ID       string           `json:"id"`
	Key      string           `json:"key"`              // what shares it: s:<root hash>, u:<layer digest>, d:<id>
	Digest   digest.Digest    `json:"digest,omitempty"` // the layer blob (empty for a committed directory)
	DiffID   digest.Digest    `json:"diff_id,omitempty"`
	TarSize  int64            `json:"tar_size,omitempty"`
	Profile  layerpkg.Profile `json:"profile"`
	RootHash string           `json:"root_hash"`
	Signed   bool             `json:"signed"`
	Signer   string           `json:"signer,omitempty"` // subject, when trust anchors checked it in userspace
	Image    string           `json:"image,omitempty"`  // the reference it was first pulled for
	Referrer digest.Digest    `json:"referrer,omitempty"`
	Verity   verity.Params    `json:"verity"`
	Size     int64            `json:"size"` // bytes of the data file (data device and tree)
	Created  time.Time        `json:"created"`
}

// layer is a verified layer in memory.
type layer struct {
	rec   record
	dir   string
	refs  map[string]bool // snapshot IDs that use it
	ready chan struct{}   // closed when building ended (err says how)
	err   error
	dev   string // /dev/dm-N while open
}

const (
	layersDir    = "layers"
	stagePrefix  = ".stage-"
	recordFile   = "layer.json"
	dataFile     = "data"
	sigFile      = "sig"
	mountDir     = "fs"
	dmNamePrefix = "intact-"
	dmUUIDPrefix = "INTACT-LAYER-"
)

// signedKey shares a signed layer between images whose referrers carry the
// same root hash AND the same signature bytes: a layer signed by another key
// (or re-signed) gets its own device, so the kernel checks every signature
// that any image brings.
func signedKey(rootHex string, sig []byte) string {
	h := sha256.Sum256(sig)
	return "s:" + rootHex + ":" + hex.EncodeToString(h[:16])
}

func unsignedKey(blob digest.Digest) string      { return "u:" + blob.String() }
func (s *Snapshotter) layerDir(id string) string { return filepath.Join(s.root, layersDir, id) }
func (l *layer) mountpoint() string              { return filepath.Join(l.dir, mountDir) }

// instanceTag distinguishes the device-mapper devices of snapshotters with
// different roots on one host.
func instanceTag(root string) string {
	h := sha256.Sum256([]byte(root))
	return hex.EncodeToString(h[:4])
}

func (s *Snapshotter) dmName(id string) string { return dmNamePrefix + s.tag + "-" + id }

func (s *Snapshotter) dmUUID(r *record) string {
	return dmUUIDPrefix + s.tag + "-" + r.ID + "-" + r.RootHash[:32]
}

// stage makes a staging directory for a new layer's files.
func (s *Snapshotter) stage() (string, error) {
	d, err := os.MkdirTemp(filepath.Join(s.root, layersDir), stagePrefix)
	if err != nil {
		return "", fmt.Errorf("stage layer: %w", err)
	}
	return d, nil
}

// install turns a staging directory holding the data file into a layer:
// it writes the signature and the record, syncs them, moves the directory
// to its final name, opens the verity device (with the signature, which the
// kernel checks) and mounts the EROFS. On failure nothing stays behind.
func (s *Snapshotter) install(ctx context.Context, stage string, l *layer, sig []byte) (err error) {
	defer func() {
		if err != nil {
			os.RemoveAll(stage)
		}
	}()
	if sig != nil {
		if err := writeSynced(filepath.Join(stage, sigFile), sig); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.nextID++
	l.rec.ID = strconv.Itoa(s.nextID)
	s.mu.Unlock()
	l.rec.Created = time.Now().UTC()
	b, err := json.MarshalIndent(&l.rec, "", "  ")
	if err != nil {
		return err
	}
	if err := writeSynced(filepath.Join(stage, recordFile), append(b, '\n')); err != nil {
		return err
	}
	if err := syncDir(stage); err != nil {
		return err
	}
	l.dir = s.layerDir(l.rec.ID)
	if err := os.Rename(stage, l.dir); err != nil {
		return fmt.Errorf("install layer: %w", err)
	}
	stage = l.dir // the deferred cleanup now removes the installed directory
	if err := syncDir(filepath.Dir(l.dir)); err != nil {
		return err
	}
	if err := s.activate(ctx, l, sig); err != nil {
		return err
	}
	return nil
}

// activate opens the layer's verity device and mounts it.
func (s *Snapshotter) activate(ctx context.Context, l *layer, sig []byte) (err error) {
	root, err := hex.DecodeString(l.rec.RootHash)
	if err != nil {
		return fmt.Errorf("layer %s: root hash %q: %w", l.rec.ID, l.rec.RootHash, err)
	}
	name := s.dmName(l.rec.ID)
	dev, err := veritydev.OpenConfig(ctx, veritydev.Config{
		Name:      name,
		Data:      filepath.Join(l.dir, dataFile),
		Params:    l.rec.Verity,
		RootHash:  root,
		Signature: sig,
		UUID:      s.dmUUID(&l.rec),
		Logger:    s.log,
	})
	if err != nil {
		return explainOpen(err, sig != nil)
	}
	defer func() {
		if err != nil {
			s.closeDevice(ctx, name)
		}
	}()
	mp := l.mountpoint()
	if err := os.MkdirAll(mp, 0o755); err != nil {
		return fmt.Errorf("layer mount point: %w", err)
	}
	if err := linux.Mount(dev.Path, mp, "erofs", linux.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mount the verified layer: %w", err)
	}
	l.dev = dev.Path
	s.log.Debug("layer active", "id", l.rec.ID, "device", dev.Path, "root_hash", l.rec.RootHash, "signed", l.rec.Signed)
	return nil
}

// explainOpen turns the kernel's refusal of a verity table into a sentence
// that names the cause.
func explainOpen(err error, signed bool) error {
	switch {
	case errors.Is(err, linux.ENOKEY) && signed:
		return fmt.Errorf("%w: the kernel does not trust the signer (ENOKEY): its certificate does not chain to a key in the kernel's trusted keyrings (builtin, secondary or platform/UEFI db): %w", ErrUntrusted, err)
	case errors.Is(err, linux.ENOKEY):
		return fmt.Errorf("%w: the kernel requires a root-hash signature (dm_verity.require_signatures=1) and the layer has none (ENOKEY): %w", ErrUnsigned, err)
	case errors.Is(err, linux.EKEYREJECTED):
		return fmt.Errorf("%w: the kernel rejected the root-hash signature (EKEYREJECTED): it does not cover this root hash, or has signed attributes or an algorithm the kernel refuses: %w", ErrBadSignature, err)
	case errors.Is(err, veritydev.ErrSignatureRejected):
		return fmt.Errorf("%w: %w", ErrBadSignature, err)
	}
	return fmt.Errorf("open the dm-verity device: %w", err)
}

// deactivate unmounts the layer and removes its device; a layer that is
// not mounted or has no device is fine.
func (s *Snapshotter) deactivate(ctx context.Context, l *layer) error {
	var errs []error
	if err := linux.Unmount(l.mountpoint(), 0); err != nil && !errors.Is(err, linux.EINVAL) && !errors.Is(err, linux.ENOENT) {
		errs = append(errs, fmt.Errorf("unmount layer %s: %w", l.rec.ID, err))
	}
	if err := s.closeDevice(ctx, s.dmName(l.rec.ID)); err != nil {
		errs = append(errs, err)
	}
	l.dev = ""
	return errors.Join(errs...)
}

func (s *Snapshotter) closeDevice(ctx context.Context, name string) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := veritydev.Close(rctx, name); err != nil && !errors.Is(err, dm.ErrNotFound) {
		return fmt.Errorf("remove device %s: %w", name, err)
	}
	return nil
}

// destroy deactivates a layer and deletes its files.
func (s *Snapshotter) destroy(ctx context.Context, l *layer) error {
	if err := s.deactivate(ctx, l); err != nil {
		return err
	}
	if err := os.RemoveAll(l.dir); err != nil {
		return fmt.Errorf("remove layer %s: %w", l.rec.ID, err)
	}
	s.log.Debug("layer removed", "id", l.rec.ID, "root_hash", l.rec.RootHash)
	return nil
}

// loadRecord reads a layer directory's record; a directory without a
// complete record is a half-built layer.
func loadRecord(dir string) (*record, []byte, error) {
	b, err := os.ReadFile(filepath.Join(dir, recordFile))
	if err != nil {
		return nil, nil, err
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", filepath.Join(dir, recordFile), err)
	}
	if r.ID != filepath.Base(dir) || r.Key == "" || len(r.RootHash) != 64 {
		return nil, nil, fmt.Errorf("%s: inconsistent record", filepath.Join(dir, recordFile))
	}
	var sig []byte
	if r.Signed {
		if sig, err = os.ReadFile(filepath.Join(dir, sigFile)); err != nil {
			return nil, nil, err
		}
	}
	return &r, sig, nil
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// isStage reports whether a name in the layers directory is a staging
// directory.
func isStage(name string) bool { return strings.HasPrefix(name, stagePrefix) }
