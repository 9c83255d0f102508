package host

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/containerd/containerd/v2/pkg/archive"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/intact-project/intact/erofs"
	"github.com/intact-project/intact/layer"
	"github.com/intact-project/intact/oci"
)

// maxLayer bounds one decompressed layer of an OCI root.
const maxLayer = 64 << 30

// ociRef parses an OCI root source: "oci:REF" (a registry reference) or
// "oci-layout:DIR:REF" (a tag or digest in a local OCI image layout).
func ociRef(src string) (ref string, opts oci.RemoteOptions, ok bool) {
	if r, found := strings.CutPrefix(src, "oci:"); found {
		// Loopback registries (tests, local mirrors) speak plain HTTP.
		host, _, _ := strings.Cut(r, "/")
		opts.PlainHTTP = strings.HasPrefix(host, "localhost") || strings.HasPrefix(host, "127.0.0.1") || strings.HasPrefix(host, "[::1]")
		return r, opts, r != ""
	}
	if r, found := strings.CutPrefix(src, "oci-layout:"); found {
		i := strings.LastIndex(r, ":")
		if i <= 0 || i == len(r)-1 {
			return "", opts, false
		}
		opts.OCILayout = r[:i]
		return r[i+1:], opts, true
	}
	return "", opts, false
}

// addOCI adds the file system of an OCI image (the linux/amd64 platform):
// its layers are applied in order to a scratch directory the way container
// runtimes apply them (containerd's archive.Apply: whiteouts remove,
// opaque directories hide the layers below), and the result is added as a
// directory. Applying preserves owners and device nodes only as root.
func addOCI(ctx context.Context, w *erofs.Writer, src, ref string, opts oci.RemoteOptions, tmp string) error {
	repo, err := oci.Open(ctx, ref, opts)
	if err != nil {
		return fmt.Errorf("host: root %s: %w", src, err)
	}
	defer repo.Close()
	root, err := repo.Resolve(ctx)
	if err != nil {
		return fmt.Errorf("host: root %s: %w", src, err)
	}
	plats, err := repo.Platforms(ctx, root, oci.PlatformSelector{Platforms: []string{"linux/amd64"}})
	if err != nil {
		return fmt.Errorf("host: root %s: %w", src, err)
	}
	if len(plats) != 1 {
		return fmt.Errorf("host: root %s: %d linux/amd64 manifests", src, len(plats))
	}
	dir, err := os.MkdirTemp(tmp, ".oci-root-")
	if err != nil {
		return fmt.Errorf("host: %w", err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("host: %w", err)
	}
	for i, l := range plats[0].Manifest.Layers {
		if err := applyLayer(ctx, repo, l, dir); err != nil {
			return fmt.Errorf("host: root %s: layer %d (%s): %w", src, i+1, l.Digest, err)
		}
	}
	return w.AddDir(ctx, dir)
}

func applyLayer(ctx context.Context, repo *oci.Repo, l ocispec.Descriptor, dir string) error {
	rc, err := repo.Open(ctx, l)
	if err != nil {
		return err
	}
	defer rc.Close()
	dr, _, err := layer.Decompress(rc)
	if err != nil {
		return err
	}
	defer dr.Close()
	_, err = archive.Apply(ctx, dir, io.LimitReader(dr, maxLayer))
	return err
}
