package vmtest

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrPE reports an EFI stub that cannot take the UKI sections.
var ErrPE = errors.New("vmtest: unusable PE image")

// PESection is a section to append to a PE image.
type PESection struct {
	Name string // at most 8 bytes, e.g. ".linux"
	Data []byte
}

// AppendPESections returns a copy of the PE32+ image img with sections
// appended the way ukify adds UKI sections: each section's virtual address
// follows the previous one rounded up to SectionAlignment, its raw data is
// appended at the end of the file at FileAlignment, SizeOfImage and
// SizeOfInitializedData grow to match, and CheckSum is set to 0. The image
// must be unsigned and have room for the new headers before its first
// section's data.
func AppendPESections(img []byte, secs []PESection) ([]byte, error) {
	le := binary.LittleEndian
	if len(img) < 0x40 || string(img[:2]) != "MZ" {
		return nil, fmt.Errorf("%w: no MZ header", ErrPE)
	}
	peOff := int(le.Uint32(img[0x3c:]))
	if peOff < 0 || peOff+24 > len(img) || string(img[peOff:peOff+4]) != "PE\x00\x00" {
		return nil, fmt.Errorf("%w: no PE signature", ErrPE)
	}
	coff := peOff + 4
	if m := le.Uint16(img[coff:]); m != 0x8664 && m != 0xaa64 {
		return nil, fmt.Errorf("%w: machine %#x is not x86-64 or arm64", ErrPE, m)
	}
	nsec := int(le.Uint16(img[coff+2:]))
	optSize := int(le.Uint16(img[coff+16:]))
	opt := coff + 20
	if opt+optSize > len(img) || optSize < 152 || le.Uint16(img[opt:]) != 0x20b {
		return nil, fmt.Errorf("%w: not a PE32+ image", ErrPE)
	}
	secAlign := le.Uint32(img[opt+32:])
	fileAlign := le.Uint32(img[opt+36:])
	sizeOfHeaders := le.Uint32(img[opt+60:])
	if secAlign == 0 || fileAlign == 0 || secAlign&(secAlign-1) != 0 || fileAlign&(fileAlign-1) != 0 {
		return nil, fmt.Errorf("%w: bad alignment %d/%d", ErrPE, secAlign, fileAlign)
	}
	if le.Uint32(img[opt+144+4:]) != 0 { // security directory size (PE32+: dir[4] at opt+144)
		return nil, fmt.Errorf("%w: image is signed; sections must be added before signing", ErrPE)
	}
	table := opt + optSize
	if table+40*nsec > len(img) {
		return nil, fmt.Errorf("%w: section table outside the file", ErrPE)
	}
	firstRaw := uint32(len(img))
	var nextVA uint32
	for i := 0; i < nsec; i++ {
		h := img[table+40*i:]
		vsize, va := le.Uint32(h[8:]), le.Uint32(h[12:])
		rawSize, rawPtr := le.Uint32(h[16:]), le.Uint32(h[20:])
		if rawSize > 0 && rawPtr < firstRaw {
			firstRaw = rawPtr
		}
		end := va + max(vsize, rawSize)
		if end > nextVA {
			nextVA = end
		}
	}
	newTableEnd := uint32(table + 40*(nsec+len(secs)))
	if newTableEnd > sizeOfHeaders || newTableEnd > firstRaw {
		return nil, fmt.Errorf("%w: no room for %d more section headers (headers end at %d, first section data at %d)", ErrPE, len(secs), sizeOfHeaders, firstRaw)
	}
	out := append([]byte(nil), img...)
	out = padTo(out, fileAlign)
	initData := le.Uint32(out[opt+8:])
	for i, s := range secs {
		if len(s.Name) == 0 || len(s.Name) > 8 {
			return nil, fmt.Errorf("%w: section name %q", ErrPE, s.Name)
		}
		nextVA = alignUp(nextVA, secAlign)
		rawPtr := uint32(len(out))
		out = append(out, s.Data...)
		out = padTo(out, fileAlign)
		rawSize := uint32(len(out)) - rawPtr
		h := out[table+40*(nsec+i):][:40]
		clear(h)
		copy(h[0:8], s.Name)
		le.PutUint32(h[8:], uint32(len(s.Data)))
		le.PutUint32(h[12:], nextVA)
		le.PutUint32(h[16:], rawSize)
		le.PutUint32(h[20:], rawPtr)
		le.PutUint32(h[36:], 0x40000040) // CNT_INITIALIZED_DATA | MEM_READ
		nextVA += uint32(len(s.Data))
		initData += rawSize
	}
	le.PutUint16(out[coff+2:], uint16(nsec+len(secs)))
	le.PutUint32(out[opt+8:], initData)
	le.PutUint32(out[opt+56:], alignUp(nextVA, secAlign))
	le.PutUint32(out[opt+64:], 0)
	return out, nil
}

func alignUp(v, a uint32) uint32 { return (v + a - 1) &^ (a - 1) }

func padTo(b []byte, a uint32) []byte {
	if n := uint32(len(b)) % a; n != 0 {
		b = append(b, make([]byte, a-n)...)
	}
	return b
}
