package evidence

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"

	"github.com/greatjail/cvm/attestation"
)

// The kernel interfaces the TPM provider uses.
const (
	// TPMDevice is the kernel's TPM resource manager device.
	TPMDevice = "/dev/tpmrm0"
	// TPMEventLog is the firmware's measured-boot event log.
	TPMEventLog = "/sys/kernel/security/tpm0/binary_bios_measurements"
)

// DefaultTPMPCRs are the SHA-256 PCRs a TPM provider quotes unless told
// otherwise: the firmware and boot loader PCRs 0 to 7 and PCR 9, where
// the kernel's EFI stub measures the initramfs and command line.
var DefaultTPMPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 9}

// tpmPCRCount is the number of PCRs of a PC Client TPM.
const tpmPCRCount = 24

// pcrReadTries bounds how often Evidence quotes again when a quoted PCR
// was extended between TPM2_Quote and TPM2_PCR_Read.
const pcrReadTries = 3

// TPM gets evidence from a TPM 2.0: a TPM2_Quote over SHA-256 PCRs whose
// qualifying data is the 64 bytes of REPORT_DATA, signed by an ECDSA
// P-256 attestation key (AK) that is a primary key of a hierarchy.
//
// The verifier (attestation/tpm) reports the quote's qualifying data as
// Claims.ReportData, which the broker compares with the digest of the
// runtime data, so the whole 64-byte reportData is the qualifying data.
// A TPM whose largest digest is shorter than 64 bytes (one without
// SHA-512) refuses that with TPM_RC_SIZE.
//
// The AK is created with TPM2_CreatePrimary at the first Evidence call
// and kept until Close. A primary key is derived from the hierarchy's seed
// and the template, so the same TPM yields the same AK until the seed
// changes (TPM2_Clear for the owner hierarchy): that is the key the broker
// enrolls. Its provenance (EK, credential activation) is not established
// here.
//
// ForConfig does not select this provider yet: the measured launch
// configuration's tee is sim, snp or tdx.
type TPM struct {
	// PCRs are the SHA-256 PCRs quoted, each below 24; nil means
	// DefaultTPMPCRs.
	PCRs []int
	// EventLog is the path of the measured-boot event log sent along;
	// "" means none, and a missing file is skipped.
	EventLog string
	// Hierarchy is the hierarchy the AK is a primary key of,
	// tpm2.TPMRHOwner or tpm2.TPMRHEndorsement (both with empty auth);
	// 0 means the owner hierarchy.
	Hierarchy tpm2.TPMHandle

	tpm    transport.TPM
	closer io.Closer // the transport, if OpenTPM opened it

	// mu guards the AK and serializes the commands of one Evidence call.
	mu    sync.Mutex
	ak    *tpm2.NamedHandle // nil until the first Evidence call
	akPub []byte            // TPMT_PUBLIC of ak
}

// NewTPM returns a provider that talks to t, quotes DefaultTPMPCRs and
// reads the event log at TPMEventLog. The caller keeps t: Close flushes
// the AK but does not close t.
func NewTPM(t transport.TPM) *TPM {
	return &TPM{tpm: t, EventLog: TPMEventLog}
}

// OpenTPM opens the TPM device at path (TPMDevice in a guest) and returns
// a provider as NewTPM does; Close closes the device. A missing device
// wraps ErrNoDevice.
func OpenTPM(path string) (*TPM, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s does not exist (is the tpm_tis or tpm_crb driver loaded, and does the VM have a TPM?)", ErrNoDevice, path)
	}
	t, err := linuxtpm.Open(path)
	if err != nil {
		return nil, fmt.Errorf("evidence: tpm: opening %s: %w", path, err)
	}
	p := NewTPM(t)
	p.closer = t
	return p, nil
}

// TEE returns attestation.TEETPM.
func (*TPM) TEE() attestation.TEE { return attestation.TEETPM }

// Close flushes the AK and closes the device if OpenTPM opened it.
func (p *TPM) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	if p.ak != nil {
		if _, err := (tpm2.FlushContext{FlushHandle: p.ak.Handle}).Execute(p.tpm); err != nil {
			errs = append(errs, fmt.Errorf("evidence: tpm: TPM2_FlushContext of the attestation key: %w", err))
		}
		p.ak, p.akPub = nil, nil
	}
	if p.closer != nil {
		if err := p.closer.Close(); err != nil {
			errs = append(errs, fmt.Errorf("evidence: tpm: closing the TPM: %w", err))
		}
		p.closer = nil
	}
	return errors.Join(errs...)
}

// AKTemplate returns the TPMT_PUBLIC template of the AK: an ECC P-256
// restricted signing key with ECDSA SHA-256 that is fixedTPM, fixedParent,
// sensitiveDataOrigin and userWithAuth.
func AKTemplate() tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:            true,
			FixedParent:         true,
			SensitiveDataOrigin: true,
			UserWithAuth:        true,
			Restricted:          true,
			SignEncrypt:         true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTECCScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			CurveID: tpm2.TPMECCNistP256,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: make([]byte, 32)},
			Y: tpm2.TPM2BECCParameter{Buffer: make([]byte, 32)},
		}),
	}
}

