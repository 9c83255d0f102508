package archtest

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// moduleRoot walks up from the package directory to the directory holding go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

type goFile struct {
	rel string // slash path relative to the module root
	pkg string // slash directory relative to the module root
}

func goFiles(t *testing.T) []goFile {
	root := moduleRoot(t)
	var files []goFile
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "bin") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(name, ".go") {
			rel, _ := filepath.Rel(root, p)
			files = append(files, goFile{rel: filepath.ToSlash(rel), pkg: filepath.ToSlash(filepath.Dir(rel))})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestSyscallsOnlyInInternalLinux enforces that golang.org/x/sys/unix and
// package syscall's raw calls are imported only by internal/linux (STYLE.md:
// one package owns every syscall and ioctl).
func TestSyscallsOnlyInInternalLinux(t *testing.T) {
	root := moduleRoot(t)
	fset := token.NewFileSet()
	for _, f := range goFiles(t) {
		if f.pkg == "internal/linux" || strings.HasPrefix(f.pkg, "internal/linux/") {
			continue
		}
		af, err := parser.ParseFile(fset, filepath.Join(root, f.rel), nil, parser.ImportsOnly)
		if err != nil {
			t.Fatalf("%s: %v", f.rel, err)
		}
		for _, imp := range af.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if path == "golang.org/x/sys/unix" {
				t.Errorf("%s imports %s; raw syscalls belong in internal/linux", f.rel, path)
			}
		}
	}
}

// TestPackagesHaveDocComments requires a package doc comment in every
// non-test package of the module.
func TestPackagesHaveDocComments(t *testing.T) {
	root := moduleRoot(t)
	fset := token.NewFileSet()
	hasDoc := map[string]bool{}
	for _, f := range goFiles(t) {
		if strings.HasSuffix(f.rel, "_test.go") {
			continue
		}
		if _, ok := hasDoc[f.pkg]; !ok {
			hasDoc[f.pkg] = false
		}
		af, err := parser.ParseFile(fset, filepath.Join(root, f.rel), nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			t.Fatalf("%s: %v", f.rel, err)
		}
		if af.Doc != nil && strings.TrimSpace(af.Doc.Text()) != "" {
			hasDoc[f.pkg] = true
		}
	}
	for pkg, ok := range hasDoc {
		if !ok {
			t.Errorf("package %s has no doc comment saying which format or interface it owns", pkg)
		}
	}
}
