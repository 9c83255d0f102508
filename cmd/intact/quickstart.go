package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"

	"github.com/intact-project/intact/internal/atomicfile"
	"github.com/intact-project/intact/internal/certs"
	"github.com/intact-project/intact/internal/sampleimage"
	"github.com/intact-project/intact/oci"
)

func init() { register(newQuickstartCmd) }

// quickstartStep is one line of the quickstart's report.
type quickstartStep struct {
	Step   string `json:"step"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

type quickstartReport struct {
	Dir      string           `json:"dir"`
	Registry string           `json:"registry"`
	Image    string           `json:"image"`
	Steps    []quickstartStep `json:"steps"`
	Next     []string         `json:"next"`
	Seconds  float64          `json:"seconds"`
}

func newQuickstartCmd(e *env) *cobra.Command {
	var dir string
	var noMount bool
	c := &cobra.Command{
		Use:   "quickstart [--dir D]",
		Short: "Sign an image, verify it and watch tampering fail, offline, in one command",
		Long: `Run intact's main job end to end, offline, in well under a minute:

 1. make a throwaway CA and a layer-signing certificate (and an attacker's CA);
 2. start an OCI registry in process on loopback (olareg, referrers API);
 3. build a small two-platform sample image in process (gzip, zstd and
    uncompressed layers; the base and app layers shared between platforms)
    and push it;
 4. sign it: every layer converted once to tar-index EROFS, its dm-verity root
    hash signed, one referrer per platform manifest in the schema Azure
    Linux's containerd2 consumes;
 5. verify it fully (signatures to the CA, trees, metadata, layers recomputed);
 6. tamper with copies and show both refused: a changed layer byte (with the
    signed referrer re-pointed at the changed image) and a forged signature
    (made by a CA the host does not trust);
 7. as root on a kernel with EROFS: materialize the verified layers (metadata ‖
    tar ‖ zeros), check every block against the signed root hash, mount them
    read-only and list them.

Everything (keys, the registry's storage, materialized layers) stays in --dir
for inspection; without --dir a new temporary directory is used and printed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runQuickstart(e, dir, noMount)
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "directory for the keys, the registry storage and the materialized layers (default: a new temporary directory)")
	c.Flags().BoolVar(&noMount, "no-mount", false, "skip mounting the layers even when running as root")
	return c
}

func runQuickstart(e *env, dir string, noMount bool) error {
	start := time.Now()
	ctx := e.ctx
	if dir == "" {
		d, err := os.MkdirTemp("", "intact-quickstart-")
		if err != nil {
			return fmt.Errorf("temporary directory: %w", err)
		}
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--dir: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err == nil {
		dir = abs
	}
	rep := &quickstartReport{Dir: dir}
	step := func(name string, ok bool, format string, args ...any) {
		s := quickstartStep{Step: name, OK: ok, Detail: fmt.Sprintf(format, args...)}
		rep.Steps = append(rep.Steps, s)
		if !e.json {
			mark := "ok  "
			if !ok {
				mark = "FAIL"
			}
			e.printf("%s %-22s %s\n", mark, name, s.Detail)
		}
	}
	e.infof("intact quickstart: working in %s\n", dir)

	// 1. Keys.
	keysDir := filepath.Join(dir, "keys")
	pki, err := newQuickstartKeys("intact quickstart", keysDir)
	if err != nil {
		return err
	}
	attacker, err := newQuickstartKeys("attacker", filepath.Join(dir, "attacker-keys"))
	if err != nil {
		return err
	}
	files := pki.files
	step("keys", true, "CA %s and layer-signing certificate in %s", files.RootPEM, keysDir)

	// 2. Registry.
	regDir := filepath.Join(dir, "registry")
	if err := os.RemoveAll(regDir); err != nil {
		return err
	}
	srv, err := startRegistryProcess(e, registryOptions{Dir: regDir})
	if err != nil {
		return err
	}
	defer srv.Stop()
	rep.Registry = srv.Addr
	step("registry", true, "olareg on %s (referrers API), storage in %s", srv.Addr, regDir)
	ropts := oci.RemoteOptions{PlainHTTP: true, NoCredentials: true, Timeout: 10 * time.Second}
	open := func(name string) (*oci.Repo, error) { return oci.Open(ctx, srv.Addr+"/quickstart/"+name, ropts) }

	// 3. Sample image.
	img, err := sampleimage.Build(sampleimage.Options{Platforms: []string{"linux/amd64", "linux/arm64"}})
	if err != nil {
		return err
	}
	repo, err := open("sample:v1")
	if err != nil {
		return err
	}
	if err := img.Push(ctx, repo.Target, "v1"); err != nil {
		return fmt.Errorf("push sample image: %w", err)
	}
	rep.Image = repo.Name
	step("sample image", true, "%s: 2 platforms, layers gzip + zstd + uncompressed, %s", repo.Name, short(img.Root.Digest.String()))

	// 4. Sign.
	signer, err := oci.NewSigner(oci.SignOptions{Key: pki.leafKey, Cert: pki.leaf,
		Platforms: oci.PlatformSelector{All: true}, TempDir: dir, Logger: e.log})
	if err != nil {
		return err
	}
	defer signer.Close()
	sres, err := signer.Sign(ctx, repo)
	if err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	converted := 0
	for _, p := range sres.Platforms {
		for _, l := range p.Layers {
			if !l.Cached {
				converted++
			}
		}
	}
	step("sign", true, "%d referrers (one per platform manifest), %d layers converted once each, in %.2fs", len(sres.Platforms), converted, sres.Seconds)

	// 5. Verify.
	vopts := oci.VerifyOptions{Roots: pki.roots(), Platforms: oci.PlatformSelector{All: true}, Full: true, TempDir: dir, Logger: e.log}
	vrep, err := oci.Verify(ctx, repo, vopts)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if err := vrep.Err(); err != nil {
		step("verify", false, "%v", err)
		return fmt.Errorf("quickstart: the signed sample did not verify: %w", err)
	}
	nl := 0
	for _, p := range vrep.Platforms {
		nl += len(p.Layers)
	}
	step("verify", true, "%d layers of %d platform manifests: signatures chain to the CA, trees and metadata match, layers recomputed identically", nl, len(vrep.Platforms))

	// 6a. A changed layer byte, with the signed referrer re-pointed.
	tampered, why, err := tamperLayer(ctx, repo, img, open)
	if err != nil {
		return fmt.Errorf("tamper with a layer: %w", err)
	}
	if err := expectRefused(ctx, tampered, vopts); err != nil {
		step("tampered layer", false, "%v", err)
		return fmt.Errorf("quickstart: a tampered layer was not refused: %w", err)
	} else {
		step("tampered layer", true, "refused: %s", refusal(ctx, tampered, vopts, why))
	}

	// 6b. A forged signature by an untrusted CA.
	forged, err := forgeSignature(ctx, repo, img, attacker, open)
	if err != nil {
		return fmt.Errorf("forge a signature: %w", err)
	}
	if err := expectRefused(ctx, forged, vopts); err != nil {
		step("forged signature", false, "%v", err)
		return fmt.Errorf("quickstart: a forged signature was not refused: %w", err)
	} else {
		step("forged signature", true, "refused: %s", refusal(ctx, forged, vopts, ""))
	}

	// 7. Mount (root and EROFS only).
	switch ok, why := canMountErofs(); {
	case noMount:
		step("mount", true, "skipped (--no-mount)")
	case !ok:
		step("mount", true, "skipped: %s", why)
	default:
		listing, err := mountLayers(ctx, repo, dir)
		if err != nil {
			step("mount", false, "%v", err)
			return fmt.Errorf("quickstart: mount: %w", err)
		}
		step("mount", true, "%s", listing)
	}

	ca := files.RootPEM
	rep.Next = []string{
		fmt.Sprintf("intact registry serve --dir %s --addr 127.0.0.1:5000   # serve this registry again", regDir),
		fmt.Sprintf("intact image verify 127.0.0.1:5000/quickstart/sample:v1 --plain-http --all-platforms --ca %s", ca),
		"intact image inspect 127.0.0.1:5000/quickstart/sample:v1 --plain-http --all-platforms",
		fmt.Sprintf("intact image sign 127.0.0.1:5000/quickstart/sample:v1 --plain-http --all-platforms --key %s --cert %s", files.KeyPEM, files.CertPEM),
		"make test   # every test tier",
	}
	rep.Seconds = time.Since(start).Seconds()
	if e.json {
		return e.printJSON(rep)
	}
	e.printf("\nProven in %.1fs: the sample's %d layers were converted and signed once, one referrer per\n", rep.Seconds, converted)
	e.printf("platform manifest was pushed in the Azure Linux containerd2 schema, and verification\n")
	e.printf("accepts it while refusing a changed layer byte and a signature from an untrusted CA.\n")
	e.printf("Keys, registry storage and layers are in %s.\n\n", dir)
	e.printf("Next (intact is bin/intact after `make build`, which builds intact-registry next to it):\n")
	for _, n := range rep.Next {
		e.printf("  %s\n", n)
	}
	return nil
}

// expectRefused fails unless verification of repo fails.
func expectRefused(ctx context.Context, repo *oci.Repo, opts oci.VerifyOptions) error {
	rep, err := oci.Verify(ctx, repo, opts)
	if err != nil {
		return nil // refused before any layer verdict (e.g. unreadable)
	}
	if rep.OK {
		return errors.New("verification passed")
	}
	return nil
}

// refusal returns the first failure of verifying repo as one line.
func refusal(ctx context.Context, repo *oci.Repo, opts oci.VerifyOptions, prefix string) string {
	rep, err := oci.Verify(ctx, repo, opts)
	if err == nil {
		err = rep.Err()
		for _, p := range rep.Platforms {
			for _, l := range p.Layers {
				if !l.OK {
					err = fmt.Errorf("layer %s: %s", short(l.Digest.String()), l.Error)
					break
				}
			}
		}
	}
	s := oneLine(err.Error())
	if prefix != "" {
		s = prefix + "; " + s
	}
	return s
}

// copyImage copies the sample image into another repository (same digests).
func copyImage(ctx context.Context, src *oci.Repo, img *sampleimage.Image, dst *oci.Repo) error {
	_, err := oras.Copy(ctx, src.Target, img.Root.Digest.String(), dst.Target, dst.Reference, oras.CopyOptions{})
	return err
}

// tamperLayer copies the first platform of the signed image into
// quickstart/tampered-layer, flips one byte of a file in its uncompressed
// layer, rewrites config and manifest for the changed layer (as an attacker
// controlling the registry would), and copies the signed referrer, re-pointed
// at the new manifest and layer digest.
func tamperLayer(ctx context.Context, src *oci.Repo, img *sampleimage.Image, open func(string) (*oci.Repo, error)) (*oci.Repo, string, error) {
	dst, err := open("tampered-layer:v1")
	if err != nil {
		return nil, "", err
	}
	m := img.Manifests[0]
	li := -1
	for i, l := range m.Layers {
		if l.Compression == sampleimage.Uncompressed {
			li = i
		}
	}
	if li < 0 {
		return nil, "", errors.New("sample has no uncompressed layer")
	}
	old := m.Layers[li]
	blob, _ := img.Blob(old.Desc.Digest)
	changed := bytes.Clone(blob)
	i := bytes.Index(changed, []byte("exec /bin/hello"))
	if i < 0 {
		return nil, "", errors.New("sample layer content not found")
	}
	changed[i+5] ^= 0x01 // "/bin/hello" -> ".bin/hello": one byte of one file
	newLayer := content.NewDescriptorFromBytes(old.Desc.MediaType, changed)

	var cfg ocispec.Image
	cfgData, _ := img.Blob(m.Config.Digest)
	if err := json.Unmarshal(cfgData, &cfg); err != nil {
		return nil, "", err
	}
	cfg.RootFS.DiffIDs[li] = digest.FromBytes(changed)
	cfgData, _ = json.Marshal(cfg)
	cfgDesc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageConfig, cfgData)

	var man ocispec.Manifest
	manData, _ := img.Blob(m.Desc.Digest)
	if err := json.Unmarshal(manData, &man); err != nil {
		return nil, "", err
	}
	man.Config = cfgDesc
	man.Layers[li] = newLayer
	manData, _ = json.Marshal(man)
	manDesc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, manData)

	for _, b := range img.Blobs {
		if b.Desc.MediaType != ocispec.MediaTypeImageManifest && b.Desc.MediaType != ocispec.MediaTypeImageIndex {
			if err := dst.PushBlob(ctx, b.Desc, readCloser(b.Data)); err != nil {
				return nil, "", err
			}
		}
	}
	for _, b := range []struct {
		d    ocispec.Descriptor
		data []byte
	}{{newLayer, changed}, {cfgDesc, cfgData}} {
		if err := dst.PushBlob(ctx, b.d, readCloser(b.data)); err != nil {
			return nil, "", err
		}
	}
	if err := dst.Target.Push(ctx, manDesc, bytes.NewReader(manData)); err != nil {
		return nil, "", err
	}
	if err := dst.Target.Tag(ctx, manDesc, "v1"); err != nil {
		return nil, "", err
	}
	// The signed referrer of the original manifest, re-pointed.
	sel, err := src.SelectBundle(ctx, oci.Platform{Desc: m.Desc, Manifest: mustManifest(img, m.Desc)})
	if err != nil {
		return nil, "", err
	}
	refData, err := src.FetchAll(ctx, sel.Selected.Desc, oci.MaxManifestSize)
	if err != nil {
		return nil, "", err
	}
	refData = bytes.ReplaceAll(refData, []byte(m.Desc.Digest.String()), []byte(manDesc.Digest.String()))
	refData = bytes.ReplaceAll(refData, []byte(old.Desc.Digest.String()), []byte(newLayer.Digest.String()))
	var ref ocispec.Manifest
	if err := json.Unmarshal(refData, &ref); err != nil {
		return nil, "", err
	}
	ref.Subject.Size = manDesc.Size
	refData, _ = json.Marshal(ref)
	refDesc := content.NewDescriptorFromBytes(ocispec.MediaTypeImageManifest, refData)
	refDesc.ArtifactType = oci.ArtifactType
	for _, d := range append([]ocispec.Descriptor{ref.Config}, ref.Layers...) {
		if err := copyBlob(ctx, src, dst, d); err != nil {
			return nil, "", err
		}
	}
	if err := dst.Target.Push(ctx, refDesc, bytes.NewReader(refData)); err != nil {
		return nil, "", err
	}
	return dst, fmt.Sprintf("one byte of app%d/run.sh changed in layer %s", li, short(newLayer.Digest.String())), nil
}

