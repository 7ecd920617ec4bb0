package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/greatjail/cvm/launcher/engine"
)

// Disk hot-plug on the qemu engine. The engine gives QEMU a QMP socket
// (engine.Machine.QMPSocket) and empty PCIe root ports
// (Machine.HotplugPorts; q35's root bus takes no hot-plugged device). Each
// container after the pod's first gets its image as a read-only
// virtio-blk-pci disk on a free port, named by a serial the guest looks
// up in /sys/block/*/serial.

// DefaultHotplugSlots is how many disks can be hot-plugged at once (each
// container but the pod's first holds one while it exists).
const DefaultHotplugSlots = 8

// qmpTimeout bounds one QMP command; releaseTimeout the guest's release of
// a disk after device_del.
const (
	qmpTimeout     = 30 * time.Second
	releaseTimeout = 60 * time.Second
)

// hotplug is the hot-plug state of a running VM. Guarded by vmSandbox.mu.
type hotplug struct {
	qmpPath string
	qmp     *qmpClient        // connected on first use
	slots   []string          // slot i: the container whose disk is there, or ""
	disks   map[string]hpDisk // by container ID
	next    int               // counter for serials and node names
}

type hpDisk struct {
	slot         int
	node, device string
}

// newHotplug returns the hot-plug state of a VM whose QMP socket is
// qmpPath and which has slots hot-plug ports.
func newHotplug(qmpPath string, slots int) *hotplug {
	return &hotplug{qmpPath: qmpPath, slots: make([]string, slots), disks: map[string]hpDisk{}}
}

func slotBus(i int) string { return engine.HotplugPortID(i) }

// connect dials QMP as soon as QEMU has made the socket: QEMU connects
// the link (so Link returns) possibly before it creates the QMP socket.
func (h *hotplug) connect(ctx context.Context, exited <-chan struct{}) error {
	for {
		_, err := h.client()
		if err == nil || !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ECONNREFUSED) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (%w)", err, ctx.Err())
		case <-exited:
			return fmt.Errorf("%w (qemu exited)", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (h *hotplug) client() (*qmpClient, error) {
	if h.qmp == nil {
		q, err := dialQMP(h.qmpPath, qmpTimeout)
		if err != nil {
			return nil, err
		}
		h.qmp = q
	}
	return h.qmp, nil
}

// add plugs img (read-only) in for container id and returns its serial.
func (h *hotplug) add(id, img string) (string, error) {
	slot := -1
	for i, c := range h.slots {
		if c == "" {
			slot = i
			break
		}
	}
	if slot < 0 {
		return "", fmt.Errorf("all %d disk hot-plug slots are in use", len(h.slots))
	}
	q, err := h.client()
	if err != nil {
		return "", err
	}
	h.next++
	n := strconv.Itoa(h.next)
	d := hpDisk{slot: slot, node: "cvm-node-" + n, device: "cvm-dev-" + n}
	serial := "cvm-disk-" + n
	if err := q.execute("blockdev-add", map[string]any{
		"driver": "raw", "node-name": d.node, "read-only": true,
		"file": map[string]any{"driver": "file", "filename": img, "read-only": true},
	}, qmpTimeout); err != nil {
		return "", err
	}
	if err := q.execute("device_add", map[string]any{
		"driver": "virtio-blk-pci", "id": d.device, "drive": d.node, "serial": serial, "bus": slotBus(slot),
	}, qmpTimeout); err != nil {
		q.execute("blockdev-del", map[string]any{"node-name": d.node}, qmpTimeout)
		return "", err
	}
	h.slots[slot] = id
	h.disks[id] = d
	return serial, nil
}

// remove unplugs container id's disk, if it has one, once the guest has
// released it. A disk the guest does not release keeps its slot.
func (h *hotplug) remove(id string) (bool, error) {
	d, ok := h.disks[id]
	if !ok {
		return false, nil
	}
	q, err := h.client()
	if err != nil {
		return true, err
	}
	if err := q.execute("device_del", map[string]any{"id": d.device}, qmpTimeout); err != nil {
		return true, err
	}
	if err := q.waitDeviceDeleted(d.device, releaseTimeout); err != nil {
		return true, err
	}
	delete(h.disks, id)
	h.slots[d.slot] = ""
	if err := q.execute("blockdev-del", map[string]any{"node-name": d.node}, qmpTimeout); err != nil {
		return true, err
	}
	return true, nil
}

func (h *hotplug) close() {
	if h.qmp != nil {
		h.qmp.Close()
		h.qmp = nil
	}
}
