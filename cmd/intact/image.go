package main

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/intact-project/intact/oci"
	"github.com/intact-project/intact/pkcs7"
)

func init() { register(newImageCmd) }

func newImageCmd(e *env) *cobra.Command {
	g := &cobra.Command{
		Use:   "image",
		Short: "Sign and verify container images with dm-verity layer signatures",
		Long: `Sign and verify OCI images the way Azure Linux's containerd2 consumes them:
every layer converted to a tar-index EROFS image, its dm-verity root hash signed
(PKCS#7), and per platform manifest one OCI referrer of artifactType
application/vnd.containerd.erofs.dmverity.v1 carrying, per layer, the signature,
the EROFS metadata and the hash tree. See docs/formats.md ("Referrer artifact").`,
		Args: cobra.NoArgs,
	}
	g.AddCommand(newImageSignCmd(e), newImageVerifyCmd(e), newImageInspectCmd(e))
	return g
}

// remoteFlags are the flags every image command has for reaching an image.
type remoteFlags struct {
	ociLayout     string
	plainHTTP     bool
	noCredentials bool
	timeout       time.Duration
	platforms     []string
	allPlatforms  bool
	readOnly      bool // the command only reads: an OCI layout is not written
}

func (f *remoteFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&f.ociLayout, "oci-layout", "", "use a local OCI image layout directory; REF is then a tag or digest in it")
	c.Flags().BoolVar(&f.plainHTTP, "plain-http", false, "talk plain HTTP to the registry (loopback registries); default is TLS")
	c.Flags().BoolVar(&f.noCredentials, "no-credentials", false, "do not read registry credentials from the Docker config (~/.docker/config.json)")
	c.Flags().DurationVar(&f.timeout, "timeout", 30*time.Second, "give up on a registry that does not answer a request within this long (retries included) or stalls a transfer this long")
	c.Flags().StringSliceVar(&f.platforms, "platform", nil, "only this platform of a multi-platform image, os/arch[/variant] (repeatable; default: every platform; this host is "+hostPlatform()+")")
	c.Flags().BoolVar(&f.allPlatforms, "all-platforms", false, "every platform of a multi-platform image (the default)")
}

func hostPlatform() string {
	return runtime.GOOS + "/" + runtime.GOARCH
}

// selector chooses the platform manifests of an index: every one, unless
// --platform restricts them (a publisher signs, and verifies, the whole
// image; a host that runs one platform says which).
func (f *remoteFlags) selector() (oci.PlatformSelector, error) {
	if f.allPlatforms && len(f.platforms) > 0 {
		return oci.PlatformSelector{}, usagef("--platform and --all-platforms exclude each other")
	}
	for _, p := range f.platforms {
		parts := strings.Split(p, "/")
		if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
			return oci.PlatformSelector{}, usagef("--platform %q: want os/arch[/variant], for example linux/amd64", p)
		}
	}
	return oci.PlatformSelector{All: len(f.platforms) == 0, Platforms: f.platforms}, nil
}

func (f *remoteFlags) open(e *env, ref string) (*oci.Repo, error) {
	if f.ociLayout != "" && f.plainHTTP {
		return nil, usagef("--plain-http has no meaning with --oci-layout")
	}
	if f.timeout <= 0 {
		return nil, usagef("--timeout must be positive")
	}
	if f.ociLayout != "" {
		if st, err := os.Stat(f.ociLayout); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("--oci-layout %s: not a directory", f.ociLayout)
		}
	}
	return oci.Open(e.ctx, ref, oci.RemoteOptions{
		OCILayout: f.ociLayout, ReadOnly: f.readOnly, PlainHTTP: f.plainHTTP, NoCredentials: f.noCredentials, Timeout: f.timeout,
	})
}

