package uki

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/pe"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/internal/peimage"
	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/internal/vmtest"
)

// realInputs returns Debian stable's systemd-stub and cloud kernel (the VM
// tier's assets) and the kernel release.
func realInputs(t *testing.T) (stub, kernel []byte, release string) {
	t.Helper()
	testutil.RequireHost(t, "needs the VM tier's Debian assets")
	testutil.RequireTool(t, "dpkg-deb")
	a, err := vmtest.Fetch(context.Background(), vmtest.FetchOptions{})
	if err != nil {
		testutil.Unavailable(t, "Debian stable stub and kernel: "+err.Error())
	}
	return mustRead(t, a.Stub()), mustRead(t, a.Vmlinuz()), a.KernelRelease
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestBuildMatchesUkify builds the same UKI with Debian stable's ukify
// (systemd-ukify, run on this machine's python3 with Debian stable's
// pefile) and with Build, from Debian's systemd-stub and cloud kernel, and
// compares: every section's content, the stub's own sections, and what
// `ukify inspect --json` reports for both images against Inspect.
func TestBuildMatchesUkify(t *testing.T) {
	stub, kernel, release := realInputs(t)
	testutil.RequireTool(t, "python3")
	root, err := vmtest.FetchPackages(context.Background(), vmtest.FetchOptions{}, "ukify", vmtest.UkifyPackages...)
	if err != nil {
		testutil.Unavailable(t, "Debian stable ukify: "+err.Error())
	}
	dir := t.TempDir()
	initrds := [][]byte{randBytes(1, 100001), randBytes(2, 4097)}
	osrel := "ID=intact\nNAME=\"intact host\"\nVERSION_ID=1\n"
	cmdline := "console=ttyS0,115200 ro intact.root=PARTUUID=0a1b quiet"
	var ukifyArgs []string
	for i, b := range initrds {
		p := filepath.Join(dir, "initrd"+string(rune('0'+i)))
		os.WriteFile(p, b, 0o644)
		ukifyArgs = append(ukifyArgs, "--initrd", p)
	}
	os.WriteFile(filepath.Join(dir, "osrel"), []byte(osrel), 0o644)
	os.WriteFile(filepath.Join(dir, "kernel"), kernel, 0o644)
	os.WriteFile(filepath.Join(dir, "stub"), stub, 0o644)
	theirsPath := filepath.Join(dir, "ukify.efi")
	cmd := vmtest.Ukify(context.Background(), root, append([]string{"build", "--linux", filepath.Join(dir, "kernel"),
		"--stub", filepath.Join(dir, "stub"), "--cmdline", cmdline, "--os-release", "@" + filepath.Join(dir, "osrel"),
		"--uname", release, "--output", theirsPath}, ukifyArgs...)...)
	cmd.Env = append(cmd.Env, "SOURCE_DATE_EPOCH=1700000000")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ukify build: %v\n%s", err, out)
	}
	theirs := mustRead(t, theirsPath)
	ours, err := Build(Input{Stub: stub, Linux: kernel, Initrds: initrds, Cmdline: cmdline, OSRelease: osrel, Uname: release})
	if err != nil {
		t.Fatal(err)
	}
	oursPath := filepath.Join(dir, "ours.efi")
	os.WriteFile(oursPath, ours, 0o644)

	// Every section of ukify's image has the same content in ours.
	tf, err := pe.NewFile(bytes.NewReader(theirs))
	if err != nil {
		t.Fatal(err)
	}
	of, err := pe.NewFile(bytes.NewReader(ours))
	if err != nil {
		t.Fatalf("debug/pe cannot read our UKI: %v", err)
	}
	if len(tf.Sections) != len(of.Sections) {
		t.Errorf("ukify has %d sections, we have %d", len(tf.Sections), len(of.Sections))
	}
	for _, ts := range tf.Sections {
		os := of.Section(ts.Name)
		if os == nil {
			t.Errorf("section %s missing", ts.Name)
			continue
		}
		want := sectionContent(t, ts)
		got := sectionContent(t, os)
		if ts.Name == ".linux" {
			// ukify 257 sets .linux's VirtualSize to the kernel's size, we
			// to its SizeOfImage (upstream ukify's current rule): compare
			// the kernel bytes.
			got = got[:min(len(got), len(kernel))]
			if !bytes.Equal(want, kernel) {
				t.Errorf("ukify's .linux is not the kernel")
			}
			if os.VirtualSize != peSizeOfImage(t, kernel) {
				t.Errorf(".linux VirtualSize %#x, kernel SizeOfImage %#x", os.VirtualSize, peSizeOfImage(t, kernel))
			}
		}
		if !bytes.Equal(got, want) {
			t.Errorf("section %s: ours %d bytes sha256 %x, ukify %d bytes sha256 %x", ts.Name, len(got), sha256.Sum256(got), len(want), sha256.Sum256(want))
		}
		if ts.Characteristics != os.Characteristics {
			t.Errorf("section %s: characteristics %#x, ukify %#x", ts.Name, os.Characteristics, ts.Characteristics)
		}
	}
	for _, name := range []string{".osrel", ".cmdline", ".uname", ".initrd", ".linux", ".sbat"} {
		if of.Section(name) == nil {
			t.Errorf("no %s", name)
		}
	}
	sbat, _ := of.Section(".sbat").Data()
	if !bytes.Contains(sbat, []byte("\nuki,1,UKI,uki,1,")) || !bytes.HasPrefix(sbat, []byte("sbat,1,SBAT Version")) {
		t.Errorf(".sbat: %q", sbat)
	}
	checkLayout(t, ours, stub)

	// ukify inspect agrees with Inspect on both images.
	for _, img := range []struct{ name, path string }{{"ours", oursPath}, {"ukify's", theirsPath}} {
		out, err := vmtest.Ukify(context.Background(), root, "inspect", img.path, "--json=short").Output()
		if err != nil {
			t.Fatalf("ukify inspect %s: %v", img.name, err)
		}
		var ref map[string]struct {
			Size   uint32 `json:"size"`
			SHA256 string `json:"sha256"`
			Text   string `json:"text"`
		}
		if err := json.Unmarshal(out, &ref); err != nil {
			t.Fatalf("ukify inspect --json: %v: %s", err, out)
		}
		info, err := Inspect(bytes.NewReader(mustRead(t, img.path)), int64(len(mustRead(t, img.path))))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, s := range info.Sections {
			if !s.UKI {
				continue
			}
			n++
			r, ok := ref[s.Name]
			if !ok || r.Size != s.Size || r.SHA256 != s.SHA256 || r.Text != s.Text {
				t.Errorf("%s %s: Inspect %d %s %q; ukify inspect %+v", img.name, s.Name, s.Size, s.SHA256, s.Text, r)
			}
		}
		if n != len(ref) || !info.IsUKI {
			t.Errorf("%s: Inspect lists %d UKI sections, ukify %d", img.name, n, len(ref))
		}
	}
}

