package ipe

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/internal/mountinfo"
)

// Inspector computes a file's IPE properties from userspace. Each source of
// information is injectable so that tests can run against fixtures and the
// CLI can plug in device-mapper and fs-verity access.
type Inspector struct {
	// ProcRoot and SysRoot default to /proc and /sys.
	ProcRoot string
	SysRoot  string
	// DMTable returns the active table of the device-mapper device with
	// this name, one target per line as `dmsetup table` prints it
	// ("start length verity 1 ... alg roothash salt [opts]"). Nil: the
	// dm-verity properties of dm devices are reported as unknown.
	DMTable func(ctx context.Context, name string) (string, error)
	// FSVerity measures a file's fs-verity state; nil state means verity
	// is not enabled on the file. Nil func: unknown.
	FSVerity func(ctx context.Context, path string) (*FSVerityState, error)
	// Logger receives debug messages; nil discards them.
	Logger *slog.Logger
	// Deprecated: use Logger (the name every intact package uses).
	Log *slog.Logger
}

// FSVerityState is a verity file's digest and builtin-signature state.
type FSVerityState struct {
	Digest Digest
	// Signed: the file carries a builtin signature. The kernel verifies it
	// against the .fs-verity keyring whenever it loads the inode (a file
	// whose signature fails cannot be opened), so a readable signature
	// means fsverity_signature=TRUE.
	Signed bool
	// SignatureKnown is false when the signature could not be read
	// (FS_IOC_READ_VERITY_METADATA needs Linux 5.12).
	SignatureKnown bool
}

// FileProps is what Inspect found out about one file.
type FileProps struct {
	Path string `json:"path"`
	// RealPath is the file d_real_inode() resolves to: for overlayfs the
	// upper or lower file, else Path.
	RealPath string `json:"real_path"`
	// MountFSType is the type of the mount the file was opened through
	// (IPE takes boot_verified from that mount's superblock).
	MountFSType string `json:"mount_fstype"`
	MountPoint  string `json:"mount_point"`
	// RealFSType and Device describe the filesystem of the real inode.
	RealFSType string `json:"real_fstype"`
	Device     string `json:"device"` // major:minor
	DMName     string `json:"dm_name,omitempty"`

	BootVerified   bool    `json:"boot_verified"`
	DMVerity       *Digest `json:"-"`
	DMVeritySigned bool    `json:"dmverity_signature"`
	FSVerity       *Digest `json:"-"`
	FSVeritySigned bool    `json:"fsverity_signature"`
	// Unknown lists what could not be determined from userspace; the
	// corresponding fields are then best guesses (false / nil).
	Unknown []string `json:"unknown,omitempty"`
}

// Context returns the evaluation context for op on this file.
func (fp *FileProps) Context(op Op) Context {
	return Context{Op: op, BootVerified: fp.BootVerified, DMVerity: fp.DMVerity, DMVeritySigned: fp.DMVeritySigned,
		FSVerity: fp.FSVerity, FSVeritySigned: fp.FSVeritySigned}
}

// Properties lists the properties as policy tokens (what a rule could
// test for this file).
func (fp *FileProps) Properties() []string {
	out := []string{fmt.Sprintf("boot_verified=%s", tf(fp.BootVerified))}
	if fp.DMVerity != nil {
		out = append(out, "dmverity_roothash="+fp.DMVerity.String())
	}
	out = append(out, fmt.Sprintf("dmverity_signature=%s", tf(fp.DMVerity != nil && fp.DMVeritySigned)))
	if fp.FSVerity != nil {
		out = append(out, "fsverity_digest="+fp.FSVerity.String())
	}
	out = append(out, fmt.Sprintf("fsverity_signature=%s", tf(fp.FSVerity != nil && fp.FSVeritySigned)))
	return out
}

func tf(b bool) string {
	if b {
		return "TRUE"
	}
	return "FALSE"
}

// Mount is one line of /proc/self/mountinfo.
type Mount = mountinfo.Mount

