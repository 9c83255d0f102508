package bootcfg

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"
	"strings"
	"testing"
)

// gptImage builds a small disk image with a GPT holding the given
// partition types (mixed-endian GUIDs, CRCs set) for ReadGPT tests.
func gptImage(types ...[16]byte) []byte {
	le := binary.LittleEndian
	img := make([]byte, 64*512)
	ents := img[2*512 : 2*512+128*128]
	for i, typ := range types {
		e := ents[i*128:]
		copy(e[0:16], typ[:])
		e[16] = byte(i + 1) // partition GUID
		le.PutUint64(e[32:], uint64(34+i*2))
		le.PutUint64(e[40:], uint64(35+i*2))
		for j, c := range "part" {
			le.PutUint16(e[56+2*j:], uint16(c))
		}
	}
	h := img[512:]
	copy(h, "EFI PART")
	le.PutUint32(h[8:], 0x00010000)
	le.PutUint32(h[12:], 92)
	le.PutUint64(h[72:], 2)
	le.PutUint32(h[80:], 128)
	le.PutUint32(h[84:], 128)
	le.PutUint32(h[88:], crc32.ChecksumIEEE(ents))
	le.PutUint32(h[16:], crc32.ChecksumIEEE(h[:92]))
	return img
}

func guidBytes(s string) [16]byte {
	var b [16]byte
	var raw []byte
	for _, c := range strings.ReplaceAll(s, "-", "") {
		raw = append(raw, byte(c))
	}
	hex := func(c byte) byte {
		if c >= 'a' {
			return c - 'a' + 10
		}
		return c - '0'
	}
	var x [16]byte
	for i := 0; i < 16; i++ {
		x[i] = hex(raw[2*i])<<4 | hex(raw[2*i+1])
	}
	// Mixed endian: first three fields little-endian.
	b[0], b[1], b[2], b[3] = x[3], x[2], x[1], x[0]
	b[4], b[5] = x[5], x[4]
	b[6], b[7] = x[7], x[6]
	copy(b[8:], x[8:])
	return b
}

func TestReadGPT(t *testing.T) {
	img := gptImage(guidBytes(TypeRootX86), guidBytes(TypeRootSigX86))
	parts, err := ReadGPT(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 2 || parts[0].Type != TypeRootX86 || parts[1].Type != TypeRootSigX86 || parts[0].Name != "part" || parts[1].FirstLBA != 36 {
		t.Fatalf("%+v", parts)
	}
	bad := append([]byte(nil), img...)
	bad[2*512+5] ^= 1 // entry array changed: CRC mismatch
	if _, err := ReadGPT(bytes.NewReader(bad)); err == nil {
		t.Error("a GPT with a bad entry CRC was accepted")
	}
	bad = append([]byte(nil), img...)
	bad[512+40] ^= 1 // header changed
	if _, err := ReadGPT(bytes.NewReader(bad)); err == nil {
		t.Error("a GPT with a bad header CRC was accepted")
	}
}

func TestSignatureRoundTrip(t *testing.T) {
	s := &Signature{RootHash: strings.Repeat("ab", 32), Signature: base64.StdEncoding.EncodeToString([]byte("der")), CertificateFingerprint: "ff"}
	b, err := s.Marshal()
	if err != nil || len(b) != SigPartitionSize {
		t.Fatalf("%d %v", len(b), err)
	}
	back, der, err := ParseSignature(b)
	if err != nil || *back != *s || string(der) != "der" {
		t.Fatalf("%+v %q %v", back, der, err)
	}
	b[len(b)-1] = 'x'
	if _, _, err := ParseSignature(b); err == nil {
		t.Error("data after the NUL padding was accepted")
	}
	if _, _, err := ParseSignature([]byte(`{"rootHash":"ab","signature":"!!"}`)); err == nil {
		t.Error("bad base64 accepted")
	}
}

func TestPartitionUUIDs(t *testing.T) {
	h := make([]byte, 32)
	for i := range h {
		h[i] = byte(i)
	}
	r, v := PartitionUUIDs(h)
	if r != "00010203-0405-4607-8809-0a0b0c0d0e0f" || v != "10111213-1415-4617-9819-1a1b1c1d1e1f" {
		t.Errorf("%s %s", r, v)
	}
}

func FuzzReadGPT(f *testing.F) {
	f.Add(gptImage(guidBytes(TypeRootX86), guidBytes(TypeRootVerityX86), guidBytes(TypeRootSigX86)))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		parts, err := ReadGPT(bytes.NewReader(b))
		if err == nil && len(parts) > 1024 {
			t.Fatalf("%d partitions", len(parts))
		}
	})
}

func FuzzParseSignature(f *testing.F) {
	s := &Signature{RootHash: strings.Repeat("ab", 32), Signature: base64.StdEncoding.EncodeToString([]byte("der")), CertificateFingerprint: "ff"}
	b, _ := s.Marshal()
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		ParseSignature(b)
	})
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"version":1,"root_hash":"` + strings.Repeat("ab", 32) + `","verity":{"algorithm":"sha256","data_block_size":4096,"hash_block_size":4096,"data_blocks":1,"salt":"00","superblock":true},"var":{"mode":"tmpfs"},"etc":{"mode":"overlay"},"init":["/sbin/init"]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if c, err := Parse(b); err == nil && c.Validate() != nil {
			t.Fatal("Parse accepted an invalid configuration")
		}
	})
}
