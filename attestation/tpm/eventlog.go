package tpm

import (
	"bytes"
	"crypto"
	"encoding/binary"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/greatjail/cvm/attestation"
)

// Event log limits. A log is untrusted input: the parser refuses anything
// larger than these before allocating for it.
const (
	// maxEventLogSize bounds the whole log.
	maxEventLogSize = attestation.MaxEvidenceSize
	// maxEvents bounds the number of events in a log. Real firmware logs
	// have tens to a few hundred.
	maxEvents = 10000
	// maxEventDataSize bounds one event's data. The largest real events
	// are UEFI variables such as dbx (tens of KiB).
	maxEventDataSize = 128 << 10
	// maxLogAlgorithms bounds the digest algorithms a log may declare.
	maxLogAlgorithms = 8
	// numPCRs is the number of PCRs of a PC Client TPM (0-23).
	numPCRs = 24
)

// TCG PC Client Platform Firmware Profile event type that replay treats
// specially (PFP spec section 10.4.1).
const (
	// EventNoAction (EV_NO_ACTION) events are informational and are never
	// extended into a PCR.
	EventNoAction uint32 = 0x00000003
)

var (
	// specIDSignature starts the TCG_EfiSpecIDEvent of a crypto-agile log.
	specIDSignature = []byte("Spec ID Event03\x00")
	// startupLocalitySignature starts the EV_NO_ACTION StartupLocality
	// event (TCG_EfiStartupLocalityEvent).
	startupLocalitySignature = []byte("StartupLocality\x00")
)

// Digest is one digest of an event in one PCR bank.
type Digest struct {
	Alg   tpm2.TPMAlgID
	Value []byte
}

// Event is one event of a TCG PC Client event log.
type Event struct {
	// Index is the PCR index the event was measured into.
	Index int
	// Type is the event type (EV_*), see EventTypeName.
	Type uint32
	// Digests are the event's digests, one per algorithm the log declares,
	// in log order. The first event (the Spec ID event) has one zero SHA-1
	// digest, as the SHA-1 log format requires.
	Digests []Digest
	// Data is the event data. It is measured (or not) according to Type;
	// replay never reads it except for EV_NO_ACTION events.
	Data []byte
}

// Digest returns the event's digest in bank alg, or nil if it has none.
func (e Event) Digest(alg tpm2.TPMAlgID) []byte {
	for _, d := range e.Digests {
		if d.Alg == alg {
			return d.Value
		}
	}
	return nil
}

// eventLogError is a malformed-log error naming the event and its offset.
func eventLogError(sentinel error, n, off int, format string, args ...any) error {
	return attestation.Errorf(attestation.TEETPM, "event log", sentinel, "event %d at offset %#x: %s", n, off, fmt.Sprintf(format, args...))
}

// logReader reads little-endian fields from an event log, tracking the
// offset for error messages. Every read is bounds-checked.
type logReader struct {
	b   []byte
	off int
}

func (r *logReader) remaining() int { return len(r.b) - r.off }

func (r *logReader) bytes(n int) ([]byte, bool) {
	if n < 0 || n > r.remaining() {
		return nil, false
	}
	b := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return b, true
}

func (r *logReader) u8() (uint8, bool) {
	b, ok := r.bytes(1)
	if !ok {
		return 0, false
	}
	return b[0], true
}

func (r *logReader) u16() (uint16, bool) {
	b, ok := r.bytes(2)
	if !ok {
		return 0, false
	}
	return binary.LittleEndian.Uint16(b), true
}

func (r *logReader) u32() (uint32, bool) {
	b, ok := r.bytes(4)
	if !ok {
		return 0, false
	}
	return binary.LittleEndian.Uint32(b), true
}

// logAlgorithm is one entry of the Spec ID event's digest size table.
type logAlgorithm struct {
	alg  tpm2.TPMAlgID
	size int
}

// ParseEventLog parses a TCG PC Client Platform Firmware Profile event log
// in the crypto-agile format: a first event in the SHA-1 format carrying
// the "Spec ID Event03" structure, then TCG_PCR_EVENT2 events whose digest
// sizes are those the Spec ID event declares. Every event must carry
// exactly one digest for each declared algorithm, and the log must end
// exactly after its last event.
//
// The returned events do not alias b. Errors are *attestation.Error for
// check "event log", wrapping ErrMalformed or, when a limit is exceeded,
// ErrTooLarge.
func ParseEventLog(b []byte) ([]Event, error) {
	if err := attestation.CheckSize(attestation.TEETPM, "event log", b, maxEventLogSize); err != nil {
		return nil, err
	}
	r := &logReader{b: bytes.Clone(b)}
	first, algs, err := parseSpecIDEvent(r)
	if err != nil {
		return nil, err
	}
	events := []Event{first}
	for r.remaining() > 0 {
		if len(events) >= maxEvents {
			return nil, eventLogError(attestation.ErrTooLarge, len(events), r.off, "more than %d events", maxEvents)
		}
		ev, err := parseEvent2(r, len(events), algs)
		if err != nil {
			return nil, err
		}
		events = append(events, ev)
	}
	return events, nil
}

