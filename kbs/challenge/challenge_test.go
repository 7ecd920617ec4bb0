package challenge

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/greatjail/cvm/attestation"
	"github.com/greatjail/cvm/kbs/store"
	"github.com/greatjail/cvm/kbs/store/storetest"
)

// Synthetic secrets for tests only.
var (
	testKey  = bytes.Repeat([]byte{0x42}, KeySize)
	otherKey = bytes.Repeat([]byte{0x17}, KeySize)
	t0       = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func newIssuer(t testing.TB, key []byte, c *clock, seed uint64) *Issuer {
	t.Helper()
	var s [32]byte
	s[0] = byte(seed)
	i, err := NewIssuer(key, Options{Now: c.Now, Rand: rand.NewChaCha8(s)})
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func TestIssueCheck(t *testing.T) {
	c := &clock{t: t0.Add(700 * time.Millisecond)}
	iss := newIssuer(t, testKey, c, 1)
	for _, tee := range []attestation.TEE{attestation.TEESEVSNP, attestation.TEETDX, attestation.TEETPM, attestation.TEESim} {
		ch, err := iss.Issue(tee)
		if err != nil {
			t.Fatalf("Issue(%q) = %v", tee, err)
		}
		want := Challenge{Nonce: ch.Nonce, TEE: tee, Expires: t0.Add(DefaultLifetime)}
		if diff := cmp.Diff(want, ch); diff != "" {
			t.Errorf("Issue(%q) mismatch (-want +got):\n%s", tee, diff)
		}
		if got, want := len(ch.Nonce), base64.RawURLEncoding.EncodedLen(fixedSize+len(tee)); got != want {
			t.Errorf("Issue(%q) nonce has %d characters, want %d", tee, got, want)
		}
		if strings.Trim(ch.Nonce, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			t.Errorf("Issue(%q) nonce %q has characters outside base64url", tee, ch.Nonce)
		}
		exp, err := iss.Check(ch.Nonce, tee)
		if err != nil || !exp.Equal(ch.Expires) {
			t.Errorf("Check(Issue(%q)) = %v, %v, want %v, nil", tee, exp, err, ch.Expires)
		}
		// Another replica with the same key, and another random source,
		// accepts it too: no shared state.
		replica := newIssuer(t, testKey, c, 99)
		if _, err := replica.Check(ch.Nonce, tee); err != nil {
			t.Errorf("replica Check(Issue(%q)) = %v", tee, err)
		}
	}
}

func TestIssueNoncesDiffer(t *testing.T) {
	iss := newIssuer(t, testKey, &clock{t: t0}, 1)
	seen := map[string]bool{}
	for range 100 {
		ch, err := iss.Issue(attestation.TEESEVSNP)
		if err != nil {
			t.Fatal(err)
		}
		if seen[ch.Nonce] {
			t.Fatalf("Issue returned %q twice", ch.Nonce)
		}
		seen[ch.Nonce] = true
	}
}

func TestLifetime(t *testing.T) {
	c := &clock{t: t0}
	iss, err := NewIssuer(testKey, Options{Now: c.Now, Rand: rand.NewChaCha8([32]byte{}), Lifetime: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := iss.Issue(attestation.TEETDX)
	if err != nil {
		t.Fatal(err)
	}
	if want := t0.Add(30 * time.Second); !ch.Expires.Equal(want) {
		t.Errorf("Expires = %v, want %v", ch.Expires, want)
	}
	for _, tc := range []struct {
		at   time.Time
		want error
	}{
		{t0, nil},
		{t0.Add(29*time.Second + 999*time.Millisecond), nil},
		{t0.Add(30 * time.Second), ErrExpired},
		{t0.Add(time.Hour), ErrExpired},
	} {
		c.Set(tc.at)
		if _, err := iss.Check(ch.Nonce, attestation.TEETDX); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("Check at %v = %v, want %v", tc.at, err, tc.want)
		}
	}
}

// TestCheckAttacks presents nonces an attacker could make; each has its
// own expected reason.
func TestCheckAttacks(t *testing.T) {
	c := &clock{t: t0}
	iss := newIssuer(t, testKey, c, 1)
	other := newIssuer(t, otherKey, c, 2)
	good, err := iss.Issue(attestation.TEESEVSNP)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Issue(attestation.TEESEVSNP)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(good.Nonce)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	edit := func(f func(b []byte) []byte) string { return enc(f(bytes.Clone(raw))) }
	n := len(attestation.TEESEVSNP)

	tests := []struct {
		name  string
		nonce string
		tee   attestation.TEE
		at    time.Time
		want  error
	}{
		{"genuine", good.Nonce, attestation.TEESEVSNP, t0, nil},
		{"another broker's challenge", foreign.Nonce, attestation.TEESEVSNP, t0, ErrForged},
		{"expiry extended", edit(func(b []byte) []byte { b[2+n+7]++; return b }), attestation.TEESEVSNP, t0, ErrForged},
		{"random part changed", edit(func(b []byte) []byte { b[2+n+8] ^= 1; return b }), attestation.TEESEVSNP, t0, ErrForged},
		{"mac changed", edit(func(b []byte) []byte { b[len(b)-1] ^= 0x80; return b }), attestation.TEESEVSNP, t0, ErrForged},
		{"tee relabelled snp to sim", edit(func(b []byte) []byte { copy(b[2:], "sim"); return b }), attestation.TEESim, t0, ErrForged},
		{"forged and expired: forged wins", foreign.Nonce, attestation.TEESEVSNP, t0.Add(time.Hour), ErrForged},
		{"used for tdx evidence", good.Nonce, attestation.TEETDX, t0, ErrWrongTEE},
		{"used for sim evidence", good.Nonce, attestation.TEESim, t0, ErrWrongTEE},
		{"expired", good.Nonce, attestation.TEESEVSNP, good.Expires, ErrExpired},
		{"expired long ago", good.Nonce, attestation.TEESEVSNP, good.Expires.Add(24 * time.Hour), ErrExpired},
		{"empty", "", attestation.TEESEVSNP, t0, ErrMalformed},
		{"truncated", good.Nonce[:len(good.Nonce)-4], attestation.TEESEVSNP, t0, ErrMalformed},
		{"extended", good.Nonce + "AAAA", attestation.TEESEVSNP, t0, ErrMalformed},
		{"padded", good.Nonce + "=", attestation.TEESEVSNP, t0, ErrMalformed},
		{"line break inserted", good.Nonce[:10] + "\n" + good.Nonce[10:], attestation.TEESEVSNP, t0, ErrMalformed},
		{"carriage return appended", good.Nonce + "\r", attestation.TEESEVSNP, t0, ErrMalformed},
		{"standard base64 alphabet", enc(raw) + "+", attestation.TEESEVSNP, t0, ErrMalformed},
		{"too long", strings.Repeat("A", MaxNonceLen+1), attestation.TEESEVSNP, t0, ErrMalformed},
		{"unknown version", edit(func(b []byte) []byte { b[0] = 2; return b }), attestation.TEESEVSNP, t0, ErrMalformed},
		{"tee length too long", edit(func(b []byte) []byte { b[1] = byte(n + 1); return b }), attestation.TEESEVSNP, t0, ErrMalformed},
		{"tee length zero", edit(func(b []byte) []byte { b[1] = 0; return b }), attestation.TEESEVSNP, t0, ErrMalformed},
		{"tee not lowercase", edit(func(b []byte) []byte { b[2] = 'S'; return b }), attestation.TEESEVSNP, t0, ErrMalformed},
		{"trustee-style nonce", "lQXZSVZldGtmPi8QB50p8BF8ZUn83RAw9hkl80QLPk0=", attestation.TEESEVSNP, t0, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c.Set(tc.at)
			exp, err := iss.Check(tc.nonce, tc.tee)
			if tc.want == nil {
				if err != nil || !exp.Equal(good.Expires) {
					t.Fatalf("Check = %v, %v, want %v, nil", exp, err, good.Expires)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Check = %v, want %v", err, tc.want)
			}
			if !exp.IsZero() {
				t.Errorf("Check returned expiry %v with an error", exp)
			}
			for _, s := range []error{ErrMalformed, ErrForged, ErrExpired, ErrWrongTEE} {
				if s != tc.want && errors.Is(err, s) {
					t.Errorf("Check error %v also wraps %v", err, s)
				}
			}
		})
	}
}

// TestCheckEveryBitFlip: no single-bit change anywhere in a nonce is
// accepted.
func TestCheckEveryBitFlip(t *testing.T) {
	c := &clock{t: t0}
	iss := newIssuer(t, testKey, c, 1)
	ch, err := iss.Issue(attestation.TEETPM)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(ch.Nonce)
	for i := range raw {
		for bit := range 8 {
			b := bytes.Clone(raw)
			b[i] ^= 1 << bit
			_, err := iss.Check(base64.RawURLEncoding.EncodeToString(b), attestation.TEETPM)
			if !errors.Is(err, ErrForged) && !errors.Is(err, ErrMalformed) {
				t.Errorf("byte %d bit %d flipped: Check = %v, want ErrForged or ErrMalformed", i, bit, err)
			}
		}
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("entropy exhausted") }

func TestNewIssuerErrors(t *testing.T) {
	now := func() time.Time { return t0 }
	r := rand.NewChaCha8([32]byte{})
	tests := []struct {
		name string
		key  []byte
		opts Options
	}{
		{"short key", testKey[:31], Options{Now: now, Rand: r}},
		{"long key", append(bytes.Clone(testKey), 0), Options{Now: now, Rand: r}},
		{"zero key", make([]byte, KeySize), Options{Now: now, Rand: r}},
		{"no clock", testKey, Options{Rand: r}},
		{"no random source", testKey, Options{Now: now}},
		{"lifetime under a second", testKey, Options{Now: now, Rand: r, Lifetime: time.Millisecond}},
	}
	for _, tc := range tests {
		if _, err := NewIssuer(tc.key, tc.opts); err == nil {
			t.Errorf("%s: NewIssuer succeeded, want an error", tc.name)
		}
	}
}

func TestIssueErrors(t *testing.T) {
	iss := newIssuer(t, testKey, &clock{t: t0}, 1)
	for _, tee := range []attestation.TEE{"", "sev", "SNP", "a-very-long-tee-name-indeed"} {
		if _, err := iss.Issue(tee); !errors.Is(err, attestation.ErrUnsupported) {
			t.Errorf("Issue(%q) = %v, want ErrUnsupported", tee, err)
		}
	}
	bad, err := NewIssuer(testKey, Options{Now: func() time.Time { return t0 }, Rand: failingReader{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Issue(attestation.TEESEVSNP); err == nil || !strings.Contains(err.Error(), "entropy exhausted") {
		t.Errorf("Issue with a failing random source = %v, want its error", err)
	}
}

// TestReplayAcrossReplicas: two brokers sharing one store are two
// UsedNonces instances; a nonce used at one is refused at the other.
func TestReplayAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	c := &clock{t: t0}
	s := storetest.NewMemory()
	replicaA, replicaB := NewUsedNonces(s), NewUsedNonces(s)
	issA, issB := newIssuer(t, testKey, c, 1), newIssuer(t, testKey, c, 2)

	ch, err := issA.Issue(attestation.TEESEVSNP)
	if err != nil {
		t.Fatal(err)
	}
	exp, err := issA.Check(ch.Nonce, attestation.TEESEVSNP)
	if err != nil {
		t.Fatal(err)
	}
	if err := replicaA.Consume(ctx, ch.Nonce, exp); err != nil {
		t.Fatalf("first Consume = %v", err)
	}
	// The attacker replays the same attestation at replica B: the nonce
	// still checks (it is authentic and unexpired) but is used.
	exp, err = issB.Check(ch.Nonce, attestation.TEESEVSNP)
	if err != nil {
		t.Fatalf("Check at replica B = %v", err)
	}
	if err := replicaB.Consume(ctx, ch.Nonce, exp); !errors.Is(err, ErrReplayed) {
		t.Fatalf("Consume at replica B = %v, want ErrReplayed", err)
	}
	if err := replicaA.Consume(ctx, ch.Nonce, exp); !errors.Is(err, ErrReplayed) {
		t.Fatalf("second Consume at replica A = %v, want ErrReplayed", err)
	}
	// Another challenge is independent.
	ch2, err := issB.Issue(attestation.TEESEVSNP)
	if err != nil {
		t.Fatal(err)
	}
	if err := replicaB.Consume(ctx, ch2.Nonce, ch2.Expires); err != nil {
		t.Fatalf("Consume of a fresh nonce = %v", err)
	}
}

func TestConsumeConcurrent(t *testing.T) {
	ctx := context.Background()
	s := storetest.NewMemory()
	replicas := []*UsedNonces{NewUsedNonces(s), NewUsedNonces(s)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, replayed := 0, 0
	for i := range 16 {
		wg.Go(func() {
			err := replicas[i%2].Consume(ctx, "same-nonce", t0.Add(time.Minute))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, ErrReplayed):
				replayed++
			default:
				t.Errorf("Consume = %v", err)
			}
		})
	}
	wg.Wait()
	if ok != 1 || replayed != 15 {
		t.Errorf("16 concurrent Consumes: %d succeeded, %d replayed; want 1 and 15", ok, replayed)
	}
}

func keys(t *testing.T, s store.Store) []string {
	t.Helper()
	var out []string
	err := s.View(context.Background(), func(tx store.Tx) error {
		return tx.Scan(Bucket, "", func(k string, _ []byte) error {
			out = append(out, k)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPurge(t *testing.T) {
	ctx := context.Background()
	s := storetest.NewMemory()
	u := NewUsedNonces(s)
	for i, d := range []time.Duration{time.Minute, 2 * time.Minute, 5 * time.Minute} {
		if err := u.Consume(ctx, string(rune('a'+i)), t0.Add(d)); err != nil {
			t.Fatal(err)
		}
	}
	// A record that cannot be read is never purged.
	if err := s.Update(ctx, func(tx store.Tx) error { return tx.Put(Bucket, "garbage", []byte("x")) }); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		now  time.Time
		want int
		left []string
	}{
		{t0, 0, []string{nonceKey("a"), nonceKey("b"), nonceKey("c"), "garbage"}},
		{t0.Add(time.Minute - time.Nanosecond), 0, []string{nonceKey("a"), nonceKey("b"), nonceKey("c"), "garbage"}},
		{t0.Add(time.Minute), 1, []string{nonceKey("b"), nonceKey("c"), "garbage"}},
		{t0.Add(4 * time.Minute), 1, []string{nonceKey("c"), "garbage"}},
		{t0.Add(time.Hour), 1, []string{"garbage"}},
		{t0.Add(time.Hour), 0, []string{"garbage"}},
	}
	for _, tc := range tests {
		n, err := u.Purge(ctx, tc.now)
		if err != nil || n != tc.want {
			t.Errorf("Purge(%v) = %d, %v, want %d, nil", tc.now, n, err, tc.want)
		}
		want := slices.Sorted(slices.Values(tc.left))
		if diff := cmp.Diff(want, keys(t, s)); diff != "" {
			t.Errorf("after Purge(%v), keys (-want +got):\n%s", tc.now, diff)
		}
	}
	// A nonce purged after its expiry can be recorded again, but Check
	// refuses it before that would matter.
	if err := u.Consume(ctx, "a", t0.Add(time.Minute)); err != nil {
		t.Errorf("Consume after purge = %v", err)
	}
}

func TestConsumeErrors(t *testing.T) {
	ctx := context.Background()
	s := storetest.NewMemory()
	u := NewUsedNonces(s)
	if err := u.Consume(ctx, "n", time.Time{}); err == nil {
		t.Error("Consume with a zero expiry succeeded")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := u.Consume(cancelled, "n", t0); !errors.Is(err, context.Canceled) {
		t.Errorf("Consume with a cancelled context = %v, want context.Canceled", err)
	}
	if _, err := u.Purge(cancelled, t0); !errors.Is(err, context.Canceled) {
		t.Errorf("Purge with a cancelled context = %v, want context.Canceled", err)
	}
	s.Close()
	if err := u.Consume(ctx, "n", t0); err == nil || errors.Is(err, ErrReplayed) {
		t.Errorf("Consume on a closed store = %v, want a store error", err)
	}
}
