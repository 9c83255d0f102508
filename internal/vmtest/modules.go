package vmtest

import (
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io/fs"
	"os/exec"
	"path/filepath"
	"strings"
)

// DefaultModules are the modules every run loads: device-mapper with the
// verity target, loop, EROFS, overlayfs, the virtio disk driver for the
// scratch disk and efivarfs.
var DefaultModules = []string{"dm-verity", "loop", "erofs", "overlay", "virtio_blk", "efivarfs"}

// modName normalizes a module name as the kernel does ('-' and '_' are equal).
func modName(s string) string {
	s = filepath.Base(s)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		s = strings.TrimSuffix(s, ext)
	}
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

// resolveModules returns the module files (relative to modDir) for names and
// everything they depend on, dependencies first. It reads "depends=" from
// each module's .modinfo section (xz modules are decompressed with xz -dc on
// the host only to read it).
func resolveModules(ctx context.Context, modDir string, names []string) ([]string, error) {
	index := map[string]string{}
	err := filepath.WalkDir(modDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.Contains(d.Name(), ".ko") {
			rel, _ := filepath.Rel(modDir, p)
			index[modName(d.Name())] = rel
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("vmtest: index modules: %w", err)
	}
	builtin := map[string]bool{}
	if b, err := readFileLimit(filepath.Join(modDir, "modules.builtin"), 1<<20); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[modName(l)] = true
		}
	}
	var order []string
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		name = modName(name)
		if builtin[name] || state[name] == 2 {
			return nil
		}
		if state[name] == 1 {
			return fmt.Errorf("vmtest: module dependency cycle: %s", strings.Join(append(chain, name), " -> "))
		}
		rel, ok := index[name]
		if !ok {
			return fmt.Errorf("vmtest: module %s not found in %s (needed by %v)", name, modDir, chain)
		}
		state[name] = 1
		deps, err := moduleDepends(ctx, filepath.Join(modDir, rel))
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, rel)
		return nil
	}
	for _, n := range names {
		if err := visit(n, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func moduleDepends(ctx context.Context, path string) ([]string, error) {
	var data []byte
	var err error
	switch {
	case strings.HasSuffix(path, ".xz"):
		data, err = exec.CommandContext(ctx, "xz", "-dc", path).Output()
	case strings.HasSuffix(path, ".zst"):
		data, err = exec.CommandContext(ctx, "zstd", "-dcq", path).Output()
	default:
		data, err = readFileLimit(path, 256<<20)
	}
	if err != nil {
		return nil, fmt.Errorf("vmtest: read module %s: %w", path, err)
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("vmtest: module %s: %w", path, err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, nil
	}
	info, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("vmtest: module %s: .modinfo: %w", path, err)
	}
	for _, kv := range bytes.Split(info, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			if len(v) == 0 {
				return nil, nil
			}
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}