// forgeSignature copies the image into quickstart/forged-signature and
// attaches a referrer whose first layer's signature over the genuine root
// hash was made by the attacker's CA.
func forgeSignature(ctx context.Context, src *oci.Repo, img *sampleimage.Image, attacker *quickstartKeys, open func(string) (*oci.Repo, error)) (*oci.Repo, error) {
	dst, err := open("forged-signature:v1")
	if err != nil {
		return nil, err
	}
	if err := copyImage(ctx, src, img, dst); err != nil {
		return nil, err
	}
	m := img.Manifests[0]
	p := oci.Platform{Desc: m.Desc, Manifest: mustManifest(img, m.Desc)}
	sel, err := src.SelectBundle(ctx, p)
	if err != nil {
		return nil, err
	}
	var arts []oci.LayerArtifacts
	for i, l := range p.Manifest.Layers {
		e := sel.Selected.Layers[l.Digest]
		sig := e.Signature
		if i == 0 {
			sig, err = oci.SignRootHash(e.RootHash, attacker.leafKey, attacker.leaf, nil)
			if err != nil {
				return nil, err
			}
		}
		arts = append(arts, oci.LayerArtifacts{Layer: l, RootHash: e.RootHash, Signature: sig, Metadata: e.Metadata, Tree: e.Tree})
		for _, d := range []ocispec.Descriptor{e.Metadata, e.Tree} {
			if err := copyBlob(ctx, src, dst, d); err != nil {
				return nil, err
			}
		}
	}
	desc, data, err := oci.BuildReferrer(m.Desc, arts, sel.Selected.Created.Add(time.Second))
	if err != nil {
		return nil, err
	}
	if err := dst.PushReferrer(ctx, desc, data, arts); err != nil {
		return nil, err
	}
	return dst, nil
}

