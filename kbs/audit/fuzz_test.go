package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/greatjail/cvm/kbs/store"
	"github.com/greatjail/cvm/kbs/store/storetest"
)

// FuzzDecodeRecord stores arbitrary bytes as record 1 and as the head (empty
// means no head) and runs Verify, Range and Tail over them. Nothing may
// panic; Verify must fail with a *VerifyError unless the record is exactly
// the canonical encoding of a valid record with a correct hash, Seq 1 and
// Prev Genesis, and the head names it.
func FuzzDecodeRecord(f *testing.F) {
	valid, validHead := seedRecord(f)
	f.Add(valid, validHead)
	f.Add(valid, []byte(nil))
	f.Add(valid, []byte(`{"seq":1,"hash":"`+Genesis+`"}`))
	f.Add(bytes.Replace(valid, []byte(`Z"`), []byte(`+00:00"`), 1), validHead)
	f.Add(bytes.Replace(valid, []byte(`"kind"`), []byte(`"KIND"`), 1), validHead)
	f.Add(bytes.Replace(valid, []byte(`"seq":1`), []byte(`"seq":1.0`), 1), validHead)
	f.Add(bytes.Replace(valid, []byte(`"seq":1`), []byte(`"seq":1,"seq":1`), 1), validHead)
	f.Add(append(bytes.Clone(valid), ' '), validHead)
	f.Add([]byte(`{}`), []byte(`{"seq":0,"hash":"`+Genesis+`"}`))
	f.Add([]byte(`null`), []byte(`null`))
	f.Add([]byte(`{"seq":1,"time":"2026-01-02T03:04:05Z","kind":"attest","actor":"a","action":"b","outcome":"ok","reasons":[],"details":{},"prev":"`+Genesis+`","hash":""}`), []byte(`{`))
	f.Add([]byte("\xff\xfe"), []byte("\x00"))
	f.Fuzz(func(t *testing.T, rec, headJSON []byte) {
		s := storetest.NewMemory()
		err := s.Update(context.Background(), func(tx store.Tx) error {
			if err := tx.Put(bucketRecords, recordKey(1), rec); err != nil {
				return err
			}
			if len(headJSON) == 0 {
				return nil
			}
			return tx.Put(bucketHead, headKey, headJSON)
		})
		if err != nil {
			t.Skip("the store refuses the input:", err) // over the store's size limits
		}
		l := New(s, func() time.Time { return t0 })
		// Reading must not panic, whatever it returns.
		_, _ = l.Range(context.Background(), 1, 10)
		_, _ = l.Tail(context.Background(), 10)

		res, err := l.Verify(context.Background())
		if err != nil {
			var ve *VerifyError
			if !errors.As(err, &ve) || !errors.Is(err, ErrTampered) {
				t.Fatalf("Verify() = %v, want nil or a *VerifyError wrapping ErrTampered", err)
			}
			return
		}
		// Verified: the input must be a canonical, correctly hashed first
		// record, checked here independently of decodeRecord.
		var r Record
		if err := json.Unmarshal(rec, &r); err != nil {
			t.Fatalf("Verify() accepted a record that is not JSON: %v", err)
		}
		canon, err := encode(r)
		if err != nil || !bytes.Equal(canon, rec) {
			t.Fatalf("Verify() accepted a non-canonical record:\n%q\ncanonical:\n%q", rec, canon)
		}
		if want, _ := hashRecord(r); r.Hash != want || r.Seq != 1 || r.Prev != Genesis {
			t.Fatalf("Verify() accepted record seq %d prev %s hash %s (want seq 1, Genesis, %s)", r.Seq, r.Prev, r.Hash, want)
		}
		if res.Records != 1 || res.Head != r.Hash {
			t.Fatalf("Verify() = %+v, want 1 record with head %s", res, r.Hash)
		}
	})
}

// seedRecord returns a valid stored first record and its head.
func seedRecord(f *testing.F) (rec, headJSON []byte) {
	s := storetest.NewMemory()
	r := sample(0)
	r.Reasons = []string{"<tag>&\u2028"}
	if _, err := New(s, func() time.Time { return t0 }).Append(context.Background(), r); err != nil {
		f.Fatal(err)
	}
	err := s.View(context.Background(), func(tx store.Tx) error {
		var err error
		if rec, err = tx.Get(bucketRecords, recordKey(1)); err != nil {
			return err
		}
		headJSON, err = tx.Get(bucketHead, headKey)
		return err
	})
	if err != nil {
		f.Fatal(err)
	}
	return rec, headJSON
}
