package shim

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/greatjail/cvm/launcher/engine"
)

// Disk hot-plug on the qemu engine. The engine (launcher/engine, owned by
// the launcher) has no QMP socket and no hot-plug slots yet, so the shim
// runs QEMU through a small wrapper script that appends them to the
// engine's command line: a QMP server socket and DefaultHotplugSlots
// PCIe root ports (q35's root bus takes no hot-plugged device). Each
// container after the first gets its image as a read-only virtio-blk-pci
// disk on a free port, named by a serial the guest looks up in
// /sys/block/*/serial. When the engine grows Machine.QMPSocket and
// hot-plug ports, the wrapper goes away.

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

// wrapQEMU returns a copy of q whose binary is a wrapper script in dir that
// adds the QMP socket (dir/qmp) and slots hot-plug root ports.
func wrapQEMU(q *engine.QEMU, dir string, slots int) (*engine.QEMU, *hotplug, error) {
	bin, err := exec.LookPath(cmpOr(q.Binary, engine.QEMUBinary))
	if err != nil {
		return nil, nil, fmt.Errorf("shim: qemu engine: %w", err)
	}
	qmpPath := filepath.Join(dir, "qmp")
	args := []string{"-qmp", "unix:" + qmpPath + ",server=on,wait=off"}
	for i := range slots {
		args = append(args, "-device", fmt.Sprintf("pcie-root-port,id=%s,chassis=%d,io-reserve=0", slotBus(i), i+1))
	}
	var b strings.Builder
	b.WriteString("#!/bin/sh\n# QEMU with a QMP socket and disk hot-plug ports (launcher/shim/hotplug.go).\nexec ")
	b.WriteString(shellQuote(bin))
	b.WriteString(` "$@"`)
	for _, a := range args {
		b.WriteString(" " + shellQuote(a))
	}
	b.WriteString("\n")
	wrapper := filepath.Join(dir, "qemu")
	if err := os.WriteFile(wrapper, []byte(b.String()), 0o700); err != nil {
		return nil, nil, fmt.Errorf("shim: qemu wrapper: %w", err)
	}
	w := *q
	w.Binary = wrapper
	return &w, &hotplug{qmpPath: qmpPath, slots: make([]string, slots), disks: map[string]hpDisk{}}, nil
}

func slotBus(i int) string { return "cvm.hp" + strconv.Itoa(i) }

// shellQuote quotes s for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

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
