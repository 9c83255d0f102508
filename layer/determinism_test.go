package layer_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/erofs/erofstest"
	"github.com/intact-project/intact/layer"
)

// TestHelperConvert is not a test: TestDeterministicAcrossEnvironments runs
// the test binary with INTACT_LAYER_HELPER=in|out|profile to convert in a
// child process with a different environment.
func TestHelperConvert(t *testing.T) {
	spec := os.Getenv("INTACT_LAYER_HELPER")
	if spec == "" {
		t.Skip("helper process only")
	}
	f := strings.Split(spec, "|")
	in, err := os.Open(f[0])
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(f[1])
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	res, err := layer.Convert(context.Background(), in, out, layer.Options{Profile: layer.Profile(f[2])})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("root", res.RootHashHex())
}

// TestDeterministicAcrossEnvironments converts the same gzip layer in child
// processes that differ in temp dir, time zone, umask and GOMAXPROCS, and
// expects identical output bytes.
func TestDeterministicAcrossEnvironments(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "layer.tar.gz")
	if err := os.WriteFile(in, gz(t, erofstest.Features()), 0o644); err != nil {
		t.Fatal(err)
	}
	envs := [][]string{
		{"TZ=UTC", "GOMAXPROCS=1", "UMASK=022"},
		{"TZ=America/Los_Angeles", "GOMAXPROCS=2", "UMASK=077"},
		{"TZ=Asia/Kolkata", "GOMAXPROCS=7", "UMASK=000"},
	}
	for _, p := range profiles {
		var first []byte
		for i, env := range envs {
			tmp := filepath.Join(dir, fmt.Sprintf("tmp-%s-%d", p, i))
			os.Mkdir(tmp, 0o755)
			out := filepath.Join(dir, fmt.Sprintf("out-%s-%d", p, i))
			umask := strings.TrimPrefix(env[2], "UMASK=")
			cmd := exec.Command("sh", "-c", "umask "+umask+" && exec \"$0\" -test.run='^TestHelperConvert$' -test.count=1", os.Args[0])
			cmd.Env = append(os.Environ(), env[0], env[1], "TMPDIR="+tmp, "INTACT_LAYER_HELPER="+in+"|"+out+"|"+string(p))
			if o, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s %v: %v\n%s", p, env, err, o)
			}
			b, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if first == nil {
				first = b
			} else if !bytes.Equal(first, b) {
				t.Errorf("%s: output under %v differs from the first environment's", p, env)
			}
		}
	}
}
