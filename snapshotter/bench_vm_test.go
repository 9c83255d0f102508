package snapshotter

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/intact-project/intact/dm"
	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/internal/vmtest/guest"
)

var (
	benchPull   = flag.Bool("intactd-bench", false, "run the pull-and-first-exec benchmark (make bench BENCH=intactd)")
	benchRounds = flag.Int("intactd-bench-rounds", 5, "rounds of the pull benchmark (each pulls with every snapshotter)")
)

// TestPullBenchmarkInVM times pull-and-first-exec (`ctr image pull` then
// `ctr run --rm IMAGE x /bin/ctrprobe hello`, caches dropped before) of one
// image from one registry in one boot with three snapshotters: intact
// (signed tar-index layers on signed dm-verity), containerd's overlayfs
// (walking differ) and containerd's erofs snapshotter with its erofs differ
// and dm-verity on (mkfs.erofs --tar=f plus a dm-verity tree, unsigned).
// Rounds are paired: each round runs all three, in an order that rotates
// from round to round, and the ratio of intact to each is taken per round;
// medians and spreads are reported. Also intactd's resident memory when
// idle after start and its peak. It never fails because of the times.
func TestPullBenchmarkInVM(t *testing.T) {
	if !*benchPull {
		t.Skip("a benchmark: make bench BENCH=intactd (go test -args -intactd-bench)")
	}
	requireStack(t)
	testutil.RequireTool(t, "mkfs.erofs")
	keys := guest.RequireTrustedKeys(t)
	s := newStackWith(t, keys, stackOptions{
		// containerd's built-in erofs entry only matches images whose
		// platform says os.features erofs; pair it for plain images here.
		editFragment: func(f string) string { return strings.Replace(f, "linux(+erofs)/amd64", "linux/amd64", 1) },
		containerdExtra: `
[plugins."io.containerd.snapshotter.v1.erofs"]
  dmverity_mode = "on"
[plugins."io.containerd.differ.v1.erofs"]
  enable_dmverity = true
`,
	})
	idle := procStatus(t, s.procs["intactd"].Process.Pid, "VmRSS")
	stopNodes := mapperNodes(t, "containerd-erofs-")
	defer stopNodes()

	// The image: the probe, a layer of many small files, one of large
	// files, a zstd one and an uncompressed one (about 80 MB of tar).
	rng := rand.New(rand.NewPCG(3, 4))
	blob := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32() >> 26) // about half as large once compressed
		}
		return b
	}
	var small, large, mixed []testFile
	small = append(small, testFile{name: "usr", dir: true, mode: 0o755}, testFile{name: "usr/share", dir: true, mode: 0o755})
	for i := 0; i < 2000; i++ {
		if i%100 == 0 {
			small = append(small, testFile{name: fmt.Sprintf("usr/share/d%02d", i/100), dir: true, mode: 0o755})
		}
		small = append(small, testFile{name: fmt.Sprintf("usr/share/d%02d/f%04d", i/100, i), mode: 0o644, data: blob(6 << 10)})
	}
	large = append(large, testFile{name: "opt", dir: true, mode: 0o755})
	for i := 0; i < 4; i++ {
		large = append(large, testFile{name: fmt.Sprintf("opt/big%d", i), mode: 0o755, data: blob(8 << 20)})
	}
	mixed = append(mixed, testFile{name: "lib", dir: true, mode: 0o755})
	for i := 0; i < 300; i++ {
		mixed = append(mixed, testFile{name: fmt.Sprintf("lib/m%03d", i), mode: 0o644, data: blob(40 << 10)})
	}
	raw := []testFile{{name: "var", dir: true, mode: 0o755}, {name: "var/raw", mode: 0o644, data: blob(8 << 20)}}
	s.pushImage("bench", "1", []testLayer{baseLayer(t), {files: small, comp: "gzip"}, {files: large, comp: "gzip"},
		{files: mixed, comp: "zstd"}, {files: raw, comp: "none"}}, []string{"/bin/ctrprobe"})
	ref := s.registry + "/bench:1"
	start := time.Now()
	s.sign(ref, keys.SignKey, keys.SignCert)
	t.Logf("intact image sign (in the guest): %v", time.Since(start).Round(time.Millisecond))

	names := []string{"intact", "overlayfs", "erofs"}
	times := map[string][]float64{}
	for r := 0; r < *benchRounds; r++ {
		for k := range names {
			sn := names[(r+k)%len(names)]
			linux.DropCaches()
			start := time.Now()
			if out, err := s.ctr("image", "pull", "--snapshotter", sn, "--plain-http", ref); err != nil {
				t.Fatalf("%s: %v\n%s", sn, err, out)
			}
			out, err := s.ctr("run", "--no-pivot", "--rm", "--snapshotter", sn, ref, fmt.Sprintf("b%d-%s", r, sn), "/bin/ctrprobe", "hello")
			if err != nil || strings.TrimSpace(out) != greeting {
				t.Fatalf("%s: run: %v\n%s", sn, err, out)
			}
			times[sn] = append(times[sn], time.Since(start).Seconds())
			s.removeImages(t)
		}
	}
	peak := procStatus(t, s.procs["intactd"].Process.Pid, "VmHWM")
	if st := s.waitEmpty(); !st.empty() {
		t.Errorf("intactd left state behind:\n%s", st)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "pull-and-first-exec, %d rounds (seconds: median [min..max])\n", *benchRounds)
	for _, sn := range names {
		fmt.Fprintf(&b, "  %-9s %s\n", sn, spread(times[sn]))
	}
	for _, other := range names[1:] {
		var ratios []float64
		for i := range times["intact"] {
			ratios = append(ratios, times["intact"][i]/times[other][i])
		}
		fmt.Fprintf(&b, "  intact/%-9s %s (per-round ratios)\n", other, spread(ratios))
	}
	fmt.Fprintf(&b, "  intactd RSS: idle %d KiB, peak %d KiB\n", idle, peak)
	t.Log("\n" + b.String())
	// Where the time went: containerd's per-layer unpack times and
	// intactd's build phases (debug logs).
	for _, name := range []string{"containerd", "intactd"} {
		for _, l := range strings.Split(string(readAll(t, s.logs[name])), "\n") {
			if strings.Contains(l, "layer unpacked") || strings.Contains(l, "signed layer built") || strings.Contains(l, "msg=\"image unpacked\"") || strings.Contains(l, "unpack") && strings.Contains(l, "parallel=") {
				t.Log(l)
			}
		}
	}
}

