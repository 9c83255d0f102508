// Package containerhost owns the example container host
// (examples/container-host): the root file system it is built from (a
// Debian minimal tree, containerd, runc, crictl, intactd, intact and the
// example's init), the configuration of those (containerd with intactd's
// fragment, intactd with the host's db CA as trust anchor, the registry
// that QEMU's user network forwards), and the build of the bootable disk
// through package host. The end-to-end test (make e2e) boots it.
package containerhost

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/intact-project/intact/efi"
	"github.com/intact-project/intact/host"
	"github.com/intact-project/intact/internal/vmassets"
)

// RegistryAddr is where the guest reaches the registry: QEMU's user network
// forwards this one address (guestfwd) to a port on the host's loopback.
const RegistryAddr = host.GuestRegistry

// Options configure Build.
type Options struct {
	// Repo is the intact source tree (binaries are built from it and the
	// spec read from examples/container-host/host.toml).
	Repo string
	// Out receives the image (disk.img, uki.efi, manifest.json, ...).
	Out string
	// Keys is the key set; created with `intact host keys create` when
	// empty (Out/keys).
	Keys string
	// Cache holds the Debian root tar; default $INTACT_CACHE or
	// ~/.cache/intact.
	Cache string
	Log   *slog.Logger
	// Progress is told about each step.
	Progress func(step string)
}

// Result is a built container host.
type Result struct {
	Manifest *host.Manifest
	Disk     string // Out/disk.img
	Keys     string // the key set (PK, KEK, db, signing)
	// Seconds each preparation step took.
	Times map[string]float64
}

// Build prepares the root and builds the image.
func Build(ctx context.Context, o Options) (*Result, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Progress == nil {
		o.Progress = func(string) {}
	}
	res := &Result{Times: map[string]float64{}}
	// The spec resolves relative paths against its own directory.
	for _, p := range []*string{&o.Out, &o.Keys, &o.Repo} {
		if *p != "" {
			abs, err := filepath.Abs(*p)
			if err != nil {
				return nil, err
			}
			*p = abs
		}
	}
	timed := func(step string, fn func() error) error {
		o.Progress(step)
		t := time.Now()
		err := fn()
		res.Times[step] = time.Since(t).Seconds()
		if err != nil {
			return fmt.Errorf("containerhost: %s: %w", step, err)
		}
		return nil
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	work := filepath.Join(o.Out, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, err
	}
	if o.Keys == "" {
		o.Keys = filepath.Join(o.Out, "keys")
	}
	if _, err := os.Stat(filepath.Join(o.Keys, "db.crt")); err != nil {
		if err := timed("keys", func() error {
			ks, err := efi.GenerateKeys(efi.KeyOptions{Name: "intact example container host"})
			if err != nil {
				return err
			}
			return ks.WriteDir(o.Keys)
		}); err != nil {
			return nil, err
		}
	}
	res.Keys = o.Keys

	var rootTar, bins, ctrBins string
	var assets *vmassets.Assets
	if err := timed("debian root", func() (err error) { rootTar, err = DebianRoot(ctx, o.Cache); return err }); err != nil {
		return nil, err
	}
	if err := timed("binaries", func() (err error) { bins, err = buildBinaries(ctx, o.Repo, work); return err }); err != nil {
		return nil, err
	}
	if err := timed("container stack", func() (err error) { ctrBins, err = containerStack(ctx, o.Repo); return err }); err != nil {
		return nil, err
	}
	if err := timed("kernel", func() (err error) { assets, err = vmassets.Fetch(ctx, vmassets.FetchOptions{Log: o.Log}); return err }); err != nil {
		return nil, err
	}
	spec, err := host.LoadSpec(filepath.Join(o.Repo, "examples", "container-host", "host.toml"))
	if err != nil {
		return nil, err
	}
	spec.Keys = o.Keys
	spec.Root.Source = rootTar
	spec.Kernel.Vmlinuz, spec.Kernel.Modules = assets.Vmlinuz(), assets.ModulesDir()
	spec.Boot.Stub = assets.Stub()
	spec.Boot.IntactInit = filepath.Join(bins, "intact-init")
	cfgDir := filepath.Join(work, "etc")
	files, err := writeConfigs(ctx, cfgDir, bins, o.Keys)
	if err != nil {
		return nil, err
	}
	spec.Root.Files = append(spec.Root.Files, files...)
	spec.Root.Files = append(spec.Root.Files,
		host.File{Src: filepath.Join(bins, "init"), Dst: "/usr/sbin/init", Mode: "0755"},
		host.File{Src: filepath.Join(bins, "intactd"), Dst: "/usr/local/bin/intactd", Mode: "0755"},
		host.File{Src: filepath.Join(bins, "intact"), Dst: "/usr/local/bin/intact", Mode: "0755"})
	for _, t := range []string{"containerd", "ctr", "containerd-shim-runc-v2", "runc", "crictl"} {
		spec.Root.Files = append(spec.Root.Files, host.File{Src: filepath.Join(ctrBins, t), Dst: "/usr/local/bin/" + t, Mode: "0755"})
	}
	// A module the breakout matrix copies to writable places and tries to
	// load (the root itself ships no module tree).
	if dummy, err := findModule(assets.ModulesDir(), "dummy"); err == nil {
		spec.Root.Files = append(spec.Root.Files, host.File{Src: dummy, Dst: "/usr/lib/intact-e2e/" + filepath.Base(dummy), Mode: "0644"})
	}
	err = timed("host build", func() error {
		m, err := host.Build(ctx, host.Options{Spec: spec, OutDir: o.Out, Logger: o.Log})
		res.Manifest = m
		return err
	})
	if err != nil {
		return nil, err
	}
	res.Disk = filepath.Join(o.Out, "disk.img")
	return res, nil
}

// buildBinaries builds intactd, intact, intact-registry, intact-init and
// the example's init, static.
func buildBinaries(ctx context.Context, repo, work string) (string, error) {
	bin := filepath.Join(work, "bin")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin+"/",
		"./cmd/intactd", "./cmd/intact", "./cmd/intact-init", "./examples/container-host/init")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w: %s", err, out)
	}
	return bin, nil
}

