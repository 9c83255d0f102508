// Package peimage reads the headers of PE/COFF images (the EFI executables
// UEFI firmware loads: systemd-stub, the kernel's EFI stub, unified kernel
// images) and knows the byte offsets of the fields that UKI assembly and
// Authenticode signing patch or skip: the optional header's CheckSum, the
// certificate table entry (data directory 4), SizeOfImage, the section
// table. It parses untrusted input: every offset is bounds-checked against
// the image size, and the header area it reads is capped (MaxHeaders), so a
// hostile header cannot make it allocate or read beyond that.
//
// Format: Microsoft PE/COFF specification (PE32 and PE32+); the fields and
// offsets are listed in docs/formats.md (section "UKI and Authenticode").
package peimage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
)

// ErrFormat is wrapped by every parse error.
var ErrFormat = errors.New("peimage: not a usable PE/COFF image")

// MaxHeaders caps SizeOfHeaders (the DOS stub, PE headers and section
// table). Real EFI images use 512 bytes to 4 KiB.
const MaxHeaders = 64 << 10

// MaxSections caps the number of sections (the COFF limit is 96 for
// images; EFI images have a handful).
const MaxSections = 96

// SectionHeaderSize is the size of one section table entry.
const SectionHeaderSize = 40

// Section characteristics used by UKIs.
const (
	SectionCode     = 0x00000020 // IMAGE_SCN_CNT_CODE
	SectionInitData = 0x00000040 // IMAGE_SCN_CNT_INITIALIZED_DATA
	SectionMemRead  = 0x40000000 // IMAGE_SCN_MEM_READ
)

// DllCharacteristics bit for NX compatibility.
const DllNXCompat = 0x0100

// Machine types.
const (
	MachineAMD64 = 0x8664
	MachineARM64 = 0xaa64
	MachineI386  = 0x14c
)

// Section is one section table entry.
type Section struct {
	Name             string
	VirtualSize      uint32
	VirtualAddress   uint32
	SizeOfRawData    uint32
	PointerToRawData uint32
	Characteristics  uint32
	// HeaderOffset is the file offset of this entry in the section table.
	HeaderOffset int
}

// DataSize is the number of bytes of the section's content in the file:
// min(VirtualSize, SizeOfRawData), as pefile and `ukify inspect` read it.
// A VirtualSize of zero means SizeOfRawData.
func (s *Section) DataSize() uint32 {
	if s.VirtualSize == 0 || s.VirtualSize > s.SizeOfRawData {
		return s.SizeOfRawData
	}
	return s.VirtualSize
}

// Image is the parsed header of a PE/COFF image.
type Image struct {
	Size int64 // file size

	PEOffset  int // offset of "PE\0\0"
	OptOffset int // offset of the optional header
	PE32Plus  bool
	Machine   uint16

	SectionAlignment      uint32
	FileAlignment         uint32
	SizeOfImage           uint32
	SizeOfHeaders         uint32
	SizeOfInitializedData uint32
	CheckSum              uint32
	DllCharacteristics    uint16
	PointerToSymbolTable  uint32
	NumberOfSymbols       uint32

	// NumberOfRvaAndSizes is the number of data directories.
	NumberOfRvaAndSizes uint32
	// Security is data directory 4, the certificate table: a file offset
	// (not an RVA) and a size; zero when the image is unsigned.
	SecurityOffset, SecuritySize uint32

	SectionTableOffset int
	Sections           []Section
}

// Offsets of fields in the optional header.
func (im *Image) offNumberOfSections() int { return im.PEOffset + 4 + 2 }
func (im *Image) offPointerToSymbols() int { return im.PEOffset + 4 + 8 }
func (im *Image) offCharacteristics() int  { return im.PEOffset + 4 + 18 }

// CheckSumOffset is the file offset of the optional header's CheckSum.
func (im *Image) CheckSumOffset() int { return im.OptOffset + 64 }

// SecurityDirOffset is the file offset of data directory 4 (the
// certificate table entry, 8 bytes).
func (im *Image) SecurityDirOffset() int {
	if im.PE32Plus {
		return im.OptOffset + 112 + 4*8
	}
	return im.OptOffset + 96 + 4*8
}

// SizeOfImageOffset is the file offset of SizeOfImage.
func (im *Image) SizeOfImageOffset() int { return im.OptOffset + 56 }

// SizeOfHeadersOffset is the file offset of SizeOfHeaders.
func (im *Image) SizeOfHeadersOffset() int { return im.OptOffset + 60 }

// SizeOfInitializedDataOffset is the file offset of SizeOfInitializedData.
func (im *Image) SizeOfInitializedDataOffset() int { return im.OptOffset + 8 }

// DllCharacteristicsOffset is the file offset of DllCharacteristics.
func (im *Image) DllCharacteristicsOffset() int { return im.OptOffset + 70 }

