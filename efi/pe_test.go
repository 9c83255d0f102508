package efi

import (
	"bytes"
	"encoding/asn1"
	"encoding/binary"
	"errors"

	"github.com/intact-project/intact/internal/peimage"
)

// minimalPE is a small PE32+ image with one section; extra bytes are
// appended after the section data (trailing data Authenticode hashes).
func minimalPE(trailing int) []byte {
	le := binary.LittleEndian
	img := make([]byte, 0x600+trailing)
	copy(img, "MZ")
	le.PutUint32(img[0x3c:], 0x80)
	copy(img[0x80:], "PE\x00\x00")
	coff := 0x84
	le.PutUint16(img[coff:], 0x8664)
	le.PutUint16(img[coff+2:], 1)
	le.PutUint16(img[coff+16:], 240)
	le.PutUint16(img[coff+18:], 0x22)
	opt := coff + 20
	le.PutUint16(img[opt:], 0x20b)
	le.PutUint32(img[opt+16:], 0x1000)
	le.PutUint32(img[opt+32:], 0x1000)
	le.PutUint32(img[opt+36:], 0x200)
	le.PutUint32(img[opt+56:], 0x2000)
	le.PutUint32(img[opt+60:], 0x400)
	le.PutUint16(img[opt+68:], 10)
	le.PutUint32(img[opt+108:], 16)
	sec := opt + 240
	copy(img[sec:], ".text")
	le.PutUint32(img[sec+8:], 0x10)
	le.PutUint32(img[sec+12:], 0x1000)
	le.PutUint32(img[sec+16:], 0x200)
	le.PutUint32(img[sec+20:], 0x400)
	le.PutUint32(img[sec+36:], 0x60000020)
	for i := 0x400; i < len(img); i++ {
		img[i] = byte(i * 7)
	}
	return img
}

// embeddedSignature returns the SpcIndirectDataContent bytes and the
// digest in the first signature of a signed image.
func embeddedSignature(signed []byte) (spc, digest []byte, err error) {
	im, err := peimage.Parse(bytes.NewReader(signed), int64(len(signed)))
	if err != nil {
		return nil, nil, err
	}
	if im.SecuritySize == 0 {
		return nil, nil, errors.New("not signed")
	}
	der := signed[im.SecurityOffset+8 : im.SecurityOffset+binary.LittleEndian.Uint32(signed[im.SecurityOffset:])]
	var ci contentInfo
	if _, err := asn1.Unmarshal(der, &ci); err != nil {
		return nil, nil, err
	}
	var sd signedData
	if _, err := asn1.Unmarshal(ci.Content.Bytes, &sd); err != nil {
		return nil, nil, err
	}
	var seq asn1.RawValue
	if _, err := asn1.Unmarshal(sd.ContentInfo.Content.Bytes, &seq); err != nil {
		return nil, nil, err
	}
	var c spcIndirectDataContent
	if _, err := asn1.Unmarshal(seq.FullBytes, &c); err != nil {
		return nil, nil, err
	}
	return seq.FullBytes, c.MessageDigest.Digest, nil
}
