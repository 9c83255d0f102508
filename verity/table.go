package verity

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// CorruptionMode is what the kernel does when a block fails verification.
type CorruptionMode string

// Corruption modes (dm-verity optional arguments). The zero value returns
// I/O errors, the kernel default.
const (
	CorruptionEIO     CorruptionMode = ""
	CorruptionIgnore  CorruptionMode = "ignore_corruption"
	CorruptionRestart CorruptionMode = "restart_on_corruption"
	CorruptionPanic   CorruptionMode = "panic_on_corruption"
)

// ErrorMode is what the kernel does on an I/O error reading the data or hash
// device (Linux 6.12 and later; veritysetup --error-as-corruption).
type ErrorMode string

// Error modes. The zero value passes I/O errors on, the kernel default.
const (
	ErrorEIO     ErrorMode = ""
	ErrorRestart ErrorMode = "restart_on_error"
	ErrorPanic   ErrorMode = "panic_on_error"
)

// FEC holds the forward-error-correction arguments of a table. This package
// does not compute FEC data; the arguments are passed through.
type FEC struct {
	Device string // device with the FEC data
	Roots  uint32 // Reed-Solomon roots (2..24)
	Blocks uint64 // fec_blocks
	Start  uint64 // fec_start, in data blocks
}

// TableOptions are the optional arguments of the verity target.
type TableOptions struct {
	OnCorruption       CorruptionMode
	OnError            ErrorMode
	IgnoreZeroBlocks   bool
	CheckAtMostOnce    bool
	TryVerifyInTasklet bool
	FEC                *FEC
	// RootHashSigKeyDesc names a "user" key (for example
	// "cryptsetup:<uuid>-<name>") holding the PKCS#7 signature of the root
	// hash; the kernel verifies it when the table is loaded.
	RootHashSigKeyDesc string
}

// Target is one line of a device-mapper table: `<start> <length> <type>
// <params>`, with start and length in 512-byte sectors.
type Target struct {
	Start  uint64
	Length uint64
	Type   string
	Params string
}

// String formats the target as `dmsetup table` prints it.
func (t Target) String() string {
	return fmt.Sprintf("%d %d %s %s", t.Start, t.Length, t.Type, t.Params)
}

// Table returns the dm table line for a verity device over dataDevice and
// hashDevice (paths such as /dev/loop0 or major:minor numbers such as 7:0),
// formatted as cryptsetup's lib/libdevmapper.c does for `veritysetup open`:
//
//	0 <sectors> verity <hash_type> <data_dev> <hash_dev> <data_bs> <hash_bs>
//	  <data_blocks> <hash_start_block> <alg> <root_hex> <salt_hex|-> [<#opts> <opts>...]
//
// The root hash and salt are lowercase hex; a missing salt is "-". Optional
// arguments come in cryptsetup's order: corruption mode, error mode,
// ignore_zero_blocks, check_at_most_once, try_verify_in_tasklet, FEC, then
// root_hash_sig_key_desc. A root-hash signature must be made over exactly the
// hex string written here (RootHashHex).
func Table(p Params, rootHash []byte, dataDevice, hashDevice string, o TableOptions) (Target, error) {
	l, err := p.Layout()
	if err != nil {
		return Target{}, err
	}
	if len(rootHash) != l.DigestSize {
		return Target{}, invalidf("root hash of %d bytes, %s needs %d", len(rootHash), p.Algorithm, l.DigestSize)
	}
	for _, d := range []struct{ what, v string }{{"data device", dataDevice}, {"hash device", hashDevice}} {
		if err := tableWord(d.what, d.v); err != nil {
			return Target{}, err
		}
	}
	var opts []string
	switch o.OnCorruption {
	case CorruptionEIO:
	case CorruptionIgnore, CorruptionRestart, CorruptionPanic:
		opts = append(opts, string(o.OnCorruption))
	default:
		return Target{}, invalidf("unknown corruption mode %q", o.OnCorruption)
	}
	switch o.OnError {
	case ErrorEIO:
	case ErrorRestart, ErrorPanic:
		opts = append(opts, string(o.OnError))
	default:
		return Target{}, invalidf("unknown error mode %q", o.OnError)
	}
	if o.IgnoreZeroBlocks {
		opts = append(opts, "ignore_zero_blocks")
	}
	if o.CheckAtMostOnce {
		opts = append(opts, "check_at_most_once")
	}
	if o.TryVerifyInTasklet {
		opts = append(opts, "try_verify_in_tasklet")
	}
	if f := o.FEC; f != nil {
		if err := tableWord("FEC device", f.Device); err != nil {
			return Target{}, err
		}
		if f.Roots < 2 || f.Roots > 24 {
			return Target{}, invalidf("FEC roots %d (the kernel accepts 2 to 24)", f.Roots)
		}
		opts = append(opts, "use_fec_from_device", f.Device,
			"fec_start", strconv.FormatUint(f.Start, 10),
			"fec_blocks", strconv.FormatUint(f.Blocks, 10),
			"fec_roots", strconv.FormatUint(uint64(f.Roots), 10))
	}
	if o.RootHashSigKeyDesc != "" {
		if err := tableWord("root hash signature key description", o.RootHashSigKeyDesc); err != nil {
			return Target{}, err
		}
		opts = append(opts, "root_hash_sig_key_desc", o.RootHashSigKeyDesc)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d %s %s %d %d %d %d %s %s %s",
		p.HashType, dataDevice, hashDevice, p.DataBlockSize, p.HashBlockSize,
		p.DataBlocks, l.HashStartBlock, p.Algorithm, hex.EncodeToString(rootHash), p.SaltHex())
	if len(opts) > 0 {
		fmt.Fprintf(&b, " %d %s", len(opts), strings.Join(opts, " "))
	}
	return Target{Start: 0, Length: l.DataSize / 512, Type: "verity", Params: b.String()}, nil
}

// tableWord checks a value that becomes one space-separated table argument.
func tableWord(what, v string) error {
	if v == "" {
		return invalidf("empty %s", what)
	}
	if strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return invalidf("%s %q contains white space or control characters", what, v)
	}
	return nil
}

// RootHashHex formats a root hash as the kernel and veritysetup print it:
// lowercase hex. Signatures are made over this string.
func RootHashHex(root []byte) string { return hex.EncodeToString(root) }

// ParseRootHash decodes a hex root hash (either case) and checks its length
// against p's algorithm.
func ParseRootHash(p Params, s string) ([]byte, error) {
	n := p.DigestSize()
	if n == 0 {
		return nil, unsupportedf("hash algorithm %q (supported: %s)", p.Algorithm, Algorithms)
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, invalidf("root hash %q is not hexadecimal", truncate(s))
	}
	if len(b) != n {
		return nil, invalidf("root hash has %d hex characters, %s needs %d", len(s), p.Algorithm, 2*n)
	}
	return b, nil
}

func truncate(s string) string {
	if len(s) > 72 {
		return s[:69] + "..."
	}
	return s
}
