package host

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/intact-project/intact/host/bootcfg"
	"github.com/intact-project/intact/internal/atomicfile"
)

var sha256Hash = crypto.SHA256

const (
	mib      = 1 << 20
	sector   = 512
	minESP   = 40 * mib // FAT32 needs 65525 clusters (512-byte clusters below 260 MiB)
	gptSlack = mib      // room for the backup GPT at the end
)

func alignMiB(n int64) int64 { return (n + mib - 1) / mib * mib }

// diskBuild is a disk image being assembled: root and root-verity are
// copied in (in the background) as soon as they exist, the rest follows in
// finish. Layout, each partition 1 MiB aligned: root, root-verity,
// root-verity-sig, [var], ESP (last, so that the root can be placed before
// the UKI's size is known; firmware finds the ESP by its type).
type diskBuild struct {
	f                       *atomicfile.File
	root                    *rootImage
	rootOff, verityOff, end int64
	copyErr                 chan error
	done                    bool
}

func startDisk(out string, root *rootImage) (*diskBuild, error) {
	f, err := atomicfile.Create(filepath.Join(out, DiskFile), 0o644)
	if err != nil {
		return nil, err
	}
	d := &diskBuild{f: f, root: root, rootOff: mib, copyErr: make(chan error, 1)}
	d.verityOff = d.rootOff + alignMiB(root.size)
	d.end = d.verityOff + alignMiB(root.vsize)
	go func() {
		err := copyInto(f.File, d.rootOff, root.image)
		if err == nil {
			err = copyInto(f.File, d.verityOff, root.hashf)
		}
		d.copyErr <- err
	}()
	return d, nil
}

// abort drops an unfinished image.
func (d *diskBuild) abort() {
	if !d.done {
		<-d.copyErr
		d.done = true
		d.f.Close()
	}
}

// finish writes the signature partition, the optional var partition, the
// ESP with the UKI and the GPT, and commits disk.img.
func (d *diskBuild) finish(ctx context.Context, s *Spec, ukiImg, sig []byte, seed [32]byte, epoch int64, m *Manifest) error {
	err := <-d.copyErr
	d.done = true
	defer d.f.Close()
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	espSize := max(alignMiB(int64(len(ukiImg))+2*mib+int64(len(ukiImg))/8), minESP)
	if s.Disk.ESPSize != "" {
		v, _ := ParseSize(s.Disk.ESPSize)
		if v < int64(len(ukiImg))+mib || v < minESP {
			return fmt.Errorf("%w: disk.esp_size %s cannot hold the UKI (%d bytes; FAT32 needs at least %d MiB)", ErrSpec, s.Disk.ESPSize, len(ukiImg), minESP/mib)
		}
		espSize = alignMiB(v)
	}
	root := d.root
	rootUUID, verityUUID := bootcfg.PartitionUUIDs(root.hash)
	type part struct {
		name, typ, uuid string
		size, used      int64
	}
	parts := []part{
		{"root-x86-64", bootcfg.TypeRootX86, rootUUID, alignMiB(root.size), root.size},
		{"root-x86-64-verity", bootcfg.TypeRootVerityX86, verityUUID, alignMiB(root.vsize), root.vsize},
		{"root-x86-64-verity-sig", bootcfg.TypeRootSigX86, uuidString(derive([32]byte(sha256.Sum256(root.hash)), "sig uuid")), mib, int64(len(bytesTrim(sig)))},
	}
	if s.Var.Mode == bootcfg.VarPartition {
		v, _ := ParseSize(s.Var.Size)
		parts = append(parts, part{"var", bootcfg.TypeVar, uuidString(derive(seed, "var uuid")), alignMiB(v), 0})
	}
	parts = append(parts, part{"esp", bootcfg.TypeESP, uuidString(derive(seed, "esp uuid")), espSize, int64(len(ukiImg))})
	offset := int64(mib)
	var table gpt.Table
	table.LogicalSectorSize, table.PhysicalSectorSize, table.ProtectiveMBR = sector, sector, true
	table.GUID = uuidString(derive([32]byte(sha256.Sum256(append(seed[:], root.hash...))), "disk guid"))
	for i, p := range parts {
		table.Partitions = append(table.Partitions, &gpt.Partition{Index: i + 1, Start: uint64(offset / sector),
			End: uint64((offset+p.size)/sector - 1), Size: uint64(p.size), Type: gpt.Type(p.typ), Name: p.name, GUID: p.uuid})
		m.Disk.Partitions = append(m.Disk.Partitions, PartitionInfo{Name: p.name, Type: p.typ, UUID: p.uuid, Offset: offset, Size: p.size, Used: p.used})
		offset += p.size
	}
	size := offset + gptSlack
	m.Disk.Size, m.Disk.GUID = size, table.GUID
	f := d.f
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("host: disk: %w", err)
	}
	if _, err := f.WriteAt(sig, m.Disk.Partitions[2].Offset); err != nil {
		return fmt.Errorf("host: disk: %w", err)
	}
	dk, err := diskfs.OpenBackend(file.New(f.File, false), diskfs.WithSectorSize(diskfs.SectorSize512))
	if err != nil {
		return fmt.Errorf("host: disk: %w", err)
	}
	if err := dk.Partition(&table); err != nil {
		return fmt.Errorf("host: GPT: %w", err)
	}
	espIndex := len(parts)
	if err := writeESP(dk, espIndex, ukiImg, epoch); err != nil {
		return err
	}
	if err := fixFAT32(f.File, m.Disk.Partitions[espIndex-1].Offset); err != nil {
		return err
	}
	if s.Var.Mode == bootcfg.VarPartition {
		if err := formatVar(dk, 4); err != nil {
			return err
		}
	}
	return f.Commit()
}

