// Package dm drives the Linux device-mapper through its control ioctls
// (/dev/mapper/control, struct dm_ioctl, include/uapi/linux/dm-ioctl.h):
// create, load a table, resume, suspend, remove, and read a device's info,
// table and target status. It is target-agnostic; package verity formats
// verity tables (including root_hash_sig_key_desc) and package veritydev
// puts the pieces together. The raw ioctls live in internal/linux.
package dm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/intact-project/intact/internal/linux"
)

// ControlPath is the device-mapper control node.
const ControlPath = "/dev/mapper/control"

// Sentinel errors; a failed ioctl returns an *Error that matches one of
// these (when the errno has a meaning here) and wraps the errno.
var (
	ErrNotSupported = errors.New("dm: device-mapper not available")
	ErrNotFound     = errors.New("dm: no such device")
	ErrExists       = errors.New("dm: device already exists")
	ErrBusy         = errors.New("dm: device busy")
	ErrInvalidTable = errors.New("dm: table rejected")
	// ErrKeyRejected: a verity root-hash signature did not verify
	// (EKEYREJECTED), or its key is missing or untrusted (ENOKEY).
	ErrKeyRejected = errors.New("dm: root-hash signature rejected")
	ErrClosed      = errors.New("dm: control closed")
)

// Error is a failed device-mapper operation.
type Error struct {
	Op     string // "create", "load", "resume", ...
	Device string
	Err    error // usually a *linux.Error with the errno
}

func (e *Error) Error() string {
	return fmt.Sprintf("dm %s %s: %v", e.Op, e.Device, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Is maps the errno to the package's sentinels.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return errors.Is(e.Err, linux.ENXIO)
	case ErrBusy:
		return errors.Is(e.Err, linux.EBUSY) && e.Op != "create"
	case ErrExists:
		return errors.Is(e.Err, linux.EBUSY) && e.Op == "create"
	case ErrInvalidTable:
		return e.Op == "load" && errors.Is(e.Err, linux.EINVAL)
	case ErrKeyRejected:
		return e.Op == "load" && (errors.Is(e.Err, linux.EKEYREJECTED) || errors.Is(e.Err, linux.ENOKEY))
	}
	return false
}

// Target is one line of a table: start and length in 512-byte sectors, the
// target type and its parameter string.
type Target struct {
	Start  uint64
	Length uint64
	Type   string
	Params string
}

func (t Target) String() string {
	return fmt.Sprintf("%d %d %s %s", t.Start, t.Length, t.Type, t.Params)
}

// Info is a device's state (DM_DEV_STATUS).
type Info struct {
	Name            string
	UUID            string
	Major, Minor    uint32
	OpenCount       int32
	TargetCount     uint32
	EventNr         uint32
	ReadOnly        bool
	Suspended       bool
	ActivePresent   bool // a live table is loaded
	InactivePresent bool // a table is loaded but not yet resumed
}

// DevPath is the device node, /dev/dm-<minor>.
func (i Info) DevPath() string { return fmt.Sprintf("/dev/dm-%d", i.Minor) }

// Control is an open /dev/mapper/control. Its methods are safe for
// concurrent use.
type Control struct {
	mu sync.Mutex
	fd *linux.FD
}

// Open opens the device-mapper control node.
func Open() (*Control, error) {
	fd, err := linux.Open(ControlPath, linux.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, linux.ENODEV) {
			return nil, fmt.Errorf("%w: %w (is dm-mod loaded?)", ErrNotSupported, err)
		}
		return nil, fmt.Errorf("dm: %w", err)
	}
	return &Control{fd: fd}, nil
}

// Close closes the control node.
func (c *Control) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd == nil {
		return ErrClosed
	}
	err := c.fd.Close()
	c.fd = nil
	return err
}

const (
	initialBuffer = 16 << 10
	maxBuffer     = 16 << 20
)

