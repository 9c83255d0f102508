package vmassets

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckKernelConfig(t *testing.T) {
	var full []string
	for _, r := range requiredConfig {
		full = append(full, r.name+"="+r.ok[0])
	}
	full = append(full, `CONFIG_LSM="landlock,lockdown,yama,integrity,bpf,ipe"`, "CONFIG_MODULE_COMPRESS_XZ=y", "CONFIG_MODULE_DECOMPRESS=y")
	write := func(lines []string) string {
		p := filepath.Join(t.TempDir(), "config")
		os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n# CONFIG_FOO is not set\n"), 0o644)
		return p
	}
	if err := CheckKernelConfig(write(full)); err != nil {
		t.Fatalf("complete config: %v", err)
	}
	for _, c := range []struct{ drop, replace, want string }{
		{"CONFIG_DM_VERITY=", "", "CONFIG_DM_VERITY=not set"},
		{"CONFIG_LSM=", `CONFIG_LSM="landlock,lockdown"`, "need ipe"},
		{"CONFIG_DM_VERITY_VERIFY_ROOTHASH_SIG_PLATFORM_KEYRING=", "CONFIG_DM_VERITY_VERIFY_ROOTHASH_SIG_PLATFORM_KEYRING=m", "platform keyring"},
	} {
		var lines []string
		for _, l := range full {
			if strings.HasPrefix(l, c.drop) {
				if c.replace != "" {
					lines = append(lines, c.replace)
				}
				continue
			}
			lines = append(lines, l)
		}
		err := CheckKernelConfig(write(lines))
		if !errors.Is(err, ErrKernelConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("without %s: %v (want %q)", c.drop, err, c.want)
		}
	}
	if err := CheckKernelConfig(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, ErrKernelConfig) {
		t.Errorf("missing file: %v", err)
	}
}