func newImageSignCmd(e *env) *cobra.Command {
	var (
		rf           remoteFlags
		keyPath      string
		certPath     string
		chainPath    string
		notation     bool
		notationFmt  string
		tmpDir       string
		maxLayerSize int64
		jobs         int
	)
	c := &cobra.Command{
		Use:   "sign REF... --key K --cert C [--chain F] [--platform P|--all-platforms]",
		Short: "Convert, sign and attach dm-verity artifacts to every layer of an image",
		Long: `Sign an image for kernel-enforced layer integrity. For each platform manifest
(every platform of a multi-platform image, unless --platform restricts them),
every layer is fetched once and streamed through decompression and
the tar-index EROFS conversion, which yields the EROFS metadata, the dm-verity
hash tree (sha256, 512-byte blocks, 32 zero-byte salt, superblock at offset 0)
and the root hash over metadata ‖ tar ‖ zeros to 4096. The lowercase hex root
hash is signed with detached PKCS#7 (no signed attributes, signer certificate
embedded: what the kernel's dm-verity checks). Metadata, tree and signature
blobs are pushed first, then one referrer manifest per platform manifest in
the Azure Linux containerd2 schema, created strictly later (to the millisecond)
than every referrer the manifest already has, so that a re-sign (a rotated
key) is the one hosts select. Layers shared between platforms or between the
images named on one command line are converted once.

REF is host[:port]/repository[:tag|@digest] on a registry (credentials from the
Docker config, TLS unless --plain-http), or with --oci-layout a tag or digest in
a local OCI image layout.

With --notation the platform manifests are also signed with notation-go (same
key and certificate; --chain must then end with the root CA), so notation
verify tooling accepts them.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keyPath == "" || certPath == "" {
				return usagef("--key and --cert are required")
			}
			if jobs < 1 {
				return usagef("--jobs must be at least 1")
			}
			if notationFmt != "cose" && notationFmt != "jws" {
				return usagef("--notation-format %q: want cose or jws", notationFmt)
			}
			sel, err := rf.selector()
			if err != nil {
				return err
			}
			key, cert, chain, err := loadSigningKey(keyPath, certPath, chainPath)
			if err != nil {
				return err
			}
			prog := newProgress(e)
			s, err := oci.NewSigner(oci.SignOptions{
				Key: key, Cert: cert, Chain: chain, Platforms: sel, TempDir: tmpDir,
				MaxLayerSize: maxLayerSize, Concurrency: jobs, Progress: prog.fn(), Logger: e.log,
			})
			if err != nil {
				return err
			}
			defer s.Close()
			var results []*oci.SignResult
			for _, ref := range args {
				repo, err := rf.open(e, ref)
				if err != nil {
					return err
				}
				res, err := s.Sign(e.ctx, repo)
				prog.done()
				if err == nil && notation {
					var ns []oci.NotationResult
					ns, err = oci.NotationSign(e.ctx, repo, res, oci.NotationOptions{Key: key, Chain: append([]*x509.Certificate{cert}, chain...), Format: notationFmt})
					res.Notation = ns
				}
				repo.Close()
				if err != nil {
					return fmt.Errorf("%s: %w", ref, err)
				}
				results = append(results, res)
				if !e.json {
					printSignResult(e, res)
				}
			}
			if e.json {
				return e.printJSON(results)
			}
			return nil
		},
	}
	rf.add(c)
	c.Flags().StringVar(&keyPath, "key", "", "signing private key, PEM (PKCS#8, PKCS#1 or SEC 1) or DER (required)")
	c.Flags().StringVar(&certPath, "cert", "", "signing certificate, PEM or DER; further certificates in it count as chain (required)")
	c.Flags().StringVar(&chainPath, "chain", "", "intermediate CA certificates to embed in every signature, PEM")
	c.Flags().BoolVar(&notation, "notation", false, "also sign each platform manifest with notation-go")
	c.Flags().StringVar(&notationFmt, "notation-format", "cose", "notation signature envelope: cose or jws")
	c.Flags().StringVar(&tmpDir, "tmp-dir", "", "directory for converted layers until they are pushed (default: the system's)")
	c.Flags().Int64Var(&maxLayerSize, "max-layer-size", 0, "refuse a layer that decompresses to more bytes (default: the layer package's limit)")
	c.Flags().IntVar(&jobs, "jobs", 2, "layers fetched and converted at once")
	return c
}

func loadSigningKey(keyPath, certPath, chainPath string) (crypto.Signer, *x509.Certificate, []*x509.Certificate, error) {
	key, err := pkcs7.LoadPrivateKey(keyPath)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--key %s: %w", keyPath, err)
	}
	certs, err := pkcs7.LoadCertificates(certPath)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--cert %s: %w", certPath, err)
	}
	chain := certs[1:]
	if chainPath != "" {
		more, err := pkcs7.LoadCertificates(chainPath)
		if err != nil && !errors.Is(err, pkcs7.ErrNotCertificate) {
			return nil, nil, nil, fmt.Errorf("--chain %s: %w", chainPath, err)
		}
		chain = append(chain, more...)
	}
	if _, err := pkcs7.NewSigner(certs[0], key, chain...); err != nil {
		return nil, nil, nil, fmt.Errorf("--key %s and --cert %s: %w", keyPath, certPath, err)
	}
	return key, certs[0], chain, nil
}

func printSignResult(e *env, res *oci.SignResult) {
	e.printf("signed %s (%s) in %.2fs\n", res.Image, res.Digest, res.Seconds)
	for _, p := range res.Platforms {
		if p.Platform == "unknown" {
			e.printf("  manifest %s\n", p.Manifest)
		} else {
			e.printf("  %s  manifest %s\n", p.Platform, p.Manifest)
		}
		e.printf("    referrer %s (%d descriptors)\n", p.Referrer.Digest, 3*len(p.Layers))
		for _, l := range p.Layers {
			how := fmt.Sprintf("%.2fs", l.Seconds)
			if l.Cached {
				how = "converted earlier"
			}
			e.printf("    layer %s  root %s  %s tar -> metadata %s + tree %s  (%s)\n",
				short(l.Digest.String()), l.RootHash, size(l.TarSize), size(l.MetadataSize), size(l.TreeSize), how)
		}
	}
	for _, n := range res.Notation {
		e.printf("  notation %s signature %s for %s\n", n.Format, n.Signature, n.Manifest)
	}
}

func newImageVerifyCmd(e *env) *cobra.Command {
	var (
		rf           = remoteFlags{readOnly: true}
		caPath       string
		full         bool
		tmpDir       string
		maxLayerSize int64
	)
	c := &cobra.Command{
		Use:   "verify REF --ca CA.pem [--full]",
		Short: "Verify an image's dm-verity referrer: signatures, trees, metadata",
		Long: `Verify what a host that enforces signed dm-verity layers will check. For every
chosen platform manifest, the dm-verity referrers are discovered (referrers API,
or the sha256-<hex> tag schema when the registry lacks it) and one is selected as
Azure Linux's containerd2 does: newest org.opencontainers.image.created, ties to
the smallest manifest digest, at most 64 referrers of at most 4 MiB each and 16
MiB together, and any malformed candidate fails the image. Then per layer:

  - the signature chains to --ca and covers exactly the lowercase root hash;
  - the EROFS metadata is tar-index and carries this layer's UUID;
  - the tree's superblock has the profile's parameters (sha256, format 1,
    512/512, 32 zero-byte salt), the root hash is its top-level hash and the
    metadata blocks are the first data blocks it covers;
  - with --full the layer is fetched and converted again, and metadata, tree and
    root hash must be identical.

Every platform of a multi-platform image is checked unless --platform restricts
them; platforms without any referrer are listed as unsigned. Exit status 0 only
if every layer of every checked platform verifies; otherwise a report per layer
and exit status 1.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if caPath == "" {
				return usagef("--ca is required")
			}
			sel, err := rf.selector()
			if err != nil {
				return err
			}
			roots, err := pkcs7.LoadCertPool(caPath)
			if err != nil {
				return fmt.Errorf("--ca %s: %w", caPath, err)
			}
			repo, err := rf.open(e, args[0])
			if err != nil {
				return err
			}
			defer repo.Close()
			prog := newProgress(e)
			rep, err := oci.Verify(e.ctx, repo, oci.VerifyOptions{
				Roots: roots, Platforms: sel, Full: full, TempDir: tmpDir, MaxLayerSize: maxLayerSize,
				Progress: prog.fn(), Logger: e.log,
			})
			prog.done()
			if err != nil {
				return err
			}
			if e.json {
				if err := e.printJSON(rep); err != nil {
					return err
				}
			} else {
				printVerifyReport(e, rep)
			}
			if err := rep.Err(); err != nil {
				return fmt.Errorf("image verification failed: %w", err)
			}
			return nil
		},
	}
	rf.add(c)
	c.Flags().StringVar(&caPath, "ca", "", "trusted CA certificate(s), PEM or DER: every signature must chain to one (required)")
	c.Flags().BoolVar(&full, "full", false, "also fetch every layer and recompute metadata, tree and root hash")
	c.Flags().StringVar(&tmpDir, "tmp-dir", "", "directory for fetched trees and recomputed layers (default: the system's)")
	c.Flags().Int64Var(&maxLayerSize, "max-layer-size", 0, "with --full, refuse a layer that decompresses to more bytes (default: the layer package's limit)")
	return c
}

