package tdx

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/greatjail/cvm/attestation"
)

// JSON forms of the TCB info (PCS "TDX TCB Info" v3) and QE identity (PCS
// "Enclave Identity" v2, id TD_QE). Hex fields stay strings here; parse*
// decodes and validates them.
type (
	tcbInfoJSON struct {
		ID                      string                  `json:"id"`
		Version                 int                     `json:"version"`
		IssueDate               time.Time               `json:"issueDate"`
		NextUpdate              time.Time               `json:"nextUpdate"`
		FMSPC                   string                  `json:"fmspc"`
		PCEID                   string                  `json:"pceId"`
		TCBType                 int                     `json:"tcbType"`
		TCBEvaluationDataNumber int                     `json:"tcbEvaluationDataNumber"`
		TDXModule               *tdxModuleJSON          `json:"tdxModule,omitempty"`
		TDXModuleIdentities     []tdxModuleIdentityJSON `json:"tdxModuleIdentities,omitempty"`
		TCBLevels               []tcbLevelJSON          `json:"tcbLevels"`
	}
	tdxModuleJSON struct {
		MRSigner       string `json:"mrsigner"`
		Attributes     string `json:"attributes"`
		AttributesMask string `json:"attributesMask"`
	}
	tdxModuleIdentityJSON struct {
		ID             string         `json:"id"`
		MRSigner       string         `json:"mrsigner"`
		Attributes     string         `json:"attributes"`
		AttributesMask string         `json:"attributesMask"`
		TCBLevels      []tcbLevelJSON `json:"tcbLevels"`
	}
	tcbLevelJSON struct {
		TCB         tcbJSON  `json:"tcb"`
		TCBDate     string   `json:"tcbDate"`
		TCBStatus   string   `json:"tcbStatus"`
		AdvisoryIDs []string `json:"advisoryIDs,omitempty"`
	}
	tcbJSON struct {
		SGXComponents []tcbComponentJSON `json:"sgxtcbcomponents,omitempty"`
		PCESVN        int                `json:"pcesvn,omitempty"`
		TDXComponents []tcbComponentJSON `json:"tdxtcbcomponents,omitempty"`
		ISVSVN        int                `json:"isvsvn,omitempty"`
	}
	tcbComponentJSON struct {
		SVN      int    `json:"svn"`
		Category string `json:"category,omitempty"`
		Type     string `json:"type,omitempty"`
	}
	qeIdentityJSON struct {
		ID                      string         `json:"id"`
		Version                 int            `json:"version"`
		IssueDate               time.Time      `json:"issueDate"`
		NextUpdate              time.Time      `json:"nextUpdate"`
		TCBEvaluationDataNumber int            `json:"tcbEvaluationDataNumber"`
		MiscSelect              string         `json:"miscselect"`
		MiscSelectMask          string         `json:"miscselectMask"`
		Attributes              string         `json:"attributes"`
		AttributesMask          string         `json:"attributesMask"`
		MRSigner                string         `json:"mrsigner"`
		ISVProdID               int            `json:"isvprodid"`
		TCBLevels               []tcbLevelJSON `json:"tcbLevels"`
	}
)

// Validated forms.
type (
	tcbInfo struct {
		issueDate, nextUpdate time.Time
		fmspc, pceID          []byte
		module                *moduleIdentity // tdxModule, for TEE_TCB_SVN[1] == 0
		moduleIdentities      []moduleIdentity
		levels                []tcbLevel
	}
	moduleIdentity struct {
		id                                   string
		mrSigner, attributes, attributesMask []byte
		levels                               []tcbLevel
	}
	tcbLevel struct {
		sgx, tdx    []byte // 16 component SVNs each (platform levels only)
		pceSVN      uint16
		isvSVN      uint16 // module and QE levels only
		date        time.Time
		status      string
		advisoryIDs []string
	}
	qeIdentity struct {
		issueDate, nextUpdate      time.Time
		miscSelect, miscSelectMask []byte // 4 bytes, in report (little-endian) byte order
		attributes, attributesMask []byte // 16 bytes
		mrSigner                   []byte // 32 bytes
		isvProdID                  uint16
		levels                     []tcbLevel
	}
)

