package veritydev

import (
	"context"
	"strings"
	"testing"

	"github.com/intact-project/intact/dm"
	"github.com/intact-project/intact/internal/vmtest/guest"
	"github.com/intact-project/intact/pkcs7"
	"github.com/intact-project/intact/verity"
)

// TestTableOptionsInVM loads a verity table with each optional argument
// (and all compatible ones together, plus root_hash_sig_key_desc) and checks
// that the kernel accepts it and reports back exactly the table we loaded.
// FEC is not covered: it needs Reed-Solomon data this project does not make.
func TestTableOptionsInVM(t *testing.T) {
	requireVMRoot(t)
	im := newImage(t)
	var sig []byte
	if guest.SecureBoot() {
		keys := guest.RequireTrustedKeys(t)
		var err error
		if sig, err = loadKeyPair(t, keys.SignKey, keys.SignCert).Sign([]byte(im.rootHex()), pkcs7.SignOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ctl, err := dm.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	cases := []struct {
		name string
		o    verity.TableOptions
		want []string
	}{
		{"ignore_corruption", verity.TableOptions{OnCorruption: verity.CorruptionIgnore}, []string{"ignore_corruption"}},
		{"restart_on_corruption", verity.TableOptions{OnCorruption: verity.CorruptionRestart}, []string{"restart_on_corruption"}},
		{"panic_on_corruption", verity.TableOptions{OnCorruption: verity.CorruptionPanic}, []string{"panic_on_corruption"}},
		{"restart_on_error", verity.TableOptions{OnError: verity.ErrorRestart}, []string{"restart_on_error"}},
		{"panic_on_error", verity.TableOptions{OnError: verity.ErrorPanic}, []string{"panic_on_error"}},
		{"ignore_zero_blocks", verity.TableOptions{IgnoreZeroBlocks: true}, []string{"ignore_zero_blocks"}},
		{"check_at_most_once", verity.TableOptions{CheckAtMostOnce: true}, []string{"check_at_most_once"}},
		{"try_verify_in_tasklet", verity.TableOptions{TryVerifyInTasklet: true}, []string{"try_verify_in_tasklet"}},
		{"all", verity.TableOptions{OnCorruption: verity.CorruptionRestart, OnError: verity.ErrorRestart, IgnoreZeroBlocks: true,
			CheckAtMostOnce: true, TryVerifyInTasklet: true}, []string{"restart_on_corruption restart_on_error ignore_zero_blocks check_at_most_once try_verify_in_tasklet"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := Config{Name: "intact-opt-" + c.name, Data: im.data, Hash: im.hash, RootHash: im.root, Table: c.o, Signature: sig}
			d, err := OpenConfig(context.Background(), cfg)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer d.Close(context.Background())
			tbl, err := ctl.Table(cfg.Name)
			if err != nil || len(tbl) != 1 {
				t.Fatalf("table: %v %v", tbl, err)
			}
			if tbl[0].String() != d.Table {
				t.Errorf("kernel table\n %s\nloaded\n %s", tbl[0], d.Table)
			}
			for _, w := range c.want {
				if !strings.Contains(tbl[0].Params, w) {
					t.Errorf("kernel table lacks %q: %s", w, tbl[0].Params)
				}
			}
			if sig != nil && !strings.Contains(tbl[0].Params, "root_hash_sig_key_desc intact:veritydev-") {
				t.Errorf("signature key not in the table: %s", tbl[0].Params)
			}
			if err := readBlock(d.Path, 0); err != nil {
				t.Errorf("read: %v", err)
			}
		})
	}
}
