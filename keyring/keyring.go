// Package keyring manages Linux kernel keys and keyrings through add_key(2)
// and keyctl(2) (include/uapi/linux/keyctl.h): add a "user" key (for
// example the PKCS#7 root-hash signature dm-verity fetches by description),
// unlink or invalidate it, read, describe and search keys, list a keyring's
// members, and parse /proc/keys to inspect every key the caller may view
// (the .platform and .builtin_trusted_keys keyrings included). The raw
// syscalls live in internal/linux.
//
// Threads: the kernel keeps the thread, process and session keyrings in a
// task's credentials, and when it creates one on demand it installs it in
// the credentials of the calling thread only. In a Go program, whose
// goroutines move between OS threads, a key added to Process or Session
// from one thread is neither found (request_key, KEYCTL_SEARCH) nor
// possessed (so not readable) from another. Callers that add a key and
// then use it, or hand it to the kernel (dm-verity's table load), must do
// all of it under runtime.LockOSThread, as package veritydev does; the
// Thread keyring then is the natural place for short-lived keys.
package keyring

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/intact-project/intact/internal/linux"
)

// ID is a key or keyring serial number, or one of the special IDs below.
type ID int32

// Special keyrings (KEY_SPEC_*), relative to the calling thread or process.
const (
	Thread      ID = linux.KEY_SPEC_THREAD_KEYRING
	Process     ID = linux.KEY_SPEC_PROCESS_KEYRING
	Session     ID = linux.KEY_SPEC_SESSION_KEYRING
	User        ID = linux.KEY_SPEC_USER_KEYRING
	UserSession ID = linux.KEY_SPEC_USER_SESSION_KEYRING
)

// Sentinel errors matched by errors.Is on the errors this package returns.
var (
	ErrNotFound   = errors.New("keyring: key not found")
	ErrRejected   = errors.New("keyring: key rejected")
	ErrRevoked    = errors.New("keyring: key revoked")
	ErrExpired    = errors.New("keyring: key expired")
	ErrPermission = errors.New("keyring: permission denied")
	ErrTooLarge   = errors.New("keyring: payload too large")
	ErrParse      = errors.New("keyring: malformed /proc/keys line")
)

// MaxPayload bounds what Read returns (user keys hold at most 32 KiB; big
// key types more).
const MaxPayload = 1 << 20

// Error is a failed key operation.
type Error struct {
	Op  string
	Err error
}

func (e *Error) Error() string { return "keyring: " + e.Op + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Is maps errnos to the sentinels.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return errors.Is(e.Err, linux.ENOKEY) || errors.Is(e.Err, linux.ENOENT)
	case ErrRejected:
		return errors.Is(e.Err, linux.EKEYREJECTED)
	case ErrRevoked:
		return errors.Is(e.Err, linux.EKEYREVOKED)
	case ErrExpired:
		return errors.Is(e.Err, linux.EKEYEXPIRED)
	case ErrPermission:
		return errors.Is(e.Err, linux.EACCES) || errors.Is(e.Err, linux.EPERM)
	case ErrTooLarge:
		return errors.Is(e.Err, linux.EMSGSIZE) || errors.Is(e.Err, linux.EINVAL) && strings.HasPrefix(e.Op, "add")
	}
	return false
}

func wrapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Op: op, Err: err}
}

// Add adds (or updates) a key of keyType with the given description and
// payload to ring and returns its serial.
func Add(keyType, desc string, payload []byte, ring ID) (ID, error) {
	if desc == "" || strings.ContainsAny(desc, " \t\n\x00") {
		return 0, &Error{Op: "add " + keyType, Err: fmt.Errorf("description %q must be non-empty without whitespace", desc)}
	}
	id, err := linux.AddKey(keyType, desc, payload, int(ring))
	if err != nil {
		return 0, wrapErr("add "+keyType+" "+desc, err)
	}
	return ID(id), nil
}

// AddCertificate adds an X.509 certificate (DER) as an "asymmetric" key
// to ring, letting the kernel name it from the certificate (what `keyctl
// padd asymmetric "" RING` does). Restricted keyrings such as
// .secondary_trusted_keys accept it only if a key they trust signed it.
func AddCertificate(der []byte, ring ID) (ID, error) {
	id, err := linux.AddKey("asymmetric", "", der, int(ring))
	if err != nil {
		return 0, wrapErr("add asymmetric", err)
	}
	return ID(id), nil
}

