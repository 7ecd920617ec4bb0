package boltstore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/greatjail/cvm/kbs/store"
	"github.com/greatjail/cvm/kbs/store/boltstore"
)

func ExampleOpen() {
	dir, err := os.MkdirTemp("", "boltstore-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	ctx := context.Background()
	s, err := boltstore.Open(filepath.Join(dir, "kbs.db"), boltstore.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()

	// Update returns nil only once the transaction is on disk.
	err = s.Update(ctx, func(tx store.Tx) error {
		for _, name := range []string{"disk-key", "tls-key"} {
			id, err := tx.NextSequence("resources")
			if err != nil {
				return err
			}
			if err := tx.Put("resources", name, fmt.Appendf(nil, "sealed #%d", id)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	err = s.View(ctx, func(tx store.Tx) error {
		return tx.Scan("resources", "", func(k string, v []byte) error {
			fmt.Printf("%s: %s\n", k, v)
			return nil
		})
	})
	if err != nil {
		fmt.Println(err)
	}
	// Output:
	// disk-key: sealed #1
	// tls-key: sealed #2
}
