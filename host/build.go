package host

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/intact-project/intact/efi"
	"github.com/intact-project/intact/erofs"
	"github.com/intact-project/intact/host/bootcfg"
	"github.com/intact-project/intact/initramfs"
	"github.com/intact-project/intact/internal/atomicfile"
	"github.com/intact-project/intact/ipe"
	"github.com/intact-project/intact/layer"
	"github.com/intact-project/intact/pkcs7"
	"github.com/intact-project/intact/uki"
	"github.com/intact-project/intact/verity"
)

// DefaultSourceDateEpoch is the time recorded in the image (FAT entries,
// the initramfs, added files) when SOURCE_DATE_EPOCH is not set:
// 1980-01-01, the FAT epoch.
const DefaultSourceDateEpoch = 315532800

// Output file names in the output directory.
const (
	DiskFile      = "disk.img"
	UKIFile       = "uki.efi"
	RootFile      = "root.erofs"
	VerityFile    = "root.verity"
	SigFile       = "root.verity-sig.json"
	InitrdFile    = "initramfs.img"
	PolicyFile    = "policy.p7s"
	ManifestFile  = "manifest.json"
	rootMountDirs = "dev proc sys run var etc tmp"
)

// Options configures Build.
type Options struct {
	Spec   *Spec
	OutDir string
	// SourceDateEpoch is the build time recorded in the image; zero means
	// DefaultSourceDateEpoch.
	SourceDateEpoch int64
	// Logger receives progress and debug logs; nil discards them.
	Logger *slog.Logger
	// Deprecated: use Logger (the name every intact package uses).
	Log *slog.Logger
	// Progress, if set, is told about each step as it starts.
	Progress func(step string)
}

// PartitionInfo is one GPT partition in the manifest.
type PartitionInfo struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	UUID   string `json:"uuid"`
	Offset int64  `json:"offset"`
	Size   int64  `json:"size"`
	// Used is the number of bytes of content (the rest is zeros).
	Used int64 `json:"used"`
}

// Manifest describes a built image (manifest.json).
type Manifest struct {
	Version       int    `json:"version"`
	RootHash      string `json:"root_hash"`
	KernelRelease string `json:"kernel_release"`
	Cmdline       string `json:"cmdline"`
	Verity        struct {
		bootcfg.Verity
		UUID string `json:"uuid"`
	} `json:"verity"`
	Root struct {
		Source string `json:"source"`
		Size   int64  `json:"size"`
		Inodes uint64 `json:"inodes"`
	} `json:"root"`
	UKI struct {
		Size               int64  `json:"size"`
		SHA256             string `json:"sha256"`
		AuthenticodeSHA256 string `json:"authenticode_sha256"`
		Signer             string `json:"signer"`
	} `json:"uki"`
	Initramfs struct {
		Size        int64    `json:"size"`
		SHA256      string   `json:"sha256"`
		Compression string   `json:"compression"`
		Modules     []string `json:"modules"`
	} `json:"initramfs"`
	Policy struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		SHA256  string `json:"sha256"`
		Text    string `json:"text"`
	} `json:"policy"`
	Signature struct {
		Signer                 string `json:"signer"`
		CertificateFingerprint string `json:"certificate_fingerprint"`
	} `json:"signature"`
	Disk struct {
		Size       int64           `json:"size"`
		GUID       string          `json:"guid"`
		Partitions []PartitionInfo `json:"partitions"`
	} `json:"disk"`
	SourceDateEpoch int64   `json:"source_date_epoch"`
	Seconds         float64 `json:"build_seconds"`
}

// Build builds the host image into opts.OutDir (created if needed). Every
// output is written atomically; on failure none is left half-written.
func Build(ctx context.Context, opts Options) (*Manifest, error) {
	s := opts.Spec
	if err := s.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = opts.Log
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	progress := func(step string) {
		log.Debug("host: " + step)
		if opts.Progress != nil {
			opts.Progress(step)
		}
	}
	epoch := opts.SourceDateEpoch
	if epoch == 0 {
		epoch = DefaultSourceDateEpoch
	}
	start := time.Now()
	if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("host: %w", err)
	}
	keys, err := efi.LoadKeys(s.Path(s.Keys))
	if err != nil {
		return nil, err
	}
	if keys.DB.Key == nil || keys.Signing.Key == nil {
		return nil, fmt.Errorf("%w: %s needs db.key (signs the UKI) and signing.key (signs the root hash and the policy)", efi.ErrKeys, s.Keys)
	}
	signer, err := pkcs7.NewSigner(keys.Signing.Certificate, keys.Signing.Key)
	if err != nil {
		return nil, err
	}
	seed := sha256.Sum256([]byte("intact host seed\x00" + s.Disk.Seed))
	progress("kernel and modules")
	// The root depends on nothing the kernel step makes: it is built on
	// its own goroutine while the kernel is read, its modules resolved and
	// decompressed, and the first initramfs archive compressed.
	rootCtx, cancelRoot := context.WithCancel(ctx)
	defer cancelRoot()
	type rootResult struct {
		r   *rootImage
		err error
	}
	rootCh := make(chan rootResult, 1)
	progress("root: EROFS and dm-verity tree")
	go func() {
		r, err := buildRoot(rootCtx, s, opts.OutDir, seed, epoch)
		rootCh <- rootResult{r, err}
	}()
	rootDone := false
	defer func() {
		if !rootDone { // a kernel-side failure: stop the root, wait, leave nothing
			cancelRoot()
			if rr := <-rootCh; rr.err == nil {
				rr.r.abort()
			}
		}
	}()
	var kern *Kernel
	if s.Kernel.Deb != "" {
		kern, err = LoadKernelDeb(s.Path(s.Kernel.Deb))
	} else {
		kern, err = LoadKernel(s.Path(s.Kernel.Vmlinuz), s.Path(s.Kernel.Modules))
	}
	if err != nil {
		return nil, err
	}
	mods, err := kern.ResolveModules(append(append([]string(nil), DefaultModules...), s.Boot.Modules...))
	if err != nil {
		return nil, err
	}
	initBin, err := findIntactInit(s)
	if err != nil {
		return nil, err
	}
	stub, err := readLimited(s.Path(s.Boot.Stub), 16<<20)
	if err != nil {
		return nil, fmt.Errorf("host: systemd-stub: %w (install systemd-boot-efi or set boot.stub)", err)
	}

	m := &Manifest{Version: 1, KernelRelease: kern.Release, SourceDateEpoch: epoch}
	// The initramfs is two concatenated archives (the kernel unpacks them
	// in order): the init and the modules, which do not depend on the root
	// and are built and compressed while the root is, then the
	// configuration and the policy.
	baseInitrd, err := baseInitramfs(kern, mods, initBin, s.Boot.Compression, epoch)
	if err != nil {
		return nil, err
	}
	rr := <-rootCh
	rootDone = true
	if rr.err != nil {
		return nil, rr.err
	}
	root := rr.r
	if err := root.commit(); err != nil {
		return nil, err
	}
	// The root and its tree go into the disk image while the rest is
	// built (the ESP, the last partition, follows at the end).
	disk, err := startDisk(opts.OutDir, root)
	if err != nil {
		return nil, err
	}
	defer disk.abort()
	m.RootHash = hex.EncodeToString(root.hash)
	m.Root.Source, m.Root.Size, m.Root.Inodes = s.Root.Source, root.size, root.inodes
	m.Verity.Verity, m.Verity.UUID = root.cfg, root.uuid

	progress("root-hash signature")
	sigDER, err := signer.Sign([]byte(m.RootHash), pkcs7.SignOptions{})
	if err != nil {
		return nil, fmt.Errorf("host: sign root hash: %w", err)
	}
	fp := sha256.Sum256(keys.Signing.Certificate.Raw)
	sigJSON := bootcfg.Signature{RootHash: m.RootHash, Signature: base64.StdEncoding.EncodeToString(sigDER),
		CertificateFingerprint: hex.EncodeToString(fp[:])}
	sigPart, err := sigJSON.Marshal()
	if err != nil {
		return nil, err
	}
	m.Signature.Signer, m.Signature.CertificateFingerprint = keys.Signing.Certificate.Subject.String(), sigJSON.CertificateFingerprint
	if err := atomicfile.WriteFile(filepath.Join(opts.OutDir, SigFile), bytes.TrimRight(sigPart, "\x00"), 0o644); err != nil {
		return nil, err
	}

	progress("IPE policy")
	policyBlob, policyText, err := buildPolicy(s, root.hash, signer)
	if err != nil {
		return nil, err
	}
	pol, err := ipe.Parse(policyText)
	if err != nil {
		return nil, fmt.Errorf("host: policy: %w", err)
	}
	m.Policy.Name, m.Policy.Version, m.Policy.Text = pol.Name, pol.Version.String(), string(policyText)
	m.Policy.SHA256 = sha256hex(policyBlob)
	if err := atomicfile.WriteFile(filepath.Join(opts.OutDir, PolicyFile), policyBlob, 0o644); err != nil {
		return nil, err
	}

	progress("initramfs")
	cfg := &bootcfg.Config{Version: 1, KernelRelease: kern.Release, RootHash: m.RootHash, Verity: root.cfg,
		VerityOptions: s.Boot.VerityOptions, RootFSType: "erofs", Init: []string{s.Boot.Init}, OnFailure: s.Boot.OnFailure,
		DropCapabilities: s.Boot.DropCapabilities, TrustMachineKeyring: s.Boot.TrustMachineKeyring}
	if cfg.DropCapabilities == nil {
		cfg.DropCapabilities = DefaultDropCapabilities
	}
	cfg.Modules = append(append([]string(nil), DefaultModules...), s.Boot.Modules...)
	cfg.Var.Mode, cfg.Etc.Mode = s.Var.Mode, s.Etc.Mode
	if s.Var.Mode == bootcfg.VarTmpfs {
		cfg.Var.Size = s.Var.Size
	} else {
		cfg.Var.FSType = "ext4"
	}
	cfg.Policy.Name, cfg.Policy.Version, cfg.Policy.Present = pol.Name, pol.Version.String(), true
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("host: %w", err)
	}
	tail, err := configInitramfs(cfg, policyBlob, s.Boot.Compression, epoch)
	if err != nil {
		return nil, err
	}
	initrd := append(baseInitrd, tail...)
	m.Initramfs.Size, m.Initramfs.SHA256, m.Initramfs.Compression = int64(len(initrd)), sha256hex(initrd), s.Boot.Compression
	for _, md := range mods {
		m.Initramfs.Modules = append(m.Initramfs.Modules, md.Name)
	}
	if err := atomicfile.WriteFile(filepath.Join(opts.OutDir, InitrdFile), initrd, 0o644); err != nil {
		return nil, err
	}

	progress("UKI")
	osrel, err := osRelease(s)
	if err != nil {
		return nil, err
	}
	m.Cmdline = s.Boot.Cmdline
	img, err := uki.Build(uki.Input{Stub: stub, Linux: kern.Vmlinuz, Initrds: [][]byte{initrd}, Cmdline: s.Boot.Cmdline,
		OSRelease: osrel, Uname: kern.Release})
	if err != nil {
		return nil, err
	}
	signed, err := efi.Sign(img, efi.Signer{Certificate: keys.DB.Certificate, Key: keys.DB.Key}, efi.SignOptions{})
	if err != nil {
		return nil, err
	}
	ad, err := efi.Digest(bytes.NewReader(signed), int64(len(signed)), sha256Hash)
	if err != nil {
		return nil, err
	}
	m.UKI.Size, m.UKI.SHA256, m.UKI.AuthenticodeSHA256 = int64(len(signed)), sha256hex(signed), hex.EncodeToString(ad)
	m.UKI.Signer = keys.DB.Certificate.Subject.String()
	if err := atomicfile.WriteFile(filepath.Join(opts.OutDir, UKIFile), signed, 0o644); err != nil {
		return nil, err
	}

	progress("disk image")
	if err := disk.finish(ctx, s, signed, sigPart, seed, epoch, m); err != nil {
		return nil, err
	}
	m.Seconds = time.Since(start).Seconds()
	js, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(opts.OutDir, ManifestFile), append(js, '\n'), 0o644); err != nil {
		return nil, err
	}
	return m, nil
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// derive returns 16 bytes derived from the seed for a purpose.
func derive(seed [32]byte, purpose string) [16]byte {
	s := sha256.Sum256(append(seed[:], purpose...))
	var u [16]byte
	copy(u[:], s[:16])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

func uuidString(u [16]byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// rootImage is the built root: image and tree files and their parameters.
type rootImage struct {
	hash         []byte
	cfg          bootcfg.Verity
	uuid         string
	size, vsize  int64
	inodes       uint64
	image, hashf string
	// files are root.verity and root.erofs, written but not yet named:
	// Build commits them once the kernel side has succeeded too, or
	// aborts them.
	files []*atomicfile.File
}

func (r *rootImage) commit() error { return atomicfile.CommitAll(r.files...) }

func (r *rootImage) abort() {
	for _, f := range r.files {
		f.Abort()
	}
}

// teeWriter writes the image to the file and the verity builder at once.
type teeWriter struct {
	w   *bufio.Writer
	b   *verity.Builder
	buf []byte
}

func (t *teeWriter) Write(p []byte) (int, error) {
	if _, err := t.w.Write(p); err != nil {
		return 0, err
	}
	return t.b.Write(p)
}

// ReadFrom copies a large file's data (the EROFS writer passes each file
// as an io.LimitedReader) in 1 MiB reads, writing it to the image file
// directly rather than through the buffer; small files go through Write.
func (t *teeWriter) ReadFrom(r io.Reader) (int64, error) {
	if lr, ok := r.(*io.LimitedReader); !ok || lr.N < 256<<10 {
		return io.CopyBuffer(struct{ io.Writer }{t}, r, make([]byte, 64<<10))
	}
	if err := t.w.Flush(); err != nil {
		return 0, err
	}
	if t.buf == nil {
		t.buf = make([]byte, 1<<20)
	}
	var n int64
	for {
		m, err := io.ReadFull(r, t.buf)
		if m > 0 {
			if _, werr := t.w.Write(t.buf[:m]); werr != nil {
				return n, werr
			}
			if _, werr := t.b.Write(t.buf[:m]); werr != nil {
				return n, werr
			}
			n += int64(m)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// buildRoot writes the EROFS root and its dm-verity tree (with
// superblock) in one pass over the input.
func buildRoot(ctx context.Context, s *Spec, out string, seed [32]byte, epoch int64) (*rootImage, error) {
	salt := sha256.Sum256(append(seed[:], "verity salt"...))
	vuuid := derive(seed, "verity uuid")
	p := verity.DefaultParams()
	p.Salt, p.UUID = salt[:], vuuid
	b, err := verity.NewBuilder(p, nil)
	if err != nil {
		return nil, fmt.Errorf("host: %w", err)
	}
	defer b.Close()
	imgPath := filepath.Join(out, RootFile)
	img, err := atomicfile.Create(imgPath, 0o644)
	if err != nil {
		return nil, err
	}
	var hf *atomicfile.File
	ok := false
	defer func() { // on failure nothing is left; on success the caller commits
		if !ok {
			img.Abort()
			if hf != nil {
				hf.Abort()
			}
		}
	}()
	tee := &teeWriter{w: bufio.NewWriterSize(img, 1<<20), b: b}
	w, err := erofs.NewWriter(tee, erofs.Options{Layout: erofs.LayoutFull, UUID: derive(seed, "erofs uuid"), MaxEntries: -1})
	if err != nil {
		return nil, fmt.Errorf("host: %w", err)
	}
	src := s.Path(s.Root.Source)
	st, err := os.Stat(src)
	switch {
	case err == nil && st.IsDir():
		if err := w.AddDir(ctx, src); err != nil {
			return nil, fmt.Errorf("host: root %s: %w", src, err)
		}
	case err == nil:
		f, err := os.Open(src)
		if err != nil {
			return nil, err
		}
		r, _, err := layer.Decompress(bufio.NewReaderSize(f, 1<<20))
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("host: root %s: %w", src, err)
		}
		_, err = w.AddTar(ctx, r)
		r.Close()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("host: root %s: %w", src, err)
		}
	default:
		if ref, ropts, ok := ociRef(s.Root.Source); ok {
			if err := addOCI(ctx, w, s.Root.Source, ref, ropts, out); err != nil {
				return nil, err
			}
			break
		}
		return nil, fmt.Errorf("host: root %s: %w", src, err)
	}
	for _, f := range s.Root.Files {
		if err := addFile(w, s.Path(f.Src), f, epoch); err != nil {
			return nil, err
		}
	}
	for _, d := range strings.Fields(rootMountDirs) {
		if !w.Has(d) {
			mode := uint32(0o755)
			if d == "tmp" {
				mode = 0o1777
			}
			if err := w.Add(&erofs.Entry{Path: d, Type: erofs.TypeDir, Mode: mode, MtimeSec: epoch}, nil); err != nil {
				return nil, fmt.Errorf("host: %w", err)
			}
		}
	}
	if !w.Has(strings.TrimPrefix(s.Boot.Init, "/")) {
		return nil, fmt.Errorf("%w: the root has no %s (boot.init, --init)", ErrSpec, s.Boot.Init)
	}
	res, err := w.Finish(ctx, 0)
	if err != nil {
		return nil, fmt.Errorf("host: %w", err)
	}
	if err := tee.w.Flush(); err != nil {
		return nil, fmt.Errorf("host: %w", err)
	}
	if _, err := img.WriteAt(res.Head, 0); err != nil {
		return nil, fmt.Errorf("host: %w", err)
	}
	if err := b.UpdateBlock(0, res.Head); err != nil {
		return nil, fmt.Errorf("host: %w", err)
	}
	hashPath := filepath.Join(out, VerityFile)
	if hf, err = atomicfile.Create(hashPath, 0o644); err != nil {
		return nil, err
	}
	vr, err := b.Finish(ctx, hf, 0)
	if err != nil {
		return nil, fmt.Errorf("host: verity: %w", err)
	}
	vsize, err := hf.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	r := &rootImage{hash: vr.RootHash, uuid: uuidString(vuuid), size: res.Size, vsize: vsize,
		inodes: res.Inodes, image: imgPath, hashf: hashPath, files: []*atomicfile.File{hf, img}}
	ok = true
	r.cfg = bootcfg.Verity{Algorithm: vr.Params.Algorithm, DataBlockSize: vr.Params.DataBlockSize, HashBlockSize: vr.Params.HashBlockSize,
		DataBlocks: vr.Params.DataBlocks, Salt: hex.EncodeToString(vr.Params.Salt), Superblock: !vr.Params.NoSuperblock}
	return r, nil
}

// addFile adds an extra file (root.files) owned by root.
func addFile(w *erofs.Writer, src string, f File, epoch int64) error {
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("host: root.files: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("host: root.files: %s is not a regular file", src)
	}
	mode := uint32(fi.Mode().Perm())
	if f.Mode != "" {
		v, _ := strconv.ParseUint(f.Mode, 8, 32)
		mode = uint32(v)
	}
	dst := strings.TrimPrefix(f.Dst, "/")
	// Parent directories the root lacks are created (0755).
	parts := strings.Split(dst, "/")
	for i := 1; i < len(parts); i++ {
		d := strings.Join(parts[:i], "/")
		if !w.Has(d) {
			if err := w.Add(&erofs.Entry{Path: d, Type: erofs.TypeDir, Mode: 0o755, MtimeSec: epoch}, nil); err != nil {
				return fmt.Errorf("host: root.files %s: %w", f.Dst, err)
			}
		}
	}
	r, err := os.Open(src)
	if err != nil {
		return err
	}
	defer r.Close()
	if err := w.Add(&erofs.Entry{Path: dst, Type: erofs.TypeRegular, Mode: mode, MtimeSec: epoch, Size: fi.Size()}, r); err != nil {
		return fmt.Errorf("host: root.files %s: %w", f.Dst, err)
	}
	return nil
}

// buildPolicy returns the signed policy blob and its text.
func buildPolicy(s *Spec, rootHash []byte, signer *pkcs7.Signer) ([]byte, []byte, error) {
	if s.Policy.File != "" {
		b, err := readLimited(s.Path(s.Policy.File), 4<<20)
		if err != nil {
			return nil, nil, fmt.Errorf("host: policy: %w", err)
		}
		if ipe.IsPKCS7(b) {
			text, err := ipe.ExtractPolicy(b)
			if err != nil {
				return nil, nil, fmt.Errorf("host: policy %s: %w", s.Policy.File, err)
			}
			return b, text, nil
		}
		signed, err := ipe.Sign(b, signer)
		if err != nil {
			return nil, nil, fmt.Errorf("host: policy %s: %w", s.Policy.File, err)
		}
		return signed, b, nil
	}
	v, _ := ipe.ParseVersion(s.Policy.Version)
	// Kernel modules and firmware come from the initramfs and this root
	// only: dmverity_signature=TRUE would also admit every signed
	// container layer (and any volume a planted key signed). Drivers on
	// their own volumes come with a policy update (intact driver pack).
	in := ipe.Intent{Name: s.Policy.Name, Version: v, Ops: []ipe.Op{ipe.OpExecute, ipe.OpKModule, ipe.OpFirmware},
		AllowInitramfs: true, AllowSignedVerity: *s.Policy.SignedVerity, SignedVerityOps: []ipe.Op{ipe.OpExecute},
		RootHashes: []ipe.Digest{{Alg: "sha256", Value: rootHash}}, RootHashOps: []ipe.Op{ipe.OpKModule, ipe.OpFirmware},
		Comment: []string{"intact host policy: code runs only from the initramfs and signed dm-verity devices;",
			"kernel modules and firmware only from the initramfs and this root."}}
	if s.Policy.PinRoot {
		in.RootHashOps = nil // the root's hash for EXECUTE too
	}
	text, err := ipe.Generate(in)
	if err != nil {
		return nil, nil, fmt.Errorf("host: policy: %w", err)
	}
	signed, err := ipe.Sign(text, signer)
	if err != nil {
		return nil, nil, fmt.Errorf("host: policy: %w", err)
	}
	return signed, text, nil
}

// osRelease returns the os-release text for .osrel: the specification's,
// else the root directory's.
func osRelease(s *Spec) (string, error) {
	if s.Boot.OSRelease != "" {
		if p, ok := strings.CutPrefix(s.Boot.OSRelease, "@"); ok {
			b, err := readLimited(s.Path(p), 1<<20)
			return string(b), err
		}
		return s.Boot.OSRelease, nil
	}
	src := s.Path(s.Root.Source)
	for _, p := range []string{"etc/os-release", "usr/lib/os-release"} {
		if b, err := readLimited(filepath.Join(src, p), 1<<20); err == nil {
			return string(b), nil
		}
	}
	return "", nil
}

// findIntactInit locates the intact-init binary and checks it is static.
func findIntactInit(s *Spec) (string, error) {
	cands := []string{}
	if s.Boot.IntactInit != "" {
		cands = append(cands, s.Path(s.Boot.IntactInit))
	} else {
		if exe, err := os.Executable(); err == nil {
			cands = append(cands, filepath.Join(filepath.Dir(exe), "intact-init"))
		}
		if p, err := exec.LookPath("intact-init"); err == nil {
			cands = append(cands, p)
		}
	}
	for _, c := range cands {
		f, err := elf.Open(c)
		if err != nil {
			continue
		}
		dynamic := false
		for _, p := range f.Progs {
			dynamic = dynamic || p.Type == elf.PT_INTERP
		}
		f.Close()
		if dynamic {
			return "", fmt.Errorf("host: %s is dynamically linked; build it with CGO_ENABLED=0", c)
		}
		return c, nil
	}
	return "", fmt.Errorf("host: no intact-init binary (build it: CGO_ENABLED=0 go build -o bin/ ./cmd/intact-init, then pass --intact-init or put it next to intact)")
}

// baseInitramfs is the first archive of the initramfs: the directories,
// the console, the init and the modules with their modules.dep,
// compressed.
func baseInitramfs(k *Kernel, mods []Module, initBin, compression string, epoch int64) ([]byte, error) {
	var raw bytes.Buffer
	w := initramfs.NewWriter(&raw)
	w.SetModTime(uint32(epoch))
	for _, d := range []string{"dev", "proc", "sys", "run", "sysroot", "tmp", "etc/intact"} {
		if err := w.Dir(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := w.CharDev("dev/console", 0o600, 5, 1); err != nil {
		return nil, err
	}
	initData, err := readLimited(initBin, 64<<20)
	if err != nil {
		return nil, err
	}
	if err := w.Bytes("init", 0o755, initData); err != nil {
		return nil, err
	}
	mdir := strings.TrimPrefix(bootcfg.ModulesDir, "/") + "/" + k.Release + "/"
	// Modules go in uncompressed: the initramfs as a whole is compressed,
	// and the kernel then has nothing to decompress per module at boot.
	mods = append([]Module(nil), mods...)
	for i := range mods {
		b, err := readModule(k, mods[i].Path)
		if err != nil {
			return nil, err
		}
		mods[i].Path = plainModulePath(mods[i].Path)
		deps := make([]string, len(mods[i].Deps))
		for j, d := range mods[i].Deps {
			deps[j] = plainModulePath(d)
		}
		mods[i].Deps = deps
		if err := w.Bytes(mdir+mods[i].Path, 0o644, b); err != nil {
			return nil, err
		}
	}
	if err := w.Bytes(mdir+"modules.dep", 0o644, modulesDep(mods)); err != nil {
		return nil, err
	}
	if b, err := readFS(k, "modules.builtin"); err == nil {
		if err := w.Bytes(mdir+"modules.builtin", 0o644, b); err != nil {
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return compress(raw.Bytes(), compression)
}

// configInitramfs is the second archive: the init's configuration and the
// signed policy.
func configInitramfs(cfg *bootcfg.Config, policy []byte, compression string, epoch int64) ([]byte, error) {
	var raw bytes.Buffer
	w := initramfs.NewWriter(&raw)
	w.SetModTime(uint32(epoch))
	js, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := w.Bytes(strings.TrimPrefix(bootcfg.ConfigPath, "/"), 0o644, js); err != nil {
		return nil, err
	}
	if err := w.Bytes(strings.TrimPrefix(bootcfg.PolicyPath, "/"), 0o644, policy); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return compress(raw.Bytes(), compression)
}

func compress(raw []byte, compression string) ([]byte, error) {
	switch compression {
	case "none":
		// Archives are concatenated; each starts 4-byte aligned.
		return append(raw, make([]byte, (4-len(raw)%4)%4)...), nil
	case "gzip":
		var out bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&out, gzip.BestCompression)
		if _, err := zw.Write(raw); err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
		return out.Bytes(), nil
	}
	// zstd, single-threaded so the output does not depend on the machine;
	// a 1 MiB window keeps the kernel's decompression workspace small.
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithWindowSize(1<<20), zstd.WithEncoderCRC(true))
	if err != nil {
		return nil, err
	}
	return enc.EncodeAll(raw, nil), nil
}

func readFS(k *Kernel, p string) ([]byte, error) {
	f, err := k.Modules.Open(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKernel, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxModule+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKernel, p, err)
	}
	if len(b) > maxModule {
		return nil, fmt.Errorf("%w: %s is too large", ErrKernel, p)
	}
	return b, nil
}

// epochEnvMu serializes the SOURCE_DATE_EPOCH go-diskfs reads for FAT
// timestamps.
var epochEnvMu sync.Mutex
