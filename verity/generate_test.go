package verity

import (
	"bytes"
	"os"
	"os/exec"
	"testing"

	"github.com/intact-project/intact/internal/testutil"
)

// TestGeneratedAssemblyIsCurrent regenerates sha256x16_amd64.s from its
// generator and requires the committed file to be exactly that output, so
// the assembly is never edited by hand away from its source.
func TestGeneratedAssemblyIsCurrent(t *testing.T) {
	testutil.RequireHost(t, "reads the source tree and runs python3")
	py := testutil.RequireTool(t, "python3")
	out, err := exec.Command(py, "gen_sha256x16.py").Output()
	if err != nil {
		t.Fatalf("gen_sha256x16.py: %v", err)
	}
	have, err := os.ReadFile("sha256x16_amd64.s")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, have) {
		t.Fatal("sha256x16_amd64.s differs from the output of gen_sha256x16.py: run go generate ./verity")
	}
}
