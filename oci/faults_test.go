package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/intact-project/intact/internal/registry"
	"github.com/intact-project/intact/internal/sampleimage"
)

// faultProxy is an httptest proxy in front of a real registry that injects
// one kind of fault into the requests a predicate selects.
type faultProxy struct {
	*httptest.Server
	mu    sync.Mutex
	match func(*http.Request) bool
	kind  string // "status", "stall", "truncate", "corrupt"
	code  int
	times int // faults left; negative means unlimited
	hits  atomic.Int32
}

func newFaultProxy(t *testing.T, upstream string) *faultProxy {
	t.Helper()
	u, err := url.Parse("http://" + upstream)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	fp := &faultProxy{}
	fp.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fp.mu.Lock()
		hit := fp.match != nil && fp.match(r) && fp.times != 0
		if hit && fp.times > 0 {
			fp.times--
		}
		kind, code := fp.kind, fp.code
		fp.mu.Unlock()
		if !hit {
			rp.ServeHTTP(w, r)
			return
		}
		fp.hits.Add(1)
		switch kind {
		case "status":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			fmt.Fprintf(w, `{"errors":[{"code":"UNAVAILABLE","message":"injected fault %d"}]}`, code)
		case "stall":
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
		case "truncate", "corrupt":
			rec := httptest.NewRecorder()
			rp.ServeHTTP(rec, r)
			body := rec.Body.Bytes()
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			if kind == "corrupt" {
				body = bytes.Clone(body)
				body[len(body)/2] ^= 0xff
				w.WriteHeader(rec.Code)
				w.Write(body)
				return
			}
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			w.WriteHeader(rec.Code)
			w.Write(body[:len(body)/2])
			w.(http.Flusher).Flush()
			// Abort the connection so the client sees a short body.
			panic(http.ErrAbortHandler)
		}
	}))
	t.Cleanup(fp.Close)
	return fp
}

func (fp *faultProxy) set(kind string, code, times int, match func(*http.Request) bool) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	fp.kind, fp.code, fp.times, fp.match = kind, code, times, match
	fp.hits.Store(0)
}

func (fp *faultProxy) host() string { return strings.TrimPrefix(fp.URL, "http://") }

func isBlobGet(digest string) func(*http.Request) bool {
	return func(r *http.Request) bool {
		return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/"+digest)
	}
}

