// Command init is PID 1 of the example container host
// (examples/container-host), started by intact-init after it verified the
// root and activated the IPE policy: a documented smaller init in place of
// systemd. It mounts what containers need (cgroup2, /dev/pts, /dev/shm),
// brings up loopback and, when the signed command line says
// intact.net=user, the QEMU user-mode network (10.0.2.15/24 via 10.0.2.2,
// with iproute2 from the verified root), starts intactd and then
// containerd, prints one console line per milestone with the kernel's
// uptime, and reaps every orphan. With intact.agent=ttyS1 on the command
// line it also serves the command agent (package host/agent) on that
// serial port; the walkthrough and the end-to-end test drive the host
// through it. SIGTERM or `intact-poweroff` through the agent stops the
// services and powers off.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/intact-project/intact/host/agent"
	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/internal/linux/vmguest"
)

var console io.Writer = os.Stdout

func logf(format string, args ...any) {
	fmt.Fprintf(console, "intact-host: "+format+" (uptime %s)\n", append(args, uptime())...)
}

func uptime() string {
	b, _ := os.ReadFile("/proc/uptime")
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0] + "s"
	}
	return "?"
}

func cmdline(key string) string {
	b, _ := os.ReadFile("/proc/cmdline")
	for _, f := range strings.Fields(string(b)) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "init: not PID 1")
		os.Exit(2)
	}
	os.Setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	r := &reaper{waiting: map[int]chan status{}, exited: map[int]status{}}
	go r.loop()
	setup()
	svc := &services{r: r}
	svc.start("intactd", "/run/intact/intactd.sock", "/usr/local/bin/intactd")
	svc.start("containerd", "/run/containerd/containerd.sock", "/usr/local/bin/containerd")
	logf("host ready: containerd and intactd up")

	stop := make(chan string, 1)
	if port := cmdline("intact.agent"); port != "" {
		go serveAgent(r, "/dev/"+port, stop)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGPWR)
	how := "poweroff"
	select {
	case s := <-sig:
		logf("%v: shutting down", s)
	case how = <-stop:
		logf("%s requested", how)
	}
	svc.stopAll()
	if how == "reboot" {
		linux.Reboot()
	}
	linux.PowerOff()
}

// setup mounts what containerd and runc expect and configures the network.
func setup() {
	mounts := []struct {
		src, dst, fs string
		flags        uintptr
		data         string
	}{
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC, ""},
		{"devpts", "/dev/pts", "devpts", linux.MS_NOSUID | linux.MS_NOEXEC, "ptmxmode=0666,mode=620"},
		{"tmpfs", "/dev/shm", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=1777"},
	}
	for _, m := range mounts {
		os.MkdirAll(m.dst, 0o755)
		if err := linux.Mount(m.src, m.dst, m.fs, m.flags, m.data); err != nil && !errors.Is(err, linux.EBUSY) {
			logf("mount %s: %v", m.dst, err)
		}
	}
	for _, d := range []string{"/run/containerd", "/run/intact", "/var/lib/containerd", "/var/lib/intact", "/var/log"} {
		os.MkdirAll(d, 0o755)
	}
	linux.SetHostname("intact-host")
	if err := vmguest.LinkUp("lo"); err != nil {
		logf("loopback: %v", err)
	}
	if cmdline("intact.net") == "user" {
		for _, argv := range [][]string{
			{"ip", "link", "set", "eth0", "up"},
			{"ip", "addr", "add", "10.0.2.15/24", "dev", "eth0"},
			{"ip", "route", "add", "default", "via", "10.0.2.2"},
		} {
			if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
				logf("network: %s: %v %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
			}
		}
		logf("network: eth0 10.0.2.15/24 via 10.0.2.2 (QEMU user networking)")
	}
}

// status is how a child ended: its exit code, or -1 and the signal.
type status struct{ code, signal int }

// reaper reaps every child (PID 1 inherits orphans) and hands the status
// of the children started through it to their waiters.
type reaper struct {
	mu      sync.Mutex
	waiting map[int]chan status
	exited  map[int]status // reaped before anybody asked (bounded)
}

func (r *reaper) loop() {
	c := make(chan os.Signal, 16)
	signal.Notify(c, syscall.SIGCHLD)
	for {
		for {
			pid, code, sig, err := linux.WaitAny()
			if err != nil || pid == 0 {
				break
			}
			r.mu.Lock()
			if ch, ok := r.waiting[pid]; ok {
				ch <- status{code, sig}
				delete(r.waiting, pid)
			} else if len(r.exited) < 4096 {
				r.exited[pid] = status{code, sig}
			}
			r.mu.Unlock()
		}
		select {
		case <-c:
		case <-time.After(time.Second):
		}
	}
}

