package tdxmeasure

import (
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
)

// Event is one measurement extended into an RTMR, as the CCEL event log
// records it: the event's meaning and the SHA-384 digest extended.
type Event struct {
	Name   string   // what was measured, e.g. "EV_EFI_ACTION: Exit Boot Services Invocation"
	Digest [48]byte // the value extended into the register
}

// MarshalJSON writes the digest in hex.
func (e Event) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Name   string `json:"name"`
		Digest string `json:"digest"`
	}{e.Name, hex.EncodeToString(e.Digest[:])})
}

// Replay is the ordered list of events extended into one RTMR since TD
// creation, which starts the register at 48 zero bytes.
type Replay struct {
	Events []Event
}

// Extend appends an event with the given digest.
func (r *Replay) Extend(name string, digest [48]byte) {
	r.Events = append(r.Events, Event{Name: name, Digest: digest})
}

// Measure appends an event whose digest is SHA-384(data), as firmware does
// for event data it hashes itself (EV_EFI_ACTION strings, separators).
func (r *Replay) Measure(name string, data []byte) {
	r.Extend(name, sha512.Sum384(data))
}

// Value returns the register after every event: starting from 48 zero
// bytes, RTMR = SHA-384(RTMR ‖ digest) per event (TDG.MR.RTMR.EXTEND).
func (r Replay) Value() [48]byte {
	var reg [48]byte
	for _, e := range r.Events {
		reg = Extend(reg, e.Digest)
	}
	return reg
}

// Extend returns SHA-384(reg ‖ digest), one TDG.MR.RTMR.EXTEND.
func Extend(reg, digest [48]byte) [48]byte {
	var b [96]byte
	copy(b[:48], reg[:])
	copy(b[48:], digest[:])
	return sha512.Sum384(b[:])
}
