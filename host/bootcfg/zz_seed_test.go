package bootcfg

import (
	"encoding/base64"
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestZZSeeds(t *testing.T) {
	w := func(target, name string, b []byte) {
		os.MkdirAll("testdata/fuzz/"+target, 0o755)
		os.WriteFile("testdata/fuzz/"+target+"/"+name, []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)), 0o644)
	}
	w("FuzzReadGPT", "dps-three", gptImage(guidBytes(TypeRootX86), guidBytes(TypeRootVerityX86), guidBytes(TypeRootSigX86)))
	s := &Signature{RootHash: strings.Repeat("ab", 32), Signature: base64.StdEncoding.EncodeToString([]byte("der")), CertificateFingerprint: "ff"}
	b, _ := s.Marshal()
	w("FuzzParseSignature", "padded", b)
}
