package storetest

import (
	"bytes"
	"context"
	"errors"
	"sort"
	"strings"
	"sync"

	"github.com/greatjail/cvm/kbs/store"
)

// Memory is an in-memory store.Store for tests of packages built on a
// Store. It is not durable and lives in a ...test package so production
// configuration can never select it. It runs the same conformance suite as
// every real backend.
type Memory struct {
	// mu serializes Update transactions and guards data, seq and closed;
	// View takes it for reading.
	mu     sync.RWMutex
	data   map[string]map[string][]byte
	seq    map[string]uint64
	closed bool
}

// NewMemory returns an empty Memory store.
func NewMemory() *Memory {
	return &Memory{data: map[string]map[string][]byte{}, seq: map[string]uint64{}}
}

var errClosed = errors.New("storetest: memory store is closed")

// View implements store.Store.
func (m *Memory) View(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return errClosed
	}
	return fn(&memTx{m: m, readOnly: true})
}

// Update implements store.Store. Writes go to a copy that replaces the
// data only when fn succeeds.
func (m *Memory) Update(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errClosed
	}
	tx := &memTx{m: m, writes: map[string]map[string][]byte{}, seq: map[string]uint64{}}
	if err := fn(tx); err != nil {
		return err
	}
	for b, kv := range tx.writes {
		if m.data[b] == nil {
			m.data[b] = map[string][]byte{}
		}
		for k, v := range kv {
			if v == nil {
				delete(m.data[b], k)
			} else {
				m.data[b][k] = v
			}
		}
	}
	for b, s := range tx.seq {
		m.seq[b] = s
	}
	return nil
}

// Close implements store.Store.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

// memTx overlays pending writes (nil value = deleted) on the committed
// data.
type memTx struct {
	m        *Memory
	readOnly bool
	writes   map[string]map[string][]byte
	seq      map[string]uint64
}

func (t *memTx) lookup(bucket, key string) ([]byte, bool) {
	if w, ok := t.writes[bucket][key]; ok {
		return w, w != nil
	}
	v, ok := t.m.data[bucket][key]
	return v, ok
}

func (t *memTx) Get(bucket, key string) ([]byte, error) {
	if err := store.CheckNames(bucket, key); err != nil {
		return nil, err
	}
	v, ok := t.lookup(bucket, key)
	if !ok {
		return nil, store.ErrNotFound
	}
	return bytes.Clone(v), nil
}

func (t *memTx) set(bucket, key string, v []byte) {
	if t.writes[bucket] == nil {
		t.writes[bucket] = map[string][]byte{}
	}
	t.writes[bucket][key] = v
}

func (t *memTx) Put(bucket, key string, value []byte) error {
	if t.readOnly {
		return store.ErrReadOnly
	}
	if err := store.CheckNames(bucket, key); err != nil {
		return err
	}
	if len(value) > store.MaxValueLen {
		return store.ErrTooLarge
	}
	v := bytes.Clone(value)
	if v == nil {
		v = []byte{}
	}
	t.set(bucket, key, v)
	return nil
}

func (t *memTx) Delete(bucket, key string) error {
	if t.readOnly {
		return store.ErrReadOnly
	}
	if err := store.CheckNames(bucket, key); err != nil {
		return err
	}
	if _, ok := t.lookup(bucket, key); !ok {
		return store.ErrNotFound
	}
	t.set(bucket, key, nil)
	return nil
}

func (t *memTx) Scan(bucket, prefix string, fn func(string, []byte) error) error {
	if err := store.CheckNames(bucket, prefix); err != nil {
		return err
	}
	keys := map[string]bool{}
	for k := range t.m.data[bucket] {
		keys[k] = true
	}
	for k := range t.writes[bucket] {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		if strings.HasPrefix(k, prefix) {
			sorted = append(sorted, k)
		}
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		v, ok := t.lookup(bucket, k)
		if !ok {
			continue
		}
		if err := fn(k, bytes.Clone(v)); err != nil {
			return err
		}
	}
	return nil
}

func (t *memTx) NextSequence(bucket string) (uint64, error) {
	if t.readOnly {
		return 0, store.ErrReadOnly
	}
	if err := store.CheckNames(bucket, ""); err != nil {
		return 0, err
	}
	s, ok := t.seq[bucket]
	if !ok {
		s = t.m.seq[bucket]
	}
	s++
	t.seq[bucket] = s
	return s, nil
}
