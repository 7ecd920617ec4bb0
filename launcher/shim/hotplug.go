package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/greatjail/cvm/launcher"
	"github.com/greatjail/cvm/launcher/engine"
)

// Disk hot-plug. Each container after the pod's first gets its image as a
// read-only virtio-blk disk in a free slot, named by a serial the guest
// looks up in /sys/block/*/serial. The slot bookkeeping is the same on
// every engine; how a disk gets into a slot differs:
//   - qemu: the engine gives QEMU a QMP socket (engine.Machine.QMPSocket)
//     and empty PCIe root ports (Machine.HotplugPorts; q35's root bus takes
//     no hot-plugged device); a disk is blockdev-add + device_add of a
//     virtio-blk-pci on its slot's port, and leaves by device_del, which
//     waits for the guest to release the device, then blockdev-del.
//   - builtin: the guest has Machine.HotplugPorts empty virtio-blk devices
//     (media-change slots, vmm.DiskSlot) and the Handle implements
//     engine.DiskHotplug: a disk is swapped into its slot's device
//     (AttachDisk) and out again (DetachDisk) once the agent has unmounted
//     it; the guest sees the capacity and serial change.

// DefaultHotplugSlots is how many disks can be hot-plugged at once (each
// container but the pod's first holds one while it exists).
const DefaultHotplugSlots = launcher.DefaultPodHotplugSlots

// qmpTimeout bounds one QMP command; releaseTimeout the guest's release of
// a disk after device_del.
const (
	qmpTimeout     = 30 * time.Second
	releaseTimeout = 60 * time.Second
)

// hotplug is the hot-plug state of a running VM. Guarded by vmSandbox.mu.
// Exactly one of qmpPath (qemu) and dh (an engine.DiskHotplug Handle) is
// set.
type hotplug struct {
	qmpPath string
	qmp     *qmpClient // connected on first use
	dh      engine.DiskHotplug

	slots []string          // slot i: the container whose disk is there, or ""
	disks map[string]hpDisk // by container ID
	next  int               // counter for serials and node names
}

type hpDisk struct {
	slot         int
	node, device string // QMP only
}

// newHotplug returns the hot-plug state of a QEMU VM whose QMP socket is
// qmpPath and which has slots hot-plug ports.
func newHotplug(qmpPath string, slots int) *hotplug {
	return &hotplug{qmpPath: qmpPath, slots: make([]string, slots), disks: map[string]hpDisk{}}
}

// newEngineHotplug returns the hot-plug state of a VM whose Handle dh
// plugs disks into slots slots.
func newEngineHotplug(dh engine.DiskHotplug, slots int) *hotplug {
	return &hotplug{dh: dh, slots: make([]string, slots), disks: map[string]hpDisk{}}
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
func (h *hotplug) add(ctx context.Context, id, img string) (string, error) {
	if _, ok := h.disks[id]; ok {
		return "", fmt.Errorf("container %q already has a hot-plugged disk", id)
	}
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
	h.next++
	n := strconv.Itoa(h.next)
	serial := "cvm-disk-" + n
	d := hpDisk{slot: slot}
	if h.dh != nil {
		if err := h.dh.AttachDisk(ctx, slot, img, serial, true); err != nil {
			return "", err
		}
	} else {
		d.node, d.device = "cvm-node-"+n, "cvm-dev-"+n
		if err := h.qmpAdd(d, img, serial); err != nil {
			return "", err
		}
	}
	h.slots[slot] = id
	h.disks[id] = d
	return serial, nil
}

func (h *hotplug) qmpAdd(d hpDisk, img, serial string) error {
	q, err := h.client()
	if err != nil {
		return err
	}
	if err := q.execute("blockdev-add", map[string]any{
		"driver": "raw", "node-name": d.node, "read-only": true,
		"file": map[string]any{"driver": "file", "filename": img, "read-only": true},
	}, qmpTimeout); err != nil {
		return err
	}
	if err := q.execute("device_add", map[string]any{
		"driver": "virtio-blk-pci", "id": d.device, "drive": d.node, "serial": serial, "bus": slotBus(d.slot),
	}, qmpTimeout); err != nil {
		q.execute("blockdev-del", map[string]any{"node-name": d.node}, qmpTimeout)
		return err
	}
	return nil
}

// remove unplugs container id's disk, if it has one, once the guest has
// released it (qemu: device_del completes; builtin: the caller has had
// the agent unmount it). A disk that does not leave keeps its slot.
func (h *hotplug) remove(ctx context.Context, id string) (bool, error) {
	d, ok := h.disks[id]
	if !ok {
		return false, nil
	}
	if h.dh != nil {
		if err := h.dh.DetachDisk(ctx, d.slot); err != nil {
			return true, err
		}
		delete(h.disks, id)
		h.slots[d.slot] = ""
		return true, nil
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
