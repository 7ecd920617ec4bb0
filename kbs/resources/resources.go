// Package resources keeps the key broker's resources (disk keys, image
// keys, other secrets), versioned and encrypted at rest, in a store.Store.
//
// # Names and versions
//
// A resource is named by a path such as "repo/type/tag" (ValidName: 1 to 8
// segments of [A-Za-z0-9._-], each 1 to 128 bytes and not "." or "..",
// 512 bytes in all). Put stores a new version, numbered one more than the
// last version ever stored under that name: numbers are never reused,
// even after Delete, so a version number names one content forever. Get
// with version 0 returns the latest.
//
// # Encryption at rest
//
// Every version is encrypted with AES-256-GCM under a key-encryption key
// (KEK) read from a file (LoadKEK), with a fresh random 96-bit nonce. The
// additional data binds the ciphertext to its place:
//
//	"cvm-kbs resource v1" 0x00 || name || 0x00 || version (8 bytes, big-endian) || envelope header
//
// so a ciphertext copied to another name or version, or with its header
// edited, fails to decrypt (ErrCorrupt). The stored value (the envelope)
// is
//
//	offset  size  field
//	0       4     magic "CVMR"
//	4       1     format, 1
//	5       1     length of the KEK ID, 16
//	6       16    KEK ID, lowercase hex of the first 8 bytes of SHA-256(KEK)
//	22      8     creation time, Unix nanoseconds, big-endian signed
//	30      12    nonce
//	42      n+16  AES-256-GCM ciphertext and tag of the n-byte resource
//
// Metadata (size, creation time, KEK ID) is read from the header without
// decrypting. Store layout, in bucket "resources": key "v/<name>@<version,
// 10 decimal digits>" holds an envelope; key "seq/<name>" holds the last
// version number ever assigned, in decimal, and survives Delete.
//
// A resource leaves this package in plaintext only through Get; the
// broker seals it to an attested TEE key (package kbs/seal) before it
// leaves the process.
//
// # KEK rotation
//
// New takes a list of KEKs: the first is current and encrypts every
// write; the others only decrypt. The ID stored with each envelope says
// which KEK it needs. To rotate, with one or several replicas sharing a
// store:
//
//  1. Make a new KEK: 32 random bytes, raw or as 64 hex characters
//     (for example `openssl rand -hex 32 > kek-new`), readable only by the
//     broker.
//  2. Give every replica both keys, old first: [old, new]. Nothing is
//     written under the new key yet, so a replica still on [old] can read
//     everything.
//  3. Once every replica has both, swap the order on every replica:
//     [new, old]. New writes use the new key; every replica can read both.
//  4. Call Rotate (once, on any replica). It re-encrypts, in one
//     transaction, every version not under the current KEK, and returns
//     how many. List then shows the new KEK ID on every resource.
//  5. Remove the old key from every replica and destroy it. Backups of the
//     store taken before step 4 still need the old key: keep it as long as
//     those backups.
//
// A Get of a version whose KEK is not loaded fails with ErrUnknownKEK,
// naming the KEK ID it needs.
//
// # Concurrency
//
// A Store is safe for concurrent use. Its KEKs and clock never change
// after New; mu serializes reads from the random source. Every operation
// is one store transaction, so concurrent Puts to one name get distinct
// versions (store.Store.Update is serializable).
package resources

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/greatjail/cvm/kbs/store"
)

// Sentinel errors.
var (
	// ErrNotFound: no such resource or version.
	ErrNotFound = errors.New("resources: not found")
	// ErrInvalidName: the name does not pass ValidName.
	ErrInvalidName = errors.New("resources: invalid name")
	// ErrTooLarge: the resource is larger than MaxSize.
	ErrTooLarge = errors.New("resources: resource too large")
	// ErrCorrupt: a stored envelope is malformed or does not decrypt
	// under its KEK: tampered, truncated, or moved to another name or
	// version.
	ErrCorrupt = errors.New("resources: stored resource corrupt")
	// ErrUnknownKEK: a stored envelope names a KEK that is not loaded.
	ErrUnknownKEK = errors.New("resources: key-encryption key not loaded")
)

