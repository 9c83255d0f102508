package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/intact-project/intact/erofs/erofstest"
)

func runCLIStdin(t *testing.T, stdin []byte, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, bytes.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// TestLayerConvertJSON checks the output contract of `layer convert --json`
// and that verify, ls and inspect accept the result.
func TestLayerConvertJSON(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "layer.tar")
	if err := os.WriteFile(in, erofstest.Stack()[0], 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"full", "tar-index"} {
		out := filepath.Join(dir, p+".img")
		args := []string{"layer", "convert", in, "-o", out, "--profile", p, "--json"}
		if p == "tar-index" {
			args = append(args, "--hash-output", out+".hash", "--metadata-output", out+".meta")
		}
		code, stdout, stderr := runCLI(t, args...)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", p, code, stderr)
		}
		var j map[string]any
		if err := json.Unmarshal([]byte(stdout), &j); err != nil {
			t.Fatalf("%s: stdout is not one JSON object: %v\n%s", p, err, stdout)
		}
		keys := []string{"root_hash", "hash_offset", "data_blocks", "data_block_size", "hash_block_size", "hash_algorithm", "salt", "profile", "diff_id", "digest"}
		if p == "tar-index" {
			keys = append(keys, "metadata_size", "uuid")
		}
		for _, k := range keys {
			if _, ok := j[k]; !ok {
				t.Errorf("%s: JSON lacks %q", p, k)
			}
		}
		if j["profile"] != p || !strings.HasPrefix(j["diff_id"].(string), "sha256:") || !strings.HasPrefix(j["digest"].(string), "sha256:") || j["hash_algorithm"] != "sha256" {
			t.Errorf("%s: JSON %v", p, j)
		}
		root := j["root_hash"].(string)
		if len(root) != 64 || strings.ToLower(root) != root {
			t.Errorf("%s: root_hash %q", p, root)
		}
		if p == "tar-index" && (j["salt"] != strings.Repeat("0", 64) || j["data_block_size"].(float64) != 512) {
			t.Errorf("tar-index: salt %v block %v", j["salt"], j["data_block_size"])
		}
		if code, _, stderr := runCLI(t, "layer", "verify", out, root); code != 0 {
			t.Errorf("%s: verify: exit %d: %s", p, code, stderr)
		}
		bad := strings.Repeat("0", 64)
		if code, _, stderr := runCLI(t, "layer", "verify", out, bad); code != 1 || !strings.Contains(stderr, "intact: ") {
			t.Errorf("%s: verify with a wrong root: exit %d: %s", p, code, stderr)
		}
		code, stdout, _ = runCLI(t, "layer", "ls", "--json", "-R", out)
		var ls []map[string]any
		if code != 0 || json.Unmarshal([]byte(stdout), &ls) != nil || len(ls) < 10 {
			t.Errorf("%s: ls --json: exit %d, %d entries", p, code, len(ls))
		}
		code, stdout, _ = runCLI(t, "layer", "ls", out, "a")
		if code != 0 || !strings.Contains(stdout, "file2") || !strings.Contains(stdout, "-rw-r--r--   2") {
			t.Errorf("%s: ls a: exit %d\n%s", p, code, stdout)
		}
		code, stdout, _ = runCLI(t, "layer", "inspect", "--json", out)
		if code != 0 || !strings.Contains(stdout, `"profile": "`+p+`"`) {
			t.Errorf("%s: inspect: exit %d\n%s", p, code, stdout)
		}
	}
	// stdin input gives the same image as the file.
	code, stdout, stderr := runCLIStdin(t, erofstest.Stack()[0], "layer", "convert", "-", "-o", filepath.Join(dir, "stdin.img"), "--json")
	if code != 0 {
		t.Fatalf("stdin: exit %d: %s", code, stderr)
	}
	a, _ := os.ReadFile(filepath.Join(dir, "stdin.img"))
	b, _ := os.ReadFile(filepath.Join(dir, "full.img"))
	if !bytes.Equal(a, b) || !strings.Contains(stdout, `"root_hash"`) {
		t.Error("converting from stdin gives different bytes than from the file")
	}
}