// AddUser adds a "user" key, the type dm-verity's root_hash_sig_key_desc and
// fs-verity's tools read.
func AddUser(desc string, payload []byte, ring ID) (ID, error) {
	return Add("user", desc, payload, ring)
}

// Unlink removes key from ring (the key itself goes away when no keyring
// links it any more).
func Unlink(key, ring ID) error {
	return wrapErr("unlink", linux.KeyctlUnlink(int(key), int(ring)))
}

// Link links key into ring. The system keyrings' restrictions decide what
// they admit (.secondary_trusted_keys: keys signed by a trusted key).
func Link(key, ring ID) error {
	return wrapErr("link", linux.KeyctlLink(int(key), int(ring)))
}

// Invalidate invalidates key at once, wherever it is linked.
func Invalidate(key ID) error { return wrapErr("invalidate", linux.KeyctlInvalidate(int(key))) }

// Resolve returns the serial of a special keyring (Process, Session, ...),
// creating it if create.
func Resolve(ring ID, create bool) (ID, error) {
	id, err := linux.KeyctlGetKeyringID(int(ring), create)
	return ID(id), wrapErr("resolve", err)
}

// Search looks for a key of keyType and description in ring and the
// keyrings it links (KEYCTL_SEARCH).
func Search(ring ID, keyType, desc string) (ID, error) {
	id, err := linux.KeyctlSearch(int(ring), keyType, desc, 0)
	return ID(id), wrapErr("search "+keyType+" "+desc, err)
}

// Read returns a key's payload (at most MaxPayload bytes).
func Read(key ID) ([]byte, error) {
	b, err := linux.KeyctlRead(int(key), MaxPayload)
	return b, wrapErr("read", err)
}

// Members lists the serials of the keys a keyring links.
func Members(ring ID) ([]ID, error) {
	b, err := Read(ring)
	if err != nil {
		return nil, err
	}
	ids := make([]ID, len(b)/4)
	for i := range ids {
		ids[i] = ID(int32(binary.NativeEndian.Uint32(b[4*i:])))
	}
	return ids, nil
}

// Description is what KEYCTL_DESCRIBE reports.
type Description struct {
	Type        string
	UID, GID    uint32
	Perm        uint32
	Description string
}

// Describe returns a key's type, owner, permissions and description.
func Describe(key ID) (Description, error) {
	s, err := linux.KeyctlDescribe(int(key))
	if err != nil {
		return Description{}, wrapErr("describe", err)
	}
	return parseDescribe(s)
}

func parseDescribe(s string) (Description, error) {
	f := strings.SplitN(s, ";", 5)
	if len(f) != 5 {
		return Description{}, &Error{Op: "describe", Err: fmt.Errorf("unexpected reply %q", s)}
	}
	uid, err1 := strconv.ParseUint(f[1], 10, 32)
	gid, err2 := strconv.ParseUint(f[2], 10, 32)
	perm, err3 := strconv.ParseUint(f[3], 16, 32)
	if err := errors.Join(err1, err2, err3); err != nil {
		return Description{}, &Error{Op: "describe", Err: fmt.Errorf("unexpected reply %q: %w", s, err)}
	}
	return Description{Type: f[0], UID: uint32(uid), GID: uint32(gid), Perm: uint32(perm), Description: f[4]}, nil
}

// ProcKey is one line of /proc/keys.
type ProcKey struct {
	ID          ID
	Flags       string
	Usage       int
	Timeout     string // "perm" or the remaining lifetime
	Perm        uint32
	UID, GID    uint32
	Type        string
	Description string // e.g. ".platform: 4" or "intact test db root CA: 1f..."
}

// maxProcKeysLines bounds ParseProcKeys.
const maxProcKeysLines = 1 << 16

