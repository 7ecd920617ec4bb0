package evidence

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/attestation/runtimedata"
	tpmverify "github.com/greatjail/cvm/attestation/tpm"
)

// swtpm starts a fresh software TPM (the Debian package swtpm) and returns
// a transport to it. The process is killed when the test ends.
func swtpm(t *testing.T) transport.TPM {
	t.Helper()
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		t.Skip("swtpm not installed (Debian packages swtpm swtpm-tools)")
	}
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "tpm.sock")
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "socket", "--tpm2",
		"--server", "type=unixio,path="+sock,
		"--ctrl", "type=unixio,path="+filepath.Join(dir, "ctrl.sock"),
		"--tpmstate", "dir="+state,
		"--flags", "not-need-init,startup-clear")
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting swtpm: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	// Wait for the server socket; swtpm creates it before serving.
	for {
		if fi, err := os.Stat(sock); err == nil && fi.Mode()&os.ModeSocket != 0 {
			break
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("swtpm exited before listening: %v\n%s", err, stderr.Bytes())
		case <-time.After(10 * time.Millisecond):
		}
	}
	tpm, err := linuxudstpm.Open(sock)
	if err != nil {
		t.Fatalf("opening %s: %v", sock, err)
	}
	t.Cleanup(func() { tpm.Close() })
	return tpm
}

// verifyTPM verifies ev trusting the key in its AKPublic.
func verifyTPM(t *testing.T, ev *attestation.Evidence) (*attestation.Claims, error) {
	t.Helper()
	ak, err := tpmverify.ParseAKPublic(ev.AKPublic)
	if err != nil {
		t.Fatalf("ParseAKPublic: %v", err)
	}
	v, err := tpmverify.New(tpmverify.Options{
		Now:        func() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) },
		TrustedAKs: []crypto.PublicKey{ak},
	})
	if err != nil {
		t.Fatal(err)
	}
	return v.Verify(context.Background(), ev)
}

// extended is the value of a reset SHA-256 PCR after extending it with
// the digests in order.
func extended(digests ...[]byte) attestation.Hex {
	v := make([]byte, sha256.Size)
	for _, d := range digests {
		h := sha256.New()
		h.Write(v)
		h.Write(d)
		v = h.Sum(nil)
	}
	return v
}

func TestTPMVerifies(t *testing.T) {
	tpm := swtpm(t)
	measured := sha256.Sum256([]byte("measured initramfs"))
	if _, err := (tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(9), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: measured[:]}}},
	}).Execute(tpm); err != nil {
		t.Fatalf("TPM2_PCR_Extend: %v", err)
	}
	zero := extended()
	pcr9 := extended(measured[:])

	raw := []byte(`{"nonce":"bm9uY2U","tee-pubkey":{"crv":"P-256","kty":"EC","x":"l4qxIkMOBFkrtBrqVqKqCfiB3RirP-X6JnVAGkgn7oY","y":"sZnQqvS0UCBso2uqxrw31EfTo7v2xMKLT-k4T5vmRA0"}}`)
	reportData, err := runtimedata.Digest(raw)
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name      string
		pcrs      []int
		hierarchy tpm2.TPMHandle
		want      map[int]attestation.Hex
	}{
		{"default", nil, 0, map[int]attestation.Hex{0: zero, 1: zero, 2: zero, 3: zero, 4: zero, 5: zero, 6: zero, 7: zero, 9: pcr9}},
		{"unsorted with duplicates", []int{23, 9, 0, 16, 9}, 0, map[int]attestation.Hex{0: zero, 9: pcr9, 16: zero, 23: zero}},
		{"endorsement hierarchy", []int{9}, tpm2.TPMRHEndorsement, map[int]attestation.Hex{9: pcr9}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := NewTPM(tpm)
			p.PCRs, p.Hierarchy, p.EventLog = tc.pcrs, tc.hierarchy, ""
			t.Cleanup(func() {
				if err := p.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			if p.TEE() != attestation.TEETPM {
				t.Errorf("TEE() = %s, want tpm", p.TEE())
			}
			ev, err := p.Evidence(context.Background(), reportData)
			if err != nil {
				t.Fatal(err)
			}
			claims, err := verifyTPM(t, ev)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			want := &attestation.Claims{
				TEE:        attestation.TEETPM,
				Product:    "TPM",
				PCRs:       &attestation.PCRs{Hash: "sha256", Values: tc.want},
				ReportData: reportData[:],
				VerifiedAt: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
				Unchecked:  []string{"event log"},
			}
			if diff := cmp.Diff(want, claims); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
			if err := runtimedata.Check(raw, claims.ReportData); err != nil {
				t.Errorf("runtimedata.Check: %v", err)
			}

			// The AK is kept: a second quote has the same AK and binds
			// its own report data.
			other := reportData
			other[63] ^= 1
			ev2, err := p.Evidence(context.Background(), other)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ev2.AKPublic, ev.AKPublic) {
				t.Errorf("second Evidence has another AK")
			}
			claims2, err := verifyTPM(t, ev2)
			if err != nil {
				t.Fatalf("Verify of the second quote: %v", err)
			}
			if err := runtimedata.Check(raw, claims2.ReportData); !errors.Is(err, runtimedata.ErrMismatch) {
				t.Errorf("runtimedata.Check of a quote of other report data = %v, want ErrMismatch", err)
			}
		})
	}
}

