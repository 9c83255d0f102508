package ipe

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/verity"
)

// TestReadMountInfoMatchesFindmnt: our mountinfo parser sees the same
// mounts (target and type, in order) as util-linux's findmnt.
func TestReadMountInfoMatchesFindmnt(t *testing.T) {
	findmnt := testutil.RequireTool(t, "findmnt")
	out, err := exec.Command(findmnt, "--noheadings", "--raw", "-o", "TARGET,FSTYPE", "--task", fmt.Sprint(os.Getpid())).Output()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ms, err := ReadMountInfo(f)
	if err != nil {
		t.Fatal(err)
	}
	var ours []string
	for _, m := range ms {
		ours = append(ours, m.Point+" "+m.FSType)
	}
	var theirs []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fs := strings.Fields(l)
		if len(fs) == 2 {
			theirs = append(theirs, unescapeFindmnt(fs[0])+" "+fs[1])
		}
	}
	if strings.Join(ours, "\n") != strings.Join(theirs, "\n") {
		t.Fatalf("mounts differ\nours:\n%s\nfindmnt:\n%s", strings.Join(ours, "\n"), strings.Join(theirs, "\n"))
	}
}

// unescapeFindmnt decodes findmnt --raw's \xNN escapes.
func unescapeFindmnt(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			var c byte
			fmt.Sscanf(s[i+2:i+4], "%02x", &c)
			b.WriteByte(c)
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// TestInspectDMVerityFromTable: a file on a device-mapper device gets the
// root hash and signature state of the device's verity table (here a fake
// sysfs names the file system's device, and the table is the one package
// verity writes for the kernel).
func TestInspectDMVerityFromTable(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "prog")
	must(t, os.WriteFile(file, []byte("x"), 0o755))
	fi, err := os.Stat(file)
	must(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	major, minor := linux.Major(st.Dev), linux.Minor(st.Dev)
	if major == 0 {
		t.Skip("temporary directory is on a file system without a block device")
	}
	sys := t.TempDir()
	dmdir := filepath.Join(sys, "dev", "block", fmt.Sprintf("%d:%d", major, minor), "dm")
	must(t, os.MkdirAll(dmdir, 0o755))
	must(t, os.WriteFile(filepath.Join(dmdir, "name"), []byte("layer-1\n"), 0o644))
	root := bytes.Repeat([]byte{0xab}, 32)
	p := verity.DefaultParams()
	p.DataBlocks = 8
	p.NoSuperblock = true
	for _, sig := range []bool{false, true} {
		o := verity.TableOptions{}
		if sig {
			o.RootHashSigKeyDesc = "intact:test"
		}
		tgt, err := verity.Table(p, root, "7:0", "7:1", o)
		must(t, err)
		in := &Inspector{SysRoot: sys, DMTable: func(ctx context.Context, name string) (string, error) {
			if name != "layer-1" {
				return "", fmt.Errorf("no device %s", name)
			}
			return tgt.String() + "\n", nil
		}}
		fp, err := in.Inspect(context.Background(), file)
		must(t, err)
		if fp.DMName != "layer-1" || fp.DMVerity == nil || !fp.DMVerity.Equal(Digest{Alg: "sha256", Value: root}) || fp.DMVeritySigned != sig {
			t.Fatalf("sig=%v: %+v (table %q)", sig, fp, tgt.String())
		}
		pol, err := Parse([]byte("policy_name=t policy_version=1.0.0\nDEFAULT action=DENY\nop=EXECUTE dmverity_signature=TRUE action=ALLOW\nop=EXECUTE dmverity_roothash=sha256:" + strings.Repeat("ab", 32) + " action=ALLOW\n"))
		must(t, err)
		d := pol.Evaluate(fp.Context(OpExecute))
		want := "op=EXECUTE dmverity_roothash=sha256:" + strings.Repeat("ab", 32) + " action=ALLOW"
		if sig {
			want = "op=EXECUTE dmverity_signature=TRUE action=ALLOW"
		}
		if d.Action != ActionAllow || d.Rule.String() != want {
			t.Errorf("sig=%v: decided %v by %v", sig, d.Action, d.Rule)
		}
	}
	// Without device-mapper access the root hash is reported unknown.
	fp, err := (&Inspector{SysRoot: sys}).Inspect(context.Background(), file)
	must(t, err)
	if fp.DMVerity != nil || len(fp.Unknown) == 0 {
		t.Errorf("no DMTable: %+v", fp)
	}
}

// TestRootInspectOverlay mounts a real overlayfs (host-privileged tier) and
// checks that Inspect resolves files to the layer that holds them, as
// d_real_inode() does: a lower-only file to the lower layer, a file written
// through the overlay to the upper layer.
func TestRootInspectOverlay(t *testing.T) {
	testutil.RequireRoot(t)
	base := t.TempDir()
	lower, upper, work, merged := filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "merged")
	for _, d := range []string{lower, upper, work, merged} {
		must(t, os.MkdirAll(d, 0o755))
	}
	must(t, os.WriteFile(filepath.Join(lower, "ro"), []byte("lower"), 0o755))
	must(t, os.WriteFile(filepath.Join(lower, "cu"), []byte("lower"), 0o755))
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	if err := linux.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		testutil.Unavailable(t, "overlayfs mount: "+err.Error())
	}
	defer linux.Unmount(merged, 0)
	must(t, os.WriteFile(filepath.Join(merged, "cu"), []byte("copied up"), 0o755))
	in := &Inspector{}
	for name, want := range map[string]string{"ro": filepath.Join(lower, "ro"), "cu": filepath.Join(upper, "cu")} {
		fp, err := in.Inspect(context.Background(), filepath.Join(merged, name))
		must(t, err)
		if fp.MountFSType != "overlay" || fp.RealPath != want || fp.BootVerified {
			t.Errorf("%s: %+v, want real path %s", name, fp, want)
		}
		fi, err := os.Stat(want)
		must(t, err)
		st := fi.Sys().(*syscall.Stat_t)
		if fp.Device != fmt.Sprintf("%d:%d", linux.Major(st.Dev), linux.Minor(st.Dev)) {
			t.Errorf("%s: device %s, real file's %d:%d", name, fp.Device, linux.Major(st.Dev), linux.Minor(st.Dev))
		}
	}
}

// TestParseVerityTableForms: dmsetup-style lines with and without the
// start/length prefix, options, other targets.
func TestParseVerityTableForms(t *testing.T) {
	root := strings.Repeat("0f", 32)
	line := "1 /dev/loop0 /dev/loop1 4096 4096 8 1 sha256 " + root + " - 3 ignore_zero_blocks root_hash_sig_key_desc k"
	for _, tc := range []struct {
		table  string
		ok     bool
		signed bool
	}{
		{"0 64 verity " + line, true, true},
		{"verity " + line, true, true},
		{"0 64 linear 8:1 0\n0 64 verity 1 a b 4096 4096 8 1 sha512 " + root + root + " -", true, false},
		{"0 64 linear 8:1 0", false, false},
		{"0 64 verity 1 a b 4096 4096 8 1 sha256 zz -", false, false},
	} {
		d, signed, ok := ParseVerityTable(tc.table)
		if ok != tc.ok || signed != tc.signed || (ok && len(d.Value) == 0) {
			t.Errorf("%q: %v %v %v", tc.table, d, signed, ok)
		}
	}
}
