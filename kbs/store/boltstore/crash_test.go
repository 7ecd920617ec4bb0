package boltstore_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/greatjail/cvm/kbs/store"
	"github.com/greatjail/cvm/kbs/store/boltstore"
	bolt "go.etcd.io/bbolt"
)

// crashHelperEnv, when set, makes TestCrashHelper run as the writer process
// of TestCrash, on the store file it names. Only this test file reads it.
const crashHelperEnv = "CVM_BOLTSTORE_CRASH_HELPER"

// The writer's transactions: transaction i (counted by NextSequence) writes
// crashValue(i) under valKey(i) and the running checksum
// sha256(sum(i-1) || value(i)) under sumKey(i), both in crashBucket.
const crashBucket = "crash"

func valKey(i uint64) string { return fmt.Sprintf("v/%016x", i) }
func sumKey(i uint64) string { return fmt.Sprintf("s/%016x", i) }

// crashValue is 20 to 2,000 bytes, so the file's pages fill and split at
// varying points.
func crashValue(i uint64) []byte {
	return bytes.Repeat(fmt.Appendf(nil, "%016x|", i*0x9e3779b97f4a7c15), 1+int(i%117))
}

func nextSum(prev, value []byte) []byte {
	h := sha256.New()
	h.Write(prev)
	h.Write(value)
	return h.Sum(nil)
}

// TestCrashHelper is not a test: it is the writer process TestCrash starts
// and kills. It writes transactions until killed, printing "acked i" after
// each commit of transaction i.
func TestCrashHelper(t *testing.T) {
	path := os.Getenv(crashHelperEnv)
	if path == "" {
		return // not a test: the writer process of TestCrash, run only by it
	}
	// Bounded, in case nobody kills it; a closed stdout also ends it
	// (SIGPIPE on the write).
	const maxTransactions = 100_000
	s, err := boltstore.Open(path, boltstore.Options{Timeout: 5 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for range maxTransactions {
		var i uint64
		err := s.Update(context.Background(), func(tx store.Tx) error {
			var err error
			if i, err = tx.NextSequence(crashBucket); err != nil {
				return err
			}
			var prev []byte
			if i > 1 {
				if prev, err = tx.Get(crashBucket, sumKey(i-1)); err != nil {
					return fmt.Errorf("checksum of transaction %d: %w", i-1, err)
				}
			}
			v := crashValue(i)
			return errors.Join(tx.Put(crashBucket, valKey(i), v), tx.Put(crashBucket, sumKey(i), nextSum(prev, v)))
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		// os.Stdout is unbuffered: one write per line, nothing held back.
		fmt.Fprintf(os.Stdout, "acked %d\n", i)
	}
	os.Exit(4)
}

// TestCrash kills a writer process with SIGKILL in the middle of its
// stream of Updates, several times on the same file, and checks after each
// kill that every acknowledged transaction is there, that no transaction is
// there in part, and that the file passes bbolt's consistency check. The
// first round also checks that the writer's file lock keeps this process
// out.
func TestCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kbs.db")
	rounds := []struct {
		acks  int           // acks to read in this round before killing
		delay time.Duration // then wait this long, so the kill lands anywhere in a commit
	}{
		{acks: 300, delay: 0},
		{acks: 200, delay: 700 * time.Microsecond},
		{acks: 400, delay: 2300 * time.Microsecond},
	}
	// A slow disk (two syncs per commit) can make a round's acks take
	// long; a round then stops at its time limit instead, so the whole test
	// stays under 10 s, and the test logs how many acks it got.
	const roundLimit = 2500 * time.Millisecond
	var acked uint64 // highest transaction acknowledged over all rounds
	for r, round := range rounds {
		got, last := crashRound(t, path, round.acks, round.delay, roundLimit, r == 0)
		if last < acked {
			t.Fatalf("round %d: acks went back from %d to %d", r, acked, last)
		}
		acked = last
		n := checkCrashedStore(t, path)
		t.Logf("round %d: killed after %d acks (target %d), last acked %d, store holds %d", r, got, round.acks, acked, n)
		if n < acked {
			t.Fatalf("round %d: store holds transactions 1..%d, but %d was acknowledged", r, n, acked)
		}
		// At most the one transaction in flight at the kill committed
		// without its ack reaching us.
		if n > acked+1 {
			t.Fatalf("round %d: store holds transactions 1..%d, only %d acknowledged: more than one unacknowledged commit", r, n, acked)
		}
	}
}

// crashRound starts the writer on path, reads at least acks acks (or until
// limit), waits delay, kills it and reads the acks still in the pipe. It
// returns how many acks it read and the highest.
func crashRound(t *testing.T, path string, acks int, delay, limit time.Duration, checkLock bool) (int, uint64) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashHelperEnv+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start writer: %v", err)
	}
	killed := false
	kill := func() {
		if !killed {
			killed = true
			if err := cmd.Process.Kill(); err != nil {
				t.Errorf("kill writer: %v", err)
			}
		}
	}
	defer kill()

	// The reader goroutine owns stdout until EOF, which comes once the
	// writer is dead; it then closes lines.
	lines := make(chan uint64, 1024)
	readErr := make(chan error, 1)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			rest, ok := strings.CutPrefix(sc.Text(), "acked ")
			if !ok {
				continue // the test framework's own output
			}
			i, err := strconv.ParseUint(rest, 10, 64)
			if err != nil {
				readErr <- fmt.Errorf("bad line %q", sc.Text())
				return
			}
			lines <- i
		}
		readErr <- sc.Err()
	}()

	var n int
	var last uint64
	take := func(i uint64) {
		if i != last+1 && last != 0 {
			t.Errorf("writer acked %d after %d", i, last)
		}
		n, last = n+1, i
	}
	timeout := time.After(limit)