// parseTCBInfo decodes and validates the signed "tcbInfo" value.
func parseTCBInfo(raw []byte) (*tcbInfo, error) {
	var j tcbInfoJSON
	if err := json.Unmarshal(raw, &j); err != nil {
		return nil, err
	}
	if j.ID != tcbInfoID || j.Version != tcbInfoVersion {
		return nil, fmt.Errorf("TCB info id %q version %d, want %q version %d", j.ID, j.Version, tcbInfoID, tcbInfoVersion)
	}
	if j.NextUpdate.Before(j.IssueDate) {
		return nil, fmt.Errorf("nextUpdate %s is before issueDate %s", j.NextUpdate, j.IssueDate)
	}
	ti := &tcbInfo{issueDate: j.IssueDate, nextUpdate: j.NextUpdate}
	var err error
	if ti.fmspc, err = hexField("fmspc", j.FMSPC, 6); err != nil {
		return nil, err
	}
	if ti.pceID, err = hexField("pceId", j.PCEID, 2); err != nil {
		return nil, err
	}
	if j.TDXModule != nil {
		m, err := parseModule("tdxModule", j.TDXModule.MRSigner, j.TDXModule.Attributes, j.TDXModule.AttributesMask)
		if err != nil {
			return nil, err
		}
		ti.module = m
	}
	for i, mj := range j.TDXModuleIdentities {
		m, err := parseModule(fmt.Sprintf("tdxModuleIdentities[%d]", i), mj.MRSigner, mj.Attributes, mj.AttributesMask)
		if err != nil {
			return nil, err
		}
		m.id = mj.ID
		if m.levels, err = parseLevels(m.id, mj.TCBLevels, false, moduleStatuses); err != nil {
			return nil, err
		}
		ti.moduleIdentities = append(ti.moduleIdentities, *m)
	}
	if ti.levels, err = parseLevels("tcbLevels", j.TCBLevels, true, tcbStatuses); err != nil {
		return nil, err
	}
	return ti, nil
}

func parseModule(name, mrSigner, attributes, mask string) (*moduleIdentity, error) {
	m := &moduleIdentity{}
	var err error
	if m.mrSigner, err = hexField(name+".mrsigner", mrSigner, 48); err != nil {
		return nil, err
	}
	if m.attributes, err = hexField(name+".attributes", attributes, 8); err != nil {
		return nil, err
	}
	if m.attributesMask, err = hexField(name+".attributesMask", mask, 8); err != nil {
		return nil, err
	}
	return m, nil
}

// parseLevels validates TCB levels: platform levels carry 16 SGX and 16 TDX
// component SVNs and a PCESVN, module and QE levels an ISVSVN.
func parseLevels(name string, js []tcbLevelJSON, platform bool, statuses []string) ([]tcbLevel, error) {
	if len(js) == 0 {
		return nil, fmt.Errorf("%s: no TCB levels", name)
	}
	levels := make([]tcbLevel, 0, len(js))
	for i, lj := range js {
		where := fmt.Sprintf("%s[%d]", name, i)
		l := tcbLevel{status: lj.TCBStatus, advisoryIDs: lj.AdvisoryIDs}
		if !slices.Contains(statuses, l.status) {
			return nil, fmt.Errorf("%s: unknown tcbStatus %q", where, l.status)
		}
		d, err := time.Parse(time.RFC3339, lj.TCBDate)
		if err != nil {
			return nil, fmt.Errorf("%s: tcbDate: %w", where, err)
		}
		l.date = d
		if platform {
			if l.sgx, err = componentSVNs(where+".sgxtcbcomponents", lj.TCB.SGXComponents); err != nil {
				return nil, err
			}
			if l.tdx, err = componentSVNs(where+".tdxtcbcomponents", lj.TCB.TDXComponents); err != nil {
				return nil, err
			}
			if lj.TCB.PCESVN < 0 || lj.TCB.PCESVN > 0xffff {
				return nil, fmt.Errorf("%s: pcesvn %d out of range", where, lj.TCB.PCESVN)
			}
			l.pceSVN = uint16(lj.TCB.PCESVN)
		} else {
			if lj.TCB.ISVSVN < 0 || lj.TCB.ISVSVN > 0xffff {
				return nil, fmt.Errorf("%s: isvsvn %d out of range", where, lj.TCB.ISVSVN)
			}
			l.isvSVN = uint16(lj.TCB.ISVSVN)
		}
		levels = append(levels, l)
	}
	return levels, nil
}