func bytesTrim(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}

// copyInto copies the file src into dst at off.
func copyInto(dst *os.File, off int64, src string) error {
	sf, err := os.Open(src)
	if err != nil {
		return err
	}
	defer sf.Close()
	if _, err := dst.Seek(off, io.SeekStart); err != nil {
		return err
	}
	if _, err := dst.ReadFrom(sf); err != nil {
		return fmt.Errorf("host: disk: copy %s: %w", filepath.Base(src), err)
	}
	return nil
}

// writeESP creates the FAT32 ESP with EFI/BOOT/BOOTX64.EFI. go-diskfs
// takes file timestamps from SOURCE_DATE_EPOCH; it is set to the build's
// epoch while the ESP is written.
func writeESP(d *disk.Disk, index int, ukiImg []byte, epoch int64) error {
	epochEnvMu.Lock()
	defer epochEnvMu.Unlock()
	old, had := os.LookupEnv("SOURCE_DATE_EPOCH")
	os.Setenv("SOURCE_DATE_EPOCH", strconv.FormatInt(epoch, 10))
	defer func() {
		if had {
			os.Setenv("SOURCE_DATE_EPOCH", old)
		} else {
			os.Unsetenv("SOURCE_DATE_EPOCH")
		}
	}()
	fsys, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: index, FSType: filesystem.TypeFat32, VolumeLabel: "ESP", Reproducible: true})
	if err != nil {
		return fmt.Errorf("host: ESP: %w", err)
	}
	if err := fsys.Mkdir("/EFI/BOOT"); err != nil {
		return fmt.Errorf("host: ESP: %w", err)
	}
	w, err := fsys.OpenFile("/EFI/BOOT/BOOTX64.EFI", os.O_CREATE|os.O_RDWR)
	if err != nil {
		return fmt.Errorf("host: ESP: %w", err)
	}
	if _, err := w.Write(ukiImg); err != nil {
		return fmt.Errorf("host: ESP: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("host: ESP: %w", err)
	}
	return nil
}

// formatVar makes an ext4 file system on the var partition (index n).
func formatVar(d *disk.Disk, n int) error {
	epochEnvMu.Lock()
	defer epochEnvMu.Unlock()
	if _, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: n, FSType: filesystem.TypeExt4, VolumeLabel: "var", Reproducible: true}); err != nil {
		return fmt.Errorf("host: var partition: %w", err)
	}
	return nil
}

// fixFAT32 corrects what go-diskfs (v1.9.4) writes differently from what
// fsck.fat expects: the ".." entry of a directory in the root directory
// must name cluster 0 (go-diskfs writes the root's cluster), and the
// FSInfo free-cluster count and next-free hint are filled in instead of
// left "unknown".
func fixFAT32(f *os.File, off int64) error {
	le := binary.LittleEndian
	bpb := make([]byte, 512)
	if _, err := f.ReadAt(bpb, off); err != nil {
		return err
	}
	bps, spc := int64(le.Uint16(bpb[11:])), int64(bpb[13])
	res, nfats := int64(le.Uint16(bpb[14:])), int64(bpb[16])
	fatSize, rootCluster, fsinfo := int64(le.Uint32(bpb[0x24:])), le.Uint32(bpb[0x2c:]), int64(le.Uint16(bpb[0x30:]))
	totalSectors := int64(le.Uint32(bpb[0x20:]))
	if bps != 512 || spc == 0 || string(bpb[0x52:0x57]) != "FAT32" {
		return fmt.Errorf("host: ESP: unexpected FAT32 boot sector")
	}
	firstData := res + nfats*fatSize
	clusterOff := func(c uint32) int64 { return off + (firstData+(int64(c)-2)*spc)*bps }
	fat := make([]byte, fatSize*bps)
	if _, err := f.ReadAt(fat, off+res*bps); err != nil {
		return err
	}
	// Root directory: walk its cluster chain.
	for c := rootCluster; c >= 2 && c < 0x0ffffff8; c = le.Uint32(fat[4*c:]) & 0x0fffffff {
		dir := make([]byte, spc*bps)
		if _, err := f.ReadAt(dir, clusterOff(c)); err != nil {
			return err
		}
		for i := 0; i+32 <= len(dir); i += 32 {
			e := dir[i : i+32]
			if e[0] == 0 {
				break
			}
			if e[0] == 0xe5 || e[11]&0x10 == 0 || e[11] == 0x0f || e[0] == '.' {
				continue
			}
			sub := uint32(le.Uint16(e[20:]))<<16 | uint32(le.Uint16(e[26:]))
			dot := make([]byte, 64)
			if _, err := f.ReadAt(dot, clusterOff(sub)); err != nil {
				return err
			}
			if string(dot[32:43]) == "..         " {
				le.PutUint16(dot[32+20:], 0)
				le.PutUint16(dot[32+26:], 0)
				if _, err := f.WriteAt(dot[32:64], clusterOff(sub)+32); err != nil {
					return err
				}
			}
		}
		if 4*int(c)+4 > len(fat) {
			break
		}
	}
	clusters := (totalSectors-firstData)/spc + 2
	var free, next uint32
	for c := int64(2); c < clusters && 4*c+4 <= int64(len(fat)); c++ {
		if le.Uint32(fat[4*c:])&0x0fffffff == 0 {
			if free == 0 {
				next = uint32(c)
			}
			free++
		}
	}
	info := make([]byte, 8)
	le.PutUint32(info, free)
	le.PutUint32(info[4:], next)
	_, err := f.WriteAt(info, off+fsinfo*bps+0x1e8)
	return err
}
