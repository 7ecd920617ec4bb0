package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/greatjail/cvm/attestation"
)

// ParseReference parses a reference document: the JSON form of Reference,
// {"values": [...], "requirements": [...]}. It is strict: the document must
// be one JSON object of at most MaxReferenceSize bytes, unknown fields are
// rejected, as are duplicate keys in any object (compared case-
// insensitively, as encoding/json matches field names), hex must decode,
// and every value and requirement must pass Validate. Errors wrap
// ErrInvalidReference.
func ParseReference(b []byte) (*Reference, error) {
	var ref Reference
	if err := decodeStrict("reference", b, &ref); err != nil {
		return nil, err
	}
	if err := ref.Validate(); err != nil {
		return nil, err
	}
	return &ref, nil
}

// ParseRequirements parses one TEE's Requirements (the JSON form of the
// type) as strictly as ParseReference and validates it.
func ParseRequirements(b []byte) (*Requirements, error) {
	var r Requirements
	if err := decodeStrict("requirements", b, &r); err != nil {
		return nil, err
	}
	if err := (&Reference{Requirements: []Requirements{r}}).Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// decodeStrict decodes exactly one JSON object into v: size limit, no
// duplicate or unknown members, nothing after it.
func decodeStrict(what string, b []byte, v any) error {
	if len(b) > MaxReferenceSize {
		return fmt.Errorf("policy: %s: %w: %d bytes, limit %d", what, ErrInvalidReference, len(b), MaxReferenceSize)
	}
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return fmt.Errorf("policy: %s: %w: not a JSON object", what, ErrInvalidReference)
	}
	if err := checkDuplicateKeys(b); err != nil {
		return fmt.Errorf("policy: %s: %w: %w", what, ErrInvalidReference, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("policy: %s: %w: %w", what, ErrInvalidReference, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("policy: %s: %w: data after the JSON object", what, ErrInvalidReference)
	}
	return nil
}

// checkDuplicateKeys rejects a JSON document in which an object repeats a
// key. encoding/json silently keeps the last one, so a reviewer reading the
// first would approve something other than what is loaded.
func checkDuplicateKeys(b []byte) error {
	type frame struct {
		object    bool
		expectKey bool
		keys      map[string]bool
	}
	var stack []frame
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, frame{object: true, expectKey: true, keys: map[string]bool{}})
			case '[':
				stack = append(stack, frame{})
			default: // '}' or ']': the container is a value of its parent
				stack = stack[:len(stack)-1]
				if n := len(stack); n > 0 && stack[n-1].object {
					stack[n-1].expectKey = true
				}
			}
			continue
		}
		n := len(stack)
		if n == 0 || !stack[n-1].object {
			continue
		}
		top := &stack[n-1]
		if top.expectKey {
			key, _ := tok.(string)
			k := strings.ToLower(key)
			if top.keys[k] {
				return fmt.Errorf("duplicate key %q", key)
			}
			top.keys[k] = true
		}
		top.expectKey = !top.expectKey
	}
}

// Validate checks every value and requirement (see ReferenceValue.Validate
// and Requirements.Validate) and that no TEE has two Requirements. Errors
// wrap ErrInvalidReference and name the offending entry by index.
func (r *Reference) Validate() error {
	for i := range r.Values {
		if err := checkValue(&r.Values[i]); err != nil {
			return fmt.Errorf("policy: values[%d]: %w", i, err)
		}
	}
	seen := map[attestation.TEE]bool{}
	for i := range r.Requirements {
		q := &r.Requirements[i]
		if err := checkRequirements(q); err != nil {
			return fmt.Errorf("policy: requirements[%d]: %w", i, err)
		}
		if seen[q.TEE] {
			return fmt.Errorf("policy: requirements[%d]: %w: a second requirements entry for tee %s", i, ErrInvalidReference, q.TEE)
		}
		seen[q.TEE] = true
	}
	return nil
}

