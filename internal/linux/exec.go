package linux

import (
	"os"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// MemfdCreate creates an anonymous memory-backed file (memfd_create(2)).
func MemfdCreate(name string) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, wrap("memfd_create", err)
	}
	return os.NewFile(uintptr(fd), "memfd:"+name), nil
}

// Fexecve executes the program open as f, as glibc's fexecve(3) does:
// execve(2) of /proc/self/fd/N. It returns only on failure.
func Fexecve(f *os.File, argv, envv []string) error {
	return wrap("fexecve "+f.Name(), unix.Exec("/proc/self/fd/"+strconv.Itoa(int(f.Fd())), argv, envv))
}

// MapExec maps the first page of f readable and executable (mmap(2) with
// PROT_READ|PROT_EXEC, MAP_PRIVATE) and unmaps it again: it tells whether
// the kernel lets this file's contents become executable memory.
func MapExec(f *os.File) error {
	b, err := unix.Mmap(int(f.Fd()), 0, os.Getpagesize(), unix.PROT_READ|unix.PROT_EXEC, unix.MAP_PRIVATE)
	if err != nil {
		return wrap("mmap PROT_EXEC "+f.Name(), err)
	}
	return unix.Munmap(b)
}

// ProtectExec maps the first page of f readable, then asks mprotect(2) to
// make it executable (the other way to executable file memory).
func ProtectExec(f *os.File) error {
	b, err := unix.Mmap(int(f.Fd()), 0, os.Getpagesize(), unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		return wrap("mmap "+f.Name(), err)
	}
	defer unix.Munmap(b)
	return wrap("mprotect PROT_EXEC "+f.Name(), unix.Mprotect(b, unix.PROT_READ|unix.PROT_EXEC))
}

// Capabilities DropBounding knows by name.
var capabilities = map[string]uintptr{
	"mac_admin":    unix.CAP_MAC_ADMIN,
	"mac_override": unix.CAP_MAC_OVERRIDE,
	"sys_module":   unix.CAP_SYS_MODULE,
	"sys_admin":    unix.CAP_SYS_ADMIN,
}

// CapabilityNumber returns the number of a capability by its name without
// the CAP_ prefix, lowercase ("mac_admin").
func CapabilityNumber(name string) (uintptr, bool) {
	c, ok := capabilities[name]
	return c, ok
}

// CapabilityNames lists the names CapabilityNumber knows, sorted.
func CapabilityNames() []string {
	names := make([]string, 0, len(capabilities))
	for n := range capabilities {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// DropBounding removes a capability from the calling thread's bounding set
// (prctl(2) PR_CAPBSET_DROP): neither this thread nor anything it executes
// can gain it again. The bounding set is per thread: call it with the OS
// thread locked, and exec from that thread.
func DropBounding(capability uintptr) error {
	return wrap("prctl PR_CAPBSET_DROP", unix.Prctl(unix.PR_CAPBSET_DROP, capability, 0, 0, 0))
}

// WaitAny reaps one exited child without blocking (wait4(-1, WNOHANG)):
// its pid (0 when none has exited), its exit code, or the signal that
// killed it.
func WaitAny() (pid, code int, signal int, err error) {
	var ws unix.WaitStatus
	pid, err = unix.Wait4(-1, &ws, unix.WNOHANG, nil)
	if err != nil || pid <= 0 {
		return 0, 0, 0, wrap("wait4", err)
	}
	if ws.Signaled() {
		return pid, -1, int(ws.Signal()), nil
	}
	return pid, ws.ExitStatus(), 0, nil
}

// ECHILD: no children to wait for.
const ECHILD = unix.ECHILD

// SetHostname sets the kernel's host name.
func SetHostname(name string) error { return wrap("sethostname", unix.Sethostname([]byte(name))) }

// KillGroup sends sig to every process of process group pgid.
func KillGroup(pgid int, sig unix.Signal) error {
	return wrap("kill", unix.Kill(-pgid, sig))
}

// SIGKILL cannot be caught.
const SIGKILL = unix.SIGKILL
