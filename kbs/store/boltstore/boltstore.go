// Package boltstore is the key broker's default storage backend: a
// store.Store in one local file, using bbolt (go.etcd.io/bbolt).
//
// Durability: Update returns nil only after bbolt has written the
// transaction's pages and its meta page and synced the file (fdatasync)
// twice, first the pages and then the meta page. A crash of the process or
// of the machine after that loses nothing; a crash before that leaves the
// previous state, never part of a transaction. The machine-crash half
// assumes the disk honours fdatasync. Syncing is never turned off. Open
// also syncs the file's directory, so that a newly created file's name
// survives a machine crash too.
//
// Single process: Open takes an exclusive flock on the file and holds it
// until Close, so only one Store (in this or any other process) uses a file
// at a time; a second Open waits up to Options.Timeout and then fails with
// ErrLocked. flock is advisory and local: keep the file on a local
// filesystem, not NFS. Several key broker replicas need the PostgreSQL
// backend instead.
//
// Concurrency: a Store is safe for concurrent use. bbolt runs one Update at
// a time (others wait for its writer lock) alongside any number of Views,
// each on its own snapshot. Store itself has no mutable state; bbolt's locks
// guard everything. Close waits for running transactions to finish. Neither
// waiting for the writer lock nor a running transaction observes ctx; ctx
// is checked once, before the transaction starts. A View or Update must not
// start another transaction on the same Store from inside its function:
// that can deadlock. A long View can delay an Update that has to grow the
// file's memory map until the View ends.
//
// Layout: the file has one top-level bbolt bucket, "cvm-kbs-store-v1",
// holding one nested bucket per store bucket; a store bucket's counter is
// that nested bucket's bbolt sequence. bbolt refuses empty keys and store
// allows them, so every key is stored after one leading byte 'k', which
// keeps keys in the same byte order. Values are stored as given.
package boltstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/greatjail/cvm/kbs/store"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// DefaultTimeout is how long Open waits for another holder of the file's
// lock when Options.Timeout is zero or negative.
const DefaultTimeout = time.Second

// ErrLocked is returned by Open when another Store, in this process or
// another, holds the file past the timeout.
var ErrLocked = errors.New("boltstore: database file is locked by another process or Store")

// ErrFormat is returned by Open for a bbolt file that is not a key broker
// store (it holds buckets of some other program).
var ErrFormat = errors.New("boltstore: not a key broker store")

// errTxDone is returned by a Tx used after its function returned.
var errTxDone = errors.New("boltstore: transaction used after its function returned")

// rootBucket names the one top-level bucket; the version lets a later
// layout be told apart.
var rootBucket = []byte("cvm-kbs-store-v1")

// keyPrefix is stored in front of every key (see the package doc).
const keyPrefix = 'k'

// Options configures Open.
type Options struct {
	// Timeout bounds the wait for the file lock held by another Store.
	// Zero or negative means DefaultTimeout; it never means waiting
	// forever.
	Timeout time.Duration
}

// Store is a store.Store in one bbolt file. See the package doc for
// durability and concurrency.
type Store struct {
	db   *bolt.DB
	path string
}

var _ store.Store = (*Store)(nil)

// Open opens the store in the file at path, creating the file (mode 0600)
// if it does not exist. The directory must exist. It fails with ErrLocked if
// another Store holds the file for longer than opts.Timeout, and with
// ErrFormat for a bbolt file that is not a key broker store.
func Open(path string, opts Options) (*Store, error) {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s (waited %v)", ErrLocked, path, timeout)
	}
	if err != nil {
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	if err := errors.Join(initRoot(db), syncDir(filepath.Dir(path))); err != nil {
		return nil, errors.Join(fmt.Errorf("boltstore: open %s: %w", path, err), db.Close())
	}
	return &Store{db: db, path: path}, nil
}

// syncDir makes the directory entries in dir durable; bbolt syncs the
// file's contents but not the name of a file it creates.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// initRoot checks that db holds only rootBucket, and creates it in a new
// file. An existing store is only read, so Open does not write.
func initRoot(db *bolt.DB) error {
	var hasRoot bool
	err := db.View(func(btx *bolt.Tx) error {
		return btx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			if !bytes.Equal(name, rootBucket) {
				return fmt.Errorf("%w: unexpected top-level bucket %q", ErrFormat, name)
			}
			hasRoot = true
			return nil
		})
	})
	if err != nil || hasRoot {
		return err
	}
	return db.Update(func(btx *bolt.Tx) error {
		_, err := btx.CreateBucket(rootBucket)
		return err
	})
}

// Close releases the file and its lock, after running transactions end.
// Transactions started after Close fail.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("boltstore: close %s: %w", s.path, err)
	}
	return nil
}

// View implements store.Store.
func (s *Store) View(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("boltstore: view: %w", err)
	}
	return s.run(false, fn)
}

// Update implements store.Store. It returns nil only once the transaction
// is synced to disk.
func (s *Store) Update(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("boltstore: update: %w", err)
	}
	return s.run(true, fn)
}