// forTEE returns the values of tee grouped by kind and its requirements
// (the zero value if none), validating only the entries for tee: a broken
// entry of another TEE does not affect this one.
func (r *Reference) forTEE(tee attestation.TEE) (map[string][]ReferenceValue, Requirements, error) {
	byKind := map[string][]ReferenceValue{}
	for i := range r.Values {
		v := &r.Values[i]
		if v.TEE != tee {
			continue
		}
		if err := checkValue(v); err != nil {
			return nil, Requirements{}, fmt.Errorf("values[%d]: %w", i, err)
		}
		byKind[v.Kind] = append(byKind[v.Kind], *v)
	}
	var req Requirements
	found := false
	for i := range r.Requirements {
		q := &r.Requirements[i]
		if q.TEE != tee {
			continue
		}
		if found {
			return nil, Requirements{}, fmt.Errorf("requirements[%d]: %w: a second requirements entry for tee %s", i, ErrInvalidReference, tee)
		}
		if err := checkRequirements(q); err != nil {
			return nil, Requirements{}, fmt.Errorf("requirements[%d]: %w", i, err)
		}
		req, found = *q, true
	}
	req.TEE = tee
	return byKind, req, nil
}

// Validate checks that v's TEE is known, its Kind applies to that TEE, its
// Value has the size of that kind (and is not an all-zero CHIP_ID, which
// is what a masked chip reports and would match every such chip), and
// that ID and Note are within their limits. Errors wrap
// ErrInvalidReference.
func (v *ReferenceValue) Validate() error {
	if err := checkValue(v); err != nil {
		return fmt.Errorf("policy: reference value: %w", err)
	}
	return nil
}

// Validate checks that q's TEE is known and that each setting applies to
// it: MinTCB and MinGuestSVN to snp and sim, AllowedTDXTCBStatuses (known
// statuses only) to tdx, RequireFreshCollateral to snp and tdx. Errors
// wrap ErrInvalidReference.
func (q *Requirements) Validate() error {
	if err := checkRequirements(q); err != nil {
		return fmt.Errorf("policy: requirements: %w", err)
	}
	return nil
}

// Sizes of the values of each kind, in bytes.
const (
	sizeMeasurement = 48
	sizeHostData    = 32
	sizeChipID      = 64
)

// kindsFor lists the kinds that apply to tee, for error messages.
func kindsFor(tee attestation.TEE) string {
	switch tee {
	case attestation.TEESEVSNP, attestation.TEESim:
		return "measurement, host_data, chip_id"
	case attestation.TEETDX:
		return "measurement, rtmr0..rtmr3, mr_config_id"
	case attestation.TEETPM:
		return "pcr0..pcr23"
	}
	return "none"
}

// kindSizes returns the value sizes accepted for kind under tee, or nil if
// kind does not apply to tee.
func kindSizes(tee attestation.TEE, kind string) []int {
	switch tee {
	case attestation.TEESEVSNP, attestation.TEESim:
		switch kind {
		case KindMeasurement:
			return []int{sizeMeasurement}
		case KindHostData:
			return []int{sizeHostData}
		case KindChipID:
			return []int{sizeChipID}
		}
	case attestation.TEETDX:
		if kind == KindMeasurement || kind == KindMRConfigID {
			return []int{sizeMeasurement}
		}
		if _, ok := kindIndex(kind, "rtmr", 3); ok {
			return []int{sizeMeasurement}
		}
	case attestation.TEETPM:
		if _, ok := kindIndex(kind, "pcr", 23); ok {
			return []int{20, 32, 48, 64}
		}
	}
	return nil
}

// kindIndex parses kind as prefix followed by a decimal index in
// [0, last] without leading zeros ("pcr7", not "pcr07").
func kindIndex(kind, prefix string, last int) (int, bool) {
	s, ok := strings.CutPrefix(kind, prefix)
	if !ok || s == "" || len(s) > 2 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > last {
		return 0, false
	}
	return n, true
}

func checkTEE(tee attestation.TEE) error {
	if _, err := attestation.ParseTEE(string(tee)); err != nil {
		return fmt.Errorf("%w: unknown tee %q (want snp, tdx, tpm or sim)", ErrInvalidReference, tee)
	}
	return nil
}

// checkText checks an operator-supplied name or note: at most limit bytes,
// valid UTF-8, no control characters (they would garble audit logs).
func checkText(what, s string, limit int) error {
	if len(s) > limit {
		return fmt.Errorf("%w: %s is %d bytes, limit %d", ErrInvalidReference, what, len(s), limit)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidReference, what)
	}
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return fmt.Errorf("%w: %s contains control characters", ErrInvalidReference, what)
	}
	return nil
}