func TestTPMTampered(t *testing.T) {
	p := NewTPM(swtpm(t))
	p.EventLog = ""
	defer p.Close()
	var rd [64]byte
	copy(rd[:], "runtime data digest")
	ev, err := p.Evidence(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verifyTPM(t, ev); err != nil {
		t.Fatalf("Verify of the untampered quote: %v", err)
	}
	for _, tc := range []struct {
		name   string
		tamper func(ev *attestation.Evidence)
		want   error
	}{
		{"report data", func(ev *attestation.Evidence) {
			i := bytes.Index(ev.Report, rd[:])
			if i < 0 {
				t.Fatal("the quote does not contain the report data")
			}
			ev.Report[i] ^= 1
		}, attestation.ErrSignature},
		{"pcr value", func(ev *attestation.Evidence) { ev.PCRs[7][0] ^= 1 }, attestation.ErrMismatch},
		{"pcr missing", func(ev *attestation.Evidence) { delete(ev.PCRs, 9) }, attestation.ErrMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := *ev
			bad.Report = bytes.Clone(ev.Report)
			bad.PCRs = make(map[int][]byte)
			for i, v := range ev.PCRs {
				bad.PCRs[i] = bytes.Clone(v)
			}
			tc.tamper(&bad)
			if _, err := verifyTPM(t, &bad); !errors.Is(err, tc.want) {
				t.Errorf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestTPMBadPCRs(t *testing.T) {
	p := NewTPM(swtpm(t))
	p.EventLog = ""
	defer p.Close()
	for _, tc := range []struct {
		pcrs []int
		want string
	}{
		{[]int{24}, "PCR 24"},
		{[]int{0, -1}, "PCR -1"},
		{[]int{}, "no PCRs"},
	} {
		p.PCRs = tc.pcrs
		_, err := p.Evidence(context.Background(), [64]byte{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Evidence with PCRs %v = %v, want an error naming %q", tc.pcrs, err, tc.want)
		}
	}
}

func TestTPMEventLog(t *testing.T) {
	tpm := swtpm(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "binary_bios_measurements")
	if err := os.WriteFile(log, []byte("event log bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want []byte
	}{
		{log, []byte("event log bytes")},
		{filepath.Join(dir, "missing"), nil},
		{"", nil},
	} {
		p := NewTPM(tpm)
		p.EventLog = tc.path
		ev, err := p.Evidence(context.Background(), [64]byte{})
		if err != nil {
			t.Fatalf("Evidence with event log %q: %v", tc.path, err)
		}
		if diff := cmp.Diff(tc.want, ev.EventLog); diff != "" {
			t.Errorf("event log %q (-want +got):\n%s", tc.path, diff)
		}
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
}

func TestOpenTPMMissing(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "tpmrm0")
	_, err := OpenTPM(missing)
	if !errors.Is(err, ErrNoDevice) || !strings.Contains(err.Error(), missing) {
		t.Errorf("OpenTPM(%s) = %v, want ErrNoDevice naming the path", missing, err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = OpenTPM(file)
	if err == nil || errors.Is(err, ErrNoDevice) || !strings.Contains(err.Error(), file) {
		t.Errorf("OpenTPM(%s) = %v, want an error naming the path that is not ErrNoDevice", file, err)
	}
}
