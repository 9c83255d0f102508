// Package mountinfo parses /proc/<pid>/mountinfo, the kernel's list of the
// mounts a process sees (Documentation/filesystems/proc.rst, 3.5).
package mountinfo

import (
	"bufio"
	"io"
	"os"
	"strconv"
	"strings"
)

// Mount is one line of /proc/self/mountinfo.
type Mount struct {
	ID, Parent int
	Major      uint32
	Minor      uint32
	Root       string
	Point      string
	FSType     string
	Source     string
	SuperOpts  string
}

// Parse parses a mountinfo file (capped at 16 MiB).
func Parse(r io.Reader) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(io.LimitReader(r, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		sep := -1
		for i, x := range f {
			if x == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if sep < 0 || len(f) < sep+3 {
			continue
		}
		var m Mount
		m.ID, _ = strconv.Atoi(f[0])
		m.Parent, _ = strconv.Atoi(f[1])
		if a, b, ok := strings.Cut(f[2], ":"); ok {
			ma, _ := strconv.ParseUint(a, 10, 32)
			mi, _ := strconv.ParseUint(b, 10, 32)
			m.Major, m.Minor = uint32(ma), uint32(mi)
		}
		m.Root = Unescape(f[3])
		m.Point = Unescape(f[4])
		m.FSType = f[sep+1]
		m.Source = Unescape(f[sep+2])
		if len(f) > sep+3 {
			m.SuperOpts = f[sep+3]
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// Unescape decodes mountinfo's octal escapes (\040 for space, ...).
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Self reads /proc/self/mountinfo.
func Self() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f)
}
