package registry

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestUnconvertReferrers: an index.json whose referrers olareg converted
// into referrers-API responses gets sha256-<hex> tags for them instead, and
// loses the converted mark; other manifests and files are untouched.
func TestUnconvertReferrers(t *testing.T) {
	root := t.TempDir()
	repo := filepath.Join(root, "org", "app")
	os.MkdirAll(repo, 0o755)
	os.WriteFile(filepath.Join(repo, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	subj := "sha256:" + strings.Repeat("ab", 32)
	idx := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[` +
		`{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:` + strings.Repeat("01", 32) + `","size":10,"annotations":{"org.opencontainers.image.ref.name":"v1"}},` +
		`{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:` + strings.Repeat("02", 32) + `","size":20,"annotations":{"org.olareg.referrer.subject":"` + subj + `"}}],` +
		`"annotations":{"org.olareg.referrer.convert":"true","other":"kept"}}`
	os.WriteFile(filepath.Join(repo, "index.json"), []byte(idx), 0o644)
	// Not a layout: left alone.
	os.WriteFile(filepath.Join(root, "index.json"), []byte(idx), 0o644)
	if err := unconvertReferrers(root, nil); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Manifests []struct {
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
		Annotations map[string]string `json:"annotations"`
	}
	b, _ := os.ReadFile(filepath.Join(repo, "index.json"))
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Manifests) != 2 || got.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "v1" ||
		got.Manifests[1].Annotations["org.opencontainers.image.ref.name"] != "sha256-"+strings.Repeat("ab", 32) ||
		got.Manifests[1].Annotations["org.olareg.referrer.subject"] != "" {
		t.Errorf("manifests %+v", got.Manifests)
	}
	if got.Annotations["org.olareg.referrer.convert"] != "" || got.Annotations["other"] != "kept" {
		t.Errorf("annotations %v", got.Annotations)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "index.json")); string(b) != idx {
		t.Error("an index.json outside a layout was rewritten")
	}
	// A second pass changes nothing.
	before, _ := os.ReadFile(filepath.Join(repo, "index.json"))
	if err := unconvertReferrers(root, nil); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(filepath.Join(repo, "index.json")); string(after) != string(before) {
		t.Error("second pass rewrote the index")
	}
}

// TestStartServer: the server listens on loopback, answers the OCI
// distribution API's base endpoint and stops.
func TestStartServer(t *testing.T) {
	s, err := StartServer(context.Background(), ServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.Addr, "127.0.0.1:") {
		t.Errorf("addr %s", s.Addr)
	}
	resp, err := http.Get("http://" + s.Addr + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v2/: %s", resp.Status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(); err != nil {
		t.Fatal(err)
	}
}
