// Package wire holds what the test guest's /init (internal/testhost/guestinit)
// and the host side of the VM tier (package testhost) must agree on: the
// console line prefixes, the vsock ports and messages, the disk layout and
// the time limits. It is small so that the guest binary stays small.
package wire

import (
	"strings"
	"time"
)

// Console line prefixes. The guest prints GuestPrefix lines; the test
// host's /init prints HostPrefix lines to the outer test.
const (
	GuestPrefix = "CVMTEST: "
	HostPrefix  = "CVMHOST: "
)

// KmsgLevel prefixes the guest's report lines, which it writes to
// /dev/kmsg: a level (critical) the console prints even with "quiet". The
// guest's command line must allow that many /dev/kmsg lines
// (printk.devkmsg=on).
const KmsgLevel = "<2>"

// BenchFlag on the guest's command line makes its /init report "init"
// and power off at once (a timing run).
const BenchFlag = "cvmtest.bench"

// Files in the test guest's initramfs.
const (
	// ModuleList names the modules to load, one name per line, in load
	// order; each is /lib/modules/NAME.ko.
	ModuleList = "/etc/modules"
)

// Time limits inside the guest. Emulated (TCG) nested guests are slow,
// so they are generous; they bound a hang, not a speed.
const (
	// GuestWatchdog powers the guest off if its checks hang.
	GuestWatchdog = 5 * time.Minute
	// DeviceWait bounds waiting for one device node or vsock peer.
	DeviceWait = 2 * time.Minute
)

// The disk check: the host writes DiskPattern(nonce) + "\n" at byte 0 of
// the first disk; the guest reads the first line and writes
// GuestWrite(line) in the second sector.
const SectorSize = 512

// DiskPattern is the first line the host puts on the test disk.
func DiskPattern(nonce string) string { return "cvm-disk-pattern " + nonce }

// GuestWrite is what the guest writes back at byte SectorSize for the
// first line it read.
func GuestWrite(line string) string { return "guest-wrote " + line + "\n" }

// Vsock ports: the guest listens on HostPort (the host connects through
// the hybrid vsock socket with "CONNECT 5000"); the guest connects to the
// host (CID 2) on GuestPort, which the VMM forwards to <uds>_5001.
const (
	HostPort  = 5000
	GuestPort = 5001
)

// GuestHello is the line the guest sends on the connection it opens.
const GuestHello = "hello-from-guest"

// Echo is the guest's answer to a line the host sent on HostPort.
func Echo(line string) string { return "echo " + strings.TrimSuffix(line, "\n") + "\n" }

// HostReply is the host's answer to a line the guest sent on GuestPort.
func HostReply(line string) string { return "host-reply " + strings.TrimSuffix(line, "\n") + "\n" }
