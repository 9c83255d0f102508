package snapshotter

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/intact-project/intact/dm"
	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/verity"
	"github.com/intact-project/intact/veritydev"
)

// Probe is what the kernel offers intactd.
type Probe struct {
	EROFS   string `json:"erofs"`   // "loaded" or "module"
	Overlay string `json:"overlay"` // "loaded" or "module"
	// DMVeritySignatures: the verity target accepts root_hash_sig_key_desc
	// (CONFIG_DM_VERITY_VERIFY_ROOTHASH_SIG).
	DMVeritySignatures bool `json:"dm_verity_signatures"`
	// RequireSignatures mirrors dm_verity.require_signatures: the kernel
	// itself refuses unsigned verity tables.
	RequireSignatures bool `json:"require_signatures"`
}

// ProbeKernel checks that the kernel can run intact layers: EROFS and
// overlayfs (registered, or available as modules that the first mount
// loads), device-mapper, and dm-verity root-hash signatures. The last is
// tested for real: a one-block verity device is loaded with a signature
// that is not PKCS#7; a kernel that checks signatures refuses it as a bad
// message or key, one that cannot gets an unknown table argument (EINVAL).
// Scratch files go to dir. Anything missing is ErrNotSupported with the
// kernel option that provides it.
func ProbeKernel(ctx context.Context, dir string) (Probe, error) {
	probeMu.Lock()
	defer probeMu.Unlock()
	if probed != nil {
		return *probed, nil
	}
	p, err := probeKernel(ctx, dir)
	if err == nil {
		probed = &p
	}
	return p, err
}

// The first successful probe of a process is reused: the kernel does not
// lose features while it runs.
var (
	probeMu sync.Mutex
	probed  *Probe
)

func probeKernel(ctx context.Context, dir string) (Probe, error) {
	var p Probe
	var missing []string
	var err error
	if p.EROFS, err = filesystem("erofs"); err != nil {
		missing = append(missing, "EROFS (CONFIG_EROFS_FS): "+err.Error())
	}
	if p.Overlay, err = filesystem("overlay"); err != nil {
		missing = append(missing, "overlayfs (CONFIG_OVERLAY_FS): "+err.Error())
	}
	if len(missing) == 0 {
		if p.DMVeritySignatures, err = probeVeritySignatures(ctx, dir); err != nil {
			missing = append(missing, err.Error())
		}
	}
	if len(missing) > 0 {
		return p, fmt.Errorf("%w: %s", ErrNotSupported, strings.Join(missing, "; "))
	}
	if b, err := os.ReadFile("/sys/module/dm_verity/parameters/require_signatures"); err == nil {
		p.RequireSignatures = strings.TrimSpace(string(b)) == "Y"
	}
	return p, nil
}

// filesystem reports whether the kernel has a file system type: registered
// in /proc/filesystems, or built as a module of the running kernel
// (modules.dep/modules.builtin), which mount loads on first use.
func filesystem(name string) (string, error) {
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 && f[len(f)-1] == name {
			return "loaded", nil
		}
	}
	rel, err := linux.Uname()
	if err != nil {
		return "", err
	}
	for _, idx := range []string{"modules.builtin", "modules.dep"} {
		b, err := os.ReadFile(filepath.Join("/lib/modules", rel, idx))
		if err != nil {
			continue
		}
		if bytes.Contains(b, []byte("/"+name+".ko")) {
			return "module", nil
		}
	}
	return "", fmt.Errorf("not in /proc/filesystems and no %s module for kernel %s", name, rel)
}

func probeVeritySignatures(ctx context.Context, dir string) (bool, error) {
	ctl, err := dm.Open()
	if err != nil {
		return false, fmt.Errorf("device-mapper (CONFIG_BLK_DEV_DM): %w", err)
	}
	ctl.Close()
	f, err := os.CreateTemp(dir, ".probe-")
	if err != nil {
		return false, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	p := verity.DefaultParams()
	p.NoSuperblock = true
	b, err := verity.NewBuilder(p, nil)
	if err != nil {
		return false, err
	}
	block := make([]byte, p.DataBlockSize)
	if _, err := f.Write(block); err != nil {
		return false, err
	}
	if _, err := b.Write(block); err != nil {
		return false, err
	}
	res, err := b.Finish(ctx, f, uint64(p.DataBlockSize))
	if err != nil {
		return false, err
	}
	if err := f.Close(); err != nil {
		return false, err
	}
	name := fmt.Sprintf("intact-probe-%d", os.Getpid())
	dev, err := veritydev.OpenConfig(ctx, veritydev.Config{Name: name, Data: f.Name(), Params: res.Params, RootHash: res.RootHash, Signature: []byte("not a PKCS#7 message")})
	if err == nil {
		dev.Close(ctx)
		return false, errors.New("dm-verity accepted a bogus root-hash signature: the kernel does not check signatures")
	}
	switch {
	case errors.Is(err, linux.EBADMSG), errors.Is(err, linux.EKEYREJECTED), errors.Is(err, linux.ENOKEY):
		return true, nil
	case errors.Is(err, linux.EINVAL):
		return false, fmt.Errorf("dm-verity root-hash signatures (CONFIG_DM_VERITY_VERIFY_ROOTHASH_SIG): the verity target refused root_hash_sig_key_desc: %w", err)
	}
	return false, fmt.Errorf("dm-verity (CONFIG_DM_VERITY with CONFIG_DM_VERITY_VERIFY_ROOTHASH_SIG): %w", err)
}