// mapperNodes stands in for udev, which the guest does not run: upstream's
// erofs mount handler waits (one second) for /dev/mapper/<name> of the
// dm-verity devices it creates. Every 5 ms the devices whose names start
// with prefix get their node.
func mapperNodes(t *testing.T, prefix string) (stop func()) {
	done := make(chan struct{})
	os.MkdirAll("/dev/mapper", 0o755)
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			ctl, err := dm.Open()
			if err != nil {
				continue
			}
			devs, _ := ctl.List()
			ctl.Close()
			for _, d := range devs {
				p := "/dev/mapper/" + d.Name
				if strings.HasPrefix(d.Name, prefix) {
					if _, err := os.Stat(p); err != nil {
						linux.Mknod(p, linux.S_IFBLK|0o600, linux.Mkdev(d.Major, d.Minor))
					}
				}
			}
		}
	}()
	return func() { close(done) }
}

func spread(v []float64) string {
	s := slices.Clone(v)
	slices.Sort(s)
	var med float64
	if n := len(s); n%2 == 1 {
		med = s[n/2]
	} else {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return fmt.Sprintf("%.2f [%.2f..%.2f]", med, s[0], s[len(s)-1])
}

// procStatus reads a "Vm..." line of /proc/PID/status, in KiB.
func procStatus(t *testing.T, pid int, key string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return 0
}