func printVerifyReport(e *env, rep *oci.VerifyReport) {
	mode := "signatures, trees and metadata"
	if rep.Full {
		mode += ", layers recomputed"
	}
	for _, p := range rep.Platforms {
		if p.Error != "" {
			e.printf("FAIL %s  manifest %s: %s\n", p.Platform, p.Manifest, p.Error)
			continue
		}
		plat := ""
		if p.Platform != "unknown" {
			plat = "platform " + p.Platform + ", "
		}
		e.printf("%s  manifest %s\n", okWord(p.OK), p.Manifest)
		e.printf("     %sreferrer %s (created %s, %d candidate(s))\n", plat, p.Referrer, p.Created, p.Candidates)
		for _, l := range p.Layers {
			if l.OK {
				e.printf("  ok   layer %s  root %s  signed by %s\n", short(l.Digest.String()), l.RootHash, l.Signer)
			} else {
				e.printf("  FAIL layer %s: %s\n", short(l.Digest.String()), l.Error)
			}
		}
	}
	if len(rep.Unsigned) > 0 {
		fmt.Fprintf(e.stdout, "unsigned platforms: %s (sign them: intact image sign %s, which signs every platform)\n", strings.Join(rep.Unsigned, ", "), rep.Image)
	}
	if rep.OK {
		e.printf("verified %s (%s): %s, in %.1fs\n", rep.Image, rep.Digest, mode, rep.Seconds)
	}
}

