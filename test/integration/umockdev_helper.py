# SPDX-License-Identifier: MIT
"""Plays the kernel's uevent side for hotplug tests, under umockdev.

Run as `umockdev-wrapper /usr/bin/python3 umockdev_helper.py HOST`. It builds
the simulated host inside a umockdev testbed, prints {"root": DIR} and then
reads one JSON command per line on stdin, answering {"ok": true} or
{"error": "..."}. The daemon under test runs with LD_PRELOAD of the umockdev
preload and UMOCKDEV_DIR=DIR, so its udev monitor receives these uevents.
"""

import json
import os
import shutil
import sys
import time

import gi

gi.require_version("UMockdev", "1.0")
from gi.repository import UMockdev  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import simhost  # noqa: E402


class Kernel:
    def __init__(self, host):
        self.tb = UMockdev.Testbed.new()
        self.root = self.tb.get_root_dir()
        # tb.uevent() resolves devices through libudev in this process, which
        # the preload redirects only when UMOCKDEV_DIR is in the environment.
        os.environ["UMOCKDEV_DIR"] = self.root
        self.tree = simhost.build(host, self.root)

    def syspath(self, rel):
        return "/sys/" + rel

    def uevent(self, rel, action):
        self.last_uevent = time.monotonic()
        self.tb.uevent(self.syspath(rel), action)

    def op_uevent(self, cmd):
        rel = self.tree.devices.get(cmd.get("bdf"), cmd.get("rel"))
        count = cmd.get("count", 1)
        for _ in range(count):
            self.uevent(rel, cmd["action"])
            if count > 1:
                # The emulated netlink socket has a small buffer, and
                # umockdev aborts when it is full.
                time.sleep(0.003)

    def op_add_pci(self, cmd):
        rel = self.tree.pci(cmd["bdf"], int(cmd["vendor"], 16), int(cmd["device"], 16),
                            int(cmd["class"], 16), parent=cmd.get("parent"),
                            driver=cmd.get("driver"), group=cmd.get("group"),
                            numa=cmd.get("numa", -1))
        if cmd.get("physfn"):
            pf = self.tree.devices[cmd["physfn"]]
            n = sum(1 for e in os.listdir(self.tree.path(pf)) if e.startswith("virtfn"))
            self.tree.link(f"{pf}/virtfn{n}", rel)
            self.tree.link(f"{rel}/physfn", pf)
            self.tree.write(f"{pf}/sriov_numvfs", f"{n + 1}\n")
        self.uevent(rel, "add")

    def op_set_driver(self, cmd):
        bdf, drv = cmd["bdf"], cmd.get("driver")
        rel = self.tree.devices[bdf]
        link = self.tree.path(f"{rel}/driver")
        if os.path.lexists(link):
            old = os.path.basename(os.readlink(link))
            os.unlink(link)
            old_back = self.tree.path(f"bus/pci/drivers/{old}/{bdf}")
            if os.path.lexists(old_back):
                os.unlink(old_back)
            self.uevent(rel, "unbind")
        if drv:
            self.tree.bind(bdf, drv)
            self.uevent(rel, "bind")

    def op_remove_pci(self, cmd):
        bdf = cmd["bdf"]
        rel = self.tree.devices[bdf]
        os.unlink(self.tree.path(f"bus/pci/devices/{bdf}"))
        physfn = self.tree.path(f"{rel}/physfn")
        if os.path.lexists(physfn):
            pf = os.path.normpath(os.path.join(os.path.dirname(physfn), os.readlink(physfn)))
            links = sorted(e for e in os.listdir(pf) if e.startswith("virtfn"))
            for e in links:
                if os.path.basename(os.readlink(os.path.join(pf, e))) == bdf:
                    os.unlink(os.path.join(pf, e))
            with open(os.path.join(pf, "sriov_numvfs"), "w") as f:
                f.write(f"{len(links) - 1}\n")
        # The kernel sends "remove" while the directory still resolves.
        self.uevent(rel, "remove")
        shutil.rmtree(self.tree.path(rel))
        del self.tree.devices[bdf]

    def op_add_usb(self, cmd):
        name = self.tree.usb(cmd["controller"], cmd["busnum"], cmd["port"],
                             int(cmd["vendor"], 16), int(cmd["product"], 16),
                             devnum=cmd["devnum"], product=cmd.get("name"),
                             interfaces=[(0x03, "usbhid")])
        rel = os.path.relpath(os.path.realpath(self.tree.path(f"bus/usb/devices/{name}")),
                              self.tree.sys)
        self.uevent(rel, "add")

    def op_simkernel(self, cmd):
        """Plays the kernel's side of driver writes, with uevents."""
        from simkernel import SimKernel
        self.sim = SimKernel(self.root, on_event=lambda action, path: self.tb.uevent(path, action))

    def op_remove_usb(self, cmd):
        link = self.tree.path(f"bus/usb/devices/{cmd['port']}")
        rel = os.path.relpath(os.path.realpath(link), self.tree.sys)
        for e in os.listdir(self.tree.path("bus/usb/devices")):
            if e == cmd["port"] or e.startswith(cmd["port"] + ":"):
                os.unlink(self.tree.path(f"bus/usb/devices/{e}"))
        self.uevent(rel, "remove")
        shutil.rmtree(self.tree.path(rel))


def main():
    k = Kernel(sys.argv[1])
    print(json.dumps({"root": k.root}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        try:
            k.last_uevent = None
            getattr(k, "op_" + cmd["op"])(cmd)
            # CLOCK_MONOTONIC is shared by processes: callers can time from
            # the moment the last uevent went out.
            print(json.dumps({"ok": True, "uevent_at": k.last_uevent}), flush=True)
        except Exception as e:  # noqa: BLE001 - reported to the test
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)


if __name__ == "__main__":
    main()
