package luks2

import (
	"crypto/aes"
	"crypto/pbkdf2"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"

	"golang.org/x/crypto/xts"
)

// CheckKey reports whether volumeKey is the volume key of this header: the
// pbkdf2 of the key with the digest's salt and iterations must equal the
// digest (compared in constant time). A mismatch returns ErrWrongKey. The
// key length must also suit the segment's cipher (64 bytes for
// aes-xts-plain64 with a 512-bit key, 32 for a 256-bit key) and match the
// key size of the keyslots bound to the digest.
func (h *Header) CheckKey(volumeKey []byte) error {
	if n := len(volumeKey); n != 32 && n != 64 {
		return fmt.Errorf("luks2: the key is %d bytes; %s needs 32 or 64: %w", n, h.Segment.Encryption, ErrWrongKey)
	}
	for _, ks := range h.Keyslots {
		for _, id := range h.Digest.Keyslots {
			if ks.ID == id && ks.KeySize != len(volumeKey) {
				return fmt.Errorf("luks2: the key is %d bytes, keyslot %d holds a %d-byte key: %w", len(volumeKey), id, ks.KeySize, ErrWrongKey)
			}
		}
	}
	if err := checkDigest(h.Digest, volumeKey); err != nil {
		return fmt.Errorf("luks2: %w", err)
	}
	return nil
}

func checkDigest(d Digest, key []byte) error {
	hf, err := hashFunc(d.Hash)
	if err != nil {
		return err
	}
	got, err := pbkdf2.Key(hf, string(key), d.Salt, d.Iterations, len(d.Value))
	if err != nil {
		return fmt.Errorf("luks2: pbkdf2 of the key: %w", err)
	}
	defer clear(got)
	if subtle.ConstantTimeCompare(got, d.Value) != 1 {
		return ErrWrongKey
	}
	return nil
}

// newXTS returns an AES-XTS cipher for a 32- or 64-byte key.
func newXTS(key []byte) (*xts.Cipher, error) {
	if len(key) != 32 && len(key) != 64 {
		return nil, fmt.Errorf("luks2: aes-xts needs a 32- or 64-byte key, got %d bytes", len(key))
	}
	return xts.NewCipher(aes.NewCipher, key)
}

// xtsSectors en- or decrypts b (a multiple of 512 bytes) in place, 512-byte
// sectors with the plain64 IV: the sector number, first, little endian.
func xtsSectors(c *xts.Cipher, b []byte, first uint64, decrypt bool) {
	for i := 0; i+SectorSize <= len(b); i += SectorSize {
		s := b[i : i+SectorSize]
		if decrypt {
			c.Decrypt(s, s, first+uint64(i/SectorSize))
		} else {
			c.Encrypt(s, s, first+uint64(i/SectorSize))
		}
	}
}

// diffuse is the LUKS anti-forensic diffusion: b is hashed in digest-size
// blocks, each prefixed with its big-endian 32-bit index; the last block is
// truncated to fit.
func diffuse(b []byte, hf func() hash.Hash) {
	h := hf()
	ds := h.Size()
	var iv [4]byte
	var sum []byte
	for i := 0; i*ds < len(b); i++ {
		blk := b[i*ds : min((i+1)*ds, len(b))]
		h.Reset()
		binary.BigEndian.PutUint32(iv[:], uint32(i))
		h.Write(iv[:])
		h.Write(blk)
		sum = h.Sum(sum[:0])
		copy(blk, sum)
	}
}

func xorInto(dst, src []byte) {
	subtle.XORBytes(dst, dst, src)
}

// afSplit splits key into stripes blocks: stripes-1 random blocks, and a
// last block that is key XOR the diffused XOR of the others.
func afSplit(key []byte, stripes int, hf func() hash.Hash, rnd io.Reader) ([]byte, error) {
	n := len(key)
	out := make([]byte, n*stripes)
	if _, err := io.ReadFull(rnd, out[:n*(stripes-1)]); err != nil {
		return nil, fmt.Errorf("luks2: reading random bytes: %w", err)
	}
	buf := make([]byte, n)
	for i := 0; i < stripes-1; i++ {
		xorInto(buf, out[i*n:(i+1)*n])
		diffuse(buf, hf)
	}
	last := out[(stripes-1)*n:]
	subtle.XORBytes(last, buf, key)
	return out, nil
}

// afMerge reverses afSplit.
func afMerge(material []byte, n, stripes int, hf func() hash.Hash) []byte {
	buf := make([]byte, n)
	for i := 0; i < stripes-1; i++ {
		xorInto(buf, material[i*n:(i+1)*n])
		diffuse(buf, hf)
	}
	xorInto(buf, material[(stripes-1)*n:stripes*n])
	return buf
}

// openKeyslot recovers the volume key from a pbkdf2 keyslot with
// passphrase, and checks it against the digest. The guest does not need
// this (it receives the volume key itself); tests use it to check Format
// without cryptsetup.
func (h *Header) openKeyslot(r io.ReaderAt, id int, passphrase []byte) ([]byte, error) {
	var ks *Keyslot
	for i := range h.Keyslots {
		if h.Keyslots[i].ID == id {
			ks = &h.Keyslots[i]
		}
	}
	if ks == nil {
		return nil, fmt.Errorf("luks2: no keyslot %d", id)
	}
	if ks.KDF.Type != "pbkdf2" || ks.Area.Encryption != Cipher {
		return nil, fmt.Errorf("luks2: keyslot %d: kdf %s, area %s: %w", id, ks.KDF.Type, ks.Area.Encryption, ErrUnsupported)
	}
	kh, _ := hashFunc(ks.KDF.Hash)
	ah, _ := hashFunc(ks.AF.Hash)
	areaKey, err := pbkdf2.Key(kh, string(passphrase), ks.KDF.Salt, ks.KDF.Iterations, ks.Area.KeySize)
	if err != nil {
		return nil, err
	}
	defer clear(areaKey)
	c, err := newXTS(areaKey)
	if err != nil {
		return nil, err
	}
	n := ks.KeySize * ks.AF.Stripes
	mat := make([]byte, (n+SectorSize-1)/SectorSize*SectorSize)
	defer clear(mat)
	if _, err := r.ReadAt(mat, int64(ks.Area.Offset)); err != nil {
		return nil, fmt.Errorf("luks2: keyslot %d: reading the key material: %w", id, err)
	}
	xtsSectors(c, mat, 0, true)
	key := afMerge(mat, ks.KeySize, ks.AF.Stripes, ah)
	if err := checkDigest(h.Digest, key); err != nil {
		clear(key)
		if errors.Is(err, ErrWrongKey) {
			return nil, fmt.Errorf("luks2: keyslot %d: wrong passphrase (%w)", id, err)
		}
		return nil, err
	}
	return key, nil
}
