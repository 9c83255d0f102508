package erofs

import (
	"encoding/binary"
	"errors"
)

// On-disk constants (fs/erofs/erofs_fs.h).
const (
	superMagic  = 0xE0F5E1E2
	superOffset = 1024
	superSize   = 128

	featureIncompatChunkedFile = 0x4
	featureIncompatDeviceTable = 0x8
	featureCompatSbChksum      = 0x1
	featureCompatMtime         = 0x2
	featureCompatXattrFilter   = 0x4
	// supportedIncompat are the incompat bits the reader understands.
	supportedIncompat = featureIncompatChunkedFile | featureIncompatDeviceTable

	inodeCompactSize  = 32
	inodeExtendedSize = 64
	direntSize        = 12
	xattrHeaderSize   = 12
	xattrEntrySize    = 4
	chunkIndexSize    = 8
	devSlotSize       = 128

	layoutFlatPlain  = 0
	layoutFlatInline = 2
	layoutChunkBased = 4

	chunkFormatBlkbitsMask = 0x1f
	chunkFormatIndexes     = 0x20

	nullAddr = 0xFFFFFFFF

	// MaxNameLen is the longest file name EROFS (and Linux) allows.
	MaxNameLen = 255
)

// Directory entry file types.
const (
	ftUnknown = iota
	ftReg
	ftDir
	ftChr
	ftBlk
	ftFifo
	ftSock
	ftSymlink
)

// Mode type bits (POSIX S_IFMT).
const (
	sIFMT   = 0o170000
	sIFSOCK = 0o140000
	sIFLNK  = 0o120000
	sIFREG  = 0o100000
	sIFBLK  = 0o060000
	sIFDIR  = 0o040000
	sIFCHR  = 0o020000
	sIFIFO  = 0o010000
)

// Xattr name prefix indexes.
const (
	xattrIndexUser         = 1
	xattrIndexACLAccess    = 2
	xattrIndexACLDefault   = 3
	xattrIndexTrusted      = 4
	xattrIndexLustre       = 5
	xattrIndexSecurity     = 6
	xattrLongPrefixFlag    = 0x80
	maxXattrValueSize      = 65535
	maxInlineXattrBodySize = 4 * 65535
)

var xattrPrefixes = []struct {
	index  uint8
	prefix string
}{
	{xattrIndexUser, "user."},
	{xattrIndexACLAccess, "system.posix_acl_access"},
	{xattrIndexACLDefault, "system.posix_acl_default"},
	{xattrIndexTrusted, "trusted."},
	{xattrIndexLustre, "lustre."},
	{xattrIndexSecurity, "security."},
}

// splitXattrName maps a full xattr name to its EROFS prefix index and suffix.
func splitXattrName(name string) (uint8, string, bool) {
	for _, p := range xattrPrefixes {
		if len(name) >= len(p.prefix) && name[:len(p.prefix)] == p.prefix {
			suffix := name[len(p.prefix):]
			acl := p.index == xattrIndexACLAccess || p.index == xattrIndexACLDefault
			if acl != (suffix == "") {
				continue
			}
			return p.index, suffix, true
		}
	}
	return 0, "", false
}

func xattrPrefix(index uint8) (string, bool) {
	for _, p := range xattrPrefixes {
		if p.index == index {
			return p.prefix, true
		}
	}
	return "", false
}

// Sentinel errors of the package.
var (
	// ErrInvalidEntry: an input entry cannot be represented (bad name, path
	// escaping the root, unsupported type or attribute).
	ErrInvalidEntry = errors.New("invalid entry")
	// ErrUnsafePath: a path escapes the root ("..") or goes through a
	// non-directory (for example below a symlink).
	ErrUnsafePath = errors.New("unsafe path")
	// ErrMissingLinkTarget: a hardlink names an entry that does not exist.
	ErrMissingLinkTarget = errors.New("hardlink target does not exist")
	// ErrTooManyEntries: the input has more entries than the configured limit.
	ErrTooManyEntries = errors.New("too many entries")
	// ErrTooLarge: the image would exceed the format's address space.
	ErrTooLarge = errors.New("image too large")
	// ErrCorrupt: an image being read is malformed.
	ErrCorrupt = errors.New("corrupt erofs image")
	// ErrUnsupported: an image uses a feature this reader does not implement.
	ErrUnsupported = errors.New("unsupported erofs feature")
	// ErrUnsupportedTar: the tar stream uses a feature that cannot be
	// converted (sparse files, for example).
	ErrUnsupportedTar = errors.New("unsupported tar feature")
)

