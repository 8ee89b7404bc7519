#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Simulated hosts: sysfs trees (and a matching /dev) that hostdevd and lspci read.

    simhost.py build HOST DIR [--functions N]    HOST: dell-190, hp-130, scale
    simhost.py kernel DIR                        play the kernel's part (until ^C)
    simhost.py list

DIR gets sys/ (give hostdevd --sysfs-root DIR/sys) and dev/ (--dev-root DIR/dev).
The trees follow what the kernel lays out: devices/pci<dom>:<bus>/<bdf>/ with
vendor, device, class, revision, subsystem_*, numa_node, config; driver and
iommu_group links; bus/pci/devices and bus/pci/drivers/<drv>/{bind,unbind,...};
kernel/iommu_groups/<n>/devices; physfn/virtfnN for SR-IOV; mdev_supported_types
under class/mdev_bus; USB devices under their controller with bus/usb links.
"""

import argparse
import os
import shutil
import stat
import struct
import sys

PCI_DRIVER_FILES = ("bind", "unbind", "new_id", "remove_id")


class Tree:
    """Writes one simulated host under root/sys and root/dev."""

    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.sys = os.path.join(self.root, "sys")
        self.dev = os.path.join(self.root, "dev")
        self.devices = {}   # bdf -> device dir relative to sys
        self.usb_char_nodes = False
        for d in ("devices", "bus/pci/devices", "bus/pci/drivers", "bus/usb/devices",
                  "bus/usb/drivers", "kernel/iommu_groups", "class/mdev_bus", "class/net",
                  "bus/mdev/devices", "module"):
            os.makedirs(os.path.join(self.sys, d), exist_ok=True)
        os.makedirs(os.path.join(self.dev, "vfio"), exist_ok=True)
        os.makedirs(os.path.join(self.dev, "bus/usb"), exist_ok=True)

    # -- helpers ---------------------------------------------------------
    def path(self, rel):
        return os.path.join(self.sys, rel)

    def write(self, rel, text):
        p = self.path(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)

    def write_bytes(self, rel, data):
        with open(self.path(rel), "wb") as f:
            f.write(data)

    def link(self, rel, target_rel):
        """A relative symlink at rel pointing at target_rel (both under sys)."""
        p = self.path(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if os.path.lexists(p):
            os.unlink(p)
        os.symlink(os.path.relpath(self.path(target_rel), os.path.dirname(p)), p)

    def driver_dir(self, bus, name):
        rel = f"bus/{bus}/drivers/{name}"
        if not os.path.isdir(self.path(rel)):
            os.makedirs(self.path(rel))
            if bus == "pci":
                for f in PCI_DRIVER_FILES:
                    self.write(f"{rel}/{f}", "")
        return rel

    def kernel_module(self, name):
        os.makedirs(self.path(f"module/{name}"), exist_ok=True)

    # -- PCI -------------------------------------------------------------
    def pci(self, bdf, vendor, device, cls, *, parent=None, driver=None, group=None,
            numa=-1, rev=0x01, svendor=None, sdevice=0, boot_vga=None):
        """Adds a PCI function; parent is an upstream bridge's bdf or None."""
        dom, bus = bdf.split(":")[0], bdf.split(":")[1]
        if parent:
            rel = f"{self.devices[parent]}/{bdf}"
        else:
            rel = f"devices/pci{dom}:{bus}/{bdf}"
        self.devices[bdf] = rel
        svendor = vendor if svendor is None else svendor
        self.write(f"{rel}/vendor", f"0x{vendor:04x}\n")
        self.write(f"{rel}/device", f"0x{device:04x}\n")
        self.write(f"{rel}/class", f"0x{cls:06x}\n")
        self.write(f"{rel}/revision", f"0x{rev:02x}\n")
        self.write(f"{rel}/subsystem_vendor", f"0x{svendor:04x}\n")
        self.write(f"{rel}/subsystem_device", f"0x{sdevice:04x}\n")
        self.write(f"{rel}/numa_node", f"{numa}\n")
        self.write(f"{rel}/enable", "1\n")
        self.write(f"{rel}/irq", "0\n")
        self.write(f"{rel}/driver_override", "(null)\n")
        self.write(f"{rel}/uevent", f"PCI_CLASS={cls:X}\nPCI_ID={vendor:04X}:{device:04X}\n"
                   f"PCI_SUBSYS_ID={svendor:04X}:{sdevice:04X}\nPCI_SLOT_NAME={bdf}\n")
        if boot_vga is not None:
            self.write(f"{rel}/boot_vga", f"{1 if boot_vga else 0}\n")
        header = 1 if (cls >> 8) == 0x0604 else 0
        cfg = bytearray(64)
        struct.pack_into("<HHHHB3sBBBB", cfg, 0, vendor, device, 0x0406, 0x0010, rev,
                         struct.pack("<I", cls)[:3], 0x10, 0, header, 0)
        struct.pack_into("<HH", cfg, 0x2c, svendor, sdevice)
        self.write_bytes(f"{rel}/config", bytes(cfg))
        self.link(f"{rel}/subsystem", "bus/pci")
        self.link(f"bus/pci/devices/{bdf}", rel)
        if driver:
            self.bind(bdf, driver)
        if group is not None:
            grel = f"kernel/iommu_groups/{group}"
            os.makedirs(self.path(f"{grel}/devices"), exist_ok=True)
            self.link(f"{rel}/iommu_group", grel)
            self.link(f"{grel}/devices/{bdf}", rel)
            if driver == "vfio-pci":
                open(os.path.join(self.dev, "vfio", str(group)), "w").close()
        return rel

    def bind(self, bdf, driver):
        rel = self.devices[bdf]
        drel = self.driver_dir("pci", driver)
        self.link(f"{rel}/driver", drel)
        self.link(f"{drel}/{bdf}", rel)
        if driver == "vfio-pci":
            open(os.path.join(self.dev, "vfio", "vfio"), "w").close()
            self.kernel_module("vfio")
            self.kernel_module("vfio_pci")
            self.kernel_module("vfio_iommu_type1")

    def sriov(self, pf, vfs, totalvfs, *, offset_bdf):
        """Links PF and VFs (already added) the way the kernel does."""
        prel = self.devices[pf]
        self.write(f"{prel}/sriov_totalvfs", f"{totalvfs}\n")
        self.write(f"{prel}/sriov_numvfs", f"{len(vfs)}\n")
        self.write(f"{prel}/sriov_offset", f"{offset_bdf}\n")
        self.write(f"{prel}/sriov_drivers_autoprobe", "1\n")
        for i, vf in enumerate(vfs):
            self.link(f"{prel}/virtfn{i}", self.devices[vf])
            self.link(f"{self.devices[vf]}/physfn", prel)

    def netdev(self, bdf, ifname):
        rel = f"{self.devices[bdf]}/net/{ifname}"
        self.write(f"{rel}/address", "00:00:00:00:00:00\n")
        self.write(f"{rel}/operstate", "up\n")
        self.link(f"class/net/{ifname}", rel)

    def mdev_types(self, bdf, types):
        """types: [(type id, name, available_instances)]"""
        rel = self.devices[bdf]
        for tid, name, avail in types:
            t = f"{rel}/mdev_supported_types/{tid}"
            self.write(f"{t}/name", name + "\n")
            self.write(f"{t}/available_instances", f"{avail}\n")
            self.write(f"{t}/device_api", "vfio-pci\n")
            self.write(f"{t}/description", f"num_heads=4, frl_config=60, framebuffer=2048M\n")
            self.write(f"{t}/create", "")
            os.makedirs(self.path(f"{t}/devices"), exist_ok=True)
        self.link(f"class/mdev_bus/{bdf}", rel)

    def mdev(self, parent_bdf, uuid, type_id, group):
        prel = self.devices[parent_bdf]
        rel = f"{prel}/{uuid}"
        self.write(f"{rel}/uevent", f"MDEV_TYPE={type_id}\n")
        self.write(f"{rel}/remove", "")
        self.link(f"{rel}/mdev_type", f"{prel}/mdev_supported_types/{type_id}")
        self.link(f"{prel}/mdev_supported_types/{type_id}/devices/{uuid}", rel)
        grel = f"kernel/iommu_groups/{group}"
        os.makedirs(self.path(f"{grel}/devices"), exist_ok=True)
        self.link(f"{rel}/iommu_group", grel)
        self.link(f"{grel}/devices/{uuid}", rel)
        self.link(f"bus/mdev/devices/{uuid}", rel)

    def mdev_parent_virtual(self, name, types):
        """A virtual mdev parent such as the kernel's mtty sample:
        devices/virtual/<name>/<name> with mdev_supported_types, under
        class/mdev_bus/<name>. types: [(type id, name, available_instances)]"""
        rel = f"devices/virtual/{name}/{name}"
        self.devices[name] = rel
        self.write(f"{rel}/uevent", f"MAJOR=0\nMINOR=0\nDEVNAME={name}\n")
        self.mdev_types(name, types)
        return rel

    def nvidia_vgpu_vf(self, bdf, types, current=0):
        """A VF of NVIDIA's SR-IOV vGPU (kernel >= 6.8): nvidia/ with
        creatable_vgpu_types (the "ID : name" table), current_vgpu_type and
        the other files the driver shows. types: [(id, name)]."""
        rel = f"{self.devices[bdf]}/nvidia"
        lines = ["ID    : vGPU Name"] + [f"{tid:<5} : {name}" for tid, name in types]
        self.write(f"{rel}/creatable_vgpu_types",
                   ("\n".join(lines) if current == 0 else lines[0]) + "\n")
        self.write(f"{rel}/current_vgpu_type", f"{current}\n")
        for f in ("gpu_instance_id", "placement_id", "vgpu_params", "warm_update"):
            self.write(f"{rel}/{f}", "0\n")

    # -- USB -------------------------------------------------------------
    def usb(self, controller, busnum, port, vid, pid, *, devnum, cls=0, product=None,
            manufacturer=None, interfaces=(), speed="480", serial=None):
        """port "" is the root hub usbN; interfaces: [(class, driver)]; serial: the
        serial number string, or None for none. With usb_char_nodes set (root
        only) /dev/bus/usb/BBB/DDD is a real character device (189, minor)."""
        crel = self.devices[controller]
        root = f"{crel}/usb{busnum}"
        name = f"usb{busnum}" if port == "" else f"{busnum}-{port}"
        rel = root if port == "" else f"{root}/{name}"
        self.write(f"{rel}/idVendor", f"{vid:04x}\n")
        self.write(f"{rel}/idProduct", f"{pid:04x}\n")
        self.write(f"{rel}/bDeviceClass", f"{cls:02x}\n")
        self.write(f"{rel}/busnum", f"{busnum}\n")
        self.write(f"{rel}/devnum", f"{devnum}\n")
        self.write(f"{rel}/speed", f"{speed}\n")
        self.write(f"{rel}/uevent", f"DEVTYPE=usb_device\nBUSNUM={busnum:03d}\nDEVNUM={devnum:03d}\n"
                   f"PRODUCT={vid:x}/{pid:x}/100\nDEVNAME=bus/usb/{busnum:03d}/{devnum:03d}\n")
        if product:
            self.write(f"{rel}/product", product + "\n")
        if manufacturer:
            self.write(f"{rel}/manufacturer", manufacturer + "\n")
        if serial is not None:
            self.write(f"{rel}/serial", serial + "\n")
        self.link(f"{rel}/subsystem", "bus/usb")
        self.link(f"bus/usb/devices/{name}", rel)
        self.link(f"{rel}/driver", self.driver_dir("usb", "usb"))
        for i, (icls, drv) in enumerate(interfaces):
            iname = f"{name}:1.{i}"
            irel = f"{rel}/{iname}"
            self.write(f"{irel}/bInterfaceClass", f"{icls:02x}\n")
            self.write(f"{irel}/uevent", "DEVTYPE=usb_interface\n")
            self.link(f"bus/usb/devices/{iname}", irel)
            if drv:
                self.link(f"{irel}/driver", self.driver_dir("usb", drv))
        node = os.path.join(self.dev, "bus/usb", f"{busnum:03d}")
        os.makedirs(node, exist_ok=True)
        if self.usb_char_nodes:
            os.mknod(os.path.join(node, f"{devnum:03d}"), 0o664 | stat.S_IFCHR,
                     os.makedev(189, (busnum - 1) * 128 + devnum - 1))
        else:
            open(os.path.join(node, f"{devnum:03d}"), "w").close()
        return name

    def usb_unplug(self, name):
        """Takes USB device `name` ("1-2") out of the tree as the kernel does:
        bus links, its directory, its /dev node. Returns its former sysfs path
        (relative), for the "remove" uevent a caller sends before calling this."""
        rel = os.path.relpath(os.path.realpath(self.path(f"bus/usb/devices/{name}")), self.sys)
        with open(self.path(f"{rel}/busnum")) as f:
            busnum = int(f.read())
        with open(self.path(f"{rel}/devnum")) as f:
            devnum = int(f.read())
        for e in os.listdir(self.path("bus/usb/devices")):
            if e == name or e.startswith(name + ":"):
                os.unlink(self.path(f"bus/usb/devices/{e}"))
        shutil.rmtree(self.path(rel))
        node = os.path.join(self.dev, "bus/usb", f"{busnum:03d}", f"{devnum:03d}")
        if os.path.lexists(node):
            os.unlink(node)
        return rel


