package vmm

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/greatjail/cvm/vmm/devices"
)

// Disk hot-plug slots. A slot is a virtio-blk device the guest sees from
// boot, with no medium (capacity 0, empty serial). Attach swaps a disk
// image in while the guest runs and raises the virtio configuration-change
// interrupt; the guest's driver re-reads the capacity (Linux:
// virtblk_config_changed) and reads the new serial through GET_ID. Detach
// takes the medium out the same way. Firecracker updates a drive's backing
// file (PATCH /drives) alike.
//
// The slot devices follow every other device in the guest (after the disks,
// the entropy and the vsock device), so a Config without slots lays out the
// guest, and so measures, exactly as before slots existed.

// ErrSlotNotRunning is wrapped by a DiskSlot's errors when no VM holds the
// slot: before Run built its device, or after the VM stopped.
var ErrSlotNotRunning = errors.New("vmm: disk slot: no running VM holds the slot")

// ErrSlotBusy is wrapped by Attach's error when the slot holds a disk.
var ErrSlotBusy = errors.New("vmm: disk slot: the slot holds a disk")

// slotState is where a DiskSlot is in its one life.
type slotState uint8

const (
	slotNew     slotState = iota // not given to Run yet
	slotRunning                  // Run built its device
	slotStopped                  // the VM stopped; the slot is spent
)

// DiskSlot is a disk hot-plug slot of one VM: create it with NewDiskSlot,
// put it in Config.Slots, and call Attach and Detach from any goroutine
// while Run runs. A slot serves one Run only.
type DiskSlot struct {
	// mu guards the fields below and serializes Attach, Detach and the
	// VM's start and stop.
	mu     sync.Mutex
	state  slotState
	blk    *devices.Block // set while slotRunning
	f      *os.File       // the medium; nil when empty
	path   string         // f's path
	serial string
}

// NewDiskSlot returns an empty slot that no VM holds yet.
func NewDiskSlot() *DiskSlot { return &DiskSlot{} }

// Attach puts the disk image at path (a regular file of at least one
// 512-byte sector, opened read-only if readOnly, else read-write) into the
// empty slot, with serial (at most devices.BlockIDLen bytes) as what the
// guest reads in /sys/block/<dev>/serial. The guest sees the new capacity
// after the configuration-change interrupt. A read-only disk fails the
// guest's writes with an I/O error; the device offers no VIRTIO_BLK_F_RO.
func (s *DiskSlot) Attach(path, serial string, readOnly bool) error {
	if len(serial) > devices.BlockIDLen {
		return fmt.Errorf("vmm: disk slot: serial %q longer than %d bytes", serial, devices.BlockIDLen)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.runningLocked(); err != nil {
		return err
	}
	if s.f != nil {
		return fmt.Errorf("%w %s (serial %q): detach it first", ErrSlotBusy, s.path, s.serial)
	}
	f, err := openDisk(Disk{Path: path, ReadOnly: readOnly})
	if err != nil {
		return fmt.Errorf("vmm: disk slot: %w", err)
	}
	if err := s.blk.Swap(f, devices.BlockOptions{ID: serial, ReadOnly: readOnly}); err != nil {
		f.Close()
		return fmt.Errorf("vmm: disk slot: disk %s: %w", path, err)
	}
	s.f, s.path, s.serial = f, path, serial
	return nil
}

// Detach empties the slot: the guest sees capacity 0 and an empty serial
// after the configuration-change interrupt, and requests still queued fail
// with an I/O error. The guest should have stopped using the disk. An
// empty slot stays empty.
func (s *DiskSlot) Detach() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.runningLocked(); err != nil {
		return err
	}
	if s.f == nil {
		return nil
	}
	path := s.path
	if err := s.blk.Swap(nil, devices.BlockOptions{}); err != nil {
		return fmt.Errorf("vmm: disk slot: detach %s: %w", path, err)
	}
	err := s.f.Close()
	s.f, s.path, s.serial = nil, "", ""
	if err != nil {
		return fmt.Errorf("vmm: disk slot: close %s: %w", path, err)
	}
	return nil
}

// Attached returns the path of the slot's disk, or "" when it is empty.
func (s *DiskSlot) Attached() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.path
}

// runningLocked returns an error unless a running VM holds the slot.
// Preconditions: s.mu held.
func (s *DiskSlot) runningLocked() error {
	switch s.state {
	case slotNew:
		return fmt.Errorf("%w: the VM has not built its device yet", ErrSlotNotRunning)
	case slotStopped:
		return fmt.Errorf("%w: the VM has stopped", ErrSlotNotRunning)
	}
	return nil
}

// bind gives the slot its device; Run calls it while building the
// devices. A slot binds once.
func (s *DiskSlot) bind(b *devices.Block) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != slotNew {
		return fmt.Errorf("vmm: disk slot: already used by a VM (a slot serves one Run)")
	}
	s.state, s.blk = slotRunning, b
	return nil
}

// stop ends the slot's life once the vCPUs stopped: it closes the disk it
// holds, and Attach and Detach fail from now on.
func (s *DiskSlot) stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state, s.blk = slotStopped, nil
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f, s.path, s.serial = nil, "", ""
	return err
}
