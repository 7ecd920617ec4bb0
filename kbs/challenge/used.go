package challenge

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/greatjail/cvm/kbs/store"
)

// Bucket is the store bucket UsedNonces keeps its records in. Keys are the
// lowercase hex SHA-256 of the nonce string; values are the nonce's expiry
// as 8 bytes of big-endian Unix nanoseconds.
const Bucket = "nonces"

// UsedNonces remembers used nonces in a store.Store shared by the broker's
// replicas, so a nonce used at one replica is refused at every other. It
// holds no state of its own and is safe for concurrent use; the store's
// serializable Update makes Consume atomic.
type UsedNonces struct {
	s store.Store
}

// NewUsedNonces returns a UsedNonces over s.
func NewUsedNonces(s store.Store) *UsedNonces {
	return &UsedNonces{s: s}
}

func nonceKey(nonce string) string {
	sum := sha256.Sum256([]byte(nonce))
	return hex.EncodeToString(sum[:])
}

// Consume records nonce as used until expires, in one store transaction.
// It fails with an error wrapping ErrReplayed if the nonce was already
// recorded (by any replica sharing the store). Call it only after
// Issuer.Check accepted the nonce, with the expiry Check returned.
func (u *UsedNonces) Consume(ctx context.Context, nonce string, expires time.Time) error {
	if expires.IsZero() {
		return errors.New("challenge: consume nonce: zero expiry")
	}
	key := nonceKey(nonce)
	err := u.s.Update(ctx, func(tx store.Tx) error {
		switch _, err := tx.Get(Bucket, key); {
		case err == nil:
			return ErrReplayed
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		return tx.Put(Bucket, key, binary.BigEndian.AppendUint64(nil, uint64(expires.UnixNano())))
	})
	if errors.Is(err, ErrReplayed) {
		return err
	}
	if err != nil {
		return fmt.Errorf("challenge: consume nonce: %w", err)
	}
	return nil
}

// Purge removes the records of nonces whose expiry is at or before now
// (Issuer.Check refuses those anyway) and returns how many it removed. A
// record whose value cannot be read is kept: forgetting a nonce that may
// still be valid would allow its replay.
func (u *UsedNonces) Purge(ctx context.Context, now time.Time) (int, error) {
	n := 0
	err := u.s.Update(ctx, func(tx store.Tx) error {
		var expired []string
		err := tx.Scan(Bucket, "", func(key string, value []byte) error {
			if len(value) != 8 {
				return nil
			}
			if exp := time.Unix(0, int64(binary.BigEndian.Uint64(value))); !exp.After(now) {
				expired = append(expired, key)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range expired {
			if err := tx.Delete(Bucket, k); err != nil {
				return err
			}
		}
		n = len(expired)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("challenge: purge used nonces: %w", err)
	}
	return n, nil
}
