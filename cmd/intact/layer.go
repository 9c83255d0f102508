package main

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/intact-project/intact/erofs"
	"github.com/intact-project/intact/internal/atomicfile"
	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/layer"
	"github.com/intact-project/intact/verity"
)

func init() { register(newLayerCmd) }

func newLayerCmd(e *env) *cobra.Command {
	g := &cobra.Command{
		Use:   "layer",
		Short: "Convert OCI layers to dm-verity protected EROFS images and inspect them",
		Long: `Convert an OCI layer blob (tar, tar+gzip or tar+zstd, detected from the bytes)
into an EROFS image with its dm-verity hash tree appended, in one streaming pass,
and check, list and inspect such images. Profiles (docs/formats.md):

  full       self-contained EROFS (4 KiB blocks, data copied in);
             dm-verity sha256 4096/4096, fixed salt, tree appended
  tar-index  EROFS metadata (512-byte blocks) ‖ the decompressed tar ‖ zeros
             to 4 KiB; dm-verity sha256 512/512, 32 zero-byte salt
             (Azure Linux / containerd interop)`,
		Args: cobra.NoArgs,
	}
	g.AddCommand(newLayerConvertCmd(e), newLayerVerifyCmd(e), newLayerLsCmd(e), newLayerInspectCmd(e))
	return g
}

// parseSize parses a byte count with an optional K/M/G/T suffix (powers of
// 1024; "KiB", "MB" and friends are accepted as the same).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	u := strings.ToUpper(t)
	for _, suf := range []struct {
		s string
		m int64
	}{{"TIB", 1 << 40}, {"GIB", 1 << 30}, {"MIB", 1 << 20}, {"KIB", 1 << 10}, {"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(u, suf.s) {
			mult = suf.m
			t = strings.TrimSpace(t[:len(t)-len(suf.s)])
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q (want a positive number with an optional K, M, G or T suffix)", s)
	}
	return n * mult, nil
}

type convertJSON struct {
	Output        string `json:"output,omitempty"`
	Profile       string `json:"profile"`
	RootHash      string `json:"root_hash"`
	HashOffset    int64  `json:"hash_offset"`
	DataBlocks    uint64 `json:"data_blocks"`
	DataBlockSize uint32 `json:"data_block_size"`
	HashBlockSize uint32 `json:"hash_block_size"`
	HashAlgorithm string `json:"hash_algorithm"`
	Salt          string `json:"salt"`
	DiffID        string `json:"diff_id"`
	Digest        string `json:"digest"`
	Compression   string `json:"compression"`
	TarSize       int64  `json:"tar_size"`
	Entries       int    `json:"entries"`
	Inodes        uint64 `json:"inodes"`
	TreeSize      int64  `json:"tree_size"`
	MetadataSize  int64  `json:"metadata_size"`
	UUID          string `json:"uuid"`
	VerityUUID    string `json:"verity_uuid,omitempty"`
	HashOutput    string `json:"hash_output,omitempty"`
	MetadataOut   string `json:"metadata_output,omitempty"`
}

