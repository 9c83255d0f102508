// Package uki owns the Unified Kernel Image format (UAPI group "Unified
// Kernel Image" specification, systemd-stub(7)): a PE/COFF EFI executable
// made of systemd's EFI stub plus sections that hold the kernel (.linux),
// the initrd (.initrd), the kernel command line (.cmdline), os-release
// (.osrel), the kernel release (.uname), SBAT revocation metadata (.sbat)
// and optional microcode, splash image and device tree. Firmware verifies
// the whole image with one Authenticode signature (package efi), so under
// Secure Boot every section, the command line included, is covered.
//
// Build assembles a UKI the way systemd's ukify does (current upstream
// rules): the new sections follow the stub's in the order .osrel .cmdline
// .dtb .uname .splash .initrd .ucode [extra] .linux, back to back, each
// virtual address the previous section's end rounded up to
// SectionAlignment, raw data appended at FileAlignment; .linux is marked
// as code and its VirtualSize is the kernel's SizeOfImage; the SBAT lines
// of the stub, the kernel and the caller are merged into the stub's own
// .sbat section; SizeOfImage and SizeOfInitializedData grow to match; the
// optional header's CheckSum is set to 0 (UEFI does not check it and
// Authenticode does not cover it). Nothing depends on the time or the
// machine: the same inputs give the same bytes. Inspect lists the sections
// with their sizes and SHA-256 digests as `ukify inspect` does.
//
// The byte layout is in docs/formats.md, section "UKI and Authenticode".
package uki

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/intact-project/intact/internal/peimage"
)

// Errors.
var (
	// ErrStub: the stub cannot take the UKI sections (not a PE image,
	// signed, no room for more section headers, unaligned sections).
	ErrStub = errors.New("uki: unusable EFI stub")
	// ErrKernel: the kernel is not an EFI-stub PE image for the stub's
	// machine.
	ErrKernel = errors.New("uki: unusable kernel image")
	// ErrInput: some other input is invalid (bad section name, too big).
	ErrInput = errors.New("uki: invalid input")
)

// MaxSize caps the assembled image (PE offsets are 32-bit, and firmware
// loads the whole image into memory).
const MaxSize = 1 << 30

// Section is an extra section (ukify --section NAME:@FILE).
type Section struct {
	Name string // at most 8 bytes, printable ASCII
	Data []byte
}

// DefaultSBAT is ukify's SBAT text for a UKI: the mandatory "sbat" line and
// the generic "uki" component.
const DefaultSBAT = "sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\n" +
	"uki,1,UKI,uki,1,https://uapi-group.org/specifications/specs/unified_kernel_image/\n"

// sbatHeader is the first line of every SBAT section.
const sbatHeader = "sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md"

// Input is what goes into a UKI.
type Input struct {
	// Stub is systemd's EFI stub (linuxx64.efi.stub from systemd-boot-efi),
	// unsigned.
	Stub []byte
	// Linux is the kernel (vmlinuz), a PE image with the EFI stub.
	Linux []byte
	// Initrds are concatenated into .initrd, each padded to 4 bytes when
	// there is more than one (as ukify does).
	Initrds [][]byte
	// Cmdline is the kernel command line, stored as given (no NUL).
	Cmdline string
	// OSRelease is the os-release text for .osrel (omitted when empty;
	// unlike ukify, the build machine's /etc/os-release is never used).
	OSRelease string
	// Uname is the kernel release for .uname (omitted when empty; see
	// KernelRelease).
	Uname string
	// Microcode, Splash and DeviceTree become .ucode, .splash and .dtb
	// when set.
	Microcode, Splash, DeviceTree []byte
	// SBAT are SBAT CSV texts merged after the stub's and the kernel's
	// entries; nil means DefaultSBAT. A text's first line may be the
	// "sbat,1,SBAT Version,..." header; it is dropped (the merged section
	// has exactly one).
	SBAT []string
	// Sections are extra sections, placed before .linux.
	Sections []Section
}

// Standard section names in the order Build places them.
var standardOrder = []string{".osrel", ".cmdline", ".dtb", ".uname", ".splash", ".initrd", ".ucode"}