// start starts cmd and returns where its status arrives. The lock keeps
// the reaper from handing out the status before the waiter is there.
func (r *reaper) start(cmd *exec.Cmd) (<-chan status, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := make(chan status, 1)
	if st, ok := r.exited[cmd.Process.Pid]; ok {
		ch <- st
		delete(r.exited, cmd.Process.Pid)
	} else {
		r.waiting[cmd.Process.Pid] = ch
	}
	return ch, nil
}

type services struct {
	r     *reaper
	procs []*exec.Cmd
	names []string
}

// start starts a daemon with its log in /var/log/NAME.log and waits until
// it listens on socket.
func (s *services) start(name, socket, path string, args ...string) {
	log, err := os.OpenFile("/var/log/"+name+".log", os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		logf("%s: %v", name, err)
		return
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	done, err := s.r.start(cmd)
	log.Close()
	if err != nil {
		logf("%s: %v", name, err)
		return
	}
	s.procs, s.names = append(s.procs, cmd), append(s.names, name)
	for i := 0; i < 600; i++ {
		select {
		case st := <-done:
			logf("%s exited (%v) before it listened on %s; see /var/log/%s.log", name, st, socket, name)
			return
		default:
		}
		if c, err := net.Dial("unix", socket); err == nil {
			c.Close()
			logf("%s up on %s", name, socket)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	logf("%s does not listen on %s after 60s", name, socket)
}

func (s *services) stopAll() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		s.procs[i].Process.Signal(syscall.SIGTERM)
		logf("stopping %s", s.names[i])
	}
	time.Sleep(2 * time.Second)
}

// serveAgent serves the command agent on a serial port.
func serveAgent(r *reaper, port string, stop chan<- string) {
	f, err := os.OpenFile(port, os.O_RDWR, 0)
	if err != nil {
		logf("agent: %v", err)
		return
	}
	if err := vmguest.MakeRaw(f.Fd()); err != nil {
		logf("agent: %s: %v", port, err)
	}
	logf("agent listening on %s", port)
	err = agent.Serve(context.Background(), f, func(ctx context.Context, req agent.Request) agent.Response {
		if len(req.Argv) == 1 && (req.Argv[0] == "intact-poweroff" || req.Argv[0] == "intact-reboot") {
			stop <- strings.TrimPrefix(req.Argv[0], "intact-")
			return agent.Response{}
		}
		return run(ctx, r, req)
	})
	logf("agent: %v", err)
}

// run runs one agent request as a child of PID 1.
func run(ctx context.Context, r *reaper, req agent.Request) agent.Response {
	start := time.Now()
	resp := agent.Response{Exit: -1}
	for _, f := range req.Files {
		mode := os.FileMode(f.Mode)
		if mode == 0 {
			mode = 0o644
		}
		if err := os.WriteFile(f.Path, f.Data, mode); err != nil {
			resp.Error = err.Error()
			return resp
		}
	}
	if len(req.Argv) == 0 {
		resp.Exit = 0
		return resp
	}
	timeout := time.Duration(req.Timeout * float64(time.Second))
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		resp.Error = err.Error()
		return resp
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		resp.Error = err.Error()
		return resp
	}
	cmd := exec.Command(req.Argv[0], req.Argv[1:]...)
	cmd.Env = append(os.Environ(), req.Env...)
	cmd.Dir = req.Dir
	cmd.Stdin = bytes.NewReader(req.Stdin)
	if len(req.Stdin) == 0 {
		cmd.Stdin = nil
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	done, err := r.start(cmd)
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		resp.Error = err.Error()
		var errno linux.Errno
		if errors.As(err, &errno) {
			resp.Errno = linux.ErrnoName(errno)
		}
		resp.Seconds = time.Since(start).Seconds()
		return resp
	}
	var stdout, stderr bytes.Buffer
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); io.Copy(&stdout, io.LimitReader(outR, 16<<20)); io.Copy(io.Discard, outR) }()
	go func() { defer wg.Done(); io.Copy(&stderr, io.LimitReader(errR, 16<<20)); io.Copy(io.Discard, errR) }()
	var st status
	select {
	case st = <-done:
	case <-time.After(timeout):
		linux.KillGroup(cmd.Process.Pid, linux.SIGKILL)
		st = <-done
		resp.Error = fmt.Sprintf("timed out after %v", timeout)
	case <-ctx.Done():
		linux.KillGroup(cmd.Process.Pid, linux.SIGKILL)
		st = <-done
	}
	// Daemons the command left behind may keep the pipes open: give the
	// output a moment, then move on.
	waited := make(chan struct{})
	go func() { wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(2 * time.Second):
		outR.Close()
		errR.Close()
		<-waited
	}
	outR.Close()
	errR.Close()
	resp.Exit, resp.Stdout, resp.Stderr = st.code, stdout.String(), stderr.String()
	resp.Seconds = time.Since(start).Seconds()
	return resp
}
