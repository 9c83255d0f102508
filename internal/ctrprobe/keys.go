package main

import (
	"encoding/binary"
	"os"
	"path/filepath"

	"github.com/intact-project/intact/efi"
	"github.com/intact-project/intact/internal/linux"
	"github.com/intact-project/intact/keyring"
)

// shimGUID is the vendor GUID of shim's MOK variables (MokListRT, ...).
const shimGUID = "605dab50-e046-4300-abb6-3dd810dd8b23"

// efivarWrite tries to leave a key for the next boot: mount efivarfs (the
// host may have none mounted, or none registered) and create NAME under
// shim's GUID, non-volatile (NV|BS|RT), holding an X.509 signature list
// with a certificate of its own. Debian's kernel reads a MokListRT
// variable at boot without checking its attributes.
func efivarWrite(name string) {
	dir := filepath.Join(os.TempDir(), "ctrprobe-efivars")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		fail("mkdir", dir, err, 1)
	}
	if err := linux.Mount("efivarfs", dir, "efivarfs", 0, ""); err != nil {
		fail("mount", "efivarfs", err, 1)
	}
	defer linux.Unmount(dir, 0)
	_, cert, err := selfSigned()
	if err != nil {
		fail("certificate", name, err, 1)
	}
	esl, err := efi.SignatureList(cert, shimGUID)
	if err != nil {
		fail("signature list", name, err, 1)
	}
	data := binary.LittleEndian.AppendUint32(nil, 0x7) // NV|BS|RT
	data = append(data, esl...)
	p := filepath.Join(dir, name+"-"+shimGUID)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		fail("create", p, err, 1)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(p)
		fail("write", p, err, 1)
	}
	if err := f.Close(); err != nil {
		fail("write", p, err, 1)
	}
	ok("write", p, "variable created")
}

// keyLink links the keyring named from into the keyring named to (by
// their /proc/keys descriptions).
func keyLink(from, to string) {
	a, err := keyring.FindKeyring(from)
	if err != nil {
		fail("find", from, err, 1)
	}
	b, err := keyring.FindKeyring(to)
	if err != nil {
		fail("find", to, err, 1)
	}
	if err := keyring.Link(a, b); err != nil {
		fail("keyctl-link", from+"->"+to, err, 1)
	}
	ok("keyctl-link", from+"->"+to, "linked")
}
