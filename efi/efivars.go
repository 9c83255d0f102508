package efi

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/intact-project/intact/internal/linux"
)

// DefaultEFIVars is where Linux mounts efivarfs.
const DefaultEFIVars = "/sys/firmware/efi/efivars"

// Errors of enrollment.
var (
	// ErrNoEFIVars: no efivarfs (not booted through UEFI, or not mounted).
	ErrNoEFIVars = errors.New("efi: no EFI variables (efivarfs not mounted, or not booted through UEFI)")
	// ErrNotSetupMode: the firmware is in user mode; keys can be enrolled
	// only after clearing them in the firmware's setup (setup mode).
	ErrNotSetupMode = errors.New("efi: firmware is not in setup mode")
)

// globalGUID is EFI_GLOBAL_VARIABLE.
const globalGUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"

// EFIVars is the efivarfs directory (Dir empty means DefaultEFIVars). Tests
// point Dir at an ordinary directory laid out the same way.
type EFIVars struct{ Dir string }

func (v EFIVars) dir() string {
	if v.Dir == "" {
		return DefaultEFIVars
	}
	return v.Dir
}

// Read returns a variable's attributes and data.
func (v EFIVars) Read(name, guid string) (uint32, []byte, error) {
	b, err := os.ReadFile(filepath.Join(v.dir(), name+"-"+guid))
	if err != nil {
		return 0, nil, err
	}
	if len(b) < 4 {
		return 0, nil, fmt.Errorf("efi: variable %s-%s: %d bytes", name, guid, len(b))
	}
	return binary.LittleEndian.Uint32(b), b[4:], nil
}

func (v EFIVars) flag(name string) (bool, error) {
	_, d, err := v.Read(name, globalGUID)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return len(d) == 1 && d[0] == 1, nil
}

// State is the firmware's Secure Boot state.
type State struct {
	SecureBoot bool `json:"secure_boot"`
	SetupMode  bool `json:"setup_mode"`
}

// State reads SecureBoot and SetupMode.
func (v EFIVars) State() (State, error) {
	if _, err := os.Stat(v.dir()); err != nil {
		return State{}, fmt.Errorf("%w: %s: %v", ErrNoEFIVars, v.dir(), err)
	}
	if _, _, err := v.Read("SetupMode", globalGUID); err != nil {
		return State{}, fmt.Errorf("%w: SetupMode: %v", ErrNoEFIVars, err)
	}
	var s State
	var err error
	if s.SecureBoot, err = v.flag("SecureBoot"); err != nil {
		return s, err
	}
	if s.SetupMode, err = v.flag("SetupMode"); err != nil {
		return s, err
	}
	return s, nil
}

// Write writes an authenticated update (an .auth blob) to variable vr, in
// one write() as efivarfs requires.
func (v EFIVars) Write(vr Variable, auth []byte) error {
	p := filepath.Join(v.dir(), vr.Name+"-"+vr.GUID)
	// efivarfs marks existing variables immutable (chattr +i), and an
	// immutable file cannot even be opened for writing (EPERM): clear the
	// flag through a read-only descriptor first. An ordinary directory in
	// tests has no such flag and may not support the ioctl.
	if r, err := os.Open(p); err == nil {
		err = linux.ClearImmutable(r)
		r.Close()
		if err != nil && v.Dir == "" {
			return fmt.Errorf("efi: write %s: %w", vr.Name, err)
		}
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("efi: write %s: %w", vr.Name, err)
	}
	defer f.Close()
	buf := make([]byte, 4, 4+len(auth))
	binary.LittleEndian.PutUint32(buf, vr.Attributes)
	buf = append(buf, auth...)
	if _, err := f.Write(buf); err != nil {
		return fmt.Errorf("efi: firmware refused the %s update: %w", vr.Name, err)
	}
	return f.Close()
}

// Enroll writes db, KEK and PK (in that order; PK last, which ends setup
// mode) from the signed updates auth (keyed "db", "KEK", "PK"). It refuses
// unless the firmware is in setup mode. progress, if not nil, is called
// after each variable.
func (v EFIVars) Enroll(ctx context.Context, auth map[string][]byte, progress func(Variable)) error {
	st, err := v.State()
	if err != nil {
		return err
	}
	if !st.SetupMode {
		return fmt.Errorf("%w (Secure Boot %s): clear the Secure Boot keys in the firmware setup, then enroll", ErrNotSetupMode, onOff(st.SecureBoot))
	}
	for _, vr := range EnrollOrder {
		if len(auth[vr.Name]) == 0 {
			return fmt.Errorf("%w: no signed update for %s", ErrKeys, vr.Name)
		}
	}
	for _, vr := range EnrollOrder {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := v.Write(vr, auth[vr.Name]); err != nil {
			return err
		}
		if progress != nil {
			progress(vr)
		}
	}
	return nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