func mustManifest(img *sampleimage.Image, d ocispec.Descriptor) ocispec.Manifest {
	var m ocispec.Manifest
	data, _ := img.Blob(d.Digest)
	json.Unmarshal(data, &m)
	return m
}

func copyBlob(ctx context.Context, src, dst *oci.Repo, d ocispec.Descriptor) error {
	return dst.PushBlob(ctx, d, func() (io.ReadCloser, error) { return src.Open(ctx, d) })
}

// canMountErofs reports whether this process can loop-mount EROFS.
func canMountErofs() (bool, string) {
	if os.Geteuid() != 0 {
		return false, "not running as root (mounting needs root; run the quickstart as root to see it)"
	}
	data, err := os.ReadFile("/proc/filesystems")
	if err != nil || !strings.Contains(string(data), "erofs") {
		if exec.Command("modprobe", "erofs").Run() == nil {
			data, _ = os.ReadFile("/proc/filesystems")
		}
		if !strings.Contains(string(data), "erofs") {
			return false, "this kernel has no EROFS"
		}
	}
	if _, err := exec.LookPath("mount"); err != nil {
		return false, "mount(8) not found"
	}
	return true, ""
}

// mountLayers materializes and checks each layer of the first platform,
// mounts it read-only with the kernel's EROFS and lists it.
func mountLayers(ctx context.Context, repo *oci.Repo, dir string) (string, error) {
	root, err := repo.Resolve(ctx)
	if err != nil {
		return "", err
	}
	plats, err := repo.Platforms(ctx, root, oci.PlatformSelector{All: true})
	if err != nil {
		return "", err
	}
	p := plats[0]
	sel, err := repo.SelectBundle(ctx, p)
	if err != nil {
		return "", err
	}
	var summary, mounts []string
	defer func() {
		for i := len(mounts) - 1; i >= 0; i-- {
			exec.Command("umount", mounts[i]).Run()
		}
	}()
	for i, l := range p.Manifest.Layers {
		ldir := filepath.Join(dir, "layers", fmt.Sprintf("%d-%s", i, l.Digest.Encoded()[:12]))
		if err := os.MkdirAll(ldir, 0o755); err != nil {
			return "", err
		}
		m, err := repo.Materialize(ctx, l, sel.Selected.Layers[l.Digest], ldir, 0)
		if err != nil {
			return "", err
		}
		mnt := filepath.Join(ldir, "mnt")
		if err := os.MkdirAll(mnt, 0o755); err != nil {
			return "", err
		}
		if out, err := exec.CommandContext(ctx, "mount", "-t", "erofs", "-o", "ro,loop", m.Data, mnt).CombinedOutput(); err != nil {
			return "", fmt.Errorf("mount %s: %v: %s", m.Data, err, strings.TrimSpace(string(out)))
		}
		mounts = append(mounts, mnt)
		names, err := listFiles(mnt, 4)
		if err != nil {
			return "", err
		}
		summary = append(summary, fmt.Sprintf("layer %d: %s", i, names))
	}
	msg := "every block checked against the signed root hash, mounted read-only with the kernel's EROFS: " + strings.Join(summary, "; ")
	if len(mounts) < 2 {
		return msg, nil
	}
	// Stack them as a container runtime does (overlayfs, read-only: the
	// lower layers only), so whiteouts and opaque directories take effect.
	merged := filepath.Join(dir, "layers", "merged")
	if err := os.MkdirAll(merged, 0o755); err != nil {
		return "", err
	}
	lower := make([]string, len(mounts))
	for i, m := range mounts {
		lower[len(mounts)-1-i] = m
	}
	if out, err := exec.CommandContext(ctx, "mount", "-t", "overlay", "overlay", "-o", "ro,lowerdir="+strings.Join(lower, ":"), merged).CombinedOutput(); err != nil {
		return msg + fmt.Sprintf("; overlayfs not available here (%s)", strings.TrimSpace(string(out))), nil
	}
	mounts = append(mounts, merged)
	names, err := listFiles(merged, 0)
	if err != nil {
		return "", err
	}
	return msg + "; stacked with overlayfs (whiteouts applied): " + names, nil
}

