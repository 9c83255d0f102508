package linux

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Special keyring IDs (KEY_SPEC_*).
const (
	KEY_SPEC_THREAD_KEYRING       = unix.KEY_SPEC_THREAD_KEYRING
	KEY_SPEC_PROCESS_KEYRING      = unix.KEY_SPEC_PROCESS_KEYRING
	KEY_SPEC_SESSION_KEYRING      = unix.KEY_SPEC_SESSION_KEYRING
	KEY_SPEC_USER_KEYRING         = unix.KEY_SPEC_USER_KEYRING
	KEY_SPEC_USER_SESSION_KEYRING = unix.KEY_SPEC_USER_SESSION_KEYRING
)

// AddKey wraps add_key(2).
func AddKey(keyType, desc string, payload []byte, ring int) (int, error) {
	id, err := unix.AddKey(keyType, desc, payload, ring)
	if err != nil {
		return 0, wrap(fmt.Sprintf("add_key %s %q", keyType, desc), err)
	}
	return id, nil
}

// KeyctlUnlink removes key from keyring ring.
func KeyctlUnlink(key, ring int) error {
	_, err := unix.KeyctlInt(unix.KEYCTL_UNLINK, key, ring, 0, 0)
	return wrap(fmt.Sprintf("keyctl unlink %d from %d", key, ring), err)
}

// KeyctlLink links key into keyring ring (the ring's restriction, if any,
// decides).
func KeyctlLink(key, ring int) error {
	_, err := unix.KeyctlInt(unix.KEYCTL_LINK, key, ring, 0, 0)
	return wrap(fmt.Sprintf("keyctl link %d into %d", key, ring), err)
}

// KeyctlInvalidate invalidates key at once (Linux 3.5+).
func KeyctlInvalidate(key int) error {
	_, err := unix.KeyctlInt(unix.KEYCTL_INVALIDATE, key, 0, 0, 0)
	return wrap(fmt.Sprintf("keyctl invalidate %d", key), err)
}

// KeyctlGetKeyringID resolves a special keyring ID to its serial number.
func KeyctlGetKeyringID(id int, create bool) (int, error) {
	n, err := unix.KeyctlGetKeyringID(id, create)
	if err != nil {
		return 0, wrap(fmt.Sprintf("keyctl get_keyring_id %d", id), err)
	}
	return n, nil
}

// KeyctlDescribe returns "type;uid;gid;perm;description" for key.
func KeyctlDescribe(key int) (string, error) {
	s, err := unix.KeyctlString(unix.KEYCTL_DESCRIBE, key)
	if err != nil {
		return "", wrap(fmt.Sprintf("keyctl describe %d", key), err)
	}
	return s, nil
}

// KeyctlSearch searches ring (recursively) for a key of type and description;
// dest, if non-zero, links the key found into that keyring.
func KeyctlSearch(ring int, keyType, desc string, dest int) (int, error) {
	n, err := unix.KeyctlSearch(ring, keyType, desc, dest)
	if err != nil {
		return 0, wrap(fmt.Sprintf("keyctl search %d %s %q", ring, keyType, desc), err)
	}
	return n, nil
}

// KeyctlRead returns the payload of key (for a keyring: its member serials
// as native-endian int32s), at most limit bytes.
func KeyctlRead(key int, limit int) ([]byte, error) {
	n, err := unix.KeyctlBuffer(unix.KEYCTL_READ, key, nil, 0)
	if err != nil {
		return nil, wrap(fmt.Sprintf("keyctl read %d", key), err)
	}
	for {
		if n > limit {
			return nil, wrap(fmt.Sprintf("keyctl read %d: payload of %d bytes over the limit of %d", key, n, limit), unix.EMSGSIZE)
		}
		buf := make([]byte, n)
		m, err := unix.KeyctlBuffer(unix.KEYCTL_READ, key, buf, 0)
		if err != nil {
			return nil, wrap(fmt.Sprintf("keyctl read %d", key), err)
		}
		if m <= n {
			return buf[:m], nil
		}
		n = m // grew in between
	}
}