// encodeDev is the kernel's new_encode_dev.
func encodeDev(major, minor uint32) uint32 {
	return (minor & 0xff) | (major << 8) | ((minor &^ 0xff) << 12)
}

// decodeDev is the kernel's new_decode_dev.
func decodeDev(dev uint32) (major, minor uint32) {
	return (dev & 0xfff00) >> 8, (dev & 0xff) | ((dev >> 12) & 0xfff00)
}

// superBlock is the subset of struct erofs_super_block intact uses.
type superBlock struct {
	feature       uint32 // compat
	blkszbits     uint8
	rootNid       uint16
	inos          uint64
	epoch         uint64
	fixedNsec     uint32
	blocks        uint32
	metaBlkaddr   uint32
	xattrBlkaddr  uint32
	uuid          [16]byte
	incompat      uint32
	extraDevices  uint16
	devtSlotoff   uint16
	checksum      uint32
	volumeName    [16]byte
	xattrPrefixN  uint8
	packedNid     uint64
	sbExtslots    uint8
	dirblkbits    uint8
	availCompress uint16
}

func (sb *superBlock) marshal() []byte {
	b := make([]byte, superSize)
	le := binary.LittleEndian
	le.PutUint32(b[0:], superMagic)
	le.PutUint32(b[4:], sb.checksum)
	le.PutUint32(b[8:], sb.feature)
	b[12] = sb.blkszbits
	b[13] = sb.sbExtslots
	le.PutUint16(b[14:], sb.rootNid)
	le.PutUint64(b[16:], sb.inos)
	le.PutUint64(b[24:], sb.epoch)
	le.PutUint32(b[32:], sb.fixedNsec)
	le.PutUint32(b[36:], sb.blocks)
	le.PutUint32(b[40:], sb.metaBlkaddr)
	le.PutUint32(b[44:], sb.xattrBlkaddr)
	copy(b[48:64], sb.uuid[:])
	copy(b[64:80], sb.volumeName[:])
	le.PutUint32(b[80:], sb.incompat)
	le.PutUint16(b[84:], sb.availCompress)
	le.PutUint16(b[86:], sb.extraDevices)
	le.PutUint16(b[88:], sb.devtSlotoff)
	b[90] = sb.dirblkbits
	b[91] = sb.xattrPrefixN
	le.PutUint64(b[96:], sb.packedNid)
	return b
}

func parseSuperBlock(b []byte) (*superBlock, error) {
	if len(b) < superSize {
		return nil, errors.Join(ErrCorrupt, errors.New("short superblock"))
	}
	le := binary.LittleEndian
	if le.Uint32(b[0:]) != superMagic {
		return nil, errors.Join(ErrCorrupt, errors.New("bad superblock magic"))
	}
	sb := &superBlock{
		checksum:      le.Uint32(b[4:]),
		feature:       le.Uint32(b[8:]),
		blkszbits:     b[12],
		sbExtslots:    b[13],
		rootNid:       le.Uint16(b[14:]),
		inos:          le.Uint64(b[16:]),
		epoch:         le.Uint64(b[24:]),
		fixedNsec:     le.Uint32(b[32:]),
		blocks:        le.Uint32(b[36:]),
		metaBlkaddr:   le.Uint32(b[40:]),
		xattrBlkaddr:  le.Uint32(b[44:]),
		incompat:      le.Uint32(b[80:]),
		availCompress: le.Uint16(b[84:]),
		extraDevices:  le.Uint16(b[86:]),
		devtSlotoff:   le.Uint16(b[88:]),
		dirblkbits:    b[90],
		xattrPrefixN:  b[91],
		packedNid:     le.Uint64(b[96:]),
	}
	copy(sb.uuid[:], b[48:64])
	copy(sb.volumeName[:], b[64:80])
	return sb, nil
}
