// Package sim is the simulated TEE of DESIGN.md: with no SEV-SNP hardware,
// the launcher plays the AMD secure processor. An Authority holds a signing
// chain generated for one installation (ARK → ASK → VCEK, the key types and
// certificate profile AMD uses) and signs SEV-SNP ABI attestation reports
// exactly as hardware signs them, so the key broker verifies them with the
// same code as real reports.
//
// Every certificate of a sim chain carries the subject serialNumber
// attribute sevsnp.SimulatedMarker. A verifier trusts a sim chain only when
// it is configured with it explicitly (NewVerifier), and the claims it
// produces say tee "sim", so a policy can never confuse a simulated report
// with a real one. Nothing here is selectable by default.
package sim

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"sync"
	"time"

	"github.com/greatjail/cvm/attestation"
)

// Product is the SEV-SNP product line a sim authority claims to be.
const Product = "Milan"

// ReportSize is the size of an SEV-SNP ABI ATTESTATION_REPORT.
const ReportSize = 0x4A0

// chipIDSize is the size of CHIP_ID.
const chipIDSize = 64

// Report layout (SEV-SNP ABI, ATTESTATION_REPORT, version 3).
const (
	offVersion       = 0x00
	offGuestSVN      = 0x04
	offPolicy        = 0x08
	offVMPL          = 0x30
	offSignatureAlgo = 0x34
	offCurrentTCB    = 0x38
	offPlatformInfo  = 0x40
	offSignerInfo    = 0x48
	offReportData    = 0x50
	offMeasurement   = 0x90
	offHostData      = 0xC0
	offReportID      = 0x140
	offReportIDMA    = 0x160
	offReportedTCB   = 0x180
	offCPUIDFamily   = 0x188
	offCPUIDModel    = 0x189
	offCPUIDStepping = 0x18A
	offChipID        = 0x1A0
	offCommittedTCB  = 0x1E0
	offCurrentBuild  = 0x1E8
	offCommitBuild   = 0x1EC
	offLaunchTCB     = 0x1F0
	offSignature     = 0x2A0
	// sigComponentSize is the size of R and of S in the ABI signature
	// format: little-endian, zero-padded to 72 bytes.
	sigComponentSize = 72
)

// Field values of every sim report.
const (
	reportVersion = 3
	// sigAlgoECDSAP384SHA384 is the ABI SIGNATURE_ALGO of ECDSA P-384 with
	// SHA-384.
	sigAlgoECDSAP384SHA384 = 1
	// policyBase is guest policy ABI 0.0 with the reserved bit 17 set and
	// SMT (bit 16) allowed.
	policyBase     = 1<<17 | 1<<16
	policyDebugBit = 1 << 19
	// platformInfo has SMT_EN (bit 0) set: the simulated host runs SMT.
	platformInfo = 1
	// cpuid* are CPUID(1) family, model and stepping of an AMD EPYC Milan
	// B1 (Fn0000_0001_EAX 0x00A00F11), as a version 3 report carries them.
	cpuidFamily   = 0x19
	cpuidModel    = 0x01
	cpuidStepping = 0x01
	// productName is the VCEK productName extension for that part.
	productName = "Milan-B1"
	// firmware* is the SEV firmware version (major.minor.build) reported as
	// current and committed.
	firmwareMajor = 1
	firmwareMinor = 55
	firmwareBuild = 21
	// maxVMPL is the highest VM privilege level SEV-SNP defines.
	maxVMPL = 3
)

// defaultTCB is the TCB version of a new authority. The values are
// plausible for a Milan part and nothing more; they carry no meaning.
var defaultTCB = tcbVersion{Bootloader: 4, TEE: 0, SNP: 22, Microcode: 213}

// tcbVersion is an SEV-SNP TCB_VERSION for Milan (no FMC field).
type tcbVersion struct {
	Bootloader uint8 `json:"bootloader"`
	TEE        uint8 `json:"tee"`
	SNP        uint8 `json:"snp"`
	Microcode  uint8 `json:"microcode"`
}

// raw is the 64-bit TCB_VERSION as the report carries it: bootloader in
// byte 0, TEE in byte 1, SNP in byte 6, microcode in byte 7.
func (t tcbVersion) raw() uint64 {
	return uint64(t.Bootloader) | uint64(t.TEE)<<8 | uint64(t.SNP)<<48 | uint64(t.Microcode)<<56
}

// valid reports whether every field fits the KDS certificate encoding,
// which allows 0-127 for all SPLs but microcode.
func (t tcbVersion) valid() bool {
	return t.Bootloader <= 127 && t.TEE <= 127 && t.SNP <= 127
}