// parseSpecIDEvent parses the first event of a crypto-agile log
// (TCG_PCClientPCREvent carrying TCG_EfiSpecIDEvent) and returns it with
// the log's digest algorithms.
func parseSpecIDEvent(r *logReader) (Event, []logAlgorithm, error) {
	const n = 0
	truncated := func() (Event, []logAlgorithm, error) {
		return Event{}, nil, eventLogError(attestation.ErrMalformed, n, r.off, "truncated Spec ID event")
	}
	pcr, ok := r.u32()
	if !ok {
		return truncated()
	}
	typ, ok := r.u32()
	if !ok {
		return truncated()
	}
	digest, ok := r.bytes(crypto.SHA1.Size())
	if !ok {
		return truncated()
	}
	size, ok := r.u32()
	if !ok {
		return truncated()
	}
	if pcr != 0 || typ != EventNoAction {
		return Event{}, nil, eventLogError(attestation.ErrMalformed, n, 0, "first event is PCR %d type %#x, want the EV_NO_ACTION Spec ID event in PCR 0 (not a crypto-agile log)", pcr, typ)
	}
	if !allZero(digest) {
		return Event{}, nil, eventLogError(attestation.ErrMalformed, n, 0, "Spec ID event digest is not zero")
	}
	if int64(size) > int64(r.remaining()) {
		return truncated()
	}
	data, _ := r.bytes(int(size))
	algs, err := parseSpecID(data)
	if err != nil {
		return Event{}, nil, eventLogError(attestation.ErrMalformed, n, 0, "Spec ID event: %v", err)
	}
	ev := Event{
		Index:   0,
		Type:    typ,
		Digests: []Digest{{Alg: tpm2.TPMAlgSHA1, Value: digest}},
		Data:    data,
	}
	return ev, algs, nil
}

// parseSpecID parses TCG_EfiSpecIDEvent (PFP spec section 10.4.5.1).
func parseSpecID(data []byte) ([]logAlgorithm, error) {
	r := &logReader{b: data}
	sig, ok := r.bytes(len(specIDSignature))
	if !ok || !bytes.Equal(sig, specIDSignature) {
		return nil, fmt.Errorf("signature is not %q", specIDSignature)
	}
	// platformClass (4), specVersionMinor, specVersionMajor, specErrata,
	// uintnSize (1 each).
	hdr, ok := r.bytes(8)
	if !ok {
		return nil, fmt.Errorf("truncated header")
	}
	if major := hdr[5]; major != 2 {
		return nil, fmt.Errorf("spec version major %d, want 2", major)
	}
	if uintn := hdr[7]; uintn != 1 && uintn != 2 {
		return nil, fmt.Errorf("uintnSize %d, want 1 or 2", uintn)
	}
	count, ok := r.u32()
	if !ok {
		return nil, fmt.Errorf("truncated algorithm count")
	}
	if count == 0 || count > maxLogAlgorithms {
		return nil, fmt.Errorf("%d digest algorithms, want 1 to %d", count, maxLogAlgorithms)
	}
	algs := make([]logAlgorithm, 0, count)
	for range count {
		id, ok1 := r.u16()
		size, ok2 := r.u16()
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("truncated digest size table")
		}
		alg := tpm2.TPMAlgID(id)
		for _, a := range algs {
			if a.alg == alg {
				return nil, fmt.Errorf("algorithm %s declared twice", algName(alg))
			}
		}
		if size == 0 || size > 64 {
			return nil, fmt.Errorf("algorithm %s digest size %d, want 1 to 64", algName(alg), size)
		}
		if h, ok := hashes[alg]; ok && h.Size() != int(size) {
			return nil, fmt.Errorf("algorithm %s digest size %d, want %d", algName(alg), size, h.Size())
		}
		algs = append(algs, logAlgorithm{alg: alg, size: int(size)})
	}
	vendorSize, ok := r.u8()
	if !ok {
		return nil, fmt.Errorf("truncated vendor info size")
	}
	if _, ok := r.bytes(int(vendorSize)); !ok {
		return nil, fmt.Errorf("truncated vendor info")
	}
	if r.remaining() != 0 {
		return nil, fmt.Errorf("%d trailing bytes", r.remaining())
	}
	return algs, nil
}