// NumberOfSectionsOffset is the file offset of NumberOfSections.
func (im *Image) NumberOfSectionsOffset() int { return im.offNumberOfSections() }

// PointerToSymbolTableOffset is the file offset of PointerToSymbolTable
// (NumberOfSymbols follows it).
func (im *Image) PointerToSymbolTableOffset() int { return im.offPointerToSymbols() }

// CharacteristicsOffset is the file offset of the COFF Characteristics.
func (im *Image) CharacteristicsOffset() int { return im.offCharacteristics() }

// SectionTableEnd is the file offset just after the last section header.
func (im *Image) SectionTableEnd() int {
	return im.SectionTableOffset + SectionHeaderSize*len(im.Sections)
}

// Section returns the first section named name.
func (im *Image) Section(name string) (*Section, bool) {
	for i := range im.Sections {
		if im.Sections[i].Name == name {
			return &im.Sections[i], true
		}
	}
	return nil, false
}

// ReadSection reads a section's content (DataSize bytes).
func (im *Image) ReadSection(r io.ReaderAt, s *Section) ([]byte, error) {
	n := int64(s.DataSize())
	if int64(s.PointerToRawData)+n > im.Size {
		return nil, fmt.Errorf("%w: section %s data [%d,+%d) beyond the end of the file (%d bytes)", ErrFormat, s.Name, s.PointerToRawData, n, im.Size)
	}
	b := make([]byte, n)
	if _, err := r.ReadAt(b, int64(s.PointerToRawData)); err != nil {
		return nil, fmt.Errorf("peimage: read section %s: %w", s.Name, err)
	}
	return b, nil
}

// Parse reads and checks the headers of the image in r (size bytes).
func Parse(r io.ReaderAt, size int64) (*Image, error) {
	le := binary.LittleEndian
	if size < 64 {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrFormat, size)
	}
	head := make([]byte, min(size, MaxHeaders))
	if _, err := r.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("peimage: read headers: %w", err)
	}
	if string(head[:2]) != "MZ" {
		return nil, fmt.Errorf("%w: no MZ signature", ErrFormat)
	}
	im := &Image{Size: size}
	im.PEOffset = int(le.Uint32(head[0x3c:]))
	if im.PEOffset < 0x40 || im.PEOffset+24 > len(head) {
		return nil, fmt.Errorf("%w: PE header offset %#x outside the header area", ErrFormat, im.PEOffset)
	}
	if string(head[im.PEOffset:im.PEOffset+4]) != "PE\x00\x00" {
		return nil, fmt.Errorf("%w: no PE signature at %#x", ErrFormat, im.PEOffset)
	}
	coff := im.PEOffset + 4
	im.Machine = le.Uint16(head[coff:])
	nsec := int(le.Uint16(head[coff+2:]))
	im.PointerToSymbolTable = le.Uint32(head[coff+8:])
	im.NumberOfSymbols = le.Uint32(head[coff+12:])
	optSize := int(le.Uint16(head[coff+16:]))
	im.OptOffset = coff + 20
	if nsec > MaxSections {
		return nil, fmt.Errorf("%w: %d sections (at most %d)", ErrFormat, nsec, MaxSections)
	}
	if im.OptOffset+optSize > len(head) || optSize < 2 {
		return nil, fmt.Errorf("%w: optional header of %d bytes outside the header area", ErrFormat, optSize)
	}
	opt := head[im.OptOffset : im.OptOffset+optSize]
	var ddOff int
	switch magic := le.Uint16(opt); magic {
	case 0x20b:
		im.PE32Plus = true
		ddOff = 112
	case 0x10b:
		ddOff = 96
	default:
		return nil, fmt.Errorf("%w: optional header magic %#x (neither PE32 nor PE32+)", ErrFormat, magic)
	}
	if optSize < ddOff {
		return nil, fmt.Errorf("%w: optional header of %d bytes is too short", ErrFormat, optSize)
	}
	im.SizeOfInitializedData = le.Uint32(opt[8:])
	im.SectionAlignment = le.Uint32(opt[32:])
	im.FileAlignment = le.Uint32(opt[36:])
	im.SizeOfImage = le.Uint32(opt[56:])
	im.SizeOfHeaders = le.Uint32(opt[60:])
	im.CheckSum = le.Uint32(opt[64:])
	im.DllCharacteristics = le.Uint16(opt[70:])
	im.NumberOfRvaAndSizes = le.Uint32(opt[ddOff-4:])
	if im.NumberOfRvaAndSizes > 16 || ddOff+8*int(im.NumberOfRvaAndSizes) > optSize {
		return nil, fmt.Errorf("%w: %d data directories do not fit the optional header", ErrFormat, im.NumberOfRvaAndSizes)
	}
	if im.NumberOfRvaAndSizes > 4 {
		im.SecurityOffset = le.Uint32(opt[ddOff+32:])
		im.SecuritySize = le.Uint32(opt[ddOff+36:])
	}
	if !pow2(im.FileAlignment) || !pow2(im.SectionAlignment) || im.FileAlignment > 64<<10 || im.SectionAlignment < im.FileAlignment {
		return nil, fmt.Errorf("%w: alignments %d (file) and %d (section)", ErrFormat, im.FileAlignment, im.SectionAlignment)
	}
	if int64(im.SizeOfHeaders) > size || im.SizeOfHeaders > MaxHeaders {
		return nil, fmt.Errorf("%w: SizeOfHeaders %d (file %d bytes, limit %d)", ErrFormat, im.SizeOfHeaders, size, MaxHeaders)
	}
	im.SectionTableOffset = im.OptOffset + optSize
	if im.SectionTableOffset+SectionHeaderSize*nsec > int(im.SizeOfHeaders) {
		return nil, fmt.Errorf("%w: section table [%d,%d) extends beyond SizeOfHeaders %d", ErrFormat,
			im.SectionTableOffset, im.SectionTableOffset+SectionHeaderSize*nsec, im.SizeOfHeaders)
	}
	if im.SecuritySize != 0 {
		end := int64(im.SecurityOffset) + int64(im.SecuritySize)
		if int64(im.SecurityOffset) < int64(im.SizeOfHeaders) || end > size {
			return nil, fmt.Errorf("%w: certificate table [%d,%d) outside the file (%d bytes)", ErrFormat, im.SecurityOffset, end, size)
		}
	}
	for i := 0; i < nsec; i++ {
		h := head[im.SectionTableOffset+SectionHeaderSize*i:]
		name := h[:8]
		for j, c := range name {
			if c == 0 {
				name = name[:j]
				break
			}
		}
		s := Section{
			Name:             string(name),
			VirtualSize:      le.Uint32(h[8:]),
			VirtualAddress:   le.Uint32(h[12:]),
			SizeOfRawData:    le.Uint32(h[16:]),
			PointerToRawData: le.Uint32(h[20:]),
			Characteristics:  le.Uint32(h[36:]),
			HeaderOffset:     im.SectionTableOffset + SectionHeaderSize*i,
		}
		if s.SizeOfRawData > 0 && int64(s.PointerToRawData)+int64(s.SizeOfRawData) > size {
			return nil, fmt.Errorf("%w: section %q data [%d,+%d) beyond the end of the file (%d bytes)", ErrFormat, s.Name, s.PointerToRawData, s.SizeOfRawData, size)
		}
		if s.SizeOfRawData > 0 && s.PointerToRawData < im.SizeOfHeaders {
			return nil, fmt.Errorf("%w: section %q data at %d inside the headers (%d bytes)", ErrFormat, s.Name, s.PointerToRawData, im.SizeOfHeaders)
		}
		im.Sections = append(im.Sections, s)
	}
	return im, nil
}

