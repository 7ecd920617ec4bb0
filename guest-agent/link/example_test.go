package link_test

import (
	"fmt"
	"io"
	"net"

	"github.com/greatjail/cvm/guest-agent/link"
)

// The host opens a ttrpc stream; the guest accepts it by kind.
func Example() {
	g, h := net.Pipe()
	guest, _ := link.Guest(g)
	host, _ := link.Host(h)
	defer guest.Close()
	defer host.Close()

	go func() {
		c, _ := host.Open(link.KindTTRPC)
		io.WriteString(c, "hi")
	}()
	kind, c, _ := guest.Accept()
	buf := make([]byte, 2)
	io.ReadFull(c, buf)
	fmt.Println(kind, string(buf))
	// Output: ttrpc hi
}
