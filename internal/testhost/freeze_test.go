package testhost

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeMonitor serves QEMU's human monitor protocol as QEMU 7.2 writes it
// (banner, prompt, the echoed command line with terminal escapes, CRLF
// line ends), answering each command from replies.
func fakeMonitor(t *testing.T, replies map[string]string) string {
	sock := filepath.Join(t.TempDir(), "monitor")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte("QEMU 7.2.22 monitor - type 'help' for more information\r\n(qemu) "))
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			cmd := strings.TrimSpace(line)
			c.Write([]byte(cmd + "\x1b[K\r\n" + strings.ReplaceAll(replies[cmd], "\n", "\r\n") + "(qemu) "))
		}
	}()
	return sock
}

func TestHMP(t *testing.T) {
	sock := fakeMonitor(t, map[string]string{
		"info registers": "CPU#0\nRIP=ffffffff8a2bc56f RFL=00000216 [----AP-] CPL=0 II=0 A20=1 SMM=0 HLT=1\n",
		"info lapic":     "IRR\t 236 \n",
	})
	got, err := hmp(sock, "info registers", "info lapic", "info pic")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"CPU#0\nRIP=ffffffff8a2bc56f RFL=00000216 [----AP-] CPL=0 II=0 A20=1 SMM=0 HLT=1",
		"IRR\t 236 ",
		"",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("hmp replies (-want +got)\n%s", diff)
	}
}

func TestHMPNoMonitor(t *testing.T) {
	if _, err := hmp(filepath.Join(t.TempDir(), "absent")); err == nil {
		t.Error("hmp on a missing socket: no error")
	}
}

func TestCPUTicks(t *testing.T) {
	if n := cpuTicks(os.Getpid()); n < 0 {
		t.Errorf("cpuTicks(self) = %d, want >= 0", n)
	}
	if n := cpuTicks(1 << 30); n != -1 {
		t.Errorf("cpuTicks(no such process) = %d, want -1", n)
	}
}
