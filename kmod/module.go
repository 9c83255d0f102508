package kmod

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Marker is the string that ends a signed module.
const Marker = "~Module signature appended~\n"

// signatureInfoSize is sizeof(struct module_signature).
const signatureInfoSize = 12

// Values of struct module_signature.id_type.
const (
	idPGP   = 0
	idX509  = 1
	idPKCS7 = 2
)

// Limits on untrusted input.
const (
	// MaxModuleSize bounds an uncompressed module (the largest in-tree
	// and vendor GPU modules are tens of MiB).
	MaxModuleSize = 512 << 20
	// MaxCompressedSize bounds a compressed module file.
	MaxCompressedSize = 256 << 20
	// MaxSignatureSize bounds the appended PKCS#7 message.
	MaxSignatureSize = 1 << 20
)

// Sentinel errors; every error of this package wraps one of them.
var (
	// ErrNotModule: the input is not an ELF relocatable object.
	ErrNotModule = errors.New("kmod: not a kernel module")
	// ErrMalformed: the signature trailer or .modinfo is inconsistent.
	ErrMalformed = errors.New("kmod: malformed module")
	// ErrTooLarge: the input exceeds a limit.
	ErrTooLarge = errors.New("kmod: module too large")
	// ErrNotSigned: the module carries no signature.
	ErrNotSigned = errors.New("kmod: module is not signed")
	// ErrCompression: the compressed stream is corrupt or of an
	// unsupported kind.
	ErrCompression = errors.New("kmod: bad compressed module")
)

// Signature is a parsed appended signature.
type Signature struct {
	// Algo, Hash, IDType, SignerLen and KeyIDLen are the fields of
	// struct module_signature; the kernel wants 0, 0, 2 (PKCS#7), 0, 0.
	Algo, Hash, IDType, SignerLen, KeyIDLen uint8
	// PKCS7 is the DER (or BER) PKCS#7 message.
	PKCS7 []byte
}

// Module is a kernel module split into its content and its signature.
type Module struct {
	// Content is what a signature covers: the ELF object, plus anything
	// that precedes the last signature (an earlier signature, if the file
	// was signed twice).
	Content []byte
	// Signature is the last appended signature; nil if unsigned.
	Signature *Signature
}

// Parse splits an uncompressed module into content and signature. An
// unsigned module parses with a nil Signature. A trailer whose lengths do
// not fit the file is ErrMalformed, as the kernel's mod_check_sig says
// EBADMSG.
func Parse(data []byte) (*Module, error) {
	if len(data) > MaxModuleSize {
		return nil, fmt.Errorf("%w: %d bytes (limit %d)", ErrTooLarge, len(data), MaxModuleSize)
	}
	if !bytes.HasSuffix(data, []byte(Marker)) {
		return &Module{Content: data}, nil
	}
	rest := data[:len(data)-len(Marker)]
	if len(rest) < signatureInfoSize {
		return nil, fmt.Errorf("%w: signature marker without struct module_signature", ErrMalformed)
	}
	info := rest[len(rest)-signatureInfoSize:]
	rest = rest[:len(rest)-signatureInfoSize]
	sigLen := binary.BigEndian.Uint32(info[8:12])
	if uint64(sigLen) > uint64(len(rest)) || sigLen > MaxSignatureSize {
		return nil, fmt.Errorf("%w: signature length %d does not fit the %d bytes before it", ErrMalformed, sigLen, len(rest))
	}
	sig := &Signature{Algo: info[0], Hash: info[1], IDType: info[2], SignerLen: info[3], KeyIDLen: info[4],
		PKCS7: rest[len(rest)-int(sigLen):]}
	if info[5] != 0 || info[6] != 0 || info[7] != 0 {
		return nil, fmt.Errorf("%w: non-zero padding in struct module_signature", ErrMalformed)
	}
	return &Module{Content: rest[:len(rest)-int(sigLen)], Signature: sig}, nil
}