// parseEvent2 parses one TCG_PCR_EVENT2.
func parseEvent2(r *logReader, n int, algs []logAlgorithm) (Event, error) {
	start := r.off
	truncated := func(what string) (Event, error) {
		return Event{}, eventLogError(attestation.ErrMalformed, n, start, "truncated %s", what)
	}
	pcr, ok := r.u32()
	if !ok {
		return truncated("pcr index")
	}
	if pcr >= numPCRs {
		return Event{}, eventLogError(attestation.ErrMalformed, n, start, "pcr index %d out of range (0 to %d)", pcr, numPCRs-1)
	}
	typ, ok := r.u32()
	if !ok {
		return truncated("event type")
	}
	count, ok := r.u32()
	if !ok {
		return truncated("digest count")
	}
	if int64(count) != int64(len(algs)) {
		return Event{}, eventLogError(attestation.ErrMalformed, n, start, "%d digests, the Spec ID event declares %d algorithms", count, len(algs))
	}
	digests := make([]Digest, 0, len(algs))
	for range len(algs) {
		id, ok := r.u16()
		if !ok {
			return truncated("digest algorithm")
		}
		alg := tpm2.TPMAlgID(id)
		size := -1
		for _, a := range algs {
			if a.alg == alg {
				size = a.size
			}
		}
		if size < 0 {
			return Event{}, eventLogError(attestation.ErrMalformed, n, start, "digest algorithm %s not declared by the Spec ID event", algName(alg))
		}
		for _, d := range digests {
			if d.Alg == alg {
				return Event{}, eventLogError(attestation.ErrMalformed, n, start, "two %s digests", algName(alg))
			}
		}
		v, ok := r.bytes(size)
		if !ok {
			return truncated(algName(alg) + " digest")
		}
		digests = append(digests, Digest{Alg: alg, Value: v})
	}
	size, ok := r.u32()
	if !ok {
		return truncated("event size")
	}
	if size > maxEventDataSize {
		return Event{}, eventLogError(attestation.ErrTooLarge, n, start, "event data of %d bytes, limit %d", size, maxEventDataSize)
	}
	data, ok := r.bytes(int(size))
	if !ok {
		return truncated("event data")
	}
	return Event{Index: int(pcr), Type: typ, Digests: digests, Data: data}, nil
}

// startupLocality returns the locality of an EV_NO_ACTION StartupLocality
// event, and whether e is one.
func startupLocality(e Event) (uint8, bool) {
	if e.Type != EventNoAction || len(e.Data) != len(startupLocalitySignature)+1 ||
		!bytes.HasPrefix(e.Data, startupLocalitySignature) {
		return 0, false
	}
	return e.Data[len(startupLocalitySignature)], true
}

