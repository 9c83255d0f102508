package snapshotter

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/internal/vmtest/guest"
	"github.com/intact-project/intact/veritydev"
)

// TestCrashRecoveryInVM kills intactd with SIGKILL at random points of
// pulls (the seed is logged), restarts it, and checks after each restart
// that its state is whole: every layer directory has its record, an open
// verity device whose live table carries root_hash_sig_key_desc and the
// record's root hash, and its EROFS mounted from that device; no staging
// directory, device, mount or loop device belongs to anything else. At the
// end the image pulls completely and runs, and removing it leaves nothing.
func TestCrashRecoveryInVM(t *testing.T) {
	requireStack(t)
	keys := guest.RequireTrustedKeys(t)
	s := newStack(t, keys)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))

	base := baseLayer(t)
	layers := []testLayer{base}
	for i := 0; i < 7; i++ {
		data := make([]byte, 512<<10)
		for j := range data {
			data[j] = byte(rng.Uint32() >> 24 & 0x3f) // compressible, not trivially
		}
		layers = append(layers, testLayer{comp: "gzip", files: []testFile{{name: fmt.Sprintf("data/%d.bin", i), mode: 0o644, data: data}}})
	}
	s.pushImage("crash", "1", layers, []string{"/bin/ctrprobe"})
	ref := s.registry + "/crash:1"
	s.sign(ref, keys.SignKey, keys.SignCert)
	pull := func() (string, error) { return s.ctr("image", "pull", "--snapshotter", "intact", "--plain-http", ref) }

	// How long a whole pull takes here, to spread the kills over it.
	start := time.Now()
	if out, err := pull(); err != nil {
		t.Fatal(out)
	}
	whole := time.Since(start)
	t.Logf("a whole pull takes %v", whole.Round(time.Millisecond))
	s.removeImages(t)

	for i := 0; i < 8; i++ {
		// Odd rounds kill as soon as a layer is being built (a staging
		// directory appears); even rounds at a random time of the pull.
		delay := time.Duration(rng.Int64N(int64(whole)))
		done := make(chan error, 1)
		go func() { _, err := pull(); done <- err }()
		if i%2 == 1 {
			start := time.Now()
			for time.Since(start) < 2*whole && !s.building() {
				time.Sleep(time.Millisecond)
			}
			delay = time.Since(start)
		} else {
			time.Sleep(delay)
		}
		s.kill("intactd")
		err := <-done
		stages := 0
		ents, _ := os.ReadDir(filepath.Join(s.intactRoot, layersDir))
		for _, e := range ents {
			if isStage(e.Name()) {
				stages++
			}
		}
		logBefore := len(readAll(t, s.logs["intactd"]))
		s.startIntactd()
		var actions []string
		for _, l := range strings.Split(string(readAll(t, s.logs["intactd"])[logBefore:]), "\n") {
			if i := strings.Index(l, `msg="`); i >= 0 && (strings.Contains(l, "removing") || strings.Contains(l, "re-opened") || strings.Contains(l, "replacing")) {
				actions = append(actions, strings.SplitN(l[i+5:], `"`, 2)[0])
			}
		}
		t.Logf("kill %d after %v: pull %s; %d half-built layers; reconcile: %v", i, delay.Round(time.Millisecond),
			map[bool]string{true: "had finished", false: "failed"}[err == nil], stages, actions)
		s.checkWhole(t)
		s.removeImages(t) // the next pull builds every layer again
	}
	if out, err := pull(); err != nil {
		t.Fatalf("pull after the crashes: %s", out)
	}
	s.checkWhole(t)

	// A reboot loses every device and mount: the restarted intactd opens
	// each layer again (the kernel checks its signature again) and mounts
	// it.
	s.stop("intactd")
	before := len(s.layerRecords())
	for _, m := range s.kernelState().mounts {
		if err := linux.Unmount(m.Point, 0); err != nil {
			t.Fatal(err)
		}
	}
	for name := range s.kernelState().devices {
		if err := veritydev.Close(context.Background(), name); err != nil {
			t.Fatal(err)
		}
	}
	if st := s.kernelState(); !st.empty() {
		t.Fatalf("could not clear the kernel state:\n%s", st)
	}
	s.startIntactd()
	s.checkWhole(t)
	if n := len(s.layerRecords()); n != before {
		t.Errorf("%d layers after the restart, %d before", n, before)
	}
	out, err := s.ctrRun("--rm", ref, "after-crashes", "/bin/ctrprobe", "hello")
	if err != nil || strings.TrimSpace(out) != greeting {
		t.Fatalf("run after the crashes: %v\n%s", err, out)
	}
	s.removeImages(t)
	if st := s.waitEmpty(); !st.empty() {
		t.Errorf("after removing the image, intactd left:\n%s", st)
	}
}

// building reports whether intactd is building a layer (a staging
// directory exists).
func (s *stack) building() bool {
	ents, _ := os.ReadDir(filepath.Join(s.intactRoot, layersDir))
	for _, e := range ents {
		if isStage(e.Name()) {
			return true
		}
	}
	return false
}

// removeImages removes every image of both namespaces and waits for
// containerd's garbage collection.
func (s *stack) removeImages(t *testing.T) {
	t.Helper()
	for _, ns := range []string{"default", "k8s.io"} {
		out, _ := s.run("ctr", "--address", s.ctrdSock, "--namespace", ns, "image", "ls", "-q")
		for _, ref := range strings.Fields(out) {
			if _, err := s.run("ctr", "--address", s.ctrdSock, "--namespace", ns, "image", "rm", "--sync", ref); err != nil {
				t.Error(err)
			}
		}
	}
}

// waitEmpty waits until intactd has no device, mount, loop or layer left.
func (s *stack) waitEmpty() kernelState {
	var st kernelState
	for i := 0; i < 100; i++ {
		if st = s.kernelState(); st.empty() && len(s.layerRecords()) == 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return st
}

// checkWhole checks intactd's layers against the kernel (see
// TestCrashRecoveryInVM).
func (s *stack) checkWhole(t *testing.T) {
	t.Helper()
	recs := s.layerRecords()
	st := s.kernelState()
	ents, _ := os.ReadDir(filepath.Join(s.intactRoot, layersDir))
	for _, e := range ents {
		if isStage(e.Name()) {
			t.Errorf("a staging directory survived the restart: %s", e.Name())
		}
	}
	want := map[string]bool{}
	for _, r := range recs {
		name := dmNamePrefix + instanceTag(s.intactRoot) + "-" + r.ID
		want[name] = true
		if tbl := st.devices[name]; !strings.Contains(tbl, "root_hash_sig_key_desc") || !strings.Contains(tbl, r.RootHash) {
			t.Errorf("layer %s: device %s has table %q", r.ID, name, tbl)
		}
	}
	for name := range st.devices {
		if !want[name] {
			t.Errorf("device %s belongs to no layer", name)
		}
	}
	mounted := map[string]bool{}
	for _, m := range st.mounts {
		id := filepath.Base(filepath.Dir(m.Point))
		name := dmNamePrefix + instanceTag(s.intactRoot) + "-" + id
		if !want[name] || m.FSType != "erofs" || dmNameOf(t, m.Source) != name {
			t.Errorf("mount %s (%s from %s) belongs to no layer", m.Point, m.FSType, m.Source)
		}
		mounted[name] = true
	}
	for name := range want {
		if !mounted[name] {
			t.Errorf("layer device %s is not mounted", name)
		}
	}
	if len(st.loops) != len(recs) {
		t.Errorf("%d loop devices for %d layers:\n%s", len(st.loops), len(recs), st)
	}
}
