package veritydev

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/intact-project/intact/dm"
	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/internal/vmtest/guest"
	"github.com/intact-project/intact/keyring"
	"github.com/intact-project/intact/pkcs7"
	"github.com/intact-project/intact/verity"
)

// image is an EROFS image (made by mkfs.erofs from random files) with a
// dm-verity tree built by package verity in a separate hash file.
type image struct {
	dir, data, hash string
	files           map[string][]byte // relative path -> content
	params          verity.Params
	layout          verity.Layout
	root            []byte
}

func (im *image) rootHex() string { return verity.RootHashHex(im.root) }

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// newImage writes ~2.5 MiB of random files, makes an EROFS image of them and
// its verity tree (superblock at offset 0 of the hash file, random salt).
func newImage(t *testing.T) *image {
	t.Helper()
	mkfs := testutil.RequireTool(t, "mkfs.erofs")
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	im := &image{dir: dir, data: filepath.Join(dir, "erofs.img"), hash: filepath.Join(dir, "erofs.hash"), files: map[string][]byte{}}
	sizes := []int{0, 1, 100, 4095, 4096, 4097, 65536, 300000, 1 << 20, 1<<20 + 12345, 7}
	for i, n := range sizes {
		rel := fmt.Sprintf("d%d/f%02d.bin", i%3, i)
		p := filepath.Join(src, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b := randBytes(t, n)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		im.files[rel] = b
	}
	if out, err := exec.Command(mkfs, "-T0", im.data, src).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.erofs: %v\n%s", err, out)
	}
	p := verity.DefaultParams()
	p.Salt = randBytes(t, 32)
	df, err := os.Open(im.data)
	if err != nil {
		t.Fatal(err)
	}
	defer df.Close()
	st, err := df.Stat()
	if err != nil {
		t.Fatal(err)
	}
	p.DataBlocks = uint64(st.Size()) / 4096
	hf, err := os.Create(im.hash)
	if err != nil {
		t.Fatal(err)
	}
	defer hf.Close()
	res, err := verity.Format(context.Background(), df, p, hf, nil)
	if err != nil {
		t.Fatalf("verity.Format: %v", err)
	}
	im.params, im.layout, im.root = res.Params, res.Layout, res.RootHash
	if im.layout.Levels < 2 || im.layout.LevelBlocks[0] < 2 {
		t.Fatalf("image too small for the tree tests: %+v", im.layout)
	}
	return im
}