// ParseProcKeys parses /proc/keys: "<id hex> <flags> <usage> <timeout>
// <perm hex> <uid> <gid> <type> <description...>".
func ParseProcKeys(r io.Reader) ([]ProcKey, error) {
	var out []ProcKey
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	n := 0
	for sc.Scan() {
		n++
		if n > maxProcKeysLines {
			return nil, fmt.Errorf("%w: more than %d lines", ErrParse, maxProcKeysLines)
		}
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("%w: %q", ErrParse, line)
		}
		id, err1 := strconv.ParseUint(f[0], 16, 32)
		usage, err2 := strconv.Atoi(f[2])
		perm, err3 := strconv.ParseUint(f[4], 16, 32)
		uid, err4 := strconv.ParseUint(f[5], 10, 32)
		gid, err5 := strconv.ParseUint(f[6], 10, 32)
		if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
			return nil, fmt.Errorf("%w: %q: %w", ErrParse, line, err)
		}
		desc := afterFields(line, 8)
		out = append(out, ProcKey{ID: ID(int32(id)), Flags: f[1], Usage: usage, Timeout: f[3], Perm: uint32(perm),
			UID: uint32(uid), GID: uint32(gid), Type: f[7], Description: desc})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrParse, err)
	}
	return out, nil
}

// afterFields returns what follows the first n space-separated fields.
func afterFields(s string, n int) string {
	for i := 0; i < n; i++ {
		s = strings.TrimLeft(s, " \t")
		j := strings.IndexAny(s, " \t")
		if j < 0 {
			return ""
		}
		s = s[j:]
	}
	return strings.TrimLeft(s, " \t")
}

// ProcKeys reads /proc/keys: every key the caller may view.
func ProcKeys() ([]ProcKey, error) {
	f, err := os.Open("/proc/keys")
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	defer f.Close()
	return ParseProcKeys(io.LimitReader(f, 64<<20))
}

// FindKeyring returns the first keyring in /proc/keys whose description is
// name (for example ".platform" or ".builtin_trusted_keys").
func FindKeyring(name string) (ID, error) {
	keys, err := ProcKeys()
	if err != nil {
		return 0, err
	}
	for _, k := range keys {
		if k.Type == "keyring" && (k.Description == name || strings.HasPrefix(k.Description, name+":")) {
			return k.ID, nil
		}
	}
	return 0, &Error{Op: "find keyring " + name, Err: ErrNotFound}
}

// The system keyrings DistrustMachine works on.
const (
	MachineKeyring   = ".machine"
	SecondaryKeyring = ".secondary_trusted_keys"
)

// DistrustMachine unlinks the .machine keyring from
// .secondary_trusted_keys and returns the descriptions of the keys
// .machine held.
//
// At boot the kernel (CONFIG_INTEGRITY_MACHINE_KEYRING) puts the
// certificates of the MokListRT UEFI variable into .machine and links it
// into .secondary_trusted_keys, which module signatures, IPE policy
// signatures, dm-verity root-hash signatures and new .secondary keys are
// checked against. Without shim the kernel reads MokListRT as an ordinary
// variable, which root can write through efivarfs: a key planted there is
// trusted from the next boot on (docs/drivers.md, "Two boots"). After
// DistrustMachine no check reaches .machine until the next boot, and the
// link cannot be made again at run time (measured on Debian's 6.12:
// KEYCTL_LINK of .machine into .secondary_trusted_keys is EACCES). Call it
// before any process that is not part of the signed boot runs:
// intact-init does it first.
//
// A kernel without .machine, or whose .machine is not linked into
// .secondary_trusted_keys, is left as it is (nil error).
func DistrustMachine() ([]string, error) {
	keys, err := ProcKeys()
	if err != nil {
		return nil, err
	}
	var machine, secondary ID
	for _, k := range keys {
		if k.Type != "keyring" {
			continue
		}
		switch {
		case k.Description == MachineKeyring || strings.HasPrefix(k.Description, MachineKeyring+":"):
			machine = k.ID
		case k.Description == SecondaryKeyring || strings.HasPrefix(k.Description, SecondaryKeyring+":"):
			secondary = k.ID
		}
	}
	if machine == 0 || secondary == 0 {
		return nil, nil
	}
	members, err := Members(machine)
	if err != nil {
		return nil, fmt.Errorf("keyring: read %s: %w", MachineKeyring, err)
	}
	var descs []string
	for _, id := range members {
		d, err := Describe(id)
		if err != nil {
			descs = append(descs, fmt.Sprintf("key %d (%v)", id, err))
			continue
		}
		descs = append(descs, d.Description)
	}
	linked, err := Members(secondary)
	if err != nil {
		return descs, fmt.Errorf("keyring: read %s: %w", SecondaryKeyring, err)
	}
	if !slices.Contains(linked, machine) {
		return descs, nil
	}
	if err := Unlink(machine, secondary); err != nil {
		return descs, fmt.Errorf("keyring: distrust %s: %w", MachineKeyring, err)
	}
	return descs, nil
}