// TestLayerConvertMetadataTreeOnly: tar-index without -o writes only the
// metadata and the tree, the same bytes and JSON as a conversion with a data
// device, and nothing else.
func TestLayerConvertMetadataTreeOnly(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "layer.tar.gz")
	if err := os.WriteFile(in, gzipBytes(t, erofstest.Features()), 0o644); err != nil {
		t.Fatal(err)
	}
	var js []map[string]any
	for _, sub := range []string{"with", "without"} {
		d := filepath.Join(dir, sub)
		os.Mkdir(d, 0o755)
		args := []string{"layer", "convert", in, "--profile", "tar-index", "--json", "--hash-output", filepath.Join(d, "tree"), "--metadata-output", filepath.Join(d, "meta")}
		if sub == "with" {
			args = append(args, "-o", filepath.Join(d, "img"))
		}
		code, stdout, stderr := runCLI(t, args...)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", sub, code, stderr)
		}
		var j map[string]any
		if err := json.Unmarshal([]byte(stdout), &j); err != nil {
			t.Fatal(err)
		}
		delete(j, "output")
		delete(j, "hash_output")
		delete(j, "metadata_output")
		js = append(js, j)
	}
	if fmt.Sprint(js[0]) != fmt.Sprint(js[1]) {
		t.Fatalf("JSON differs:\nwith -o:    %v\nwithout -o: %v", js[0], js[1])
	}
	for _, f := range []string{"tree", "meta"} {
		a, _ := os.ReadFile(filepath.Join(dir, "with", f))
		b, _ := os.ReadFile(filepath.Join(dir, "without", f))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("%s differs with and without a data device", f)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "without")); len(ents) != 2 {
		t.Errorf("without -o the directory holds %d entries, want tree and meta", len(ents))
	}
}

// TestLayerConvertBadInput: every bad input gives one line, a non-zero exit
// and no output file.
func TestLayerConvertBadInput(t *testing.T) {
	dir := t.TempDir()
	hostile := erofstest.Tar([]erofstest.Member{erofstest.File("../../etc/passwd", 0o644, []byte("x"), 0)})
	truncated := erofstest.Stack()[0]
	truncated = truncated[:len(truncated)/2]
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o644)
		return p
	}
	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"missing-input", []string{"layer", "convert", filepath.Join(dir, "nope"), "-o", "OUT"}, 1, "no such file"},
		{"missing-output", []string{"layer", "convert", write("ok.tar", erofstest.Empty())}, 2, "-o OUTPUT"},
		{"bad-profile", []string{"layer", "convert", write("ok.tar", erofstest.Empty()), "-o", "OUT", "--profile", "squash"}, 2, "unknown layer profile"},
		{"bad-max-size", []string{"layer", "convert", write("ok.tar", erofstest.Empty()), "-o", "OUT", "--max-size", "lots"}, 2, "bad size"},
		{"hash-output-full", []string{"layer", "convert", write("ok.tar", erofstest.Empty()), "-o", "OUT", "--hash-output", "H"}, 2, "tar-index"},
		{"metadata-only-full", []string{"layer", "convert", write("ok.tar", erofstest.Empty()), "--metadata-output", "H"}, 2, "tar-index"},
		{"same-outputs", []string{"layer", "convert", write("ok.tar", erofstest.Empty()), "--profile", "tar-index", "--metadata-output", "H", "--hash-output", "H"}, 2, "different files"},
		{"output-is-hash-output", []string{"layer", "convert", write("ok.tar", erofstest.Empty()), "--profile", "tar-index", "-o", "OUT", "--hash-output", "OUT"}, 2, "different files"},
		{"truncated-no-data-device", []string{"layer", "convert", write("trunc.tar", truncated), "--profile", "tar-index", "--metadata-output", "H", "--hash-output", "OUT"}, 1, "truncated"},
		{"escape", []string{"layer", "convert", write("evil.tar", hostile), "-o", "OUT"}, 1, "\"..\""},
		{"truncated", []string{"layer", "convert", write("trunc.tar", truncated), "-o", "OUT"}, 1, "truncated"},
		{"bomb", []string{"layer", "convert", write("big.tar", erofstest.Features()), "-o", "OUT", "--max-size", "1M"}, 1, "--max-size"},
		{"too-many", []string{"layer", "convert", write("many.tar", erofstest.Features()), "-o", "OUT", "--max-entries", "10"}, 1, "more than 10 entries"},
		{"directory-input", []string{"layer", "convert", dir, "-o", "OUT"}, 1, "is a directory"},
		{"verify-bad-hex", []string{"layer", "verify", write("x", nil), "zz"}, 2, "not hex"},
		{"verify-short", []string{"layer", "verify", write("x", nil), "abcd"}, 2, "32"},
		{"verify-not-image", []string{"layer", "verify", write("x", []byte("junk")), strings.Repeat("a", 64)}, 1, "not an intact layer image"},
		{"ls-missing-path", []string{"layer", "ls", filepath.Join(dir, "good.img"), "nope"}, 1, "not exist"},
	}
	if code, _, stderr := runCLI(t, "layer", "convert", write("good.tar", erofstest.Stack()[0]), "-o", filepath.Join(dir, "good.img")); code != 0 {
		t.Fatal(stderr)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string(nil), c.args...)
			out := filepath.Join(dir, c.name+".img")
			for i, a := range args {
				if a == "OUT" {
					args[i] = out
				}
				if a == "H" {
					args[i] = out + ".hash"
				}
			}
			code, stdout, stderr := runCLI(t, args...)
			if code != c.code || !strings.Contains(stderr, c.msg) || !strings.HasPrefix(stderr, "intact: ") {
				t.Fatalf("exit %d, stderr %q; want exit %d mentioning %q", code, stderr, c.code, c.msg)
			}
			if lines := strings.Split(strings.TrimSpace(stderr), "\n"); len(lines) > 2 || (len(lines) == 2 && !strings.HasPrefix(lines[1], "Run 'intact --help'")) {
				t.Fatalf("more than one error line: %q", stderr)
			}
			if stdout != "" {
				t.Fatalf("stdout %q", stdout)
			}
			ents, _ := filepath.Glob(out + "*")
			tmps, _ := filepath.Glob(filepath.Join(dir, ".*tmp*"))
			if len(ents)+len(tmps) > 0 {
				t.Fatalf("output left behind: %v %v", ents, tmps)
			}
		})
	}
}

func gzipBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestLayerConvertNotATar: a short text file is not a layer, and the error
// says so instead of calling it a truncated tar stream.
func TestLayerConvertNotATar(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string][]byte{
		"text-24": []byte("hello, this is a note.\n!"),
		"text-2k": bytes.Repeat([]byte("not a tar file\n"), 140),
		"gzip-24": gzipBytes(t, []byte("hello, this is a note.\n!")),
	} {
		in := filepath.Join(dir, name)
		os.WriteFile(in, body, 0o644)
		code, _, stderr := runCLI(t, "layer", "convert", in, "-o", filepath.Join(dir, name+".img"))
		if code != 1 || strings.Contains(stderr, "truncated") || !strings.Contains(stderr, "not a valid tar stream") || !strings.Contains(stderr, "gzip or zstd") {
			t.Errorf("%s: exit %d, stderr %q; want exit 1 saying it is not a tar stream", name, code, stderr)
		}
	}
}

// TestLayerConvertTmpDirFlag: --tmp-dir, as the image commands spell it;
// the old --tmpdir still works and says it is deprecated.
func TestLayerConvertTmpDirFlag(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "layer.tar")
	os.WriteFile(in, erofstest.Stack()[0], 0o644)
	if code, _, stderr := runCLI(t, "layer", "convert", in, "-o", filepath.Join(dir, "a.img"), "--tmp-dir", t.TempDir()); code != 0 {
		t.Errorf("--tmp-dir: exit %d %s", code, stderr)
	}
	code, _, stderr := runCLI(t, "layer", "convert", in, "-o", filepath.Join(dir, "b.img"), "--tmpdir", t.TempDir())
	if code != 0 || !strings.Contains(stderr, "deprecated") {
		t.Errorf("--tmpdir: exit %d %s", code, stderr)
	}
	for _, c := range []string{"layer convert", "image sign", "image verify"} {
		code, out, _ := runCLI(t, append(strings.Fields(c), "--help")...)
		if code != 0 || !strings.Contains(out, "--tmp-dir") || strings.Contains(out, "--tmpdir") {
			t.Errorf("%s --help does not offer --tmp-dir alone:\n%s", c, out)
		}
	}
}
