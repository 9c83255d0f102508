package snapshotter

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/core/snapshots/testsuite"

	"github.com/intact-project/intact/dm"
	"github.com/intact-project/intact/internal/mountinfo"
	"github.com/intact-project/intact/internal/testutil"
)

// TestSnapshotterSuiteInVM runs containerd's own snapshotter conformance
// suite (21 parallel subtests with real mounts, 128 stacked layers among
// them) against the snapshotter with verity on: every Commit converts the
// snapshot's files to an EROFS image, opens it as a dm-verity device and
// mounts it, and every lower directory the suite mounts is such a verified
// EROFS. The name "erofs" selects the suite's overlayfs behaviour (a
// directory renamed in a lower layer cannot be renamed back through
// overlayfs), which is ours. After each subtest the snapshotter shuts down
// and must leave no device and no mount behind.
func TestSnapshotterSuiteInVM(t *testing.T) {
	testutil.RequireVM(t)
	testsuite.SnapshotterSuite(t, "erofs", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		sn, err := New(ctx, Options{Root: root, RequireSignatures: false})
		if err != nil {
			return nil, nil, err
		}
		return sn, func() error {
			if err := sn.Shutdown(context.Background()); err != nil {
				return err
			}
			return checkNothingLeft(root, sn.tag)
		}, nil
	})
}

// checkNothingLeft fails when a device-mapper device of the snapshotter
// with this tag, or a mount below root, still exists.
func checkNothingLeft(root, tag string) error {
	var left []string
	ctl, err := dm.Open()
	if err != nil {
		return err
	}
	defer ctl.Close()
	devs, err := ctl.List()
	if err != nil {
		return err
	}
	for _, d := range devs {
		if strings.HasPrefix(d.Name, dmNamePrefix+tag+"-") {
			left = append(left, "device "+d.Name)
		}
	}
	ms, err := mountinfo.Self()
	if err != nil {
		return err
	}
	for _, m := range ms {
		if strings.HasPrefix(m.Point, filepath.Clean(root)+"/") {
			left = append(left, "mount "+m.Point)
		}
	}
	if len(left) > 0 {
		return &leftError{left}
	}
	return nil
}

type leftError struct{ left []string }

func (e *leftError) Error() string { return "left behind: " + strings.Join(e.left, ", ") }