// listFiles lists the non-directories under dir (at most max, 0 for all).
func listFiles(dir string, max int) (string, error) {
	var names []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != dir && !d.IsDir() {
			rel, _ := filepath.Rel(dir, path)
			names = append(names, rel)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("list %s: %w", dir, err)
	}
	if max > 0 && len(names) > max {
		names = append(names[:max], "...")
	}
	return strings.Join(names, " "), nil
}

func readCloser(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// quickstartKeys is a throwaway CA and a layer-signing leaf under it, made
// by the same code as production keys (internal/certs) and written as
// root.pem, root.key, cert.pem and key.pem (keys PKCS#8, mode 0600).
type quickstartKeys struct {
	ca      *x509.Certificate
	leaf    *x509.Certificate
	leafKey crypto.Signer
	files   struct{ RootPEM, RootKey, CertPEM, KeyPEM string }
}

func newQuickstartKeys(name, dir string) (*quickstartKeys, error) {
	now := time.Now().Add(-time.Hour).Truncate(time.Second)
	until := now.Add(10 * 365 * 24 * time.Hour)
	caKey, err := certs.GenerateKey(certs.RSA2048)
	if err != nil {
		return nil, fmt.Errorf("make keys: %w", err)
	}
	k := &quickstartKeys{}
	if k.ca, err = certs.Issue(certs.CATemplate(pkix.Name{CommonName: name + " root CA"}, now, until, 0), caKey.Public(), nil, caKey); err != nil {
		return nil, fmt.Errorf("make keys: %w", err)
	}
	if k.leafKey, err = certs.GenerateKey(certs.RSA2048); err != nil {
		return nil, fmt.Errorf("make keys: %w", err)
	}
	if k.leaf, err = certs.Issue(certs.CodeSigningTemplate(pkix.Name{CommonName: name + " layer signer"}, now, until), k.leafKey.Public(), k.ca, caKey); err != nil {
		return nil, fmt.Errorf("make keys: %w", err)
	}
	caPEM, err := certs.MarshalPrivateKeyPEM(caKey)
	if err != nil {
		return nil, err
	}
	leafPEM, err := certs.MarshalPrivateKeyPEM(k.leafKey)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("write keys: %w", err)
	}
	f := &k.files
	f.RootPEM, f.RootKey = filepath.Join(dir, "root.pem"), filepath.Join(dir, "root.key")
	f.CertPEM, f.KeyPEM = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for _, w := range []struct {
		path string
		data []byte
		perm os.FileMode
	}{
		{f.RootPEM, certs.MarshalCertificatePEM(k.ca), 0o644},
		{f.RootKey, caPEM, 0o600},
		{f.CertPEM, certs.MarshalCertificatePEM(k.leaf), 0o644},
		{f.KeyPEM, leafPEM, 0o600},
	} {
		if err := atomicfile.WriteFile(w.path, w.data, w.perm); err != nil {
			return nil, fmt.Errorf("write keys: %w", err)
		}
	}
	return k, nil
}

func (k *quickstartKeys) roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(k.ca)
	return p
}
