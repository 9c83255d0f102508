package linux

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Device-mapper ioctl commands (include/uapi/linux/dm-ioctl.h).
const (
	DM_VERSION       = unix.DM_VERSION
	DM_REMOVE_ALL    = unix.DM_REMOVE_ALL
	DM_LIST_DEVICES  = unix.DM_LIST_DEVICES
	DM_DEV_CREATE    = unix.DM_DEV_CREATE
	DM_DEV_REMOVE    = unix.DM_DEV_REMOVE
	DM_DEV_RENAME    = unix.DM_DEV_RENAME
	DM_DEV_SUSPEND   = unix.DM_DEV_SUSPEND
	DM_DEV_STATUS    = unix.DM_DEV_STATUS
	DM_DEV_WAIT      = unix.DM_DEV_WAIT
	DM_TABLE_LOAD    = unix.DM_TABLE_LOAD
	DM_TABLE_CLEAR   = unix.DM_TABLE_CLEAR
	DM_TABLE_DEPS    = unix.DM_TABLE_DEPS
	DM_TABLE_STATUS  = unix.DM_TABLE_STATUS
	DM_LIST_VERSIONS = unix.DM_LIST_VERSIONS
	DM_TARGET_MSG    = unix.DM_TARGET_MSG
)

// dm_ioctl flags.
const (
	DM_READONLY_FLAG         = unix.DM_READONLY_FLAG
	DM_SUSPEND_FLAG          = unix.DM_SUSPEND_FLAG
	DM_PERSISTENT_DEV_FLAG   = unix.DM_PERSISTENT_DEV_FLAG
	DM_STATUS_TABLE_FLAG     = unix.DM_STATUS_TABLE_FLAG
	DM_ACTIVE_PRESENT_FLAG   = unix.DM_ACTIVE_PRESENT_FLAG
	DM_INACTIVE_PRESENT_FLAG = unix.DM_INACTIVE_PRESENT_FLAG
	DM_BUFFER_FULL_FLAG      = unix.DM_BUFFER_FULL_FLAG
	DM_NOFLUSH_FLAG          = unix.DM_NOFLUSH_FLAG
	DM_UEVENT_GENERATED_FLAG = unix.DM_UEVENT_GENERATED_FLAG
	DM_DEFERRED_REMOVE       = unix.DM_DEFERRED_REMOVE
	DM_DATA_OUT_FLAG         = unix.DM_DATA_OUT_FLAG
)

// Sizes and the interface version this code speaks (4.x; the kernel accepts
// any 4.y with y <= its own minor).
const (
	DMIoctlSize      = int(unsafe.Sizeof(unix.DmIoctl{}))      // 312
	DMTargetSpecSize = int(unsafe.Sizeof(unix.DmTargetSpec{})) // 40
	DMNameLen        = 128
	DMUUIDLen        = 129
	DMMaxTypeName    = 16
	DMVersionMajor   = 4
	DMVersionMinor   = 0
)

// DMHeader is the decoded fixed part of struct dm_ioctl.
type DMHeader struct {
	Version     [3]uint32
	DataSize    uint32 // total buffer size, header included
	DataStart   uint32 // offset of the payload from the start of the buffer
	TargetCount uint32
	OpenCount   int32
	Flags       uint32
	EventNr     uint32
	Dev         uint64
	Name        string
	UUID        string
}

// ErrDMEncoding reports a dm_ioctl buffer that cannot be built or parsed.
var ErrDMEncoding = errors.New("linux: bad dm_ioctl buffer")

// MarshalDMHeader writes h into the first DMIoctlSize bytes of buf.
func MarshalDMHeader(buf []byte, h *DMHeader) error {
	if len(buf) < DMIoctlSize {
		return fmt.Errorf("%w: buffer of %d bytes is shorter than struct dm_ioctl", ErrDMEncoding, len(buf))
	}
	if len(h.Name) >= DMNameLen {
		return fmt.Errorf("%w: name of %d bytes (limit %d)", ErrDMEncoding, len(h.Name), DMNameLen-1)
	}
	if len(h.UUID) >= DMUUIDLen {
		return fmt.Errorf("%w: uuid of %d bytes (limit %d)", ErrDMEncoding, len(h.UUID), DMUUIDLen-1)
	}
	clear(buf[:DMIoctlSize])
	ne := binary.NativeEndian
	for i, v := range h.Version {
		ne.PutUint32(buf[4*i:], v)
	}
	ne.PutUint32(buf[12:], h.DataSize)
	ne.PutUint32(buf[16:], h.DataStart)
	ne.PutUint32(buf[20:], h.TargetCount)
	ne.PutUint32(buf[24:], uint32(h.OpenCount))
	ne.PutUint32(buf[28:], h.Flags)
	ne.PutUint32(buf[32:], h.EventNr)
	ne.PutUint64(buf[40:], h.Dev)
	copy(buf[48:48+DMNameLen], h.Name)
	copy(buf[176:176+DMUUIDLen], h.UUID)
	return nil
}

