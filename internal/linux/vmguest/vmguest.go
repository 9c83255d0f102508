// Package vmguest holds the syscalls that only the inits of test and
// example guests make (internal/vmtest/init, examples/container-host/init):
// raw mode and drain for their serial consoles, bringing a network
// interface up. They live apart from
// internal/linux, which holds what intact's own commands and packages call,
// so that nothing in the shipped binaries can reach them; like
// internal/linux, this package may import golang.org/x/sys/unix
// (internal/archtest).
package vmguest

import (
	"golang.org/x/sys/unix"

	"github.com/intact-project/intact/internal/linux"
)

// wrap turns an errno into a *linux.Error naming the operation.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if errno, ok := err.(unix.Errno); ok {
		return &linux.Error{Op: op, Errno: errno}
	}
	return err
}

// MakeRaw puts the terminal on fd into raw mode (no echo, no newline
// translation, 8-bit clean), as cfmakeraw(3) does.
func MakeRaw(fd uintptr) error {
	t, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
	if err != nil {
		return wrap("ioctl TCGETS", err)
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	return wrap("ioctl TCSETS", unix.IoctlSetTermios(int(fd), unix.TCSETS, t))
}

// Tcdrain waits until all output written to the terminal fd is transmitted.
func Tcdrain(fd uintptr) error {
	return wrap("ioctl TCSBRK", unix.IoctlSetInt(int(fd), unix.TCSBRK, 1))
}

// LinkUp sets the network interface name up (SIOCSIFFLAGS with IFF_UP), as
// `ip link set NAME up` does. The VM tier's init uses it for loopback.
func LinkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return wrap("socket", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return wrap("ifreq "+name, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return wrap("ioctl SIOCGIFFLAGS "+name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return wrap("ioctl SIOCSIFFLAGS "+name, unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr))
}
