package containerhost

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"

	"github.com/intact-project/intact/host"
)

// The example host's configuration files, written to dir and returned as
// root files.
func writeConfigs(ctx context.Context, dir, bins, keys string) ([]host.File, error) {
	frag, err := exec.CommandContext(ctx, filepath.Join(bins, "intactd"), "containerd-config", "--address", "/run/intact/intactd.sock").Output()
	if err != nil {
		return nil, fmt.Errorf("intactd containerd-config: %w", err)
	}
	db, err := os.ReadFile(filepath.Join(keys, "db.crt"))
	if err != nil {
		return nil, err
	}
	files := map[string]string{
		// containerd's own keys first (top-level keys precede tables),
		// then intactd's fragment as it prints it, then what CRI needs.
		"/etc/containerd/config.toml": `# containerd for the example container host (internal/containerhost).
root = "/var/lib/containerd"
state = "/run/containerd"

` + string(frag) + `
[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.cri.v1.images".registry]
  config_path = "/etc/containerd/certs.d"

# The pod sandbox image, signed like any other.
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "` + RegistryAddr + `/pause:1"
`,
		"/etc/intact/intactd.toml": `# intactd for the example container host (docs/intactd.md).
root = "/var/lib/intact"
address = "/run/intact/intactd.sock"
containerd_address = "/run/containerd/containerd.sock"
containerd_root = "/var/lib/containerd"
hosts_dir = "/etc/containerd/certs.d"
require_signatures = true
# The host's db CA: layers must be signed by a leaf it issued (the kernel,
# which holds it in its platform keyring, checks again).
trust_anchors = ["/etc/intact/db.crt"]
`,
		"/etc/intact/db.crt": string(db),
		// The one registry QEMU's user network forwards: plain HTTP.
		"/etc/containerd/certs.d/" + RegistryAddr + "/hosts.toml": `server = "http://` + RegistryAddr + `"

[host."http://` + RegistryAddr + `"]
  capabilities = ["pull", "resolve", "referrers"]
`,
		"/etc/crictl.yaml": `runtime-endpoint: unix:///run/containerd/containerd.sock
image-endpoint: unix:///run/containerd/containerd.sock
timeout: 120
`,
		"/etc/hosts":       "127.0.0.1 localhost\n127.0.1.1 intact-host\n",
		"/etc/hostname":    "intact-host\n",
		"/etc/resolv.conf": "",
	}
	var out []host.File
	for _, dst := range slices.Sorted(maps.Keys(files)) {
		content := files[dst]
		p := filepath.Join(dir, dst)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return nil, err
		}
		out = append(out, host.File{Src: p, Dst: dst, Mode: "0644"})
	}
	return out, nil
}
