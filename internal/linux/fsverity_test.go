package linux

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"unsafe"
)

func TestFsverityABISizes(t *testing.T) {
	if s := unsafe.Sizeof(fsverityEnableArg{}); s != sizeofFsverityEnableArg {
		t.Errorf("fsverity_enable_arg is %d bytes, want %d", s, sizeofFsverityEnableArg)
	}
	if s := unsafe.Sizeof(fsverityReadMetadataArg{}); s != sizeofFsverityReadMetadataArg {
		t.Errorf("fsverity_read_metadata_arg is %d bytes, want %d", s, sizeofFsverityReadMetadataArg)
	}
	// The ioctl numbers encode the argument sizes (_IOW/_IOWR size field).
	if size := (FS_IOC_ENABLE_VERITY >> 16) & 0x3fff; size != sizeofFsverityEnableArg {
		t.Errorf("FS_IOC_ENABLE_VERITY encodes size %d", size)
	}
	if size := (FS_IOC_READ_VERITY_METADATA >> 16) & 0x3fff; size != sizeofFsverityReadMetadataArg {
		t.Errorf("FS_IOC_READ_VERITY_METADATA encodes size %d", size)
	}
}

// TestFsverityMeasureNonVerityFile: on any filesystem, measuring a file
// without verity fails with an errno (ENODATA where fs-verity is built in,
// ENOTTY or EOPNOTSUPP where it is not), wrapped in *Error.
func TestFsverityMeasureNonVerityFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, _, err = FsverityMeasure(int(f.Fd()))
	var le *Error
	if !errors.As(err, &le) {
		t.Fatalf("measure of a plain file: %v, want *linux.Error", err)
	}
	if !errors.Is(err, ENODATA) && !errors.Is(err, ENOTTY) && !errors.Is(err, EOPNOTSUPP) {
		t.Fatalf("measure of a plain file: %v", err)
	}
	_, err = FsverityReadMetadata(int(f.Fd()), FS_VERITY_METADATA_TYPE_DESCRIPTOR, 0, make([]byte, 256))
	if !errors.As(err, &le) {
		t.Fatalf("read metadata of a plain file: %v", err)
	}
}
