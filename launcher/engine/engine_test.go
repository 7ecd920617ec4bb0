package engine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/greatjail/cvm/vmm"
)

// TestMain doubles as a fake qemu-system-x86_64 when CVM_FAKE_QEMU is set:
// it connects to the link socket named on its command line and behaves as
// the mode says.
func TestMain(m *testing.M) {
	if mode := os.Getenv("CVM_FAKE_QEMU"); mode != "" {
		os.Exit(fakeQEMU(mode, os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeQEMU(mode string, args []string) int {
	if mode == "fail" {
		fmt.Fprintln(os.Stderr, "qemu-system-x86_64: -accel kvm: no KVM")
		return 1
	}
	var sock string
	for _, a := range args {
		if p, ok := strings.CutPrefix(a, "socket,id=link,path="); ok {
			sock = strings.ReplaceAll(p, ",,", ",")
		}
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake qemu:", err)
		return 1
	}
	switch mode {
	case "echo":
		// Echo one line, then power off when the host closes.
		line, _ := bufio.NewReader(c).ReadString('\n')
		io.WriteString(c, "guest: "+line)
		io.Copy(io.Discard, c)
		return 0
	case "hang":
		select {}
	}
	return 2
}

func TestSelect(t *testing.T) {
	noKVM := func() error { return errors.New("open /dev/kvm: no such file or directory") }
	kvm := func() error { return nil }
	for _, tc := range []struct {
		name  string
		probe func() error
		want  string // engine/accel, or "error"
	}{
		{"auto", noKVM, "qemu/tcg"},
		{"", noKVM, "qemu/tcg"},
		{"auto", kvm, "builtin/kvm"},
		{"qemu", noKVM, "qemu/tcg"},
		{"qemu", kvm, "qemu/kvm"},
		{"builtin", kvm, "builtin/kvm"},
		{"builtin", noKVM, "error"},
		{"firecracker", kvm, "error"},
	} {
		c, err := Select(tc.name, tc.probe)
		got := "error"
		if err == nil {
			got = c.Engine.Name() + "/" + c.Engine.Accel()
			if c.Why == "" {
				t.Errorf("Select(%q) gave no reason", tc.name)
			}
		}
		if got != tc.want {
			t.Errorf("Select(%q) = %s (%v), want %s", tc.name, got, err, tc.want)
		}
	}
}

func TestQEMUArgs(t *testing.T) {
	m := Machine{Kernel: "/k/vmlinuz", Initrd: "/s/initrd", Cmdline: "console=ttyS0 panic=-1 quiet",
		VCPUs: 2, Memory: 1 << 30, Disk: "/d/a,b.img", LinkSocket: "/s/link.sock", ConsoleLog: "/s/console.log"}
	for _, tc := range []struct {
		kvm  bool
		want [][]string // consecutive pairs that must appear
	}{
		// More than one vCPU under TCG: one host thread for all of them.
		{false, [][]string{{"-accel", "tcg,thread=single"}, {"-cpu", "max"}}},
		{true, [][]string{{"-accel", "kvm"}, {"-cpu", "host"}}},
	} {
		args := (&QEMU{KVM: tc.kvm}).Args(m)
		want := append(tc.want,
			[]string{"-m", "1024M"}, []string{"-smp", "2"}, []string{"-kernel", "/k/vmlinuz"},
			[]string{"-initrd", "/s/initrd"}, []string{"-append", "console=ttyS0 panic=-1 quiet"},
			[]string{"-chardev", "stdio,id=console,signal=off"},
			[]string{"-drive", "file=/d/a,,b.img,if=none,id=disk0,format=raw,cache=none,aio=threads"},
			[]string{"-chardev", "socket,id=link,path=/s/link.sock"},
			[]string{"-device", "virtserialport,chardev=link,name=cvm.link"},
			[]string{"-nic", "none"})
		for _, pair := range want {
			i := slices.Index(args, pair[0])
			found := false
			for ; i >= 0 && i+1 < len(args); i++ {
				if args[i] == pair[0] && args[i+1] == pair[1] {
					found = true
					break
				}
			}
			if !found {
				t.Errorf("kvm=%v: args lack %q:\n%q", tc.kvm, pair, args)
			}
		}
		for _, flag := range []string{"-nodefaults", "-no-reboot", "-no-user-config"} {
			if !slices.Contains(args, flag) {
				t.Errorf("kvm=%v: args lack %s", tc.kvm, flag)
			}
		}
	}
}

func fakeMachine(t *testing.T) Machine {
	d := t.TempDir()
	return Machine{Kernel: "k", Initrd: "i", Cmdline: "c", VCPUs: 1, Memory: 64 << 20, Disk: "d",
		LinkSocket: filepath.Join(d, "link.sock"), ConsoleLog: filepath.Join(d, "console.log"), EngineLog: filepath.Join(d, "engine.log")}
}

func TestQEMUFake(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q := &QEMU{Binary: os.Args[0]}

	t.Run("link and power off", func(t *testing.T) {
		t.Setenv("CVM_FAKE_QEMU", "echo")
		h, err := q.Start(ctx, fakeMachine(t))
		if err != nil {
			t.Fatal(err)
		}
		c, err := h.Link(ctx)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "hello\n")
		got, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff("guest: hello\n", got); diff != "" {
			t.Errorf("echo (-want +got):\n%s", diff)
		}
		c.Close()
		if err := h.Wait(); err != nil {
			t.Errorf("Wait = %v, want nil (powered off)", err)
		}
	})
	t.Run("exits before the link", func(t *testing.T) {
		t.Setenv("CVM_FAKE_QEMU", "fail")
		m := fakeMachine(t)
		h, err := q.Start(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.Link(ctx)
		if !errors.Is(err, ErrStopped) || !strings.Contains(err.Error(), m.EngineLog) {
			t.Errorf("Link = %v, want ErrStopped naming %s", err, m.EngineLog)
		}
		if b, _ := os.ReadFile(m.EngineLog); !strings.Contains(string(b), "no KVM") {
			t.Errorf("engine log = %q, want QEMU's stderr", b)
		}
		if h.Wait() == nil {
			t.Error("Wait = nil for a QEMU that exited 1")
		}
	})
	t.Run("kill", func(t *testing.T) {
		t.Setenv("CVM_FAKE_QEMU", "hang")
		h, err := q.Start(ctx, fakeMachine(t))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.Link(ctx); err != nil {
			t.Fatal(err)
		}
		h.Kill()
		h.Kill()
		if h.Wait() == nil {
			t.Error("Wait = nil for a killed QEMU")
		}
		<-h.Exited()
	})
	t.Run("missing binary", func(t *testing.T) {
		_, err := (&QEMU{Binary: "qemu-system-none"}).Start(ctx, fakeMachine(t))
		if err == nil || !strings.Contains(err.Error(), "qemu-system-x86") {
			t.Errorf("Start = %v, want an error naming the qemu-system-x86 package", err)
		}
	})
}

// fakeVsock is a hybrid-vsock socket: it answers CONNECT 1024 with OK once
// ready is closed, and refuses (closes) before that.
func fakeVsock(t *testing.T, path string, ready <-chan struct{}) {
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				line, err := readLine(c, 64)
				select {
				case <-ready:
				default:
					c.Close()
					return
				}
				if err != nil || line != "CONNECT 1024" {
					c.Close()
					return
				}
				io.WriteString(c, "OK 1073741824\nfrom guest")
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
}

func TestBuiltinLink(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), "v.sock")
	ready := make(chan struct{})
	fakeVsock(t, path, ready)
	h := &builtinHandle{uds: path, exited: make(chan struct{}), cancel: func() {}}
	time.AfterFunc(200*time.Millisecond, func() { close(ready) })
	c, err := h.Link(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, len("from guest"))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "from guest" {
		t.Errorf("read %q, %v; want the bytes after the OK line", buf, err)
	}
}

func TestBuiltinLinkGuestStopped(t *testing.T) {
	h := &builtinHandle{uds: filepath.Join(t.TempDir(), "none.sock"), exited: make(chan struct{}), cancel: func() {}}
	h.err = errors.New("the guest stopped with reboot")
	close(h.exited)
	_, err := h.Link(context.Background())
	if !errors.Is(err, ErrStopped) {
		t.Errorf("Link = %v, want ErrStopped", err)
	}
}

func TestDialVsockBadReply(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			readLine(c, 64)
			io.WriteString(c, "NOPE\n")
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := DialVsock(ctx, path, 1024); err == nil || !strings.Contains(err.Error(), "NOPE") {
		t.Errorf("DialVsock = %v, want an error quoting the reply", err)
	}
}

func TestProbeKVM(t *testing.T) {
	if err := probeKVM(filepath.Join(t.TempDir(), "kvm")); err == nil {
		t.Error("probeKVM(missing) = nil")
	}
	// /dev/null opens but is not KVM: the ioctl fails.
	if err := probeKVM("/dev/null"); err == nil || !strings.Contains(err.Error(), "KVM_GET_API_VERSION") {
		t.Errorf("probeKVM(/dev/null) = %v, want a KVM_GET_API_VERSION error", err)
	}
}

// TestQEMUArgsExact pins the whole command line: a Machine without
// QMPSocket and HotplugPorts (the launcher's) gives exactly the command
// line of before those fields existed; with them, the monitor and the
// root ports come after it.
func TestQEMUArgsExact(t *testing.T) {
	m := Machine{Kernel: "/k/vmlinuz", Initrd: "/s/initrd", Cmdline: "console=ttyS0 panic=-1 quiet",
		VCPUs: 1, Memory: 512 << 20, Disk: "/d/disk.img", LinkSocket: "/s/link.sock", ConsoleLog: "/s/console.log"}
	launcher := []string{
		"-nodefaults", "-no-user-config", "-no-reboot",
		"-display", "none", "-nic", "none",
		"-machine", "q35",
		"-accel", "tcg", "-cpu", "max",
		"-m", "512M", "-smp", "1",
		"-kernel", "/k/vmlinuz", "-initrd", "/s/initrd", "-append", "console=ttyS0 panic=-1 quiet",
		"-chardev", "stdio,id=console,signal=off",
		"-serial", "chardev:console",
		"-drive", "file=/d/disk.img,if=none,id=disk0,format=raw,cache=none,aio=threads",
		"-device", "virtio-blk-pci,drive=disk0",
		"-device", "virtio-rng-pci",
		"-device", "virtio-serial-pci",
		"-chardev", "socket,id=link,path=/s/link.sock",
		"-device", "virtserialport,chardev=link,name=cvm.link",
	}
	pod := m
	pod.QMPSocket, pod.HotplugPorts = "/h/q,mp", 2
	for _, tc := range []struct {
		name string
		m    Machine
		want []string
	}{
		{"launcher", m, launcher},
		{"pod", pod, append(slices.Clone(launcher),
			"-qmp", "unix:/h/q,,mp,server=on,wait=off",
			"-device", "pcie-root-port,id=cvm.hp0,chassis=1,io-reserve=0",
			"-device", "pcie-root-port,id=cvm.hp1,chassis=2,io-reserve=0")},
	} {
		if diff := cmp.Diff(tc.want, (&QEMU{}).Args(tc.m)); diff != "" {
			t.Errorf("%s: QEMU command line (-want +got):\n%s", tc.name, diff)
		}
	}
}

func TestHotplugLimits(t *testing.T) {
	m := fakeMachine(t)
	m.HotplugPorts = MaxHotplugPorts + 1
	if _, err := (&QEMU{Binary: "true"}).Start(context.Background(), m); err == nil || !strings.Contains(err.Error(), "hot-plug ports") {
		t.Errorf("Start with %d hot-plug ports: %v, want a refusal", m.HotplugPorts, err)
	}
	if _, err := (Builtin{}).Config(m); err == nil || !strings.Contains(err.Error(), "hot-plug slots") {
		t.Errorf("builtin with %d hot-plug ports: %v, want a refusal", m.HotplugPorts, err)
	}
	m.HotplugPorts = 1
	m.QMPSocket = "/q"
	if _, err := (Builtin{}).Config(m); err == nil || !strings.Contains(err.Error(), "QMP") {
		t.Errorf("builtin with a QMP socket: %v, want a refusal", err)
	}
}

// builtinMachine is a Machine whose files exist: a synthetic bzImage, an
// initramfs and a 1 MiB disk.
func builtinMachine(t *testing.T) Machine {
	d := t.TempDir()
	m := Machine{
		Kernel: filepath.Join(d, "bzImage"), Initrd: filepath.Join(d, "initrd"), Disk: filepath.Join(d, "disk.img"),
		Cmdline: "console=ttyS0", Memory: 64 << 20, VCPUs: 1,
		LinkSocket: filepath.Join(d, "link.sock"), ConsoleLog: filepath.Join(d, "console.log"), EngineLog: filepath.Join(d, "engine.log"),
	}
	for name, b := range map[string][]byte{m.Kernel: synthBzImage(), m.Initrd: []byte("initrd"), m.Disk: make([]byte, 1<<20)} {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// The builtin engine turns HotplugPorts into that many vmm disk slots,
// after the other devices; a machine without them keeps the plan it had.
func TestBuiltinHotplugConfig(t *testing.T) {
	m := builtinMachine(t)
	plain, err := (Builtin{}).Config(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(plain.Slots) != 0 {
		t.Errorf("Config without HotplugPorts has %d slots, want 0", len(plain.Slots))
	}
	m.HotplugPorts = 3
	cfg, err := (Builtin{}).Config(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Slots) != 3 {
		t.Fatalf("Config with 3 HotplugPorts has %d slots, want 3", len(cfg.Slots))
	}
	var kinds []vmm.DeviceKind
	for _, w := range vmm.Windows(cfg) {
		kinds = append(kinds, w.Kind)
	}
	want := []vmm.DeviceKind{vmm.KindBlock, vmm.KindRNG, vmm.KindVsock, vmm.KindSlot, vmm.KindSlot, vmm.KindSlot}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Errorf("device windows (-want +got):\n%s", diff)
	}
	if err := vmm.Validate(cfg); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

// Slots outside the range, bad serials and a VM that is not running are
// refused with errors that say so; the VM stopping makes every slot
// refuse.
func TestBuiltinDiskHotplugErrors(t *testing.T) {
	m := builtinMachine(t)
	m.HotplugPorts = 2
	kvm := filepath.Join(t.TempDir(), "no-kvm")
	h, err := Builtin{KVMPath: kvm}.Start(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Kill()
	dh, ok := h.(DiskHotplug)
	if !ok {
		t.Fatalf("the builtin Handle (%T) does not implement DiskHotplug", h)
	}
	h.Wait() // no KVM: the VM never ran
	ctx := context.Background()
	tests := []struct {
		name   string
		slot   int
		serial string
		want   string // in the error
		notRun bool   // the error wraps vmm.ErrSlotNotRunning
	}{
		{"negative slot", -1, "cvm-disk-1", "slot -1", false},
		{"slot past the end", 2, "cvm-disk-1", "slot 2: the VM has 2", false},
		{"empty serial", 0, "", "serial", false},
		{"long serial", 0, strings.Repeat("s", MaxSerial+1), "serial", false},
		{"serial with a space", 0, "a b", "outside", false},
		{"VM not running", 1, "cvm-disk-1", "slot 1", true},
	}
	for _, tt := range tests {
		err := dh.AttachDisk(ctx, tt.slot, m.Disk, tt.serial, true)
		if err == nil || !strings.Contains(err.Error(), tt.want) || errors.Is(err, vmm.ErrSlotNotRunning) != tt.notRun {
			t.Errorf("%s: AttachDisk = %v, want an error containing %q (ErrSlotNotRunning: %t)", tt.name, err, tt.want, tt.notRun)
		}
	}
	if err := dh.DetachDisk(ctx, 0); !errors.Is(err, vmm.ErrSlotNotRunning) {
		t.Errorf("DetachDisk on a stopped VM = %v, want ErrSlotNotRunning", err)
	}
	if err := dh.DetachDisk(ctx, 5); err == nil || !strings.Contains(err.Error(), "slot 5") {
		t.Errorf("DetachDisk(5) = %v, want an error naming slot 5", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := dh.AttachDisk(cctx, 0, m.Disk, "cvm-disk-1", true); !errors.Is(err, context.Canceled) {
		t.Errorf("AttachDisk with a canceled context = %v, want context.Canceled", err)
	}
}

func TestValidSerial(t *testing.T) {
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{"cvm-disk-1", true},
		{"A.b_C-9", true},
		{strings.Repeat("x", MaxSerial), true},
		{strings.Repeat("x", MaxSerial+1), false},
		{"", false},
		{"a/b", false},
		{"é", false},
		{"a\x00", false},
	} {
		if err := ValidSerial(tt.in); (err == nil) != tt.ok {
			t.Errorf("ValidSerial(%q) = %v, want ok %t", tt.in, err, tt.ok)
		}
	}
}

// synthBzImage is a minimal bzImage the VMM's loader accepts: 4 setup
// sectors after the boot sector, then 0x400 bytes of protected-mode code.
func synthBzImage() []byte {
	b := make([]byte, 5*512+0x400)
	le16 := func(off int, v uint16) { b[off], b[off+1] = byte(v), byte(v>>8) }
	le32 := func(off int, v uint32) { le16(off, uint16(v)); le16(off+2, uint16(v>>16)) }
	b[0x1f1] = 4
	le16(0x1fe, 0xaa55)
	b[0x200], b[0x201] = 0xeb, 0x6a
	copy(b[0x202:], "HdrS")
	le16(0x206, 0x020f)
	b[0x211] = 1
	le32(0x22c, 0x7fffffff)
	le32(0x230, 0x200000)
	b[0x234] = 1
	le16(0x236, 0x7f)
	le32(0x238, 2047)
	le32(0x258, 0x1000000)
	le32(0x260, 0x400000)
	return b
}

// A VM that cannot start (no KVM at KVMPath) ends Link with ErrStopped
// and VMM's error, and the engine log says what was started and how it
// ended.
func TestBuiltinEngineLog(t *testing.T) {
	m := builtinMachine(t)
	d := t.TempDir()
	kvm := filepath.Join(d, "no-kvm")
	h, err := Builtin{KVMPath: kvm}.Start(context.Background(), m)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := h.Link(ctx); !errors.Is(err, ErrStopped) || !strings.Contains(err.Error(), kvm) {
		t.Errorf("Link = %v, want ErrStopped naming %s", err, kvm)
	}
	werr := h.Wait()
	if werr == nil || !strings.Contains(werr.Error(), kvm) {
		t.Errorf("Wait = %v, want an error naming %s", werr, kvm)
	}
	b, err := os.ReadFile(m.EngineLog)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "builtin engine: "+m.Kernel+": 1 vCPUs, 64 MiB") || werr == nil || lines[1] != werr.Error() {
		t.Errorf("engine log:\n%s\nwant the VM's shape, then Wait's error %v", b, werr)
	}
}

// A guest that powered off before its link came up: ErrStopped says so.
func TestBuiltinLinkPoweredOff(t *testing.T) {
	h := &builtinHandle{uds: filepath.Join(t.TempDir(), "none.sock"), exited: make(chan struct{}), cancel: func() {}}
	close(h.exited)
	_, err := h.Link(context.Background())
	if !errors.Is(err, ErrStopped) || !strings.HasSuffix(err.Error(), ": the guest powered off") {
		t.Errorf("Link = %v, want ErrStopped ending in \"the guest powered off\"", err)
	}
}
