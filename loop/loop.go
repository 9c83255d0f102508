// Package loop attaches regular files to Linux loop block devices through
// /dev/loop-control and the LOOP_CONFIGURE ioctl (struct loop_config, Linux
// 5.8+): read-only, autoclear, direct I/O where the backing file allows it,
// offset and size limit, logical block size. The raw ioctls live in
// internal/linux.
package loop

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/intact-project/intact/internal/linux"
)

// ControlPath is the loop control node.
const ControlPath = "/dev/loop-control"

// Sentinel errors.
var (
	ErrNotSupported = errors.New("loop: loop devices not available")
	ErrNoFree       = errors.New("loop: no free loop device")
	ErrDetached     = errors.New("loop: device already detached")
)

// Options configure Attach. The zero value attaches read-write, without
// autoclear or direct I/O, the whole file.
type Options struct {
	ReadOnly bool
	// Autoclear detaches the device when its last opener closes it (after
	// Close, once a dm table that uses it is removed too).
	Autoclear bool
	// DirectIO asks for direct I/O on the backing file; if the file system
	// or alignment does not allow it the device is attached without (see
	// Device.DirectIO).
	DirectIO  bool
	Offset    uint64
	SizeLimit uint64 // 0: to the end of the file
	BlockSize uint32 // logical block size; 0: 512
}

// Device is an attached loop device. It holds the device open until Close.
type Device struct {
	Path     string // /dev/loopN
	Number   int
	Major    uint32
	Minor    uint32
	DirectIO bool // direct I/O is in effect
	fd       *linux.FD
}

// Attach binds the file at path to a free loop device.
func Attach(ctx context.Context, path string, o Options) (*Device, error) {
	ctl, err := linux.Open(ControlPath, linux.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %w (is the loop module loaded?)", ErrNotSupported, err)
		}
		return nil, fmt.Errorf("loop: %w", err)
	}
	defer ctl.Close()
	mode := linux.O_RDWR
	if o.ReadOnly {
		mode = linux.O_RDONLY
	}
	backing, err := os.OpenFile(path, mode, 0)
	if err != nil {
		return nil, fmt.Errorf("loop: backing file: %w", err)
	}
	defer backing.Close()
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("loop: attach %s: %w", path, err)
		}
		n, err := linux.LoopCtlGetFree(ctl)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoFree, err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		var fd *linux.FD
		for i := 0; i < 50; i++ { // devtmpfs creates the node asynchronously
			fd, err = linux.Open(dev, mode, 0)
			if !errors.Is(err, os.ErrNotExist) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			return nil, fmt.Errorf("loop: %w", err)
		}
		d, err := configure(fd, backing, o, n, dev)
		if errors.Is(err, linux.EBUSY) && attempt < 20 {
			fd.Close() // someone else took it between GET_FREE and CONFIGURE
			continue
		}
		if err != nil {
			fd.Close()
			return nil, fmt.Errorf("loop: attach %s to %s: %w", path, dev, err)
		}
		return d, nil
	}
}

func configure(fd *linux.FD, backing *os.File, o Options, n int, dev string) (*Device, error) {
	cfg := linux.LoopConfig{Fd: uint32(backing.Fd()), Size: o.BlockSize}
	cfg.Info.Offset = o.Offset
	cfg.Info.Sizelimit = o.SizeLimit
	if o.ReadOnly {
		cfg.Info.Flags |= linux.LO_FLAGS_READ_ONLY
	}
	if o.Autoclear {
		cfg.Info.Flags |= linux.LO_FLAGS_AUTOCLEAR
	}
	name := backing.Name()
	if len(name) >= len(cfg.Info.File_name) {
		name = name[len(name)-len(cfg.Info.File_name)+1:]
	}
	copy(cfg.Info.File_name[:], name)
	withDIO := cfg
	if o.DirectIO {
		withDIO.Info.Flags |= linux.LO_FLAGS_DIRECT_IO
	}
	err := linux.LoopConfigure(fd, &withDIO)
	if err != nil && o.DirectIO && errors.Is(err, linux.EINVAL) {
		err = linux.LoopConfigure(fd, &cfg) // file system without O_DIRECT
	}
	if err != nil {
		return nil, err
	}
	rdev, _, err := linux.Stat(dev)
	if err != nil {
		linux.LoopClrFd(fd)
		return nil, err
	}
	d := &Device{Path: dev, Number: n, Major: linux.Major(rdev), Minor: linux.Minor(rdev), fd: fd}
	if info, err := linux.LoopGetStatus64(fd); err == nil {
		d.DirectIO = info.Flags&linux.LO_FLAGS_DIRECT_IO != 0
	}
	return d, nil
}

// DevNum is the device as "major:minor", the form dm tables accept.
func (d *Device) DevNum() string { return fmt.Sprintf("%d:%d", d.Major, d.Minor) }

// Info is the kernel's view of the device (LOOP_GET_STATUS64).
type Info struct {
	BackingFile string // as recorded at attach time (may be truncated to 63 bytes)
	Offset      uint64
	SizeLimit   uint64
	ReadOnly    bool
	Autoclear   bool
	DirectIO    bool
}

// Info reads the device's status.
func (d *Device) Info() (Info, error) {
	if d.fd == nil {
		return Info{}, ErrDetached
	}
	s, err := linux.LoopGetStatus64(d.fd)
	if err != nil {
		return Info{}, fmt.Errorf("loop: %s: %w", d.Path, err)
	}
	name := string(s.File_name[:])
	if i := strings.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	return Info{
		BackingFile: name, Offset: s.Offset, SizeLimit: s.Sizelimit,
		ReadOnly:  s.Flags&linux.LO_FLAGS_READ_ONLY != 0,
		Autoclear: s.Flags&linux.LO_FLAGS_AUTOCLEAR != 0,
		DirectIO:  s.Flags&linux.LO_FLAGS_DIRECT_IO != 0,
	}, nil
}

// Close closes the device. With Autoclear the kernel detaches it once no one
// else (a dm table, a mount) holds it; without, it stays attached (Detach).
func (d *Device) Close() error {
	if d.fd == nil {
		return ErrDetached
	}
	err := d.fd.Close()
	d.fd = nil
	return err
}

// Detach unbinds the backing file (LOOP_CLR_FD) and closes the device. If
// the device is still in use, the kernel detaches it when the last user
// lets go (it turns on autoclear).
func (d *Device) Detach() error {
	if d.fd == nil {
		return ErrDetached
	}
	err := linux.LoopClrFd(d.fd)
	cerr := d.fd.Close()
	d.fd = nil
	if err != nil {
		return fmt.Errorf("loop: detach %s: %w", d.Path, err)
	}
	return cerr
}
