// Package driver owns trusted driver volumes: a directory of out-of-tree
// kernel modules (and the firmware they request) packed as an EROFS image
// (package erofs) with a dm-verity tree appended (package verity), a PKCS#7
// signature of its root hash as dm-verity verifies it (package pkcs7:
// detached, over the lowercase hex root hash, signer certificate embedded),
// a JSON manifest, and the IPE rules that trust exactly this volume
// (op=KMODULE and op=FIRMWARE with dmverity_roothash). On the host, Load
// opens the volume with the signature (package veritydev), mounts it
// read-only, points the firmware loader at its firmware/ directory and
// loads its modules with finit_module(2) (package kmod), dependencies
// first, so that IPE judges every module and firmware file by the volume
// it comes from.
//
// The volume is an addition to module signatures, not a replacement: a
// Secure Boot kernel still checks every module's own signature (see
// docs/drivers.md for what the kernel measured).
package driver

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/intact-project/intact/erofs"
	"github.com/intact-project/intact/internal/atomicfile"
	"github.com/intact-project/intact/ipe"
	"github.com/intact-project/intact/kmod"
	"github.com/intact-project/intact/pkcs7"
	"github.com/intact-project/intact/verity"
)

// Sentinel errors.
var (
	// ErrNoModules: the directory holds no module file.
	ErrNoModules = errors.New("driver: no kernel module in the directory")
	// ErrBadVolume: a manifest, signature or image does not fit together.
	ErrBadVolume = errors.New("driver: bad driver volume")
	// ErrPolicy: the IPE policy to extend cannot take the rules.
	ErrPolicy = errors.New("driver: cannot extend the IPE policy")
)

// FirmwareDir is the directory of a volume that Load makes the kernel's
// firmware search path.
const FirmwareDir = "firmware"

// Manifest is the JSON file next to a volume (IMAGE.json).
type Manifest struct {
	Format     string   `json:"format"` // "intact-driver-volume/1"
	RootHash   string   `json:"root_hash"`
	HashOffset uint64   `json:"hash_offset"`
	DataBlocks uint64   `json:"data_blocks"`
	Salt       string   `json:"salt"`
	Modules    []Module `json:"modules"`
	Firmware   []string `json:"firmware,omitempty"` // paths below firmware/
	// IPERules are the rules that trust this volume and nothing else.
	IPERules []string `json:"ipe_rules"`
}

// Module is one module of a volume.
type Module struct {
	Path        string   `json:"path"` // inside the volume
	Name        string   `json:"name"`
	Version     string   `json:"version,omitempty"`
	Vermagic    string   `json:"vermagic,omitempty"`
	Depends     []string `json:"depends,omitempty"`
	Compression string   `json:"compression,omitempty"`
	Signed      bool     `json:"signed"`
	Signer      string   `json:"signer,omitempty"` // subject of the signer's certificate, if embedded
}

const manifestFormat = "intact-driver-volume/1"

// Paths of a volume's companion files.
func SignaturePath(img string) string { return img + ".p7s" }

// ManifestPath is IMAGE.json.
func ManifestPath(img string) string { return img + ".json" }

// RulesPath is IMAGE.ipe, the IPE rules that trust the volume.
func RulesPath(img string) string { return img + ".ipe" }

// PackOptions configures Pack.
type PackOptions struct {
	// Signer signs the root hash (a leaf chained to a CA the kernel
	// trusts for dm-verity: builtin, secondary, or on Debian's kernel the
	// UEFI db). Nil writes no signature (the volume is then trusted only
	// through a dmverity_roothash rule).
	Signer *pkcs7.Signer
	// AllowUnsigned packs modules that carry no signature (a Secure Boot
	// kernel refuses them whatever IPE says).
	AllowUnsigned bool
}

// Result is what Pack wrote.
type Result struct {
	Image, Signature, ManifestFile, Rules string
	Manifest                              Manifest
}