// ioctl runs one command and returns the reply header and payload.
func (c *Control) ioctl(op string, cmd uint, name, uuid string, flags uint32, payload []byte, targets uint32) (*linux.DMHeader, []byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd == nil {
		return nil, nil, ErrClosed
	}
	size := max(initialBuffer, linux.DMIoctlSize+len(payload))
	for {
		buf := make([]byte, size)
		h := &linux.DMHeader{
			Version:     [3]uint32{linux.DMVersionMajor, linux.DMVersionMinor, 0},
			DataSize:    uint32(size),
			DataStart:   uint32(linux.DMIoctlSize),
			TargetCount: targets,
			Flags:       flags,
			Name:        name,
			UUID:        uuid,
		}
		if err := linux.MarshalDMHeader(buf, h); err != nil {
			return nil, nil, &Error{Op: op, Device: name, Err: err}
		}
		copy(buf[linux.DMIoctlSize:], payload)
		if err := linux.DMIoctl(c.fd, cmd, name, buf); err != nil {
			return nil, nil, &Error{Op: op, Device: name, Err: err}
		}
		rh, err := linux.ParseDMHeader(buf)
		if err != nil {
			return nil, nil, &Error{Op: op, Device: name, Err: err}
		}
		if rh.Flags&linux.DM_BUFFER_FULL_FLAG != 0 {
			if size >= maxBuffer {
				return nil, nil, &Error{Op: op, Device: name, Err: fmt.Errorf("reply larger than %d bytes", maxBuffer)}
			}
			size *= 4
			continue
		}
		if int(rh.DataSize) > len(buf) {
			return nil, nil, &Error{Op: op, Device: name, Err: fmt.Errorf("%w: reply data size %d outside %d-byte buffer", linux.ErrDMEncoding, rh.DataSize, len(buf))}
		}
		if rh.DataStart >= rh.DataSize {
			return rh, nil, nil // no payload (the kernel reports only what it used)
		}
		return rh, buf[rh.DataStart:rh.DataSize], nil
	}
}

func infoOf(h *linux.DMHeader) Info {
	return Info{
		Name: h.Name, UUID: h.UUID,
		Major: linux.Major(h.Dev), Minor: linux.Minor(h.Dev),
		OpenCount: h.OpenCount, TargetCount: h.TargetCount, EventNr: h.EventNr,
		ReadOnly:        h.Flags&linux.DM_READONLY_FLAG != 0,
		Suspended:       h.Flags&linux.DM_SUSPEND_FLAG != 0,
		ActivePresent:   h.Flags&linux.DM_ACTIVE_PRESENT_FLAG != 0,
		InactivePresent: h.Flags&linux.DM_INACTIVE_PRESENT_FLAG != 0,
	}
}

// Version returns the kernel's device-mapper ioctl interface version.
func (c *Control) Version() ([3]uint32, error) {
	h, _, err := c.ioctl("version", linux.DM_VERSION, "", "", 0, nil, 0)
	if err != nil {
		return [3]uint32{}, err
	}
	return h.Version, nil
}

// Create makes a new device without a table (DM_DEV_CREATE). uuid may be
// empty.
func (c *Control) Create(name, uuid string) (Info, error) {
	if err := checkName(name); err != nil {
		return Info{}, &Error{Op: "create", Device: name, Err: err}
	}
	h, _, err := c.ioctl("create", linux.DM_DEV_CREATE, name, uuid, 0, nil, 0)
	if err != nil {
		return Info{}, err
	}
	return infoOf(h), nil
}

// LoadOptions are flags of Load.
type LoadOptions struct {
	// ReadOnly loads the table read-only (required for verity).
	ReadOnly bool
}

// Load loads targets as the device's inactive table (DM_TABLE_LOAD); Resume
// makes it live. The kernel constructs the targets here, so a verity
// table's root-hash signature is checked by this call.
func (c *Control) Load(name string, targets []Target, o LoadOptions) (Info, error) {
	specs := make([]linux.DMTargetSpec, len(targets))
	for i, t := range targets {
		specs[i] = linux.DMTargetSpec{SectorStart: t.Start, Length: t.Length, TargetType: t.Type, Params: t.Params}
	}
	payload, err := linux.MarshalDMTargets(specs)
	if err != nil {
		return Info{}, &Error{Op: "load", Device: name, Err: err}
	}
	var flags uint32
	if o.ReadOnly {
		flags |= linux.DM_READONLY_FLAG
	}
	h, _, err := c.ioctl("load", linux.DM_TABLE_LOAD, name, "", flags, payload, uint32(len(targets)))
	if err != nil {
		return Info{}, err
	}
	return infoOf(h), nil
}

// Resume makes the inactive table live (or resumes a suspended device).
func (c *Control) Resume(name string) (Info, error) {
	h, _, err := c.ioctl("resume", linux.DM_DEV_SUSPEND, name, "", 0, nil, 0)
	if err != nil {
		return Info{}, err
	}
	return infoOf(h), nil
}

// Suspend suspends the device (flushing outstanding I/O).
func (c *Control) Suspend(name string) error {
	_, _, err := c.ioctl("suspend", linux.DM_DEV_SUSPEND, name, "", linux.DM_SUSPEND_FLAG, nil, 0)
	return err
}