reading:
	for n < acks {
		select {
		case i, ok := <-lines:
			if !ok {
				break reading // writer ended by itself: reported below
			}
			take(i)
			if checkLock && n == 1 {
				checkLocked(t, path)
			}
		case <-timeout:
			break reading
		}
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	kill()
	for i := range lines {
		take(i)
	}
	if err := <-readErr; err != nil {
		t.Errorf("reading writer's output: %v", err)
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !exit.Sys().(syscall.WaitStatus).Signaled() ||
		exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("writer ended with %v, want killed by SIGKILL; stderr:\n%s", err, stderr.Bytes())
	}
	if n == 0 {
		t.Fatalf("writer acknowledged nothing before the kill; stderr:\n%s", stderr.Bytes())
	}
	return n, last
}

// checkLocked checks that a second Open fails while the writer holds the
// file, naming the file.
func checkLocked(t *testing.T, path string) {
	t.Helper()
	s, err := boltstore.Open(path, boltstore.Options{Timeout: 100 * time.Millisecond})
	if err == nil {
		s.Close()
		t.Fatalf("Open while the writer holds the file = nil error, want %v", boltstore.ErrLocked)
	}
	if !errors.Is(err, boltstore.ErrLocked) || !strings.Contains(err.Error(), path) {
		t.Errorf("Open while the writer holds the file = %v, want %v naming %s", err, boltstore.ErrLocked, path)
	}
}

// checkCrashedStore checks the file after a kill and returns n: the store
// holds transactions 1..n, each complete, with an unbroken checksum chain,
// and the sequence continues at n+1.
func checkCrashedStore(t *testing.T, path string) uint64 {
	t.Helper()
	// bbolt's own check of pages, freelist and key order first.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("bbolt open after kill: %v", err)
	}
	err = db.View(func(btx *bolt.Tx) error {
		var errs []error
		for err := range btx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
	if err := errors.Join(err, db.Close()); err != nil {
		t.Fatalf("bbolt consistency check after kill: %v", err)
	}

	s, err := boltstore.Open(path, boltstore.Options{})
	if err != nil {
		t.Fatalf("Open after kill: %v", err)
	}
	defer s.Close()
	vals, sums := map[uint64][]byte{}, map[uint64][]byte{}
	err = s.View(t.Context(), func(tx store.Tx) error {
		return tx.Scan(crashBucket, "", func(k string, v []byte) error {
			m := vals
			if strings.HasPrefix(k, "s/") {
				m = sums
			}
			i, err := strconv.ParseUint(k[2:], 16, 64)
			if err != nil {
				return fmt.Errorf("unexpected key %q", k)
			}
			m[i] = bytes.Clone(v)
			return nil
		})
	})
	if err != nil {
		t.Fatalf("View after kill: %v", err)
	}
	n := uint64(len(vals))
	var prev []byte
	for i := uint64(1); i <= n; i++ {
		v, okV := vals[i]
		sum, okS := sums[i]
		switch {
		case !okV:
			t.Fatalf("transactions are not 1..%d: %d missing", n, i)
		case !okS:
			t.Fatalf("transaction %d is partial: value without checksum", i)
		case !bytes.Equal(v, crashValue(i)):
			t.Fatalf("transaction %d: value %q, want %q", i, v, crashValue(i))
		}
		prev = nextSum(prev, v)
		if !bytes.Equal(sum, prev) {
			t.Fatalf("transaction %d: checksum %x, want %x", i, sum, prev)
		}
	}
	if len(sums) != len(vals) {
		t.Fatalf("store holds %d checksums for %d values: a transaction is partial", len(sums), len(vals))
	}
	errPeek := errors.New("peek only")
	err = s.Update(t.Context(), func(tx store.Tx) error {
		got, err := tx.NextSequence(crashBucket)
		if err != nil {
			return err
		}
		if got != n+1 {
			t.Errorf("NextSequence after kill = %d, want %d", got, n+1)
		}
		return errPeek
	})
	if !errors.Is(err, errPeek) {
		t.Fatalf("Update after kill = %v", err)
	}
	return n
}
