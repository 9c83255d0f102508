package efi

import (
	"fmt"
	"os"
	"testing"

	"github.com/intact-project/intact/internal/testpki"
)

func TestZZSeeds(t *testing.T) {
	p := testpki.MustNew(t, testpki.Options{})
	signed, _ := Sign(minimalPE(5), Signer{Certificate: p.Leaf.Certificate, Key: p.Leaf.Key}, SignOptions{})
	os.MkdirAll("testdata/fuzz/FuzzVerify", 0o755)
	os.WriteFile("testdata/fuzz/FuzzVerify/signed-minimal", []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", signed)), 0o644)
}