func pow2(v uint32) bool { return v != 0 && v&(v-1) == 0 }

// ByFileOffset returns the sections with raw data sorted by
// PointerToRawData (the order Authenticode hashes them in).
func (im *Image) ByFileOffset() []Section {
	var out []Section
	for _, s := range im.Sections {
		if s.SizeOfRawData > 0 {
			out = append(out, s)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].PointerToRawData < out[j].PointerToRawData })
	return out
}

// EndOfSections is the largest end of any section's raw data (at least
// SizeOfHeaders).
func (im *Image) EndOfSections() int64 {
	end := int64(im.SizeOfHeaders)
	for _, s := range im.Sections {
		if s.SizeOfRawData > 0 {
			end = max(end, int64(s.PointerToRawData)+int64(s.SizeOfRawData))
		}
	}
	return end
}

// EndOfVirtual is the largest VirtualAddress+VirtualSize of any section
// (of VirtualAddress+SizeOfRawData where that is larger).
func (im *Image) EndOfVirtual() uint64 {
	var end uint64
	for _, s := range im.Sections {
		end = max(end, uint64(s.VirtualAddress)+uint64(max(s.VirtualSize, s.SizeOfRawData)))
	}
	return end
}

// Checksum computes the PE image checksum of img (the algorithm of
// Windows' CheckSumMappedFile, which sbsign also applies after signing):
// the one's-complement-style sum of the little-endian 16-bit words of the
// file, with the CheckSum field at csOff counted as zero, folded to 16 bits,
// plus the file length.
func Checksum(img []byte, csOff int) uint32 {
	var sum uint64
	n := len(img)
	for i := 0; i+1 < n; i += 2 {
		if i == csOff || i == csOff+2 {
			continue
		}
		sum += uint64(binary.LittleEndian.Uint16(img[i:]))
		sum = (sum & 0xffff) + (sum >> 16)
	}
	if n%2 == 1 {
		sum += uint64(img[n-1])
		sum = (sum & 0xffff) + (sum >> 16)
	}
	sum = (sum & 0xffff) + (sum >> 16)
	return uint32(sum) + uint32(n)
}
