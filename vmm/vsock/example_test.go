package vsock_test

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

	"github.com/greatjail/cvm/vmm/vsock"
)

// Example creates the device a VMM puts behind a virtio-mmio transport
// (virtio.NewMMIO(dev, mem, irq), then dev.SetSignal(mmio.SignalUsed)), and
// shows the host side refusing a malformed CONNECT line without involving
// the guest.
func Example() {
	dir, err := os.MkdirTemp("", "vsock-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "v.sock")

	dev, err := vsock.New(vsock.Config{GuestCID: 3, UDSPath: path})
	if err != nil {
		fmt.Println(err)
		return
	}
	cid := make([]byte, 8)
	dev.ConfigRead(0, cid)
	fmt.Println("device type", dev.Type(), "queues", dev.NumQueues(), "guest cid", cid[0])

	// A host process talks to guest port 52 with "CONNECT 52\n"; a typo
	// gets the connection closed.
	nc, err := net.Dial("unix", path)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Fprintf(nc, "CONECT 52\n")
	_, err = nc.Read(make([]byte, 1))
	fmt.Println("host read:", err == io.EOF)
	nc.Close()

	if err := dev.Close(); err != nil {
		fmt.Println(err)
	}
	_, err = os.Stat(path)
	fmt.Println("socket removed:", os.IsNotExist(err))
	// Output:
	// device type 19 queues 3 guest cid 3
	// host read: true
	// socket removed: true
}
