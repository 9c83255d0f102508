package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
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

// syscallAllowed are the names of package syscall that other packages may
// use: constants (errnos, signals, file types, open flags) and the types
// that carry them or that os and os/exec hand out. Every function of
// package syscall is a raw system call.
var syscallAllowed = regexp.MustCompile(`^(E[A-Z0-9]+|SIG[A-Z0-9]+|S_IF[A-Z]+|O_[A-Z]+|Errno|Signal|Stat_t|SysProcAttr|WaitStatus|RawConn)$`)

// TestSyscallsOnlyInInternalLinux enforces that golang.org/x/sys/unix is
// imported, and package syscall's functions are called, only in
// internal/linux (docs/architecture.md, Conventions: one package owns every
// syscall and ioctl).
// Package syscall's constants and types may be used anywhere (an errno to
// compare with errors.Is, a signal to send, the Stat_t of an os.FileInfo).
func TestSyscallsOnlyInInternalLinux(t *testing.T) {
	root := moduleRoot(t)
	fset := token.NewFileSet()
	for _, f := range goFiles(t) {
		if f.pkg == "internal/linux" || strings.HasPrefix(f.pkg, "internal/linux/") {
			continue
		}
		af, err := parser.ParseFile(fset, filepath.Join(root, f.rel), nil, 0)
		if err != nil {
			t.Fatalf("%s: %v", f.rel, err)
		}
		syscallName := ""
		for _, imp := range af.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			switch path {
			case "golang.org/x/sys/unix":
				t.Errorf("%s imports %s; raw syscalls belong in internal/linux", f.rel, path)
			case "syscall":
				syscallName = "syscall"
				if imp.Name != nil {
					syscallName = imp.Name.Name
				}
			}
		}
		if syscallName == "" {
			continue
		}
		if syscallName == "_" || syscallName == "." {
			t.Errorf("%s imports syscall as %s", f.rel, syscallName)
			continue
		}
		ast.Inspect(af, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			if id, ok := sel.X.(*ast.Ident); ok && id.Name == syscallName && id.Obj == nil && !syscallAllowed.MatchString(sel.Sel.Name) {
				t.Errorf("%s: syscall.%s: raw syscalls belong in internal/linux (package syscall's constants and types are fine)", fset.Position(sel.Pos()), sel.Sel.Name)
			}
			return true
		})
	}
}

// TestSyscallRuleBites: the rule above finds a raw call of package
// syscall, and lets constants and types through.
func TestSyscallRuleBites(t *testing.T) {
	for name, ok := range map[string]bool{"Stat": false, "Syscall": false, "Mount": false, "Kill": false,
		"EPERM": true, "SIGTERM": true, "S_IFREG": true, "Stat_t": true, "SysProcAttr": true, "Errno": true} {
		if syscallAllowed.MatchString(name) != ok {
			t.Errorf("syscall.%s allowed=%v", name, !ok)
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
