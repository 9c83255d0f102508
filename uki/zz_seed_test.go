package uki

import (
	"fmt"
	"os"
	"testing"
)

func TestZZSeeds(t *testing.T) {
	img, _ := Build(Input{Stub: minimalPE(0x3000), Linux: minimalPE(0x5000), Cmdline: "console=ttyS0", Initrds: [][]byte{[]byte("initrd")}, OSRelease: "ID=x\n", Uname: "6.12.0"})
	os.MkdirAll("testdata/fuzz/FuzzInspect", 0o755)
	os.MkdirAll("testdata/fuzz/FuzzBuild", 0o755)
	os.WriteFile("testdata/fuzz/FuzzInspect/minimal-uki", []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", img)), 0o644)
	os.WriteFile("testdata/fuzz/FuzzBuild/minimal-stub", []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", minimalPE(0x3000))), 0o644)
}
