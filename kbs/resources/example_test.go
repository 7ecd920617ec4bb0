package resources_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log"
	"math/rand/v2"
	"time"

	"github.com/greatjail/cvm/kbs/resources"
	"github.com/greatjail/cvm/kbs/store/storetest"
)

// An operator stores two versions of a disk key, then rotates the
// key-encryption key.
func Example() {
	ctx := context.Background()
	now := func() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) }
	// SYNTHETIC KEKs derived from public labels, for the example only. A
	// broker reads them from files.
	oldRaw := sha256.Sum256([]byte("cvm resources example kek old"))
	newRaw := sha256.Sum256([]byte("cvm resources example kek new"))
	oldKEK, err := resources.LoadKEK(oldRaw[:])
	if err != nil {
		log.Fatal(err)
	}
	newKEK, err := resources.LoadKEK(newRaw[:])
	if err != nil {
		log.Fatal(err)
	}
	s := storetest.NewMemory()
	rnd := rand.NewChaCha8([32]byte{}) // crypto/rand.Reader in production

	r, err := resources.New(s, []*resources.KEK{oldKEK}, rnd, now)
	if err != nil {
		log.Fatal(err)
	}
	for _, v := range []string{"passphrase one", "passphrase two"} {
		if _, err := r.Put(ctx, "default/disk/root", []byte(v)); err != nil {
			log.Fatal(err)
		}
	}
	data, m, err := r.Get(ctx, "default/disk/root", 0)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: v%d %q\n", m.Name, m.Version, data)

	// Rotate: the new KEK first, the old one still loaded.
	r, err = resources.New(s, []*resources.KEK{newKEK, oldKEK}, rnd, now)
	if err != nil {
		log.Fatal(err)
	}
	n, err := r.Rotate(ctx)
	fmt.Println("re-encrypted", n, err)

	// Without the old KEK everything still opens.
	r, err = resources.New(s, []*resources.KEK{newKEK}, rnd, now)
	if err != nil {
		log.Fatal(err)
	}
	data, _, err = r.Get(ctx, "default/disk/root", 1)
	fmt.Printf("%q %v\n", data, err)

	fmt.Println(errors.Is(resources.ValidName("default/../root"), resources.ErrInvalidName))
	// Output:
	// default/disk/root: v2 "passphrase two"
	// re-encrypted 2 <nil>
	// "passphrase one" <nil>
	// true
}