// reserved are names Build sets itself or that belong to other tools.
var reserved = map[string]bool{".osrel": true, ".cmdline": true, ".dtb": true, ".uname": true, ".splash": true,
	".initrd": true, ".ucode": true, ".linux": true, ".sbat": true, ".pcrsig": true, ".pcrpkey": true, ".profile": true}

type newSection struct {
	name  string
	data  []byte
	vsize uint32
	code  bool
}

// Build assembles an unsigned UKI from in.
func Build(in Input) ([]byte, error) {
	le := binary.LittleEndian
	stub, err := peimage.Parse(bytes.NewReader(in.Stub), int64(len(in.Stub)))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStub, err)
	}
	if stub.Machine != peimage.MachineAMD64 && stub.Machine != peimage.MachineARM64 {
		return nil, fmt.Errorf("%w: machine %#x (x86-64 or arm64 stubs only)", ErrStub, stub.Machine)
	}
	if stub.SecuritySize != 0 || stub.SecurityOffset != 0 {
		return nil, fmt.Errorf("%w: the stub is signed; sign the assembled UKI instead", ErrStub)
	}
	if _, ok := stub.Section(".linux"); ok {
		return nil, fmt.Errorf("%w: the stub already has a .linux section (is it a UKI?)", ErrStub)
	}
	kern, err := peimage.Parse(bytes.NewReader(in.Linux), int64(len(in.Linux)))
	if err != nil {
		return nil, fmt.Errorf("%w: %w (compressed kernels are not supported; pass the EFI-stub vmlinuz)", ErrKernel, err)
	}
	if kern.Machine != stub.Machine {
		return nil, fmt.Errorf("%w: kernel machine %#x, stub machine %#x", ErrKernel, kern.Machine, stub.Machine)
	}

	img := append([]byte(nil), in.Stub...)
	// A symbol and string table at the very end of an old stub is dropped
	// (images should not have one; ukify does the same).
	if p := stub.PointerToSymbolTable; p != 0 {
		symEnd := int64(p) + 18*int64(stub.NumberOfSymbols)
		if symEnd+4 <= int64(len(img)) {
			strSize := int64(le.Uint32(img[symEnd:]))
			if symEnd+strSize == int64(len(img)) && int64(p) >= stub.EndOfSections() {
				img = img[:p]
				le.PutUint32(img[stub.PointerToSymbolTableOffset():], 0)
				le.PutUint32(img[stub.PointerToSymbolTableOffset()+4:], 0)
				ch := le.Uint16(img[stub.CharacteristicsOffset():])
				le.PutUint16(img[stub.CharacteristicsOffset():], ch|0x0008) // LOCAL_SYMS_STRIPPED
			}
		}
	}
	fa, sa := stub.FileAlignment, stub.SectionAlignment
	for _, s := range stub.Sections {
		if s.SizeOfRawData > 0 && (s.PointerToRawData%fa != 0 || s.SizeOfRawData%fa != 0) {
			return nil, fmt.Errorf("%w: section %s is not aligned to FileAlignment %d", ErrStub, s.Name, fa)
		}
	}
	// Room for headers: SizeOfHeaders may grow to the file alignment
	// (the first section's data starts at or after it).
	sizeOfHeaders := alignUp(stub.SizeOfHeaders, fa)
	le.PutUint32(img[stub.SizeOfHeadersOffset():], sizeOfHeaders)

	secs, err := sections(in, kern)
	if err != nil {
		return nil, err
	}
	sbat, err := mergeSBAT(in, stub, kern)
	if err != nil {
		return nil, err
	}
	secs = append(secs, newSection{name: ".sbat", data: []byte(sbat)})

	nsec := len(stub.Sections)
	tableEnd := stub.SectionTableEnd()
	initData := stub.SizeOfInitializedData
	var nextVA uint64
	for _, s := range stub.Sections {
		nextVA = max(nextVA, uint64(s.VirtualAddress)+uint64(s.VirtualSize))
	}
	dll := stub.DllCharacteristics
	img = padTo(img, fa)
	for _, s := range secs {
		if len(img) > MaxSize || len(s.data) > MaxSize-len(img) {
			return nil, fmt.Errorf("%w: the image would exceed %d bytes", ErrInput, MaxSize)
		}
		vsize := s.vsize
		if vsize == 0 {
			vsize = uint32(len(s.data))
		}
		// A section the stub already has (.sbat) gets the new content in
		// place, if it fits in the stub's raw size.
		if old, ok := stub.Section(s.name); ok {
			if uint32(len(s.data)) > old.SizeOfRawData {
				return nil, fmt.Errorf("%w: %s of %d bytes does not fit the stub's %s (%d bytes)", ErrInput, s.name, len(s.data), s.name, old.SizeOfRawData)
			}
			raw := img[old.PointerToRawData : old.PointerToRawData+old.SizeOfRawData]
			clear(raw)
			copy(raw, s.data)
			le.PutUint32(img[old.HeaderOffset+8:], uint32(len(s.data)))
			continue
		}
		if tableEnd+peimage.SectionHeaderSize > int(sizeOfHeaders) {
			return nil, fmt.Errorf("%w: no room in the headers for section %s (SizeOfHeaders %d)", ErrStub, s.name, sizeOfHeaders)
		}
		va := alignUp64(nextVA, uint64(sa))
		if va+uint64(vsize) > 1<<32-1 {
			return nil, fmt.Errorf("%w: section %s would end beyond 4 GiB of address space", ErrInput, s.name)
		}
		rawPtr := uint32(len(img))
		img = append(img, s.data...)
		img = padTo(img, fa)
		rawSize := uint32(len(img)) - rawPtr
		h := img[tableEnd : tableEnd+peimage.SectionHeaderSize]
		clear(h)
		copy(h[:8], s.name)
		le.PutUint32(h[8:], vsize)
		le.PutUint32(h[12:], uint32(va))
		le.PutUint32(h[16:], rawSize)
		le.PutUint32(h[20:], rawPtr)
		flags := uint32(peimage.SectionMemRead | peimage.SectionInitData)
		if s.code {
			flags = peimage.SectionMemRead | peimage.SectionCode
			// The stub claims NX compatibility only if the kernel does.
			if kern.DllCharacteristics&peimage.DllNXCompat == 0 {
				dll &^= peimage.DllNXCompat
			}
		}
		le.PutUint32(h[36:], flags)
		tableEnd += peimage.SectionHeaderSize
		nsec++
		initData += vsize
		nextVA = va + uint64(vsize)
	}
	if nsec > peimage.MaxSections {
		return nil, fmt.Errorf("%w: %d sections", ErrInput, nsec)
	}
	le.PutUint16(img[stub.NumberOfSectionsOffset():], uint16(nsec))
	le.PutUint32(img[stub.SizeOfInitializedDataOffset():], initData)
	le.PutUint32(img[stub.SizeOfImageOffset():], uint32(alignUp64(nextVA, uint64(sa))))
	le.PutUint16(img[stub.DllCharacteristicsOffset():], dll)
	le.PutUint32(img[stub.CheckSumOffset():], 0)
	return img, nil
}

