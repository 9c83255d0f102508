package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/intact-project/intact/internal/testutil"
)

var (
	registryOnce sync.Once
	registryBin  string
	registryErr  error
)

// needRegistryCommand makes the intact-registry command available to the
// code under test ('intact registry serve' and the quickstart run it):
// $INTACT_REGISTRY or one on PATH (the VM tier carries it), else built from
// this module on the host, once per test binary.
func needRegistryCommand(t *testing.T) {
	t.Helper()
	if os.Getenv("INTACT_REGISTRY") != "" {
		return
	}
	if p, err := exec.LookPath("intact-registry"); err == nil {
		t.Setenv("INTACT_REGISTRY", p)
		return
	}
	testutil.RequireHost(t, "builds the intact-registry command from source")
	registryOnce.Do(func() {
		dir, err := os.MkdirTemp("", "intact-registry-")
		if err != nil {
			registryErr = err
			return
		}
		registryBin = filepath.Join(dir, "intact-registry")
		out, err := exec.Command("go", "build", "-o", registryBin, "../intact-registry").CombinedOutput()
		if err != nil {
			registryErr = err
			registryBin = strings.TrimSpace(string(out))
		}
	})
	if registryErr != nil {
		t.Fatalf("build intact-registry: %v: %s", registryErr, registryBin)
	}
	t.Setenv("INTACT_REGISTRY", registryBin)
}

// TestRegistryCommandMissing: without the intact-registry command, serve
// and quickstart say what to build, in one line, exit 1.
func TestRegistryCommandMissing(t *testing.T) {
	testutil.RequireHost(t, "userspace only; the VM tier adds no kernel coverage")
	t.Setenv("INTACT_REGISTRY", "")
	t.Setenv("PATH", t.TempDir())
	for _, args := range [][]string{{"registry", "serve"}, {"quickstart", "--dir", t.TempDir(), "--no-mount"}} {
		code, _, stderr := runCLI(t, args...)
		if code != 1 || !strings.Contains(stderr, "intact-registry") || !strings.Contains(stderr, "make build") {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr)
		}
	}
}

// TestRegistryServeErrors: a registry that cannot start (the port is
// taken) is one 'intact: registry: listen on ...' line, exit 1, as when
// the server ran in process.
func TestRegistryServeErrors(t *testing.T) {
	needRegistryCommand(t)
	addr, _ := serveCLI(t)
	code, out, stderr := runCLI(t, "registry", "serve", "--addr", addr)
	if code != 1 || out != "" || !strings.HasPrefix(stderr, "intact: registry: listen on "+addr) || strings.Count(stderr, "\n") != 1 {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}

// TestBinaryLinksNoServerOrTestCode: the shipped binaries (intact, intactd,
// intact-init) do not link the registry server (olareg, whose package init
// spends about 60 ms of CPU on a bcrypt hash in every process), nor
// test-only code (the test PKI, the test guards, the VM test tier).
func TestBinaryLinksNoServerOrTestCode(t *testing.T) {
	testutil.RequireHost(t, "runs go list on the source tree")
	for _, bin := range []string{".", "../intactd", "../intact-init"} {
		t.Run(bin, func(t *testing.T) { linksNoServerOrTestCode(t, bin) })
	}
}

func linksNoServerOrTestCode(t *testing.T, bin string) {
	out, err := exec.Command("go", "list", "-deps", bin).Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch {
		case strings.HasPrefix(dep, "github.com/olareg/"), dep == "golang.org/x/crypto/bcrypt",
			dep == "github.com/intact-project/intact/internal/registry",
			dep == "github.com/intact-project/intact/internal/testpki",
			dep == "github.com/intact-project/intact/internal/testutil",
			strings.HasPrefix(dep, "github.com/intact-project/intact/internal/vmtest"),
			dep == "testing":
			t.Errorf("%s links %s", bin, dep)
		}
	}
}
