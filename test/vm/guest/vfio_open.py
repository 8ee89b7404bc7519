# SPDX-License-Identifier: MIT
"""Opens a device through the VFIO API (container, group, device fd) and
prints its region and irq counts: proof that the binding is usable."""
import ctypes
import fcntl
import os
import struct
import sys

VFIO_TYPE = ord(";")
VFIO_BASE = 100


def io(nr):
    return (VFIO_TYPE << 8) | (VFIO_BASE + nr)


GET_API_VERSION, CHECK_EXTENSION, SET_IOMMU = io(0), io(1), io(2)
GROUP_GET_STATUS, GROUP_SET_CONTAINER, GROUP_GET_DEVICE_FD = io(3), io(4), io(6)
DEVICE_GET_INFO = io(7)
TYPE1v2 = 3

addr, group = sys.argv[1], sys.argv[2]
container = os.open("/dev/vfio/vfio", os.O_RDWR)
assert fcntl.ioctl(container, GET_API_VERSION) == 0, "VFIO API version"
assert fcntl.ioctl(container, CHECK_EXTENSION, TYPE1v2) == 1, "type1v2 IOMMU"
g = os.open(f"/dev/vfio/{group}", os.O_RDWR)
status = bytearray(struct.pack("II", 8, 0))
fcntl.ioctl(g, GROUP_GET_STATUS, status)
argsz, flags = struct.unpack("II", status)
assert flags & 1, "group viable"
fcntl.ioctl(g, GROUP_SET_CONTAINER, struct.pack("i", container))
fcntl.ioctl(container, SET_IOMMU, TYPE1v2)
dev = fcntl.ioctl(g, GROUP_GET_DEVICE_FD, ctypes.create_string_buffer(addr.encode()))
info = bytearray(struct.pack("IIII", 16, 0, 0, 0))
fcntl.ioctl(dev, DEVICE_GET_INFO, info)
_, dflags, regions, irqs = struct.unpack("IIII", info)
print(f"device fd {dev}: {regions} regions, {irqs} irqs")
assert regions >= 6