def build_dell_190(t):
    """Modelled on the seed's dell-190: A100 with vGPU VFs, X540 with VFs, an iGPU
    and its HDMI audio in one group, an xHCI controller with devices."""
    # Root ports.
    t.pci("0000:00:00.0", 0x8086, 0x2020, 0x060000, group=0, numa=0)
    t.pci("0000:00:01.0", 0x8086, 0x2030, 0x060400, driver="pcieport", group=1, numa=0)
    t.pci("0000:00:03.0", 0x8086, 0x2032, 0x060400, driver="pcieport", group=3, numa=0)
    t.pci("0000:00:1c.0", 0x8086, 0xa190, 0x060400, driver="pcieport", group=5, numa=0)
    # X540 (eno1/eno2) with VFs on ixgbevf and one on vfio-pci, each in its own group.
    t.pci("0000:01:00.0", 0x8086, 0x1528, 0x020000, parent="0000:00:01.0", driver="ixgbe",
          group=40, numa=0, svendor=0x1028, sdevice=0x1f61)
    t.pci("0000:01:00.1", 0x8086, 0x1528, 0x020000, parent="0000:00:01.0", driver="ixgbe",
          group=41, numa=0, svendor=0x1028, sdevice=0x1f61)
    vfs = []
    for i in range(4):
        bdf = f"0000:01:10.{2 * i}"
        t.pci(bdf, 0x8086, 0x1515, 0x020000, parent="0000:00:01.0",
              driver="vfio-pci" if i == 0 else "ixgbevf", group=111 + i, numa=0,
              svendor=0x1028, sdevice=0x1f61)
        vfs.append(bdf)
    t.sriov("0000:01:00.0", vfs, 63, offset_bdf=128)
    t.netdev("0000:01:00.0", "eno1")
    t.netdev("0000:01:00.1", "eno2")
    # A100 PCIe 40GB PF with SR-IOV VFs for VF-based vGPU; each VF in its own group.
    t.pci("0000:04:00.0", 0x10de, 0x20f1, 0x030200, parent="0000:00:03.0", driver="nvidia",
          group=116, numa=1, svendor=0x10de, sdevice=0x145f)
    vfs = []
    for i in range(8):
        bdf = f"0000:04:00.{4 + i}" if i < 4 else f"0000:04:01.{i - 4}"
        t.pci(bdf, 0x10de, 0x20f1, 0x030200, parent="0000:00:03.0", driver="nvidia",
              group=117 + i, numa=1, svendor=0x10de, sdevice=0x145f)
        t.write(f"{t.devices[bdf]}/nvidia/current_vgpu_type", "0\n")
        vfs.append(bdf)
    t.sriov("0000:04:00.0", vfs, 16, offset_bdf=4)
    # An AMD Rembrandt iGPU and its HDMI audio behind one bridge: one IOMMU group.
    t.pci("0000:35:00.0", 0x1002, 0x1681, 0x030000, parent="0000:00:1c.0", driver="amdgpu",
          group=20, numa=0, rev=0xc8, boot_vga=True)
    t.pci("0000:35:00.1", 0x1002, 0x1640, 0x040300, parent="0000:00:1c.0",
          driver="snd_hda_intel", group=20, numa=0)
    # xHCI with the BMC's virtual keyboard/mouse (0624:0251, bus 1 dev 4 as in the
    # seed's kubevirt.io/dell-190-0624-0251-001004), a keyboard and a USB stick.
    t.pci("0000:00:14.0", 0x8086, 0xa36d, 0x0c0330, driver="xhci_hcd", group=7, numa=0, rev=0x10)
    t.usb("0000:00:14.0", 1, "", 0x1d6b, 0x0002, devnum=1, cls=0x09, product="xHCI Host Controller",
          manufacturer="Linux 6.1.0 xhci-hcd", interfaces=[(0x09, "hub")])
    t.usb("0000:00:14.0", 1, "4", 0x0624, 0x0251, devnum=4, product="Avocent KVM",
          manufacturer="Avocent", interfaces=[(0x03, "usbhid"), (0x03, "usbhid")], speed="12")
    t.usb("0000:00:14.0", 1, "2", 0x046d, 0xc31c, devnum=2, product="USB Keyboard",
          manufacturer="Logitech", interfaces=[(0x03, "usbhid")], speed="1.5")
    t.usb("0000:00:14.0", 1, "3", 0x0951, 0x1666, devnum=3, product="DataTraveler 3.0",
          manufacturer="Kingston", interfaces=[(0x08, "usb-storage")], speed="5000")
    # The boot disk's NVMe controller.
    t.pci("0000:00:17.0", 0x144d, 0xa808, 0x010802, driver="nvme", group=8, numa=0)


