// Package veritydev opens dm-verity devices: it uses data and hash block
// devices (partitions) as they are and attaches data and hash files to
// read-only loop devices, hands an optional PKCS#7 root-hash
// signature to the kernel through a "user" key named in the table's
// root_hash_sig_key_desc, loads and resumes the verity table that package
// verity formats (the same table `veritysetup open` loads), and returns the
// /dev/dm-N node. Closing removes the dm device; the loop devices were
// attached with autoclear and go with it. Kernel interfaces: package dm
// (device-mapper ioctls), loop (LOOP_CONFIGURE), keyring (add_key).
package veritydev

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/intact-project/intact/dm"
	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/keyring"
	"github.com/intact-project/intact/loop"
	"github.com/intact-project/intact/pkcs7"
	"github.com/intact-project/intact/verity"
)

// Sentinel errors (the dm, loop and keyring errors underneath stay
// reachable with errors.Is/As).
var (
	// ErrSignatureRejected: the kernel refused the table because of its
	// root-hash signature (bad, untrusted, over another root hash) or
	// because it requires one (dm_verity.require_signatures=1): the table
	// load failed with EKEYREJECTED or ENOKEY. Any other failure of the
	// load (EINVAL for a table the target refuses, ...) is not this, with
	// or without a signature.
	ErrSignatureRejected = errors.New("veritydev: kernel refused the root-hash signature")
	ErrBadConfig         = errors.New("veritydev: bad configuration")
)

// Config describes a device to open.
type Config struct {
	Name string // device-mapper name (/dev/mapper/<Name>)
	Data string // data file or block device
	Hash string // hash file or block device; empty means Data (tree appended)
	// Params is the tree layout. Unless Params.NoSuperblock is set, the
	// superblock at Params.HashOffset of the hash file is read and its
	// parameters are used (as veritysetup open does); otherwise Params must
	// be complete, except DataBlocks, which defaults to the data size
	// divided by the data block size.
	Params    verity.Params
	RootHash  []byte
	Signature []byte // detached PKCS#7 (DER) over the lowercase hex root hash; nil for none
	Table     verity.TableOptions
	UUID      string // dm UUID; empty means "INTACT-VERITY-<name>"
	// SigKeyDesc is the description of the user key that carries the
	// signature (root_hash_sig_key_desc); empty means a random
	// "intact:veritydev-<hex>". An early-boot caller sets it: the random
	// one waits for the kernel's entropy pool.
	SigKeyDesc string
	Logger     *slog.Logger // nil discards
	// Deprecated: use Logger (the name every intact package uses).
	Log *slog.Logger
}

// Device is an open verity device.
type Device struct {
	Name   string
	Path   string // /dev/dm-N
	Table  string // the table line loaded
	Signed bool   // a root-hash signature was attached (and accepted by the kernel)
	Params verity.Params
	Info   dm.Info
}

// Open opens a verity device named name over data and hash (hash may be
// "" for a tree appended to data) with root hash rootHash and, if sig is
// not nil, its PKCS#7 signature.
func Open(ctx context.Context, name, data, hash string, p verity.Params, rootHash, sig []byte) (*Device, error) {
	return OpenConfig(ctx, Config{Name: name, Data: data, Hash: hash, Params: p, RootHash: rootHash, Signature: sig})
}

