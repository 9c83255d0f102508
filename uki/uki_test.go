package uki

import (
	"bytes"
	"crypto/sha256"
	"debug/pe"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/peimage"
)

// minimalPE builds a small PE32+ image (machine x86-64) with a .text
// section, a .sbat section and room for more section headers.
func minimalPE(sizeOfImage uint32) []byte {
	le := binary.LittleEndian
	img := make([]byte, 0x400+0x400)
	copy(img, "MZ")
	le.PutUint32(img[0x3c:], 0x80)
	copy(img[0x80:], "PE\x00\x00")
	coff := 0x84
	le.PutUint16(img[coff:], 0x8664)
	le.PutUint16(img[coff+2:], 2)
	le.PutUint16(img[coff+16:], 240)
	le.PutUint16(img[coff+18:], 0x22)
	opt := coff + 20
	le.PutUint16(img[opt:], 0x20b)
	le.PutUint32(img[opt+16:], 0x1000)
	le.PutUint32(img[opt+32:], 0x1000)
	le.PutUint32(img[opt+36:], 0x200)
	le.PutUint32(img[opt+56:], sizeOfImage)
	le.PutUint32(img[opt+60:], 0x400)
	le.PutUint16(img[opt+68:], 10)
	le.PutUint16(img[opt+70:], 0x100) // NX_COMPAT
	le.PutUint32(img[opt+108:], 16)
	sec := opt + 240
	copy(img[sec:], ".text")
	le.PutUint32(img[sec+8:], 0x10)
	le.PutUint32(img[sec+12:], 0x1000)
	le.PutUint32(img[sec+16:], 0x200)
	le.PutUint32(img[sec+20:], 0x400)
	le.PutUint32(img[sec+36:], 0x60000020)
	copy(img[0x400:], "\xc3")
	sec += 40
	sbat := "sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\nstub,1,Test,stub,1,https://example.invalid/\n"
	copy(img[sec:], ".sbat")
	le.PutUint32(img[sec+8:], uint32(len(sbat)))
	le.PutUint32(img[sec+12:], 0x2000)
	le.PutUint32(img[sec+16:], 0x200)
	le.PutUint32(img[sec+20:], 0x600)
	le.PutUint32(img[sec+36:], 0x40000040)
	copy(img[0x600:], sbat)
	return img
}

// TestGolden pins the bytes Build makes from synthetic inputs, so a change
// of layout is a deliberate one (update the hash and docs/formats.md).
func TestGolden(t *testing.T) {
	kernel := minimalPE(0x9000)
	binary.LittleEndian.PutUint16(kernel[0x84+20+70:], 0) // kernel without NX_COMPAT
	copy(kernel[0x600+len(sbatHeader)+1:], "kern")        // its own SBAT component
	stub := minimalPE(0x3000)
	binary.LittleEndian.PutUint32(stub[0x84+20+64:], 0x1234) // a CheckSum Build must clear
	in := Input{Stub: stub, Linux: kernel, Initrds: [][]byte{[]byte("abc"), []byte("defgh")},
		Cmdline: "root=x", OSRelease: "ID=t\n", Uname: "6.1.0", Sections: []Section{{".extra", []byte("x")}}}
	a, err := Build(in)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(in)
	if err != nil || !bytes.Equal(a, b) {
		t.Fatalf("two builds differ (%v)", err)
	}
	sum := sha256.Sum256(a)
	const want = "2d95789cab913b99c609ab1b130f87c205570bf5355a284b2b7c6816b281de60"
	if got := hex.EncodeToString(sum[:]); got != want {
		t.Errorf("UKI sha256 %s, want %s", got, want)
	}
	f, err := pe.NewFile(bytes.NewReader(a))
	if err != nil {
		t.Fatal(err)
	}
	initrd, _ := f.Section(".initrd").Data()
	if !bytes.HasPrefix(initrd, []byte("abc\x00defgh\x00\x00\x00")) || f.Section(".initrd").VirtualSize != 12 {
		t.Errorf(".initrd %q (VirtualSize %d): initrds are each padded to 4 bytes", initrd[:12], f.Section(".initrd").VirtualSize)
	}
	if cs := f.OptionalHeader.(*pe.OptionalHeader64).CheckSum; cs != 0 {
		t.Errorf("CheckSum %#x, want 0", cs)
	}
	if dll := f.OptionalHeader.(*pe.OptionalHeader64).DllCharacteristics; dll&0x100 != 0 {
		t.Errorf("NX_COMPAT kept although the kernel lacks it: %#x", dll)
	}
	linux := f.Section(".linux")
	if linux.VirtualSize != 0x9000 || linux.Characteristics != 0x40000020 {
		t.Errorf(".linux VirtualSize %#x characteristics %#x", linux.VirtualSize, linux.Characteristics)
	}
	sbat, _ := f.Section(".sbat").Data()
	wantSBAT := sbatHeader + "\nstub,1,Test,stub,1,https://example.invalid/\nkern,1,Test,stub,1,https://example.invalid/\nuki,1,UKI,uki,1,https://uapi-group.org/specifications/specs/unified_kernel_image/\n\x00"
	if string(sbat[:f.Section(".sbat").VirtualSize]) != wantSBAT {
		t.Errorf(".sbat %q", sbat)
	}
	if f.Sections[len(f.Sections)-2].Name != ".extra" {
		t.Errorf("extra section not before .linux")
	}
}

func TestBuildRefuses(t *testing.T) {
	stub := minimalPE(0x3000)
	kernel := minimalPE(0x9000)
	signed := append([]byte(nil), stub...)
	binary.LittleEndian.PutUint32(signed[0x84+20+112+32:], 0x600)
	binary.LittleEndian.PutUint32(signed[0x84+20+112+36:], 0x200)
	arm := append([]byte(nil), kernel...)
	binary.LittleEndian.PutUint16(arm[0x84:], 0xaa64)
	full := append([]byte(nil), stub...)
	binary.LittleEndian.PutUint32(full[0x84+20+60:], 0x200+0x10) // SizeOfHeaders: no room
	binary.LittleEndian.PutUint32(full[0x84+20+240+20:], 0x210)  // (keep sections after the headers)
	cases := []struct {
		name string
		in   Input
		want error
	}{
		{"garbage stub", Input{Stub: []byte("MZ nothing"), Linux: kernel}, ErrStub},
		{"signed stub", Input{Stub: signed, Linux: kernel}, ErrStub},
		{"kernel not PE", Input{Stub: stub, Linux: []byte("\x1f\x8b gzip")}, ErrKernel},
		{"machine mismatch", Input{Stub: stub, Linux: arm}, ErrKernel},
		{"long name", Input{Stub: stub, Linux: kernel, Sections: []Section{{".toolongname", []byte("x")}}}, ErrInput},
		{"reserved name", Input{Stub: stub, Linux: kernel, Sections: []Section{{".cmdline", []byte("x")}}}, ErrInput},
		{"bad sbat", Input{Stub: stub, Linux: kernel, SBAT: []string{"just words"}}, ErrInput},
		{"sbat too big", Input{Stub: stub, Linux: kernel, SBAT: []string{strings.Repeat("a,1,b,c,1,d\n", 100)}}, ErrInput},
		{"no header room", Input{Stub: full, Linux: kernel}, nil},
	}
	for _, c := range cases {
		_, err := Build(c.in)
		if c.want == nil {
			if err == nil {
				t.Errorf("%s: accepted", c.name)
			}
			continue
		}
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

// TestInspectMinimal: Inspect reports what debug/pe reads.
func TestInspectMinimal(t *testing.T) {
	img, err := Build(Input{Stub: minimalPE(0x3000), Linux: minimalPE(0x5000), Cmdline: "a b", Uname: "1.2"})
	if err != nil {
		t.Fatal(err)
	}
	info, err := Inspect(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	f, _ := pe.NewFile(bytes.NewReader(img))
	if len(info.Sections) != len(f.Sections) || !info.IsUKI || info.Signed {
		t.Fatalf("%+v", info)
	}
	for i, s := range info.Sections {
		d, _ := f.Sections[i].Data()
		d = d[:min(len(d), int(max(f.Sections[i].VirtualSize, 1)))]
		if f.Sections[i].VirtualSize == 0 {
			d, _ = f.Sections[i].Data()
		}
		sum := sha256.Sum256(d)
		if s.Name != f.Sections[i].Name || s.SHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("section %d: %+v", i, s)
		}
	}
	if c, _ := ReadSection(bytes.NewReader(img), int64(len(img)), ".cmdline"); string(c) != "a b" {
		t.Errorf(".cmdline %q", c)
	}
	if _, err := Inspect(bytes.NewReader([]byte("MZ")), 2); !errors.Is(err, peimage.ErrFormat) {
		t.Errorf("garbage: %v", err)
	}
}