const (
	// MaxSize is the largest resource Put accepts.
	MaxSize = 1 << 20
	// KEKSize is the size of a key-encryption key.
	KEKSize = 32
	// Bucket is the store bucket resources live in.
	Bucket = "resources"
	// MaxVersion is the largest version number (10 decimal digits).
	MaxVersion = 9_999_999_999

	maxSegments   = 8
	maxSegmentLen = 128
	maxNameLen    = 512

	dataPrefix = "v/"
	seqPrefix  = "seq/"

	magic      = "CVMR"
	format     = 1
	kekIDLen   = 16 // hex characters
	nonceSize  = 12
	tagSize    = 16
	headerSize = 4 + 1 + 1 + kekIDLen + 8
	minEnvSize = headerSize + nonceSize + tagSize
)

var aadLabel = []byte("cvm-kbs resource v1\x00")

// KEK is a key-encryption key.
type KEK struct {
	id   string
	aead cipher.AEAD
}

// LoadKEK parses the contents of a KEK file: exactly 32 raw bytes, or 64
// hex characters optionally followed by one newline ("\n" or "\r\n"). An
// all-zero key is refused.
func LoadKEK(b []byte) (*KEK, error) {
	var key []byte
	switch {
	case len(b) == KEKSize:
		key = bytes.Clone(b)
	default:
		s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if len(s) != 2*KEKSize {
			return nil, fmt.Errorf("resources: kek must be %d raw bytes or %d hex characters, got %d bytes", KEKSize, 2*KEKSize, len(b))
		}
		k, err := hex.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("resources: kek: %d characters but not hex", len(s))
		}
		key = k
	}
	if bytes.Equal(key, make([]byte, KEKSize)) {
		return nil, errors.New("resources: kek is all zeros")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("resources: kek: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("resources: kek: %w", err)
	}
	sum := sha256.Sum256(key)
	clear(key)
	return &KEK{id: hex.EncodeToString(sum[:8]), aead: aead}, nil
}

// ID returns the KEK's identifier: lowercase hex of the first 8 bytes of
// SHA-256 of the key.
func (k *KEK) ID() string { return k.id }

// String returns "KEK <id>"; the key itself is never printed.
func (k *KEK) String() string { return "KEK " + k.id }

// GoString is String, so %#v does not print the key either.
func (k *KEK) GoString() string { return k.String() }

// Meta describes one version of a resource.
type Meta struct {
	Name    string
	Version int
	// Size is the plaintext size in bytes.
	Size    int
	Created time.Time
	// KEKID is the ID of the KEK the version is encrypted under.
	KEKID string
}

// Store is the resource store.
type Store struct {
	s       store.Store
	current *KEK
	keks    map[string]*KEK // by ID, current included
	now     func() time.Time

	// mu guards rand, which need not be safe for concurrent use.
	mu   sync.Mutex
	rand io.Reader
}

// New returns a Store over s. keks[0] encrypts every write; all of keks
// decrypt. rand supplies GCM nonces (crypto/rand.Reader in production);
// now stamps creation times.
func New(s store.Store, keks []*KEK, rand io.Reader, now func() time.Time) (*Store, error) {
	if s == nil || rand == nil || now == nil {
		return nil, errors.New("resources: store, random source and clock are required")
	}
	if len(keks) == 0 {
		return nil, errors.New("resources: no key-encryption key")
	}
	r := &Store{s: s, current: keks[0], keks: map[string]*KEK{}, now: now, rand: rand}
	for _, k := range keks {
		if k == nil {
			return nil, errors.New("resources: nil key-encryption key")
		}
		if _, dup := r.keks[k.id]; dup {
			return nil, fmt.Errorf("resources: KEK %s given twice", k.id)
		}
		r.keks[k.id] = k
	}
	return r, nil
}

// ValidName reports whether name is a valid resource name: 1 to 8
// segments separated by "/", each 1 to 128 bytes of [A-Za-z0-9._-] and
// neither "." nor "..", at most 512 bytes in all. The error wraps
// ErrInvalidName.
func ValidName(name string) error {
	bad := func(why string) error { return fmt.Errorf("%w %q: %s", ErrInvalidName, truncate(name), why) }
	if name == "" {
		return bad("empty")
	}
	if len(name) > maxNameLen {
		return bad(fmt.Sprintf("%d bytes, limit %d", len(name), maxNameLen))
	}
	segs := strings.Split(name, "/")
	if len(segs) > maxSegments {
		return bad(fmt.Sprintf("%d segments, limit %d", len(segs), maxSegments))
	}
	for _, s := range segs {
		switch {
		case s == "":
			return bad("empty segment")
		case s == "." || s == "..":
			return bad(fmt.Sprintf("segment %q", s))
		case len(s) > maxSegmentLen:
			return bad(fmt.Sprintf("segment of %d bytes, limit %d", len(s), maxSegmentLen))
		}
		for i := 0; i < len(s); i++ {
			c := s[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
				return bad(fmt.Sprintf("byte %q not allowed", c))
			}
		}
	}
	return nil
}

