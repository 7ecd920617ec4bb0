package luks2

import (
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
)

// The layout Format writes (the same as cryptsetup luksFormat's defaults for
// a 512-bit key): two 16 KiB header copies, keyslot 0's area right after
// them, the data from 16 MiB on.
const (
	formatHdrSize    = 16 << 10
	DataOffset       = 16 << 20 // where Format puts the data segment, in bytes
	formatAreaOffset = 2 * formatHdrSize
	formatKeySize    = 64
	formatStripes    = 4000
	// formatAreaSize is key size × stripes rounded up to 4 KiB.
	formatAreaSize = (formatKeySize*formatStripes + 4095) / 4096 * 4096

	// DefaultKeyslotIterations and DefaultDigestIterations are the pbkdf2
	// iteration counts Format uses unless told otherwise. The passphrase
	// is itself a random 64-byte key, so brute force is moot and there is
	// no need for a slow KDF; these only keep the guest's unlock fast.
	DefaultKeyslotIterations = 100_000
	DefaultDigestIterations  = 100_000
)

// FormatOptions tunes Format. The zero value is valid.
type FormatOptions struct {
	// Rand is the source of salts, the UUID and the anti-forensic stripes;
	// nil means crypto/rand.Reader.
	Rand io.Reader
	// KeyslotIterations and DigestIterations override the pbkdf2 iteration
	// counts (0 = the defaults). cryptsetup refuses fewer than 1000.
	KeyslotIterations, DigestIterations int
}

