package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/core/snapshots/storage"
	"github.com/containerd/errdefs"

	"github.com/intact-project/intact/dm"
	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/internal/mountinfo"
)

// reconcile makes the kernel's state match the metadata after a restart or
// a crash at any point:
//   - snapshot directories the metadata does not know (a Prepare or Remove
//     that died halfway) are deleted;
//   - layer directories without a complete record (a build that died) and
//     layers no snapshot refers to are unmounted, their devices removed and
//     their files deleted;
//   - every layer a snapshot refers to is opened (the kernel checks its
//     signature again) and mounted unless its device and mount are there;
//   - device-mapper devices and mounts of this snapshotter that belong to no
//     kept layer are removed.
func (s *Snapshotter) reconcile(ctx context.Context) error {
	var ids map[string]string
	err := s.ms.WithTransaction(ctx, false, func(ctx context.Context) (err error) {
		ids, err = storage.IDMap(ctx)
		if errdefs.IsNotFound(err) { // a new database has no bucket yet
			ids, err = map[string]string{}, nil
		}
		return err
	})
	if err != nil {
		return err
	}
	snapDir := filepath.Join(s.root, "snapshots")
	ents, err := os.ReadDir(snapDir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if _, ok := ids[e.Name()]; !ok {
			s.log.Info("removing an unknown snapshot directory", "dir", e.Name())
			if err := os.RemoveAll(filepath.Join(snapDir, e.Name())); err != nil {
				return err
			}
		}
	}

	mounts, err := mountinfo.Self()
	if err != nil {
		return err
	}
	mounted := map[string]mountinfo.Mount{}
	layersRoot := filepath.Join(s.root, layersDir) + "/"
	for _, m := range mounts {
		if strings.HasPrefix(m.Point, layersRoot) {
			mounted[m.Point] = m
		}
	}
	ctl, err := dm.Open()
	if err != nil {
		return err
	}
	defer ctl.Close()
	devs, err := ctl.List()
	if err != nil {
		return err
	}
	ourDevs := map[string]dm.Info{}
	for _, d := range devs {
		if strings.HasPrefix(d.Name, dmNamePrefix+s.tag+"-") {
			info, err := ctl.Info(d.Name)
			if err != nil {
				return err
			}
			ourDevs[d.Name] = info
		}
	}

	// Layer records, and which snapshots use them.
	lents, err := os.ReadDir(filepath.Join(s.root, layersDir))
	if err != nil {
		return err
	}
	sigs := map[string][]byte{}
	for _, e := range lents {
		dir := filepath.Join(s.root, layersDir, e.Name())
		if n, err := strconv.Atoi(e.Name()); err == nil && n > s.nextID {
			s.nextID = n
		}
		rec, sig, err := loadRecord(dir)
		if isStage(e.Name()) || err != nil {
			if isStage(e.Name()) {
				s.log.Info("removing a half-built layer", "dir", dir)
			} else {
				s.log.Warn("removing a layer without a usable record", "dir", dir, "err", err)
			}
			s.unmountAll(dir, mounted)
			if err := os.RemoveAll(dir); err != nil {
				return err
			}
			continue
		}
		s.layers[rec.ID] = &layer{rec: *rec, dir: dir, refs: map[string]bool{}, ready: closedChan()}
		sigs[rec.ID] = sig
	}
	for id := range ids {
		lid := s.readLink(id)
		if lid == "" {
			continue
		}
		l := s.layers[lid]
		if l == nil {
			s.log.Error("snapshot refers to a missing layer; its mounts will fail until it is removed", "snapshot", id, "layer", lid)
			continue
		}
		l.refs[id] = true
		s.snapLayer[id] = lid
	}

	keep := map[string]bool{}
	var errs []error
	for lid, l := range s.layers {
		if len(l.refs) == 0 {
			s.log.Info("removing an unused layer", "layer", lid, "root_hash", l.rec.RootHash)
			delete(s.layers, lid)
			s.unmountAll(l.dir, mounted)
			if err := s.destroy(ctx, l); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		name := s.dmName(lid)
		keep[name] = true
		s.byKey[l.rec.Key] = l
		info, haveDev := ourDevs[name]
		if haveDev && (info.UUID != s.dmUUID(&l.rec) || !info.ActivePresent) {
			s.log.Warn("replacing a device that does not match its layer", "device", name, "uuid", info.UUID)
			s.unmountAll(l.dir, mounted)
			if err := s.closeDevice(ctx, name); err != nil {
				errs = append(errs, err)
				continue
			}
			haveDev = false
		}
		m, haveMount := mounted[l.mountpoint()]
		if haveDev && haveMount && m.Major == info.Major && m.Minor == info.Minor {
			l.dev = info.DevPath()
			continue
		}
		if haveMount {
			s.unmountAll(l.dir, mounted)
		}
		if haveDev {
			if err := s.closeDevice(ctx, name); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if err := s.activate(ctx, l, sigs[lid]); err != nil {
			errs = append(errs, fmt.Errorf("layer %s (root hash %s): %w", lid, l.rec.RootHash, err))
			continue
		}
		s.log.Info("layer re-opened", "layer", lid, "device", l.dev, "signed", l.rec.Signed)
	}
	for name := range ourDevs {
		if !keep[name] {
			s.log.Info("removing a stray device", "device", name)
			if err := s.closeDevice(ctx, name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// unmountAll detaches every mount at or below dir (a layer directory).
func (s *Snapshotter) unmountAll(dir string, mounted map[string]mountinfo.Mount) {
	for p := range mounted {
		if p == dir || strings.HasPrefix(p, dir+"/") {
			if err := linux.Unmount(p, linux.MNT_DETACH); err != nil {
				s.log.Warn("unmount", "path", p, "err", err)
			}
			delete(mounted, p)
		}
	}
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}