func sectionContent(t *testing.T, s *pe.Section) []byte {
	t.Helper()
	b, err := s.Data()
	if err != nil {
		t.Fatal(err)
	}
	return b[:min(len(b), int(s.VirtualSize))]
}

func peSizeOfImage(t *testing.T, img []byte) uint32 {
	f, err := pe.NewFile(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	return f.OptionalHeader.(*pe.OptionalHeader64).SizeOfImage
}

// checkLayout checks the rules of Build on a UKI with debug/pe: the stub's
// sections and headers are unchanged except the fields Build sets, new
// sections follow back to back in the order of Build, and SizeOfImage,
// CheckSum and SizeOfHeaders are as documented.
func checkLayout(t *testing.T, img, stub []byte) {
	t.Helper()
	f, err := pe.NewFile(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	sf, err := pe.NewFile(bytes.NewReader(stub))
	if err != nil {
		t.Fatal(err)
	}
	oh := f.OptionalHeader.(*pe.OptionalHeader64)
	soh := sf.OptionalHeader.(*pe.OptionalHeader64)
	if oh.CheckSum != 0 {
		t.Errorf("CheckSum %#x, want 0", oh.CheckSum)
	}
	if oh.SizeOfHeaders%oh.FileAlignment != 0 {
		t.Errorf("SizeOfHeaders %#x not aligned", oh.SizeOfHeaders)
	}
	for i, ss := range sf.Sections {
		s := f.Sections[i]
		if s.Name != ss.Name || s.VirtualAddress != ss.VirtualAddress || s.Offset != ss.Offset || s.Size != ss.Size {
			t.Errorf("stub section %s moved: %+v -> %+v", ss.Name, ss.SectionHeader, s.SectionHeader)
		}
		if ss.Name == ".sbat" {
			continue
		}
		a, _ := ss.Data()
		b, _ := s.Data()
		if !bytes.Equal(a, b) {
			t.Errorf("stub section %s changed", ss.Name)
		}
	}
	prev := f.Sections[len(sf.Sections)-1]
	order := ""
	for _, s := range f.Sections[len(sf.Sections):] {
		order += s.Name + " "
		wantVA := alignUp(prev.VirtualAddress+prev.VirtualSize, oh.SectionAlignment)
		if s.VirtualAddress != wantVA {
			t.Errorf("%s at VA %#x, want %#x (after %s)", s.Name, s.VirtualAddress, wantVA, prev.Name)
		}
		if s.Offset != prev.Offset+prev.Size || s.Offset%oh.FileAlignment != 0 || s.Size%oh.FileAlignment != 0 {
			t.Errorf("%s raw data at %#x+%#x, previous ends at %#x", s.Name, s.Offset, s.Size, prev.Offset+prev.Size)
		}
		prev = s
	}
	if want := ".osrel .cmdline .uname .initrd .linux "; order != want {
		t.Errorf("section order %q, want %q", order, want)
	}
	if end := alignUp(prev.VirtualAddress+prev.VirtualSize, oh.SectionAlignment); oh.SizeOfImage != end {
		t.Errorf("SizeOfImage %#x, want %#x", oh.SizeOfImage, end)
	}
	if int64(len(img)) != int64(prev.Offset+prev.Size) {
		t.Errorf("file is %d bytes, last section ends at %d", len(img), prev.Offset+prev.Size)
	}
	if oh.DllCharacteristics != soh.DllCharacteristics {
		t.Errorf("DllCharacteristics %#x, stub %#x (the kernel is NX-compatible)", oh.DllCharacteristics, soh.DllCharacteristics)
	}
}

// TestObjdumpReadsUKI: binutils reads our image and extracts the sections.
func TestObjdumpReadsUKI(t *testing.T) {
	stub, kernel, release := realInputs(t)
	objcopy := testutil.RequireTool(t, "objcopy")
	initrd := randBytes(3, 70000)
	img, err := Build(Input{Stub: stub, Linux: kernel, Initrds: [][]byte{initrd}, Cmdline: "quiet", Uname: release})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "uki.efi")
	os.WriteFile(p, img, 0o644)
	for name, want := range map[string][]byte{".initrd": initrd, ".cmdline": []byte("quiet"), ".uname": []byte(release)} {
		out := filepath.Join(dir, name)
		if b, err := exec.Command(objcopy, "-O", "binary", "--only-section="+name, p, out).CombinedOutput(); err != nil {
			t.Fatalf("objcopy %s: %v %s", name, err, b)
		}
		got := mustRead(t, out)
		if !bytes.Equal(got, want) {
			t.Errorf("objcopy %s: %d bytes, want %d", name, len(got), len(want))
		}
	}
	if rel, err := KernelRelease(kernel); err != nil || rel != release {
		t.Errorf("KernelRelease = %q, %v; want %q", rel, err, release)
	}
}

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
