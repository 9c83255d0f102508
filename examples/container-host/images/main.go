// Command images pushes the example container host's demo images to a
// registry: app:1 (internal/ctrprobe, the probe and attack program, and a
// data layer), pause:1 (the pod sandbox CRI starts; it shares app's first
// layer) and unsigned:1. Signing is left to `intact image sign`, as a
// publisher would do it (docs/host.md, "A container host"):
//
//	go run ./examples/container-host/images --registry 127.0.0.1:5000
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/intact-project/intact/internal/containerhost"
	"github.com/intact-project/intact/internal/testimage"
)

func main() {
	reg := flag.String("registry", "127.0.0.1:5000", "registry (plain HTTP) to push to")
	flag.Parse()
	if err := run(*reg); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run(reg string) error {
	dir, err := os.MkdirTemp("", "images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	probe := filepath.Join(dir, "ctrprobe")
	cmd := exec.Command("go", "build", "-trimpath", "-o", probe, "./internal/ctrprobe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./internal/ctrprobe (run from the repository): %w: %s", err, out)
	}
	bin, err := os.ReadFile(probe)
	if err != nil {
		return err
	}
	for _, im := range containerhost.DemoImages(bin) {
		md, _, err := testimage.Push(context.Background(), reg, im.Repo, "1", im.Layers, im.Entrypoint)
		if err != nil {
			return err
		}
		fmt.Printf("pushed %s/%s:1 (%s)\n", reg, im.Repo, md.Digest)
	}
	return nil
}
