package snapshotter

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"

	"github.com/intact-project/intact/dm"
	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/veritydev"
)

func TestMatchRepo(t *testing.T) {
	for _, c := range []struct {
		pattern, repo string
		want          bool
	}{
		{"*", "registry.test/a/b", true},
		{"registry.test/*", "registry.test/a", true},
		{"registry.test/*", "registry.test/a/b", true},
		{"registry.test/*", "registry.testing/a", false},
		{"registry.test/dev/*", "registry.test/dev/app", true},
		{"registry.test/dev/*", "registry.test/devel/app", false},
		{"registry.test/dev/*", "registry.test/dev", false},
		{"registry.test/app", "registry.test/app", true},
		{"registry.test/app", "registry.test/app/sub", false},
		{"127.0.0.1:5000/app", "127.0.0.1:5000/app", true},
	} {
		if got := matchRepo(c.pattern, c.repo); got != c.want {
			t.Errorf("matchRepo(%q, %q) = %v, want %v", c.pattern, c.repo, got, c.want)
		}
	}
	for _, ok := range []string{"*", "host/*", "host:5000/*", "host/path/*", "host/path", "127.0.0.1:5000/app"} {
		if err := CheckPattern(ok); err != nil {
			t.Errorf("CheckPattern(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "host", "/*", "host/", "host/a*", "host/app:tag", "host/app@sha256:00", "*/app", "host/ app"} {
		if err := CheckPattern(bad); err == nil {
			t.Errorf("CheckPattern(%q) accepted it", bad)
		}
	}
}

// TestUnsignedAllowed: with require_signatures only the named repositories
// (tags and digests of them) may be unsigned; an image without a reference
// never; without require_signatures everything may.
func TestUnsignedAllowed(t *testing.T) {
	s := &Snapshotter{opts: Options{RequireSignatures: true, AllowUnsigned: []string{"registry.test/dev/*", "127.0.0.1:5000/app"}}}
	for ref, want := range map[string]bool{
		"registry.test/dev/app:1":               true,
		"registry.test/dev/app@sha256:" + zeros: true,
		"registry.test/prod/app:1":              false,
		"127.0.0.1:5000/app:latest":             true,
		"127.0.0.1:5000/app2:latest":            false,
		"":                                      false,
	} {
		if got := s.unsignedAllowed(ref); got != want {
			t.Errorf("unsignedAllowed(%q) = %v, want %v", ref, got, want)
		}
	}
	s.opts.RequireSignatures = false
	if !s.unsignedAllowed("") || !s.unsignedAllowed("registry.test/prod/app:1") {
		t.Error("without require_signatures, unsigned images must be allowed")
	}
}

const zeros = "0000000000000000000000000000000000000000000000000000000000000000"

// TestSnapshotOfMounts: the differ recognizes only this snapshotter's
// active snapshots (bind of <root>/snapshots/<id>/fs or overlayfs with it
// as upperdir); anything else is "not implemented" for the next differ.
func TestSnapshotOfMounts(t *testing.T) {
	root := t.TempDir()
	s := &Snapshotter{root: root}
	for _, id := range []string{"7", "8"} {
		os.MkdirAll(filepath.Join(root, "snapshots", id, "fs"), 0o755)
	}
	os.MkdirAll(filepath.Join(root, "snapshots", "7", "work"), 0o755) // 8 is a view: no work dir
	up := filepath.Join(root, "snapshots", "7", "fs")
	for _, c := range []struct {
		name   string
		mounts []mount.Mount
		want   string
	}{
		{"bind", []mount.Mount{{Type: "bind", Source: up}}, "7"},
		{"overlay", []mount.Mount{{Type: "overlay", Options: []string{"workdir=x", "upperdir=" + up, "lowerdir=/a:/b"}}}, "7"},
		{"unclean path", []mount.Mount{{Type: "bind", Source: up + "/../fs/"}}, "7"},
		{"view", []mount.Mount{{Type: "bind", Source: filepath.Join(root, "snapshots", "8", "fs")}}, ""},
		{"another root", []mount.Mount{{Type: "bind", Source: "/var/lib/containerd/snapshots/7/fs"}}, ""},
		{"lower only", []mount.Mount{{Type: "overlay", Options: []string{"lowerdir=" + up}}}, ""},
		{"two mounts", []mount.Mount{{Type: "bind", Source: up}, {Type: "bind", Source: up}}, ""},
		{"none", nil, ""},
	} {
		id, ok := s.snapshotOfMounts(c.mounts)
		if id != c.want || ok != (c.want != "") {
			t.Errorf("%s: got %q %v, want %q", c.name, id, ok, c.want)
		}
	}
}

// TestErrorsMapToGRPC: the errors a pull can end with keep their sentence
// and get the gRPC code containerd shows (failed precondition, data loss),
// and a foreign mount is "not implemented" so containerd's diff service
// tries its next differ.
func TestErrorsMapToGRPC(t *testing.T) {
	for _, c := range []struct {
		err  error
		is   func(error) bool
		what string
	}{
		{fmt.Errorf("layer x: %w: no referrer", ErrUnsigned), errdefs.IsFailedPrecondition, "failed precondition"},
		{explainOpen(fmt.Errorf("%w: %w", veritydev.ErrSignatureRejected, &linux.Error{Op: "ioctl DM_TABLE_LOAD", Errno: linux.ENOKEY}), true), errdefs.IsFailedPrecondition, "failed precondition"},
		{fmt.Errorf("layer x: %w: tree", ErrLayerMismatch), errdefs.IsDataLoss, "data loss"},
		{fmt.Errorf("not ours: %w", errdefs.ErrNotImplemented), errdefs.IsNotImplemented, "not implemented"},
	} {
		back := errgrpc.ToNative(errgrpc.ToGRPC(c.err))
		if !c.is(back) {
			t.Errorf("%v: after gRPC it is %v, want %s", c.err, back, c.what)
		}
		if back.Error() == "" || !containsAll(back.Error(), c.err.Error()) {
			t.Errorf("the sentence was lost: %q -> %q", c.err, back)
		}
	}
	// The kernel's answers become sentences that name the cause.
	for errno, want := range map[linux.Errno]error{linux.ENOKEY: ErrUntrusted, linux.EKEYREJECTED: ErrBadSignature} {
		err := explainOpen(fmt.Errorf("%w: %w", veritydev.ErrSignatureRejected, &linux.Error{Op: "ioctl DM_TABLE_LOAD", Errno: errno}), true)
		if !errors.Is(err, want) || !errors.Is(err, errno) {
			t.Errorf("%v: %v", errno, err)
		}
	}
	if err := explainOpen(&linux.Error{Op: "ioctl DM_TABLE_LOAD", Errno: linux.ENOKEY}, false); !errors.Is(err, ErrUnsigned) {
		t.Errorf("unsigned table refused with ENOKEY: %v", err)
	}
	if err := explainOpen(fmt.Errorf("veritydev: %w", dm.ErrBusy), true); errors.Is(err, ErrBadSignature) || errors.Is(err, ErrUntrusted) {
		t.Errorf("a busy device is not a signature problem: %v", err)
	}
}

func containsAll(s, sub string) bool { return strings.Contains(s, sub) }