func okWord(ok bool) string {
	if ok {
		return "ok  "
	}
	return "FAIL"
}

func newImageInspectCmd(e *env) *cobra.Command {
	rf := remoteFlags{readOnly: true}
	c := &cobra.Command{
		Use:   "inspect REF",
		Short: "List an image's dm-verity referrers, their layers and signatures",
		Long: `List, per chosen platform manifest, every dm-verity referrer with its creation
time, the layers it covers (root hash, signature, metadata and tree blobs) and the
signer named by each signature's certificate, and mark the referrer a consumer
would select. Nothing is verified cryptographically: use 'intact image verify'.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sel, err := rf.selector()
			if err != nil {
				return err
			}
			repo, err := rf.open(e, args[0])
			if err != nil {
				return err
			}
			defer repo.Close()
			res, err := oci.Inspect(e.ctx, repo, sel)
			if err != nil {
				return err
			}
			if e.json {
				return e.printJSON(res)
			}
			e.printf("%s (%s)\n", res.Image, res.Digest)
			for _, p := range res.Platforms {
				e.printf("  %s  manifest %s, %d layer(s), %d dm-verity referrer(s)\n", p.Platform, p.Manifest, len(p.Layers), len(p.Referrers))
				if p.Error != "" {
					e.printf("    problem: %s\n", p.Error)
				}
				for _, r := range p.Referrers {
					mark := " "
					if r.Selected {
						mark = "*"
					}
					e.printf("   %s referrer %s  created %s  %d bytes\n", mark, r.Digest, r.Created, r.Size)
					if r.Error != "" {
						e.printf("      malformed: %s\n", r.Error)
					}
					for _, l := range r.Layers {
						e.printf("      layer %s  root %s\n", short(l.Digest.String()), l.RootHash)
						e.printf("        signature %s (%d bytes) by %q issued by %q\n", short(l.SignatureDigest.String()), l.SignatureSize, l.Signer, l.Issuer)
						e.printf("        metadata  %s (%s)  tree %s (%s)\n", short(l.MetadataDigest.String()), size(l.MetadataSize), short(l.TreeDigest.String()), size(l.TreeSize))
					}
				}
			}
			return nil
		},
	}
	rf.add(c)
	return c
}

func short(d string) string {
	if i := strings.IndexByte(d, ':'); i >= 0 && len(d) > i+13 {
		return d[:i+13]
	}
	return d
}

func size(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// progress draws one status line per layer on stderr, only on a terminal and
// not with --quiet or --json.
type progress struct {
	mu   sync.Mutex
	w    io.Writer
	on   bool
	last time.Time
	line bool
}

func newProgress(e *env) *progress {
	return &progress{w: e.stderr, on: !e.quiet && !e.json && isTerminal(e.stderr)}
}

func (p *progress) fn() oci.ProgressFunc {
	if !p.on {
		return nil
	}
	return func(ev oci.Progress) {
		p.mu.Lock()
		defer p.mu.Unlock()
		now := time.Now()
		if now.Sub(p.last) < 100*time.Millisecond && ev.Done < ev.Total {
			return
		}
		p.last = now
		pct := 100.0
		if ev.Total > 0 {
			pct = 100 * float64(ev.Done) / float64(ev.Total)
		}
		const width = 30
		n := int(pct / 100 * width)
		bar := strings.Repeat("#", min(n, width)) + strings.Repeat(".", width-min(n, width))
		fmt.Fprintf(p.w, "\r\033[K%-9s %s [%s] %5.1f%% of %s", ev.Stage, short(ev.Layer.String()), bar, pct, size(ev.Total))
		p.line = true
	}
}

func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.line {
		fmt.Fprint(p.w, "\r\033[K")
		p.line = false
	}
}
