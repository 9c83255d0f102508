package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"text/template"

	"github.com/containerd/platforms"
	"github.com/spf13/cobra"
)

// Plugin names containerd knows intactd's services by (one name per plugin
// type).
const (
	SnapshotterName = "intact"
	DifferName      = "intact-diff"
)

var containerdConfigTemplate = template.Must(template.New("containerd").Parse(`# containerd configuration for intactd, printed by
#   intactd containerd-config --address {{.Address}}
# Merge it into /etc/containerd/config.toml, or save it as a file that the
# config imports (imports = ["/etc/containerd/conf.d/*.toml"]); docs/intactd.md
# explains every line.
version = 3

# intactd serves both plugins on one socket.
[proxy_plugins.{{.Snapshotter}}]
  type = "snapshot"
  address = {{.AddressQ}}
  # Give each layer's Prepare the image reference and manifest digest
  # (containerd.io/snapshot/cri.* labels): intactd finds the signature with them.
  [proxy_plugins.{{.Snapshotter}}.exports]
    enable_remote_snapshot_annotations = "true"

[proxy_plugins.{{.Differ}}]
  type = "diff"
  address = {{.AddressQ}}

# Pulls for the {{.Snapshotter}} snapshotter unpack through {{.Differ}}. A defined
# unpack_config replaces containerd's built-in list, so its entries follow:
# overlayfs with the walking differ, and the optional erofs pair.
[[plugins."io.containerd.transfer.v1.local".unpack_config]]
  platform = {{.PlatformQ}}
  snapshotter = "{{.Snapshotter}}"
  differ = "{{.Differ}}"

[[plugins."io.containerd.transfer.v1.local".unpack_config]]
  platform = {{.PlatformQ}}
  snapshotter = "overlayfs"
  differ = "walking"

[[plugins."io.containerd.transfer.v1.local".unpack_config]]
  platform = {{.ErofsPlatformQ}}
  snapshotter = "erofs"
  differ = "erofs"
  optional = true
{{- if .CRI}}

# Kubernetes (CRI): images are pulled and containers run with {{.Snapshotter}}.
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "{{.Snapshotter}}"
{{- end}}
`))

type containerdConfig struct {
	Snapshotter, Differ, Address string
	AddressQ, PlatformQ          string
	ErofsPlatformQ               string
	CRI                          bool
}

// writeContainerdConfig prints the fragment for an intactd listening on
// address, for platform (os/arch[/variant]).
func writeContainerdConfig(w io.Writer, address, platform string, cri bool) error {
	p, err := platforms.Parse(platform)
	if err != nil {
		return &usageError{fmt.Errorf("--platform %q: %w", platform, err)}
	}
	if !filepath.IsAbs(address) {
		return &usageError{fmt.Errorf("--address %q: want an absolute socket path", address)}
	}
	ep := p
	ep.OSFeatures = []string{"erofs"}
	return containerdConfigTemplate.Execute(w, containerdConfig{
		Snapshotter: SnapshotterName, Differ: DifferName, Address: address,
		AddressQ:       strconv.Quote(address),
		PlatformQ:      strconv.Quote(platforms.Format(p)),
		ErofsPlatformQ: strconv.Quote(platforms.FormatAll(ep)),
		CRI:            cri,
	})
}

func newContainerdConfigCmd(stdout io.Writer) *cobra.Command {
	var (
		address  string
		platform string
		cri      bool
	)
	cmd := &cobra.Command{
		Use:   "containerd-config",
		Short: "Print the containerd configuration that plugs intactd in",
		Long: `containerd-config prints the containerd (v2, config version 3) fragment for an
intactd serving on --address: the proxy snapshotter "intact" (with the export
that passes image references to it), the proxy differ "intact-diff", the
transfer service's unpack_config pairing them (with containerd's default
overlayfs/walking and optional erofs entries kept, since a defined list
replaces the defaults) and, unless --cri=false, the CRI image snapshotter.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return writeContainerdConfig(stdout, address, platform, cri)
		},
	}
	cmd.Flags().StringVar(&address, "address", defaultConfig().Address, "intactd's socket")
	cmd.Flags().StringVar(&platform, "platform", platforms.Format(platforms.DefaultSpec()), "platform the unpack entries are for (os/arch[/variant])")
	cmd.Flags().BoolVar(&cri, "cri", true, "also make intact the CRI plugin's image snapshotter")
	return cmd
}