func componentSVNs(name string, cs []tcbComponentJSON) ([]byte, error) {
	if len(cs) != 16 {
		return nil, fmt.Errorf("%s: %d components, want 16", name, len(cs))
	}
	svns := make([]byte, 16)
	for i, c := range cs {
		if c.SVN < 0 || c.SVN > 0xff {
			return nil, fmt.Errorf("%s[%d]: svn %d out of range", name, i, c.SVN)
		}
		svns[i] = byte(c.SVN)
	}
	return svns, nil
}

func hexField(name, s string, n int) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != n {
		return nil, fmt.Errorf("%s %q is not %d hex-encoded bytes", name, s, n)
	}
	return b, nil
}

// parseQEIdentity decodes and validates the signed "enclaveIdentity" value.
func parseQEIdentity(raw []byte) (*qeIdentity, error) {
	var j qeIdentityJSON
	if err := json.Unmarshal(raw, &j); err != nil {
		return nil, err
	}
	if j.ID != qeIdentityID || j.Version != qeIdentityVersion {
		return nil, fmt.Errorf("QE identity id %q version %d, want %q version %d", j.ID, j.Version, qeIdentityID, qeIdentityVersion)
	}
	if j.NextUpdate.Before(j.IssueDate) {
		return nil, fmt.Errorf("nextUpdate %s is before issueDate %s", j.NextUpdate, j.IssueDate)
	}
	if j.ISVProdID < 0 || j.ISVProdID > 0xffff {
		return nil, fmt.Errorf("isvprodid %d out of range", j.ISVProdID)
	}
	qi := &qeIdentity{issueDate: j.IssueDate, nextUpdate: j.NextUpdate, isvProdID: uint16(j.ISVProdID)}
	var err error
	for _, f := range []struct {
		name string
		s    string
		n    int
		dst  *[]byte
	}{
		{"miscselect", j.MiscSelect, 4, &qi.miscSelect},
		{"miscselectMask", j.MiscSelectMask, 4, &qi.miscSelectMask},
		{"attributes", j.Attributes, 16, &qi.attributes},
		{"attributesMask", j.AttributesMask, 16, &qi.attributesMask},
		{"mrsigner", j.MRSigner, 32, &qi.mrSigner},
	} {
		if *f.dst, err = hexField(f.name, f.s, f.n); err != nil {
			return nil, err
		}
	}
	if qi.levels, err = parseLevels("tcbLevels", j.TCBLevels, false, moduleStatuses); err != nil {
		return nil, err
	}
	return qi, nil
}

// checkTDXModule checks the quote's MRSIGNERSEAM and SEAMATTRIBUTES against
// the TDX module identity the TCB info gives for the module's major version
// (TEE_TCB_SVN[1]): tdxModule for version 0, tdxModuleIdentities "TDX_%02X"
// otherwise (Intel QVL TdxModuleCheck.cpp). For a non-zero major version it
// also returns the module's TCB level, matched on its minor SVN
// (TEE_TCB_SVN[0]).
func checkTDXModule(ti *tcbInfo, teeTCBSVN, mrSignerSeam, seamAttributes []byte) (*tcbLevel, error) {
	major, minor := teeTCBSVN[1], teeTCBSVN[0]
	m := ti.module
	id := "tdxModule"
	if major > 0 {
		m, id = nil, fmt.Sprintf("TDX_%02X", major)
		for i := range ti.moduleIdentities {
			if strings.EqualFold(ti.moduleIdentities[i].id, id) {
				m = &ti.moduleIdentities[i]
				break
			}
		}
	}
	if m == nil {
		return nil, attestation.Errorf(attestation.TEETDX, "tdx module", attestation.ErrCollateral,
			"TCB info has no %s identity for TDX module major version %d", id, major)
	}
	if !bytes.Equal(m.mrSigner, mrSignerSeam) {
		return nil, attestation.Errorf(attestation.TEETDX, "tdx module", attestation.ErrMismatch,
			"MRSIGNERSEAM %x is not %s mrsigner %x", mrSignerSeam, id, m.mrSigner)
	}
	if !bytes.Equal(mask(seamAttributes, m.attributesMask), m.attributes) {
		return nil, attestation.Errorf(attestation.TEETDX, "tdx module", attestation.ErrMismatch,
			"SEAMATTRIBUTES %x masked with %x is not %s attributes %x", seamAttributes, m.attributesMask, id, m.attributes)
	}
	if major == 0 {
		return nil, nil
	}
	for i := range m.levels {
		if uint16(minor) >= m.levels[i].isvSVN {
			return &m.levels[i], nil
		}
	}
	return nil, &attestation.Error{TEE: attestation.TEETDX, Check: "tcb level", Err: attestation.ErrCollateral,
		Detail: fmt.Sprintf("no %s TCB level for TDX module SVN %d", id, minor), Cause: ErrNoMatchingTCBLevel}
}

