package linux

import (
	"golang.org/x/sys/unix"
)

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
