package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	srvconfig "github.com/containerd/containerd/v2/cmd/containerd/server/config"
	"github.com/spf13/pflag"
)

func runIntactd(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return o.String(), e.String(), code
}

// TestContainerdConfigLoads feeds the printed fragment to containerd's own
// configuration loader, through an import as docs/intactd.md suggests:
// both proxy plugins, the export, the unpack pairs (containerd's defaults
// kept) and the CRI snapshotter must come out.
func TestContainerdConfigLoads(t *testing.T) {
	out, errOut, code := runIntactd(t, "containerd-config", "--address", "/run/test/intactd.sock", "--platform", "linux/arm64")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	dir := t.TempDir()
	frag := filepath.Join(dir, "intact.toml")
	os.WriteFile(frag, []byte(out), 0o644)
	main := filepath.Join(dir, "config.toml")
	os.WriteFile(main, []byte("version = 3\nimports = [\""+frag+"\"]\n"), 0o644)
	var cfg srvconfig.Config
	if err := srvconfig.LoadConfig(context.Background(), main, &cfg); err != nil {
		t.Fatalf("containerd cannot load it: %v\n%s", err, out)
	}
	sn, ok := cfg.ProxyPlugins[SnapshotterName]
	if !ok || sn.Type != "snapshot" || sn.Address != "/run/test/intactd.sock" || sn.Exports["enable_remote_snapshot_annotations"] != "true" {
		t.Errorf("proxy snapshotter: %+v", sn)
	}
	df, ok := cfg.ProxyPlugins[DifferName]
	if !ok || df.Type != "diff" || df.Address != "/run/test/intactd.sock" {
		t.Errorf("proxy differ: %+v", df)
	}
	if len(cfg.ProxyPlugins) != 2 {
		t.Errorf("%d proxy plugins, want 2", len(cfg.ProxyPlugins))
	}
	tr, _ := cfg.Plugins["io.containerd.transfer.v1.local"].(map[string]any)
	ucs, _ := tr["unpack_config"].([]any)
	var pairs []string
	for _, u := range ucs {
		m := u.(map[string]any)
		pairs = append(pairs, m["platform"].(string)+" "+m["snapshotter"].(string)+"/"+m["differ"].(string))
	}
	want := []string{"linux/arm64 intact/intact-diff", "linux/arm64 overlayfs/walking", "linux(+erofs)/arm64 erofs/erofs"}
	if strings.Join(pairs, ", ") != strings.Join(want, ", ") {
		t.Errorf("unpack_config: %v, want %v", pairs, want)
	}
	cri, _ := cfg.Plugins["io.containerd.cri.v1.images"].(map[string]any)
	if cri["snapshotter"] != SnapshotterName {
		t.Errorf("CRI images snapshotter: %v", cri["snapshotter"])
	}
	out, _, _ = runIntactd(t, "containerd-config", "--cri=false")
	if strings.Contains(out, "cri.v1") {
		t.Error("--cri=false still configures CRI")
	}
}

// TestConfig: defaults, the file over the defaults, flags over the file,
// and every bad input one line with exit status 2.
func TestConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "intactd.toml")
	os.WriteFile(file, []byte(`root = "/srv/intact"
require_signatures = true
allow_unsigned = ["registry.test/dev/*"]
log_level = "debug"
`), 0o644)
	var flags config
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	flags.flags(fs)
	if err := fs.Parse([]string{"--root", "/var/lib/x", "--hosts-dir", ""}); err != nil {
		t.Fatal(err)
	}
	c, err := load(file, fs, flags)
	if err != nil {
		t.Fatal(err)
	}
	if c.Root != "/var/lib/x" || c.HostsDir != "" || c.LogLevel != "debug" || !c.RequireSignatures ||
		len(c.AllowUnsigned) != 1 || c.Address != defaultConfig().Address {
		t.Errorf("merged config: %+v", c)
	}

	for _, tc := range []struct {
		name, file string
		args       []string
		want       string
	}{
		{"unknown key", `rot = "/x"`, nil, "unknown key"},
		{"syntax", `root = `, nil, "syntax.toml:1:"},
		{"relative root", ``, []string{"--root", "rel"}, "root must be an absolute path"},
		{"level", ``, []string{"--log-level", "loud"}, "log_level"},
		{"pattern", ``, []string{"--allow-unsigned", "host/repo:tag"}, "allow_unsigned pattern"},
		{"unsigned off", ``, []string{"--require-signatures=false", "--allow-unsigned", "*"}, "require_signatures, which is off"},
		{"missing file", "", []string{"--config", filepath.Join(dir, "absent.toml")}, "no such file"},
		{"unknown flag", ``, []string{"--nope"}, "unknown flag"},
	} {
		args := tc.args
		if tc.name != "missing file" {
			f := filepath.Join(dir, tc.name+".toml")
			os.WriteFile(f, []byte(tc.file), 0o644)
			args = append([]string{"--config", f}, args...)
		}
		_, errOut, code := runIntactd(t, args...)
		if code != 2 || !strings.Contains(errOut, tc.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 1 {
			t.Errorf("%s: exit %d, stderr %q; want exit 2 and %q", tc.name, code, errOut, tc.want)
		}
	}
}

// TestRefusesWithoutKernelSupport: on a host without device-mapper (this
// machine kind's kernel has none), intactd refuses to start with one line
// naming what is missing, and creates no socket.
func TestRefusesWithoutKernelSupport(t *testing.T) {
	if _, err := os.Stat("/dev/mapper/control"); err == nil {
		t.Skip("this kernel has device-mapper; the refusal needs a kernel without it")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "intactd.sock")
	_, errOut, code := runIntactd(t, "--root", filepath.Join(dir, "root"), "--address", sock, "--containerd-address", filepath.Join(dir, "c.sock"))
	if code != 1 || !strings.Contains(errOut, "kernel support missing") || !strings.Contains(errOut, "device-mapper") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
	if _, err := os.Stat(sock); err == nil {
		t.Error("a socket was created")
	}
	out, _, code := runIntactd(t, "check", "--json")
	if code != 1 || !strings.Contains(out, `"ok": false`) || !strings.Contains(out, `"dm_verity_signatures": false`) {
		t.Errorf("check --json: exit %d\n%s", code, out)
	}
}