// containerStack returns the directory of containerd, ctr, the runc shim,
// runc and crictl (scripts/build-containerd, cached).
func containerStack(ctx context.Context, repo string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(repo, "scripts", "build-containerd"))
	cmd.Dir = repo
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("scripts/build-containerd: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

func findModule(dir, name string) (string, error) {
	var found string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), name+".ko") {
			found = p
			return filepath.SkipAll
		}
		return nil
	})
	if found == "" {
		return "", fmt.Errorf("no module %s under %s", name, dir)
	}
	return found, nil
}

// debianIncludes are the packages added to Debian's minbase.
const debianIncludes = "dmsetup,iproute2,kmod,python3-minimal"

// DebianRoot returns a tar of a Debian minimal tree (this machine's suite,
// from the archive in its apt configuration) with iproute2 (the init's
// network), kmod (insmod, for the breakout matrix), util-linux (nsenter),
// python3-minimal (the interpreter row of the matrix) and dmsetup (to show
// the live tables), made with debootstrap
// once and cached.
func DebianRoot(ctx context.Context, cache string) (string, error) {
	if cache == "" {
		cache = os.Getenv("INTACT_CACHE")
	}
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "intact")
	}
	uri, suite, err := aptArchive()
	if err != nil {
		return "", err
	}
	p := filepath.Join(cache, "debian-"+suite+"-minbase+"+debianIncludes+".tar")
	if _, err := os.Stat(p); err == nil {
		return p, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(cache, "debootstrap-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	root := filepath.Join(tmp, "root")
	cmd := exec.CommandContext(ctx, "debootstrap", "--variant=minbase", "--include="+debianIncludes, suite, root, uri)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("debootstrap: %w: %s", err, lastLines(out, 20))
	}
	// No package caches in the image.
	os.RemoveAll(filepath.Join(root, "var", "cache", "apt", "archives"))
	os.MkdirAll(filepath.Join(root, "var", "cache", "apt", "archives", "partial"), 0o755)
	if out, err := exec.CommandContext(ctx, "tar", "--format=pax", "--xattrs", "--numeric-owner", "-C", root, "-cf", p+".tmp", ".").CombinedOutput(); err != nil {
		return "", fmt.Errorf("tar: %w: %s", err, out)
	}
	return p, os.Rename(p+".tmp", p)
}

func lastLines(b []byte, n int) string {
	ls := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

// aptArchive returns the main Debian archive URI and the suite of this
// machine, from its apt configuration (`apt-get indextargets`): no mirror
// is written anywhere.
func aptArchive() (uri, suite string, err error) {
	b, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return "", "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VERSION_CODENAME="); ok {
			suite = strings.Trim(v, `"`)
		}
	}
	out, err := exec.Command("apt-get", "indextargets", "--format", "$(REPO_URI) $(RELEASE)", "Created-By: Packages").Output()
	if err != nil {
		return "", "", fmt.Errorf("apt-get indextargets: %w", err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[1] == suite {
			return f[0], suite, nil
		}
	}
	return "", "", fmt.Errorf("no Debian archive for suite %q in the apt configuration", suite)
}
