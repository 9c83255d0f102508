package erofstest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"strings"
	"time"
)

// Member is one tar member of a generated corpus.
type Member struct {
	Hdr  tar.Header
	Data []byte
}

// Tar writes members as a PAX tar (USTAR where the header fits).
func Tar(members []Member) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		h := m.Hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(m.Data))
		}
		if h.Format == tar.FormatUnknown {
			h.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(&h); err != nil {
			panic(fmt.Sprintf("corpus %s: %v", h.Name, err))
		}
		if len(m.Data) > 0 {
			if _, err := tw.Write(m.Data); err != nil {
				panic(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// T0 is the base time of the corpus (fixed, so the corpus bytes are too).
var T0 = time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)

func at(i int) time.Time { return T0.Add(time.Duration(i) * 1001 * time.Millisecond) }

// Dir, File, ... build members with fixed attributes.
func Dir(name string, mode int64, i int) Member {
	return Member{Hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: at(i)}}
}

// File is a regular file member.
func File(name string, mode int64, data []byte, i int) Member {
	return Member{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, ModTime: at(i)}, Data: data}
}

// Symlink is a symlink member.
func Symlink(name, target string, i int) Member {
	return Member{Hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: at(i)}}
}

// Hardlink is a hardlink member.
func Hardlink(name, target string, i int) Member {
	return Member{Hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644, ModTime: at(i)}}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) + 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

// Pattern returns n deterministic pseudo-random bytes.
func Pattern(n int, seed byte) []byte { return pattern(n, seed) }

// Features is a layer that uses every feature of the writer that a tar can
// express: every file type, setuid/setgid/sticky, 32-bit ids, nanosecond
// mtimes, user/trusted/security xattrs (inline and shared, incl.
// security.capability), long symlinks, hardlinks, multi-block directories,
// odd names, implicit parents, replaced entries, path normalization and
// OCI whiteouts.
func Features() []byte {
	capV2 := []byte{0x00, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	shared := map[string]string{"SCHILY.xattr.user.shared": "same value on several inodes"}
	ms := []Member{
		Dir("./", 0o755, 0),
		Dir("bin/", 0o755, 1),
		File("bin/su", 0o4755, pattern(3000, 1), 2),
		File("bin/sh", 0o755, pattern(70000, 2), 3),
		Hardlink("bin/bash", "bin/sh", 4),
		Hardlink("./bin/dash", "./bin/sh", 5),
		Dir("tmp/", 0o1777, 6),
		Dir("var/", 0o755, 7),
		Dir("var/mail/", 0o2775, 8),
		File("var/mail/g", 0o2644, []byte("setgid file"), 9),
		Dir("etc/", 0o755, 10),
		File("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n"), 11),
		File("etc/empty", 0o600, nil, 12),
		File("etc/one", 0o644, []byte{'x'}, 13),
		File("etc/block512", 0o644, pattern(512, 3), 14),
		File("etc/block4096", 0o644, pattern(4096, 4), 15),
		File("etc/block4097", 0o644, pattern(4097, 5), 16),
		Symlink("etc/short", "passwd", 17),
		Symlink("etc/long", strings.Repeat("very-long-target/", 235)+"end", 18),
		Symlink("etc/abs", "/etc/passwd", 19),
		Dir("dev/", 0o755, 20),
		{Hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: at(21)}},
		{Hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "dev/sda", Mode: 0o660, Gid: 6, Devmajor: 8, Devminor: 0, ModTime: at(22)}},
		{Hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/wide", Mode: 0o600, Devmajor: 300, Devminor: 70000, ModTime: at(23)}},
		{Hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "dev/fifo", Mode: 0o644, ModTime: at(24)}},
		Dir("home/", 0o755, 25),
		{Hdr: tar.Header{Typeflag: tar.TypeDir, Name: "home/big/", Mode: 0o700, Uid: 3000000000, Gid: 4000000000, ModTime: at(26)}},
		{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: "home/big/file", Mode: 0o640, Uid: 70000, Gid: 65536, ModTime: at(27)}, Data: []byte("wide ids")},
		{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: "home/old", Mode: 0o644, ModTime: time.Unix(-86400*365, 5).UTC()}, Data: []byte("before 1970")},
		{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: "home/epoch", Mode: 0o644, ModTime: time.Unix(0, 0).UTC(), Format: tar.FormatUSTAR}, Data: []byte("compact inode")},
		Dir("x/", 0o755, 28),
		{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: "x/cap", Mode: 0o755, ModTime: at(29), PAXRecords: map[string]string{"SCHILY.xattr.security.capability": string(capV2)}}, Data: []byte("#!/bin/true\n")},
		{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: "x/user", Mode: 0o644, ModTime: at(30), PAXRecords: map[string]string{"SCHILY.xattr.user.a": "1", "SCHILY.xattr.user.b": "", "SCHILY.xattr.trusted.t": "trusted value", "SCHILY.xattr.user.big": string(pattern(3000, 6))}}, Data: []byte("xattrs")},
		{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: "x/s1", Mode: 0o644, ModTime: at(31), PAXRecords: shared}, Data: []byte("1")},
		{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: "x/s2", Mode: 0o644, ModTime: at(32), PAXRecords: shared}, Data: []byte("2")},
		{Hdr: tar.Header{Typeflag: tar.TypeDir, Name: "x/sd/", Mode: 0o755, ModTime: at(33), PAXRecords: shared}},
		{Hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "x/sl", Linkname: "s1", Mode: 0o777, ModTime: at(34)}},
		Dir("names/", 0o755, 35),
		File("names/-dash", 0o644, []byte("sorts before dot"), 36),
		File("names/with space", 0o644, nil, 37),
		File("names/unicode-名前", 0o644, []byte("utf-8"), 38),
		File("names/"+strings.Repeat("n", 255), 0o644, []byte("255-byte name"), 39),
		File("names/\x01ctl", 0o644, nil, 40),
		File("implicit/a/b/file", 0o644, []byte("parents never named"), 41),
		Dir("replace/", 0o755, 42),
		File("replace/x", 0o644, []byte("first version"), 43),
		File("replace/x", 0o600, []byte("second version wins"), 44),
		Dir("replace/d/", 0o755, 45),
		File("replace/d/child", 0o644, []byte("dropped"), 46),
		File("replace/d", 0o644, []byte("file replaced a directory"), 47),
		File("replace/f", 0o644, []byte("replaced by a directory"), 48),
		Dir("replace/f/", 0o750, 49),
		File("replace/f/inside", 0o644, []byte("in the new directory"), 50),
		Dir("etc/", 0o751, 51), // a later entry for a directory keeps its contents
		Dir("./norm//a/", 0o755, 52),
		File("norm/a/b", 0o644, []byte("normalized"), 53),
		File("/norm/abs", 0o644, []byte("leading slash"), 54),
		Dir("wh/", 0o755, 55),
		File("wh/.wh.gone", 0o000, nil, 56),
		File("wh/kept", 0o644, []byte("kept"), 57),
		Dir("opq/", 0o755, 58),
		File("opq/.wh..wh..opq", 0o000, nil, 59),
		File("opq/keep", 0o644, []byte("keep"), 60),
		File("meta/.wh..wh.plnk", 0o000, nil, 61),
		Dir("many/", 0o755, 62),
	}
	for i := 0; i < 600; i++ {
		ms = append(ms, File(fmt.Sprintf("many/file-with-a-longer-name-%04d", i), 0o644, []byte(fmt.Sprint(i)), 63))
	}
	ms = append(ms, Dir("many/sub/", 0o755, 64))
	return Tar(ms)
}