// Evidence quotes the PCRs with reportData as qualifying data, reads their
// values and the event log, and returns them with the AK's public area.
func (p *TPM) Evidence(ctx context.Context, reportData [64]byte) (*attestation.Evidence, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if p.tpm == nil {
		return nil, errors.New("evidence: tpm: no TPM (use NewTPM or OpenTPM)")
	}
	indices := p.PCRs
	if indices == nil {
		indices = DefaultTPMPCRs
	}
	indices = slices.Sorted(slices.Values(indices))
	indices = slices.Compact(indices)
	if len(indices) == 0 {
		return nil, errors.New("evidence: tpm: no PCRs to quote")
	}
	sel := make([]uint, len(indices))
	for i, pcr := range indices {
		if pcr < 0 || pcr >= tpmPCRCount {
			return nil, fmt.Errorf("evidence: tpm: PCR %d: a PC Client TPM has PCRs 0 to %d", pcr, tpmPCRCount-1)
		}
		sel[i] = uint(pcr)
	}
	selection := tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash:      tpm2.TPMAlgSHA256,
		PCRSelect: tpm2.PCClientCompatible.PCRs(sel...),
	}}}

	var eventLog []byte
	if p.EventLog != "" {
		b, err := readEventLog(p.EventLog)
		if err != nil {
			return nil, err
		}
		eventLog = b
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.createAK(); err != nil {
		return nil, err
	}
	for try := 1; ; try++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		q, err := tpm2.Quote{
			SignHandle:     *p.ak,
			QualifyingData: tpm2.TPM2BData{Buffer: reportData[:]},
			InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
			PCRSelect:      selection,
		}.Execute(p.tpm)
		if err != nil {
			return nil, fmt.Errorf("evidence: tpm: TPM2_Quote: %w", err)
		}
		attest, err := q.Quoted.Contents()
		if err != nil {
			return nil, fmt.Errorf("evidence: tpm: TPM2_Quote returned a TPMS_ATTEST that does not parse: %w", err)
		}
		info, err := attest.Attested.Quote()
		if err != nil {
			return nil, fmt.Errorf("evidence: tpm: TPM2_Quote returned a TPMS_ATTEST that is not a quote: %w", err)
		}
		pcrs, err := p.readPCRs(indices)
		if err != nil {
			return nil, err
		}
		h := sha256.New()
		for _, i := range indices {
			h.Write(pcrs[i])
		}
		if !bytes.Equal(h.Sum(nil), info.PCRDigest.Buffer) {
			// A PCR was extended between the quote and the read.
			if try < pcrReadTries {
				continue
			}
			return nil, fmt.Errorf("evidence: tpm: the PCRs read by TPM2_PCR_Read do not match the pcrDigest of TPM2_Quote after %d tries (PCRs %v keep being extended)", try, indices)
		}
		return &attestation.Evidence{
			TEE:       attestation.TEETPM,
			Report:    bytes.Clone(q.Quoted.Bytes()),
			Signature: tpm2.Marshal(q.Signature),
			PCRs:      pcrs,
			AKPublic:  bytes.Clone(p.akPub),
			EventLog:  eventLog,
		}, nil
	}
}

// createAK creates the AK if there is none yet.
//
// Preconditions: p.mu is held.
func (p *TPM) createAK() error {
	if p.ak != nil {
		return nil
	}
	hierarchy := p.Hierarchy
	if hierarchy == 0 {
		hierarchy = tpm2.TPMRHOwner
	}
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: hierarchy, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(AKTemplate()),
	}.Execute(p.tpm)
	if err != nil {
		return fmt.Errorf("evidence: tpm: TPM2_CreatePrimary of the attestation key: %w", err)
	}
	p.ak = &tpm2.NamedHandle{Handle: rsp.ObjectHandle, Name: rsp.Name}
	p.akPub = bytes.Clone(rsp.OutPublic.Bytes())
	return nil
}

// readPCRs reads the SHA-256 values of indices. A TPM returns at most a
// few PCRs per TPM2_PCR_Read, so it asks again for the rest.
func (p *TPM) readPCRs(indices []int) (map[int][]byte, error) {
	out := make(map[int][]byte, len(indices))
	for len(out) < len(indices) {
		var want []uint
		for _, i := range indices {
			if _, ok := out[i]; !ok {
				want = append(want, uint(i))
			}
		}
		rsp, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
			Hash:      tpm2.TPMAlgSHA256,
			PCRSelect: tpm2.PCClientCompatible.PCRs(want...),
		}}}}.Execute(p.tpm)
		if err != nil {
			return nil, fmt.Errorf("evidence: tpm: TPM2_PCR_Read of sha256 PCRs %v: %w", want, err)
		}
		var got []int
		for _, s := range rsp.PCRSelectionOut.PCRSelections {
			if s.Hash != tpm2.TPMAlgSHA256 {
				continue
			}
			for byteIdx, b := range s.PCRSelect {
				for bit := range 8 {
					if b&(1<<bit) != 0 {
						got = append(got, byteIdx*8+bit)
					}
				}
			}
		}
		if len(got) == 0 || len(got) != len(rsp.PCRValues.Digests) {
			return nil, fmt.Errorf("evidence: tpm: TPM2_PCR_Read of sha256 PCRs %v returned %d PCRs and %d values (is the sha256 bank allocated?)", want, len(got), len(rsp.PCRValues.Digests))
		}
		for k, i := range got {
			v := rsp.PCRValues.Digests[k].Buffer
			if !slices.Contains(want, uint(i)) || len(v) != sha256.Size {
				return nil, fmt.Errorf("evidence: tpm: TPM2_PCR_Read of sha256 PCRs %v returned PCR %d with %d bytes", want, i, len(v))
			}
			out[i] = bytes.Clone(v)
		}
	}
	return out, nil
}

// readEventLog reads the event log at path; a missing file gives nil.
func readEventLog(path string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("evidence: tpm: event log: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, attestation.MaxEvidenceSize+1))
	if err != nil {
		return nil, fmt.Errorf("evidence: tpm: event log %s: %w", path, err)
	}
	if len(b) > attestation.MaxEvidenceSize {
		return nil, fmt.Errorf("evidence: tpm: event log %s is larger than %d bytes", path, attestation.MaxEvidenceSize)
	}
	return b, nil
}
