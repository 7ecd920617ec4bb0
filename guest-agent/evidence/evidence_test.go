package evidence

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/faketsm"
	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/sim"
	"github.com/greatjail/cvm/guest-agent/link"
)

// hostPSP starts a guest and host session pair where the host answers psp
// streams with sign. It returns the guest session.
func hostPSP(t *testing.T, sign func(link.PSPRequest) ([]byte, []byte, error)) *link.Session {
	t.Helper()
	a, b := net.Pipe()
	g, err := link.Guest(a)
	if err != nil {
		t.Fatal(err)
	}
	h, err := link.Host(b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close(); h.Close() })
	go func() {
		for {
			kind, c, err := h.Accept()
			if err != nil {
				return
			}
			if kind != link.KindPSP {
				c.Close()
				continue
			}
			go func() {
				defer c.Close()
				link.AnswerPSP(c, sign)
			}()
		}
	}()
	return g
}

func TestSimVerifies(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	auth, err := sim.New(rand.Reader, now)
	if err != nil {
		t.Fatal(err)
	}
	var measurement [48]byte
	copy(measurement[:], "launch measurement")
	g := hostPSP(t, func(r link.PSPRequest) ([]byte, []byte, error) {
		report, err := auth.Report(sim.Request{Measurement: measurement, ReportData: r.ReportData, VMPL: r.VMPL})
		if err != nil {
			return nil, nil, err
		}
		table, err := auth.CertTable()
		return report, table, err
	})
	var rd [64]byte
	copy(rd[:], "runtime data digest")
	p := &Sim{Link: g}
	ev, err := p.Evidence(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	if ev.TEE != attestation.TEESim || p.TEE() != attestation.TEESim {
		t.Errorf("TEE = %s/%s, want sim", ev.TEE, p.TEE())
	}
	v, err := sim.NewVerifier(auth.RootPEM(), func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(context.Background(), ev)
	if err != nil {
		t.Fatalf("the broker's verifier refuses the sim evidence: %v", err)
	}
	if got, want := []string{string(claims.TEE), hex.EncodeToString(claims.Measurement), hex.EncodeToString(claims.ReportData)},
		[]string{"sim", hex.EncodeToString(measurement[:]), hex.EncodeToString(rd[:])}; !cmp.Equal(got, want) {
		t.Errorf("claims (tee, measurement, report data) = %q, want %q", got, want)
	}
}

func TestSimHostRefuses(t *testing.T) {
	g := hostPSP(t, func(link.PSPRequest) ([]byte, []byte, error) {
		return nil, nil, errors.New("no sim authority configured")
	})
	_, err := (&Sim{Link: g}).Evidence(context.Background(), [64]byte{})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("no sim authority configured")) {
		t.Errorf("Evidence = %v, want the host's refusal", err)
	}
}

func TestSimHostSilent(t *testing.T) {
	g := hostPSP(t, func(link.PSPRequest) ([]byte, []byte, error) {
		select {} // a host that never answers
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := (&Sim{Link: g}).Evidence(ctx, [64]byte{})
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Evidence after cancel = %v, want context.Canceled", err)
	}
}

func fakeTSM() configfsi.Client {
	return &faketsm.Client{Subsystems: map[string]configfsi.Client{"report": faketsm.Report611(0)}}
}

func TestConfigfsTSM(t *testing.T) {
	var rd [64]byte
	copy(rd[:], "nonce and key")
	// The fake renders the outblob from the attributes written.
	out := fmt.Sprintf("privlevel: 0\ninblob: %s", hex.EncodeToString(rd[:]))
	tests := []struct {
		tee  attestation.TEE
		want *attestation.Evidence
	}{
		{attestation.TEESEVSNP, &attestation.Evidence{TEE: "snp", Report: []byte(out), CertTable: []byte("auxblob")}},
		{attestation.TEETDX, &attestation.Evidence{TEE: "tdx", Report: []byte(out)}},
	}
	for _, tt := range tests {
		p := &ConfigfsTSM{Kind: tt.tee, Client: fakeTSM(), Provider: "fake"}
		got, err := p.Evidence(context.Background(), rd)
		if err != nil {
			t.Errorf("%s: %v", tt.tee, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.tee, diff)
		}
	}
	// A report from another provider (the kernel says "fake") is refused.
	p := &ConfigfsTSM{Kind: attestation.TEESEVSNP, Client: fakeTSM(), Provider: "sev_guest"}
	if _, err := p.Evidence(context.Background(), rd); err == nil {
		t.Error("a report from provider fake was accepted as sev_guest")
	}
}

func TestForTEE(t *testing.T) {
	opener := hostPSP(t, nil)
	tests := []struct {
		tee     attestation.TEE
		present []string
		want    string // provider type, "" for an error
	}{
		{"sim", nil, "*evidence.Sim"},
		{"sim", []string{TSMReportDir, SevGuestDevice}, "*evidence.Sim"},
		{"snp", []string{TSMReportDir}, "*evidence.ConfigfsTSM"},
		{"snp", []string{SevGuestDevice}, "evidence.SevGuest"},
		{"snp", []string{TdxGuestDevice}, ""},
		{"snp", nil, ""},
		{"tdx", []string{TSMReportDir, TdxGuestDevice}, "*evidence.ConfigfsTSM"},
		{"tdx", []string{TdxGuestDevice}, "evidence.TdxGuest"},
		{"tdx", nil, ""},
		{"tpm", []string{TSMReportDir}, ""},
	}
	for _, tt := range tests {
		exists := func(p string) bool {
			for _, q := range tt.present {
				if p == q {
					return true
				}
			}
			return false
		}
		p, err := forTEE(tt.tee, opener, exists)
		got := ""
		if err == nil {
			got = fmt.Sprintf("%T", p)
			if p.TEE() != tt.tee {
				t.Errorf("forTEE(%s, %v).TEE() = %s", tt.tee, tt.present, p.TEE())
			}
		}
		if got != tt.want {
			t.Errorf("forTEE(%s, %v) = %s (%v), want %q", tt.tee, tt.present, got, err, tt.want)
		}
		if tt.want == "" && tt.tee != "tpm" && !errors.Is(err, ErrNoDevice) {
			t.Errorf("forTEE(%s, %v) = %v, want ErrNoDevice", tt.tee, tt.present, err)
		}
	}
}

// The hardware providers run only in a real guest of that TEE.

func TestSevGuestDevice(t *testing.T) {
	if _, err := os.Stat(SevGuestDevice); err != nil {
		t.Skipf("%s is absent: not an SEV-SNP guest with sev-guest loaded", SevGuestDevice)
	}
	var rd [64]byte
	copy(rd[:], "sev-guest device test")
	ev, err := SevGuest{}.Evidence(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	if len(ev.Report) < 0x90 || !bytes.Equal(ev.Report[0x50:0x90], rd[:]) {
		t.Errorf("the report does not carry REPORT_DATA at 0x50")
	}
}

func TestTdxGuestDevice(t *testing.T) {
	if _, err := os.Stat(TdxGuestDevice); err != nil {
		t.Skipf("%s is absent: not a TDX guest with tdx-guest loaded", TdxGuestDevice)
	}
	var rd [64]byte
	copy(rd[:], "tdx-guest device test")
	ev, err := TdxGuest{}.Evidence(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(ev.Report, rd[:]) {
		t.Errorf("the quote does not carry REPORT_DATA")
	}
}

func TestConfigfsTSMReal(t *testing.T) {
	if _, err := os.Stat(TSMReportDir); err != nil {
		t.Skipf("%s is absent: no configfs-tsm report provider (not an SNP/TDX guest, or configfs not mounted)", TSMReportDir)
	}
	for tee, name := range tsmProviders {
		p, err := NewConfigfsTSM(tee)
		if err != nil {
			t.Fatal(err)
		}
		var rd [64]byte
		copy(rd[:], "configfs-tsm test")
		ev, err := p.Evidence(context.Background(), rd)
		if err != nil {
			t.Logf("%s (%s): %v", tee, name, err) // only this guest's TEE answers
			continue
		}
		if !bytes.Contains(ev.Report, rd[:]) {
			t.Errorf("%s: the report does not carry REPORT_DATA", tee)
		}
	}
}
