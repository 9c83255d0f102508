package linux

import (
	"encoding/binary"
	"errors"
	"io/fs"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The layouts are those of include/uapi/linux/dm-ioctl.h and loop.h as
// x/sys/unix generates them from the kernel headers.
func TestStructSizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"struct dm_ioctl", uintptr(DMIoctlSize), 312},
		{"struct dm_target_spec", uintptr(DMTargetSpecSize), 40},
		{"struct loop_info64", unsafe.Sizeof(LoopInfo64{}), 232},
		{"struct loop_config", unsafe.Sizeof(LoopConfig{}), 304},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d bytes, want %d", c.name, c.got, c.want)
		}
	}
	if off := unsafe.Offsetof(unix.DmIoctl{}.Name); off != 48 {
		t.Errorf("dm_ioctl.name at %d, want 48", off)
	}
	if off := unsafe.Offsetof(unix.DmIoctl{}.Uuid); off != 176 {
		t.Errorf("dm_ioctl.uuid at %d, want 176", off)
	}
	if DM_DEV_CREATE != 0xC138FD03 || DM_TABLE_LOAD != 0xC138FD09 || DM_TABLE_STATUS != 0xC138FD0C {
		t.Errorf("dm ioctl numbers: %#x %#x %#x", DM_DEV_CREATE, DM_TABLE_LOAD, DM_TABLE_STATUS)
	}
}

// TestDMHeaderMatchesKernelStruct encodes a header with our marshaller and
// checks every field against the x/sys/unix struct overlaid on the bytes.
func TestDMHeaderMatchesKernelStruct(t *testing.T) {
	buf := make([]byte, DMIoctlSize+64)
	h := &DMHeader{Version: [3]uint32{4, 48, 1}, DataSize: uint32(len(buf)), DataStart: uint32(DMIoctlSize),
		TargetCount: 2, OpenCount: -3, Flags: DM_READONLY_FLAG | DM_SUSPEND_FLAG, EventNr: 9,
		Dev: unix.Mkdev(253, 7), Name: "intact-test", UUID: "INTACT-VERITY-x"}
	if err := MarshalDMHeader(buf, h); err != nil {
		t.Fatal(err)
	}
	k := (*unix.DmIoctl)(unsafe.Pointer(&buf[0]))
	if k.Version != h.Version || k.Data_size != h.DataSize || k.Data_start != h.DataStart || k.Target_count != 2 ||
		k.Open_count != -3 || k.Flags != h.Flags || k.Event_nr != 9 || k.Dev != h.Dev ||
		unix.ByteSliceToString(k.Name[:]) != h.Name || unix.ByteSliceToString(k.Uuid[:]) != h.UUID {
		t.Fatalf("kernel view %+v differs from %+v", k, h)
	}
	back, err := ParseDMHeader(buf)
	if err != nil || *back != *h {
		t.Fatalf("round trip: %+v %v", back, err)
	}
	if err := MarshalDMHeader(buf, &DMHeader{Name: strings.Repeat("x", 128)}); !errors.Is(err, ErrDMEncoding) {
		t.Errorf("128-byte name accepted: %v", err)
	}
	if _, err := ParseDMHeader(buf[:100]); !errors.Is(err, ErrDMEncoding) {
		t.Errorf("short buffer parsed: %v", err)
	}
}

func TestDMTargetsEncoding(t *testing.T) {
	specs := []DMTargetSpec{
		{SectorStart: 0, Length: 8, TargetType: "verity", Params: "1 7:0 7:1 4096 4096 1 1 sha256 aa -"},
		{SectorStart: 8, Length: 16, TargetType: "linear", Params: "7:2 0"},
	}
	b, err := MarshalDMTargets(specs)
	if err != nil {
		t.Fatal(err)
	}
	if len(b)%8 != 0 {
		t.Errorf("payload of %d bytes is not 8-aligned", len(b))
	}
	k := (*unix.DmTargetSpec)(unsafe.Pointer(&b[0]))
	if k.Sector_start != 0 || k.Length != 8 || unix.ByteSliceToString(k.Target_type[:]) != "verity" || k.Next == 0 || k.Next%8 != 0 {
		t.Fatalf("first spec: %+v", k)
	}
	// In DM_TABLE_LOAD, next is relative to the spec; replies use offsets
	// from the payload start. For the first spec both agree.
	got, err := ParseDMTargets(b, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range specs {
		if got[i].SectorStart != specs[i].SectorStart || got[i].Length != specs[i].Length ||
			got[i].TargetType != specs[i].TargetType || got[i].Params != specs[i].Params {
			t.Errorf("spec %d: %+v, want %+v", i, got[i], specs[i])
		}
	}
	if _, err := MarshalDMTargets([]DMTargetSpec{{TargetType: "verity", Params: "a\x00b"}}); !errors.Is(err, ErrDMEncoding) {
		t.Errorf("NUL in params accepted: %v", err)
	}
	if _, err := ParseDMTargets(b[:30], 1); !errors.Is(err, ErrDMEncoding) {
		t.Errorf("truncated payload parsed: %v", err)
	}
	bad := append([]byte(nil), b...)
	binary.NativeEndian.PutUint32(bad[20:], 1<<30)
	if _, err := ParseDMTargets(bad, 2); !errors.Is(err, ErrDMEncoding) {
		t.Errorf("next pointing outside accepted: %v", err)
	}
}

func TestErrorWrapsErrno(t *testing.T) {
	err := wrap("ioctl X", unix.ENOENT)
	if !errors.Is(err, ENOENT) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%v does not match ENOENT / fs.ErrNotExist", err)
	}
	var le *Error
	if !errors.As(err, &le) || le.Op != "ioctl X" {
		t.Fatalf("not an *Error: %#v", err)
	}
	if wrap("x", nil) != nil {
		t.Fatal("nil error wrapped")
	}
}

func FuzzParseDMTargets(f *testing.F) {
	b, _ := MarshalDMTargets([]DMTargetSpec{{Length: 8, TargetType: "verity", Params: "1 2 3"}, {Length: 1, TargetType: "zero"}})
	f.Add(b, uint32(2))
	f.Add([]byte{}, uint32(1))
	f.Fuzz(func(t *testing.T, data []byte, n uint32) {
		specs, err := ParseDMTargets(data, n%64)
		if err == nil && len(specs) != int(n%64) {
			t.Fatalf("%d specs for count %d", len(specs), n%64)
		}
	})
}