// referrerCount lists the dm-verity referrers of m directly on the registry.
func referrerCount(t *testing.T, direct *Repo, m ocispec.Descriptor) int {
	t.Helper()
	refs, err := direct.Referrers(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	return len(refs)
}

// TestSignFaults injects registry faults while signing: each gives a clear
// error, and no referrer is left behind.
func TestSignFaults(t *testing.T) {
	s := startRegistry(t, registry.ServerOptions{})
	direct := openRepo(t, s.Addr, "faults:v1", testRemote)
	img := pushSample(t, direct, sampleimage.Options{PayloadSize: 1 << 20})
	m := img.Manifests[0]
	layer := m.Layers[0].Desc.Digest.String()
	fp := newFaultProxy(t, s.Addr)
	cases := []struct {
		name  string
		kind  string
		code  int
		match func(*http.Request) bool
		want  string
		sent  error
	}{
		{"5xx on a layer", "status", 503, isBlobGet(layer), "503", nil},
		{"timeout on a layer", "stall", 0, isBlobGet(layer), "timeout", nil},
		{"truncated layer", "truncate", 0, isBlobGet(layer), "unexpected EOF", nil},
		{"wrong layer bytes", "corrupt", 0, isBlobGet(layer), "digest", ErrDigestMismatch},
		{"5xx on the tree upload", "status", 500, func(r *http.Request) bool {
			return r.Method != http.MethodGet && r.Method != http.MethodHead && strings.Contains(r.URL.Path, "/blobs/uploads")
		}, "500", nil},
		{"5xx on the referrer manifest", "status", 500, func(r *http.Request) bool {
			return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/")
		}, "500", nil},
		{"truncated manifest", "truncate", 0, func(r *http.Request) bool {
			return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/"+m.Desc.Digest.String())
		}, "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fp.set(tc.kind, tc.code, -1, tc.match)
			opts := testRemote
			opts.Timeout = 500 * time.Millisecond
			repo := openRepo(t, fp.host(), "faults@"+m.Desc.Digest.String(), opts)
			start := time.Now()
			_, err := newSigner(t, testPKI, PlatformSelector{All: true}).Sign(context.Background(), repo)
			if err == nil {
				t.Fatal("sign succeeded despite the fault")
			}
			if fp.hits.Load() == 0 {
				t.Fatal("the fault was never injected")
			}
			if tc.want != "" && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if tc.sent != nil && !errors.Is(err, tc.sent) {
				t.Errorf("error %v is not %v", err, tc.sent)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
			if n := referrerCount(t, direct, m.Desc); n != 0 {
				t.Errorf("%d referrers left behind", n)
			}
			t.Logf("error: %v", err)
		})
	}
	t.Run("transient 5xx are retried", func(t *testing.T) {
		fp.set("status", 503, 2, isBlobGet(layer))
		opts := testRemote
		opts.MaxRetries = 3
		repo := openRepo(t, fp.host(), "faults@"+m.Desc.Digest.String(), opts)
		if _, err := newSigner(t, testPKI, PlatformSelector{All: true}).Sign(context.Background(), repo); err != nil {
			t.Fatalf("sign with two transient 503s: %v", err)
		}
		if fp.hits.Load() != 2 {
			t.Fatalf("%d faults injected, want 2", fp.hits.Load())
		}
		if n := referrerCount(t, direct, m.Desc); n != 1 {
			t.Errorf("%d referrers, want 1", n)
		}
	})
}

// TestVerifyFaults injects registry faults while verifying: each makes the
// verdict negative with a clear reason.
func TestVerifyFaults(t *testing.T) {
	s := startRegistry(t, registry.ServerOptions{})
	direct := openRepo(t, s.Addr, "vfaults:v1", testRemote)
	img := pushSample(t, direct, sampleimage.Options{})
	res := sign(t, direct, PlatformSelector{All: true})
	m := img.Manifests[0]
	sel, err := direct.SelectBundle(context.Background(), platformOf(t, direct, m))
	if err != nil {
		t.Fatal(err)
	}
	tree := sel.Selected.Layers[m.Layers[1].Desc.Digest].Tree.Digest.String()
	fp := newFaultProxy(t, s.Addr)
	cases := []struct {
		name  string
		kind  string
		code  int
		match func(*http.Request) bool
		want  string
	}{
		{"5xx on the referrers API", "status", 502, func(r *http.Request) bool { return strings.Contains(r.URL.Path, "/referrers/") }, "502"},
		{"5xx on the referrer manifest", "status", 503, func(r *http.Request) bool {
			return strings.Contains(r.URL.Path, "/manifests/"+res.Platforms[0].Referrer.Digest.String())
		}, "503"},
		{"timeout on the tree", "stall", 0, isBlobGet(tree), "timeout"},
		{"truncated tree", "truncate", 0, isBlobGet(tree), "unexpected EOF"},
		{"wrong tree bytes", "corrupt", 0, isBlobGet(tree), "digest"},
		{"wrong referrer bytes", "corrupt", 0, func(r *http.Request) bool {
			return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/"+res.Platforms[0].Referrer.Digest.String())
		}, "digest"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fp.set(tc.kind, tc.code, -1, tc.match)
			opts := testRemote
			opts.Timeout = 500 * time.Millisecond
			repo := openRepo(t, fp.host(), "vfaults:v1", opts)
			rep, err := Verify(context.Background(), repo, VerifyOptions{Roots: testPKI.Roots(), TempDir: t.TempDir()})
			if err == nil {
				err = rep.Err()
			}
			if err == nil {
				t.Fatal("verification passed despite the fault")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			t.Logf("error: %v", err)
		})
	}
}

// pushReferrer builds a referrer from arts for m and pushes it (blobs the
// original referrer already pushed are in the repository).
func pushReferrer(t *testing.T, repo *Repo, m ocispec.Descriptor, arts []LayerArtifacts, created time.Time) ocispec.Descriptor {
	t.Helper()
	desc, data, err := BuildReferrer(m, arts, created)
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.PushReferrer(context.Background(), desc, data, arts); err != nil {
		t.Fatal(err)
	}
	return desc
}

// pushRawReferrer pushes a hand-edited referrer manifest.
func pushRawReferrer(t *testing.T, repo *Repo, m ocispec.Manifest) ocispec.Descriptor {
	t.Helper()
	data, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, ArtifactType: m.ArtifactType, Digest: digestOf(data), Size: int64(len(data))}
	if err := repo.Target.Push(context.Background(), desc, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	return desc
}

// TestTimeoutIncludesRetries: a registry that accepts connections and never
// answers fails a request after RemoteOptions.Timeout with ErrTimeout, not
// after Timeout per attempt plus the backoff between attempts.
func TestTimeoutIncludesRetries(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { <-done; c.Close() }()
		}
	}()
	repo, err := Open(context.Background(), ln.Addr().String()+"/x/y:v1", RemoteOptions{PlainHTTP: true, NoCredentials: true, Timeout: 400 * time.Millisecond, MaxRetries: 3})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = repo.Resolve(context.Background())
	if !errors.Is(err, ErrTimeout) {
		t.Errorf("Resolve: %v, want ErrTimeout", err)
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("a 400ms timeout with 3 retries took %v", d)
	}
}
