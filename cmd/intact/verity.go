package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/intact-project/intact/internal/atomicfile"
	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/verity"
)

// The verity group: dm-verity hash trees (package verity). Other files add
// subcommands with registerSub("verity", ...): sign, open, close.
func init() { register(newVerityCmd) }

func newVerityCmd(e *env) *cobra.Command {
	g := &cobra.Command{
		Use:   "verity",
		Short: "Build, verify and describe dm-verity hash trees (veritysetup-compatible)",
		Long: `Build, verify and describe dm-verity hash trees. The trees, superblocks and
tables are byte-for-byte those of veritysetup (cryptsetup), and the flags have
veritysetup's names and defaults where the two overlap.

Layout: the tree goes into a separate HASH file, or, when HASH is omitted,
into DATA itself at --hash-offset (default for format: the 4 KiB-aligned end
of the data). With a superblock (the default) the parameters are stored at
the hash offset and verify, dump and table read them from there.`,
		Args: cobra.NoArgs,
	}
	g.AddCommand(newVerityFormatCmd(e), newVerityVerifyCmd(e), newVerityDumpCmd(e), newVerityTableCmd(e))
	return g
}

// layoutFlags are the veritysetup options that describe a tree.
type layoutFlags struct {
	hashOffset    uint64
	noSuperblock  bool
	salt          string
	dataBlockSize uint32
	hashBlockSize uint32
	hashAlg       string
	format        uint32
	uuid          string
	dataBlocks    uint64
	fs            *pflag.FlagSet
}

func (lf *layoutFlags) add(fs *pflag.FlagSet, forFormat bool) {
	lf.fs = fs
	fs.Uint64Var(&lf.hashOffset, "hash-offset", 0, "byte offset of the superblock (or, with --no-superblock, the tree) in the hash device; a multiple of 512")
	fs.BoolVar(&lf.noSuperblock, "no-superblock", false, "no verity superblock: the parameters are not stored, pass them as flags")
	saltHelp := "salt as hex, or - for none"
	if forFormat {
		saltHelp = "salt as hex, or - for none (default 32 random bytes)"
	}
	fs.StringVar(&lf.salt, "salt", "", saltHelp)
	fs.Uint32Var(&lf.dataBlockSize, "data-block-size", 4096, "data block size in bytes (512, 1024, 2048 or 4096)")
	fs.Uint32Var(&lf.hashBlockSize, "hash-block-size", 4096, "hash block size in bytes (512, 1024, 2048 or 4096)")
	fs.StringVar(&lf.hashAlg, "hash", "sha256", "hash algorithm: "+verity.Algorithms)
	fs.Uint32Var(&lf.format, "format", 1, "hash format: 1 normal, 0 original Chrome OS")
	uuidHelp := "UUID stored in the superblock"
	if forFormat {
		uuidHelp = "UUID stored in the superblock (default random)"
	}
	fs.StringVar(&lf.uuid, "uuid", "", uuidHelp)
	fs.Uint64Var(&lf.dataBlocks, "data-blocks", 0, "number of data blocks (default: the size of DATA, see --help)")
}

func (lf *layoutFlags) changed(name string) bool { return lf.fs.Changed(name) }

// params builds Params from the flags (DataBlocks and HashOffset as given).
func (lf *layoutFlags) params() (verity.Params, error) {
	p := verity.Params{
		HashType:      lf.format,
		Algorithm:     strings.ToLower(lf.hashAlg),
		DataBlockSize: lf.dataBlockSize,
		HashBlockSize: lf.hashBlockSize,
		DataBlocks:    lf.dataBlocks,
		NoSuperblock:  lf.noSuperblock,
		HashOffset:    lf.hashOffset,
	}
	if lf.changed("salt") {
		s, err := parseSalt(lf.salt)
		if err != nil {
			return p, err
		}
		p.Salt = s
	}
	if lf.uuid != "" {
		u, err := verity.ParseUUID(lf.uuid)
		if err != nil {
			return p, usagef("--uuid: %v", stripSentinel(err))
		}
		p.UUID = u
	}
	return p, nil
}

func parseSalt(s string) ([]byte, error) {
	if s == "-" || s == "" {
		return nil, nil
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, usagef("--salt %q is not hexadecimal (use - for no salt)", truncateArg(s))
	}
	if len(b) > verity.MaxSaltSize {
		return nil, usagef("--salt has %d bytes, at most %d are allowed", len(b), verity.MaxSaltSize)
	}
	return b, nil
}