// Authority is one installation's simulated AMD secure processor: the ARK,
// ASK and VCEK keys and certificates, the chip identifier and the TCB
// version it reports. Its methods are safe for concurrent use.
type Authority struct {
	arkKey  *rsa.PrivateKey
	askKey  *rsa.PrivateKey
	vcekKey *ecdsa.PrivateKey
	ark     *x509.Certificate
	ask     *x509.Certificate
	vcek    *x509.Certificate
	chipID  [chipIDSize]byte
	tcb     tcbVersion
	rand    io.Reader // a *lockedReader: the caller's need not be safe for concurrent use
}

// lockedReader serializes reads from r.
type lockedReader struct {
	mu sync.Mutex // guards r
	r  io.Reader
}

func (l *lockedReader) Read(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Read(p)
}

// New creates a fresh authority for product line Milan: RSA-4096 ARK and
// ASK valid from now-1h for 25 years, an ECDSA P-384 VCEK valid for 7
// years, and a 64-byte chip identifier. Chip identifier, certificate serial
// numbers and REPORT_IDs are read from rand; key generation and signatures
// are given rand too (Go 1.26 ignores it there and always uses a secure
// source unless GODEBUG=cryptocustomrand=1). Pass crypto/rand.Reader
// outside tests. RSA-4096 key generation takes around a second.
func New(rand io.Reader, now time.Time) (*Authority, error) {
	if rand == nil {
		return nil, fmt.Errorf("sim: new authority: nil random source")
	}
	a := &Authority{rand: &lockedReader{r: rand}, tcb: defaultTCB}
	if _, err := io.ReadFull(rand, a.chipID[:]); err != nil {
		return nil, fmt.Errorf("sim: new authority: chip id: %w", err)
	}
	var err error
	if a.arkKey, err = rsa.GenerateKey(rand, 4096); err != nil {
		return nil, fmt.Errorf("sim: new authority: ark key: %w", err)
	}
	if a.askKey, err = rsa.GenerateKey(rand, 4096); err != nil {
		return nil, fmt.Errorf("sim: new authority: ask key: %w", err)
	}
	if a.vcekKey, err = ecdsa.GenerateKey(elliptic.P384(), rand); err != nil {
		return nil, fmt.Errorf("sim: new authority: vcek key: %w", err)
	}
	notBefore := now.Add(-time.Hour).UTC().Truncate(time.Second)
	if a.ark, err = certifyARK(rand, a.arkKey, notBefore); err != nil {
		return nil, fmt.Errorf("sim: new authority: %w", err)
	}
	if a.ask, err = certifyASK(rand, a.ark, a.arkKey, &a.askKey.PublicKey, notBefore); err != nil {
		return nil, fmt.Errorf("sim: new authority: %w", err)
	}
	if a.vcek, err = certifyVCEK(rand, a.ask, a.askKey, &a.vcekKey.PublicKey, a.chipID, a.tcb, notBefore); err != nil {
		return nil, fmt.Errorf("sim: new authority: %w", err)
	}
	return a, nil
}

// RootPEM returns the ARK and ASK certificates, in that order, PEM-encoded:
// what a verifier of this authority's reports trusts.
func (a *Authority) RootPEM() []byte {
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.ark.Raw})
	return append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.ask.Raw})...)
}

// VCEK returns the VCEK certificate, DER-encoded.
func (a *Authority) VCEK() []byte { return clone(a.vcek.Raw) }

// ChipID returns the CHIP_ID every report of this authority carries.
func (a *Authority) ChipID() [chipIDSize]byte { return a.chipID }

// TCB returns the TCB version every report of this authority carries as
// its current, committed, launch and reported TCB.
func (a *Authority) TCB() attestation.TCBVersion {
	return attestation.TCBVersion{
		Raw:        a.tcb.raw(),
		Bootloader: a.tcb.Bootloader,
		TEE:        a.tcb.TEE,
		SNP:        a.tcb.SNP,
		Microcode:  a.tcb.Microcode,
	}
}

// GUIDs of the extended-report certificate table entries (AMD GHCB
// specification, MSG_REPORT_REQ), in the byte order the hypervisor tools
// and go-sev-guest use: the hex digits of the string form, in order.
var (
	guidVCEK = mustGUID("63da758d-e664-4564-adc5-f4b93be8accd")
	guidASK  = mustGUID("4ab7b379-bbac-4fe4-a02f-05aef327c782")
	guidARK  = mustGUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")
)

const certTableEntrySize = 24 // GUID, offset (u32 LE), length (u32 LE)

// CertTable returns the SEV GUID certificate table with the VCEK, ASK and
// ARK certificates (DER), as the host supplies it with an extended report:
// a header of entries terminated by an all-zero entry, then the
// certificates. Offsets count from the start of the table.
func (a *Authority) CertTable() ([]byte, error) {
	entries := []struct {
		guid [16]byte
		der  []byte
	}{
		{guidVCEK, a.vcek.Raw},
		{guidASK, a.ask.Raw},
		{guidARK, a.ark.Raw},
	}
	header := (len(entries) + 1) * certTableEntrySize
	size := header
	for _, e := range entries {
		size += len(e.der)
	}
	if size > attestation.MaxEvidenceSize {
		return nil, fmt.Errorf("sim: certificate table: %d bytes exceeds %d", size, attestation.MaxEvidenceSize)
	}
	table := make([]byte, size)
	offset := header
	for i, e := range entries {
		h := table[i*certTableEntrySize:]
		copy(h[0:16], e.guid[:])
		binary.LittleEndian.PutUint32(h[16:20], uint32(offset))
		binary.LittleEndian.PutUint32(h[20:24], uint32(len(e.der)))
		copy(table[offset:], e.der)
		offset += len(e.der)
	}
	return table, nil
}