// Pack builds the volume for dir at out (plus out.p7s, out.json, out.ipe).
func Pack(ctx context.Context, dir, out string, opts PackOptions) (*Result, error) {
	mods, fw, err := scan(dir)
	if err != nil {
		return nil, err
	}
	for _, m := range mods {
		if !m.Signed && !opts.AllowUnsigned {
			return nil, fmt.Errorf("driver: %s is not signed; a Secure Boot kernel refuses unsigned modules whatever IPE allows (sign it with 'intact module sign', or pack anyway with AllowUnsigned)", m.Path)
		}
	}
	f, err := atomicfile.Create(out, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Abort()
	w, err := erofs.NewWriter(f, erofs.Options{Layout: erofs.LayoutFull})
	if err != nil {
		return nil, err
	}
	// A fixed UUID from the content keeps the image deterministic.
	if err := w.AddDir(ctx, dir); err != nil {
		return nil, fmt.Errorf("driver: %w", err)
	}
	res, err := w.Finish(ctx, 0)
	if err != nil {
		return nil, fmt.Errorf("driver: %w", err)
	}
	if _, err := f.WriteAt(res.Head, 0); err != nil {
		return nil, fmt.Errorf("driver: %w", err)
	}
	p := verity.DefaultParams()
	p.DataBlocks = uint64(res.Size) / uint64(p.DataBlockSize)
	if uint64(res.Size)%uint64(p.DataBlockSize) != 0 {
		return nil, fmt.Errorf("driver: EROFS image of %d bytes is not a multiple of %d", res.Size, p.DataBlockSize)
	}
	// Salt: derived from the image, so the same directory gives the same
	// volume and two different volumes never share a salt.
	h := sha256.New()
	if _, err := f.Seek(0, 0); err != nil {
		return nil, fmt.Errorf("driver: %w", err)
	}
	if _, err := copyN(h, f, res.Size); err != nil {
		return nil, fmt.Errorf("driver: %w", err)
	}
	p.Salt = h.Sum(nil)
	p.HashOffset = uint64(res.Size)
	copy(p.UUID[:], p.Salt[16:32])
	p.UUID[6] = p.UUID[6]&0x0f | 0x40
	p.UUID[8] = p.UUID[8]&0x3f | 0x80
	if err := p.ValidateSameDevice(); err != nil {
		return nil, fmt.Errorf("driver: %w", err)
	}
	vr, err := verity.Format(ctx, f, p, f, nil)
	if err != nil {
		return nil, fmt.Errorf("driver: verity: %w", err)
	}
	root := verity.RootHashHex(vr.RootHash)
	man := Manifest{Format: manifestFormat, RootHash: root, HashOffset: p.HashOffset, DataBlocks: p.DataBlocks,
		Salt: p.SaltHex(), Modules: mods, Firmware: fw, IPERules: Rules(vr.RootHash)}
	r := &Result{Image: out, ManifestFile: ManifestPath(out), Rules: RulesPath(out), Manifest: man}
	var sig []byte
	if opts.Signer != nil {
		if sig, err = opts.Signer.Sign([]byte(root), pkcs7.SignOptions{}); err != nil {
			return nil, fmt.Errorf("driver: sign root hash: %w", err)
		}
		r.Signature = SignaturePath(out)
	}
	mj, _ := json.MarshalIndent(man, "", "  ")
	rules := "# IPE rules trusting the driver volume " + filepath.Base(out) + " (root hash " + root + ")\n" + strings.Join(man.IPERules, "\n") + "\n"
	// Companions first, the image last: a present image always has them.
	if sig != nil {
		if err := atomicfile.WriteFile(r.Signature, sig, 0o644); err != nil {
			return nil, err
		}
	}
	if err := atomicfile.WriteFile(r.ManifestFile, append(mj, '\n'), 0o644); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(r.Rules, []byte(rules), 0o644); err != nil {
		return nil, err
	}
	if err := f.Commit(); err != nil {
		return nil, err
	}
	return r, nil
}

func copyN(dst interface{ Write([]byte) (int, error) }, src interface{ Read([]byte) (int, error) }, n int64) (int64, error) {
	buf := make([]byte, 1<<20)
	var done int64
	for done < n {
		m := int64(len(buf))
		if n-done < m {
			m = n - done
		}
		k, err := src.Read(buf[:m])
		dst.Write(buf[:k])
		done += int64(k)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// Rules are the IPE rules that trust a volume with this root hash for
// module and firmware loads, and nothing else.
func Rules(rootHash []byte) []string {
	d := ipe.Digest{Alg: "sha256", Value: rootHash}.String()
	return []string{
		"op=KMODULE dmverity_roothash=" + d + " action=ALLOW",
		"op=FIRMWARE dmverity_roothash=" + d + " action=ALLOW",
	}
}

// scan lists the modules (every *.ko, *.ko.xz, *.ko.zst) and the firmware
// files (below firmware/) of dir and reads each module's .modinfo and
// signature.
func scan(dir string) ([]Module, []string, error) {
	var mods []Module
	var fw []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if d.Type()&fs.ModeSymlink != 0 {
			return fmt.Errorf("%w: %s is a symlink; a driver volume holds regular files only", ErrBadVolume, rel)
		}
		if d.IsDir() || !d.Type().IsRegular() {
			return nil
		}
		if strings.HasPrefix(rel, FirmwareDir+"/") {
			fw = append(fw, strings.TrimPrefix(rel, FirmwareDir+"/"))
			return nil
		}
		if !kmod.IsModuleName(d.Name()) {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		m, err := describe(rel, data)
		if err != nil {
			return fmt.Errorf("driver: %s: %w", rel, err)
		}
		mods = append(mods, m)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if len(mods) == 0 {
		return nil, nil, fmt.Errorf("%w %s", ErrNoModules, dir)
	}
	sort.Slice(mods, func(i, j int) bool { return mods[i].Path < mods[j].Path })
	seen := map[string]string{}
	for _, m := range mods {
		if prev, ok := seen[m.Name]; ok {
			return nil, nil, fmt.Errorf("%w: module %s is both %s and %s", ErrBadVolume, m.Name, prev, m.Path)
		}
		seen[m.Name] = m.Path
	}
	return mods, fw, nil
}

func describe(rel string, data []byte) (Module, error) {
	raw, c, err := kmod.Decompress(data)
	if err != nil {
		return Module{}, err
	}
	info, err := kmod.ReadInfo(raw)
	if err != nil {
		return Module{}, err
	}
	m := Module{Path: rel, Name: info.Name, Version: info.Version, Vermagic: info.Vermagic, Depends: info.Depends}
	if c != kmod.None {
		m.Compression = c.String()
	}
	pm, err := kmod.Parse(raw)
	if err != nil {
		return Module{}, err
	}
	if pm.Signature != nil {
		m.Signed = true
		if sd, err := pkcs7.Parse(pm.Signature.PKCS7); err == nil {
			for _, cert := range sd.Certificates {
				if len(sd.Signers) > 0 && sd.Signers[0].SerialNumber != nil && cert.SerialNumber.Cmp(sd.Signers[0].SerialNumber) == 0 {
					m.Signer = cert.Subject.String()
				}
			}
		}
	}
	return m, nil
}

// LoadOrder returns the volume's modules with every module after the
// volume's modules it depends on (dependencies outside the volume must
// already be loaded).
func LoadOrder(mods []Module) ([]Module, error) {
	byName := map[string]Module{}
	for _, m := range mods {
		byName[norm(m.Name)] = m
	}
	state := map[string]int{}
	var out []Module
	var visit func(m Module, chain []string) error
	visit = func(m Module, chain []string) error {
		n := norm(m.Name)
		switch state[n] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("%w: dependency cycle %s", ErrBadVolume, strings.Join(append(chain, m.Name), " -> "))
		}
		state[n] = 1
		for _, d := range m.Depends {
			if dep, ok := byName[norm(d)]; ok {
				if err := visit(dep, append(chain, m.Name)); err != nil {
					return err
				}
			}
		}
		state[n] = 2
		out = append(out, m)
		return nil
	}
	for _, m := range mods {
		if err := visit(m, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func norm(s string) string { return strings.ReplaceAll(s, "-", "_") }

// ExtendPolicy inserts a volume's rules into an IPE policy text after its
// DEFAULT lines and gives it version (which must be newer than the
// policy's, as the kernel's update requires). The result parses.
func ExtendPolicy(text []byte, rules []string, version ipe.Version) ([]byte, error) {
	pol, err := ipe.Parse(text)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPolicy, err)
	}
	if !pol.Version.Less(version) {
		return nil, fmt.Errorf("%w: version %s is not newer than the policy's %s (the kernel refuses the update with ESTALE)", ErrPolicy, version, pol.Version)
	}
	lines := strings.Split(string(text), "\n")
	insert := pol.HeaderLine // after the header if there is no DEFAULT
	if pol.GlobalDefaultLine > insert {
		insert = pol.GlobalDefaultLine
	}
	for _, l := range pol.OpDefaultLine {
		if l > insert {
			insert = l
		}
	}
	var out []string
	for i, l := range lines {
		if i+1 == pol.HeaderLine {
			l = fmt.Sprintf("policy_name=%s policy_version=%s", pol.Name, version)
		}
		out = append(out, l)
		if i+1 == insert {
			out = append(out, rules...)
		}
	}
	res := []byte(strings.Join(out, "\n"))
	if _, err := ipe.Parse(res); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPolicy, err)
	}
	return res, nil
}