// truncate shortens a name for an error message.
func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

func dataKey(name string, version int) string {
	return fmt.Sprintf("%s%s@%010d", dataPrefix, name, version)
}

// parseDataKey splits a data key into name and version.
func parseDataKey(key string) (string, int, bool) {
	rest, ok := strings.CutPrefix(key, dataPrefix)
	if !ok {
		return "", 0, false
	}
	at := strings.LastIndexByte(rest, '@')
	if at < 0 || len(rest)-at-1 != 10 {
		return "", 0, false
	}
	v, err := strconv.Atoi(rest[at+1:])
	if err != nil || v < 1 {
		return "", 0, false
	}
	return rest[:at], v, true
}

// envelope is a decoded stored value.
type envelope struct {
	kekID      string
	created    time.Time
	nonce      []byte
	ciphertext []byte
	header     []byte // bytes 0 .. headerSize
}

// decodeEnvelope parses a stored value. It checks structure only; the
// GCM tag authenticates the rest.
func decodeEnvelope(b []byte) (envelope, error) {
	if len(b) < minEnvSize {
		return envelope{}, fmt.Errorf("%d bytes, too short", len(b))
	}
	if string(b[:4]) != magic {
		return envelope{}, errors.New("bad magic")
	}
	if b[4] != format {
		return envelope{}, fmt.Errorf("unknown format %d", b[4])
	}
	if b[5] != kekIDLen {
		return envelope{}, fmt.Errorf("KEK ID length %d", b[5])
	}
	id := string(b[6 : 6+kekIDLen])
	for i := 0; i < len(id); i++ {
		if c := id[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return envelope{}, errors.New("KEK ID is not lowercase hex")
		}
	}
	return envelope{
		kekID:      id,
		created:    time.Unix(0, int64(binary.BigEndian.Uint64(b[6+kekIDLen:headerSize]))).UTC(),
		nonce:      b[headerSize : headerSize+nonceSize],
		ciphertext: b[headerSize+nonceSize:],
		header:     b[:headerSize],
	}, nil
}

// decodeStored is decodeEnvelope for the value stored for name and
// version, with errors wrapping ErrCorrupt.
func decodeStored(name string, version int, b []byte) (envelope, error) {
	e, err := decodeEnvelope(b)
	if err != nil {
		return envelope{}, fmt.Errorf("%w: %q version %d: %v", ErrCorrupt, name, version, err)
	}
	return e, nil
}

func aad(name string, version int, header []byte) []byte {
	a := make([]byte, 0, len(aadLabel)+len(name)+1+8+len(header))
	a = append(a, aadLabel...)
	a = append(a, name...)
	a = append(a, 0)
	a = binary.BigEndian.AppendUint64(a, uint64(version))
	return append(a, header...)
}

// seal encrypts data for name and version under the current KEK.
func (r *Store) seal(name string, version int, created time.Time, data []byte) ([]byte, error) {
	out := make([]byte, 0, minEnvSize+len(data))
	out = append(out, magic...)
	out = append(out, format, kekIDLen)
	out = append(out, r.current.id...)
	out = binary.BigEndian.AppendUint64(out, uint64(created.UnixNano()))
	nonce := make([]byte, nonceSize)
	r.mu.Lock()
	_, err := io.ReadFull(r.rand, nonce)
	r.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("resources: reading random bytes: %w", err)
	}
	out = append(out, nonce...)
	return r.current.aead.Seal(out, nonce, data, aad(name, version, out[:headerSize])), nil
}

// open decrypts the envelope stored for name and version.
func (r *Store) open(name string, version int, e envelope) ([]byte, error) {
	k, ok := r.keks[e.kekID]
	if !ok {
		return nil, fmt.Errorf("%w: %q version %d is encrypted under KEK %s, which is not loaded (loaded: %s)",
			ErrUnknownKEK, name, version, e.kekID, strings.Join(r.loaded(), ", "))
	}
	pt, err := k.aead.Open(nil, e.nonce, e.ciphertext, aad(name, version, e.header))
	if err != nil {
		return nil, fmt.Errorf("%w: %q version %d does not decrypt under KEK %s", ErrCorrupt, name, version, e.kekID)
	}
	return pt, nil
}

