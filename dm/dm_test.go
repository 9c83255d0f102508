package dm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/intact-project/intact/internal/linux"
)

func nameList(entries ...Device) []byte {
	var out []byte
	for i, d := range entries {
		rec := make([]byte, 12, 64)
		binary.NativeEndian.PutUint64(rec, linux.Mkdev(d.Major, d.Minor))
		rec = append(rec, d.Name...)
		rec = append(rec, 0)
		for len(rec)%8 != 0 {
			rec = append(rec, 0)
		}
		if i < len(entries)-1 {
			binary.NativeEndian.PutUint32(rec[8:], uint32(len(rec)))
		}
		out = append(out, rec...)
	}
	return out
}

func TestParseNameList(t *testing.T) {
	want := []Device{{"a", 254, 0}, {"intact-verity-long-name", 254, 7}, {"c", 254, 300}}
	got, err := parseNameList(nameList(want...))
	if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v %v, want %v", got, err, want)
	}
	if got, err := parseNameList(make([]byte, 16)); err != nil || got != nil {
		t.Errorf("empty list: %v %v", got, err)
	}
	bad := nameList(want...)
	binary.NativeEndian.PutUint32(bad[8:], 4)
	if _, err := parseNameList(bad); !errors.Is(err, linux.ErrDMEncoding) {
		t.Errorf("next=4 accepted: %v", err)
	}
}

func TestErrorSentinels(t *testing.T) {
	for _, c := range []struct {
		op    string
		errno linux.Errno
		want  error
	}{
		{"info", linux.ENXIO, ErrNotFound},
		{"remove", linux.EBUSY, ErrBusy},
		{"create", linux.EBUSY, ErrExists},
		{"load", linux.EINVAL, ErrInvalidTable},
		{"load", linux.EKEYREJECTED, ErrKeyRejected},
		{"load", linux.ENOKEY, ErrKeyRejected},
	} {
		err := error(&Error{Op: c.op, Device: "x", Err: &linux.Error{Op: "ioctl", Errno: c.errno}})
		if !errors.Is(err, c.want) || !errors.Is(err, c.errno) {
			t.Errorf("%s %v does not match %v", c.op, c.errno, c.want)
		}
	}
	if errors.Is(&Error{Op: "create", Err: linux.EBUSY}, ErrBusy) {
		t.Error("EBUSY on create must be ErrExists, not ErrBusy")
	}
}

func TestCheckName(t *testing.T) {
	for _, n := range []string{"", ".", "..", "a/b", string(make([]byte, 128))} {
		if checkName(n) == nil {
			t.Errorf("name %q accepted", n)
		}
	}
	if err := checkName("intact-1"); err != nil {
		t.Error(err)
	}
}

func FuzzParseNameList(f *testing.F) {
	f.Add(nameList(Device{"a", 254, 0}, Device{"b", 254, 1}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		devs, err := parseNameList(data)
		if err == nil && len(devs) > len(data)/12+1 {
			t.Fatalf("%d devices from %d bytes", len(devs), len(data))
		}
	})
}