// Bytes returns the module as a file: content, then the signature trailer
// if there is one.
func (m *Module) Bytes() []byte {
	if m.Signature == nil {
		return m.Content
	}
	return appendSignature(append([]byte(nil), m.Content...), m.Signature)
}

func appendSignature(out []byte, s *Signature) []byte {
	out = append(out, s.PKCS7...)
	var info [signatureInfoSize]byte
	info[0], info[1], info[2], info[3], info[4] = s.Algo, s.Hash, s.IDType, s.SignerLen, s.KeyIDLen
	binary.BigEndian.PutUint32(info[8:], uint32(len(s.PKCS7)))
	out = append(out, info[:]...)
	return append(out, Marker...)
}

// checkPKCS7Trailer applies mod_check_sig (kernel/module_signature.c): the
// kernel verifies only PKCS#7 signatures with every other field zero.
func (s *Signature) checkTrailer() error {
	if s.IDType != idPKCS7 {
		return fmt.Errorf("%w: signature id_type %d (the kernel verifies only PKCS#7, id_type 2)", ErrMalformed, s.IDType)
	}
	if s.Algo != 0 || s.Hash != 0 || s.SignerLen != 0 || s.KeyIDLen != 0 {
		return fmt.Errorf("%w: PKCS#7 module signature with non-zero algo/hash/signer_len/key_id_len", ErrMalformed)
	}
	return nil
}

// Info is what .modinfo says about a module.
type Info struct {
	Name       string            `json:"name"`
	Version    string            `json:"version,omitempty"`
	Vermagic   string            `json:"vermagic,omitempty"`
	SrcVersion string            `json:"srcversion,omitempty"`
	License    string            `json:"license,omitempty"`
	Depends    []string          `json:"depends,omitempty"`
	Firmware   []string          `json:"firmware,omitempty"`
	All        map[string]string `json:"-"` // every key (last value wins; firmware and alias repeat)
}

// KernelRelease is the release named at the start of vermagic ("6.12.117+deb13-cloud-amd64 SMP ...").
func (i *Info) KernelRelease() string {
	f := strings.Fields(i.Vermagic)
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// ReadInfo parses the .modinfo section of an uncompressed module (signed
// or not).
func ReadInfo(data []byte) (*Info, error) {
	m, err := Parse(data)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(m.Content, []byte(elf.ELFMAG)) {
		return nil, fmt.Errorf("%w: not an ELF file", ErrNotModule)
	}
	f, err := elf.NewFile(bytes.NewReader(m.Content))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotModule, err)
	}
	defer f.Close()
	if f.Type != elf.ET_REL {
		return nil, fmt.Errorf("%w: ELF type %v (modules are ET_REL)", ErrNotModule, f.Type)
	}
	sec := f.Section(".modinfo")
	if sec == nil || sec.Type == elf.SHT_NOBITS {
		return nil, fmt.Errorf("%w: no .modinfo section", ErrNotModule)
	}
	if sec.Size > uint64(len(m.Content)) {
		return nil, fmt.Errorf("%w: .modinfo larger than the file", ErrMalformed)
	}
	raw, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("%w: .modinfo: %v", ErrMalformed, err)
	}
	info := &Info{All: map[string]string{}}
	for _, kv := range bytes.Split(raw, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		info.All[k] = v
		switch k {
		case "name":
			info.Name = v
		case "version":
			info.Version = v
		case "vermagic":
			info.Vermagic = v
		case "srcversion":
			info.SrcVersion = v
		case "license":
			info.License = v
		case "depends":
			if v != "" {
				info.Depends = strings.Split(v, ",")
			}
		case "firmware":
			info.Firmware = append(info.Firmware, v)
		}
	}
	if info.Name == "" {
		// Modules built before 5.x have no name= entry; the kernel then
		// uses the name in .gnu.linkonce.this_module.
		return nil, fmt.Errorf("%w: .modinfo has no name", ErrNotModule)
	}
	return info, nil
}
