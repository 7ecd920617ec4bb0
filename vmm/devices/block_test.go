package devices

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const testSectors = 8

// tempDisk returns a file of testSectors sectors, sector i filled with byte
// i+1.
func tempDisk(t *testing.T) *os.File {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(t.TempDir(), "disk.img"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	for i := range testSectors {
		if _, err := f.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, SectorSize), int64(i*SectorSize)); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

const (
	hdrAddr    = drvData
	statusAddr = drvData + 0x100
	dataAddr   = drvData + 0x1000
)

// request publishes a request with header (typ, sector), the given data
// buffer, and a status byte; it kicks and returns the used elements and the
// status.
func (d *testDriver) request(typ uint32, sector uint64, data *buf) ([]usedElem, byte) {
	binary.LittleEndian.PutUint32(d.mem[hdrAddr:], typ)
	binary.LittleEndian.PutUint32(d.mem[hdrAddr+4:], 0)
	binary.LittleEndian.PutUint64(d.mem[hdrAddr+8:], sector)
	d.mem[statusAddr] = 0xff
	bufs := []buf{{hdrAddr, blkHeaderLen, false}}
	if data != nil {
		bufs = append(bufs, *data)
	}
	bufs = append(bufs, buf{statusAddr, 1, true})
	d.addChain(bufs...)
	return d.kick(), d.mem[statusAddr]
}

func TestBlock(t *testing.T) {
	f := tempDisk(t)
	dev, err := NewBlock(f, BlockOptions{ID: "cvm-disk-0"})
	if err != nil {
		t.Fatal(err)
	}
	d := newTestDriver(t, dev)
	var cfg [blkConfigLen]byte
	for i := range cfg {
		var p [1]byte
		d.mmio.Read(0x100+uint64(i), p[:])
		cfg[i] = p[0]
	}
	if got := binary.LittleEndian.Uint64(cfg[0:]); got != testSectors {
		t.Errorf("config capacity = %d, want %d", got, testSectors)
	}
	if got := binary.LittleEndian.Uint32(cfg[20:]); got != SectorSize {
		t.Errorf("config blk_size = %d, want %d", got, SectorSize)
	}
	if d.features&blkFRO != 0 {
		t.Error("read-write device offers VIRTIO_BLK_F_RO")
	}

	// Read sector 0.
	used, status := d.request(blkTIn, 0, &buf{dataAddr, SectorSize, true})
	if status != blkSOK || len(used) != 1 || used[0].Len != SectorSize+1 {
		t.Fatalf("read sector 0: status %d, used %v", status, used)
	}
	if diff := cmp.Diff(bytes.Repeat([]byte{1}, SectorSize), []byte(d.mem[dataAddr:dataAddr+SectorSize])); diff != "" {
		t.Errorf("sector 0 (-want +got):\n%s", diff)
	}

	// Write sector 1, read it back from the file.
	copy(d.mem[dataAddr:], bytes.Repeat([]byte("w"), SectorSize))
	used, status = d.request(blkTOut, 1, &buf{dataAddr, SectorSize, false})
	if status != blkSOK || len(used) != 1 || used[0].Len != 1 {
		t.Fatalf("write sector 1: status %d, used %v", status, used)
	}
	got := make([]byte, SectorSize)
	if _, err := f.ReadAt(got, SectorSize); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(bytes.Repeat([]byte("w"), SectorSize), got); diff != "" {
		t.Errorf("sector 1 in the file (-want +got):\n%s", diff)
	}

	tests := []struct {
		name       string
		typ        uint32
		sector     uint64
		data       *buf
		wantStatus byte
		wantLen    uint32
		wantData   string // if set, the data buffer's contents afterwards
	}{
		{"flush", blkTFlush, 0, nil, blkSOK, 1, ""},
		{"get id", blkTGetID, 0, &buf{dataAddr, BlockIDLen, true}, blkSOK, BlockIDLen + 1, "cvm-disk-0\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"},
		{"read last sector", blkTIn, testSectors - 1, &buf{dataAddr, SectorSize, true}, blkSOK, SectorSize + 1, string(bytes.Repeat([]byte{testSectors}, SectorSize))},
		{"read past the end", blkTIn, testSectors - 1, &buf{dataAddr, 2 * SectorSize, true}, blkSIOErr, 1, ""},
		{"read at huge sector", blkTIn, 1 << 62, &buf{dataAddr, SectorSize, true}, blkSIOErr, 1, ""},
		{"write past the end", blkTOut, testSectors, &buf{dataAddr, SectorSize, false}, blkSIOErr, 1, ""},
		{"partial sector", blkTIn, 0, &buf{dataAddr, 100, true}, blkSIOErr, 1, ""},
		{"unknown type", 99, 0, nil, blkSUnsupp, 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			used, status := d.request(tt.typ, tt.sector, tt.data)
			if status != tt.wantStatus || len(used) != 1 || used[0].Len != tt.wantLen {
				t.Errorf("status %d, used %v; want status %d, used length %d", status, used, tt.wantStatus, tt.wantLen)
			}
			if tt.wantData != "" {
				if diff := cmp.Diff(tt.wantData, string(d.mem[dataAddr:dataAddr+uint64(len(tt.wantData))])); diff != "" {
					t.Errorf("data buffer (-want +got):\n%s", diff)
				}
			}
		})
	}
	if d.needsReset() {
		t.Error("NEEDS_RESET after well-formed requests")
	}
}

