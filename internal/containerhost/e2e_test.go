package containerhost

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/intact-project/intact/host"
	"github.com/intact-project/intact/host/agent"
	"github.com/intact-project/intact/internal/testimage"
	"github.com/intact-project/intact/internal/testutil"
)

const greeting = "hello from a verified layer" // internal/ctrprobe.Greeting

// row is one line of bin/e2e-report.json: a step of the run or a row of
// the breakout matrix.
type row struct {
	Name      string  `json:"name"`
	Expected  string  `json:"expected"`
	Observed  string  `json:"observed"`
	Errno     string  `json:"errno,omitempty"`
	Mechanism string  `json:"mechanism,omitempty"`
	Pass      bool    `json:"pass"`
	Seconds   float64 `json:"seconds"`
	Matrix    bool    `json:"matrix,omitempty"` // a breakout-matrix row
}

type report struct {
	t    *testing.T
	path string
	rows []row
}

// add records a row, logs it and fails the test when it did not pass.
func (r *report) add(x row) {
	r.t.Helper()
	r.rows = append(r.rows, x)
	mark := "PASS"
	if !x.Pass {
		mark = "FAIL"
		r.t.Errorf("%s: expected %s, observed %s", x.Name, x.Expected, x.Observed)
	}
	r.t.Logf("e2e %s %-38s expected: %s | observed: %s | errno %s | %s | %.2fs", mark, x.Name, x.Expected, x.Observed, dash(x.Errno), dash(x.Mechanism), x.Seconds)
	r.write()
}

