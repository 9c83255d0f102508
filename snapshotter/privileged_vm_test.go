package snapshotter

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/vmtest/guest"
	"github.com/intact-project/intact/ipe"
)

// TestPrivilegedContainerIPEInVM measures what root in a privileged
// container can do to IPE on a host where containers run from intact
// layers: with CAP_MAC_ADMIN in the container it can switch enforcement off
// (securityfs mounted by itself, "0" written to ipe/enforce) and then run
// any binary: a breakout. With CAP_MAC_ADMIN removed from the bounding set
// of containerd (and so of everything it starts; what an immutable host's
// init does after loading its policy), the same writes fail with EPERM and
// IPE keeps denying. The exec attacks that IPE stops on its own are
// checked too: a copy in the writable layer and a memfd.
func TestPrivilegedContainerIPEInVM(t *testing.T) {
	requireStack(t)
	keys := guest.RequireTrustedKeys(t)
	s := newStack(t, keys)
	s.pushImage("app", "1", []testLayer{baseLayer(t)}, []string{"/bin/ctrprobe"})
	ref := s.registry + "/app:1"
	s.sign(ref, keys.SignKey, keys.SignCert)
	if out, err := s.ctr("image", "pull", "--snapshotter", "intact", "--plain-http", ref); err != nil {
		t.Fatal(out)
	}
	enforceTestPolicy(t, keys, "privileged-test")
	ctx := context.Background()
	sfs := &ipe.SecurityFS{}
	evil := "/var/lib/intact-tests/evil.pol"
	os.WriteFile(evil, []byte("policy_name=privileged-test policy_version=9.0.0\nDEFAULT action=ALLOW\n"), 0o644)

	n := 0
	var wrapper []string // what ctr runs under
	priv := func(args ...string) string {
		n++
		argv := append(append([]string{}, wrapper...), "ctr", "--address", s.ctrdSock, "--namespace", "default",
			"run", "--no-pivot", "--snapshotter", "intact", "--rm", "--privileged", "--mount", "type=bind,src=/var/lib/intact-tests,dst=/host,options=rbind:rw",
			ref, "p"+string(rune('a'+n)), "/bin/ctrprobe")
		out, _ := s.run(append(argv, args...)...)
		out = strings.TrimSpace(out)
		t.Logf("privileged container: ctrprobe %s -> %s", strings.Join(args, " "), out)
		return out
	}
	expect := func(out, want string) {
		t.Helper()
		if !strings.Contains(out, want) {
			t.Errorf("got %q, want %q", out, want)
		}
	}

	// IPE on its own.
	expect(priv("copyexec", "/bin/ctrprobe", "/tmp/copy"), "exec /tmp/copy: EACCES")
	expect(priv("memfdexec"), "EACCES")
	expect(priv("ipe-load", "/host/evil.pol"), "EBADMSG")

	// With CAP_MAC_ADMIN the container switches IPE off, then runs its copy.
	expect(priv("ipe-enforce", "0"), "ok")
	if on, _ := sfs.Enforce(); on {
		t.Error("enforce still 1 after the container wrote 0")
	}
	expect(priv("copyexec", "/bin/ctrprobe", "/tmp/copy"), greeting)
	if err := sfs.SetEnforce(ctx, true); err != nil {
		t.Fatal(err)
	}

	// The mitigation: CAP_MAC_ADMIN out of the bounding set of containerd
	// (and so of every shim, runc and container it starts) and of ctr,
	// which computes a privileged container's capabilities from its own
	// (CRI computes them in containerd): as when the host's init drops it
	// for everything after loading the policy.
	s.stop("containerd")
	s.runContainerd("ctrprobe", "dropcap", "mac_admin")
	wrapper = []string{"ctrprobe", "dropcap", "mac_admin"}
	expect(priv("ipe-enforce", "0"), "EPERM")
	if on, _ := sfs.Enforce(); !on {
		t.Error("enforce is 0 although the container lacks CAP_MAC_ADMIN")
	}
	expect(priv("ipe-load", "/host/evil.pol"), "EPERM")
	expect(priv("copyexec", "/bin/ctrprobe", "/tmp/copy"), "exec /tmp/copy: EACCES")
	expect(priv("hello"), greeting)
}