func (r *Store) loaded() []string {
	ids := make([]string, 0, len(r.keks))
	for id := range r.keks {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func meta(name string, version int, e envelope) Meta {
	return Meta{Name: name, Version: version, Size: len(e.ciphertext) - tagSize, Created: e.created, KEKID: e.kekID}
}

// Put stores data as a new version of name and returns its metadata.
func (r *Store) Put(ctx context.Context, name string, data []byte) (Meta, error) {
	var m Meta
	err := r.s.Update(ctx, func(tx store.Tx) error {
		var err error
		m, err = r.PutTx(tx, name, data)
		return err
	})
	if err != nil {
		return Meta{}, err
	}
	return m, nil
}

// PutTx is Put inside the caller's read-write transaction of the Store's
// store.Store, so that other records (an audit entry) commit or roll back
// with it.
func (r *Store) PutTx(tx store.Tx, name string, data []byte) (Meta, error) {
	if err := ValidName(name); err != nil {
		return Meta{}, err
	}
	if len(data) > MaxSize {
		return Meta{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), MaxSize)
	}
	last := 0
	switch b, err := tx.Get(Bucket, seqPrefix+name); {
	case err == nil:
		n, perr := strconv.Atoi(string(b))
		if perr != nil || n < 1 || n > MaxVersion {
			return Meta{}, fmt.Errorf("%w: version counter of %q is %q", ErrCorrupt, name, b)
		}
		last = n
	case !errors.Is(err, store.ErrNotFound):
		return Meta{}, fmt.Errorf("resources: put %q: %w", name, err)
	}
	if last >= MaxVersion {
		return Meta{}, fmt.Errorf("resources: put %q: no version numbers left", name)
	}
	version := last + 1
	created := r.now().UTC()
	env, err := r.seal(name, version, created, data)
	if err != nil {
		return Meta{}, err
	}
	if err := tx.Put(Bucket, dataKey(name, version), env); err != nil {
		return Meta{}, fmt.Errorf("resources: put %q: %w", name, err)
	}
	if err := tx.Put(Bucket, seqPrefix+name, []byte(strconv.Itoa(version))); err != nil {
		return Meta{}, fmt.Errorf("resources: put %q: %w", name, err)
	}
	return Meta{Name: name, Version: version, Size: len(data), Created: time.Unix(0, created.UnixNano()).UTC(), KEKID: r.current.id}, nil
}

// lookup finds the stored envelope of name at version (0 = latest).
func lookup(tx store.Tx, name string, version int) (int, []byte, error) {
	if err := ValidName(name); err != nil {
		return 0, nil, err
	}
	if version < 0 || version > MaxVersion {
		return 0, nil, fmt.Errorf("%w: %q version %d", ErrNotFound, name, version)
	}
	if version > 0 {
		b, err := tx.Get(Bucket, dataKey(name, version))
		if errors.Is(err, store.ErrNotFound) {
			return 0, nil, fmt.Errorf("%w: %q version %d", ErrNotFound, name, version)
		}
		if err != nil {
			return 0, nil, fmt.Errorf("resources: get %q: %w", name, err)
		}
		return version, b, nil
	}
	var latest []byte
	err := tx.Scan(Bucket, dataPrefix+name+"@", func(key string, value []byte) error {
		n, v, ok := parseDataKey(key)
		if ok && n == name && v > version {
			version, latest = v, bytes.Clone(value)
		}
		return nil
	})
	if err != nil {
		return 0, nil, fmt.Errorf("resources: get %q: %w", name, err)
	}
	if latest == nil {
		return 0, nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return version, latest, nil
}

// Get returns version of name (0 = the latest) decrypted, with its
// metadata. It fails with ErrNotFound, ErrInvalidName, ErrCorrupt or
// ErrUnknownKEK.
func (r *Store) Get(ctx context.Context, name string, version int) ([]byte, Meta, error) {
	var (
		data []byte
		m    Meta
	)
	err := r.s.View(ctx, func(tx store.Tx) error {
		v, b, err := lookup(tx, name, version)
		if err != nil {
			return err
		}
		e, err := decodeStored(name, v, b)
		if err != nil {
			return err
		}
		if data, err = r.open(name, v, e); err != nil {
			return err
		}
		m = meta(name, v, e)
		return nil
	})
	if err != nil {
		return nil, Meta{}, err
	}
	return data, m, nil
}

// Stat returns the metadata of version of name (0 = the latest) without
// decrypting it.
func (r *Store) Stat(ctx context.Context, name string, version int) (Meta, error) {
	var m Meta
	err := r.s.View(ctx, func(tx store.Tx) error {
		v, b, err := lookup(tx, name, version)
		if err != nil {
			return err
		}
		e, err := decodeStored(name, v, b)
		if err != nil {
			return err
		}
		m = meta(name, v, e)
		return nil
	})
	return m, err
}

// scan calls fn for every stored version, in name then version order
// within a name's keys.
func scan(tx store.Tx, prefix string, fn func(name string, version int, e envelope) error) error {
	return tx.Scan(Bucket, dataPrefix+prefix, func(key string, value []byte) error {
		name, v, ok := parseDataKey(key)
		if !ok {
			return fmt.Errorf("%w: stray key %q", ErrCorrupt, key)
		}
		e, err := decodeStored(name, v, value)
		if err != nil {
			return err
		}
		return fn(name, v, e)
	})
}

// Versions returns the metadata of every stored version of name, oldest
// first, or ErrNotFound.
func (r *Store) Versions(ctx context.Context, name string) ([]Meta, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	var out []Meta
	err := r.s.View(ctx, func(tx store.Tx) error {
		return scan(tx, name+"@", func(n string, v int, e envelope) error {
			if n == name {
				out = append(out, meta(n, v, e))
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	slices.SortFunc(out, func(a, b Meta) int { return a.Version - b.Version })
	return out, nil
}

// List returns the metadata of the latest version of every resource,
// sorted by name.
func (r *Store) List(ctx context.Context) ([]Meta, error) {
	latest := map[string]Meta{}
	err := r.s.View(ctx, func(tx store.Tx) error {
		return scan(tx, "", func(name string, v int, e envelope) error {
			if m, ok := latest[name]; !ok || v > m.Version {
				latest[name] = meta(name, v, e)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("resources: list: %w", err)
	}
	out := make([]Meta, 0, len(latest))
	for _, m := range latest {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Meta) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Delete removes every version of name. Its version counter stays, so the
// numbers are not reused. It fails with ErrNotFound if name has no
// versions.
func (r *Store) Delete(ctx context.Context, name string) error {
	return r.s.Update(ctx, func(tx store.Tx) error { return r.DeleteTx(tx, name) })
}

// DeleteTx is Delete inside the caller's read-write transaction.
func (r *Store) DeleteTx(tx store.Tx, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	var keys []string
	err := tx.Scan(Bucket, dataPrefix+name+"@", func(key string, _ []byte) error {
		if n, _, ok := parseDataKey(key); ok && n == name {
			keys = append(keys, key)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("resources: delete %q: %w", name, err)
	}
	if len(keys) == 0 {
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	for _, k := range keys {
		if err := tx.Delete(Bucket, k); err != nil {
			return fmt.Errorf("resources: delete %q: %w", name, err)
		}
	}
	return nil
}

// Rotate re-encrypts, in one transaction, every stored version that is
// not under the current KEK, and returns how many it re-encrypted. If any
// version cannot be decrypted (ErrUnknownKEK, ErrCorrupt) nothing is
// changed.
func (r *Store) Rotate(ctx context.Context) (int, error) {
	n := 0
	err := r.s.Update(ctx, func(tx store.Tx) error {
		type item struct {
			name    string
			version int
			e       envelope
		}
		var todo []item
		err := scan(tx, "", func(name string, v int, e envelope) error {
			if e.kekID != r.current.id {
				e.nonce, e.ciphertext, e.header = bytes.Clone(e.nonce), bytes.Clone(e.ciphertext), bytes.Clone(e.header)
				todo = append(todo, item{name, v, e})
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, it := range todo {
			pt, err := r.open(it.name, it.version, it.e)
			if err != nil {
				return err
			}
			env, err := r.seal(it.name, it.version, it.e.created, pt)
			clear(pt)
			if err != nil {
				return err
			}
			if err := tx.Put(Bucket, dataKey(it.name, it.version), env); err != nil {
				return err
			}
		}
		n = len(todo)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("resources: rotate: %w", err)
	}
	return n, nil
}