// run runs fn in a bbolt transaction. fn's own error is returned as is;
// bbolt's (closed database, failed commit) are wrapped.
func (s *Store) run(writable bool, fn func(store.Tx) error) error {
	var fnErr error
	do := func(btx *bolt.Tx) error {
		root := btx.Bucket(rootBucket)
		if root == nil { // Open created it and nothing deletes it
			return fmt.Errorf("%w: bucket %q missing", ErrFormat, rootBucket)
		}
		t := &tx{root: root, writable: writable}
		defer t.done()
		fnErr = fn(t)
		return fnErr
	}
	var err error
	op := "view"
	if writable {
		op = "update"
		err = s.db.Update(do)
	} else {
		err = s.db.View(do)
	}
	if fnErr != nil {
		return fnErr
	}
	if err != nil {
		return fmt.Errorf("boltstore: %s %s: %w", op, s.path, err)
	}
	return nil
}

// tx implements store.Tx over a bbolt transaction. Every slice it returns
// is a copy: bbolt's memory is valid only inside the transaction, and its
// memory map is read-only.
type tx struct {
	root     *bolt.Bucket // nil once the transaction's function returned
	writable bool
}

func (t *tx) done() { t.root = nil }

func storedKey(key string) []byte {
	k := make([]byte, 0, 1+len(key))
	return append(append(k, keyPrefix), key...)
}

// lookup returns the bucket, or nil if it was never written, and whether
// the stored key k is in it, with its value (bbolt memory).
func (t *tx) lookup(bucket string, k []byte) (*bolt.Bucket, []byte, bool) {
	b := t.root.Bucket([]byte(bucket))
	if b == nil {
		return nil, nil, false
	}
	got, v := b.Cursor().Seek(k)
	return b, v, got != nil && bytes.Equal(got, k)
}

// check validates a call: the transaction is live, the names are within
// the limits and, for a write, the transaction is writable.
func (t *tx) check(bucket, key string, write bool) error {
	if t.root == nil {
		return errTxDone
	}
	if write && !t.writable {
		return store.ErrReadOnly
	}
	return store.CheckNames(bucket, key)
}

// bucketForWrite returns bucket, creating it if needed.
func (t *tx) bucketForWrite(bucket string) (*bolt.Bucket, error) {
	b, err := t.root.CreateBucketIfNotExists([]byte(bucket))
	if err != nil {
		return nil, fmt.Errorf("boltstore: bucket %q: %w", bucket, err)
	}
	return b, nil
}

func (t *tx) Get(bucket, key string) ([]byte, error) {
	if err := t.check(bucket, key, false); err != nil {
		return nil, err
	}
	_, v, ok := t.lookup(bucket, storedKey(key))
	if !ok {
		return nil, store.ErrNotFound
	}
	return append([]byte{}, v...), nil
}

func (t *tx) Put(bucket, key string, value []byte) error {
	if err := t.check(bucket, key, true); err != nil {
		return err
	}
	if len(value) > store.MaxValueLen {
		return store.ErrTooLarge
	}
	b, err := t.bucketForWrite(bucket)
	if err != nil {
		return err
	}
	// bbolt keeps the value slice until commit, so give it a copy; never
	// nil, which bbolt would read back as missing.
	if err := b.Put(storedKey(key), append([]byte{}, value...)); err != nil {
		return fmt.Errorf("boltstore: put: %w", err)
	}
	return nil
}

func (t *tx) Delete(bucket, key string) error {
	if err := t.check(bucket, key, true); err != nil {
		return err
	}
	k := storedKey(key)
	b, _, ok := t.lookup(bucket, k)
	if !ok {
		return store.ErrNotFound
	}
	if err := b.Delete(k); err != nil {
		return fmt.Errorf("boltstore: delete: %w", err)
	}
	return nil
}

// Scan implements store.Tx. fn may write to the transaction, including
// deleting the key it is given: after each call the cursor is placed again
// after the last key visited, since bbolt cursors do not survive writes.
// The value passed to fn is a copy in a buffer reused for the next key.
func (t *tx) Scan(bucket, prefix string, fn func(key string, value []byte) error) error {
	if err := t.check(bucket, prefix, false); err != nil {
		return err
	}
	b := t.root.Bucket([]byte(bucket))
	if b == nil {
		return nil
	}
	p := storedKey(prefix)
	c := b.Cursor()
	var last, buf []byte
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); {
		last = append(last[:0], k...)
		buf = append(buf[:0], v...)
		if err := fn(string(last[1:]), buf); err != nil {
			return err
		}
		if !t.writable {
			k, v = c.Next()
			continue
		}
		if k, v = c.Seek(last); k != nil && bytes.Equal(k, last) {
			k, v = c.Next()
		}
	}
	return nil
}

// NextSequence implements store.Tx with bbolt's per-bucket sequence, which
// is part of the bucket's header and so committed or rolled back with the
// transaction.
func (t *tx) NextSequence(bucket string) (uint64, error) {
	if err := t.check(bucket, "", true); err != nil {
		return 0, err
	}
	b, err := t.bucketForWrite(bucket)
	if err != nil {
		return 0, err
	}
	n, err := b.NextSequence()
	if err != nil {
		return 0, fmt.Errorf("boltstore: next sequence: %w", err)
	}
	return n, nil
}
