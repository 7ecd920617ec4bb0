package boltstore_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/greatjail/cvm/kbs/store"
	"github.com/greatjail/cvm/kbs/store/storetest"
)

// FuzzAgainstMemory runs the same operations on a fresh boltstore and on
// storetest.Memory and wants the same result from every operation and the
// same contents at the end. It targets the key encoding (empty keys, 0x00
// and 0xff bytes, prefixes), Scan over uncommitted writes, writes from
// inside Scan, and rollback.
//
// The bbolt store lives as long as the fuzzing process, since opening one
// costs a few syncs; each input gets its own buckets in it (names prefixed
// with the input's number), so no input sees another's data and a failing
// input fails alone too.
//
// Input: byte 0 bit 0 chooses whether the last transaction commits; then
// operations, each an op byte, a bucket byte, a key (length byte, then
// bytes from a small alphabet) and for Put a value (length byte, bytes).
func FuzzAgainstMemory(f *testing.F) {
	f.Add([]byte{1, 1, 0, 1, 2, 3, 'x', 3, 0, 0})
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 1, 0, 1, 1, 'v', 6, 3, 0, 0, 2, 0, 0, 4, 0})
	f.Add([]byte{1, 1, 1, 2, 5, 5, 2, 'a', 'b', 1, 1, 2, 0, 4, 2, 'z', 'z', 5, 1, 0, 6, 1, 1, 2, 5, 5, 0, 3, 1, 1, 5})
	f.Add([]byte{1, 4, 2, 4, 2, 6, 4, 2, 1, 2, 3, 2, 3, 1, 0, 0, 2, 2, 3, 2, 3})
	bolt := open(f, filepath.Join(f.TempDir(), "kbs.db"))
	f.Cleanup(func() { bolt.Close() })
	inputs := 0 // inputs run one at a time in each fuzzing process
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 4096 {
			return
		}
		inputs++
		commitLast := len(in) > 0 && in[0]&1 == 1
		mem := storetest.NewMemory()
		stores := []store.Store{bolt, mem}
		namespaces := []string{fmt.Sprintf("%d/", inputs), ""}
		var logs [2][]string
		var errs [2][]error
		for i, s := range stores {
			r := &opReader{b: in}
			r.byte() // commit bit
			for !r.empty() {
				errRollback := errors.New("rollback")
				err := s.Update(t.Context(), func(tx store.Tx) error {
					for !r.empty() {
						if !applyOp(tx, namespaces[i], r, &logs[i]) {
							return nil // commit, then a new transaction
						}
					}
					if commitLast {
						return nil
					}
					return errRollback
				})
				if err != nil && !errors.Is(err, errRollback) {
					errs[i] = append(errs[i], err)
				}
			}
		}
		if len(errs[0])+len(errs[1]) > 0 {
			t.Fatalf("Update errors: bolt %v, memory %v", errs[0], errs[1])
		}
		if diff := cmp.Diff(logs[1], logs[0]); diff != "" {
			t.Fatalf("operation results differ (-memory +bolt):\n%s", diff)
		}
		var boltBuckets []string
		for _, b := range fuzzBuckets {
			boltBuckets = append(boltBuckets, namespaces[0]+b)
		}
		boltDump := dump(t, bolt, boltBuckets...)
		for i := range boltDump {
			boltDump[i].Bucket = boltDump[i].Bucket[len(namespaces[0]):]
		}
		if diff := cmp.Diff(dump(t, mem, fuzzBuckets...), boltDump); diff != "" {
			t.Fatalf("contents differ (-memory +bolt):\n%s", diff)
		}
		if diff := cmp.Diff(sequences(t, mem, fuzzBuckets...), sequences(t, bolt, boltBuckets...)); diff != "" {
			t.Fatalf("sequences differ (-memory +bolt):\n%s", diff)
		}
	})
}

// opReader hands out the fuzz input byte by byte, then zeros.
type opReader struct{ b []byte }

func (r *opReader) empty() bool { return len(r.b) == 0 }

func (r *opReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *opReader) bytes(alphabet string) string {
	n := int(r.byte() % 5)
	out := make([]byte, n)
	for i := range out {
		c := r.byte()
		if alphabet != "" {
			c = alphabet[int(c)%len(alphabet)]
		}
		out[i] = c
	}
	return string(out)
}

// fuzzBuckets are the buckets fuzz inputs use, under a namespace prefix.
var fuzzBuckets = []string{"a", "b", "a\x00"}

// applyOp reads one operation from r, runs it on tx in the buckets under
// namespace and logs its result, with bucket names without namespace. It
// returns false for the "commit" operation.
func applyOp(tx store.Tx, namespace string, r *opReader, log *[]string) bool {
	op := r.byte() % 7
	if op == 6 {
		*log = append(*log, "commit")
		return false
	}
	name := fuzzBuckets[r.byte()%3]
	bucket := namespace + name
	key := r.bytes("\x00\x01ab\xfe\xff")
	var res string
	switch op {
	case 0:
		v, err := tx.Get(bucket, key)
		res = fmt.Sprintf("get %q %q = %q %s", name, key, v, errKind(err))
	case 1:
		v := r.bytes("")
		res = fmt.Sprintf("put %q %q %q = %s", name, key, v, errKind(tx.Put(bucket, key, []byte(v))))
	case 2:
		res = fmt.Sprintf("delete %q %q = %s", name, key, errKind(tx.Delete(bucket, key)))
	case 3, 5: // scan; 5 also deletes keys with odd-length values and rewrites the others
		var seen []string
		err := tx.Scan(bucket, key, func(k string, v []byte) error {
			seen = append(seen, fmt.Sprintf("%q=%q", k, v))
			if op == 3 {
				return nil
			}
			if len(v)%2 == 1 {
				return tx.Delete(bucket, k)
			}
			return tx.Put(bucket, k, append([]byte("r"), v...))
		})
		res = fmt.Sprintf("scan%d %q %q = %v %s", op, name, key, seen, errKind(err))
	case 4:
		n, err := tx.NextSequence(bucket)
		res = fmt.Sprintf("seq %q = %d %s", name, n, errKind(err))
	}
	*log = append(*log, res)
	return true
}

func errKind(err error) string {
	for _, e := range []error{store.ErrNotFound, store.ErrReadOnly, store.ErrTooLarge} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	if err != nil {
		return "other: " + err.Error()
	}
	return "ok"
}
