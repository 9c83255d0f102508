package containerhost

import "github.com/intact-project/intact/internal/testimage"

// DemoImage is one of the example host's demo images.
type DemoImage struct {
	Repo       string
	Layers     []testimage.Layer
	Entrypoint []string
	Signed     bool // the walkthrough and the e2e test sign it
}

// DemoImages are the example host's images, built around probe (the
// internal/ctrprobe binary): app:1 (the probe and a data layer), pause:1
// (the pod sandbox CRI starts; it shares app's first layer) and
// unsigned:1 (left unsigned).
func DemoImages(probe []byte) []DemoImage {
	base := testimage.Layer{Comp: "gzip", Files: []testimage.File{
		{Name: "bin", Dir: true, Mode: 0o755}, {Name: "bin/ctrprobe", Mode: 0o755, Data: probe},
		{Name: "tmp", Dir: true, Mode: 0o1777}, {Name: "etc", Dir: true, Mode: 0o755}}}
	data := testimage.Layer{Comp: "zstd", Files: []testimage.File{{Name: "data", Dir: true, Mode: 0o755}, {Name: "data/hello.txt", Mode: 0o644, Data: []byte("hello\n")}}}
	unsigned := testimage.Layer{Comp: "gzip", Files: []testimage.File{{Name: "etc/unsigned", Mode: 0o644, Data: []byte("x\n")}}}
	return []DemoImage{
		{"app", []testimage.Layer{base, data}, []string{"/bin/ctrprobe"}, true},
		{"pause", []testimage.Layer{base}, []string{"/bin/ctrprobe", "pause"}, true},
		{"unsigned", []testimage.Layer{base, unsigned}, []string{"/bin/ctrprobe"}, false},
	}
}