// checkAgainstSuperblock refuses layout flags that contradict the
// superblock the parameters were read from.
func (lf *layoutFlags) checkAgainstSuperblock(sb verity.Params) error {
	fp, err := lf.params()
	if err != nil {
		return err
	}
	type check struct {
		flag      string
		same      bool
		got, want any
	}
	for _, c := range []check{
		{"hash", fp.Algorithm == sb.Algorithm, fp.Algorithm, sb.Algorithm},
		{"format", fp.HashType == sb.HashType, fp.HashType, sb.HashType},
		{"data-block-size", fp.DataBlockSize == sb.DataBlockSize, fp.DataBlockSize, sb.DataBlockSize},
		{"hash-block-size", fp.HashBlockSize == sb.HashBlockSize, fp.HashBlockSize, sb.HashBlockSize},
		{"data-blocks", fp.DataBlocks == sb.DataBlocks, fp.DataBlocks, sb.DataBlocks},
		{"salt", string(fp.Salt) == string(sb.Salt), fp.SaltHex(), sb.SaltHex()},
		{"uuid", fp.UUID == sb.UUID, fp.UUIDString(), sb.UUIDString()},
	} {
		if lf.changed(c.flag) && !c.same {
			return usagef("--%s %v contradicts the superblock (%v); omit it, or use --no-superblock", c.flag, c.got, c.want)
		}
	}
	return nil
}

// stripSentinel drops the package sentinel's prefix from a verity error
// for CLI messages ("invalid dm-verity parameters: x" -> "x").
func stripSentinel(err error) string {
	s := err.Error()
	for _, sen := range []error{verity.ErrInvalidParams, verity.ErrUnsupported} {
		if rest, ok := strings.CutPrefix(s, sen.Error()+": "); ok {
			if sen == verity.ErrUnsupported {
				return "unsupported " + rest
			}
			return rest
		}
	}
	return s
}

func truncateArg(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}

// verityInfo is the --json form of a tree's parameters.
type verityInfo struct {
	RootHash       string `json:"root_hash,omitempty"`
	HashAlgorithm  string `json:"hash_algorithm"`
	HashType       uint32 `json:"hash_type"`
	DataBlockSize  uint32 `json:"data_block_size"`
	HashBlockSize  uint32 `json:"hash_block_size"`
	DataBlocks     uint64 `json:"data_blocks"`
	HashOffset     uint64 `json:"hash_offset"`
	HashStartBlock uint64 `json:"hash_start_block"`
	HashBlocks     uint64 `json:"hash_blocks"`
	Salt           string `json:"salt"`
	UUID           string `json:"uuid"`
	Superblock     bool   `json:"superblock"`
	Table          string `json:"table,omitempty"`
	Verified       *bool  `json:"verified,omitempty"`
}

func newVerityInfo(p verity.Params, l verity.Layout, root []byte) verityInfo {
	v := verityInfo{
		HashAlgorithm: p.Algorithm, HashType: p.HashType,
		DataBlockSize: p.DataBlockSize, HashBlockSize: p.HashBlockSize,
		DataBlocks: p.DataBlocks, HashOffset: p.HashOffset,
		HashStartBlock: l.HashStartBlock, HashBlocks: l.TreeBlocks,
		Salt: hex.EncodeToString(p.Salt), Superblock: !p.NoSuperblock,
	}
	if !p.NoSuperblock {
		v.UUID = p.UUIDString()
	}
	if root != nil {
		v.RootHash = verity.RootHashHex(root)
	}
	return v
}

// printVerityHeader prints the parameters in the lines of veritysetup 2.6
// format/dump (the version the tests compare with).
func (e *env) printVerityHeader(hashPath string, p verity.Params, l verity.Layout, root []byte) {
	uuid := ""
	if !p.NoSuperblock {
		uuid = p.UUIDString()
	}
	e.printf("VERITY header information for %s\n", hashPath)
	e.printf("UUID:            \t%s\n", uuid)
	e.printf("Hash type:       \t%d\n", p.HashType)
	e.printf("Data blocks:     \t%d\n", p.DataBlocks)
	e.printf("Data block size: \t%d\n", p.DataBlockSize)
	e.printf("Hash blocks:     \t%d\n", l.TreeBlocks)
	e.printf("Hash block size: \t%d\n", p.HashBlockSize)
	e.printf("Hash algorithm:  \t%s\n", p.Algorithm)
	e.printf("Salt:            \t%s\n", p.SaltHex())
	if root != nil {
		e.printf("Root hash:      \t%s\n", verity.RootHashHex(root))
	}
	if p.HashOffset == 0 {
		e.printf("Hash device size: \t%d [bytes]\n", l.HashEnd)
	}
}