// matchTCBLevel returns the first TCB level (Intel lists them from newest to
// oldest) that the platform reaches, following the algorithm of
// go-tdx-guest's testing/testdata/README.md and Intel QVL TcbLevelCheck.cpp:
//
//  1. every SGX TCB component SVN from the PCK certificate is >= the level's
//     sgxtcbcomponents, and
//  2. the PCK certificate's PCESVN is >= the level's pcesvn, and
//  3. every TEE_TCB_SVN byte from the quote is >= the level's
//     tdxtcbcomponents, except that for a TDX module with a non-zero major
//     version (TEE_TCB_SVN[1] > 0) bytes 0 and 1 are skipped: the module is
//     then judged by its tdxModuleIdentities entry (checkTDXModule);
//  4. the README's index-1 check: with TEE_TCB_SVN[1] == 0, the level's
//     tdxtcbcomponents[1] must equal it. For TEE_TCB_SVN[1] > 0 it is not
//     applied: Intel's current TCB info lists tdxtcbcomponents[1] = 0 next
//     to TDX_01 module identities, and Intel QVL does not apply it either.
//
// No level matching is ErrNoMatchingTCBLevel (Intel: "TCB level not
// supported").
func matchTCBLevel(levels []tcbLevel, cpuSVN []byte, pceSVN uint16, teeTCBSVN []byte) (*tcbLevel, error) {
	start := 0
	if teeTCBSVN[1] > 0 {
		start = 2
	}
	for i := range levels {
		l := &levels[i]
		if !allAtLeast(cpuSVN, l.sgx) || pceSVN < l.pceSVN {
			continue
		}
		if !allAtLeast(teeTCBSVN[start:], l.tdx[start:]) {
			continue
		}
		if teeTCBSVN[1] == 0 && l.tdx[1] != teeTCBSVN[1] {
			continue
		}
		return l, nil
	}
	return nil, &attestation.Error{TEE: attestation.TEETDX, Check: "tcb level", Err: attestation.ErrCollateral,
		Detail: fmt.Sprintf("SGX TCB components %x, PCESVN %d, TEE_TCB_SVN %x", cpuSVN, pceSVN, teeTCBSVN),
		Cause:  ErrNoMatchingTCBLevel}
}

func allAtLeast(have, want []byte) bool {
	if len(have) != len(want) {
		return false
	}
	for i := range have {
		if have[i] < want[i] {
			return false
		}
	}
	return true
}

func mask(b, m []byte) []byte {
	if len(b) != len(m) {
		return nil
	}
	out := make([]byte, len(b))
	for i := range b {
		out[i] = b[i] & m[i]
	}
	return out
}

// convergeModuleStatus folds the TDX module's TCB status into the platform
// TCB level's (Intel QVL TdxModuleCheck.cpp,
// convergeTcbStatusWithTdxModuleStatus).
func convergeModuleStatus(platform, module string) string {
	switch module {
	case attestation.TCBStatusOutOfDate:
		switch platform {
		case attestation.TCBStatusUpToDate, attestation.TCBStatusSWHardeningNeeded:
			return attestation.TCBStatusOutOfDate
		case attestation.TCBStatusConfigurationNeeded, attestation.TCBStatusConfigurationAndSWHardeningNeeded:
			return attestation.TCBStatusOutOfDateConfigurationNeeded
		}
	case attestation.TCBStatusRevoked:
		return attestation.TCBStatusRevoked
	}
	return platform
}

