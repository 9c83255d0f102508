package veritydev

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/intact-project/intact/internal/vmtest/guest"
	"github.com/intact-project/intact/layer"
	"github.com/intact-project/intact/pkcs7"
)

// TestLayerConvertOpensInVM: an OCI layer converted by package layer (both
// profiles: EROFS + tree appended, no superblock) opens through our verity
// device with a root-hash signature by the enrolled CA's leaf, mounts from
// /dev/dm-N, and every file reads back.
func TestLayerConvertOpensInVM(t *testing.T) {
	requireVMRoot(t)
	keys := guest.RequireTrustedKeys(t)
	signer := loadKeyPair(t, keys.SignKey, keys.SignCert)
	files := map[string][]byte{}
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "usr/", Mode: 0o755})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "usr/bin/", Mode: 0o755})
	for i, n := range []int{0, 1, 511, 512, 513, 4096, 70000, 1 << 20} {
		name := fmt.Sprintf("usr/bin/f%d", i)
		b := randBytes(t, n)
		files[name] = b
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o755, Size: int64(n)})
		tw.Write(b)
	}
	tw.Close()
	for _, prof := range []layer.Profile{layer.ProfileFull, layer.ProfileTarIndex} {
		t.Run(string(prof), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "layer.img")
			f, err := os.Create(out)
			if err != nil {
				t.Fatal(err)
			}
			res, err := layer.Convert(context.Background(), bytes.NewReader(tarBuf.Bytes()), f, layer.Options{Profile: prof})
			f.Close()
			if err != nil {
				t.Fatalf("convert: %v", err)
			}
			sig, err := signer.Sign([]byte(res.RootHashHex()), pkcs7.SignOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			d, err := OpenConfig(ctx, Config{Name: "intact-layer-" + string(prof), Data: out, Params: res.Verity, RootHash: res.RootHash, Signature: sig})
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			t.Cleanup(func() { d.Close(context.Background()) })
			if !d.Signed {
				t.Error("not marked signed")
			}
			checkFiles(t, mount(t, d.Path), files, "")
		})
	}
}
