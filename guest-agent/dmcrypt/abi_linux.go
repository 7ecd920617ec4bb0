package dmcrypt

import (
	"encoding/binary"
	"unsafe"
)

// The device-mapper ioctl ABI, from <linux/dm-ioctl.h> (checked against a
// compiled C program in abi_linux_test.go; see testdata/README.md). This is
// the only file that knows the struct layouts.

// dmIoctl is struct dm_ioctl. The variable-size data (target specs and
// their parameter strings) follows it, at data_start.
type dmIoctl struct {
	version     [3]uint32
	dataSize    uint32
	dataStart   uint32
	targetCount uint32
	openCount   int32
	flags       uint32
	eventNr     uint32
	padding     uint32
	dev         uint64
	name        [128]byte // DM_NAME_LEN
	uuid        [129]byte // DM_UUID_LEN
	data        [7]byte
}

// dmTargetSpec is struct dm_target_spec; its parameter string (NUL
// terminated) follows it.
type dmTargetSpec struct {
	sectorStart uint64
	length      uint64
	status      int32
	next        uint32
	targetType  [16]byte // DM_MAX_TYPE_NAME
}

const (
	sizeofIoctl      = int(unsafe.Sizeof(dmIoctl{}))
	sizeofTargetSpec = int(unsafe.Sizeof(dmTargetSpec{}))

	dmVersionMajor = 4

	// _IOWR(DM_IOCTL = 0xfd, cmd, struct dm_ioctl)
	iocBase        = 3<<30 | uintptr(sizeofIoctl)<<16 | 0xfd<<8
	ioctlVersion   = iocBase // command 0
	ioctlDevCreate = iocBase | 3
	ioctlDevRemove = iocBase | 4
	ioctlDevSusp   = iocBase | 6
	ioctlDevStatus = iocBase | 7
	ioctlTableLoad = iocBase | 9

	flagReadOnly   = 1 << 0
	flagSuspend    = 1 << 1
	flagBufferFull = 1 << 8
	// flagSecureData asks the kernel to wipe its copies of the ioctl
	// buffer (which holds the key) after use.
	flagSecureData = 1 << 15
)

var ioctlNames = map[uintptr]string{
	ioctlVersion:   "DM_VERSION",
	ioctlDevCreate: "DM_DEV_CREATE",
	ioctlDevRemove: "DM_DEV_REMOVE",
	ioctlDevSusp:   "DM_DEV_SUSPEND",
	ioctlDevStatus: "DM_DEV_STATUS",
	ioctlTableLoad: "DM_TABLE_LOAD",
}

// encodeHeader writes h into b[:sizeofIoctl] in the native (little-endian
// on every platform the agent runs on) byte order.
func encodeHeader(b []byte, h *dmIoctl) {
	le := binary.NativeEndian
	for i, v := range h.version {
		le.PutUint32(b[4*i:], v)
	}
	le.PutUint32(b[12:], h.dataSize)
	le.PutUint32(b[16:], h.dataStart)
	le.PutUint32(b[20:], h.targetCount)
	le.PutUint32(b[24:], uint32(h.openCount))
	le.PutUint32(b[28:], h.flags)
	le.PutUint32(b[32:], h.eventNr)
	le.PutUint32(b[36:], h.padding)
	le.PutUint64(b[40:], h.dev)
	copy(b[48:176], h.name[:])
	copy(b[176:305], h.uuid[:])
	copy(b[305:312], h.data[:])
}

// decodeHeader is the inverse of encodeHeader.
func decodeHeader(b []byte) dmIoctl {
	le := binary.NativeEndian
	var h dmIoctl
	for i := range h.version {
		h.version[i] = le.Uint32(b[4*i:])
	}
	h.dataSize = le.Uint32(b[12:])
	h.dataStart = le.Uint32(b[16:])
	h.targetCount = le.Uint32(b[20:])
	h.openCount = int32(le.Uint32(b[24:]))
	h.flags = le.Uint32(b[28:])
	h.eventNr = le.Uint32(b[32:])
	h.dev = le.Uint64(b[40:])
	copy(h.name[:], b[48:176])
	copy(h.uuid[:], b[176:305])
	return h
}

// encodeTargetSpec writes s into b[:sizeofTargetSpec].
func encodeTargetSpec(b []byte, s *dmTargetSpec) {
	le := binary.NativeEndian
	le.PutUint64(b[0:], s.sectorStart)
	le.PutUint64(b[8:], s.length)
	le.PutUint32(b[16:], uint32(s.status))
	le.PutUint32(b[20:], s.next)
	copy(b[24:40], s.targetType[:])
}
