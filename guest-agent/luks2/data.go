package luks2

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"golang.org/x/crypto/xts"
)

// DataCipher encrypts and decrypts sectors of a crypt segment the way
// dm-crypt does for aes-xts-plain64 with 512-byte sectors: the IV of each
// sector is its number counted from the start of the segment, as a 64-bit
// little-endian integer.
type DataCipher struct {
	c *xts.Cipher
}

// NewDataCipher checks volumeKey against the header (CheckKey) and returns
// the cipher of its data segment.
func NewDataCipher(h *Header, volumeKey []byte) (*DataCipher, error) {
	if err := h.CheckKey(volumeKey); err != nil {
		return nil, err
	}
	c, err := newXTS(volumeKey)
	if err != nil {
		return nil, err
	}
	return &DataCipher{c: c}, nil
}

// Encrypt encrypts b in place; len(b) must be a multiple of SectorSize and
// sector is the number of b's first sector within the segment.
func (d *DataCipher) Encrypt(b []byte, sector uint64) {
	if len(b)%SectorSize != 0 {
		panic("luks2: Encrypt of a partial sector")
	}
	xtsSectors(d.c, b, sector, false)
}

// Decrypt decrypts b in place, like Encrypt.
func (d *DataCipher) Decrypt(b []byte, sector uint64) {
	if len(b)%SectorSize != 0 {
		panic("luks2: Decrypt of a partial sector")
	}
	xtsSectors(d.c, b, sector, true)
}

const chunkSize = 1 << 20

// maxWorkers bounds the goroutines Encrypt uses.
const maxWorkers = 8

// Encrypt reads plaintext from src until EOF and writes it, encrypted, into
// the data segment of dst (from h.Segment.Offset on). A final partial
// sector is padded with zeros. It returns the number of bytes written to
// the segment (a multiple of SectorSize).
//
// Chunks of 1 MiB are encrypted and written by up to GOMAXPROCS (at most 8)
// goroutines, which Encrypt waits for before it returns: dst must accept
// concurrent WriteAt calls at disjoint offsets, as an *os.File does.
func Encrypt(dst io.WriterAt, h *Header, volumeKey []byte, src io.Reader) (int64, error) {
	dc, err := NewDataCipher(h, volumeKey)
	if err != nil {
		return 0, err
	}
	type job struct {
		buf []byte
		off int64 // within the segment
	}
	workers := min(runtime.GOMAXPROCS(0), maxWorkers)
	jobs := make(chan job)
	free := make(chan []byte, workers+1)
	for range workers + 1 {
		free <- make([]byte, chunkSize)
	}
	var (
		mu       sync.Mutex
		writeErr error // guarded by mu
		wg       sync.WaitGroup
	)
	failed := func() error {
		mu.Lock()
		defer mu.Unlock()
		return writeErr
	}
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				if failed() == nil {
					dc.Encrypt(j.buf, uint64(j.off)/SectorSize)
					if _, err := dst.WriteAt(j.buf, int64(h.Segment.Offset)+j.off); err != nil {
						mu.Lock()
						if writeErr == nil {
							writeErr = fmt.Errorf("luks2: writing the data segment: %w", err)
						}
						mu.Unlock()
					}
				}
				buf := j.buf[:cap(j.buf)]
				clear(buf)
				free <- buf
			}
		})
	}
	var done int64
	var held []byte // a buffer the reader took and did not hand on
	err = func() error {
		for {
			buf := <-free
			held = buf
			n, rerr := io.ReadFull(src, buf)
			if rerr != nil && !errors.Is(rerr, io.EOF) && !errors.Is(rerr, io.ErrUnexpectedEOF) {
				return fmt.Errorf("luks2: reading the plaintext: %w", rerr)
			}
			if n > 0 {
				padded := (n + SectorSize - 1) / SectorSize * SectorSize
				clear(buf[n:padded])
				if !h.Segment.Dynamic && uint64(done)+uint64(padded) > h.Segment.Size {
					return fmt.Errorf("luks2: the plaintext is larger than the %d-byte data segment", h.Segment.Size)
				}
				jobs <- job{buf[:padded], done}
				held = nil
				done += int64(padded)
			}
			if rerr != nil {
				return nil
			}
			if err := failed(); err != nil {
				return err
			}
		}
	}()
	if held != nil {
		free <- held
	}
	close(jobs)
	wg.Wait()
	for range workers + 1 {
		clear(<-free)
	}
	if err == nil {
		err = writeErr
	}
	return done, err
}

// Decrypt reads n bytes (a multiple of SectorSize) of the data segment of
// src, decrypts them, and writes the plaintext to dst.
func Decrypt(dst io.Writer, src io.ReaderAt, h *Header, volumeKey []byte, n int64) error {
	if n < 0 || n%SectorSize != 0 {
		return fmt.Errorf("luks2: decrypt length %d is not a multiple of %d", n, SectorSize)
	}
	dc, err := NewDataCipher(h, volumeKey)
	if err != nil {
		return err
	}
	buf := make([]byte, chunkSize)
	defer clear(buf)
	for done := int64(0); done < n; {
		m := min(int64(len(buf)), n-done)
		if _, err := src.ReadAt(buf[:m], int64(h.Segment.Offset)+done); err != nil {
			return fmt.Errorf("luks2: reading the data segment at %d: %w", done, err)
		}
		dc.Decrypt(buf[:m], uint64(done)/SectorSize)
		if _, err := dst.Write(buf[:m]); err != nil {
			return fmt.Errorf("luks2: writing the plaintext: %w", err)
		}
		done += m
	}
	return nil
}