// OpenConfig opens a verity device as c describes. On failure nothing is
// left behind: no dm device, no loop device, no key.
func OpenConfig(ctx context.Context, c Config) (dev *Device, err error) {
	log := c.Logger
	if log == nil {
		log = c.Log
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if c.Hash == "" {
		c.Hash = c.Data
	}
	p, err := resolveParams(c)
	if err != nil {
		return nil, err
	}
	if len(c.RootHash) != p.DigestSize() {
		return nil, fmt.Errorf("%w: root hash of %d bytes, %s needs %d", ErrBadConfig, len(c.RootHash), p.Algorithm, p.DigestSize())
	}
	same := sameFile(c.Data, c.Hash)
	// Block devices (a partition of the boot disk) are used as they are;
	// files get read-only autoclear loop devices.
	dataDev, closeData, err := attach(ctx, c.Data)
	if err != nil {
		return nil, fmt.Errorf("veritydev: data: %w", err)
	}
	defer closeData() // autoclear: detached when the dm device lets go
	hashDev := dataDev
	if !same {
		var closeHash func()
		if hashDev, closeHash, err = attach(ctx, c.Hash); err != nil {
			return nil, fmt.Errorf("veritydev: hash: %w", err)
		}
		defer closeHash()
	}
	topts := c.Table
	var key keyring.ID
	// The signature key goes into the thread keyring and the table is
	// loaded from the same OS thread: dm-verity's constructor searches the
	// calling thread's keyrings, and the process keyring is no better in a
	// Go program because the kernel installs it in the credentials of the
	// thread that creates it only (other threads neither find nor possess
	// keys in it).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// What userspace can tell about the signer before the kernel answers.
	var diag error
	if c.Signature != nil {
		if diag = CheckSignature(c.Signature); diag != nil {
			log.Warn("veritydev: the kernel will likely refuse this signature", "err", diag)
		}
	}
	if c.Signature != nil {
		topts.RootHashSigKeyDesc = c.SigKeyDesc
		if topts.RootHashSigKeyDesc == "" {
			var rnd [8]byte
			rand.Read(rnd[:])
			topts.RootHashSigKeyDesc = "intact:veritydev-" + hex.EncodeToString(rnd[:])
		}
		if key, err = keyring.AddUser(topts.RootHashSigKeyDesc, c.Signature, keyring.Thread); err != nil {
			return nil, fmt.Errorf("veritydev: root-hash signature: %w", err)
		}
		defer func() {
			if uerr := keyring.Invalidate(key); uerr != nil {
				log.Warn("veritydev: could not invalidate the signature key", "key", key, "err", uerr)
			}
		}()
	}
	tgt, err := verity.Table(p, c.RootHash, dataDev, hashDev, topts)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	ctl, err := dm.Open()
	if err != nil {
		return nil, fmt.Errorf("veritydev: %w", err)
	}
	defer ctl.Close()
	uuid := c.UUID
	if uuid == "" {
		uuid = "INTACT-VERITY-" + c.Name
	}
	if _, err := ctl.Create(c.Name, uuid); err != nil {
		return nil, fmt.Errorf("veritydev: %w", err)
	}
	defer func() {
		if err != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if rerr := ctl.Remove(rctx, c.Name); rerr != nil {
				log.Warn("veritydev: cleanup failed", "device", c.Name, "err", rerr)
			}
		}
	}()
	log.Debug("veritydev: loading table", "name", c.Name, "table", tgt.String())
	if _, err = ctl.Load(c.Name, []dm.Target{{Start: tgt.Start, Length: tgt.Length, Type: tgt.Type, Params: tgt.Params}}, dm.LoadOptions{ReadOnly: true}); err != nil {
		if errors.Is(err, dm.ErrKeyRejected) {
			if diag != nil {
				return nil, fmt.Errorf("%w: %w (%v)", ErrSignatureRejected, err, diag)
			}
			return nil, fmt.Errorf("%w: %w", ErrSignatureRejected, err)
		}
		return nil, fmt.Errorf("veritydev: %w", err)
	}
	info, err := ctl.Resume(c.Name)
	if err != nil {
		return nil, fmt.Errorf("veritydev: %w", err)
	}
	d := &Device{Name: c.Name, Path: info.DevPath(), Table: tgt.String(), Signed: c.Signature != nil, Params: p, Info: info}
	if err = waitNode(ctx, d.Path); err != nil {
		return nil, err
	}
	return d, nil
}

// Close removes the device (the loop devices under it detach themselves).
func (d *Device) Close(ctx context.Context) error { return Close(ctx, d.Name) }

// Close removes the verity device called name.
func Close(ctx context.Context, name string) error {
	ctl, err := dm.Open()
	if err != nil {
		return fmt.Errorf("veritydev: %w", err)
	}
	defer ctl.Close()
	if err := ctl.Remove(ctx, name); err != nil {
		return fmt.Errorf("veritydev: %w", err)
	}
	return nil
}

func resolveParams(c Config) (verity.Params, error) {
	p, err := verity.ResolveParams(c.Params, c.Data, c.Hash)
	switch {
	case errors.Is(err, verity.ErrInvalidParams) || errors.Is(err, verity.ErrUnsupported):
		return p, fmt.Errorf("%w: %w", ErrBadConfig, err)
	case err != nil:
		return p, fmt.Errorf("veritydev: %w", err)
	}
	return p, nil
}

// attach returns the "major:minor" of path: the block device itself, or a
// read-only autoclear loop device over a file.
func attach(ctx context.Context, path string) (string, func(), error) {
	rdev, mode, err := linux.Stat(path)
	if err != nil {
		return "", nil, err
	}
	if mode&linux.S_IFMT == linux.S_IFBLK {
		return fmt.Sprintf("%d:%d", linux.Major(rdev), linux.Minor(rdev)), func() {}, nil
	}
	d, err := loop.Attach(ctx, path, loop.Options{ReadOnly: true, Autoclear: true, DirectIO: true})
	if err != nil {
		return "", nil, err
	}
	return d.DevNum(), func() { d.Close() }, nil
}

func sameFile(a, b string) bool {
	if a == b {
		return true
	}
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

// waitNode waits for devtmpfs to create the device node.
func waitNode(ctx context.Context, path string) error {
	for i := 0; ; i++ {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if i > 200 {
			return fmt.Errorf("veritydev: %s did not appear", filepath.Base(path))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// CheckSignature says what can be told from userspace, before the kernel
// is asked, about a root-hash signature the kernel would refuse whatever
// its keyrings hold: an unparsable message, or a signer certificate that
// Linux cannot link to its issuer (no authorityKeyIdentifier, as in a v1
// certificate from 'openssl x509 -req'; the kernel then answers ENOKEY
// unless that certificate's own key is trusted). nil means nothing is
// known to be wrong; only the kernel decides.
func CheckSignature(sig []byte) error {
	sd, err := pkcs7.Parse(sig)
	if err != nil {
		return fmt.Errorf("root-hash signature: %w", err)
	}
	if err := sd.CheckKernelSigners(); err != nil {
		return fmt.Errorf("root-hash signature: %w", err)
	}
	return nil
}