// progress returns a progress callback drawing on stderr when it is a
// terminal (and not --quiet or --json), and a function that ends the line.
func (e *env) progress(what string) (func(done, total uint64), func()) {
	if e.quiet || e.json || !isTerminal(e.stderr) {
		return nil, func() {}
	}
	var last time.Time
	drawn := false
	return func(done, total uint64) {
			if now := time.Now(); now.Sub(last) >= 200*time.Millisecond || done == total {
				last = now
				drawn = true
				if total > 0 {
					fmt.Fprintf(e.stderr, "\r%s: %3d%% (%d/%d MiB)", what, done*100/total, done>>20, total>>20)
				} else {
					fmt.Fprintf(e.stderr, "\r%s: %d MiB", what, done>>20)
				}
			}
		}, func() {
			if drawn {
				fmt.Fprint(e.stderr, "\r\033[K")
			}
		}
}

func newVerityFormatCmd(e *env) *cobra.Command {
	var lf layoutFlags
	var rootHashFile string
	c := &cobra.Command{
		Use:   "format DATA [HASH]",
		Short: "Build the hash tree of DATA into HASH, or append it to DATA",
		Long: `Build the dm-verity hash tree of DATA and print the root hash, like
'veritysetup format DATA HASH' (same flags, same defaults, same output lines;
the tree bytes are identical for identical parameters).

HASH is created or overwritten at --hash-offset (default 0). Without HASH the
tree is written into DATA itself at --hash-offset, which defaults to the end
of the data rounded up to 4096 bytes (veritysetup requires the flag).

Data size: by default the tree covers all of DATA. A DATA whose size is not a
multiple of --data-block-size ends in a partial block; the kernel maps whole
blocks only, so the partial block is hashed as if padded with zeros, which is
only valid when DATA really is padded: when the tree is appended to DATA (the
padding is then written as part of the file), or after you pad it yourself
(truncate -s). With a separate HASH such a DATA is refused. --data-blocks N
covers the first N blocks only (veritysetup's behaviour for a partial block).

On failure nothing is left behind: a new HASH is not created, and a file the
tree was written into is restored to its previous size and contents. While
format writes into an existing file, the bytes it overwrites are kept in
.NAME.intact-backup-at-OFFSET-* next to it (removed when format ends): if
the process is killed, write that file back at OFFSET (dd conv=notrunc
seek=OFFSET oflag=seek_bytes) and truncate NAME to its old size.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.runVerityFormat(&lf, args, rootHashFile)
		},
	}
	lf.add(c.Flags(), true)
	c.Flags().StringVar(&rootHashFile, "root-hash-file", "", "also write the root hash (hex, no newline) to this file")
	return c
}

func (e *env) runVerityFormat(lf *layoutFlags, args []string, rootHashFile string) error {
	p, err := lf.params()
	if err != nil {
		return err
	}
	if err := checkOutputs(rootHashFile); err != nil {
		return err
	}
	if !lf.changed("salt") {
		p.Salt = make([]byte, 32)
		rand.Read(p.Salt)
	}
	if lf.uuid == "" && !p.NoSuperblock {
		p.UUID = verity.NewUUID()
	}
	if lf.noSuperblock && lf.changed("uuid") {
		return usagef("--uuid needs a superblock (it is stored there); drop --no-superblock or --uuid")
	}
	// Check the shape (algorithm, sizes, salt) before touching files.
	probe := p
	probe.DataBlocks = 1
	if _, err := probe.Layout(); err != nil {
		return usagef("%s", stripSentinel(err))
	}
	if _, err := verity.NewBuilder(probe, nil); err != nil {
		return usagef("%s", stripSentinel(err))
	}

	dataPath := args[0]
	appended := len(args) == 1
	if !appended && sameFile(dataPath, args[1]) {
		// veritysetup format DATA DATA --hash-offset N: the tree goes into
		// DATA, exactly as when HASH is omitted.
		appended = true
	}
	flag := os.O_RDONLY
	if appended {
		flag = os.O_RDWR
	}
	df, err := os.OpenFile(dataPath, flag, 0)
	if err != nil {
		return fmt.Errorf("open data: %w", err)
	}
	defer df.Close()
	size, err := linux.FileSize(df)
	if err != nil {
		return fmt.Errorf("data: %w", err)
	}
	dbs := uint64(p.DataBlockSize)
	usize := uint64(size)
	padded := (usize + dbs - 1) / dbs
	if lf.changed("data-blocks") {
		if p.DataBlocks == 0 {
			return usagef("--data-blocks 0: dm-verity needs at least one data block")
		}
		if p.DataBlocks > padded || (!appended && p.DataBlocks*dbs > usize) {
			return fmt.Errorf("%s has %d bytes, --data-blocks %d needs %d", dataPath, size, p.DataBlocks, p.DataBlocks*dbs)
		}
	} else {
		if size == 0 {
			return fmt.Errorf("%s is empty: dm-verity needs at least one data block", dataPath)
		}
		p.DataBlocks = padded
		if !appended && usize%dbs != 0 {
			whole := ""
			if usize >= dbs {
				whole = fmt.Sprintf(", cover only whole blocks with --data-blocks %d", usize/dbs)
			}
			return fmt.Errorf("%s is %d bytes, not a multiple of the data block size %d, and the kernel maps whole blocks only: pad it (truncate -s %d %s)%s, or append the tree to DATA by omitting HASH",
				dataPath, size, dbs, padded*dbs, dataPath, whole)
		}
	}
	if appended && !lf.changed("hash-offset") {
		end := max(usize, p.DataBlocks*dbs)
		p.HashOffset = (end + 4095) / 4096 * 4096
	}
	l, err := p.Layout()
	if err != nil {
		return usagef("%s", stripSentinel(err))
	}
	if appended {
		if err := p.ValidateSameDevice(); err != nil {
			return usagef("%s (the tree goes into DATA at --hash-offset)", stripSentinel(err))
		}
	}

	// Where the hash area goes.
	var out outputFile
	if appended {
		var w *atomicfile.InPlace
		if w, err = editInPlace(df, p.HashOffset, l.HashEnd); err == nil {
			out = inPlaceOutput{w: w}
		}
	} else {
		out, err = openHashOutput(args[1], p.HashOffset, l.HashEnd)
	}
	if err != nil {
		return err
	}
	// From here on every failure puts back what was overwritten, and says
	// so when it cannot (the backup then stays, named in the error).
	fail := func(err error) error {
		if aerr := out.abort(); aerr != nil {
			return fmt.Errorf("%w; %w", err, aerr)
		}
		return err
	}

	prog, endProg := e.progress("verity format")
	res, err := verity.Format(e.ctx, df, p, out.file(), &verity.Options{
		Progress: prog, Logger: e.log, TempDir: filepath.Dir(out.file().Name()),
	})
	endProg()
	if err != nil {
		return fail(fmt.Errorf("format: %s", stripSentinel(err)))
	}
	var rh *atomicfile.File
	if rootHashFile != "" {
		if rh, err = atomicfile.Create(rootHashFile, 0o644); err == nil {
			if _, err = rh.Write([]byte(verity.RootHashHex(res.RootHash))); err != nil {
				rh.Abort()
			}
		}
		if err != nil {
			return fail(err)
		}
	}
	if err := out.commitWith(rh); err != nil {
		if rh != nil {
			rh.Abort()
		}
		return fail(err)
	}
	hashPath := dataPath
	if !appended {
		hashPath = args[1]
	}
	switch {
	case e.json:
		return e.printJSON(newVerityInfo(res.Params, res.Layout, res.RootHash))
	case e.quiet:
		fmt.Fprintln(e.stdout, verity.RootHashHex(res.RootHash))
	default:
		e.printVerityHeader(hashPath, res.Params, res.Layout, res.RootHash)
	}
	return nil
}

func sameFile(a, b string) bool {
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	return err == nil && os.SameFile(sa, sb)
}

// outputFile is where format writes the hash area: a new file that is
// named on commit, or an existing file (or device) written in place and
// restored on abort (atomicfile.InPlace).
type outputFile interface {
	file() *os.File
	// commitWith publishes the output together with extra (the
	// --root-hash-file, may be nil): both or neither.
	commitWith(extra *atomicfile.File) error
	abort() error
}

type newOutput struct{ f *atomicfile.File }

func (o newOutput) file() *os.File { return o.f.File }
func (o newOutput) commitWith(extra *atomicfile.File) error {
	return atomicfile.CommitAll(o.f, extra)
}
func (o newOutput) abort() error { o.f.Abort(); return nil }

// inPlaceOutput writes into an existing file or device.
type inPlaceOutput struct {
	w     *atomicfile.InPlace
	owned bool // close the file when done
}

func (o inPlaceOutput) file() *os.File { return o.w.File() }

func (o inPlaceOutput) commitWith(extra *atomicfile.File) error {
	err := o.w.Flush()
	if err == nil && extra != nil {
		err = extra.Commit()
	}
	if err == nil {
		err = o.w.Commit()
	}
	if o.owned {
		if cerr := o.w.File().Close(); err == nil && cerr != nil {
			err = fmt.Errorf("write %s: %w", o.w.File().Name(), cerr)
		}
	}
	return err
}

func (o inPlaceOutput) abort() error {
	err := o.w.Abort()
	if o.owned {
		o.w.File().Close()
	}
	return err
}

// openHashOutput prepares HASH: a regular file written only from offset 0
// (or not existing yet) is replaced atomically; a block device, or an
// existing file with other content before the hash offset, is written in
// place with restore on failure.
func openHashOutput(path string, hashOffset, hashEnd uint64) (outputFile, error) {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist) || (err == nil && st.Mode().IsRegular() && hashOffset == 0):
		f, err := atomicfile.Create(path, 0o644)
		if err != nil {
			return nil, err
		}
		return newOutput{f}, nil
	case err != nil:
		return nil, fmt.Errorf("hash output: %w", err)
	case st.IsDir():
		return nil, fmt.Errorf("hash output %s is a directory", path)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open hash output: %w", err)
	}
	w, err := editInPlace(f, hashOffset, hashEnd)
	if err != nil {
		f.Close()
		return nil, err
	}
	return inPlaceOutput{w: w, owned: true}, nil
}

// editInPlace prepares writing [start, end) of f, the verity way: a device
// too small is verity.ErrTooSmall.
func editInPlace(f *os.File, start, end uint64) (*atomicfile.InPlace, error) {
	w, err := atomicfile.EditInPlace(f, int64(start), int64(end))
	if errors.Is(err, atomicfile.ErrTooSmall) {
		return nil, fmt.Errorf("%w: %w", verity.ErrTooSmall, err)
	}
	return w, err
}

// treeSource resolves DATA [HASH] ROOT_HASH and the layout flags into
// parameters: from the superblock, or from the flags with --no-superblock.
type treeSource struct {
	dataPath, hashPath string
	p                  verity.Params
	l                  verity.Layout
	root               []byte
}

func (e *env) resolveTree(lf *layoutFlags, args []string, needData bool) (*treeSource, error) {
	ts := &treeSource{dataPath: args[0], hashPath: args[0]}
	rootArg := args[len(args)-1]
	if len(args) == 3 {
		ts.hashPath = args[1]
	}
	inData := len(args) == 2
	if inData && !lf.changed("hash-offset") {
		return nil, usagef("the tree is inside DATA (no HASH given): --hash-offset is required")
	}
	p := verity.Params{HashOffset: lf.hashOffset}
	if lf.noSuperblock {
		var err error
		if p, err = lf.params(); err != nil {
			return nil, err
		}
		if !lf.changed("data-blocks") {
			if inData {
				return nil, usagef("the tree is inside DATA and there is no superblock: --data-blocks is required")
			}
			p.DataBlocks = 0 // the size of DATA
		}
		// A bad shape is a usage error, whatever DATA holds.
		probe := p
		probe.DataBlocks = max(p.DataBlocks, 1)
		if _, err := probe.Layout(); err != nil {
			return nil, usagef("%s", stripSentinel(err))
		}
		if !lf.changed("data-blocks") && !needData {
			if _, err := os.Stat(ts.dataPath); err != nil {
				return nil, usagef("--data-blocks is required (%v)", err)
			}
		}
	}
	rp, err := verity.ResolveParams(p, ts.dataPath, ts.hashPath)
	if err != nil {
		return nil, errors.New(stripSentinel(err))
	}
	if !lf.noSuperblock {
		if err := lf.checkAgainstSuperblock(rp); err != nil {
			return nil, err
		}
	}
	ts.p = rp
	l, err := ts.p.Layout()
	if err != nil {
		return nil, usagef("%s", stripSentinel(err))
	}
	if inData {
		if err := ts.p.ValidateSameDevice(); err != nil {
			return nil, usagef("%s", stripSentinel(err))
		}
	}
	ts.l = l
	root, err := verity.ParseRootHash(ts.p, rootArg)
	if err != nil {
		return nil, usagef("ROOT_HASH: %s", stripSentinel(err))
	}
	ts.root = root
	return ts, nil
}

func newVerityVerifyCmd(e *env) *cobra.Command {
	var lf layoutFlags
	c := &cobra.Command{
		Use:   "verify DATA [HASH] ROOT_HASH",
		Short: "Check every data and hash block against the root hash",
		Long: `Check DATA and its hash tree against ROOT_HASH, like 'veritysetup verify'.
The parameters come from the superblock in HASH at --hash-offset (default 0),
or from the flags with --no-superblock (then --data-blocks defaults to the
size of DATA in whole blocks). Without HASH the tree is inside DATA and
--hash-offset is required.

On a mismatch the one-line error names the first bad block: a data block
number, or a hash block by level and index (checked top-down, so the block
named is the one that is actually damaged). Exit status 1.`,
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			ts, err := e.resolveTree(&lf, args, true)
			if err != nil {
				return err
			}
			df, err := os.Open(ts.dataPath)
			if err != nil {
				return fmt.Errorf("open data: %w", err)
			}
			defer df.Close()
			hf, err := os.Open(ts.hashPath)
			if err != nil {
				return fmt.Errorf("open hash device: %w", err)
			}
			defer hf.Close()
			prog, endProg := e.progress("verity verify")
			err = verity.Verify(e.ctx, ts.p, ts.root, df, hf, &verity.Options{Progress: prog, Logger: e.log})
			endProg()
			if err != nil {
				return fmt.Errorf("verify: %s", stripSentinel(err))
			}
			if e.json {
				ok := true
				info := newVerityInfo(ts.p, ts.l, ts.root)
				info.Verified = &ok
				return e.printJSON(info)
			}
			e.printf("Verified %d data blocks and %d hash blocks against root hash %s.\n", ts.p.DataBlocks, ts.l.TreeBlocks, verity.RootHashHex(ts.root))
			return nil
		},
	}
	lf.add(c.Flags(), false)
	return c
}

func newVerityDumpCmd(e *env) *cobra.Command {
	var hashOffset uint64
	c := &cobra.Command{
		Use:   "dump HASH",
		Short: "Print the verity superblock of HASH",
		Long: `Print the verity superblock at --hash-offset of HASH, in the lines of
'veritysetup dump'. The superblock is checked (magic, version, hash type,
algorithm, block sizes, salt size, sizes that overflow).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return fmt.Errorf("open hash device: %w", err)
			}
			defer f.Close()
			p, err := verity.ReadSuperblock(f, hashOffset)
			if err != nil {
				return fmt.Errorf("%s at offset %d: %s", args[0], hashOffset, stripSentinel(err))
			}
			l, err := p.Layout()
			if err != nil {
				return err
			}
			if e.json {
				return e.printJSON(newVerityInfo(p, l, nil))
			}
			e.printVerityHeader(args[0], p, l, nil)
			return nil
		},
	}
	c.Flags().Uint64Var(&hashOffset, "hash-offset", 0, "byte offset of the superblock in HASH (a multiple of 512)")
	return c
}