func checkValue(v *ReferenceValue) error {
	if err := checkTEE(v.TEE); err != nil {
		return err
	}
	sizes := kindSizes(v.TEE, v.Kind)
	if sizes == nil {
		return fmt.Errorf("%w: kind %q does not apply to tee %s (want %s)", ErrInvalidReference, v.Kind, v.TEE, kindsFor(v.TEE))
	}
	if !slices.Contains(sizes, len(v.Value)) {
		want := make([]string, len(sizes))
		for i, s := range sizes {
			want[i] = strconv.Itoa(s)
		}
		return fmt.Errorf("%w: %s %s value is %d bytes, want %s", ErrInvalidReference, v.TEE, v.Kind, len(v.Value), strings.Join(want, ", "))
	}
	if v.Kind == KindChipID && !slices.ContainsFunc(v.Value, func(b byte) bool { return b != 0 }) {
		return fmt.Errorf("%w: chip_id is all zero, which is what a chip with a masked CHIP_ID reports: it would admit every such chip", ErrInvalidReference)
	}
	if err := checkText("id", v.ID, MaxNameSize); err != nil {
		return err
	}
	return checkText("note", v.Note, MaxNoteSize)
}

// tdxStatuses are the TDX TCB statuses a requirement may accept.
var tdxStatuses = []string{
	attestation.TCBStatusUpToDate,
	attestation.TCBStatusSWHardeningNeeded,
	attestation.TCBStatusConfigurationNeeded,
	attestation.TCBStatusConfigurationAndSWHardeningNeeded,
	attestation.TCBStatusOutOfDate,
	attestation.TCBStatusOutOfDateConfigurationNeeded,
	attestation.TCBStatusRevoked,
	attestation.TCBStatusUnknown,
}

// maxListSize bounds the lists inside a Requirements.
const maxListSize = 64

func checkRequirements(q *Requirements) error {
	if err := checkTEE(q.TEE); err != nil {
		return err
	}
	snpLike := q.TEE == attestation.TEESEVSNP || q.TEE == attestation.TEESim
	if len(q.MinTCB) > 0 && !snpLike {
		return fmt.Errorf("%w: min_tcb applies to tee snp and sim, not %s", ErrInvalidReference, q.TEE)
	}
	if len(q.MinTCB) > maxListSize {
		return fmt.Errorf("%w: min_tcb has %d products, limit %d", ErrInvalidReference, len(q.MinTCB), maxListSize)
	}
	for p := range q.MinTCB {
		if p == "" {
			return fmt.Errorf("%w: min_tcb has an empty product name", ErrInvalidReference)
		}
		if err := checkText("min_tcb product name", p, MaxNameSize); err != nil {
			return err
		}
	}
	if q.MinGuestSVN != nil && !snpLike {
		return fmt.Errorf("%w: min_guest_svn applies to tee snp and sim, not %s", ErrInvalidReference, q.TEE)
	}
	if len(q.AllowedTDXTCBStatuses) > 0 && q.TEE != attestation.TEETDX {
		return fmt.Errorf("%w: allowed_tdx_tcb_statuses applies to tee tdx, not %s", ErrInvalidReference, q.TEE)
	}
	for _, s := range q.AllowedTDXTCBStatuses {
		if !slices.Contains(tdxStatuses, s) {
			return fmt.Errorf("%w: allowed_tdx_tcb_statuses: unknown status %q (want one of %s)", ErrInvalidReference, s, strings.Join(tdxStatuses, ", "))
		}
	}
	if q.RequireFreshCollateral && q.TEE != attestation.TEESEVSNP && q.TEE != attestation.TEETDX {
		return fmt.Errorf("%w: require_fresh_collateral applies to tee snp and tdx; tee %s claims carry no collateral expiry", ErrInvalidReference, q.TEE)
	}
	if len(q.AcceptUnchecked) > maxListSize {
		return fmt.Errorf("%w: accept_unchecked has %d entries, limit %d", ErrInvalidReference, len(q.AcceptUnchecked), maxListSize)
	}
	for _, u := range q.AcceptUnchecked {
		if u == "" {
			return fmt.Errorf("%w: accept_unchecked has an empty entry", ErrInvalidReference)
		}
		if err := checkText("accept_unchecked entry", u, MaxNameSize); err != nil {
			return err
		}
	}
	return nil
}