// Replay computes the PCR values the events produce in bank alg: each PCR
// starts at zero and every event except EV_NO_ACTION extends its digest
// into its PCR. An EV_NO_ACTION StartupLocality event (PFP spec section
// 10.4.5.3) sets PCR 0's starting value to the locality (00...03 when the
// TPM was started from locality 3, 00...04 for an H-CRTM); it must come
// before any measurement into PCR 0.
//
// The result holds only the PCRs the log touches. Errors are
// *attestation.Error: ErrUnsupported ("event log replay") for a bank this
// package cannot hash, ErrMismatch ("event log replay") when an event has
// no digest in the bank, ErrMalformed ("event log") for an inconsistent
// event.
func Replay(events []Event, alg tpm2.TPMAlgID) (map[int][]byte, error) {
	h, ok := hashes[alg]
	if !ok {
		return nil, attestation.Errorf(attestation.TEETPM, "event log replay", attestation.ErrUnsupported, "cannot replay bank %s", algName(alg))
	}
	pcrs := make(map[int][]byte)
	localitySet := false
	hh := h.New()
	for n, e := range events {
		if e.Index < 0 || e.Index >= numPCRs {
			return nil, attestation.Errorf(attestation.TEETPM, "event log", attestation.ErrMalformed, "event %d: pcr index %d out of range (0 to %d)", n, e.Index, numPCRs-1)
		}
		if e.Type == EventNoAction {
			loc, ok := startupLocality(e)
			if !ok {
				continue
			}
			if e.Index != 0 {
				return nil, attestation.Errorf(attestation.TEETPM, "event log", attestation.ErrMalformed, "event %d: StartupLocality event in PCR %d, want PCR 0", n, e.Index)
			}
			if localitySet || pcrs[0] != nil {
				return nil, attestation.Errorf(attestation.TEETPM, "event log", attestation.ErrMalformed, "event %d: StartupLocality event after PCR 0 was measured or set", n)
			}
			if loc != 0 && loc != 3 && loc != 4 {
				return nil, attestation.Errorf(attestation.TEETPM, "event log", attestation.ErrMalformed, "event %d: StartupLocality %d, want 0, 3 or 4", n, loc)
			}
			v := make([]byte, h.Size())
			v[len(v)-1] = loc
			pcrs[0] = v
			localitySet = true
			continue
		}
		d := e.Digest(alg)
		if d == nil {
			return nil, attestation.Errorf(attestation.TEETPM, "event log replay", attestation.ErrMismatch, "event %d (PCR %d) has no %s digest", n, e.Index, algName(alg))
		}
		if len(d) != h.Size() {
			return nil, attestation.Errorf(attestation.TEETPM, "event log", attestation.ErrMalformed, "event %d: %s digest of %d bytes, want %d", n, algName(alg), len(d), h.Size())
		}
		cur := pcrs[e.Index]
		if cur == nil {
			cur = make([]byte, h.Size())
		}
		hh.Reset()
		hh.Write(cur)
		hh.Write(d)
		pcrs[e.Index] = hh.Sum(cur[:0])
	}
	return pcrs, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// EventTypeName returns the PFP spec name of an event type, such as
// "EV_SEPARATOR", or its hexadecimal value if the type is unknown.
func EventTypeName(t uint32) string {
	if s, ok := eventTypeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("%#08x", t)
}

// eventTypeNames are the event types of PFP spec section 10.4.1.
var eventTypeNames = map[uint32]string{
	0x00000000: "EV_PREBOOT_CERT",
	0x00000001: "EV_POST_CODE",
	0x00000002: "EV_UNUSED",
	0x00000003: "EV_NO_ACTION",
	0x00000004: "EV_SEPARATOR",
	0x00000005: "EV_ACTION",
	0x00000006: "EV_EVENT_TAG",
	0x00000007: "EV_S_CRTM_CONTENTS",
	0x00000008: "EV_S_CRTM_VERSION",
	0x00000009: "EV_CPU_MICROCODE",
	0x0000000A: "EV_PLATFORM_CONFIG_FLAGS",
	0x0000000B: "EV_TABLE_OF_DEVICES",
	0x0000000C: "EV_COMPACT_HASH",
	0x0000000D: "EV_IPL",
	0x0000000E: "EV_IPL_PARTITION_DATA",
	0x0000000F: "EV_NONHOST_CODE",
	0x00000010: "EV_NONHOST_CONFIG",
	0x00000011: "EV_NONHOST_INFO",
	0x00000012: "EV_OMIT_BOOT_DEVICE_EVENTS",
	0x00000013: "EV_POST_CODE2",
	0x80000000: "EV_EFI_EVENT_BASE",
	0x80000001: "EV_EFI_VARIABLE_DRIVER_CONFIG",
	0x80000002: "EV_EFI_VARIABLE_BOOT",
	0x80000003: "EV_EFI_BOOT_SERVICES_APPLICATION",
	0x80000004: "EV_EFI_BOOT_SERVICES_DRIVER",
	0x80000005: "EV_EFI_RUNTIME_SERVICES_DRIVER",
	0x80000006: "EV_EFI_GPT_EVENT",
	0x80000007: "EV_EFI_ACTION",
	0x80000008: "EV_EFI_PLATFORM_FIRMWARE_BLOB",
	0x80000009: "EV_EFI_HANDOFF_TABLES",
	0x8000000A: "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
	0x8000000B: "EV_EFI_HANDOFF_TABLES2",
	0x8000000C: "EV_EFI_VARIABLE_BOOT2",
	0x8000000D: "EV_EFI_GPT_EVENT2",
	0x80000010: "EV_EFI_HCRTM_EVENT",
	0x800000E0: "EV_EFI_VARIABLE_AUTHORITY",
	0x800000E1: "EV_EFI_SPDM_FIRMWARE_BLOB",
	0x800000E2: "EV_EFI_SPDM_FIRMWARE_CONFIG",
	0x800000E3: "EV_EFI_SPDM_DEVICE_POLICY",
	0x800000E4: "EV_EFI_SPDM_DEVICE_AUTHORITY",
}
