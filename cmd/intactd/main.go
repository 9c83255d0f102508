// Command intactd is the intact host daemon: a containerd proxy snapshotter
// ("intact") and proxy differ ("intact-diff") on one unix socket, so that an
// unmodified containerd v2 runs every container layer from an EROFS image on
// a dm-verity device whose root-hash signature the kernel checked. The work
// is done by package snapshotter; this command reads the configuration
// (intactd.toml, every key also a flag), connects to containerd's content
// store and serves. See docs/intactd.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	contentapi "github.com/containerd/containerd/api/services/content/v1"
	contentproxy "github.com/containerd/containerd/v2/core/content/proxy"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/intact-project/intact/snapshotter"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// usageError marks errors in how intactd was called (exit status 2).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func run(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "intactd: "+strings.Join(strings.Fields(err.Error()), " "))
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(stderr, "Run 'intactd --help' for usage.")
		return 2
	}
	return 1
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	var (
		cfgPath string
		flags   config
	)
	root := &cobra.Command{
		Use:   "intactd",
		Short: "containerd snapshotter and differ that runs every layer from a signed dm-verity device",
		Long: `intactd serves containerd's snapshots API (plugin "intact") and diff API
(plugin "intact-diff") on one unix socket. containerd talks to it through
proxy_plugins; ` + "`intactd containerd-config`" + ` prints the configuration.

For each layer of an image containerd pulls with the intact snapshotter,
intactd finds the image's dm-verity referrer in its registry (containerd's
hosts.toml applies), builds the layer's data device from the referrer's
EROFS metadata and the layer's tar, checks it against the signed root hash,
and opens dm-verity with the root-hash signature, which the kernel checks
against its trusted keyrings. Containers then run on overlayfs over those
read-only, kernel-verified EROFS mounts. Images without a referrer are
refused unless --allow-unsigned names their repository (or
--require-signatures=false).

Configuration: ` + DefaultConfigPath + ` (or --config); every key is also a
flag, and a flag wins over the file.`,
		Args:          cobra.NoArgs,
		SilenceErrors: true,
		SilenceUsage:  true,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := load(cfgPath, cmd.Flags(), flags)
			if err != nil {
				return &usageError{err}
			}
			return serve(cmd.Context(), c, stderr)
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &usageError{err} })
	root.CompletionOptions.DisableDefaultCmd = true
	root.Flags().StringVar(&cfgPath, "config", "", "configuration file (default "+DefaultConfigPath+" if it exists)")
	flags.flags(root.Flags())
	root.AddCommand(newContainerdConfigCmd(stdout), newCheckCmd(stdout), newVersionCmd(stdout))
	return root
}

func serve(ctx context.Context, c config, stderr io.Writer) error {
	level, _ := parseLevel(c.LogLevel)
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	opts, err := c.options(ctx, log)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient("unix://"+c.ContainerdAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("containerd at %s: %w", c.ContainerdAddress, err)
	}
	defer conn.Close()
	opts.Content = contentproxy.NewContentStore(contentapi.NewContentClient(conn))

	sn, err := snapshotter.New(ctx, opts)
	if err != nil {
		return err
	}
	defer sn.Close()
	log.Info("intactd ready", "address", c.Address, "root", c.Root, "require_signatures", c.RequireSignatures,
		"allow_unsigned", c.AllowUnsigned, "trust_anchors", len(c.TrustAnchors), "kernel_require_signatures", sn.Probe.RequireSignatures)
	if err := snapshotter.Serve(ctx, sn, c.Address); err != nil {
		return err
	}
	log.Info("intactd stopped")
	return nil
}

func newCheckCmd(stdout io.Writer) *cobra.Command {
	var (
		asJSON bool
		dir    string
	)
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check that this kernel can run intact layers (EROFS, overlayfs, dm-verity root-hash signatures)",
		Long: `check runs the same probe intactd runs at start: EROFS and overlayfs must be
registered or available as modules, and the dm-verity target must check
root-hash signatures (a one-block device is loaded with a signature that is
not PKCS#7; a kernel that checks signatures refuses it). Exit status 0 when
everything is there, 1 otherwise, with the missing kernel options named.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := snapshotter.ProbeKernel(cmd.Context(), dir)
			if asJSON {
				out := struct {
					snapshotter.Probe
					OK    bool   `json:"ok"`
					Error string `json:"error,omitempty"`
				}{Probe: p, OK: err == nil}
				if err != nil {
					out.Error = err.Error()
				}
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				if jerr := enc.Encode(out); jerr != nil {
					return jerr
				}
				return err
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "erofs: %s\noverlay: %s\ndm-verity root-hash signatures: yes\ndm_verity.require_signatures: %v\n", p.EROFS, p.Overlay, p.RequireSignatures)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	cmd.Flags().StringVar(&dir, "scratch-dir", os.TempDir(), "directory for the probe's one-block scratch file")
	return cmd
}

func newVersionCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the intactd version and the Go toolchain it was built with",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v, gv := "(devel)", ""
			if bi, ok := debug.ReadBuildInfo(); ok {
				gv = bi.GoVersion
				if bi.Main.Version != "" {
					v = bi.Main.Version
				}
			}
			fmt.Fprintf(stdout, "intactd %s (%s)\n", v, gv)
			return nil
		},
	}
}
