package luks2

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// Parse reads and validates the LUKS2 header at the start of r. Both header
// copies are checked (magic, version, size, SHA-256 checksum); the valid one
// with the higher sequence number is used, and Parse fails when neither is
// valid. The JSON metadata is then decoded under strict limits and
// everything this package does not support is refused with an error
// naming it (wrapping ErrUnsupported).
//
// If r has a Size() int64 method (bytes.Reader, io.SectionReader) or is an
// io.Seeker (an *os.File, including a block device), its size is learned and
// the data segment is checked to lie inside it.
func Parse(r io.ReaderAt) (*Header, error) {
	devSize, err := readerSize(r)
	if err != nil {
		return nil, err
	}
	prim, perr := readCopy(r, 0, true, 0)
	var sec *rawCopy
	var serr error
	if perr == nil {
		sec, serr = readCopy(r, prim.hdrSize, false, prim.hdrSize)
	} else {
		// The primary's hdr_size cannot be trusted: look for the
		// secondary at every offset the specification allows.
		serr = errNoSecondary
		for _, off := range hdrSizes {
			c, err := readCopy(r, off, false, 0)
			if err == nil {
				sec, serr = c, nil
				break
			}
			if !errors.Is(err, errNoMagic) && !errors.Is(err, errRead) && serr == errNoSecondary {
				serr = err
			}
		}
	}
	var use *rawCopy
	switch {
	case perr == nil && serr == nil:
		use = prim
		if sec.seqID > prim.seqID {
			use = sec
		}
	case perr == nil:
		use = prim
	case serr == nil:
		use = sec
	default:
		return nil, fmt.Errorf("luks2: no valid LUKS2 header: primary: %w; secondary: %w", perr, serr)
	}
	h, err := parseJSON(use.json, use.hdrSize, devSize)
	if err != nil {
		return nil, err
	}
	h.SeqID, h.UUID, h.Label, h.Primary = use.seqID, use.uuid, use.label, use == prim
	return h, nil
}

// readerSize returns the size of r in bytes, or 0 if r does not say.
func readerSize(r io.ReaderAt) (uint64, error) {
	switch v := r.(type) {
	case interface{ Size() int64 }:
		if s := v.Size(); s > 0 {
			return uint64(s), nil
		}
	case io.Seeker:
		cur, err := v.Seek(0, io.SeekCurrent)
		if err != nil {
			return 0, fmt.Errorf("luks2: finding the device size: %w", err)
		}
		end, err := v.Seek(0, io.SeekEnd)
		if err != nil {
			return 0, fmt.Errorf("luks2: finding the device size: %w", err)
		}
		if _, err := v.Seek(cur, io.SeekStart); err != nil {
			return 0, fmt.Errorf("luks2: finding the device size: %w", err)
		}
		if end > 0 {
			return uint64(end), nil
		}
	}
	return 0, nil
}

type rawCopy struct {
	hdrSize, seqID uint64
	uuid, label    string
	json           []byte
}

var (
	errNoMagic     = errors.New("no LUKS2 magic")
	errRead        = errors.New("cannot read")
	errNoSecondary = errors.New("no secondary header at any allowed offset")
)

