// Command build builds the example container host (internal/containerhost):
// a Debian minimal root with containerd, runc, crictl, intactd and the
// example's init, on a signed dm-verity EROFS root that intact-init opens,
// with one IPE policy for the host and its containers. Run it as root from
// the repository:
//
//	go run ./examples/container-host/build -o out
//	intact host run out/disk.img --keys out/keys -- ... (see docs/host.md)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/intact-project/intact/internal/containerhost"
)

func main() {
	out := flag.String("o", "", "output directory (disk.img, uki.efi, manifest.json, keys/)")
	keys := flag.String("keys", "", "key set (intact host keys create); default: a new one in OUT/keys")
	asJSON := flag.Bool("json", false, "print the manifest as JSON")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: go run ./examples/container-host/build -o OUT [--keys DIR] [--json]\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if *out == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	repo, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(1)
	}
	res, err := containerhost.Build(ctx, containerhost.Options{Repo: repo, Out: *out, Keys: *keys,
		Log:      slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Progress: func(step string) { fmt.Fprintf(os.Stderr, "build: %s\n", step) }})
	if err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(1)
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(res.Manifest)
		return
	}
	fmt.Printf("built %s (root hash %s) with the key set %s\nboot it: intact host run %s --keys %s (docs/host.md, \"A container host\")\n",
		res.Disk, res.Manifest.RootHash, res.Keys, res.Disk, res.Keys)
}
