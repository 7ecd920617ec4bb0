package kbs_test

import (
	"fmt"
	"time"

	"github.com/greatjail/cvm/kbs"
)

// A broker limits challenges per peer address: here 1 per second with
// bursts of 2.
func ExamplePeerLimiter() {
	l := kbs.NewPeerLimiter(1, 2)
	t := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	fmt.Println(l.Allow("192.0.2.1", t), l.Allow("192.0.2.1", t), l.Allow("192.0.2.1", t))
	fmt.Println(l.Allow("192.0.2.1", t.Add(time.Second)))
	// Output:
	// true true false
	// true
}