// readCopy reads and checks one header copy at off. wantSize, if not 0, is
// the hdr_size the copy must have.
func readCopy(r io.ReaderAt, off uint64, primary bool, wantSize uint64) (*rawCopy, error) {
	which := "secondary"
	magic := magicSecondary
	if primary {
		which, magic = "primary", magicPrimary
	}
	bin := make([]byte, binHeaderSize)
	if _, err := r.ReadAt(bin, int64(off)); err != nil {
		return nil, fmt.Errorf("%s header at offset %d: %w: %w", which, off, errRead, err)
	}
	if !bytes.Equal(bin[:magicLen], magic) {
		return nil, fmt.Errorf("%s header at offset %d: %w", which, off, errNoMagic)
	}
	if v := binary.BigEndian.Uint16(bin[offVersion:]); v == 1 {
		return nil, fmt.Errorf("%s header at offset %d: this is LUKS version 1: %w (only LUKS2)", which, off, ErrUnsupported)
	} else if v != 2 {
		return nil, fmt.Errorf("%s header at offset %d: version %d: %w (only version 2)", which, off, v, ErrUnsupported)
	}
	hdrSize := binary.BigEndian.Uint64(bin[offHdrSize:])
	if !slices.Contains(hdrSizes, hdrSize) {
		return nil, fmt.Errorf("%s header at offset %d: hdr_size %d is not one the specification allows (16 KiB..4 MiB, powers of two)", which, off, hdrSize)
	}
	if wantSize != 0 && hdrSize != wantSize {
		return nil, fmt.Errorf("%s header at offset %d: hdr_size %d differs from the primary's %d", which, off, hdrSize, wantSize)
	}
	if !primary && hdrSize != off {
		return nil, fmt.Errorf("%s header at offset %d: hdr_size %d does not match its position", which, off, hdrSize)
	}
	if got := binary.BigEndian.Uint64(bin[offHdrOffset:]); got != off {
		return nil, fmt.Errorf("%s header at offset %d: hdr_offset field says %d", which, off, got)
	}
	if alg := cstring(bin[offCsumAlg : offCsumAlg+csumAlgLen]); alg != "sha256" {
		return nil, fmt.Errorf("%s header at offset %d: checksum algorithm %q: %w (only sha256)", which, off, alg, ErrUnsupported)
	}
	full := make([]byte, hdrSize)
	copy(full, bin)
	if _, err := r.ReadAt(full[binHeaderSize:], int64(off)+binHeaderSize); err != nil {
		return nil, fmt.Errorf("%s header at offset %d: reading the %d-byte JSON area: %w", which, off, hdrSize-binHeaderSize, err)
	}
	var want [csumLen]byte
	copy(want[:], full[offCsum:offCsum+csumLen])
	clear(full[offCsum : offCsum+csumLen])
	sum := sha256.Sum256(full)
	if subtle.ConstantTimeCompare(sum[:], want[:sha256.Size]) != 1 || !allZero(want[sha256.Size:]) {
		return nil, fmt.Errorf("%s header at offset %d: checksum mismatch (the header is damaged or was modified)", which, off)
	}
	js := full[binHeaderSize:]
	if i := bytes.IndexByte(js, 0); i >= 0 {
		if !allZero(js[i:]) {
			return nil, fmt.Errorf("%s header at offset %d: bytes after the end of the JSON text", which, off)
		}
		js = js[:i]
	}
	return &rawCopy{
		hdrSize: hdrSize,
		seqID:   binary.BigEndian.Uint64(bin[offSeqID:]),
		uuid:    cstring(bin[offUUID : offUUID+uuidLen]),
		label:   cstring(bin[offLabel : offLabel+labelLen]),
		json:    js,
	}, nil
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// The JSON metadata, as far as this package reads it. Sizes and offsets are
// decimal strings (uint64), counts are numbers.
type jsonMeta struct {
	Keyslots map[string]json.RawMessage `json:"keyslots"`
	Tokens   map[string]json.RawMessage `json:"tokens"`
	Segments map[string]json.RawMessage `json:"segments"`
	Digests  map[string]json.RawMessage `json:"digests"`
	Config   *jsonConfig                `json:"config"`
}

type jsonConfig struct {
	JSONSize     string   `json:"json_size"`
	KeyslotsSize string   `json:"keyslots_size"`
	Flags        []string `json:"flags,omitempty"`
	Requirements *struct {
		Mandatory []string `json:"mandatory"`
	} `json:"requirements,omitempty"`
}

type jsonSegment struct {
	Type       string          `json:"type"`
	Offset     string          `json:"offset"`
	Size       string          `json:"size"`
	IVTweak    string          `json:"iv_tweak"`
	Encryption string          `json:"encryption"`
	SectorSize uint32          `json:"sector_size"`
	Flags      []string        `json:"flags,omitempty"`
	Integrity  json.RawMessage `json:"integrity,omitempty"`
}

type jsonDigest struct {
	Type       string   `json:"type"`
	Keyslots   []string `json:"keyslots"`
	Segments   []string `json:"segments"`
	Hash       string   `json:"hash"`
	Iterations int      `json:"iterations"`
	Salt       string   `json:"salt"`
	Digest     string   `json:"digest"`
}

type jsonKeyslot struct {
	Type     string `json:"type"`
	KeySize  int    `json:"key_size"`
	Priority *int   `json:"priority,omitempty"`
	AF       struct {
		Type    string `json:"type"`
		Stripes int    `json:"stripes"`
		Hash    string `json:"hash"`
	} `json:"af"`
	Area struct {
		Type       string `json:"type"`
		Offset     string `json:"offset"`
		Size       string `json:"size"`
		Encryption string `json:"encryption"`
		KeySize    int    `json:"key_size"`
	} `json:"area"`
	KDF struct {
		Type       string `json:"type"`
		Hash       string `json:"hash,omitempty"`
		Iterations int    `json:"iterations,omitempty"`
		Time       int    `json:"time,omitempty"`
		Memory     int    `json:"memory,omitempty"`
		CPUs       int    `json:"cpus,omitempty"`
		Salt       string `json:"salt"`
	} `json:"kdf"`
}

// strictUnmarshal decodes one JSON value, refusing unknown fields and
// trailing data.
func strictUnmarshal(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data after the JSON object")
	}
	if _, err := d.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// parseU64 parses a LUKS2 "string uint64": decimal digits only, at most
// maxOffset.
func parseU64(field, s string) (uint64, error) {
	if s == "" || len(s) > 20 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("%s %q is not a decimal unsigned number", field, s)
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v > maxOffset {
		return 0, fmt.Errorf("%s %q is out of range (at most %d)", field, s, uint64(maxOffset))
	}
	return v, nil
}

// parseID parses an object key naming a keyslot, segment, digest or token.
func parseID(kind, s string, max int) (int, error) {
	if s == "" || len(s) > 3 || strings.TrimLeft(s, "0123456789") != "" || (len(s) > 1 && s[0] == '0') {
		return 0, fmt.Errorf("luks2: %s id %q is not a small decimal number", kind, s)
	}
	v, _ := strconv.Atoi(s)
	if v >= max {
		return 0, fmt.Errorf("luks2: %s id %d is out of range (at most %d)", kind, v, max-1)
	}
	return v, nil
}

func decodeB64(field, s string, min, max int) ([]byte, error) {
	if len(s) > 4*max {
		return nil, fmt.Errorf("%s is too long", field)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%s is not base64: %w", field, err)
	}
	if len(b) < min || len(b) > max {
		return nil, fmt.Errorf("%s is %d bytes, want %d..%d", field, len(b), min, max)
	}
	return b, nil
}

func parseJSON(js []byte, hdrSize, devSize uint64) (*Header, error) {
	var m jsonMeta
	if err := strictUnmarshal(js, &m); err != nil {
		return nil, fmt.Errorf("luks2: JSON metadata: %w", err)
	}
	if m.Keyslots == nil || m.Segments == nil || m.Digests == nil || m.Tokens == nil || m.Config == nil {
		return nil, errors.New("luks2: JSON metadata: keyslots, tokens, segments, digests and config are all required")
	}
	h := &Header{HdrSize: hdrSize, DeviceSize: devSize}

	// config
	jsonSize, err := parseU64("config.json_size", m.Config.JSONSize)
	if err != nil {
		return nil, fmt.Errorf("luks2: %w", err)
	}
	if jsonSize != hdrSize-binHeaderSize {
		return nil, fmt.Errorf("luks2: config.json_size %d does not match hdr_size %d minus the 4096-byte binary header", jsonSize, hdrSize)
	}
	if h.KeyslotsSize, err = parseU64("config.keyslots_size", m.Config.KeyslotsSize); err != nil {
		return nil, fmt.Errorf("luks2: %w", err)
	}
	if h.KeyslotsSize%4096 != 0 {
		return nil, fmt.Errorf("luks2: config.keyslots_size %d is not a multiple of 4096", h.KeyslotsSize)
	}
	if r := m.Config.Requirements; r != nil && len(r.Mandatory) > 0 {
		return nil, fmt.Errorf("luks2: mandatory requirements %q (for example an interrupted reencryption): %w", r.Mandatory, ErrUnsupported)
	}
	if len(m.Config.Flags) > 16 {
		return nil, errors.New("luks2: too many config.flags")
	}
	metaEnd := 2*hdrSize + h.KeyslotsSize // end of headers + keyslot areas

	if len(m.Tokens) > maxTokens {
		return nil, fmt.Errorf("luks2: %d tokens, at most %d", len(m.Tokens), maxTokens)
	}

	// segments
	if len(m.Segments) == 0 {
		return nil, errors.New("luks2: no segments")
	}
	if len(m.Segments) > maxSegments {
		return nil, fmt.Errorf("luks2: %d segments: %w (exactly one crypt segment; several segments mean a reencryption in progress)", len(m.Segments), ErrUnsupported)
	}
	var segID string
	for id, raw := range m.Segments {
		if _, err := parseID("segment", id, 1); err != nil {
			return nil, err
		}
		segID = id
		var s jsonSegment
		if err := strictUnmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("luks2: segment %s: %w", id, err)
		}
		if s.Type != "crypt" {
			return nil, fmt.Errorf("luks2: segment %s has type %q: %w (only crypt)", id, s.Type, ErrUnsupported)
		}
		if len(s.Integrity) > 0 {
			return nil, fmt.Errorf("luks2: segment %s uses integrity protection (dm-integrity): %w", id, ErrUnsupported)
		}
		if len(s.Flags) > 0 {
			return nil, fmt.Errorf("luks2: segment %s has flags %q: %w", id, s.Flags, ErrUnsupported)
		}
		if s.Encryption != Cipher {
			return nil, fmt.Errorf("luks2: segment %s encryption %q: %w (only %s)", id, s.Encryption, ErrUnsupported, Cipher)
		}
		if s.SectorSize != SectorSize {
			return nil, fmt.Errorf("luks2: segment %s sector_size %d: %w (only %d)", id, s.SectorSize, ErrUnsupported, SectorSize)
		}
		seg := Segment{Encryption: s.Encryption, SectorSize: s.SectorSize}
		if seg.Offset, err = parseU64("segment offset", s.Offset); err != nil {
			return nil, fmt.Errorf("luks2: segment %s: %w", id, err)
		}
		if seg.IVTweak, err = parseU64("segment iv_tweak", s.IVTweak); err != nil {
			return nil, fmt.Errorf("luks2: segment %s: %w", id, err)
		}
		if seg.IVTweak != 0 {
			return nil, fmt.Errorf("luks2: segment %s iv_tweak %d: %w (only 0)", id, seg.IVTweak, ErrUnsupported)
		}
		if s.Size == "dynamic" {
			seg.Dynamic = true
		} else if seg.Size, err = parseU64("segment size", s.Size); err != nil {
			return nil, fmt.Errorf("luks2: segment %s: %w", id, err)
		} else if seg.Size == 0 || seg.Size%SectorSize != 0 {
			return nil, fmt.Errorf("luks2: segment %s size %d is not a positive multiple of %d", id, seg.Size, SectorSize)
		}
		if seg.Offset%SectorSize != 0 {
			return nil, fmt.Errorf("luks2: segment %s offset %d is not a multiple of %d", id, seg.Offset, SectorSize)
		}
		if seg.Offset < metaEnd {
			return nil, fmt.Errorf("luks2: segment %s offset %d overlaps the headers and keyslot areas (which end at %d)", id, seg.Offset, metaEnd)
		}
		if devSize != 0 {
			if seg.Offset >= devSize {
				return nil, fmt.Errorf("luks2: segment %s starts at %d, at or beyond the end of the device (%d bytes)", id, seg.Offset, devSize)
			}
			if !seg.Dynamic && seg.Offset+seg.Size > devSize {
				return nil, fmt.Errorf("luks2: segment %s ends at %d, beyond the end of the device (%d bytes)", id, seg.Offset+seg.Size, devSize)
			}
		}
		h.Segment = seg
	}

	// keyslots
	if len(m.Keyslots) > maxKeyslots {
		return nil, fmt.Errorf("luks2: %d keyslots, at most %d", len(m.Keyslots), maxKeyslots)
	}
	for id, raw := range m.Keyslots {
		n, err := parseID("keyslot", id, maxKeyslots)
		if err != nil {
			return nil, err
		}
		ks, err := parseKeyslot(n, raw, 2*hdrSize, metaEnd)
		if err != nil {
			return nil, err
		}
		h.Keyslots = append(h.Keyslots, ks)
	}
	slices.SortFunc(h.Keyslots, func(a, b Keyslot) int { return a.ID - b.ID })
	for i := 1; i < len(h.Keyslots); i++ {
		a, b := h.Keyslots[i-1].Area, h.Keyslots[i].Area
		if a.Offset < b.Offset+b.Size && b.Offset < a.Offset+a.Size {
			return nil, fmt.Errorf("luks2: keyslots %d and %d have overlapping areas", h.Keyslots[i-1].ID, h.Keyslots[i].ID)
		}
	}

	// digests: the one bound to the segment
	if len(m.Digests) > maxDigests {
		return nil, fmt.Errorf("luks2: %d digests, at most %d", len(m.Digests), maxDigests)
	}
	found := false
	for id, raw := range m.Digests {
		if _, err := parseID("digest", id, maxDigests); err != nil {
			return nil, err
		}
		var d jsonDigest
		if err := strictUnmarshal(raw, &d); err != nil {
			return nil, fmt.Errorf("luks2: digest %s: %w", id, err)
		}
		if len(d.Keyslots) > maxKeyslots || len(d.Segments) > maxSegments+1 {
			return nil, fmt.Errorf("luks2: digest %s lists too many keyslots or segments", id)
		}
		if !slices.Contains(d.Segments, segID) {
			continue
		}
		if found {
			return nil, fmt.Errorf("luks2: segment %s has more than one digest", segID)
		}
		found = true
		if d.Type != "pbkdf2" {
			return nil, fmt.Errorf("luks2: digest %s has type %q: %w (only pbkdf2)", id, d.Type, ErrUnsupported)
		}
		if _, err := hashFunc(d.Hash); err != nil {
			return nil, fmt.Errorf("luks2: digest %s: %w", id, err)
		}
		if d.Iterations < 1 || d.Iterations > maxIterations {
			return nil, fmt.Errorf("luks2: digest %s iterations %d out of range 1..%d", id, d.Iterations, maxIterations)
		}
		dg := Digest{Hash: d.Hash, Iterations: d.Iterations}
		if dg.Salt, err = decodeB64("salt", d.Salt, 32, 32); err != nil {
			return nil, fmt.Errorf("luks2: digest %s: %w", id, err)
		}
		if dg.Value, err = decodeB64("digest", d.Digest, 20, 64); err != nil {
			return nil, fmt.Errorf("luks2: digest %s: %w", id, err)
		}
		for _, k := range d.Keyslots {
			n, err := parseID("keyslot", k, maxKeyslots)
			if err != nil {
				return nil, fmt.Errorf("luks2: digest %s: %w", id, err)
			}
			if !slices.ContainsFunc(h.Keyslots, func(ks Keyslot) bool { return ks.ID == n }) {
				return nil, fmt.Errorf("luks2: digest %s names keyslot %d, which does not exist", id, n)
			}
			dg.Keyslots = append(dg.Keyslots, n)
		}
		h.Digest = dg
	}
	if !found {
		return nil, fmt.Errorf("luks2: no digest for segment %s", segID)
	}
	return h, nil
}

