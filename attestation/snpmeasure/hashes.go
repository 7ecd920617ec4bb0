package snpmeasure

import (
	"crypto/sha256"
	"encoding/binary"
)

// GUIDs of the SEV hashes table (QEMU target/i386/sev.c).
var (
	GUIDHashTableHeader = mustGUID("9438d606-4f22-4cc9-b479-a793d411fd21")
	GUIDHashCmdline     = mustGUID("97d02dd8-bd20-4c94-aa78-e7714d36ab2a")
	GUIDHashInitrd      = mustGUID("44baf731-3a2f-4bd7-9af1-41e29169781d")
	GUIDHashKernel      = mustGUID("4de79437-abd2-427f-b835-d5b172d2045b")
)

const (
	hashEntrySize   = 16 + 2 + sha256.Size       // GUID, u16 length, SHA-256
	hashTableSize   = 16 + 2 + 3*hashEntrySize   // 168
	HashesTableSize = (hashTableSize + 15) &^ 15 // padded length, 176
)

// HashesTable returns the SEV hashes table QEMU builds for measured direct
// boot, zero-padded to a multiple of 16 bytes (176 bytes). It holds, in this
// order, SHA-256 of cmdline plus a terminating NUL, of the whole initrd file
// (of no bytes when there is none) and of the whole kernel (bzImage) file.
func HashesTable(kernel, initrd []byte, cmdline string) []byte {
	t := make([]byte, HashesTableSize)
	copy(t[0:16], GUIDHashTableHeader[:])
	binary.LittleEndian.PutUint16(t[16:], hashTableSize)
	entry := func(off int, g GUID, sum [sha256.Size]byte) {
		copy(t[off:], g[:])
		binary.LittleEndian.PutUint16(t[off+16:], hashEntrySize)
		copy(t[off+18:], sum[:])
	}
	c := sha256.New()
	c.Write([]byte(cmdline))
	c.Write([]byte{0})
	var cs [sha256.Size]byte
	c.Sum(cs[:0])
	entry(18, GUIDHashCmdline, cs)
	entry(18+hashEntrySize, GUIDHashInitrd, sha256.Sum256(initrd))
	entry(18+2*hashEntrySize, GUIDHashKernel, sha256.Sum256(kernel))
	return t
}