// ImportMeasurement reads the JSON document `cvm measure --json` writes
// and returns the reference values it names, with empty IDs for the
// broker to assign. The accepted shape is deliberately loose so that the
// measuring tool can grow: one object, or an array of objects, each with
//
//   - "tee": "snp", "sim" or "tdx";
//   - "launch_digest" (snp, sim) or "mrtd" (tdx): the 48-byte launch
//     measurement in hex; the other TEE's key is rejected, to catch a
//     digest filed under the wrong TEE;
//   - "inputs" (optional, any JSON): what was measured; it is not
//     interpreted, only recorded, compacted and truncated, in Note.
//
// Other fields are ignored. Each result is a value of kind "measurement"
// and passes ReferenceValue.Validate. Errors wrap ErrInvalidReference.
func ImportMeasurement(b []byte) ([]ReferenceValue, error) {
	if len(b) > MaxReferenceSize {
		return nil, fmt.Errorf("policy: measurement: %w: %d bytes, limit %d", ErrInvalidReference, len(b), MaxReferenceSize)
	}
	t := bytes.TrimLeft(b, " \t\r\n")
	var docs []json.RawMessage
	switch {
	case len(t) > 0 && t[0] == '[':
		if err := decodeOne(b, &docs); err != nil {
			return nil, fmt.Errorf("policy: measurement: %w", err)
		}
		if len(docs) == 0 {
			return nil, fmt.Errorf("policy: measurement: %w: empty list", ErrInvalidReference)
		}
	case len(t) > 0 && t[0] == '{':
		docs = []json.RawMessage{b}
	default:
		return nil, fmt.Errorf("policy: measurement: %w: want a JSON object or array of objects", ErrInvalidReference)
	}
	vals := make([]ReferenceValue, 0, len(docs))
	for i, d := range docs {
		v, err := importOne(d)
		if err != nil {
			if t[0] == '[' {
				return nil, fmt.Errorf("policy: measurement [%d]: %w", i, err)
			}
			return nil, fmt.Errorf("policy: measurement: %w", err)
		}
		vals = append(vals, v)
	}
	return vals, nil
}

// measureDoc is one `cvm measure --json` document; see ImportMeasurement.
type measureDoc struct {
	TEE          string          `json:"tee"`
	LaunchDigest json.RawMessage `json:"launch_digest"`
	MRTD         json.RawMessage `json:"mrtd"`
	Inputs       json.RawMessage `json:"inputs"`
}

// decodeOne decodes exactly one JSON value from b into v.
func decodeOne(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidReference, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: data after the JSON value", ErrInvalidReference)
	}
	return nil
}

func importOne(b []byte) (ReferenceValue, error) {
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return ReferenceValue{}, fmt.Errorf("%w: not a JSON object", ErrInvalidReference)
	}
	var d measureDoc
	if err := decodeOne(b, &d); err != nil {
		return ReferenceValue{}, err
	}
	tee := attestation.TEE(d.TEE)
	var key string
	var digest, other json.RawMessage
	switch tee {
	case attestation.TEESEVSNP, attestation.TEESim:
		key, digest, other = "launch_digest", d.LaunchDigest, d.MRTD
	case attestation.TEETDX:
		key, digest, other = "mrtd", d.MRTD, d.LaunchDigest
	default:
		return ReferenceValue{}, fmt.Errorf("%w: tee %q has no launch measurement to import (want snp, sim or tdx)", ErrInvalidReference, d.TEE)
	}
	if other != nil {
		return ReferenceValue{}, fmt.Errorf("%w: a %s document carries the other TEE's digest field", ErrInvalidReference, tee)
	}
	if digest == nil {
		return ReferenceValue{}, fmt.Errorf("%w: a %s document needs %q", ErrInvalidReference, tee, key)
	}
	var h attestation.Hex
	if err := json.Unmarshal(digest, &h); err != nil {
		return ReferenceValue{}, fmt.Errorf("%w: %s: %w", ErrInvalidReference, key, err)
	}
	note := "imported from cvm measure"
	if d.Inputs != nil {
		var c bytes.Buffer
		if err := json.Compact(&c, d.Inputs); err == nil {
			note += "; inputs " + c.String()
		}
	}
	v := ReferenceValue{TEE: tee, Kind: KindMeasurement, Value: h, Note: truncate(note, MaxNoteSize)}
	if err := checkValue(&v); err != nil {
		return ReferenceValue{}, err
	}
	return v, nil
}

// truncate shortens s to at most limit bytes on a rune boundary, marking the
// cut with "...", and replaces control characters (a JSON string can carry
// escaped ones) with spaces.
func truncate(s string, limit int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	if len(s) <= limit {
		return s
	}
	const mark = "..."
	cut := limit - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}