// sections returns the sections to append, in ukify's order.
func sections(in Input, kern *peimage.Image) ([]newSection, error) {
	var initrd []byte
	switch len(in.Initrds) {
	case 0:
	case 1:
		initrd = in.Initrds[0]
	default:
		for _, b := range in.Initrds {
			initrd = append(initrd, b...)
			initrd = padTo(initrd, 4)
		}
	}
	content := map[string][]byte{
		".osrel": []byte(in.OSRelease), ".cmdline": []byte(in.Cmdline), ".dtb": in.DeviceTree,
		".uname": []byte(in.Uname), ".splash": in.Splash, ".initrd": initrd, ".ucode": in.Microcode,
	}
	var out []newSection
	for _, name := range standardOrder {
		if len(content[name]) > 0 {
			out = append(out, newSection{name: name, data: content[name]})
		}
	}
	seen := map[string]bool{}
	for _, s := range in.Sections {
		if err := checkName(s.Name); err != nil {
			return nil, err
		}
		if reserved[s.Name] || seen[s.Name] {
			return nil, fmt.Errorf("%w: extra section %s duplicates a section the UKI already has", ErrInput, s.Name)
		}
		if len(s.Data) == 0 {
			return nil, fmt.Errorf("%w: extra section %s is empty", ErrInput, s.Name)
		}
		seen[s.Name] = true
		out = append(out, newSection{name: s.Name, data: s.Data})
	}
	out = append(out, newSection{name: ".linux", data: in.Linux, vsize: kern.SizeOfImage, code: true})
	return out, nil
}