func parseKeyslot(id int, raw []byte, areaMin, areaMax uint64) (Keyslot, error) {
	var k jsonKeyslot
	var peek struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(raw, &peek); err != nil {
		return Keyslot{}, fmt.Errorf("luks2: keyslot %d: %w", id, err)
	}
	if peek.Type != "luks2" {
		return Keyslot{}, fmt.Errorf("luks2: keyslot %d has type %q: %w (only luks2)", id, peek.Type, ErrUnsupported)
	}
	if err := strictUnmarshal(raw, &k); err != nil {
		return Keyslot{}, fmt.Errorf("luks2: keyslot %d: %w", id, err)
	}
	fail := func(format string, a ...any) (Keyslot, error) {
		return Keyslot{}, fmt.Errorf("luks2: keyslot %d: "+format, append([]any{id}, a...)...)
	}
	if k.KeySize < 1 || k.KeySize > maxKeySize {
		return fail("key_size %d out of range 1..%d", k.KeySize, maxKeySize)
	}
	ks := Keyslot{ID: id, KeySize: k.KeySize}
	if k.AF.Type != "luks1" {
		return fail("anti-forensic splitter %q: %w (only luks1)", k.AF.Type, ErrUnsupported)
	}
	if k.AF.Stripes < 1 || k.AF.Stripes > 4000 {
		return fail("af.stripes %d out of range 1..4000", k.AF.Stripes)
	}
	if _, err := hashFunc(k.AF.Hash); err != nil {
		return fail("af: %w", err)
	}
	ks.AF = AF{Type: k.AF.Type, Stripes: k.AF.Stripes, Hash: k.AF.Hash}
	if k.Area.Type != "raw" {
		return fail("area type %q: %w (only raw)", k.Area.Type, ErrUnsupported)
	}
	if len(k.Area.Encryption) > 64 {
		return fail("area encryption name too long")
	}
	if k.Area.KeySize < 1 || k.Area.KeySize > maxKeySize {
		return fail("area key_size %d out of range 1..%d", k.Area.KeySize, maxKeySize)
	}
	var err error
	ks.Area = Area{Encryption: k.Area.Encryption, KeySize: k.Area.KeySize}
	if ks.Area.Offset, err = parseU64("area offset", k.Area.Offset); err != nil {
		return fail("%w", err)
	}
	if ks.Area.Size, err = parseU64("area size", k.Area.Size); err != nil {
		return fail("%w", err)
	}
	if ks.Area.Offset < areaMin || ks.Area.Offset+ks.Area.Size > areaMax {
		return fail("area [%d, %d) is outside the keyslots area [%d, %d)", ks.Area.Offset, ks.Area.Offset+ks.Area.Size, areaMin, areaMax)
	}
	if ks.Area.Size < uint64(k.KeySize)*uint64(k.AF.Stripes) {
		return fail("area size %d is smaller than key_size × stripes (%d)", ks.Area.Size, k.KeySize*k.AF.Stripes)
	}
	ks.KDF = KDF{Type: k.KDF.Type, Hash: k.KDF.Hash, Iterations: k.KDF.Iterations, Time: k.KDF.Time, Memory: k.KDF.Memory, CPUs: k.KDF.CPUs}
	switch k.KDF.Type {
	case "pbkdf2":
		if _, err := hashFunc(k.KDF.Hash); err != nil {
			return fail("kdf: %w", err)
		}
		if k.KDF.Iterations < 1 || k.KDF.Iterations > maxIterations {
			return fail("kdf iterations %d out of range 1..%d", k.KDF.Iterations, maxIterations)
		}
	case "argon2i", "argon2id":
		if k.KDF.Time < 1 || k.KDF.Memory < 1 || k.KDF.CPUs < 1 {
			return fail("argon2 kdf needs positive time, memory and cpus")
		}
	default:
		return fail("kdf type %q: %w (pbkdf2, argon2i, argon2id)", k.KDF.Type, ErrUnsupported)
	}
	if ks.KDF.Salt, err = decodeB64("kdf salt", k.KDF.Salt, 1, 64); err != nil {
		return fail("%w", err)
	}
	return ks, nil
}
