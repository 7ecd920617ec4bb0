// Package luks2 reads and writes the LUKS2 on-disk format, the subset cvm
// uses: one aes-xts-plain64 crypt segment with 512-byte sectors, a pbkdf2
// volume-key digest, and pbkdf2 keyslots with LUKS1 anti-forensic splitting.
//
// The guest agent uses Parse and CheckKey on a header the host hands it (so
// every byte is untrusted and checked against strict limits); the tenant's
// `cvm image encrypt` uses Format and Encrypt. The output is compatible with
// cryptsetup 2.x: `cryptsetup open --key-file KEY IMG` opens it.
//
// Standard library and golang.org/x/crypto only, no cgo: this package is
// linked into the static guest agent.
package luks2

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
)

// SectorSize is the only data sector size this package supports, in bytes.
const SectorSize = 512

// Cipher is the only data and keyslot encryption this package supports.
const Cipher = "aes-xts-plain64"

// Binary header layout (LUKS2 On-Disk Format Specification, section 2).
const (
	binHeaderSize = 4096
	magicLen      = 6
	offVersion    = 6
	offHdrSize    = 8
	offSeqID      = 16
	offLabel      = 24
	labelLen      = 48
	offCsumAlg    = 72
	csumAlgLen    = 32
	offSalt       = 104
	saltLen       = 64
	offUUID       = 168
	uuidLen       = 40
	offSubsystem  = 208
	offHdrOffset  = 256
	offCsum       = 448
	csumLen       = 64
)

var (
	magicPrimary   = []byte("LUKS\xba\xbe")
	magicSecondary = []byte("SKUL\xba\xbe")
)

// hdrSizes are the header sizes (binary header + JSON area) the
// specification allows; the secondary header starts at the same offset.
var hdrSizes = []uint64{
	16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10,
	1 << 20, 2 << 20, 4 << 20,
}

// Limits on the JSON metadata. cryptsetup allows 32 keyslots; a cvm image
// has one keyslot, one segment, one digest.
const (
	maxKeyslots = 32
	maxSegments = 1
	maxDigests  = 8
	maxTokens   = 32
	// maxOffset bounds every offset and size in the header (1 EiB), so that
	// sums of two of them cannot overflow.
	maxOffset = 1 << 60
	// maxIterations bounds pbkdf2 iteration counts, so that a hostile
	// header cannot make CheckKey spin for hours.
	maxIterations = 10_000_000
	maxKeySize    = 128
)

// ErrWrongKey is returned by CheckKey when the key does not match the
// header's volume-key digest.
var ErrWrongKey = errors.New("wrong key for this disk: it does not match the volume key digest in the LUKS2 header")

// ErrUnsupported is wrapped by every error about a header that is valid
// LUKS2 but uses something this package does not implement.
var ErrUnsupported = errors.New("unsupported")

// Header is a parsed, validated LUKS2 header.
type Header struct {
	// HdrSize is the size of one header copy (binary header + JSON area).
	HdrSize uint64
	SeqID   uint64
	UUID    string
	Label   string
	// Primary says whether the values came from the primary header copy
	// (false: the primary was damaged and the secondary was used).
	Primary bool
	// DeviceSize is the size of the device or file Parse read, in bytes,
	// or 0 when the reader did not say.
	DeviceSize uint64
	// KeyslotsSize is config.keyslots_size: the bytes after the two header
	// copies reserved for keyslot areas.
	KeyslotsSize uint64
	Segment      Segment
	Digest       Digest
	// Keyslots in increasing ID order.
	Keyslots []Keyslot
}

// Segment is the crypt segment: where the encrypted data lives.
type Segment struct {
	// Offset of the data from the start of the device, in bytes.
	Offset uint64
	// Size in bytes; 0 with Dynamic set means "to the end of the device".
	Size    uint64
	Dynamic bool
	// Encryption is the dm-crypt cipher spec, always Cipher here.
	Encryption string
	// SectorSize is the encryption sector size, always SectorSize here.
	SectorSize uint32
	// IVTweak is added to the sector number to form the IV; always 0 here.
	IVTweak uint64
}

// Digest is the pbkdf2 digest of the volume key.
type Digest struct {
	Hash       string
	Iterations int
	Salt       []byte
	// Value is pbkdf2(volume key, Salt, Iterations, len(Value)).
	Value []byte
	// Keyslots are the IDs of the keyslots holding this volume key.
	Keyslots []int
}

// Keyslot describes one keyslot (the volume key encrypted under a
// passphrase). The guest never opens keyslots: it gets the volume key
// itself and checks it against the Digest.
type Keyslot struct {
	ID      int
	KeySize int // size of the volume key it holds, in bytes
	Area    Area
	KDF     KDF
	AF      AF
}

// Area is where a keyslot's encrypted key material lives.
type Area struct {
	Offset, Size uint64
	Encryption   string
	KeySize      int
}

// KDF derives the keyslot's area key from the passphrase.
type KDF struct {
	Type       string // pbkdf2, argon2i or argon2id
	Hash       string // pbkdf2 only
	Iterations int    // pbkdf2 only
	Time       int    // argon2 only
	Memory     int    // argon2 only, KiB
	CPUs       int    // argon2 only
	Salt       []byte
}

// AF is the anti-forensic splitter of a keyslot.
type AF struct {
	Type    string // luks1
	Stripes int
	Hash    string
}

// DataSectors returns the length of the crypt segment in 512-byte sectors on
// a device of deviceSize bytes (used when the segment is dynamic).
func (s Segment) DataSectors(deviceSize uint64) (uint64, error) {
	if !s.Dynamic {
		if s.Size%SectorSize != 0 {
			return 0, fmt.Errorf("luks2: segment size %d is not a multiple of %d", s.Size, SectorSize)
		}
		return s.Size / SectorSize, nil
	}
	if deviceSize <= s.Offset {
		return 0, fmt.Errorf("luks2: the device (%d bytes) ends before the data segment starts (offset %d): no room for data", deviceSize, s.Offset)
	}
	return (deviceSize - s.Offset) / SectorSize, nil
}

// hashFunc maps a LUKS hash name to its implementation.
func hashFunc(name string) (func() hash.Hash, error) {
	switch name {
	case "sha256":
		return sha256.New, nil
	case "sha512":
		return sha512.New, nil
	case "sha1":
		return sha1.New, nil
	}
	return nil, fmt.Errorf("luks2: hash %q: %w (supported: sha256, sha512, sha1)", name, ErrUnsupported)
}