func newLayerConvertCmd(e *env) *cobra.Command {
	var (
		output, profile, hashOutput, metaOutput, maxSize, tmpDir string
		maxEntries                                               int
	)
	c := &cobra.Command{
		Use:   "convert INPUT -o OUTPUT [--profile full|tar-index]",
		Short: "Convert a layer blob (tar, gzip, zstd; '-' for stdin) to EROFS + dm-verity",
		Long: `Convert the layer blob INPUT ('-' reads stdin) into OUTPUT: the EROFS data
device followed by the dm-verity hash tree at hash_offset (no verity superblock
inside OUTPUT). The conversion is one streaming pass and deterministic: the
same input gives the same bytes on any machine.

With --json, stdout is one JSON object: root_hash, hash_offset, data_blocks,
data_block_size, hash_block_size, hash_algorithm, salt, profile, diff_id
(sha256 of the uncompressed tar), digest (sha256 of the input), compression,
metadata_size, uuid (the EROFS UUID), and for tar-index verity_uuid.

tar-index only: --hash-output F writes the tree as a separate file with a
veritysetup superblock at offset 0 (veritysetup verify/open accept it with the
data device); --metadata-output F writes the EROFS metadata blob. Without -o,
one or both of them are the only outputs: no data device is written (the
decompressed tar is hashed as it streams and never touches the disk), which
is what a publisher of the metadata and tree needs; the root hash and the
JSON fields are the same as with -o.

Hostile input (paths escaping with "..", entries below a symlink, hardlinks to
missing entries, names over 255 bytes, truncated or corrupt streams, more than
--max-size uncompressed bytes or --max-entries members) fails with one error
and leaves no output file.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output == "" && hashOutput == "" && metaOutput == "" {
				return usagef("missing -o OUTPUT (or, with --profile tar-index, --metadata-output and --hash-output)")
			}
			if cmd.Flags().Changed("tmpdir") {
				fmt.Fprintln(e.stderr, "intact: --tmpdir is deprecated, use --tmp-dir")
			}
			prof, err := layer.ParseProfile(profile)
			if err != nil {
				return usagef("--profile: %v", err)
			}
			if (hashOutput != "" || metaOutput != "") && prof != layer.ProfileTarIndex {
				return usagef("--hash-output and --metadata-output need --profile tar-index")
			}
			if (output != "" && (output == hashOutput || output == metaOutput)) || (hashOutput != "" && hashOutput == metaOutput) {
				return usagef("-o, --hash-output and --metadata-output must name different files")
			}
			limit, err := parseSize(maxSize)
			if err != nil {
				return usagef("--max-size: %v", err)
			}
			if maxEntries <= 0 {
				return usagef("--max-entries must be positive, not %d", maxEntries)
			}
			var in io.Reader
			if args[0] == "-" {
				in = e.stdin
			} else {
				f, err := os.Open(args[0])
				if err != nil {
					return fmt.Errorf("input: %w", err)
				}
				defer f.Close()
				if st, err := f.Stat(); err == nil && st.IsDir() {
					return fmt.Errorf("input %s is a directory, not a layer blob", args[0])
				}
				in = f
			}
			// The data device (nil without -o: metadata and tree only).
			var dst layer.Output
			var out *atomicfile.File
			if output != "" {
				if out, err = atomicfile.Create(output, 0o644); err != nil {
					return err
				}
				defer out.Abort()
				dst = out
			}
			if tmpDir == "" {
				for _, o := range []string{metaOutput, hashOutput, output} {
					if o != "" {
						tmpDir = path.Dir(o)
					}
				}
			}
			// Commit fsyncs the outputs: start writing them back early.
			opts := layer.Options{Profile: prof, MaxSize: limit, MaxEntries: maxEntries, TempDir: tmpDir, StartWriteback: true, Logger: e.log}
			var hf, mf *atomicfile.File
			if hashOutput != "" {
				if hf, err = atomicfile.Create(hashOutput, 0o644); err != nil {
					return err
				}
				defer hf.Abort()
				opts.HashOutput = hf
			}
			if metaOutput != "" {
				if mf, err = atomicfile.Create(metaOutput, 0o644); err != nil {
					return err
				}
				defer mf.Abort()
				opts.MetadataOutput = mf
			}
			progress := !e.quiet && isTerminal(e.stderr)
			start := time.Now()
			if progress {
				opts.Progress = func(n int64) {
					fmt.Fprintf(e.stderr, "\rconverting: %d MiB uncompressed (%.0f MiB/s) ", n>>20, float64(n)/(1<<20)/time.Since(start).Seconds())
				}
			}
			res, err := layer.Convert(e.ctx, in, dst, opts)
			if progress {
				fmt.Fprint(e.stderr, "\r\033[K")
			}
			if err != nil {
				return err
			}
			// All outputs or none: a late failure takes back the earlier ones.
			if err := atomicfile.CommitAll(hf, mf, out); err != nil {
				return err
			}
			j := convertJSON{
				Output: output, Profile: string(res.Profile), RootHash: res.RootHashHex(),
				HashOffset: res.ImageSize, DataBlocks: res.Verity.DataBlocks,
				DataBlockSize: res.Verity.DataBlockSize, HashBlockSize: res.Verity.HashBlockSize,
				HashAlgorithm: res.Verity.Algorithm, Salt: hex.EncodeToString(res.Verity.Salt),
				DiffID: res.DiffID, Digest: res.Digest, Compression: string(res.Compression),
				TarSize: res.TarSize, Entries: res.Entries, Inodes: res.Inodes, TreeSize: res.TreeSize,
				MetadataSize: res.MetadataSize, UUID: verity.FormatUUID(res.EROFSUUID),
				HashOutput: hashOutput, MetadataOut: metaOutput,
			}
			if res.Profile == layer.ProfileTarIndex {
				j.VerityUUID = verity.FormatUUID(res.VerityUUID)
			}
			if e.json {
				return e.printJSON(j)
			}
			if e.quiet {
				fmt.Fprintln(e.stdout, j.RootHash)
				return nil
			}
			if j.Output == "" {
				j.Output = "(none: metadata and tree only)"
			}
			e.printf("output:          %s\nprofile:         %s\nroot hash:       %s\nhash offset:     %d\ndata blocks:     %d x %d\nhash blocks:     %d bytes, %s\nsalt:            %s\ndiff_id:         %s\ndigest:          %s\ncompression:     %s\nmetadata size:   %d\nuuid:            %s\n",
				j.Output, j.Profile, j.RootHash, j.HashOffset, j.DataBlocks, j.DataBlockSize, j.HashBlockSize, j.HashAlgorithm, j.Salt, j.DiffID, j.Digest, j.Compression, j.MetadataSize, j.UUID)
			e.infof("converted %d MiB in %.2fs\n", res.TarSize>>20, time.Since(start).Seconds())
			return nil
		},
	}
	f := c.Flags()
	f.StringVarP(&output, "output", "o", "", "output file: data device followed by the hash tree (required unless tar-index --metadata-output/--hash-output)")
	f.StringVar(&profile, "profile", "full", "conversion profile: full or tar-index")
	f.StringVar(&hashOutput, "hash-output", "", "tar-index: also write the tree with a veritysetup superblock at offset 0 to this file")
	f.StringVar(&metaOutput, "metadata-output", "", "tar-index: also write the EROFS metadata blob to this file")
	f.StringVar(&maxSize, "max-size", "64G", "largest accepted uncompressed layer (decompression bomb limit)")
	f.IntVar(&maxEntries, "max-entries", erofs.DefaultMaxEntries, "largest accepted number of tar members")
	f.StringVar(&tmpDir, "tmp-dir", "", "directory for spill files (default: an output's directory)")
	// The old spelling; the image commands always said --tmp-dir.
	f.StringVar(&tmpDir, "tmpdir", "", "deprecated spelling of --tmp-dir")
	f.MarkHidden("tmpdir")
	return c
}

func openLayerImage(p string) (*layer.Image, *os.File, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, nil, err
	}
	size, err := linux.FileSize(f)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	im, err := layer.OpenImage(f, size)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", p, err)
	}
	return im, f, nil
}

func newLayerVerifyCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "verify OUTPUT ROOT_HASH",
		Short: "Check every data and hash block of a converted layer against a root hash",
		Long: `Recognize the profile of OUTPUT from its EROFS superblock, derive the verity
parameters, and check the whole data device and tree against ROOT_HASH (64
hex digits), like veritysetup verify. Exit status 1 names the first bad block.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			root, err := hex.DecodeString(args[1])
			if err != nil {
				return usagef("ROOT_HASH %q is not hex", args[1])
			}
			if len(root) != 32 {
				return usagef("ROOT_HASH has %d bytes, a sha256 root hash has 32", len(root))
			}
			im, f, err := openLayerImage(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			if err := im.Verify(e.ctx, root, &verity.Options{Logger: e.log}); err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			if e.json {
				return e.printJSON(map[string]any{"verified": true, "profile": im.Profile, "root_hash": strings.ToLower(args[1]), "hash_offset": im.Verity.HashOffset, "data_blocks": im.Verity.DataBlocks})
			}
			e.printf("%s: verified (%s, %d data blocks)\n", args[0], im.Profile, im.Verity.DataBlocks)
			return nil
		},
	}
}

