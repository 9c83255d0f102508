package uki_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/pe"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/intact-project/intact/internal/testutil"
	"github.com/intact-project/intact/internal/vmtest"
	"github.com/intact-project/intact/uki"
)

// These tests need the VM tier's Debian assets and ukify (internal/vmtest,
// which imports this package), so they live in the external test package.

func alignUp(v, a uint32) uint32 { return (v + a - 1) &^ (a - 1) }

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
	ours, err := uki.Build(uki.Input{Stub: stub, Linux: kernel, Initrds: initrds, Cmdline: cmdline, OSRelease: osrel, Uname: release})
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
		info, err := uki.Inspect(bytes.NewReader(mustRead(t, img.path)), int64(len(mustRead(t, img.path))))
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
	img, err := uki.Build(uki.Input{Stub: stub, Linux: kernel, Initrds: [][]byte{initrd}, Cmdline: "quiet", Uname: release})
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
	if rel, err := uki.KernelRelease(kernel); err != nil || rel != release {
		t.Errorf("KernelRelease = %q, %v; want %q", rel, err, release)
	}
}