func checkName(name string) error {
	if name == "" || len(name) > 8 {
		return fmt.Errorf("%w: section name %q must have 1 to 8 bytes", ErrInput, name)
	}
	for _, c := range []byte(name) {
		if c <= ' ' || c >= 0x7f {
			return fmt.Errorf("%w: section name %q must be printable ASCII without spaces", ErrInput, name)
		}
	}
	return nil
}

// mergeSBAT merges the SBAT entries of the stub, the kernel and in.SBAT
// under one header line, ending in "\n\0" (ukify's merge_sbat).
func mergeSBAT(in Input, stub, kern *peimage.Image) (string, error) {
	var lines []string
	for _, x := range []struct {
		im   *peimage.Image
		data []byte
	}{{stub, in.Stub}, {kern, in.Linux}} {
		s, ok := x.im.Section(".sbat")
		if !ok || s.SizeOfRawData == 0 {
			continue
		}
		raw := x.data[s.PointerToRawData : s.PointerToRawData+s.SizeOfRawData]
		text := strings.Split(string(bytes.TrimRight(raw, "\x00")), "\n")
		if len(text) == 0 || !strings.HasPrefix(text[0], "sbat,") {
			continue // no valid SBAT section: ukify skips it too
		}
		lines = append(lines, trimEmpty(text[1:])...)
	}
	texts := in.SBAT
	if texts == nil {
		texts = []string{DefaultSBAT}
	}
	for _, t := range texts {
		if strings.ContainsRune(t, 0) {
			return "", fmt.Errorf("%w: SBAT text contains NUL", ErrInput)
		}
		ls := strings.Split(strings.ReplaceAll(t, "\r\n", "\n"), "\n")
		if len(ls) > 0 && strings.HasPrefix(ls[0], "sbat,") {
			ls = ls[1:]
		}
		for _, l := range trimEmpty(ls) {
			if strings.Count(l, ",") < 4 {
				return "", fmt.Errorf("%w: SBAT line %q: want component,generation,vendor,package,version[,url]", ErrInput, l)
			}
			lines = append(lines, l)
		}
	}
	return sbatHeader + "\n" + strings.Join(lines, "\n") + "\n\x00", nil
}

// trimEmpty drops a trailing empty line (a text ending in "\n"), as
// Python's splitlines does.
func trimEmpty(ls []string) []string {
	if n := len(ls); n > 0 && ls[n-1] == "" {
		return ls[:n-1]
	}
	return ls
}

func alignUp(v, a uint32) uint32   { return (v + a - 1) &^ (a - 1) }
func alignUp64(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }
func padTo(b []byte, a uint32) []byte {
	return append(b, make([]byte, int(alignUp(uint32(len(b)), a))-len(b))...)
}

// KernelRelease reads the kernel release string (uname -r) from an x86
// boot image's setup header (the kernel_version field), as ukify does when
// --uname is not given. It returns an error for images without one.
func KernelRelease(linux []byte) (string, error) {
	if len(linux) < 0x210 || string(linux[0x202:0x206]) != "HdrS" {
		return "", fmt.Errorf("%w: no x86 setup header (HdrS)", ErrKernel)
	}
	off := int(binary.LittleEndian.Uint16(linux[0x20e:]))
	start := 0x200 + off
	if off == 0 || start >= len(linux) {
		return "", fmt.Errorf("%w: no kernel version string", ErrKernel)
	}
	end := min(start+256, len(linux))
	v := linux[start:end]
	if i := bytes.IndexByte(v, 0); i >= 0 {
		v = v[:i]
	}
	// "6.12.117+deb13-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP ..."
	rel, _, _ := strings.Cut(string(v), " ")
	if rel == "" {
		return "", fmt.Errorf("%w: empty kernel version string", ErrKernel)
	}
	for _, c := range rel {
		if c <= ' ' || c >= 0x7f {
			return "", fmt.Errorf("%w: kernel version %q is not printable", ErrKernel, rel)
		}
	}
	return rel, nil
}
