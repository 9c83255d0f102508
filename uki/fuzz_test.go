package uki

import (
	"bytes"
	"debug/pe"
	"testing"
)

// FuzzInspect feeds arbitrary bytes to Inspect: it must return an error or
// a section list, never panic or read out of bounds.
func FuzzInspect(f *testing.F) {
	img, err := Build(Input{Stub: minimalPE(0x3000), Linux: minimalPE(0x5000), Cmdline: "x", Initrds: [][]byte{[]byte("i")}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(img)
	f.Add(minimalPE(0x3000))
	f.Add([]byte("MZ"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 64<<10 {
			return // big inputs add nothing but slow minimization down
		}
		info, err := Inspect(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		for _, s := range info.Sections {
			if int64(s.FileOffset)+int64(s.Size) > int64(len(b)) {
				t.Fatalf("section %s beyond the input", s.Name)
			}
		}
	})
}

// FuzzBuild feeds arbitrary stubs (the kernel is the stub itself, or a
// fixed small image when the stub is not usable as one): Build must fail
// cleanly or produce an image that debug/pe and Inspect read with the
// .linux section holding the kernel.
func FuzzBuild(f *testing.F) {
	f.Add(minimalPE(0x3000))
	f.Add([]byte("MZ"))
	fixed := minimalPE(0x5000)
	f.Fuzz(func(t *testing.T, stub []byte) {
		if len(stub) > 64<<10 {
			return
		}
		kernel := stub
		if _, err := Build(Input{Stub: fixed, Linux: stub}); err != nil {
			kernel = fixed
		}
		img, err := Build(Input{Stub: stub, Linux: kernel, Cmdline: "c", Initrds: [][]byte{[]byte("initrd")}})
		if err != nil {
			return
		}
		info, err := Inspect(bytes.NewReader(img), int64(len(img)))
		if err != nil {
			t.Fatalf("Build output does not inspect: %v", err)
		}
		if !info.IsUKI {
			t.Fatal("no .linux")
		}
		got, err := ReadSection(bytes.NewReader(img), int64(len(img)), ".linux")
		if err != nil || !bytes.Equal(got[:min(len(got), len(kernel))], kernel) {
			t.Fatalf(".linux does not hold the kernel (%v)", err)
		}
		if _, err := pe.NewFile(bytes.NewReader(stub)); err == nil {
			if _, err := pe.NewFile(bytes.NewReader(img)); err != nil {
				t.Fatalf("debug/pe reads the stub but not the UKI: %v", err)
			}
		}
	})
}