func TestBlockReadOnly(t *testing.T) {
	f := tempDisk(t)
	dev, err := NewBlock(f, BlockOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	d := newTestDriver(t, dev)
	if d.features&blkFRO == 0 {
		t.Error("read-only device does not offer VIRTIO_BLK_F_RO")
	}
	copy(d.mem[dataAddr:], bytes.Repeat([]byte("w"), SectorSize))
	if _, status := d.request(blkTOut, 0, &buf{dataAddr, SectorSize, false}); status != blkSIOErr {
		t.Errorf("write status = %d, want IOERR", status)
	}
	got := make([]byte, SectorSize)
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, bytes.Repeat([]byte{1}, SectorSize)) {
		t.Error("read-only device changed the file")
	}
	if _, status := d.request(blkTIn, 0, &buf{dataAddr, SectorSize, true}); status != blkSOK {
		t.Errorf("read status = %d, want OK", status)
	}
}

func TestBlockMalformed(t *testing.T) {
	dev, err := NewBlock(tempDisk(t), BlockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d := newTestDriver(t, dev)

	// Header too short: IOERR in the status byte.
	d.mem[statusAddr] = 0xff
	d.addChain(buf{hdrAddr, 8, false}, buf{statusAddr, 1, true})
	if used := d.kick(); len(used) != 1 || used[0].Len != 1 || d.mem[statusAddr] != blkSIOErr {
		t.Errorf("short header: used %v, status %d; want one element of length 1, IOERR", used, d.mem[statusAddr])
	}
	if d.needsReset() {
		t.Error("NEEDS_RESET after a short header that could be answered")
	}

	// No writable byte: returned with length 0, and the device needs reset.
	d.addChain(buf{hdrAddr, blkHeaderLen, false})
	if used := d.kick(); len(used) != 1 || used[0].Len != 0 {
		t.Errorf("no status byte: used %v, want one element of length 0", used)
	}
	if !d.needsReset() {
		t.Error("no NEEDS_RESET after a chain without a status byte")
	}
}

func TestNewBlockErrors(t *testing.T) {
	f := tempDisk(t)
	if _, err := NewBlock(f, BlockOptions{ID: "this-id-is-longer-than-twenty"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("NewBlock with a long ID: err = %v, want ErrInvalid", err)
	}
	empty, err := os.Create(filepath.Join(t.TempDir(), "empty"))
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Close()
	if _, err := NewBlock(empty, BlockOptions{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("NewBlock on an empty file: err = %v, want ErrInvalid", err)
	}
}

// TestBlockSharedStatus puts the data and the status byte in one writable
// buffer and the header across two readable ones: the device must find the
// status as the chain's last writable byte, whatever the buffer layout.
func TestBlockSharedStatus(t *testing.T) {
	dev, err := NewBlock(tempDisk(t), BlockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d := newTestDriver(t, dev)
	copy(d.mem[hdrAddr:], blkHeaderBytes(blkTIn, 2))
	d.mem[dataAddr+SectorSize] = 0xff
	d.addChain(buf{hdrAddr, 5, false}, buf{hdrAddr + 5, blkHeaderLen - 5, false}, buf{dataAddr, SectorSize + 1, true})
	used := d.kick()
	if len(used) != 1 || used[0].Len != SectorSize+1 || d.mem[dataAddr+SectorSize] != blkSOK {
		t.Fatalf("used %v, status %d; want length %d, OK", used, d.mem[dataAddr+SectorSize], SectorSize+1)
	}
	if !bytes.Equal(d.mem[dataAddr:dataAddr+SectorSize], bytes.Repeat([]byte{3}, SectorSize)) {
		t.Error("sector 2 not read into the shared buffer")
	}
}

func blkHeaderBytes(typ uint32, sector uint64) []byte {
	h := make([]byte, blkHeaderLen)
	binary.LittleEndian.PutUint32(h, typ)
	binary.LittleEndian.PutUint64(h[8:], sector)
	return h
}
