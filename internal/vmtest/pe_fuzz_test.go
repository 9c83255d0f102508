package vmtest

import (
	"bytes"
	"debug/pe"
	"encoding/binary"
	"testing"
)

// minimalPE builds a small PE32+ image with one .text section and room for
// more section headers.
func minimalPE() []byte {
	le := binary.LittleEndian
	img := make([]byte, 0x400+0x200)
	copy(img, "MZ")
	le.PutUint32(img[0x3c:], 0x80)
	copy(img[0x80:], "PE\x00\x00")
	coff := 0x84
	le.PutUint16(img[coff:], 0x8664)  // machine
	le.PutUint16(img[coff+2:], 1)     // sections
	le.PutUint16(img[coff+16:], 240)  // optional header size
	le.PutUint16(img[coff+18:], 0x22) // characteristics
	opt := coff + 20
	le.PutUint16(img[opt:], 0x20b)
	le.PutUint32(img[opt+16:], 0x1000) // entry point
	le.PutUint32(img[opt+32:], 0x1000) // section alignment
	le.PutUint32(img[opt+36:], 0x200)  // file alignment
	le.PutUint32(img[opt+56:], 0x2000) // size of image
	le.PutUint32(img[opt+60:], 0x400)  // size of headers
	le.PutUint16(img[opt+68:], 10)     // subsystem EFI application
	le.PutUint32(img[opt+108:], 16)    // number of data directories
	sec := opt + 240
	copy(img[sec:], ".text")
	le.PutUint32(img[sec+8:], 0x10)
	le.PutUint32(img[sec+12:], 0x1000)
	le.PutUint32(img[sec+16:], 0x200)
	le.PutUint32(img[sec+20:], 0x400)
	le.PutUint32(img[sec+36:], 0x60000020)
	return img
}

func TestAppendToMinimalPE(t *testing.T) {
	out, err := AppendPESections(minimalPE(), []PESection{{".cmdline", []byte("x\x00")}, {".linux", bytes.Repeat([]byte{1}, 3000)}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := pe.NewFile(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Sections) != 3 || f.Sections[2].Name != ".linux" || f.Sections[2].VirtualAddress != 0x3000 {
		t.Fatalf("sections: %+v", f.Sections)
	}
	data, _ := f.Sections[2].Data()
	if !bytes.Equal(data[:3000], bytes.Repeat([]byte{1}, 3000)) {
		t.Error(".linux data")
	}
}

// FuzzAppendPESections feeds arbitrary images: AppendPESections must return
// an error or a PE that debug/pe parses, never panic.
func FuzzAppendPESections(f *testing.F) {
	f.Add(minimalPE())
	f.Add([]byte("MZ"))
	f.Fuzz(func(t *testing.T, img []byte) {
		if len(img) > 1<<20 {
			return
		}
		out, err := AppendPESections(img, []PESection{{".initrd", []byte("abc")}})
		if err != nil {
			return
		}
		in, err := pe.NewFile(bytes.NewReader(img))
		if err != nil {
			return // debug/pe is stricter in places; only compare what it reads
		}
		f, err := pe.NewFile(bytes.NewReader(out))
		if err != nil {
			t.Fatalf("input parses but output does not: %v", err)
		}
		if len(f.Sections) != len(in.Sections)+1 || f.Sections[len(f.Sections)-1].Name != ".initrd" {
			t.Fatalf("sections %d -> %d", len(in.Sections), len(f.Sections))
		}
	})
}
