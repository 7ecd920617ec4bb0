// Command cvm-agent is the guest agent: /init of the microVM's initramfs
// (PID 1), built static (CGO_ENABLED=0). It is wiring only: the agent is
// package guest-agent/agent, the disk unlock guest-agent/dmcrypt. It takes
// no flags; everything it does comes from the measured launch
// configuration /etc/cvm/launch.json: launch mode (one workload from an
// encrypted disk) or pod mode (the containers of a pod for the containerd
// shim, docs/containerd.md).
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/greatjail/cvm/guest-agent/agent"
	"github.com/greatjail/cvm/guest-agent/dmcrypt"
)

var version = "dev"

// The device-mapper name and mount point of the unlocked disk.
const (
	mapperName = "cvm-root"
	rootMount  = "/mnt/root"
)

// diskUnlocker adapts dmcrypt.Unlock to agent.Unlocker.
type diskUnlocker struct{}

func (diskUnlocker) Unlock(_ context.Context, device string, key []byte) (string, func() error, error) {
	v, err := dmcrypt.Unlock(device, key, mapperName, rootMount)
	if err != nil {
		return "", nil, err
	}
	return v.Mountpoint, v.Close, nil
}

func main() {
	err := agent.Run(context.Background(), agent.RunOptions{Unlocker: diskUnlocker{}, Version: version})
	if err != nil {
		fmt.Fprintln(os.Stderr, "cvm-agent:", err)
		os.Exit(1)
	}
}
