package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	orasoci "oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/errcode"
	"oras.land/oras-go/v2/registry/remote/retry"
)

// RemoteOptions says how to reach an image. The zero value uses TLS, the
// Docker credentials configuration (~/.docker/config.json and its helpers,
// as docker, oras and notation do), up to three retries on 5xx, 429 and
// network errors, and a 30-second bound on waiting for the registry.
type RemoteOptions struct {
	// OCILayout, if set, is a local OCI image layout directory; the
	// reference is then a tag or a digest in it.
	OCILayout string
	// ReadOnly opens an OCILayout for reading only: nothing in the
	// directory is created or rewritten (it may be on read-only storage),
	// and pushes fail with ErrReadOnly.
	ReadOnly bool
	// PlainHTTP talks HTTP instead of HTTPS (for loopback registries).
	PlainHTTP bool
	// NoCredentials skips the Docker credentials configuration.
	NoCredentials bool
	// Timeout bounds how long a request waits for the registry: from
	// sending it to the response headers, every retry and backoff
	// included, and then any pause while its body streams (a layer may
	// take longer than Timeout to arrive, but never stalls that long).
	// Zero means 30 seconds.
	Timeout time.Duration
	// MaxRetries is how often a request failing with 5xx, 429 or a network
	// error is retried; zero means 3, negative means never.
	MaxRetries int
	// Transport, if set, is the HTTP transport under retries and auth
	// (tests use it to inject faults).
	Transport http.RoundTripper
}

// Repo is an opened image repository (registry or OCI layout) and the
// reference that was named.
type Repo struct {
	Target    oras.GraphTarget
	Reference string // tag or digest within the repository
	Name      string // what to show the user
	remote    *remote.Repository
}

// Open opens ref: "host[:port]/repo[:tag|@digest]" on a registry, or with
// opts.OCILayout a tag or digest in that layout directory (created when
// missing, unless opts.ReadOnly).
func Open(ctx context.Context, ref string, opts RemoteOptions) (*Repo, error) {
	if opts.OCILayout != "" {
		if ref == "" {
			return nil, fmt.Errorf("%w: empty reference in OCI layout %s", ErrNotFound, opts.OCILayout)
		}
		var t oras.GraphTarget
		if opts.ReadOnly {
			st, err := orasoci.NewFromFS(ctx, os.DirFS(opts.OCILayout))
			if err != nil {
				return nil, fmt.Errorf("open OCI layout %s: %w", opts.OCILayout, err)
			}
			t = readOnlyTarget{st}
		} else {
			st, err := orasoci.NewWithContext(ctx, opts.OCILayout)
			if err != nil {
				return nil, fmt.Errorf("open OCI layout %s: %w", opts.OCILayout, err)
			}
			t = st
		}
		return &Repo{Target: t, Reference: ref, Name: opts.OCILayout + ":" + ref}, nil
	}
	r, err := registry.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("reference %q: %w", ref, err)
	}
	if r.Reference == "" {
		r.Reference = "latest"
	}
	repo, err := remote.NewRepository(r.Registry + "/" + r.Repository)
	if err != nil {
		return nil, fmt.Errorf("reference %q: %w", ref, err)
	}
	repo.PlainHTTP = opts.PlainHTTP
	repo.MaxMetadataBytes = MaxManifestSize
	repo.ReferrerListMaxPages = 8
	client := &auth.Client{
		Client: &http.Client{Transport: retryTransport(opts)},
		Cache:  auth.NewCache(),
	}
	client.SetUserAgent("intact/" + runtime.Version())
	if !opts.NoCredentials {
		store, err := credentials.NewStoreFromDocker(credentials.StoreOptions{})
		if err != nil {
			return nil, fmt.Errorf("registry credentials (Docker config): %w", err)
		}
		client.Credential = credentials.Credential(store)
	}
	repo.Client = client
	name := r.Registry + "/" + r.Repository
	if _, err := digest.Parse(r.Reference); err == nil {
		name += "@" + r.Reference
	} else {
		name += ":" + r.Reference
	}
	return &Repo{Target: repo, Reference: r.Reference, Name: name, remote: repo}, nil
}

