// Package bootcfg is the contract between `intact host build` and
// intact-init, the Go init in the initramfs of an immutable host: the
// configuration the builder bakes into the initramfs (expected root hash,
// verity parameters, modules, writable layers, IPE policy, the root's
// init), the Discoverable Partitions Specification type GUIDs that
// identify the root, root-verity and root-verity-sig partitions, the
// root-verity-sig partition's JSON, and a small GPT reader. It is kept free
// of heavy dependencies so that the init stays small.
//
// Formats: UAPI group Discoverable Partitions Specification (DPS) for the
// partition types and the signature JSON; UEFI GPT; docs/host.md for the
// configuration.
package bootcfg

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
)

// Paths inside the initramfs.
const (
	ConfigPath = "/etc/intact/init.json"
	PolicyPath = "/etc/intact/policy.p7s"
	ModulesDir = "/lib/modules" // <release>/modules.dep and the modules
)

// DPS partition type GUIDs (x86-64) and the ESP's.
const (
	TypeESP           = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
	TypeRootX86       = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
	TypeRootVerityX86 = "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5"
	TypeRootSigX86    = "41092b05-9fc8-4523-994f-2def0408b176"
	TypeVar           = "4d21b016-b534-45c2-a9fb-5c16e091fd2d"
)

// Writable layer modes.
const (
	VarTmpfs     = "tmpfs"     // /var is a tmpfs (default)
	VarPartition = "partition" // /var is the ext4 file system on the DPS var partition
	EtcOverlay   = "overlay"   // /etc is an overlay: the root's /etc under a tmpfs upper layer (default)
	EtcReadOnly  = "readonly"  // /etc stays the root's, read-only
)

// Failure actions.
const (
	FailHalt     = "halt"
	FailPowerOff = "poweroff"
	FailReboot   = "reboot"
)

// Verity are the dm-verity parameters of the root.
type Verity struct {
	Algorithm     string `json:"algorithm"`
	DataBlockSize uint32 `json:"data_block_size"`
	HashBlockSize uint32 `json:"hash_block_size"`
	DataBlocks    uint64 `json:"data_blocks"`
	Salt          string `json:"salt"` // hex
	// Superblock: the root-verity partition starts with veritysetup's
	// superblock (the tree follows in the next hash block).
	Superblock bool `json:"superblock"`
}

// Config is the init's configuration (JSON at ConfigPath).
type Config struct {
	Version       int    `json:"version"` // 1
	KernelRelease string `json:"kernel_release"`
	// Modules are loaded in order, each after its dependencies (from
	// ModulesDir/<release>/modules.dep).
	Modules []string `json:"modules"`
	// RootHash is the expected dm-verity root hash (lowercase hex). The
	// root-verity-sig partition must name the same one.
	RootHash string `json:"root_hash"`
	Verity   Verity `json:"verity"`
	// VerityOptions are extra dm-verity table options
	// (restart_on_corruption, panic_on_corruption, ...).
	VerityOptions []string `json:"verity_options,omitempty"`
	RootFSType    string   `json:"root_fstype"` // "erofs"
	Var           struct {
		Mode   string `json:"mode"`             // VarTmpfs or VarPartition
		Size   string `json:"size,omitempty"`   // tmpfs size= option, e.g. "50%"
		FSType string `json:"fstype,omitempty"` // for VarPartition; "ext4"
	} `json:"var"`
	Etc struct {
		Mode string `json:"mode"` // EtcOverlay or EtcReadOnly
	} `json:"etc"`
	// Policy is the IPE policy: its name (for the log) and whether one is
	// shipped at PolicyPath.
	Policy struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		Present bool   `json:"present"`
	} `json:"policy"`
	// Init is the argv of the root's init.
	Init []string `json:"init"`
	// DropCapabilities are removed from the capability bounding set once
	// the IPE policy is active, before the root's init runs: no process
	// of the host, root in a privileged container included, can gain
	// them again. Names without CAP_, lowercase ("mac_admin": IPE's
	// enforce switch and policy loads need it).
	DropCapabilities []string `json:"drop_capabilities,omitempty"`
	// TrustMachineKeyring keeps .machine (MOK keys) linked into
	// .secondary_trusted_keys; by default the init unlinks it before
	// anything else (see keyring.DistrustMachine).
	TrustMachineKeyring bool `json:"trust_machine_keyring,omitempty"`
	// OnFailure is what the init does after printing a failure:
	// FailHalt (default), FailPowerOff or FailReboot. Never a shell.
	OnFailure string `json:"on_failure,omitempty"`
}