type lsEntry struct {
	Path     string            `json:"path"`
	Type     string            `json:"type"`
	Mode     string            `json:"mode"`
	UID      uint32            `json:"uid"`
	GID      uint32            `json:"gid"`
	Size     int64             `json:"size"`
	Nlink    uint32            `json:"nlink"`
	Mtime    string            `json:"mtime"`
	NID      uint64            `json:"nid"`
	Target   string            `json:"target,omitempty"`
	DevMajor *uint32           `json:"dev_major,omitempty"`
	DevMinor *uint32           `json:"dev_minor,omitempty"`
	Xattrs   map[string]string `json:"xattrs,omitempty"`
}

func typeName(in *erofs.Inode) string {
	m := in.Mode()
	switch {
	case m.IsDir():
		return "dir"
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m&fs.ModeCharDevice != 0:
		return "char"
	case m&fs.ModeDevice != 0:
		return "block"
	case m&fs.ModeNamedPipe != 0:
		return "fifo"
	case m&fs.ModeSocket != 0:
		return "socket"
	}
	return "file"
}

// lsMode renders a mode like ls -l.
func lsMode(raw uint32, typ string) string {
	c := map[string]byte{"dir": 'd', "symlink": 'l', "char": 'c', "block": 'b', "fifo": 'p', "socket": 's', "file": '-'}[typ]
	b := []byte{c}
	rwx := "rwxrwxrwx"
	for i := 0; i < 9; i++ {
		if raw&(1<<(8-i)) != 0 {
			b = append(b, rwx[i])
		} else {
			b = append(b, '-')
		}
	}
	set := func(pos int, bit uint32, lo, up byte) {
		if raw&bit != 0 {
			if b[pos] == '-' {
				b[pos] = up
			} else {
				b[pos] = lo
			}
		}
	}
	set(3, 0o4000, 's', 'S')
	set(6, 0o2000, 's', 'S')
	set(9, 0o1000, 't', 'T')
	return string(b)
}