func retryTransport(opts RemoteOptions) http.RoundTripper {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	base := opts.Transport
	if base == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
		t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &idleConn{Conn: c, idle: timeout}, nil
		}
		t.ResponseHeaderTimeout = timeout
		t.TLSHandshakeTimeout = timeout
		base = t
	}
	n := opts.MaxRetries
	switch {
	case n == 0:
		n = 3
	case n < 0:
		n = 0
	}
	policy := &retry.GenericPolicy{Retryable: retry.DefaultPredicate, Backoff: retry.DefaultBackoff, MinWait: 200 * time.Millisecond, MaxWait: 3 * time.Second, MaxRetry: n}
	rt := retry.NewTransport(base)
	rt.Policy = func() retry.Policy { return policy }
	return &budgetTransport{next: rt, budget: timeout}
}

// budgetTransport gives every request, retries included, budget to get its
// response headers; a body then streams under the idle timeout only.
type budgetTransport struct {
	next   http.RoundTripper
	budget time.Duration
}

// ErrTimeout: the registry did not answer within RemoteOptions.Timeout.
var ErrTimeout = errors.New("registry did not answer in time")

func (t *budgetTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	timer := time.AfterFunc(t.budget, func() {
		cancel(fmt.Errorf("%w (timeout %s, retries included)", ErrTimeout, t.budget))
	})
	resp, err := t.next.RoundTrip(req.WithContext(ctx))
	if !timer.Stop() && err != nil {
		cancel(nil)
		if cause := context.Cause(ctx); errors.Is(cause, ErrTimeout) {
			return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Redacted(), cause)
		}
		return nil, err
	}
	if err != nil {
		cancel(nil)
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: func() { cancel(nil) }}
	return resp, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel func()
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// idleConn fails a read or write that makes no progress for idle: a stalled
// registry ends in a timeout error instead of a hang.
type idleConn struct {
	net.Conn
	idle time.Duration
}

func (c *idleConn) Read(p []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.idle)); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.idle)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// ErrReadOnly: a push to a repository opened with RemoteOptions.ReadOnly.
var ErrReadOnly = errors.New("repository opened read-only")

// readOnlyTarget is a layout opened for reading: every write fails.
type readOnlyTarget struct{ oras.ReadOnlyGraphTarget }

func (readOnlyTarget) Push(context.Context, ocispec.Descriptor, io.Reader) error {
	return ErrReadOnly
}

func (readOnlyTarget) Tag(context.Context, ocispec.Descriptor, string) error { return ErrReadOnly }

// Close releases a layout's index (saving it) or does nothing for a registry.
func (r *Repo) Close() error {
	if st, ok := r.Target.(*orasoci.Store); ok {
		return st.SaveIndex()
	}
	return nil
}

// Resolve returns the descriptor the reference names.
func (r *Repo) Resolve(ctx context.Context) (ocispec.Descriptor, error) {
	d, err := r.Target.Resolve(ctx, r.Reference)
	if err != nil {
		if errors.Is(err, errdef.ErrNotFound) {
			return ocispec.Descriptor{}, fmt.Errorf("%w: %s: %w", ErrNotFound, r.Name, err)
		}
		return ocispec.Descriptor{}, fmt.Errorf("resolve %s: %w", r.Name, err)
	}
	return d, nil
}

// FetchAll fetches a blob or manifest of at most max bytes and checks its
// size and digest.
func (r *Repo) FetchAll(ctx context.Context, d ocispec.Descriptor, max int64) ([]byte, error) {
	if err := d.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("%w: descriptor digest %q: %w", ErrMalformed, d.Digest, err)
	}
	if d.Size < 0 || d.Size > max {
		return nil, fmt.Errorf("%w: %s is %d bytes, the limit is %d", ErrTooLarge, d.Digest, d.Size, max)
	}
	rc, err := r.Target.Fetch(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", d.Digest, err)
	}
	defer rc.Close()
	data, err := content.ReadAll(rc, d)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", d.Digest, wrapVerify(err))
	}
	return data, nil
}