// Empty is a layer with only the end-of-archive marker.
func Empty() []byte { return Tar(nil) }

// Stack returns three layers meant to be stacked (L1 lowest): whiteouts,
// opaque directories, replacements across layers and metadata changes.
func Stack() [][]byte {
	l1 := Tar([]Member{
		Dir("./", 0o755, 0),
		Dir("a/", 0o755, 1),
		File("a/file1", 0o644, []byte("l1 file1"), 2),
		File("a/file2", 0o644, []byte("l1 file2"), 3),
		Hardlink("a/link2", "a/file2", 3), // real tars repeat the target's metadata
		Dir("b/", 0o755, 5),
		File("b/old1", 0o644, []byte("old"), 6),
		Dir("b/olddir/", 0o755, 7),
		File("b/olddir/deep", 0o644, []byte("deep"), 8),
		File("c", 0o644, []byte("c is a file in l1"), 9),
		Dir("d/", 0o700, 10),
		File("d/e", 0o600, []byte("e"), 11),
		Symlink("s", "a/file1", 12),
		{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: "x", Mode: 0o644, ModTime: at(13), PAXRecords: map[string]string{"SCHILY.xattr.user.v": "l1"}}, Data: []byte("x")},
	})
	l2 := Tar([]Member{
		Dir("./", 0o755, 0),
		Dir("a/", 0o755, 1),
		File("a/.wh.file1", 0o000, nil, 20),
		File("a/file2", 0o644, []byte("l2 file2 replaces"), 21),
		Dir("b/", 0o755, 5),
		File("b/.wh..wh..opq", 0o000, nil, 22),
		File("b/new", 0o644, []byte("new in opaque b"), 23),
		Dir("c/", 0o755, 24),
		File("c/inside", 0o644, []byte("c became a directory"), 25),
		Symlink("s2", "c/inside", 26),
		{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: "x", Mode: 0o600, ModTime: at(27), PAXRecords: map[string]string{"SCHILY.xattr.user.v": "l2"}}, Data: []byte("x2")},
	})
	l3 := Tar([]Member{
		Dir("./", 0o755, 0),
		File(".wh.c", 0o000, nil, 30),
		Dir("a/", 0o755, 1),
		File("a/file1", 0o644, []byte("l3 file1 is back"), 31),
		Dir("d/", 0o755, 32),
		File("d/f", 0o644, []byte("f"), 33),
		File(".wh.s", 0o000, nil, 34),
	})
	return [][]byte{l1, l2, l3}
}