func (r *report) write() {
	if r.path == "" {
		return
	}
	b, _ := json.MarshalIndent(r.rows, "", "  ")
	os.MkdirAll(filepath.Dir(r.path), 0o755)
	os.WriteFile(r.path, append(b, '\n'), 0o644)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// console collects the guest's serial console with the host time of each
// line (the time from QEMU's start to a milestone).
type console struct {
	mu    sync.Mutex
	start time.Time
	lines []consoleLine
	buf   bytes.Buffer
	file  io.Writer
}

type consoleLine struct {
	at   time.Duration
	text string
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.file != nil {
		c.file.Write(p)
	}
	c.buf.Write(p)
	for {
		i := bytes.IndexByte(c.buf.Bytes(), '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(c.buf.Next(i+1)), "\r\n")
		c.lines = append(c.lines, consoleLine{time.Since(c.start), line})
	}
	return len(p), nil
}

// wait returns when a console line containing s appears (its time) or
// fails after timeout.
func (c *console) wait(t *testing.T, s string, timeout time.Duration) (time.Duration, string) {
	t.Helper()
	at, line, ok := c.find(s, timeout)
	if !ok {
		t.Fatalf("console: no %q within %v", s, timeout)
	}
	return at, line
}

// find is wait that reports a missing line instead of failing.
func (c *console) find(s string, timeout time.Duration) (time.Duration, string, bool) {
	deadline := time.Now().Add(timeout)
	for {
		c.mu.Lock()
		for _, l := range c.lines {
			if strings.Contains(l.text, s) {
				c.mu.Unlock()
				return l.at, l.text, true
			}
		}
		c.mu.Unlock()
		if time.Now().After(deadline) {
			return 0, "", false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// guest runs commands on the booted host through its agent.
type guest struct {
	t *testing.T
	c *agent.Client
}

func (g *guest) run(timeout time.Duration, argv ...string) agent.Response {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+30*time.Second)
	defer cancel()
	resp, err := g.c.Do(ctx, agent.Request{Argv: argv, Timeout: timeout.Seconds()})
	if err != nil {
		g.t.Fatalf("agent: %s: %v", strings.Join(argv, " "), err)
	}
	return resp
}

func (g *guest) sh(script string) agent.Response {
	g.t.Helper()
	return g.run(5*time.Minute, "/bin/sh", "-c", script)
}

func (g *guest) write(path string, data []byte, mode uint32) {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	resp, err := g.c.Do(ctx, agent.Request{Files: []agent.File{{Path: path, Data: data, Mode: mode}}})
	if err != nil || resp.Error != "" {
		g.t.Fatalf("agent: write %s: %v %s", path, err, resp.Error)
	}
}

func out(r agent.Response) string { return strings.TrimSpace(r.Stdout + r.Stderr) }

// TestContainerHostE2E is `make e2e`: it builds the example container host,
// boots it from firmware under OVMF Secure Boot with QEMU user networking
// (restrict=on: the guest reaches one forwarded port, a registry on the
// host's loopback), pushes and signs images there, drives the host through
// its agent (pull and run through CRI and ctr, an unsigned image refused)
// and runs the breakout matrix from a privileged container. Every step and
// matrix row goes to bin/e2e-report.json (INTACT_E2E_REPORT).
func TestContainerHostE2E(t *testing.T) {
	if os.Getenv("INTACT_E2E") != "1" {
		t.Skip("end-to-end test: make e2e (INTACT_E2E=1)")
	}
	testutil.RequireRoot(t)
	for _, tool := range []string{"qemu-system-x86_64", "debootstrap", "go"} {
		testutil.RequireTool(t, tool)
	}
	wall := time.Now()
	ctx := context.Background()
	repo, _ := filepath.Abs("../..")
	rep := &report{t: t, path: os.Getenv("INTACT_E2E_REPORT")}
	outDir := os.Getenv("INTACT_E2E_OUT")
	if outDir == "" {
		outDir = t.TempDir()
	}
	bin := t.TempDir()
	for _, b := range []struct{ out, pkg string }{{"intact", "./cmd/intact"}, {"intact-registry", "./cmd/intact-registry"}, {"ctrprobe", "./internal/ctrprobe"}} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(bin, b.out), b.pkg)
		cmd.Dir, cmd.Env = repo, append(os.Environ(), "CGO_ENABLED=0")
		if o, err := cmd.CombinedOutput(); err != nil {
			if b.out == "intact-registry" && strings.Contains(string(o), "directory not found") {
				continue // the registry server still lives in the intact binary
			}
			t.Fatalf("go build %s: %v\n%s", b.pkg, err, o)
		}
	}

	// The host.
	start := time.Now()
	res, err := Build(ctx, Options{Repo: repo, Out: outDir, Progress: func(s string) { t.Logf("build: %s", s) }})
	if err != nil {
		t.Fatal(err)
	}
	rep.add(row{Name: "build the container host", Expected: "a signed UKI and a signed dm-verity root", Pass: true,
		Observed: fmt.Sprintf("root hash %s, UKI %d bytes, disk %s", res.Manifest.RootHash, res.Manifest.UKI.Size, res.Disk), Seconds: time.Since(start).Seconds()})

	// The registry, on the host's loopback; the guest reaches it as
	// RegistryAddr through QEMU's guestfwd.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	regAddr := fmt.Sprintf("127.0.0.1:%d", port)
	reg := exec.Command(filepath.Join(bin, "intact"), "registry", "serve", "--addr", regAddr, "--dir", filepath.Join(outDir, "registry"))
	reg.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	if err := reg.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Process.Kill(); reg.Wait() })
	waitTCP(t, regAddr)

	// The images: the probe (app), the pod sandbox (pause, sharing its
	// layer), an unsigned one.
	probe, err := os.ReadFile(filepath.Join(bin, "ctrprobe"))
	if err != nil {
		t.Fatal(err)
	}
	for _, im := range DemoImages(probe) {
		if _, _, err := testimage.Push(ctx, regAddr, im.Repo, "1", im.Layers, im.Entrypoint); err != nil {
			t.Fatal(err)
		}
		if im.Signed {
			sign := exec.Command(filepath.Join(bin, "intact"), "image", "sign", "--plain-http", "--no-credentials",
				"--key", filepath.Join(res.Keys, "signing.key"), "--cert", filepath.Join(res.Keys, "signing.crt"), regAddr+"/"+im.Repo+":1")
			if o, err := sign.CombinedOutput(); err != nil {
				t.Fatalf("intact image sign %s: %v\n%s", im.Repo, err, o)
			}
		}
	}

	// Boot from firmware: OVMF Secure Boot with the key set enrolled; the
	// console on ttyS0, the agent on ttyS1.
	cons := &console{start: time.Now()}
	if f, err := os.Create(filepath.Join(outDir, "console.log")); err == nil {
		cons.file = f
		defer f.Close()
	}
	sock := filepath.Join(outDir, "agent.sock")
	os.Remove(sock)
	vmctx, stopVM := context.WithCancel(ctx)
	vmDone := make(chan error, 1)
	go func() {
		vmDone <- host.Run(vmctx, host.RunOptions{Disk: res.Disk, Keys: res.Keys, Snapshot: true, MemoryMB: 3072, Console: cons,
			Agent: sock, Registry: regAddr, Forward: []string{filepath.Join(bin, "intact"), "host", "forward"}})
	}()
	t.Cleanup(func() {
		stopVM()
		<-vmDone
		if t.Failed() {
			cons.mu.Lock()
			n := len(cons.lines)
			from := max(0, n-80)
			var tail []string
			for _, l := range cons.lines[from:] {
				tail = append(tail, l.text)
			}
			cons.mu.Unlock()
			t.Logf("console tail:\n%s", strings.Join(tail, "\n"))
		}
	})
	dctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	c, err := agent.Dial(dctx, sock)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	g := &guest{t: t, c: c}

	// The chain, in boot order, from the console.
	sbAt, sbLine := cons.wait(t, "Secure boot enabled", 3*time.Minute)
	rep.add(row{Name: "firmware verified the UKI (Secure Boot on)", Expected: "the kernel runs with Secure Boot enabled", Observed: sbLine, Pass: true, Mechanism: "UEFI Secure Boot (db)", Seconds: sbAt.Seconds()})
	initAt, _ := cons.wait(t, "intact-init: starting", time.Minute)
	_, verityLine := cons.wait(t, "intact-init: open dm-verity root: ok", time.Minute)
	_, policyLine := cons.wait(t, "active and enforcing", time.Minute)
	_, capLine, capDropped := cons.find("capabilities removed from the bounding set", 0)
	intactdAt, intactdLine := cons.wait(t, "intact-host: intactd up", 2*time.Minute)
	readyAt, _ := cons.wait(t, "intact-host: containerd up", 2*time.Minute)
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	if err := c.Wait(wctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	tbl := g.sh("dmsetup table; grep ' / ' /proc/mounts")
	rep.add(row{Name: "verity root opened with a signature", Expected: "root EROFS on a dm-verity device whose table carries root_hash_sig_key_desc",
		Observed: verityLine + " | " + oneLine(out(tbl)), Mechanism: "dm-verity + root-hash signature (kernel keyrings)",
		Pass: strings.Contains(tbl.Stdout, "root_hash_sig_key_desc") && strings.Contains(tbl.Stdout, "erofs"), Seconds: initAt.Seconds()})
	ipeState := g.sh("cat /sys/kernel/security/ipe/enforce; for p in /sys/kernel/security/ipe/policies/*; do echo \"$(basename $p) active=$(cat $p/active)\"; done")
	rep.add(row{Name: "IPE policy active and enforcing", Expected: "enforce=1, container_host active", Observed: policyLine + " | " + oneLine(out(ipeState)),
		Mechanism: "IPE", Pass: strings.HasPrefix(ipeState.Stdout, "1") && strings.Contains(ipeState.Stdout, "container_host active=1"), Seconds: initAt.Seconds()})
	if !capDropped {
		capLine = "no capability dropped (boot.drop_capabilities is empty)"
	}
	rep.add(row{Name: "CAP_MAC_ADMIN out of every bounding set", Expected: "dropped by intact-init", Observed: capLine, Mechanism: "capability bounding set", Pass: capDropped})
	rep.add(row{Name: "intactd up", Expected: "intactd and containerd serving", Observed: intactdLine, Pass: true, Seconds: intactdAt.Seconds()})
	rep.add(row{Name: "times: firmware to init, init to containerd ready", Expected: "reported",
		Observed: fmt.Sprintf("QEMU start to intact-init %.1fs; intact-init to containerd ready %.1fs", initAt.Seconds(), (readyAt - initAt).Seconds()), Pass: true, Seconds: readyAt.Seconds()})

	ref := RegistryAddr + "/app:1"
	ctr := []string{"ctr", "--namespace", "default"}
	step := func(name, expected string, ok func(agent.Response) bool, argv ...string) agent.Response {
		t0 := time.Now()
		r := g.run(5*time.Minute, argv...)
		rep.add(row{Name: name, Expected: expected, Observed: lastLine(out(r)), Pass: ok(r), Seconds: time.Since(t0).Seconds()})
		return r
	}
	exit0 := func(r agent.Response) bool { return r.Exit == 0 }

	// ctr, and the time from pull to first exec against overlayfs. Under
	// the host's policy overlayfs layers cannot run code at all: its first
	// exec is the kernel's refusal, which ends its clock.
	t0 := time.Now()
	step("ctr image pull (intact)", "pulled", exit0, append(ctr, "image", "pull", "--plain-http", "--snapshotter", "intact", ref)...)
	step("ctr run (intact)", greeting, func(r agent.Response) bool { return strings.Contains(r.Stdout, greeting) },
		append(ctr, "run", "--rm", "--snapshotter", "intact", ref, "first-intact", "/bin/ctrprobe", "hello")...)
	pullIntact := time.Since(t0).Seconds()
	t0 = time.Now()
	step("ctr image pull (overlayfs)", "pulled", exit0, append(ctr, "image", "pull", "--plain-http", "--snapshotter", "overlayfs", ref)...)
	r := g.run(5*time.Minute, append(ctr, "run", "--rm", "--snapshotter", "overlayfs", ref, "first-overlayfs", "/bin/ctrprobe", "hello")...)
	pullOverlay := time.Since(t0).Seconds()
	rep.add(row{Name: "overlayfs layers cannot run code", Expected: "exec denied (not a signed dm-verity device)", Observed: lastLine(out(r)),
		Errno: map[bool]string{true: "EACCES"}[strings.Contains(out(r), "permission denied")], Mechanism: "IPE: DEFAULT op=EXECUTE action=DENY",
		Pass: r.Exit != 0 && strings.Contains(out(r), "permission denied"), Seconds: pullOverlay})
	rep.add(row{Name: "time: pull to first container exec", Expected: "reported, intact against overlayfs on the same host (its exec refused)",
		Observed: fmt.Sprintf("intact %.2fs, overlayfs %.2fs, ratio %.2f", pullIntact, pullOverlay, pullIntact/pullOverlay), Pass: true, Seconds: pullIntact})
	lowers := g.sh("dmsetup table | grep -c 'root_hash_sig_key_desc'; grep -c ' erofs ' /proc/mounts")
	rep.add(row{Name: "container layers on signed dm-verity", Expected: "every intact layer a signed verity device with EROFS mounted",
		Observed: oneLine(out(lowers)), Mechanism: "intactd + dm-verity root-hash signatures", Pass: lowers.Exit == 0})
	step("unsigned image refused", "refused: unsigned image", func(r agent.Response) bool {
		return r.Exit != 0 && strings.Contains(out(r), "unsigned image refused")
	}, append(ctr, "image", "pull", "--plain-http", "--snapshotter", "intact", RegistryAddr+"/unsigned:1")...)

	// CRI.
	step("crictl pull", "pulled", exit0, "crictl", "pull", ref)
	g.write("/run/pod.json", []byte(`{"metadata":{"name":"e2e","namespace":"default","uid":"e2e-uid"},"log_directory":"/var/log/pods/e2e","linux":{"security_context":{"namespace_options":{"network":2}}}}`), 0o644)
	g.write("/run/ctr.json", []byte(`{"metadata":{"name":"hello"},"image":{"image":"`+ref+`"},"command":["/bin/ctrprobe","hello"],"log_path":"hello.log","linux":{}}`), 0o644)
	pod := step("crictl runp (signed pause image)", "a pod sandbox", exit0, "crictl", "runp", "/run/pod.json")
	podID := strings.TrimSpace(pod.Stdout)
	cr := step("crictl create", "a container", exit0, "crictl", "create", podID, "/run/ctr.json", "/run/pod.json")
	cid := strings.TrimSpace(cr.Stdout)
	step("crictl start", "started", exit0, "crictl", "start", cid)
	var logs agent.Response
	for i := 0; i < 50; i++ {
		if logs = g.run(time.Minute, "crictl", "logs", cid); strings.Contains(logs.Stdout+logs.Stderr, greeting) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	rep.add(row{Name: "run through CRI", Expected: greeting, Observed: lastLine(out(logs)), Pass: strings.Contains(out(logs), greeting)})
	g.run(time.Minute, "crictl", "rmp", "-f", podID)

	breakoutMatrix(t, g, rep, ref, res.Keys)

	rep.add(row{Name: "whole e2e", Expected: "under 6 minutes in CI", Observed: fmt.Sprintf("%.0fs", time.Since(wall).Seconds()), Pass: true, Seconds: time.Since(wall).Seconds()})
	g.c.Do(ctx, agent.Request{Argv: []string{"intact-poweroff"}})
}

func waitTCP(t *testing.T, addr string) {
	for i := 0; i < 200; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s", addr)
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func lastLine(s string) string {
	var last string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			last = l
		}
	}
	return last
}