// Open streams a blob; the returned reader fails at its end when the size
// or digest does not match d.
func (r *Repo) Open(ctx context.Context, d ocispec.Descriptor) (io.ReadCloser, error) {
	if err := d.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("%w: descriptor digest %q: %w", ErrMalformed, d.Digest, err)
	}
	rc, err := r.Target.Fetch(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", d.Digest, err)
	}
	return &verifyingReader{vr: content.NewVerifyReader(rc, d), rc: rc, desc: d}, nil
}

type verifyingReader struct {
	vr   *content.VerifyReader
	rc   io.ReadCloser
	desc ocispec.Descriptor
	err  error
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.vr.Read(p)
	if err == io.EOF {
		if verr := v.vr.Verify(); verr != nil {
			v.err = fmt.Errorf("blob %s: %w", v.desc.Digest, wrapVerify(verr))
			return n, v.err
		}
	} else if err != nil {
		v.err = fmt.Errorf("blob %s: %w", v.desc.Digest, wrapVerify(err))
		return n, v.err
	}
	return n, err
}

func (v *verifyingReader) Close() error { return v.rc.Close() }

func wrapVerify(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: the registry's response ended early: %w", ErrDigestMismatch, err)
	}
	if errors.Is(err, content.ErrMismatchedDigest) || errors.Is(err, content.ErrTrailingData) {
		return fmt.Errorf("%w: %w", ErrDigestMismatch, err)
	}
	return err
}

// PushBlob pushes content unless the target already has it.
func (r *Repo) PushBlob(ctx context.Context, d ocispec.Descriptor, open func() (io.ReadCloser, error)) error {
	if ok, err := r.Target.Exists(ctx, d); err == nil && ok {
		return nil
	}
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := r.Target.Push(ctx, d, rc); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
		return fmt.Errorf("push %s %s: %w", d.MediaType, d.Digest, err)
	}
	return nil
}

// Platform is one platform manifest of an image.
type Platform struct {
	Desc     ocispec.Descriptor // the platform manifest (Platform set when known)
	Manifest ocispec.Manifest
}

// describe names a platform manifest for messages.
func describe(p Platform) string {
	if p.Desc.Platform == nil {
		return "manifest " + p.Desc.Digest.String()
	}
	return PlatformString(p.Desc.Platform) + " manifest " + p.Desc.Digest.String()
}

