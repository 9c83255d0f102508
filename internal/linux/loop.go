package linux

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// LoopConfig is struct loop_config (LOOP_CONFIGURE, Linux 5.8+).
type LoopConfig = unix.LoopConfig

// LoopInfo64 is struct loop_info64.
type LoopInfo64 = unix.LoopInfo64

// Loop flags (lo_flags).
const (
	LO_FLAGS_READ_ONLY = unix.LO_FLAGS_READ_ONLY
	LO_FLAGS_AUTOCLEAR = unix.LO_FLAGS_AUTOCLEAR
	LO_FLAGS_PARTSCAN  = unix.LO_FLAGS_PARTSCAN
	LO_FLAGS_DIRECT_IO = unix.LO_FLAGS_DIRECT_IO
)

// LoopCtlGetFree asks /dev/loop-control for a free loop device number.
func LoopCtlGetFree(ctl *FD) (int, error) {
	n, err := unix.IoctlRetInt(ctl.Int(), unix.LOOP_CTL_GET_FREE)
	if err != nil {
		return 0, wrap("ioctl LOOP_CTL_GET_FREE", err)
	}
	return n, nil
}

// LoopConfigure binds the backing file cfg.Fd to the loop device fd and
// applies cfg.Info in one step.
func LoopConfigure(fd *FD, cfg *LoopConfig) error {
	return wrap("ioctl LOOP_CONFIGURE", ioctlPtr(fd.Int(), unix.LOOP_CONFIGURE, unsafePointer(cfg)))
}

// LoopClrFd detaches the backing file (LOOP_CLR_FD).
func LoopClrFd(fd *FD) error {
	return wrap("ioctl LOOP_CLR_FD", unix.IoctlSetInt(fd.Int(), unix.LOOP_CLR_FD, 0))
}

// LoopGetStatus64 reads struct loop_info64 of the loop device fd.
func LoopGetStatus64(fd *FD) (*LoopInfo64, error) {
	info, err := unix.IoctlLoopGetStatus64(fd.Int())
	if err != nil {
		return nil, wrap("ioctl LOOP_GET_STATUS64", err)
	}
	return info, nil
}

// LoopSetDirectIO switches direct I/O on the loop device on or off.
func LoopSetDirectIO(fd *FD, on bool) error {
	v := 0
	if on {
		v = 1
	}
	return wrap(fmt.Sprintf("ioctl LOOP_SET_DIRECT_IO %d", v), unix.IoctlSetInt(fd.Int(), unix.LOOP_SET_DIRECT_IO, v))
}