def build_hp_130(t):
    """Modelled on the seed's hp-130-tink-system: an A2 whose VFs offer mdev types
    nvidia-743/745/750, some with mdevs created."""
    t.pci("0000:00:00.0", 0x8086, 0x2020, 0x060000, group=0, numa=0)
    t.pci("0000:00:03.0", 0x8086, 0x2032, 0x060400, driver="pcieport", group=3, numa=0)
    t.pci("0000:08:00.0", 0x10de, 0x25b6, 0x030200, parent="0000:00:03.0", driver="nvidia",
          group=30, numa=0, rev=0xa1, svendor=0x10de, sdevice=0x157e)
    vfs = []
    for i in range(16):
        bdf = f"0000:08:0{(4 + i) // 8}.{(4 + i) % 8}"
        t.pci(bdf, 0x10de, 0x25b6, 0x030200, parent="0000:00:03.0", driver="nvidia",
              group=31 + i, numa=0, rev=0xa1, svendor=0x10de, sdevice=0x157e)
        t.mdev_types(bdf, [("nvidia-743", "NVIDIA A2-2B", 1), ("nvidia-745", "NVIDIA A2-2Q", 1),
                           ("nvidia-750", "NVIDIA A2-2A", 1)])
        vfs.append(bdf)
    t.sriov("0000:08:00.0", vfs, 16, offset_bdf=4)
    t.mdev("0000:08:00.4", "aa8d831f-7752-4d32-9f62-d4a95b118e28", "nvidia-745", 60)
    t.mdev("0000:08:00.7", "0558c582-5856-4b16-a95d-bd0b40786e76", "nvidia-750", 61)
    t.pci("0000:00:1f.6", 0x8086, 0x15bb, 0x020000, driver="e1000e", group=9, numa=0)
    t.netdev("0000:00:1f.6", "eno1")
    t.pci("0000:00:14.0", 0x8086, 0xa36d, 0x0c0330, driver="xhci_hcd", group=7, numa=0, rev=0x10)
    t.usb("0000:00:14.0", 1, "", 0x1d6b, 0x0002, devnum=1, cls=0x09, interfaces=[(0x09, "hub")])