// PlatformString formats p as os/arch[/variant] ("unknown" when absent).
func PlatformString(p *ocispec.Platform) string {
	if p == nil {
		return "unknown"
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// Docker's media types, which registries still serve for many images.
const (
	mediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
)

func isManifest(mt string) bool {
	return mt == ocispec.MediaTypeImageManifest || mt == mediaTypeDockerManifest
}

func isIndex(mt string) bool { return mt == ocispec.MediaTypeImageIndex || mt == mediaTypeDockerList }

// PlatformSelector chooses platform manifests of an index. The zero value
// chooses the platform intact runs on.
type PlatformSelector struct {
	All       bool     // every platform manifest
	Platforms []string // os/arch[/variant]; empty means runtime.GOOS/GOARCH
}

func (s PlatformSelector) match(p *ocispec.Platform) bool {
	if s.All {
		return true
	}
	want := s.Platforms
	if len(want) == 0 {
		want = []string{runtime.GOOS + "/" + runtime.GOARCH}
	}
	got := PlatformString(p)
	for _, w := range want {
		if w == got || (p != nil && p.Variant != "" && w == p.OS+"/"+p.Architecture) {
			return true
		}
	}
	return false
}

// Platforms resolves the reference to its platform manifests: a manifest is
// itself; an index gives the manifests sel chooses (attestation manifests,
// platform unknown/unknown, are skipped). It fails with ErrPlatform when
// nothing matches.
func (r *Repo) Platforms(ctx context.Context, root ocispec.Descriptor, sel PlatformSelector) ([]Platform, error) {
	switch {
	case isManifest(root.MediaType):
		data, err := r.FetchAll(ctx, root, MaxManifestSize)
		if err != nil {
			return nil, err
		}
		var m ocispec.Manifest
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("%w: manifest %s: %w", ErrMalformed, root.Digest, err)
		}
		return []Platform{{Desc: root, Manifest: m}}, nil
	case isIndex(root.MediaType):
		data, err := r.FetchAll(ctx, root, MaxManifestSize)
		if err != nil {
			return nil, err
		}
		var idx ocispec.Index
		if err := json.Unmarshal(data, &idx); err != nil {
			return nil, fmt.Errorf("%w: index %s: %w", ErrMalformed, root.Digest, err)
		}
		var out []Platform
		var seen []string
		for _, d := range idx.Manifests {
			if !isManifest(d.MediaType) {
				continue
			}
			if d.Platform != nil && d.Platform.OS == "unknown" {
				continue
			}
			seen = append(seen, PlatformString(d.Platform))
			if !sel.match(d.Platform) {
				continue
			}
			ps, err := r.Platforms(ctx, d, sel)
			if err != nil {
				return nil, err
			}
			out = append(out, ps...)
		}
		if len(out) == 0 {
			want := strings.Join(sel.Platforms, ", ")
			if want == "" {
				want = runtime.GOOS + "/" + runtime.GOARCH
			}
			return nil, fmt.Errorf("%w: %s has no manifest for %s (it has: %s; use --platform or --all-platforms)", ErrPlatform, r.Name, want, strings.Join(seen, ", "))
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: %s has media type %q, not an image manifest or index", ErrUnsupported, root.Digest, root.MediaType)
}

// Referrers lists the dm-verity referrers of subject: the referrers API
// filtered by ArtifactType when the registry has it, else the
// "sha256-<hex>" tag schema (oras-go decides), or the layout's own index.
// More than MaxReferrers fails with ErrTooMany; referrer descriptors above
// MaxManifestSize or together above MaxReferrersTotalSize fail with
// ErrTooLarge.
func (r *Repo) Referrers(ctx context.Context, subject ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	var all []ocispec.Descriptor
	collect := func(page []ocispec.Descriptor) error {
		for _, d := range page {
			if d.ArtifactType != "" && d.ArtifactType != ArtifactType {
				continue // a registry that ignored the filter
			}
			all = append(all, d)
			if len(all) > MaxReferrers {
				return fmt.Errorf("%w for %s: more than %d", ErrTooMany, subject.Digest, MaxReferrers)
			}
		}
		return nil
	}
	var err error
	if r.remote != nil {
		err = r.remote.Referrers(ctx, subject, ArtifactType, collect)
		var er *errcode.ErrorResponse
		if errors.As(err, &er) && (er.StatusCode == http.StatusMethodNotAllowed || er.StatusCode == http.StatusNotImplemented) && len(all) == 0 {
			// Some registries answer 405 or 501 instead of 404 when they
			// lack the referrers API: use the tag schema as for a 404.
			if r.remote.SetReferrersCapability(false) == nil {
				err = r.remote.Referrers(ctx, subject, ArtifactType, collect)
			}
		}
	} else {
		var ds []ocispec.Descriptor
		ds, err = registry.Referrers(ctx, r.Target, subject, ArtifactType)
		if err == nil {
			err = collect(ds)
		}
	}
	if err != nil {
		if errors.Is(err, ErrTooMany) {
			return nil, err
		}
		return nil, fmt.Errorf("list referrers of %s: %w", subject.Digest, err)
	}
	if err := checkReferrerBounds(subject.Digest, all); err != nil {
		return nil, err
	}
	return all, nil
}

// checkReferrerBounds applies the consumer's bounds to a subject's referrer
// descriptors: at most MaxReferrers, each at most MaxManifestSize, together
// at most MaxReferrersTotalSize.
func checkReferrerBounds(subject digest.Digest, refs []ocispec.Descriptor) error {
	if len(refs) > MaxReferrers {
		return fmt.Errorf("%w for %s: more than %d", ErrTooMany, subject, MaxReferrers)
	}
	var total int64
	for _, d := range refs {
		if d.Size < 0 || d.Size > MaxManifestSize {
			return fmt.Errorf("%w: referrer %s is %d bytes, the limit is %d", ErrTooLarge, d.Digest, d.Size, MaxManifestSize)
		}
		if d.Size > MaxReferrersTotalSize-total {
			return fmt.Errorf("%w: referrers of %s exceed %d bytes together", ErrTooLarge, subject, MaxReferrersTotalSize)
		}
		total += d.Size
	}
	return nil
}