// copyImage returns a copy of the image's files for tests that corrupt them.
func (im *image) copy(t *testing.T) *image {
	t.Helper()
	c := *im
	c.dir = t.TempDir()
	c.data, c.hash = filepath.Join(c.dir, "erofs.img"), filepath.Join(c.dir, "erofs.hash")
	for _, f := range [][2]string{{im.data, c.data}, {im.hash, c.hash}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1], b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return &c
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func open(t *testing.T, name string, im *image, root, sig []byte) (*Device, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := OpenConfig(ctx, Config{Name: name, Data: im.data, Hash: im.hash, Params: verity.Params{}, RootHash: root, Signature: sig})
	if err == nil {
		t.Cleanup(func() {
			if err := d.Close(context.Background()); err != nil && !errors.Is(err, dm.ErrNotFound) {
				t.Errorf("close %s: %v", name, err)
			}
		})
	}
	return d, err
}

func mount(t *testing.T, dev string) string {
	t.Helper()
	mnt := t.TempDir()
	if err := linux.Mount(dev, mnt, "erofs", linux.MS_RDONLY, ""); err != nil {
		t.Fatalf("mount %s: %v", dev, err)
	}
	t.Cleanup(func() {
		if err := linux.Unmount(mnt, 0); err != nil {
			t.Errorf("umount: %v", err)
		}
	})
	return mnt
}

func requireVMRoot(t *testing.T) {
	t.Helper()
	testutil.RequireVM(t)
	testutil.RequireRoot(t)
}

// TestOpenErofsInVM: an EROFS image opens through our dm-verity device,
// mounts from /dev/dm-N and every file reads back; the kernel's table and
// status are what we loaded, and they match what `veritysetup open` loads
// for the same files; veritysetup opens and verifies our tree too.
func TestOpenErofsInVM(t *testing.T) {
	requireVMRoot(t)
	im := newImage(t)
	d, err := open(t, "intact-ok", im, im.root, nil)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if !regexp.MustCompile(`^/dev/dm-\d+$`).MatchString(d.Path) {
		t.Fatalf("device path %q", d.Path)
	}
	mnt := mount(t, d.Path)
	checkFiles(t, mnt, im.files, "")

	ctl, err := dm.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	tbl, err := ctl.Table("intact-ok")
	if err != nil || len(tbl) != 1 {
		t.Fatalf("table: %v %v", tbl, err)
	}
	if got := tbl[0].String(); got != d.Table {
		t.Errorf("kernel table\n %s\nloaded\n %s", got, d.Table)
	}
	st, err := ctl.Status("intact-ok")
	if err != nil || len(st) != 1 || !strings.HasPrefix(st[0].Params, "V") {
		t.Errorf("status after reading every file: %v %v (want V)", st, err)
	}
	info, err := ctl.Info("intact-ok")
	if err != nil || !info.ReadOnly || !info.ActivePresent || info.Suspended {
		t.Errorf("info: %+v %v", info, err)
	}
	if out, err := exec.Command(testutil.RequireTool(t, "dmsetup"), "table", "intact-ok").Output(); err != nil || strings.TrimSpace(string(out)) != d.Table {
		t.Errorf("dmsetup table: %q %v, want %q", out, err, d.Table)
	}

	// veritysetup opens the same files: same table but for the device
	// numbers of its own loop devices.
	vs := testutil.RequireTool(t, "veritysetup")
	if out, err := exec.Command(vs, "open", im.data, "vs-ok", im.hash, im.rootHex()).CombinedOutput(); err != nil {
		t.Fatalf("veritysetup open: %v\n%s", err, out)
	}
	t.Cleanup(func() { // after the unmount below (cleanups run last-in first-out)
		if out, err := exec.Command(vs, "close", "vs-ok").CombinedOutput(); err != nil {
			t.Errorf("veritysetup close: %v: %s", err, out)
		}
	})
	vtbl, err := ctl.Table("vs-ok")
	if err != nil || len(vtbl) != 1 {
		t.Fatalf("veritysetup's table: %v %v", vtbl, err)
	}
	if a, b := normDevs(vtbl[0].String()), normDevs(d.Table); a != b {
		t.Errorf("tables differ beyond device numbers:\nveritysetup %s\nintact      %s", vtbl[0], d.Table)
	}
	vmnt := mount(t, "/dev/mapper/vs-ok")
	checkFiles(t, vmnt, im.files, "")
	if out, err := exec.Command(vs, "verify", im.data, im.hash, im.rootHex()).CombinedOutput(); err != nil {
		t.Errorf("veritysetup verify of our tree: %v\n%s", err, out)
	}
}

var devField = regexp.MustCompile(`\b\d+:\d+\b`)

func normDevs(s string) string { return devField.ReplaceAllString(s, "M:m") }

// checkFiles reads every file under mnt; failing (relative path) must fail
// with EIO, every other file must read back exactly.
func checkFiles(t *testing.T, mnt string, files map[string][]byte, failing string) {
	t.Helper()
	for rel, want := range files {
		got, err := os.ReadFile(filepath.Join(mnt, rel))
		if rel == failing {
			if !errors.Is(err, linux.EIO) {
				t.Errorf("%s: read of the corrupted file gave err %v, want EIO", rel, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", rel, err)
		} else if !bytes.Equal(got, want) {
			t.Errorf("%s: content differs", rel)
		}
	}
}

// victim picks the 1 MiB file, locates its first data block in the image
// and returns the block's index.
func (im *image) victim(t *testing.T) (string, int64) {
	t.Helper()
	img, err := os.ReadFile(im.data)
	if err != nil {
		t.Fatal(err)
	}
	for rel, b := range im.files {
		if len(b) == 1<<20 {
			off := bytes.Index(img, b[:4096])
			if off < 0 || off%4096 != 0 {
				t.Fatalf("file %s not stored block-aligned in the image (offset %d)", rel, off)
			}
			return rel, int64(off / 4096)
		}
	}
	t.Fatal("no victim file")
	return "", 0
}

func readBlock(dev string, block int64) error {
	f, err := os.Open(dev)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.ReadAt(make([]byte, 4096), block*4096)
	return err
}

// TestCorruptDataBlockInVM: one flipped byte in the data area makes reads
// of that block (and the file on it) fail with EIO while other files read.
func TestCorruptDataBlockInVM(t *testing.T) {
	requireVMRoot(t)
	im := newImage(t).copy(t)
	victim, block := im.victim(t)
	flipByte(t, im.data, block*4096+1234)
	d, err := open(t, "intact-baddata", im, im.root, nil)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if err := readBlock(d.Path, block); !errors.Is(err, linux.EIO) {
		t.Errorf("read of the corrupted block %d: %v, want EIO", block, err)
	}
	if err := readBlock(d.Path, 0); err != nil {
		t.Errorf("read of block 0: %v", err)
	}
	mnt := mount(t, d.Path)
	checkFiles(t, mnt, im.files, victim)
	checkCorruptStatus(t, "intact-baddata")
}

func checkCorruptStatus(t *testing.T, name string) {
	t.Helper()
	ctl, err := dm.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	st, err := ctl.Status(name)
	if err != nil || len(st) != 1 || !strings.HasPrefix(st[0].Params, "C") {
		t.Errorf("status after corruption: %v %v (want C)", st, err)
	}
}

// TestCorruptTreeInVM: a flipped byte in one level-0 hash block fails
// exactly the data blocks that hash block covers (and the files stored in
// them); every other block and file still reads.
func TestCorruptTreeInVM(t *testing.T) {
	requireVMRoot(t)
	im := newImage(t).copy(t)
	victim, block := im.victim(t)
	l := im.layout
	hpb := int64(l.HashesPerBlock())
	k := block / hpb // the level-0 hash block covering the victim
	flipByte(t, im.hash, (int64(l.LevelStart[0])+k)*4096+(block%hpb)*int64(l.DigestSlot)+3)
	d, err := open(t, "intact-badtree", im, im.root, nil)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	lo, hi := k*hpb, min((k+1)*hpb, int64(im.params.DataBlocks))
	for b := int64(0); b < int64(im.params.DataBlocks); b++ {
		err := readBlock(d.Path, b)
		if in := b >= lo && b < hi; in && !errors.Is(err, linux.EIO) {
			t.Errorf("block %d (covered by the corrupted hash block): %v, want EIO", b, err)
		} else if !in && err != nil {
			t.Errorf("block %d (not covered): %v", b, err)
		}
	}
	img, err := os.ReadFile(im.data)
	if err != nil {
		t.Fatal(err)
	}
	mnt := mount(t, d.Path)
	good := 0
	for rel, want := range im.files {
		if len(want) < 4096 {
			continue // tail-packed into metadata blocks; located above by block reads
		}
		off := int64(bytes.Index(img, want[:4096]))
		first, last := off/4096, (off+int64(len(want))-1)/4096
		hit := first < hi && last >= lo
		got, err := os.ReadFile(filepath.Join(mnt, rel))
		switch {
		case rel == victim && !hit:
			t.Fatalf("victim %s not in the corrupted range", rel)
		case hit && !errors.Is(err, linux.EIO):
			t.Errorf("%s (blocks %d-%d overlap %d-%d): %v, want EIO", rel, first, last, lo, hi-1, err)
		case !hit && (err != nil || !bytes.Equal(got, want)):
			t.Errorf("%s (blocks %d-%d, outside): %v", rel, first, last, err)
		case !hit:
			good++
		}
	}
	if good == 0 {
		t.Error("no file outside the corrupted range was checked")
	}
}

// TestWrongRootHashInVM: with a root hash that is not the tree's, the
// device opens (the kernel checks lazily) but no block reads.
func TestWrongRootHashInVM(t *testing.T) {
	requireVMRoot(t)
	im := newImage(t)
	wrong := bytes.Clone(im.root)
	wrong[0] ^= 1
	d, err := open(t, "intact-wrongroot", im, wrong, nil)
	if err != nil {
		t.Logf("the kernel refused the table: %v", err)
		return
	}
	nblocks := int64(im.params.DataBlocks)
	for _, b := range []int64{0, 1, nblocks / 2, nblocks - 1} {
		if err := readBlock(d.Path, b); !errors.Is(err, linux.EIO) {
			t.Errorf("block %d with a wrong root hash: %v, want EIO", b, err)
		}
	}
	if err := linux.Mount(d.Path, t.TempDir(), "erofs", linux.MS_RDONLY, ""); err == nil {
		t.Error("mounting a device with a wrong root hash succeeded")
	}
}

func loadKeyPair(t *testing.T, keyPath, certPath string) *pkcs7.Signer {
	t.Helper()
	s, err := pkcs7.LoadSigner(keyPath, certPath)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRootHashSignaturesInVM checks what the kernel accepts as a root-hash
// signature (platform keyring = the db CA of the Secure Boot VM) and that
// our userspace verification (pkcs7.Verify against that CA) agrees.
func TestRootHashSignaturesInVM(t *testing.T) {
	requireVMRoot(t)
	keys := guest.RequireTrustedKeys(t)
	im := newImage(t)
	trusted := loadKeyPair(t, keys.SignKey, keys.SignCert)
	untrusted := loadKeyPair(t, keys.UntrustedKey, keys.UntrustedCert)
	roots, err := pkcs7.LoadCertPool(keys.CACert)
	if err != nil {
		t.Fatal(err)
	}
	rootHex := []byte(im.rootHex())
	otherHex := []byte(strings.Repeat("ab", len(im.root)))
	mustSign := func(s *pkcs7.Signer, content []byte, o pkcs7.SignOptions) []byte {
		sig, err := s.Sign(content, o)
		if err != nil {
			t.Fatal(err)
		}
		return sig
	}
	openssl := testutil.RequireTool(t, "openssl")
	withAttrs := func() []byte { // openssl cms signs with signed attributes by default
		in := filepath.Join(t.TempDir(), "roothash")
		os.WriteFile(in, rootHex, 0o644)
		out, err := exec.Command(openssl, "cms", "-sign", "-binary", "-in", in, "-signer", keys.SignCert, "-inkey", keys.SignKey,
			"-outform", "DER", "-md", "sha256").Output()
		if err != nil {
			t.Fatalf("openssl cms -sign: %v", err)
		}
		return out
	}
	// A leaf under the trusted CA made by 'openssl x509 -req' without an
	// extension file: version 1, no authorityKeyIdentifier.
	v1Leaf := func() []byte {
		dir := t.TempDir()
		key, csr, cert := filepath.Join(dir, "v1.key"), filepath.Join(dir, "v1.csr"), filepath.Join(dir, "v1.pem")
		for _, args := range [][]string{
			{"req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=v1 leaf"},
			{"x509", "-req", "-in", csr, "-CA", keys.CACert, "-CAkey", keys.CAKey, "-set_serial", "77", "-days", "2", "-out", cert},
		} {
			if out, err := exec.Command(openssl, args...).CombinedOutput(); err != nil {
				t.Fatalf("openssl %v: %v\n%s", args, err, out)
			}
		}
		return mustSign(loadKeyPair(t, key, cert), rootHex, pkcs7.SignOptions{})
	}
	cases := []struct {
		name   string
		sig    []byte
		accept *bool // nil: record only
	}{
		{"trusted", mustSign(trusted, rootHex, pkcs7.SignOptions{}), ptr(true)},
		{"untrusted-key", mustSign(untrusted, rootHex, pkcs7.SignOptions{}), ptr(false)},
		{"other-root-hash", mustSign(trusted, otherHex, pkcs7.SignOptions{}), ptr(false)},
		{"uppercase-hex", mustSign(trusted, []byte(strings.ToUpper(string(rootHex))), pkcs7.SignOptions{}), ptr(false)},
		{"signed-attributes", withAttrs(), nil},
		{"no-signer-cert", mustSign(trusted, rootHex, pkcs7.SignOptions{NoCerts: true}), nil},
		{"v1-leaf-without-akid", v1Leaf(), ptr(false)},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name := fmt.Sprintf("intact-sig%d", i)
			d, err := open(t, name, im, im.root, c.sig)
			accepted := err == nil
			_, uerr := pkcs7.Verify(c.sig, pkcs7.VerifyOptions{Roots: roots, Content: rootHex})
			t.Logf("KERNEL-RESULT %s: accepted=%v err=%v; userspace pkcs7.Verify: %v", c.name, accepted, err, uerr)
			if accepted {
				if !d.Signed || !strings.Contains(d.Table, "root_hash_sig_key_desc") {
					t.Errorf("signed device: Signed=%v table %q", d.Signed, d.Table)
				}
				checkFiles(t, mount(t, d.Path), im.files, "")
			} else if !errors.Is(err, ErrSignatureRejected) {
				t.Errorf("refusal is not ErrSignatureRejected: %v", err)
			}
			if c.name == "v1-leaf-without-akid" && (!errors.Is(err, linux.ENOKEY) || !strings.Contains(fmt.Sprint(err), "authorityKeyIdentifier")) {
				t.Errorf("v1 leaf: %v; want ENOKEY explained by the missing authorityKeyIdentifier", err)
			}
			if c.accept != nil && accepted != *c.accept {
				t.Errorf("kernel accepted=%v, want %v (err %v)", accepted, *c.accept, err)
			}
			if (uerr == nil) != accepted {
				t.Errorf("userspace verification disagrees with the kernel: kernel accepted=%v, pkcs7.Verify err=%v", accepted, uerr)
			}
		})
	}
	// No key of the test PKI may be left in our keyrings.
	// (Invalidated keys, flag 'i', are only waiting for the key GC.)
	pk, err := keyring.ProcKeys()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range pk {
		if strings.HasPrefix(k.Description, "intact:veritydev-") && !strings.Contains(k.Flags, "i") {
			t.Errorf("signature key left behind: %+v", k)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestLoadFailureIsNotSignatureInVM: a table the kernel refuses for another
// reason (devices smaller than the table says) is not reported as a
// rejected signature, although a valid signature was given: only ENOKEY and
// EKEYREJECTED are.
func TestLoadFailureIsNotSignatureInVM(t *testing.T) {
	requireVMRoot(t)
	keys := guest.RequireTrustedKeys(t)
	im := newImage(t)
	sig, err := loadKeyPair(t, keys.SignKey, keys.SignCert).Sign([]byte(im.rootHex()), pkcs7.SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := im.params
	p.NoSuperblock = true
	p.DataBlocks *= 4 // past the end of the data device
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := OpenConfig(ctx, Config{Name: "intact-toolarge", Data: im.data, Hash: im.hash, Params: p, RootHash: im.root, Signature: sig})
	if err == nil {
		d.Close(context.Background())
		t.Fatal("the kernel accepted a table larger than its data device")
	}
	t.Logf("KERNEL-RESULT data device too small, signed: %v", err)
	if errors.Is(err, ErrSignatureRejected) || errors.Is(err, dm.ErrKeyRejected) {
		t.Errorf("reported as a signature problem: %v", err)
	}
	// Linux 6.12 answers E2BIG (verity_ctr: the device is too small for
	// the hash area the table describes).
	if !errors.Is(err, linux.E2BIG) {
		t.Errorf("%v; want the kernel's E2BIG", err)
	}
}

// TestRequireSignaturesInVM reloads dm-verity with require_signatures=1 (what
// dm_verity.require_signatures=1 on the kernel command line sets for the
// module) and checks that an unsigned table is refused and a signed one
// still opens.
func TestRequireSignaturesInVM(t *testing.T) {
	requireVMRoot(t)
	keys := guest.RequireTrustedKeys(t)
	im := newImage(t)
	ko, err := filepath.Glob("/intact/modules/kernel/drivers/md/dm-verity.ko*")
	if err != nil || len(ko) != 1 {
		t.Fatalf("dm-verity module in the initramfs: %v %v", ko, err)
	}
	reload := func(params string) {
		t.Helper()
		var err error
		for i := 0; i < 50; i++ { // devices closed a moment ago may still pin the module
			if err = linux.DeleteModule("dm_verity"); !errors.Is(err, linux.EAGAIN) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("unload dm_verity: %v", err)
		}
		f, err := os.Open(ko[0])
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := linux.FinitModule(f, params, linux.ModuleInitCompressedFile); err != nil {
			t.Fatalf("load dm_verity %s: %v", params, err)
		}
	}
	reload("require_signatures=1")
	t.Cleanup(func() { reload("") }) // after the devices below are unmounted and removed
	if b, err := os.ReadFile("/sys/module/dm_verity/parameters/require_signatures"); err == nil {
		t.Logf("require_signatures=%s", bytes.TrimSpace(b))
	}
	_, err = open(t, "intact-unsigned-required", im, im.root, nil)
	if err == nil {
		t.Fatal("unsigned table accepted with require_signatures=1")
	}
	t.Logf("KERNEL-RESULT unsigned with require_signatures=1: %v", err)
	sig, err := loadKeyPair(t, keys.SignKey, keys.SignCert).Sign([]byte(im.rootHex()), pkcs7.SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := open(t, "intact-signed-required", im, im.root, sig)
	if err != nil {
		t.Fatalf("signed table with require_signatures=1: %v", err)
	}
	mnt := mount(t, d.Path)
	checkFiles(t, mnt, im.files, "")
	if err := d.Close(context.Background()); !errors.Is(err, dm.ErrBusy) {
		t.Errorf("closing a mounted device: %v, want ErrBusy", err)
	}
}

// TestOpenCleansUpOnFailureInVM: a refused table leaves no dm device, loop
// device or key behind.
func TestOpenCleansUpOnFailureInVM(t *testing.T) {
	requireVMRoot(t)
	im := newImage(t)
	before := loopsInUse(t)
	garbage := []byte("not a pkcs7 signature")
	if _, err := open(t, "intact-garbage", im, im.root, garbage); err == nil {
		t.Fatal("garbage signature accepted")
	}
	ctl, err := dm.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	if _, err := ctl.Info("intact-garbage"); !errors.Is(err, dm.ErrNotFound) {
		t.Errorf("dm device left behind: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	if after := loopsInUse(t); after > before {
		t.Errorf("loop devices in use: %d before, %d after", before, after)
	}
}

func loopsInUse(t *testing.T) int {
	n := 0
	filepath.WalkDir("/sys/block", func(p string, d fs.DirEntry, err error) error {
		if strings.HasPrefix(d.Name(), "loop") {
			if b, err := os.ReadFile(filepath.Join(p, "loop", "backing_file")); err == nil && len(b) > 0 {
				n++
			}
		}
		return nil
	})
	return n
}
