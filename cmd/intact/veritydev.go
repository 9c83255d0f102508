package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/intact-project/intact/dm"
	"github.com/intact-project/intact/verity"
	"github.com/intact-project/intact/veritydev"
	"github.com/spf13/cobra"
)

func init() {
	registerSub("verity", newVerityOpenCmd)
	registerSub("verity", newVerityCloseCmd)
}

// maxSignatureFile bounds --signature (a PKCS#7 root-hash signature is a
// few KiB; the kernel's user keys hold at most 32 KiB).
const maxSignatureFile = 32 << 10

type verityOpenInfo struct {
	Name      string `json:"name"`
	Device    string `json:"device"`
	Table     string `json:"table"`
	Signed    bool   `json:"signed"`
	RootHash  string `json:"root_hash"`
	DataBlock uint64 `json:"data_blocks"`
}

func newVerityOpenCmd(e *env) *cobra.Command {
	var lf layoutFlags
	var hashFile, sigFile string
	var o verity.TableOptions
	c := &cobra.Command{
		Use:   "open NAME DATA ROOT_HASH",
		Short: "Open a dm-verity device over DATA and print its /dev/dm-N path",
		Long: `Attach DATA (and the hash file) to read-only loop devices and create the
device-mapper verity device NAME with the table 'veritysetup open' would load,
then print the device node (/dev/dm-N). Every read of the device is checked
against ROOT_HASH; a block that does not match reads as an I/O error.

The tree is in --hash-file, or inside DATA at --hash-offset. Its parameters
come from the superblock, or from the flags with --no-superblock.

With --signature, the PKCS#7 signature of the root hash (over the lowercase
hex string, as 'intact verity sign' makes it) is handed to the kernel, which
verifies it against its trusted keyrings when the table is loaded: the
device is created only if the signature is valid. The loop devices detach
themselves when the device is closed ('intact verity close NAME').
Needs root and the dm-verity and loop kernel modules.`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			var sig []byte
			if sigFile != "" {
				var err error
				if sig, err = readLimited(sigFile, maxSignatureFile); err != nil {
					return fmt.Errorf("--signature: %w", err)
				}
				// Say what is wrong with the signer before the kernel
				// answers with a bare ENOKEY.
				if err := veritydev.CheckSignature(sig); err != nil {
					fmt.Fprintf(e.stderr, "intact: warning: %v\n", err)
				}
			}
			targs := []string{args[1], args[2]}
			if hashFile != "" {
				targs = []string{args[1], hashFile, args[2]}
			}
			ts, err := e.resolveTree(&lf, targs, true)
			if err != nil {
				return err
			}
			d, err := veritydev.OpenConfig(e.ctx, veritydev.Config{
				Name: name, Data: ts.dataPath, Hash: ts.hashPath, Params: ts.p, RootHash: ts.root,
				Signature: sig, Table: o, Logger: e.log,
			})
			if err != nil {
				if errors.Is(err, dm.ErrExists) {
					return fmt.Errorf("a device-mapper device named %q already exists", name)
				}
				if errors.Is(err, os.ErrPermission) && !errors.Is(err, veritydev.ErrSignatureRejected) {
					return fmt.Errorf("%w (needs root)", err)
				}
				return err
			}
			if e.json {
				return e.printJSON(verityOpenInfo{Name: d.Name, Device: d.Path, Table: d.Table, Signed: d.Signed,
					RootHash: verity.RootHashHex(ts.root), DataBlock: d.Params.DataBlocks})
			}
			fmt.Fprintln(e.stdout, d.Path)
			return nil
		},
	}
	f := c.Flags()
	lf.add(f, false)
	f.StringVar(&hashFile, "hash-file", "", "file with the hash tree (default: the tree is inside DATA at --hash-offset)")
	f.StringVar(&sigFile, "signature", "", "PKCS#7 (DER) signature of the root hash, checked by the kernel")
	f.BoolVar(&o.IgnoreZeroBlocks, "ignore-zero-blocks", false, "do not verify blocks that are all zeros")
	f.BoolVar(&o.CheckAtMostOnce, "check-at-most-once", false, "verify each data block only on its first read")
	return c
}

func newVerityCloseCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "close NAME",
		Short: "Remove a dm-verity device opened by 'intact verity open'",
		Long: `Remove the device-mapper device NAME. Its loop devices detach themselves.
A device that is still mounted or open cannot be removed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			err := veritydev.Close(e.ctx, args[0])
			switch {
			case errors.Is(err, dm.ErrNotFound):
				return fmt.Errorf("no device-mapper device named %q", args[0])
			case errors.Is(err, dm.ErrBusy):
				return fmt.Errorf("device %q is in use (mounted or open); unmount it first", args[0])
			case errors.Is(err, dm.ErrNotSupported):
				return fmt.Errorf("device-mapper is not available: %w", err)
			}
			return err
		},
	}
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s has %d bytes, more than the %d a signature may have", path, st.Size(), limit)
	}
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil {
		return nil, err
	}
	return b, nil
}
