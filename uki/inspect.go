package uki

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"unicode/utf8"

	"github.com/intact-project/intact/internal/peimage"
)

// textSections are shown as text by Inspect (ukify's DEFAULT_SECTIONS_TO_SHOW
// with mode "text").
var textSections = map[string]bool{".cmdline": true, ".osrel": true, ".uname": true, ".pcrpkey": true,
	".pcrsig": true, ".sbat": true, ".profile": true}

// ukiSections are the sections ukify inspect shows by default.
var ukiSections = map[string]bool{".linux": true, ".initrd": true, ".ucode": true, ".splash": true, ".dtb": true,
	".cmdline": true, ".osrel": true, ".uname": true, ".pcrpkey": true, ".pcrsig": true, ".sbat": true,
	".sbom": true, ".profile": true}

// SectionInfo describes one section of an image.
type SectionInfo struct {
	Name string `json:"name"`
	// Size is the size of the section's content in the file,
	// min(VirtualSize, SizeOfRawData), as ukify inspect reports it.
	Size           uint32 `json:"size"`
	VirtualSize    uint32 `json:"virtual_size"`
	VirtualAddress uint32 `json:"virtual_address"`
	FileOffset     uint32 `json:"file_offset"`
	FileSize       uint32 `json:"file_size"` // SizeOfRawData
	// SHA256 is over the section's content in the file: min(VirtualSize,
	// SizeOfRawData) bytes (what ukify inspect hashes).
	SHA256 string `json:"sha256"`
	// Text is the content of a text section (.cmdline, .osrel, .uname,
	// .sbat, ...) as ukify inspect shows it: trailing NULs dropped, inner
	// NULs written as \0, "(not valid UTF-8)" for other bytes.
	Text string `json:"text,omitempty"`
	// UKI marks the sections systemd-stub interprets (what ukify inspect
	// lists by default).
	UKI bool `json:"uki"`
}

// Info describes a PE image as a UKI.
type Info struct {
	Machine          uint16        `json:"machine"`
	SizeOfImage      uint32        `json:"size_of_image"`
	SectionAlignment uint32        `json:"section_alignment"`
	FileAlignment    uint32        `json:"file_alignment"`
	CheckSum         uint32        `json:"checksum"`
	Signed           bool          `json:"signed"` // has a certificate table
	Sections         []SectionInfo `json:"sections"`
	// IsUKI: the image has a .linux section.
	IsUKI bool `json:"is_uki"`
}

// Inspect reads the section table of the PE image r (size bytes) and
// digests every section. It reads untrusted images safely (package
// peimage bounds every offset).
func Inspect(r io.ReaderAt, size int64) (*Info, error) {
	im, err := peimage.Parse(r, size)
	if err != nil {
		return nil, fmt.Errorf("uki: inspect: %w", err)
	}
	info := &Info{Machine: im.Machine, SizeOfImage: im.SizeOfImage, SectionAlignment: im.SectionAlignment,
		FileAlignment: im.FileAlignment, CheckSum: im.CheckSum, Signed: im.SecuritySize != 0}
	for i := range im.Sections {
		s := &im.Sections[i]
		si := SectionInfo{Name: s.Name, Size: s.DataSize(), VirtualSize: s.VirtualSize, VirtualAddress: s.VirtualAddress,
			FileOffset: s.PointerToRawData, FileSize: s.SizeOfRawData, UKI: ukiSections[s.Name]}
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(r, int64(s.PointerToRawData), int64(s.DataSize()))); err != nil {
			return nil, fmt.Errorf("uki: inspect: read %s: %w", s.Name, err)
		}
		si.SHA256 = hex.EncodeToString(h.Sum(nil))
		if textSections[s.Name] && s.DataSize() <= 1<<20 {
			b, err := im.ReadSection(r, s)
			if err != nil {
				return nil, fmt.Errorf("uki: inspect: %w", err)
			}
			b = bytes.ReplaceAll(bytes.TrimRight(b, "\x00"), []byte{0}, []byte(`\0`))
			si.Text = "(not valid UTF-8)"
			if utf8.Valid(b) {
				si.Text = string(b)
			}
		}
		if s.Name == ".linux" {
			info.IsUKI = true
		}
		info.Sections = append(info.Sections, si)
	}
	return info, nil
}

// Section returns the content of the first section named name (DataSize
// bytes) of the PE image in r.
func ReadSection(r io.ReaderAt, size int64, name string) ([]byte, error) {
	im, err := peimage.Parse(r, size)
	if err != nil {
		return nil, fmt.Errorf("uki: %w", err)
	}
	s, ok := im.Section(name)
	if !ok {
		return nil, fmt.Errorf("uki: no %s section", name)
	}
	return im.ReadSection(r, s)
}
