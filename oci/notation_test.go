package oci

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/notaryproject/notation-go"
	"github.com/notaryproject/notation-go/dir"
	notationregistry "github.com/notaryproject/notation-go/registry"
	"github.com/notaryproject/notation-go/verifier"
	"github.com/notaryproject/notation-go/verifier/trustpolicy"
	"github.com/notaryproject/notation-go/verifier/truststore"

	"github.com/intact-project/intact/internal/registry"
	"github.com/intact-project/intact/internal/sampleimage"
	"github.com/intact-project/intact/internal/testpki"
)

// TestNotationSign signs with --notation's code path in both envelope
// formats and verifies the result with notation-go's verifier (the code
// `notation verify` runs) under a strict trust policy that trusts the test
// CA; a trust store holding another CA must refuse it.
func TestNotationSign(t *testing.T) {
	ctx := context.Background()
	s := startRegistry(t, registry.ServerOptions{})
	for _, format := range []string{"cose", "jws"} {
		t.Run(format, func(t *testing.T) {
			repo := openRepo(t, s.Addr, "notation/"+format+":v1", testRemote)
			pushSample(t, repo, sampleimage.Options{Platforms: []string{"linux/amd64", "linux/arm64"}})
			res := sign(t, repo, PlatformSelector{All: true})
			chain := []*x509.Certificate{testPKI.Leaf.Certificate, testPKI.Root.Certificate}
			ns, err := NotationSign(ctx, repo, res, NotationOptions{Key: testPKI.Leaf.Key, Chain: chain, Format: format})
			if err != nil {
				t.Fatal(err)
			}
			if len(ns) != 2 || ns[0].Signature == "" {
				t.Fatalf("notation results %+v", ns)
			}
			// The dm-verity referrer is unaffected by the notation one.
			if rep := verify(t, repo, testPKI.Roots(), false); !rep.OK {
				t.Fatal(rep.Err())
			}
			for _, p := range res.Platforms {
				ref := s.Addr + "/notation/" + format + "@" + p.Manifest.String()
				if err := notationVerify(t, repo, ref, testPKI); err != nil {
					t.Fatalf("notation verify %s: %v", ref, err)
				}
				if err := notationVerify(t, repo, ref, newTestPKI(t)); err == nil {
					t.Fatalf("notation verify with a foreign CA passed")
				}
			}
		})
	}
	t.Run("incomplete chain", func(t *testing.T) {
		repo := openRepo(t, s.Addr, "notation/bad:v1", testRemote)
		pushSample(t, repo, sampleimage.Options{})
		res := sign(t, repo, PlatformSelector{All: true})
		_, err := NotationSign(ctx, repo, res, NotationOptions{Key: testPKI.Leaf.Key, Chain: []*x509.Certificate{testPKI.Leaf.Certificate}})
		if err == nil {
			t.Fatal("notation signing without the root CA in the chain passed")
		}
	})
}

func notationVerify(t *testing.T, repo *Repo, ref string, pki *testpki.PKI) error {
	t.Helper()
	root := t.TempDir()
	caDir := filepath.Join(root, "truststore", "x509", "ca", "intact")
	if err := os.MkdirAll(caDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(caDir, "root.pem"), pki.Root.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	doc := &trustpolicy.Document{Version: "1.0", TrustPolicies: []trustpolicy.TrustPolicy{{
		Name: "intact-test", RegistryScopes: []string{"*"},
		SignatureVerification: trustpolicy.SignatureVerification{VerificationLevel: "strict"},
		TrustStores:           []string{"ca:intact"}, TrustedIdentities: []string{"*"},
	}}}
	v, err := verifier.New(doc, truststore.NewX509TrustStore(dir.NewSysFS(root)), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = notation.Verify(context.Background(), v, notationregistry.NewRepository(repo.Target), notation.VerifyOptions{ArtifactReference: ref, MaxSignatureAttempts: 10})
	return err
}