// ReadMountInfo parses a mountinfo file (capped at 16 MiB).
func ReadMountInfo(r io.Reader) ([]Mount, error) { return mountinfo.Parse(r) }

// mountOf returns the mount whose mount point is the longest prefix of p
// (the last such mount, which is the top of a stack).
func mountOf(mounts []Mount, p string) (Mount, bool) {
	best, found := Mount{}, false
	for _, m := range mounts {
		if p == m.Point || strings.HasPrefix(p, strings.TrimSuffix(m.Point, "/")+"/") {
			if !found || len(m.Point) >= len(best.Point) {
				best, found = m, true
			}
		}
	}
	return best, found
}

func (in *Inspector) procRoot() string {
	if in.ProcRoot == "" {
		return "/proc"
	}
	return in.ProcRoot
}

func (in *Inspector) sysRoot() string {
	if in.SysRoot == "" {
		return "/sys"
	}
	return in.SysRoot
}

// Inspect computes the IPE properties of path as the kernel would see them
// for a file opened through that path.
func (in *Inspector) Inspect(ctx context.Context, path string) (*FileProps, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("ipe: inspect %s: %w", path, err)
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		abs = r
	} else {
		return nil, fmt.Errorf("ipe: inspect %s: %w", path, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("ipe: inspect %s: %w", path, err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("ipe: inspect %s: is a directory", path)
	}
	f, err := os.Open(filepath.Join(in.procRoot(), "self", "mountinfo"))
	if err != nil {
		return nil, fmt.Errorf("ipe: inspect %s: %w", path, err)
	}
	mounts, err := ReadMountInfo(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("ipe: read mountinfo: %w", err)
	}
	fp := &FileProps{Path: abs, RealPath: abs}
	m, ok := mountOf(mounts, abs)
	if !ok {
		return nil, fmt.Errorf("ipe: inspect %s: no mount found in mountinfo", path)
	}
	fp.MountFSType, fp.MountPoint = m.FSType, m.Point
	// boot_verified: the mount's superblock was flagged by
	// initramfs_populated, i.e. it is the initramfs rootfs.
	fp.BootVerified = m.FSType == "rootfs"
	real, realMount := abs, m
	if m.FSType == "overlay" {
		r, note := resolveOverlay(m, abs)
		if note != "" {
			fp.Unknown = append(fp.Unknown, note)
		}
		if r != "" {
			real = r
			if rm, ok := mountOf(mounts, r); ok {
				realMount = rm
			}
		}
	}
	fp.RealPath, fp.RealFSType = real, realMount.FSType
	rst, err := os.Stat(real)
	if err != nil {
		return nil, fmt.Errorf("ipe: inspect %s: %w", real, err)
	}
	sys, ok := rst.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, fmt.Errorf("ipe: inspect %s: no device number", real)
	}
	major, minor := linux.Major(sys.Dev), linux.Minor(sys.Dev)
	fp.Device = fmt.Sprintf("%d:%d", major, minor)
	if err := in.dmProps(ctx, fp, major, minor); err != nil {
		return nil, err
	}
	if in.FSVerity != nil {
		st, err := in.FSVerity(ctx, real)
		switch {
		case err != nil:
			fp.Unknown = append(fp.Unknown, "fs-verity digest: "+err.Error())
		case st != nil:
			d := st.Digest
			fp.FSVerity, fp.FSVeritySigned = &d, st.Signed
			if !st.SignatureKnown {
				fp.Unknown = append(fp.Unknown, "fsverity_signature: the builtin signature could not be read (assumed FALSE)")
			}
		}
	} else {
		fp.Unknown = append(fp.Unknown, "fs-verity digest not measured (no fs-verity access)")
	}
	return fp, nil
}