// ParseDMHeader decodes the fixed part of struct dm_ioctl.
func ParseDMHeader(buf []byte) (*DMHeader, error) {
	if len(buf) < DMIoctlSize {
		return nil, fmt.Errorf("%w: %d bytes, need %d", ErrDMEncoding, len(buf), DMIoctlSize)
	}
	ne := binary.NativeEndian
	h := &DMHeader{
		DataSize:    ne.Uint32(buf[12:]),
		DataStart:   ne.Uint32(buf[16:]),
		TargetCount: ne.Uint32(buf[20:]),
		OpenCount:   int32(ne.Uint32(buf[24:])),
		Flags:       ne.Uint32(buf[28:]),
		EventNr:     ne.Uint32(buf[32:]),
		Dev:         ne.Uint64(buf[40:]),
		Name:        cstring(buf[48 : 48+DMNameLen]),
		UUID:        cstring(buf[176 : 176+DMUUIDLen]),
	}
	for i := range h.Version {
		h.Version[i] = ne.Uint32(buf[4*i:])
	}
	return h, nil
}

// DMTargetSpec is the decoded struct dm_target_spec plus its parameter string.
type DMTargetSpec struct {
	SectorStart uint64
	Length      uint64
	Status      int32
	Next        uint32 // offset of the next spec from the start of this one (set by Marshal)
	TargetType  string
	Params      string
}

// MarshalDMTargets encodes target specs, each followed by its NUL-terminated
// parameter string padded to 8 bytes, as DM_TABLE_LOAD expects.
func MarshalDMTargets(specs []DMTargetSpec) ([]byte, error) {
	var out []byte
	ne := binary.NativeEndian
	for i, s := range specs {
		if len(s.TargetType) >= DMMaxTypeName {
			return nil, fmt.Errorf("%w: target type %q too long", ErrDMEncoding, s.TargetType)
		}
		if bytes.IndexByte([]byte(s.Params), 0) >= 0 {
			return nil, fmt.Errorf("%w: NUL byte in parameters of target %d", ErrDMEncoding, i)
		}
		n := DMTargetSpecSize + len(s.Params) + 1
		n = (n + 7) &^ 7
		rec := make([]byte, n)
		ne.PutUint64(rec[0:], s.SectorStart)
		ne.PutUint64(rec[8:], s.Length)
		ne.PutUint32(rec[16:], uint32(s.Status))
		if i < len(specs)-1 {
			ne.PutUint32(rec[20:], uint32(n))
		}
		copy(rec[24:24+DMMaxTypeName], s.TargetType)
		copy(rec[DMTargetSpecSize:], s.Params)
		out = append(out, rec...)
	}
	return out, nil
}

// ParseDMTargets decodes count target specs from a DM_TABLE_STATUS payload
// (data is the buffer from DataStart to DataSize). In replies, Next is the
// offset of the following spec from the start of the payload.
func ParseDMTargets(data []byte, count uint32) ([]DMTargetSpec, error) {
	ne := binary.NativeEndian
	var specs []DMTargetSpec
	off := 0
	for i := uint32(0); i < count; i++ {
		if off < 0 || off+DMTargetSpecSize > len(data) {
			return nil, fmt.Errorf("%w: target %d at offset %d outside %d-byte payload", ErrDMEncoding, i, off, len(data))
		}
		rec := data[off:]
		s := DMTargetSpec{
			SectorStart: ne.Uint64(rec[0:]),
			Length:      ne.Uint64(rec[8:]),
			Status:      int32(ne.Uint32(rec[16:])),
			Next:        ne.Uint32(rec[20:]),
			TargetType:  cstring(rec[24 : 24+DMMaxTypeName]),
		}
		end := len(data)
		if i+1 < count {
			end = int(s.Next)
			if end < off+DMTargetSpecSize || end > len(data) {
				return nil, fmt.Errorf("%w: target %d: next offset %d out of range", ErrDMEncoding, i, s.Next)
			}
		}
		s.Params = cstring(data[off+DMTargetSpecSize : end])
		specs = append(specs, s)
		off = int(s.Next)
	}
	return specs, nil
}

// DMIoctl issues a device-mapper ioctl on the control fd with buf as the
// struct dm_ioctl buffer (header + payload), which the kernel updates in place.
func DMIoctl(ctl *FD, cmd uint, name string, buf []byte) error {
	if len(buf) < DMIoctlSize {
		return fmt.Errorf("%w: buffer too short", ErrDMEncoding)
	}
	return wrap(fmt.Sprintf("ioctl %s %s", dmCmdName(cmd), name), ioctlPtr(ctl.Int(), cmd, unsafe.Pointer(&buf[0])))
}

func dmCmdName(cmd uint) string {
	switch cmd {
	case DM_VERSION:
		return "DM_VERSION"
	case DM_REMOVE_ALL:
		return "DM_REMOVE_ALL"
	case DM_LIST_DEVICES:
		return "DM_LIST_DEVICES"
	case DM_DEV_CREATE:
		return "DM_DEV_CREATE"
	case DM_DEV_REMOVE:
		return "DM_DEV_REMOVE"
	case DM_DEV_SUSPEND:
		return "DM_DEV_SUSPEND"
	case DM_DEV_STATUS:
		return "DM_DEV_STATUS"
	case DM_TABLE_LOAD:
		return "DM_TABLE_LOAD"
	case DM_TABLE_CLEAR:
		return "DM_TABLE_CLEAR"
	case DM_TABLE_STATUS:
		return "DM_TABLE_STATUS"
	case DM_LIST_VERSIONS:
		return "DM_LIST_VERSIONS"
	}
	return fmt.Sprintf("dm(%#x)", cmd)
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
