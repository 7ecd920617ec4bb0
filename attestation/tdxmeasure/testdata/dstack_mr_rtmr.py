#!/usr/bin/env python3
"""Line-by-line Python transliteration of dstack-mr's RTMR1/RTMR2 code
(Dstack-TEE/dstack@312dc605ebaaf93372534ffb135ea011533d28e9:
dstack/dstack-mr/src/kernel.rs authenticode_sha384_hash, patch_kernel,
rtmr1_log, measure_cmdline; machine.rs measure_with_logs; util.rs
measure_log), kept deliberately literal, including where it differs from
EDK2/QEMU (8-byte padding, 32-bit heap_end_ptr write, trailing data only
with a certificate table). Used to make rtmr-vectors.json; see README.md.

usage: dstack_mr_rtmr.py KERNEL INITRD CMDLINE MEMORY_BYTES
prints: rtmr1 HEX, rtmr2 HEX (dstack-mr always models the patched kernel)
"""
import hashlib
import struct
import sys

STABLE_MIN = 0xB0000000


def rd(data, off, fmt):
    n = struct.calcsize(fmt)
    if off + n > len(data):
        raise ValueError("short read at %#x" % off)
    return struct.unpack_from(fmt, data, off)[0]


def authenticode(data):
    lfanew = rd(data, 0x3C, "<I")
    if rd(data, lfanew, "<I") != 0x00004550:
        raise ValueError("bad PE signature")
    coff = lfanew + 4
    opt_size = rd(data, coff + 16, "<H")
    opt = coff + 20
    magic = rd(data, opt, "<H")
    checksum = opt + 64
    ddir = opt + (112 if magic == 0x20B else 96)
    cert_dir = ddir + 4 * 8
    size_of_headers = rd(data, opt + 60, "<I")
    h = hashlib.sha384()
    h.update(data[0:checksum])
    h.update(data[checksum + 4:cert_dir])
    h.update(data[cert_dir + 8:size_of_headers])
    summ = size_of_headers
    nsec = rd(data, coff + 2, "<H")
    table = opt + opt_size
    secs = []
    for i in range(nsec):
        s = table + i * 40
        ptr = rd(data, s + 20, "<I")
        size = rd(data, s + 16, "<I")
        if size > 0:
            secs.append((ptr, size))
    secs.sort(key=lambda x: x[0])
    for off, size in secs:
        end = off + size
        if end <= len(data):
            h.update(data[off:end])
        else:
            avail = max(len(data) - off, 0)
            if avail > 0:
                h.update(data[off:off + avail])
        summ += size
    fsize = len(data)
    cert_addr = rd(data, cert_dir, "<I")
    cert_size = rd(data, cert_dir + 4, "<I")
    if cert_addr > 0 and cert_size > 0 and fsize > summ:
        trailing = fsize - summ
        if trailing > cert_size:
            n = trailing - cert_size
            if summ + n <= len(data):
                h.update(data[summ:summ + n])
    if fsize % 8:
        h.update(bytes(8 - fsize % 8))
    return h.digest()


def patch(kd, initrd_size, mem, acpi=0x28000):
    kd = bytearray(kd)
    protocol = struct.unpack_from("<H", kd, 0x206)[0]
    if protocol < 0x200 or (kd[0x211] & 1) == 0:
        real, cmd = 0x90000, 0x9A000
    else:
        real, cmd = 0x10000, 0x20000
    if protocol >= 0x200:
        kd[0x210] = 0xB0
    if protocol >= 0x201:
        kd[0x211] |= 0x80
        struct.pack_into("<I", kd, 0x224, max(cmd - real - 0x200, 0))
    if protocol >= 0x202:
        struct.pack_into("<I", kd, 0x228, cmd)
    else:
        struct.pack_into("<H", kd, 0x20, 0xA33F)
        struct.pack_into("<H", kd, 0x22, cmd - real)
    if initrd_size > 0:
        if protocol >= 0x20C:
            xlf = struct.unpack_from("<H", kd, 0x236)[0]
            imax = 0xFFFFFFFF if xlf & 0x40 else 0x37FFFFFF
        elif protocol >= 0x203:
            imax = struct.unpack_from("<I", kd, 0x22C)[0] or 0x37FFFFFF
        else:
            imax = 0x37FFFFFF
        lowmem = STABLE_MIN if mem < STABLE_MIN else 0x80000000
        below = lowmem if mem >= lowmem else mem
        if imax >= below - acpi:
            imax = below - acpi - 1
        if initrd_size >= imax:
            raise ValueError("initrd too large")
        addr = (imax - initrd_size) & ~4095
        struct.pack_into("<I", kd, 0x218, addr)
        struct.pack_into("<I", kd, 0x21C, initrd_size)
    return bytes(kd)


def measure_log(log):
    mr = bytes(48)
    for e in log:
        mr = hashlib.sha384(mr + e).digest()
    return mr


def main():
    kernel = open(sys.argv[1], "rb").read()
    initrd = open(sys.argv[2], "rb").read()
    cmdline = sys.argv[3] + " initrd=initrd"  # dstack-mr's callers append it
    mem = int(sys.argv[4])
    s = lambda b: hashlib.sha384(b).digest()
    rtmr1 = [authenticode(patch(kernel, len(initrd), mem)),
             s(b"Calling EFI Application from Boot Option"), s(b"\0\0\0\0"),
             s(b"Exit Boot Services Invocation"),
             s(b"Exit Boot Services Returned with Success")]
    rtmr2 = [s(cmdline.encode("utf-16-le") + b"\0\0"), s(initrd)]
    print("rtmr1", measure_log(rtmr1).hex())
    print("rtmr2", measure_log(rtmr2).hex())


if __name__ == "__main__":
    main()