// Validate checks a configuration for the fields the init relies on.
func (c *Config) Validate() error {
	if c.Version != 1 {
		return fmt.Errorf("bootcfg: version %d (want 1)", c.Version)
	}
	if b, err := hex.DecodeString(c.RootHash); err != nil || len(b) < 20 || c.RootHash != strings.ToLower(c.RootHash) {
		return fmt.Errorf("bootcfg: root hash %q is not lowercase hex of a digest", c.RootHash)
	}
	if _, err := hex.DecodeString(c.Verity.Salt); err != nil {
		return fmt.Errorf("bootcfg: salt %q is not hex", c.Verity.Salt)
	}
	if c.Verity.DataBlocks == 0 || c.Verity.DataBlockSize == 0 || c.Verity.HashBlockSize == 0 || c.Verity.Algorithm == "" {
		return errors.New("bootcfg: incomplete verity parameters")
	}
	switch c.Var.Mode {
	case VarTmpfs, VarPartition:
	default:
		return fmt.Errorf("bootcfg: var mode %q (tmpfs or partition)", c.Var.Mode)
	}
	switch c.Etc.Mode {
	case EtcOverlay, EtcReadOnly:
	default:
		return fmt.Errorf("bootcfg: etc mode %q (overlay or readonly)", c.Etc.Mode)
	}
	switch c.OnFailure {
	case "", FailHalt, FailPowerOff, FailReboot:
	default:
		return fmt.Errorf("bootcfg: on_failure %q (halt, poweroff or reboot)", c.OnFailure)
	}
	if len(c.Init) == 0 || !strings.HasPrefix(c.Init[0], "/") {
		return fmt.Errorf("bootcfg: init %q is not an absolute path", c.Init)
	}
	return nil
}

// Parse decodes and validates a configuration.
func Parse(b []byte) (*Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("bootcfg: %w", err)
	}
	return &c, c.Validate()
}

// SigPartitionSize is the size the signature JSON is padded to (with NULs).
const SigPartitionSize = 4096

// Signature is the content of a root-verity-sig partition (DPS).
type Signature struct {
	RootHash string `json:"rootHash"`
	// Signature is the detached PKCS#7 over the lowercase hex root hash,
	// base64 (standard) encoded DER.
	Signature string `json:"signature"`
	// CertificateFingerprint is the SHA-256 of the signer certificate's
	// DER, lowercase hex.
	CertificateFingerprint string `json:"certificateFingerprint"`
}

// Marshal returns the JSON padded with NULs to SigPartitionSize.
func (s *Signature) Marshal() ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	if len(b) >= SigPartitionSize {
		return nil, fmt.Errorf("bootcfg: signature JSON of %d bytes does not fit %d", len(b), SigPartitionSize)
	}
	return append(b, make([]byte, SigPartitionSize-len(b))...), nil
}

// ParseSignature reads a signature partition's content: JSON, then NULs.
func ParseSignature(b []byte) (*Signature, []byte, error) {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		if len(bytes.Trim(b[i:], "\x00")) != 0 {
			return nil, nil, errors.New("bootcfg: signature partition: data after the NUL padding")
		}
		b = b[:i]
	}
	var s Signature
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&s); err != nil {
		return nil, nil, fmt.Errorf("bootcfg: signature partition: %w", err)
	}
	if s.RootHash == "" || s.Signature == "" {
		return nil, nil, errors.New("bootcfg: signature partition: rootHash or signature missing")
	}
	der, err := base64.StdEncoding.DecodeString(s.Signature)
	if err != nil {
		return nil, nil, fmt.Errorf("bootcfg: signature partition: signature is not base64: %w", err)
	}
	return &s, der, nil
}

