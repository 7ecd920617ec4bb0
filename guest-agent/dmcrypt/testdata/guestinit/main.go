// Command guestinit is the /init of the VM-tier test of package dmcrypt
// (TestUnlockInGuest): in a QEMU guest it loads the modules listed in
// /modules, unlocks /dev/vda with the key in /disk.key through
// dmcrypt.Unlock (after checking that a wrong key is refused), reads and
// writes files on the mounted file system, closes and reopens it, prints
// one "DMTEST ..." line per result on the console, and powers off.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/greatjail/cvm/guest-agent/dmcrypt"
	"github.com/greatjail/cvm/guest-agent/luks2"
	"golang.org/x/sys/unix"
)

const (
	name = "cvm-test"
	mnt  = "/mnt/root"
)

func main() {
	if err := run(); err != nil {
		fmt.Println("DMTEST FAIL", err)
	} else {
		fmt.Println("DMTEST OK")
	}
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

func run() error {
	for _, m := range []struct{ src, dst, fs string }{{"devtmpfs", "/dev", "devtmpfs"}, {"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}} {
		os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fs, 0, ""); err != nil {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	order, err := os.ReadFile("/modules")
	if err != nil {
		return err
	}
	for _, m := range strings.Fields(string(order)) {
		f, err := os.Open("/lib/modules/" + m + ".ko")
		if err != nil {
			return err
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("loading module %s: %w", m, err)
		}
	}
	key, err := os.ReadFile("/disk.key")
	if err != nil {
		return err
	}
	for i := 0; i < 200; i++ {
		if _, err := os.Stat("/dev/vda"); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	wrong := bytes.Repeat([]byte{0x33}, 64)
	if _, err := dmcrypt.Unlock("/dev/vda", wrong, name, mnt); !errors.Is(err, luks2.ErrWrongKey) {
		return fmt.Errorf("unlock with a wrong key = %v, want luks2.ErrWrongKey", err)
	}
	if _, err := os.Stat("/dev/mapper/" + name); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("a wrong key left /dev/mapper/%s (%v)", name, err)
	}
	fmt.Println("DMTEST wrong-key refused")

	v, err := dmcrypt.Unlock("/dev/vda", key, name, mnt)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(mnt + "/etc/motd")
	if err != nil {
		return err
	}
	fmt.Printf("DMTEST motd %q\n", b)
	if err := os.WriteFile(mnt+"/written-in-guest", []byte("the guest wrote this\n"), 0o644); err != nil {
		return err
	}
	if err := v.Close(); err != nil {
		return err
	}
	if _, err := os.Stat(v.Device); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("close left %s (%v)", v.Device, err)
	}
	v, err = dmcrypt.Unlock("/dev/vda", key, name, mnt)
	if err != nil {
		return fmt.Errorf("unlocking again: %w", err)
	}
	b, err = os.ReadFile(mnt + "/written-in-guest")
	if err != nil {
		return err
	}
	fmt.Printf("DMTEST reopened %q\n", b)
	return v.Close()
}
