package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/layer"
	"github.com/intact-project/intact/oci"
	"github.com/intact-project/intact/veritydev"
)

// verityExec builds an EROFS image holding this program (layer.ConvertDir,
// the tree appended), opens it as a dm-verity device without a signature
// ("none") or with a root-hash signature by a key it just made ("forged"),
// mounts it and runs the program from it: what root could do to bring its
// own code on a "verified" device.
func verityExec(mode string) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "verity-exec-")
	if err != nil {
		fail("mkdtemp", "", err, 1)
	}
	defer os.RemoveAll(dir)
	if err := os.MkdirAll(filepath.Join(dir, "src", "bin"), 0o755); err != nil {
		fail("mkdir", dir, err, 1)
	}
	copyFile("/proc/self/exe", filepath.Join(dir, "src", "bin", "ctrprobe"))
	img := filepath.Join(dir, "image")
	f, err := os.Create(img)
	if err != nil {
		fail("create", img, err, 1)
	}
	res, err := layer.ConvertDir(ctx, filepath.Join(dir, "src"), f, layer.Options{})
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		fail("convert", img, err, 1)
	}
	var sig []byte
	switch mode {
	case "none":
	case "forged":
		key, cert, err := selfSigned()
		if err != nil {
			fail("key", "forged", err, 1)
		}
		if sig, err = oci.SignRootHash(res.RootHashHex(), key, cert, nil); err != nil {
			fail("sign", "forged", err, 1)
		}
	default:
		fmt.Fprintln(os.Stderr, "ctrprobe verity-exec: none or forged")
		os.Exit(2)
	}
	// A container's /dev is a copy made at its start: devices created later
	// (the one about to be) appear only in devtmpfs, which privileged root
	// can mount.
	linux.Mount("devtmpfs", "/dev", "devtmpfs", 0, "")
	name := fmt.Sprintf("ctrprobe-%s-%d", mode, os.Getpid())
	dev, err := veritydev.OpenConfig(ctx, veritydev.Config{Name: name, Data: img, Params: res.Verity, RootHash: res.RootHash, Signature: sig})
	if err != nil {
		fail("dm-verity-open", mode, err, 1)
	}
	defer veritydev.Close(ctx, name)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	if err := linux.Mount(dev.Path, mnt, "erofs", linux.MS_RDONLY, ""); err != nil {
		fail("mount", dev.Path, err, 1)
	}
	defer linux.Unmount(mnt, linux.MNT_DETACH)
	prog := filepath.Join(mnt, "bin", "ctrprobe")
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(cctx, prog, "hello").CombinedOutput()
	if err != nil {
		var ee *exec.ExitError
		if !isExitError(err, &ee) {
			// exec refused: the kernel's errno is in err.
			fmt.Printf("exec %s (dm-verity %s, %s): %s (%v)\n", prog, mode, dev.Path, errnoName(err), err)
			linux.Unmount(mnt, linux.MNT_DETACH)
			veritydev.Close(ctx, name)
			os.RemoveAll(dir)
			os.Exit(126)
		}
	}
	ok("exec", prog, fmt.Sprintf("dm-verity %s on %s: %s", mode, dev.Path, strings.TrimSpace(string(out))))
}

func isExitError(err error, target **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	if ok {
		*target = e
	}
	return ok
}

// selfSigned makes an RSA key and a self-signed certificate for it (with a
// subject key identifier, so the kernel would look it up if it trusted it).
func selfSigned() (*rsa.PrivateKey, *x509.Certificate, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:   big.NewInt(time.Now().UnixNano()),
		Subject:        pkix.Name{CommonName: "ctrprobe forged signer"},
		NotBefore:      time.Now().Add(-time.Hour),
		NotAfter:       time.Now().Add(24 * time.Hour),
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		SubjectKeyId:   []byte("ctrprobe-forged"),
		AuthorityKeyId: []byte("ctrprobe-forged"),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return key, cert, err
}