func newLayerLsCmd(e *env) *cobra.Command {
	var recursive bool
	c := &cobra.Command{
		Use:   "ls OUTPUT [PATH]",
		Short: "List files of a converted layer like ls -l (--json for scripts)",
		Long: `List PATH (default: the root directory) of the EROFS image in OUTPUT, like
ls -l: mode, links, owner, group, size (major, minor for devices), mtime, name
and symlink target. -R lists recursively. With --json, one array of objects
with path, type, mode (octal), uid, gid, size, nlink, mtime (RFC 3339, UTC),
nid, target, dev_major/dev_minor and xattrs (values base64).`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			im, f, err := openLayerImage(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			p := "."
			if len(args) == 2 {
				p = strings.Trim(path.Clean("/"+args[1]), "/")
				if p == "" {
					p = "."
				}
			}
			fsys := im.FS
			var out []lsEntry
			add := func(name string) error {
				in, err := fsys.Inode(name)
				if err != nil {
					return err
				}
				x, err := in.Xattrs()
				if err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				le := lsEntry{Path: name, Type: typeName(in), Mode: fmt.Sprintf("%04o", in.RawMode&0o7777), UID: in.UID, GID: in.GID,
					Size: in.Size, Nlink: in.Nlink, Mtime: in.Mtime.UTC().Format(time.RFC3339Nano), NID: in.NID}
				if le.Type == "symlink" {
					if le.Target, err = fsys.ReadLink(name); err != nil {
						return err
					}
				}
				if le.Type == "char" || le.Type == "block" {
					ma, mi := in.DevMajor(), in.DevMinor()
					le.DevMajor, le.DevMinor = &ma, &mi
				}
				if len(x) > 0 {
					le.Xattrs = map[string]string{}
					for k, v := range x {
						le.Xattrs[k] = base64.StdEncoding.EncodeToString(v)
					}
				}
				out = append(out, le)
				return nil
			}
			st, err := fsys.Stat(p)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			if !st.IsDir() {
				if err := add(p); err != nil {
					return err
				}
			} else if recursive {
				err = fs.WalkDir(fsys, p, func(name string, d fs.DirEntry, err error) error {
					if err != nil {
						return err
					}
					return add(name)
				})
			} else {
				ents, err := fsys.ReadDir(p)
				if err != nil {
					return err
				}
				for _, d := range ents {
					if err := add(path.Join(p, d.Name())); err != nil {
						return err
					}
				}
			}
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			sort.SliceStable(out, func(i, j int) bool { return out[i].Path < out[j].Path })
			if e.json {
				if out == nil {
					out = []lsEntry{}
				}
				return e.printJSON(out)
			}
			for _, le := range out {
				size := strconv.FormatInt(le.Size, 10)
				if le.DevMajor != nil {
					size = fmt.Sprintf("%d, %d", *le.DevMajor, *le.DevMinor)
				}
				raw, _ := strconv.ParseUint(le.Mode, 8, 32)
				name := le.Path
				if !recursive && st.IsDir() {
					name = path.Base(le.Path)
				}
				if le.Target != "" {
					name += " -> " + le.Target
				}
				mt, _ := time.Parse(time.RFC3339Nano, le.Mtime)
				fmt.Fprintf(e.stdout, "%s %3d %5d %5d %10s %s %s\n", lsMode(uint32(raw), le.Type), le.Nlink, le.UID, le.GID, size, mt.UTC().Format("2006-01-02 15:04:05"), name)
			}
			return nil
		},
	}
	c.Flags().BoolVarP(&recursive, "recursive", "R", false, "list subdirectories recursively")
	return c
}

func newLayerInspectCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect OUTPUT",
		Short: "Show the profile, EROFS superblock and verity layout of a converted layer",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			im, f, err := openLayerImage(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			i := im.Info
			j := map[string]any{
				"profile":         im.Profile,
				"file_size":       im.Size,
				"hash_offset":     im.Verity.HashOffset,
				"data_blocks":     im.Verity.DataBlocks,
				"data_block_size": im.Verity.DataBlockSize,
				"hash_block_size": im.Verity.HashBlockSize,
				"hash_algorithm":  im.Verity.Algorithm,
				"salt":            hex.EncodeToString(im.Verity.Salt),
				"tree_size":       im.Layout.TreeBlocks * uint64(im.Verity.HashBlockSize),
				"tree_levels":     im.Layout.Levels,
				"erofs": map[string]any{
					"block_size": i.BlockSize, "blocks": i.Blocks, "inodes": i.Inodes, "root_nid": i.RootNID,
					"meta_blkaddr": i.MetaBlkaddr, "xattr_blkaddr": i.XattrBlkaddr, "uuid": verity.FormatUUID(i.UUID),
					"feature_compat": i.FeatureCompat, "feature_incompat": i.FeatureIncompat, "extra_devices": i.ExtraDevices,
				},
			}
			if im.Profile == layer.ProfileTarIndex {
				j["metadata_size"] = i.Blocks * 512
				j["tar_blocks"] = i.Device1Blocks
			}
			if e.json {
				return e.printJSON(j)
			}
			e.printf("profile:        %s\nfile size:      %d\nhash offset:    %d (data device)\ndata blocks:    %d x %d\ntree:           %d bytes, %d levels, %s, %d-byte hash blocks\nsalt:           %s\nerofs:          %d-byte blocks, %d blocks, %d inodes, root nid %d, uuid %s\n",
				im.Profile, im.Size, im.Verity.HashOffset, im.Verity.DataBlocks, im.Verity.DataBlockSize,
				im.Layout.TreeBlocks*uint64(im.Verity.HashBlockSize), im.Layout.Levels, im.Verity.Algorithm, im.Verity.HashBlockSize,
				hex.EncodeToString(im.Verity.Salt), i.BlockSize, i.Blocks, i.Inodes, i.RootNID, verity.FormatUUID(i.UUID))
			if im.Profile == layer.ProfileTarIndex {
				e.printf("metadata:       %d bytes; tar device %d blocks mapped at block %d\n", i.Blocks*512, i.Device1Blocks, i.Device1MappedBlkaddr)
			}
			return nil
		},
	}
}
