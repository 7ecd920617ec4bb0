// Package virtio is the device side of virtio 1.x: split virtqueues
// (descriptor walking, used ring, notification suppression) and the
// virtio-mmio version 2 transport register file, written against a small
// guest-memory interface so that devices (block, rng, vsock) can sit on top.
//
// Everything here treats guest memory and guest register writes as hostile:
// a malformed descriptor chain or a misbehaving driver yields a sentinel
// error or the DEVICE_NEEDS_RESET status bit, never a panic or an unbounded
// loop.
//
// Concurrency: a Queue is owned by one device goroutine at a time and is not
// safe for concurrent use. An MMIO is safe for concurrent use by vCPU threads
// and device goroutines; see MMIO for which callbacks run under its lock.
package virtio

import (
	"errors"
	"fmt"
)

// Sentinel errors. Errors returned by this package wrap one of them, so
// callers branch with errors.Is.
var (
	// ErrOutOfRange: a descriptor index, a ring, or a buffer lies outside
	// the queue or guest memory, or its address plus length overflows.
	ErrOutOfRange = errors.New("out of range")
	// ErrLoop: a descriptor chain has more descriptors than its table holds.
	ErrLoop = errors.New("descriptor loop")
	// ErrBadOrder: a device-readable descriptor follows a device-writable one.
	ErrBadOrder = errors.New("readable descriptor after writable")
	// ErrTooLong: a chain's total length exceeds the queue's limit, or data
	// does not fit the buffer it is copied from or into.
	ErrTooLong = errors.New("too long")
	// ErrIndirect: a malformed indirect descriptor (nested indirect table,
	// INDIRECT together with NEXT, a length that is zero, not a multiple of
	// 16, or over MaxIndirectEntries entries).
	ErrIndirect = errors.New("bad indirect descriptor")
	// ErrAvailIdx: the driver moved avail->idx more than the queue size
	// ahead of the last entry the device consumed.
	ErrAvailIdx = errors.New("avail index jumped past queue size")
	// ErrBadQueue: a queue configuration (size, alignment, ring placement)
	// that the virtio spec forbids.
	ErrBadQueue = errors.New("bad queue configuration")
)

// Memory is guest physical memory as the device sees it. ReadAt and WriteAt
// copy all of p or fail with an error wrapping ErrOutOfRange; they never copy
// part of p and then fail. Like io.ReaderAt, they must not retain p.
//
// Implementations backed by memory the guest shares must make each call's
// stores visible in program order to other CPUs (plain stores on amd64 are),
// since the virtqueue protocol depends on it (see Queue.Push).
type Memory interface {
	ReadAt(p []byte, gpa uint64) error
	WriteAt(p []byte, gpa uint64) error
}

// RangeChecker is optionally implemented by a Memory that can tell cheaply
// whether [gpa, gpa+n) is wholly backed. Without it, the queue probes the
// first and last byte of each buffer, which is exact only for memory without
// holes; accesses into a hole still fail later, in ReadAt or WriteAt.
type RangeChecker interface {
	CheckRange(gpa, n uint64) error
}

// SliceMemory is a Memory over a byte slice that starts at guest physical
// address 0. It is what tests use, and what the VMM uses over its mmap'd RAM.
// It does no locking: concurrent users of overlapping bytes must order
// themselves (the virtqueue protocol does so for the guest and the device).
type SliceMemory []byte

// CheckRange implements RangeChecker.
func (s SliceMemory) CheckRange(gpa, n uint64) error {
	if end := gpa + n; end < gpa || end > uint64(len(s)) {
		return fmt.Errorf("virtio: guest range [%#x, +%#x) outside %#x bytes of memory: %w", gpa, n, len(s), ErrOutOfRange)
	}
	return nil
}

// ReadAt implements Memory.
func (s SliceMemory) ReadAt(p []byte, gpa uint64) error {
	if err := s.CheckRange(gpa, uint64(len(p))); err != nil {
		return err
	}
	copy(p, s[gpa:])
	return nil
}

// WriteAt implements Memory.
func (s SliceMemory) WriteAt(p []byte, gpa uint64) error {
	if err := s.CheckRange(gpa, uint64(len(p))); err != nil {
		return err
	}
	copy(s[gpa:], p)
	return nil
}

// checkRange reports whether [gpa, gpa+n) is valid guest memory, using
// RangeChecker when m has it.
func checkRange(m Memory, gpa, n uint64) error {
	end := gpa + n
	if end < gpa {
		return fmt.Errorf("virtio: guest range %#x+%#x overflows: %w", gpa, n, ErrOutOfRange)
	}
	if n == 0 {
		return nil
	}
	if rc, ok := m.(RangeChecker); ok {
		return rc.CheckRange(gpa, n)
	}
	var b [1]byte
	if err := m.ReadAt(b[:], gpa); err != nil {
		return fmt.Errorf("virtio: guest range %#x+%#x: %w", gpa, n, errors.Join(ErrOutOfRange, err))
	}
	if err := m.ReadAt(b[:], end-1); err != nil {
		return fmt.Errorf("virtio: guest range %#x+%#x: %w", gpa, n, errors.Join(ErrOutOfRange, err))
	}
	return nil
}