// QE report (SGX REPORT_BODY) offsets.
const (
	qeMiscSelectOff = 16  // u32
	qeAttributesOff = 48  // 16 bytes
	qeMRSignerOff   = 128 // 32 bytes
	qeISVProdIDOff  = 256 // u16
	qeISVSVNOff     = 258 // u16
)

// checkQEIdentity compares the QE report with the QE identity (MRSIGNER,
// ISVPRODID, masked MISCSELECT and ATTRIBUTES) and returns the QE's TCB
// level: the first level whose ISVSVN the QE reaches.
func checkQEIdentity(qi *qeIdentity, report []byte) (*tcbLevel, error) {
	mismatch := func(format string, args ...any) error {
		return attestation.Errorf(attestation.TEETDX, "qe identity", attestation.ErrMismatch, format, args...)
	}
	mrSigner := report[qeMRSignerOff : qeMRSignerOff+32]
	if !bytes.Equal(mrSigner, qi.mrSigner) {
		return nil, mismatch("QE MRSIGNER %x is not %x", mrSigner, qi.mrSigner)
	}
	if id := binary.LittleEndian.Uint16(report[qeISVProdIDOff:]); id != qi.isvProdID {
		return nil, mismatch("QE ISVPRODID %d is not %d", id, qi.isvProdID)
	}
	// The identity's hex MISCSELECT values are in the report's
	// little-endian byte order (Intel QVL EnclaveReportVerifier.cpp
	// vectorToUint32; go-tdx-guest reads them the same way).
	misc := report[qeMiscSelectOff : qeMiscSelectOff+4]
	if !bytes.Equal(mask(misc, qi.miscSelectMask), qi.miscSelect) {
		return nil, mismatch("QE MISCSELECT %x masked with %x is not %x", misc, qi.miscSelectMask, qi.miscSelect)
	}
	attrs := report[qeAttributesOff : qeAttributesOff+16]
	if !bytes.Equal(mask(attrs, qi.attributesMask), qi.attributes) {
		return nil, mismatch("QE ATTRIBUTES %x masked with %x is not %x", attrs, qi.attributesMask, qi.attributes)
	}
	svn := binary.LittleEndian.Uint16(report[qeISVSVNOff:])
	for i := range qi.levels {
		if svn >= qi.levels[i].isvSVN {
			return &qi.levels[i], nil
		}
	}
	return nil, &attestation.Error{TEE: attestation.TEETDX, Check: "qe tcb level", Err: attestation.ErrCollateral,
		Detail: fmt.Sprintf("no QE identity TCB level for QE ISVSVN %d", svn), Cause: ErrNoMatchingTCBLevel}
}

// Intel's TD quoting enclave identity, pinned for verification without
// collateral: MRSIGNER is the hash of Intel's enclave signing key (the
// value in every TD_QE identity Intel PCS has published, including the
// go-tdx-guest sample), ISVPRODID 2 is the TD QE.
var intelQEMRSigner, _ = hex.DecodeString("dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5")

const (
	tdQEProdID         = 2
	sgxAttributesDebug = 0x02 // SGX ATTRIBUTES.DEBUG, bit 1 of byte 0
)

// checkPinnedQE is the QE identity check without collateral: the QE must be
// Intel's production TD QE.
func checkPinnedQE(report []byte) error {
	mismatch := func(format string, args ...any) error {
		return attestation.Errorf(attestation.TEETDX, "qe identity", attestation.ErrMismatch, format, args...)
	}
	if mr := report[qeMRSignerOff : qeMRSignerOff+32]; !bytes.Equal(mr, intelQEMRSigner) {
		return mismatch("QE MRSIGNER %x is not Intel's %x", mr, intelQEMRSigner)
	}
	if id := binary.LittleEndian.Uint16(report[qeISVProdIDOff:]); id != tdQEProdID {
		return mismatch("QE ISVPRODID %d is not the TD QE's %d", id, tdQEProdID)
	}
	if report[qeAttributesOff]&sgxAttributesDebug != 0 {
		return mismatch("QE ATTRIBUTES %x have DEBUG set", report[qeAttributesOff:qeAttributesOff+16])
	}
	return nil
}
