package storetest_test

import (
	"context"
	"fmt"

	"github.com/greatjail/cvm/kbs/store"
	"github.com/greatjail/cvm/kbs/store/storetest"
)

// A test of a package built on the store uses Memory in place of a real
// backend. A backend's own test calls storetest.Run instead.
func ExampleNewMemory() {
	ctx := context.Background()
	s := storetest.NewMemory()
	defer s.Close()

	err := s.Update(ctx, func(tx store.Tx) error {
		id, err := tx.NextSequence("resources")
		if err != nil {
			return err
		}
		return tx.Put("resources", fmt.Sprintf("%08d", id), []byte("sealed key"))
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = s.View(ctx, func(tx store.Tx) error {
		return tx.Scan("resources", "", func(k string, v []byte) error {
			fmt.Printf("%s = %s\n", k, v)
			return nil
		})
	})
	// Output: 00000001 = sealed key
}
