// Package store is the key broker's storage contract: a small transactional
// key-value interface that every backend (bbolt embedded, PostgreSQL for
// several replicas) implements and that package storetest checks with one
// conformance suite.
//
// Values are opaque bytes. Secrets are encrypted before they reach a Store
// (see package kbs/resources); a Store never sees plaintext resources.
//
// Durability: when Update returns nil, the transaction's writes survive a
// crash of the process or the machine. When it returns an error, none of
// them happened.
package store

import (
	"context"
	"errors"
)

// ErrNotFound is returned by Tx.Get and Tx.Delete for a missing key.
var ErrNotFound = errors.New("store: not found")

// ErrReadOnly is returned by writes inside a View transaction.
var ErrReadOnly = errors.New("store: read-only transaction")

// Limits every backend enforces, so behaviour does not depend on the
// backend: longer names or larger values fail with ErrTooLarge.
const (
	MaxBucketLen = 64
	MaxKeyLen    = 1024
	MaxValueLen  = 16 << 20
)

// ErrTooLarge is returned for a bucket name, key or value over the limits.
var ErrTooLarge = errors.New("store: bucket, key or value too large")

// Store is a transactional key-value store of named buckets. Buckets exist
// implicitly: reading from a bucket never written is empty, not an error.
// Implementations are safe for concurrent use.
type Store interface {
	// View runs fn in a read-only transaction over a consistent snapshot.
	View(ctx context.Context, fn func(Tx) error) error
	// Update runs fn in a read-write transaction. If fn returns an error
	// the transaction is rolled back and that error returned. Concurrent
	// Updates behave as if run one after another (serializable).
	Update(ctx context.Context, fn func(Tx) error) error
	// Close releases the store. Calls after Close fail.
	Close() error
}

// Tx is a transaction. It must not be used after the function it was passed
// to returns, nor from several goroutines.
type Tx interface {
	// Get returns a copy of the value of key, or ErrNotFound.
	Get(bucket, key string) ([]byte, error)
	// Put sets key to a copy of value.
	Put(bucket, key string, value []byte) error
	// Delete removes key, or returns ErrNotFound.
	Delete(bucket, key string) error
	// Scan calls fn for every key in bucket that starts with prefix, in
	// ascending byte order of keys. The value passed to fn is valid only
	// during the call and must not be modified. Inside an Update, fn may
	// delete or rewrite the key it is visiting (expiry sweeps do). An error
	// from fn stops the scan and is returned.
	Scan(bucket, prefix string, fn func(key string, value []byte) error) error
	// NextSequence returns the next value of bucket's counter: 1 for a
	// new bucket, then strictly increasing by 1 with every committed call.
	// A rolled-back transaction's increments are not kept.
	NextSequence(bucket string) (uint64, error)
}

// CheckNames validates a bucket and key against the limits; backends call
// it so that every backend rejects the same inputs.
func CheckNames(bucket, key string) error {
	if bucket == "" || len(bucket) > MaxBucketLen {
		return errors.Join(ErrTooLarge, errors.New("store: bucket name must be 1 to 64 bytes"))
	}
	if len(key) > MaxKeyLen {
		return ErrTooLarge
	}
	return nil
}
