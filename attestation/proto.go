package attestation

import (
	"fmt"
	"time"

	attestationv1 "github.com/greatjail/cvm/proto/cvm/attestation/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var teeToProto = map[TEE]attestationv1.Tee{
	TEESEVSNP: attestationv1.Tee_TEE_SNP,
	TEETDX:    attestationv1.Tee_TEE_TDX,
	TEETPM:    attestationv1.Tee_TEE_TPM,
	TEESim:    attestationv1.Tee_TEE_SIM,
}

// TEEToProto converts a TEE to its protobuf enum; unknown kinds fail with
// ErrUnsupported.
func TEEToProto(t TEE) (attestationv1.Tee, error) {
	v, ok := teeToProto[t]
	if !ok {
		return attestationv1.Tee_TEE_UNSPECIFIED, Errorf(t, "tee", ErrUnsupported, "unknown TEE %q", string(t))
	}
	return v, nil
}

// TEEFromProto converts a protobuf Tee. TEE_UNSPECIFIED and unknown values
// fail with ErrUnsupported.
func TEEFromProto(t attestationv1.Tee) (TEE, error) {
	for k, v := range teeToProto {
		if v == t {
			return k, nil
		}
	}
	return "", Errorf("", "tee", ErrUnsupported, "unknown or unspecified TEE %d", int32(t))
}

// EvidenceFromProto converts wire evidence, enforcing MaxEvidenceSize on
// every field and the PCR index range. It copies nothing it does not need
// to; the result aliases the message's byte slices.
func EvidenceFromProto(m *attestationv1.Evidence) (*Evidence, error) {
	if m == nil {
		return nil, Errorf("", "evidence", ErrMalformed, "no evidence")
	}
	tee, err := TEEFromProto(m.GetTee())
	if err != nil {
		return nil, err
	}
	total := len(m.GetReport()) + len(m.GetSignature()) + len(m.GetCertTable()) + len(m.GetEventLog()) + len(m.GetAkPublic())
	for _, c := range m.GetCertificates() {
		total += len(c)
	}
	for _, p := range m.GetPcrs() {
		total += len(p)
	}
	if total > MaxEvidenceSize {
		return nil, Errorf(tee, "evidence", ErrTooLarge, "%d bytes in all, limit %d", total, MaxEvidenceSize)
	}
	ev := &Evidence{
		TEE:          tee,
		Report:       m.GetReport(),
		Signature:    m.GetSignature(),
		CertTable:    m.GetCertTable(),
		Certificates: m.GetCertificates(),
		EventLog:     m.GetEventLog(),
		AKPublic:     m.GetAkPublic(),
	}
	if len(m.GetPcrs()) > 0 {
		ev.PCRs = make(map[int][]byte, len(m.GetPcrs()))
		for i, v := range m.GetPcrs() {
			if i > 23 {
				return nil, Errorf(tee, "pcrs", ErrMalformed, "PCR index %d out of range 0-23", i)
			}
			ev.PCRs[int(i)] = v
		}
	}
	return ev, nil
}

// EvidenceToProto converts evidence to its wire form.
func EvidenceToProto(ev *Evidence) (*attestationv1.Evidence, error) {
	t, err := TEEToProto(ev.TEE)
	if err != nil {
		return nil, err
	}
	m := &attestationv1.Evidence{
		Tee:          t,
		Report:       ev.Report,
		Signature:    ev.Signature,
		CertTable:    ev.CertTable,
		Certificates: ev.Certificates,
		EventLog:     ev.EventLog,
		AkPublic:     ev.AKPublic,
	}
	if len(ev.PCRs) > 0 {
		m.Pcrs = make(map[uint32][]byte, len(ev.PCRs))
		for i, v := range ev.PCRs {
			if i < 0 || i > 23 {
				return nil, Errorf(ev.TEE, "pcrs", ErrMalformed, "PCR index %d out of range 0-23", i)
			}
			m.Pcrs[uint32(i)] = v
		}
	}
	return m, nil
}

// ClaimsToProto converts verified claims to their wire form.
func ClaimsToProto(c *Claims) (*attestationv1.Claims, error) {
	t, ok := teeToProto[c.TEE]
	if !ok {
		return nil, fmt.Errorf("attestation: claims: unknown TEE %q", string(c.TEE))
	}
	m := &attestationv1.Claims{
		Tee:              t,
		Product:          c.Product,
		Measurement:      c.Measurement,
		ReportData:       c.ReportData,
		HostData:         c.HostData,
		MrConfigId:       c.MRConfigID,
		MrOwner:          c.MROwner,
		MrOwnerConfig:    c.MROwnerConfig,
		Debug:            c.Debug,
		MigrationAgent:   c.MigrationAgent,
		Smt:              c.SMT,
		Policy:           c.Policy,
		GuestSvn:         c.GuestSVN,
		Signer:           c.Signer,
		ChipId:           c.ChipID,
		Unchecked:        c.Unchecked,
		VerifiedAt:       timestamp(&c.VerifiedAt),
		CollateralExpiry: timestamp(c.CollateralExpiry),
	}
	for _, r := range c.RTMRs {
		m.Rtmrs = append(m.Rtmrs, r)
	}
	if c.VMPL != nil {
		v := uint32(*c.VMPL)
		m.Vmpl = &v
	}
	if c.PCRs != nil {
		m.Pcrs = &attestationv1.Pcrs{Hash: c.PCRs.Hash, Values: map[uint32][]byte{}}
		for i, v := range c.PCRs.Values {
			m.Pcrs.Values[uint32(i)] = v
		}
	}
	if c.TCB != nil {
		m.Tcb = &attestationv1.SnpTcb{
			Current:   tcbToProto(c.TCB.Current),
			Committed: tcbToProto(c.TCB.Committed),
			Launch:    tcbToProto(c.TCB.Launch),
			Reported:  tcbToProto(c.TCB.Reported),
		}
	}
	if d := c.TDX; d != nil {
		m.Tdx = &attestationv1.TdxClaims{
			TcbStatus:    d.TCBStatus,
			QeTcbStatus:  d.QETCBStatus,
			AdvisoryIds:  d.AdvisoryIDs,
			TcbDate:      timestamp(d.TCBDate),
			TeeTcbSvn:    d.TEETCBSVN,
			MrSeam:       d.MRSEAM,
			TdAttributes: d.TDAttributes,
			Xfam:         d.XFAM,
			Fmspc:        d.FMSPC,
		}
	}
	return m, nil
}

func tcbToProto(t TCBVersion) *attestationv1.TcbVersion {
	return &attestationv1.TcbVersion{Raw: t.Raw, Bootloader: uint32(t.Bootloader), Tee: uint32(t.TEE), Snp: uint32(t.SNP), Microcode: uint32(t.Microcode), Fmc: uint32(t.FMC)}
}

func timestamp(t *time.Time) *timestamppb.Timestamp {
	if t == nil || t.IsZero() {
		return nil
	}
	return timestamppb.New(*t)
}
