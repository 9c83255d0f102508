// Package kmodtest builds minimal kernel module files for tests: ELF64
// relocatable objects with a .modinfo section, which the kmod parsers accept
// (the kernel would not load them; real modules come from
// internal/vmtest/cmd/vmkbuild).
package kmodtest

import (
	"bytes"
	"encoding/binary"
	"strings"
)

// Module builds the smallest ELF64 relocatable object the parsers
// accept as a module: a .modinfo section with name= and version=, and the
// section name table.
func Module(name, version string, depends ...string) []byte {
	modinfo := []byte("version=" + version + "\x00name=" + name + "\x00depends=" + strings.Join(depends, ",") + "\x00vermagic=6.12.0 SMP mod_unload\x00")
	shstr := []byte("\x00.modinfo\x00.shstrtab\x00")
	const ehsize, shentsize = 64, 64
	dataOff := ehsize
	shstrOff := dataOff + len(modinfo)
	shOff := (shstrOff + len(shstr) + 7) &^ 7
	var b bytes.Buffer
	h := make([]byte, ehsize)
	copy(h, "\x7fELF")
	h[4], h[5], h[6] = 2, 1, 1 // 64-bit, little-endian, version 1
	le := binary.LittleEndian
	le.PutUint16(h[16:], 1)  // ET_REL
	le.PutUint16(h[18:], 62) // EM_X86_64
	le.PutUint32(h[20:], 1)  // EV_CURRENT
	le.PutUint64(h[40:], uint64(shOff))
	le.PutUint16(h[52:], ehsize)
	le.PutUint16(h[58:], shentsize)
	le.PutUint16(h[60:], 3) // sections
	le.PutUint16(h[62:], 2) // shstrndx
	b.Write(h)
	b.Write(modinfo)
	b.Write(shstr)
	for b.Len() < shOff {
		b.WriteByte(0)
	}
	sh := func(nameOff, typ, flags, off, size uint64) {
		s := make([]byte, shentsize)
		le.PutUint32(s[0:], uint32(nameOff))
		le.PutUint32(s[4:], uint32(typ))
		le.PutUint64(s[8:], flags)
		le.PutUint64(s[24:], off)
		le.PutUint64(s[32:], size)
		le.PutUint64(s[48:], 1)
		b.Write(s)
	}
	sh(0, 0, 0, 0, 0)
	sh(1, 1, 2, uint64(dataOff), uint64(len(modinfo))) // .modinfo, PROGBITS, ALLOC
	sh(10, 3, 0, uint64(shstrOff), uint64(len(shstr))) // .shstrtab, STRTAB
	return b.Bytes()
}