SCALE_IDS = [
    (0x8086, 0x1521, 0x020000, "igb"), (0x8086, 0x1515, 0x020000, "ixgbevf"),
    (0x15b3, 0x101e, 0x020000, "mlx5_core"), (0x10de, 0x20f1, 0x030200, "vfio-pci"),
    (0x144d, 0xa808, 0x010802, "nvme"), (0x1af4, 0x1041, 0x020000, None),
]


def build_scale(t, functions):
    """N endpoint functions, 8 per device, 32 devices per bus, one root bus per
    bus number, each function in its own IOMMU group."""
    for i in range(functions):
        bus, slot, fn = i // 256, (i // 8) % 32, i % 8
        vid, did, cls, drv = SCALE_IDS[i % len(SCALE_IDS)]
        t.pci(f"0000:{bus:02x}:{slot:02x}.{fn}", vid, did, cls, driver=drv, group=i,
              numa=bus % 2)


HOSTS = {
    "dell-190": build_dell_190,
    "hp-130": build_hp_130,
}


def build(host, root, functions=4096):
    t = Tree(root)
    if host == "scale":
        build_scale(t, functions)
    else:
        HOSTS[host](t)
    return t


def run_kernel(root):
    """Claims on a simulated host need someone to play the kernel: the test
    suite's simulated kernel, in the foreground until SIGINT or SIGTERM."""
    import signal
    import threading
    if not os.path.isdir(os.path.join(root, "sys", "bus", "pci")):
        print(f"simhost: {root} holds no simulated host (run build first)", file=sys.stderr)
        return 1
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "integration"))
    from simkernel import SimKernel
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    kernel = SimKernel(os.path.abspath(root))
    print(f"simhost: playing the kernel for {os.path.abspath(root)} (^C stops)", flush=True)
    done.wait()
    kernel.stop()
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("host", choices=sorted(HOSTS) + ["scale"])
    b.add_argument("dir")
    b.add_argument("--functions", type=int, default=4096)
    k = sub.add_parser("kernel", help="apply driver_override/bind/unbind/drivers_probe "
                       "writes to DIR's tree as the kernel would, until interrupted")
    k.add_argument("dir")
    sub.add_parser("list")
    args = ap.parse_args()
    if args.cmd == "kernel":
        return run_kernel(args.dir)
    if args.cmd == "list":
        print("\n".join(sorted(HOSTS) + ["scale"]))
        return 0
    if os.path.exists(args.dir) and os.listdir(args.dir):
        print(f"simhost: {args.dir} is not empty", file=sys.stderr)
        return 1
    build(args.host, args.dir, args.functions)
    print(os.path.join(os.path.abspath(args.dir), "sys"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