// Partition is a GPT partition entry.
type Partition struct {
	Index      int    // 1-based
	Type, UUID string // lowercase GUID strings
	Name       string
	FirstLBA   uint64
	LastLBA    uint64
}

// Offset and Size in bytes for a 512-byte sector disk.
func (p Partition) Offset() int64 { return int64(p.FirstLBA) * 512 }

// Size is the partition's length in bytes (512-byte sectors).
func (p Partition) Size() int64 { return int64(p.LastLBA-p.FirstLBA+1) * 512 }

// ErrNoGPT: the disk has no valid GPT.
var ErrNoGPT = errors.New("bootcfg: no valid GPT")

// ReadGPT reads the primary GPT of a disk with 512-byte sectors (header
// and entry CRCs checked).
func ReadGPT(r io.ReaderAt) ([]Partition, error) {
	le := binary.LittleEndian
	h := make([]byte, 512)
	if _, err := r.ReadAt(h, 512); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoGPT, err)
	}
	if string(h[:8]) != "EFI PART" {
		return nil, fmt.Errorf("%w: no EFI PART signature", ErrNoGPT)
	}
	hsize := le.Uint32(h[12:])
	if hsize < 92 || hsize > 512 {
		return nil, fmt.Errorf("%w: header size %d", ErrNoGPT, hsize)
	}
	crc := le.Uint32(h[16:])
	hc := append([]byte(nil), h[:hsize]...)
	le.PutUint32(hc[16:], 0)
	if crc32.ChecksumIEEE(hc) != crc {
		return nil, fmt.Errorf("%w: header CRC mismatch", ErrNoGPT)
	}
	entLBA := le.Uint64(h[72:])
	n := le.Uint32(h[80:])
	esz := le.Uint32(h[84:])
	if esz < 128 || esz > 4096 || n > 1024 || entLBA == 0 {
		return nil, fmt.Errorf("%w: %d entries of %d bytes", ErrNoGPT, n, esz)
	}
	ents := make([]byte, int(n)*int(esz))
	if _, err := r.ReadAt(ents, int64(entLBA)*512); err != nil {
		return nil, fmt.Errorf("%w: entries: %v", ErrNoGPT, err)
	}
	if crc32.ChecksumIEEE(ents) != le.Uint32(h[88:]) {
		return nil, fmt.Errorf("%w: entry array CRC mismatch", ErrNoGPT)
	}
	var out []Partition
	for i := 0; i < int(n); i++ {
		e := ents[i*int(esz):]
		typ := guidString(e[0:16])
		if typ == "00000000-0000-0000-0000-000000000000" {
			continue
		}
		name := make([]rune, 0, 36)
		for j := 56; j+1 < 128; j += 2 {
			c := le.Uint16(e[j:])
			if c == 0 {
				break
			}
			name = append(name, rune(c))
		}
		out = append(out, Partition{Index: i + 1, Type: typ, UUID: guidString(e[16:32]), Name: string(name),
			FirstLBA: le.Uint64(e[32:]), LastLBA: le.Uint64(e[40:])})
	}
	return out, nil
}

// guidString formats a GUID stored mixed-endian (the first three fields
// little-endian).
func guidString(b []byte) string {
	le := binary.LittleEndian
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", le.Uint32(b), le.Uint16(b[4:]), le.Uint16(b[6:]), b[8:10], b[10:16])
}

// PartitionUUIDs derives the root and root-verity partition UUIDs from the
// root hash as systemd-repart does: the first 128 bits of the hash for the
// data partition, the last 128 bits for the verity partition (version and
// variant bits set as for UUIDv4).
func PartitionUUIDs(rootHash []byte) (root, verity string) {
	f := func(b []byte) string {
		u := append([]byte(nil), b[:16]...)
		u[6] = u[6]&0x0f | 0x40
		u[8] = u[8]&0x3f | 0x80
		return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
	}
	return f(rootHash[:16]), f(rootHash[len(rootHash)-16:])
}