// Request is what the guest (MEASUREMENT and HOST_DATA come from the
// launch, REPORT_DATA from the guest's request) asks the simulated secure
// processor to sign.
type Request struct {
	Measurement [48]byte
	ReportData  [64]byte
	HostData    [32]byte
	// Debug sets the DEBUG bit of the guest policy.
	Debug bool
	// VMPL is the VM privilege level of the requester, 0-3.
	VMPL     uint32
	GuestSVN uint32
}

// Report returns a signed 1184-byte SEV-SNP ATTESTATION_REPORT (version 3,
// Milan B1 CPUID) for req. The guest policy is ABI 0.0 with SMT allowed,
// plus DEBUG if req.Debug; the signer is the VCEK; CHIP_ID and the current,
// committed, launch and reported TCB are the authority's; REPORT_ID is
// random and REPORT_ID_MA is all ones (no migration agent). The signature
// is ECDSA P-384 over SHA-384 of bytes 0..0x2A0, R and S little-endian.
func (a *Authority) Report(req Request) ([]byte, error) {
	if req.VMPL > maxVMPL {
		return nil, fmt.Errorf("sim: report: vmpl %d out of range 0-%d", req.VMPL, maxVMPL)
	}
	r := make([]byte, ReportSize)
	le := binary.LittleEndian
	le.PutUint32(r[offVersion:], reportVersion)
	le.PutUint32(r[offGuestSVN:], req.GuestSVN)
	policy := uint64(policyBase)
	if req.Debug {
		policy |= policyDebugBit
	}
	le.PutUint64(r[offPolicy:], policy)
	le.PutUint32(r[offVMPL:], req.VMPL)
	le.PutUint32(r[offSignatureAlgo:], sigAlgoECDSAP384SHA384)
	tcb := a.tcb.raw()
	le.PutUint64(r[offCurrentTCB:], tcb)
	le.PutUint64(r[offPlatformInfo:], platformInfo)
	le.PutUint32(r[offSignerInfo:], 0) // VCEK signer, chip id not masked, no author key
	copy(r[offReportData:], req.ReportData[:])
	copy(r[offMeasurement:], req.Measurement[:])
	copy(r[offHostData:], req.HostData[:])
	for i := range 32 {
		r[offReportIDMA+i] = 0xFF
	}
	le.PutUint64(r[offReportedTCB:], tcb)
	r[offCPUIDFamily] = cpuidFamily
	r[offCPUIDModel] = cpuidModel
	r[offCPUIDStepping] = cpuidStepping
	copy(r[offChipID:], a.chipID[:])
	le.PutUint64(r[offCommittedTCB:], tcb)
	for _, off := range []int{offCurrentBuild, offCommitBuild} {
		r[off], r[off+1], r[off+2] = firmwareBuild, firmwareMinor, firmwareMajor
	}
	le.PutUint64(r[offLaunchTCB:], tcb)

	if _, err := io.ReadFull(a.rand, r[offReportID:offReportID+32]); err != nil {
		return nil, fmt.Errorf("sim: report: report id: %w", err)
	}
	digest := sha512.Sum384(r[:offSignature])
	der, err := ecdsa.SignASN1(a.rand, a.vcekKey, digest[:])
	if err != nil {
		return nil, fmt.Errorf("sim: report: sign: %w", err)
	}
	var sig struct{ R, S *big.Int }
	if rest, err := asn1.Unmarshal(der, &sig); err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("sim: report: sign: bad signature encoding")
	}
	putLittleEndian(r[offSignature:offSignature+sigComponentSize], sig.R)
	putLittleEndian(r[offSignature+sigComponentSize:offSignature+2*sigComponentSize], sig.S)
	return r, nil
}

// putLittleEndian writes n into dst as a little-endian unsigned integer,
// zero-padded to len(dst).
func putLittleEndian(dst []byte, n *big.Int) {
	n.FillBytes(dst)
	for i, j := 0, len(dst)-1; i < j; i, j = i+1, j-1 {
		dst[i], dst[j] = dst[j], dst[i]
	}
}

func mustGUID(s string) [16]byte {
	var g [16]byte
	if len(s) != 36 {
		panic("sim: bad GUID " + s)
	}
	b, err := hex.DecodeString(s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36])
	if err != nil || len(b) != 16 {
		panic("sim: bad GUID " + s)
	}
	copy(g[:], b)
	return g
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }
