package snapshotter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/opencontainers/go-digest"
)

// linkFile, in a snapshot's directory, names the layer it holds.
const (
	linkFile   = "layer"
	originFile = "origin.json"
)

// origin is what containerd told Prepare about the layer a snapshot is for.
type origin struct {
	Image    string        `json:"image,omitempty"`    // containerd.io/snapshot/cri.image-ref
	Manifest digest.Digest `json:"manifest,omitempty"` // containerd.io/snapshot/cri.manifest-digest
	Layer    digest.Digest `json:"layer,omitempty"`    // containerd.io/snapshot/cri.layer-digest
	DiffID   digest.Digest `json:"diff_id,omitempty"`  // containerd.io/snapshot/diff-id
}

// Labels containerd sets on extraction snapshots (remote-snapshotter
// annotations; see pkg/snapshotters in containerd).
const (
	labelImageRef       = "containerd.io/snapshot/cri.image-ref"
	labelManifestDigest = "containerd.io/snapshot/cri.manifest-digest"
	labelLayerDigest    = "containerd.io/snapshot/cri.layer-digest"
)

func originFromLabels(l map[string]string) origin {
	return origin{
		Image:    l[labelImageRef],
		Manifest: digestOrEmpty(l[labelManifestDigest]),
		Layer:    digestOrEmpty(l[labelLayerDigest]),
		DiffID:   digestOrEmpty(l[snapshots.LabelSnapshotDiffID]),
	}
}

func (s *Snapshotter) readOrigin(id string) origin {
	var o origin
	if b, err := os.ReadFile(filepath.Join(s.snapDir(id), originFile)); err == nil {
		json.Unmarshal(b, &o)
	}
	return o
}

// layerOf returns the layer a snapshot holds, or nil.
func (s *Snapshotter) layerOf(id string) *layer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if lid, ok := s.snapLayer[id]; ok {
		return s.layers[lid]
	}
	return nil
}

// acquire returns the layer shared under key with a reference taken for
// snapshot id, building it with build when there is none. Concurrent
// callers for one key wait for a single build. The reference is recorded
// on disk (the snapshot's link file) before acquire returns.
func (s *Snapshotter) acquire(ctx context.Context, key, id string, build func(*layer) error) (*layer, error) {
	for {
		s.mu.Lock()
		if _, dup := s.snapLayer[id]; dup {
			s.mu.Unlock()
			return nil, fmt.Errorf("snapshot %s already holds a layer", id)
		}
		l, ok := s.byKey[key]
		if !ok {
			l = &layer{ready: make(chan struct{}), refs: map[string]bool{}}
			s.byKey[key] = l
			s.mu.Unlock()
			err := build(l)
			s.mu.Lock()
			if err != nil {
				delete(s.byKey, key)
				l.err = err
			} else {
				s.layers[l.rec.ID] = l
				s.setLink(l, id)
			}
			close(l.ready)
			s.mu.Unlock()
			if err != nil {
				return nil, err
			}
			return l, s.writeLink(ctx, l, id)
		}
		s.mu.Unlock()
		select {
		case <-l.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		s.mu.Lock()
		if l.err != nil || s.byKey[key] != l {
			// Its build failed or it was released meanwhile: try again.
			s.mu.Unlock()
			if l.err != nil && ctx.Err() == nil && !errors.Is(l.err, context.Canceled) {
				return nil, l.err
			}
			continue
		}
		s.setLink(l, id)
		s.mu.Unlock()
		return l, s.writeLink(ctx, l, id)
	}
}

// setLink records, under s.mu, that snapshot id uses l.
func (s *Snapshotter) setLink(l *layer, id string) {
	l.refs[id] = true
	s.snapLayer[id] = l.rec.ID
}

func (s *Snapshotter) writeLink(ctx context.Context, l *layer, id string) error {
	if err := writeSynced(filepath.Join(s.snapDir(id), linkFile), []byte(l.rec.ID+"\n")); err != nil {
		s.unlink(ctx, id)
		return fmt.Errorf("record layer of snapshot %s: %w", id, err)
	}
	return nil
}

// unlink drops snapshot id's reference to its layer and destroys the
// layer when it was the last.
func (s *Snapshotter) unlink(ctx context.Context, id string) error {
	s.mu.Lock()
	lid, ok := s.snapLayer[id]
	if !ok {
		s.mu.Unlock()
		return nil
	}
	delete(s.snapLayer, id)
	l := s.layers[lid]
	var last bool
	if l != nil {
		delete(l.refs, id)
		if last = len(l.refs) == 0; last {
			delete(s.layers, lid)
			if s.byKey[l.rec.Key] == l {
				delete(s.byKey, l.rec.Key)
			}
		}
	}
	s.mu.Unlock()
	os.Remove(filepath.Join(s.snapDir(id), linkFile))
	if last {
		return s.destroy(ctx, l)
	}
	return nil
}

// readLink returns the layer ID a snapshot directory names, or "".
func (s *Snapshotter) readLink(id string) string {
	b, err := os.ReadFile(filepath.Join(s.snapDir(id), linkFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