func newVerityTableCmd(e *env) *cobra.Command {
	var lf layoutFlags
	var o verity.TableOptions
	var dataDev, hashDev string
	var ignoreCorr, restartCorr, panicCorr, restartErr, panicErr bool
	var fec verity.FEC
	c := &cobra.Command{
		Use:   "table DATA [HASH] ROOT_HASH",
		Short: "Print the dm table line veritysetup open would load",
		Long: `Print the device-mapper table line for the verity target, exactly as
'veritysetup open' builds it (cryptsetup lib/libdevmapper.c): length in
sectors, hash type, devices, block sizes, data blocks, hash start block,
algorithm, root hash and salt (- for none), then the optional arguments.

Parameters come from the superblock in HASH (or DATA, when HASH is omitted)
at --hash-offset, or from the flags with --no-superblock. DATA and HASH are
printed as the devices; the kernel needs block devices (/dev/loop0, 7:0):
name them with --data-device/--hash-device when the files given are not
the devices.`,
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			ts, err := e.resolveTree(&lf, args, false)
			if err != nil {
				return err
			}
			n := 0
			for _, b := range []bool{ignoreCorr, restartCorr, panicCorr} {
				if b {
					n++
				}
			}
			if n > 1 {
				return usagef("choose one of --ignore-corruption, --restart-on-corruption, --panic-on-corruption")
			}
			switch {
			case ignoreCorr:
				o.OnCorruption = verity.CorruptionIgnore
			case restartCorr:
				o.OnCorruption = verity.CorruptionRestart
			case panicCorr:
				o.OnCorruption = verity.CorruptionPanic
			}
			if restartErr && panicErr {
				return usagef("choose one of --restart-on-error, --panic-on-error")
			}
			if restartErr {
				o.OnError = verity.ErrorRestart
			} else if panicErr {
				o.OnError = verity.ErrorPanic
			}
			if fec.Device != "" {
				o.FEC = &fec
			} else if cmd.Flags().Changed("fec-roots") || cmd.Flags().Changed("fec-blocks") || cmd.Flags().Changed("fec-start") {
				return usagef("--fec-roots, --fec-blocks and --fec-start need --fec-device")
			}
			if dataDev == "" {
				dataDev = ts.dataPath
			}
			if hashDev == "" {
				hashDev = ts.hashPath
			}
			t, err := verity.Table(ts.p, ts.root, dataDev, hashDev, o)
			if err != nil {
				return usagef("%s", stripSentinel(err))
			}
			if e.json {
				info := newVerityInfo(ts.p, ts.l, ts.root)
				info.Table = t.String()
				return e.printJSON(info)
			}
			fmt.Fprintln(e.stdout, t.String())
			return nil
		},
	}
	lf.add(c.Flags(), false)
	f := c.Flags()
	f.StringVar(&dataDev, "data-device", "", "data device written in the table (default DATA)")
	f.StringVar(&hashDev, "hash-device", "", "hash device written in the table (default HASH, or DATA)")
	f.BoolVar(&ignoreCorr, "ignore-corruption", false, "log corrupted blocks but return their data (ignore_corruption)")
	f.BoolVar(&restartCorr, "restart-on-corruption", false, "restart the system on corruption (restart_on_corruption)")
	f.BoolVar(&panicCorr, "panic-on-corruption", false, "panic on corruption (panic_on_corruption)")
	f.BoolVar(&restartErr, "restart-on-error", false, "restart the system on an I/O error (restart_on_error, Linux 6.12+)")
	f.BoolVar(&panicErr, "panic-on-error", false, "panic on an I/O error (panic_on_error, Linux 6.12+)")
	f.BoolVar(&o.IgnoreZeroBlocks, "ignore-zero-blocks", false, "do not verify blocks whose expected content is zeros (ignore_zero_blocks)")
	f.BoolVar(&o.CheckAtMostOnce, "check-at-most-once", false, "verify each data block only the first time it is read (check_at_most_once)")
	f.BoolVar(&o.TryVerifyInTasklet, "use-tasklets", false, "verify in tasklet context when possible (try_verify_in_tasklet)")
	f.StringVar(&o.RootHashSigKeyDesc, "root-hash-sig-key-desc", "", "description of the user key holding the root hash signature (root_hash_sig_key_desc)")
	f.StringVar(&fec.Device, "fec-device", "", "device holding Reed-Solomon FEC data (use_fec_from_device)")
	f.Uint32Var(&fec.Roots, "fec-roots", 2, "FEC Reed-Solomon roots")
	f.Uint64Var(&fec.Blocks, "fec-blocks", 0, "FEC blocks (fec_blocks)")
	f.Uint64Var(&fec.Start, "fec-start", 0, "FEC start, in data blocks (fec_start)")
	return c
}