// ClearInactive discards a loaded but not resumed table.
func (c *Control) ClearInactive(name string) error {
	_, _, err := c.ioctl("clear", linux.DM_TABLE_CLEAR, name, "", 0, nil, 0)
	return err
}

// RemoveRetry bounds how long Remove retries a busy device.
const RemoveRetry = 3 * time.Second

// Remove removes the device. A device that is briefly busy (udev or blkid
// probing it) is retried for up to RemoveRetry or until ctx ends; one that
// stays busy (mounted, held open) gives an error matching ErrBusy.
func (c *Control) Remove(ctx context.Context, name string) error {
	delay := 10 * time.Millisecond
	deadline := time.Now().Add(RemoveRetry)
	for {
		_, _, err := c.ioctl("remove", linux.DM_DEV_REMOVE, name, "", 0, nil, 0)
		if err == nil || !errors.Is(err, ErrBusy) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(delay*2, 500*time.Millisecond)
	}
}

// Info returns the device's state (DM_DEV_STATUS).
func (c *Control) Info(name string) (Info, error) {
	h, _, err := c.ioctl("info", linux.DM_DEV_STATUS, name, "", 0, nil, 0)
	if err != nil {
		return Info{}, err
	}
	return infoOf(h), nil
}

// Table returns the live table as the kernel reports it (`dmsetup table`).
func (c *Control) Table(name string) ([]Target, error) {
	return c.tableStatus("table", name, linux.DM_STATUS_TABLE_FLAG)
}

// TableText opens the control device, reads the live table of the device
// name and returns it as `dmsetup table` prints it, one target per line. Its
// signature fits ipe.Inspector's DMTable.
func TableText(ctx context.Context, name string) (string, error) {
	c, err := Open()
	if err != nil {
		return "", err
	}
	defer c.Close()
	ts, err := c.Table(name)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, t := range ts {
		b.WriteString(t.String() + "\n")
	}
	return b.String(), nil
}

// Status returns each target's status line (`dmsetup status`; for verity
// "V" while every block read so far verified, "C" after a corruption).
func (c *Control) Status(name string) ([]Target, error) {
	return c.tableStatus("status", name, 0)
}

func (c *Control) tableStatus(op, name string, flags uint32) ([]Target, error) {
	h, data, err := c.ioctl(op, linux.DM_TABLE_STATUS, name, "", flags, nil, 0)
	if err != nil {
		return nil, err
	}
	specs, err := linux.ParseDMTargets(data, h.TargetCount)
	if err != nil {
		return nil, &Error{Op: op, Device: name, Err: err}
	}
	out := make([]Target, len(specs))
	for i, s := range specs {
		out[i] = Target{Start: s.SectorStart, Length: s.Length, Type: s.TargetType, Params: s.Params}
	}
	return out, nil
}

// Device is an entry of List.
type Device struct {
	Name         string
	Major, Minor uint32
}

// List returns every device-mapper device (DM_LIST_DEVICES).
func (c *Control) List() ([]Device, error) {
	_, data, err := c.ioctl("list", linux.DM_LIST_DEVICES, "", "", 0, nil, 0)
	if err != nil {
		return nil, err
	}
	return parseNameList(data)
}

// parseNameList decodes struct dm_name_list records: u64 dev, u32 next
// (offset of the next record from this one, 0 for the last), name.
func parseNameList(data []byte) ([]Device, error) {
	var out []Device
	off := 0
	for {
		if off+12 > len(data) {
			if off == 0 {
				return nil, nil
			}
			return nil, fmt.Errorf("%w: name list record at %d outside %d bytes", linux.ErrDMEncoding, off, len(data))
		}
		dev := binary.NativeEndian.Uint64(data[off:])
		next := binary.NativeEndian.Uint32(data[off+8:])
		if next != 0 && (next < 12 || int(next) > len(data)-off) {
			return nil, fmt.Errorf("%w: name list next offset %d", linux.ErrDMEncoding, next)
		}
		name := data[off+12:]
		if next != 0 {
			name = data[off+12 : off+int(next)]
		}
		s := string(name)
		if i := strings.IndexByte(s, 0); i >= 0 {
			s = s[:i]
		}
		if dev == 0 && s == "" && off == 0 {
			return nil, nil // no devices
		}
		out = append(out, Device{Name: s, Major: linux.Major(dev), Minor: linux.Minor(dev)})
		if next == 0 {
			return out, nil
		}
		off += int(next)
	}
}

func checkName(name string) error {
	if name == "" || len(name) >= linux.DMNameLen || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return fmt.Errorf("invalid device name %q (1..%d bytes, no '/')", name, linux.DMNameLen-1)
	}
	return nil
}