// Format writes a LUKS2 header for volumeKey (64 bytes, aes-xts-plain64
// with a 512-bit key) to w: both header copies, and keyslot 0, whose
// passphrase is the volume key bytes themselves, so that
// `cryptsetup open --key-file KEY` works with the raw key file. The data
// segment starts at DataOffset and is "dynamic" (it runs to the end of the
// device); fill it with Encrypt. Format writes only the headers and the
// keyslot's key material: w should be a new, empty file (whatever else is
// in the first 16 MiB stays).
func Format(w io.WriterAt, volumeKey []byte, opts FormatOptions) (*Header, error) {
	if len(volumeKey) != formatKeySize {
		return nil, fmt.Errorf("luks2: format: the volume key is %d bytes, want %d (aes-xts-plain64, 512-bit key)", len(volumeKey), formatKeySize)
	}
	rnd := opts.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	kIter, dIter := opts.KeyslotIterations, opts.DigestIterations
	if kIter == 0 {
		kIter = DefaultKeyslotIterations
	}
	if dIter == 0 {
		dIter = DefaultDigestIterations
	}
	if kIter < 1 || kIter > maxIterations || dIter < 1 || dIter > maxIterations {
		return nil, fmt.Errorf("luks2: format: iteration counts %d, %d out of range 1..%d", kIter, dIter, maxIterations)
	}

	// Random material: two header salts, the UUID, two pbkdf2 salts.
	var rb [64 + 64 + 16 + 32 + 32]byte
	if _, err := io.ReadFull(rnd, rb[:]); err != nil {
		return nil, fmt.Errorf("luks2: format: reading random bytes: %w", err)
	}
	salt1, salt2, uuidRaw, kdfSalt, digestSalt := rb[0:64], rb[64:128], rb[128:144], rb[144:176], rb[176:208]
	uuidRaw[6] = uuidRaw[6]&0x0f | 0x40 // version 4
	uuidRaw[8] = uuidRaw[8]&0x3f | 0x80 // RFC 4122 variant
	uuid := fmt.Sprintf("%x-%x-%x-%x-%x", uuidRaw[0:4], uuidRaw[4:6], uuidRaw[6:8], uuidRaw[8:10], uuidRaw[10:16])

	digest, err := pbkdf2.Key(sha256.New, string(volumeKey), digestSalt, dIter, sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("luks2: format: %w", err)
	}

	// Keyslot 0: AF-split the volume key, encrypt the stripes with a key
	// derived from the passphrase (= the volume key).
	material, err := afSplit(volumeKey, formatStripes, sha256.New, rnd)
	if err != nil {
		return nil, err
	}
	defer clear(material)
	areaKey, err := pbkdf2.Key(sha256.New, string(volumeKey), kdfSalt, kIter, formatKeySize)
	if err != nil {
		return nil, fmt.Errorf("luks2: format: %w", err)
	}
	defer clear(areaKey)
	c, err := newXTS(areaKey)
	if err != nil {
		return nil, err
	}
	xtsSectors(c, material, 0, false) // 256000 bytes: exactly 500 sectors

	b64 := base64.StdEncoding.EncodeToString
	var ks jsonKeyslot
	ks.Type = "luks2"
	ks.KeySize = formatKeySize
	ks.AF.Type, ks.AF.Stripes, ks.AF.Hash = "luks1", formatStripes, "sha256"
	ks.Area.Type = "raw"
	ks.Area.Offset = strconv.Itoa(formatAreaOffset)
	ks.Area.Size = strconv.Itoa(formatAreaSize)
	ks.Area.Encryption, ks.Area.KeySize = Cipher, formatKeySize
	ks.KDF.Type, ks.KDF.Hash, ks.KDF.Iterations, ks.KDF.Salt = "pbkdf2", "sha256", kIter, b64(kdfSalt)
	meta := struct {
		Keyslots map[string]jsonKeyslot `json:"keyslots"`
		Tokens   map[string]any         `json:"tokens"`
		Segments map[string]jsonSegment `json:"segments"`
		Digests  map[string]jsonDigest  `json:"digests"`
		Config   jsonConfig             `json:"config"`
	}{
		Keyslots: map[string]jsonKeyslot{"0": ks},
		Tokens:   map[string]any{},
		Segments: map[string]jsonSegment{"0": {
			Type: "crypt", Offset: strconv.Itoa(DataOffset), Size: "dynamic", IVTweak: "0",
			Encryption: Cipher, SectorSize: SectorSize,
		}},
		Digests: map[string]jsonDigest{"0": {
			Type: "pbkdf2", Keyslots: []string{"0"}, Segments: []string{"0"}, Hash: "sha256",
			Iterations: dIter, Salt: b64(digestSalt), Digest: b64(digest),
		}},
		Config: jsonConfig{
			JSONSize:     strconv.Itoa(formatHdrSize - binHeaderSize),
			KeyslotsSize: strconv.Itoa(DataOffset - 2*formatHdrSize),
		},
	}
	js, err := json.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("luks2: format: %w", err)
	}
	if len(js) >= formatHdrSize-binHeaderSize {
		return nil, fmt.Errorf("luks2: format: JSON metadata is %d bytes, too large for the %d-byte area", len(js), formatHdrSize-binHeaderSize)
	}
	h, err := parseJSON(js, formatHdrSize, 0)
	if err != nil {
		return nil, fmt.Errorf("luks2: format: the header we built does not parse (a bug): %w", err)
	}
	h.SeqID, h.UUID, h.Primary = 1, uuid, true

	if _, err := w.WriteAt(material, formatAreaOffset); err != nil {
		return nil, fmt.Errorf("luks2: format: writing keyslot 0: %w", err)
	}
	for i, salt := range [][]byte{salt1, salt2} {
		off := uint64(i) * formatHdrSize
		buf := make([]byte, formatHdrSize)
		if i == 0 {
			copy(buf, magicPrimary)
		} else {
			copy(buf, magicSecondary)
		}
		binary.BigEndian.PutUint16(buf[offVersion:], 2)
		binary.BigEndian.PutUint64(buf[offHdrSize:], formatHdrSize)
		binary.BigEndian.PutUint64(buf[offSeqID:], h.SeqID)
		copy(buf[offCsumAlg:], "sha256")
		copy(buf[offSalt:offSalt+saltLen], salt)
		copy(buf[offUUID:offUUID+uuidLen], uuid)
		binary.BigEndian.PutUint64(buf[offHdrOffset:], off)
		copy(buf[binHeaderSize:], js)
		sum := sha256.Sum256(buf)
		copy(buf[offCsum:], sum[:])
		if _, err := w.WriteAt(buf, int64(off)); err != nil {
			return nil, fmt.Errorf("luks2: format: writing header copy %d: %w", i+1, err)
		}
	}
	return h, nil
}