// dmProps fills the dm-verity properties from sysfs and the dm table.
func (in *Inspector) dmProps(ctx context.Context, fp *FileProps, major, minor uint32) error {
	if major == 0 {
		// Anonymous block device numbers (tmpfs, overlay, proc, file-backed
		// EROFS): no block device, so no dm-verity.
		return nil
	}
	nameb, err := os.ReadFile(filepath.Join(in.sysRoot(), "dev", "block", fp.Device, "dm", "name"))
	if errors.Is(err, os.ErrNotExist) {
		return nil // a block device that is not device-mapper
	}
	if err != nil {
		fp.Unknown = append(fp.Unknown, "device-mapper name: "+err.Error())
		return nil
	}
	fp.DMName = strings.TrimSpace(string(nameb))
	if in.DMTable == nil {
		fp.Unknown = append(fp.Unknown, fmt.Sprintf("dm-verity root hash of /dev/mapper/%s not read (no device-mapper access)", fp.DMName))
		return nil
	}
	table, err := in.DMTable(ctx, fp.DMName)
	if err != nil {
		fp.Unknown = append(fp.Unknown, fmt.Sprintf("dm table of %s: %v", fp.DMName, err))
		return nil
	}
	d, signed, ok := ParseVerityTable(table)
	if ok {
		fp.DMVerity, fp.DMVeritySigned = &d, signed
	}
	return nil
}

// ParseVerityTable finds the verity target in a dm table and returns the
// root hash the kernel binds to the device (algorithm name and digest as
// in the table) and whether a root-hash signature was given. The kernel
// refuses to create a verity target whose signature does not verify, so a
// live table with root_hash_sig_key_desc means dmverity_signature=TRUE.
func ParseVerityTable(table string) (d Digest, signed, ok bool) {
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		i := 2
		if f[0] == "verity" {
			i = 0
		}
		if f[i] != "verity" || len(f) < i+11 {
			continue
		}
		a := f[i+1:] // version data hash dbs hbs nblocks hstart alg root salt [n opts]
		raw, err := hex.DecodeString(a[8])
		if err != nil {
			continue
		}
		d = Digest{Alg: a[7], Value: raw}
		for _, o := range a[10:] {
			if o == "root_hash_sig_key_desc" {
				signed = true
			}
		}
		return d, signed, true
	}
	return Digest{}, false, false
}

// resolveOverlay returns the path of the file d_real_inode() would return
// for abs on the overlay mount m: the upper file if it exists, else the
// first lower layer that has it.
func resolveOverlay(m Mount, abs string) (string, string) {
	rel, err := filepath.Rel(m.Point, abs)
	if err != nil {
		return "", "overlay: " + err.Error()
	}
	var upper string
	var lowers []string
	note := ""
	for _, o := range splitOverlayOpts(m.SuperOpts) {
		k, v, _ := strings.Cut(o, "=")
		switch k {
		case "upperdir":
			upper = unescapeOverlay(v)
		case "lowerdir":
			for _, l := range splitUnescaped(v, ':') {
				if l != "" {
					lowers = append(lowers, unescapeOverlay(l))
				}
			}
		case "lowerdir+", "datadir+":
			lowers = append(lowers, unescapeOverlay(v))
		case "metacopy", "redirect_dir":
			if v == "on" || v == "follow" {
				note = "overlay " + k + "=" + v + ": a renamed or metadata-only copied-up file may resolve elsewhere than shown"
			}
		}
	}
	if upper != "" {
		if _, err := os.Lstat(filepath.Join(upper, rel)); err == nil {
			return filepath.Join(upper, rel), note
		}
	}
	for _, l := range lowers {
		if _, err := os.Lstat(filepath.Join(l, rel)); err == nil {
			return filepath.Join(l, rel), note
		}
	}
	if note == "" {
		note = "overlay: the file was found in no layer (layers not visible in this mount namespace?)"
	}
	return "", note
}

func splitOverlayOpts(s string) []string { return splitUnescaped(s, ',') }

// splitUnescaped splits on sep except where it is escaped with '\'.
func splitUnescaped(s string, sep byte) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			i++
			continue
		}
		if s[i] == sep {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

func unescapeOverlay(s string) string {
	s = mountinfo.Unescape(s)
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
