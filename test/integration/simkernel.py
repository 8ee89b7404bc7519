# SPDX-License-Identifier: MIT
"""A simulated kernel for simulated hosts: it watches the files hostdevd's
worker writes (driver_override, drivers/*/bind and unbind, drivers_probe) and
changes the tree the way the kernel would: driver links, /dev/vfio nodes.

Knobs for tests: fail_bind (addresses that no driver will take), slow_unbind
(the driver whose unbind blocks the writer for a while, as vfio-pci does
while a VFIO user holds the device)."""

import glob
import os
import shutil
import threading
import time


class SimKernel:
    def __init__(self, root, poll=0.004, on_event=None):
        self.sys = os.path.join(root, "sys")
        self.dev = os.path.join(root, "dev")
        self.poll = poll
        self.fail_bind = set()
        self.vanish_on_unbind = set()  # addresses that disappear when unbound
        self.on_event = on_event        # (action, sysfs devpath) -> sends the uevent
        self.overrides = {}
        self.original = {}
        self.mtimes = {}
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.log = []
        probe = os.path.join(self.sys, "bus/pci/drivers_probe")
        if not os.path.exists(probe):
            open(probe, "w").close()
        for link in glob.glob(os.path.join(self.sys, "bus/pci/devices/*")):
            addr = os.path.basename(link)
            drv = os.path.join(link, "driver")
            self.original[addr] = os.path.basename(os.readlink(drv)) if os.path.islink(drv) else None
        for drvdir in glob.glob(os.path.join(self.sys, "bus/pci/drivers/*")):
            for f in ("bind", "unbind", "new_id", "remove_id"):
                p = os.path.join(drvdir, f)
                if not os.path.exists(p):
                    open(p, "w").close()
        # vfio-pci is "loaded": its driver directory is there.
        self._driver_dir("vfio-pci")
        for p in self._watched():
            self.mtimes[p] = os.stat(p).st_mtime_ns
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    # -- the tree ----------------------------------------------------------
    def _driver_dir(self, name):
        d = os.path.join(self.sys, "bus/pci/drivers", name)
        os.makedirs(d, exist_ok=True)
        for f in ("bind", "unbind", "new_id", "remove_id"):
            p = os.path.join(d, f)
            if not os.path.exists(p):
                open(p, "w").close()
        return d

    def devpath(self, addr):
        return os.path.realpath(os.path.join(self.sys, "bus/pci/devices", addr))

    def driver_of(self, addr):
        link = os.path.join(self.devpath(addr), "driver")
        return os.path.basename(os.readlink(link)) if os.path.islink(link) else None

    def group_of(self, addr):
        link = os.path.join(self.devpath(addr), "iommu_group")
        return os.path.basename(os.readlink(link)) if os.path.islink(link) else None

    def _watched(self):
        files = glob.glob(os.path.join(self.sys, "bus/pci/drivers/*/bind")) + \
            glob.glob(os.path.join(self.sys, "bus/pci/drivers/*/unbind")) + \
            [os.path.join(self.sys, "bus/pci/drivers_probe")]
        for link in glob.glob(os.path.join(self.sys, "bus/pci/devices/*")):
            p = os.path.join(link, "driver_override")
            if os.path.exists(p):
                files.append(p)
        return [f for f in files if os.path.isfile(f)]

    def do_unbind(self, addr, drv):
        dev = self.devpath(addr)
        link = os.path.join(dev, "driver")
        if not os.path.islink(link) or os.path.basename(os.readlink(link)) != drv:
            return
        os.unlink(link)
        back = os.path.join(self.sys, "bus/pci/drivers", drv, addr)
        if os.path.lexists(back):
            os.unlink(back)
        if drv == "vfio-pci":
            group = self.group_of(addr)
            still = [a for a in os.listdir(os.path.join(self.sys, "kernel/iommu_groups", group, "devices"))
                     if a != addr and self.driver_of(a) == "vfio-pci"] if group else []
            if group and not still and os.path.exists(os.path.join(self.dev, "vfio", group)):
                os.unlink(os.path.join(self.dev, "vfio", group))
        self.log.append(("unbind", addr, drv))
        self._uevent("unbind", dev)
        if addr in self.vanish_on_unbind:
            # Surprise removal: gone from the bus, then from sysfs.
            os.unlink(os.path.join(self.sys, "bus/pci/devices", addr))
            self._uevent("remove", dev)
            shutil.rmtree(dev)
            self.log.append(("vanished", addr, drv))

    def do_bind(self, addr, drv):
        dev = self.devpath(addr)
        if not os.path.isdir(dev) or os.path.islink(os.path.join(dev, "driver")):
            return
        if addr in self.fail_bind:
            self.log.append(("bind-failed", addr, drv))
            return
        over = self.overrides.get(addr)
        if over and over != drv:
            return
        d = self._driver_dir(drv)
        os.symlink(os.path.relpath(d, dev), os.path.join(dev, "driver"))
        os.symlink(os.path.relpath(dev, d), os.path.join(d, addr))
        if drv == "vfio-pci":
            group = self.group_of(addr)
            os.makedirs(os.path.join(self.dev, "vfio"), exist_ok=True)
            open(os.path.join(self.dev, "vfio", "vfio"), "a").close()
            if group:
                open(os.path.join(self.dev, "vfio", group), "a").close()
        self.log.append(("bind", addr, drv))
        self._uevent("bind", dev)

    def _uevent(self, action, dev):
        if self.on_event:
            self.on_event(action, "/sys/" + os.path.relpath(dev, self.sys))

    def _handle(self, path, data):
        name = os.path.basename(path)
        value = data.split("\n")[0].strip()
        if name == "driver_override":
            addr = os.path.basename(os.path.dirname(path))
            addr = os.path.basename(os.path.realpath(os.path.dirname(path)))
            self.overrides[addr] = value or None
            with open(path, "w") as f:
                f.write((value or "(null)") + "\n")
            return
        if not value:
            return
        if name == "drivers_probe":
            if self.driver_of(value) is None:
                target = self.overrides.get(value) or self.original.get(value)
                if target:
                    self.do_bind(value, target)
        elif name == "unbind":
            self.do_unbind(value, os.path.basename(os.path.dirname(path)))
        elif name == "bind":
            self.do_bind(value, os.path.basename(os.path.dirname(path)))
        with open(path, "w"):
            pass

    # The kernel handles each write before the next one; a poll sees a
    # device's override, unbind and probe at once, so they are taken in the
    # order hostdevd writes them (timestamps are too coarse to order them).
    ORDER = {"driver_override": 0, "unbind": 1, "bind": 2, "drivers_probe": 3}

    def _run(self):
        while not self.stop_flag.is_set():
            with self.lock:
                changed = []
                for p in self._watched():
                    try:
                        m = os.stat(p).st_mtime_ns
                    except FileNotFoundError:
                        continue
                    if self.mtimes.get(p) != m:
                        changed.append(p)
                changed.sort(key=lambda p: self.ORDER.get(os.path.basename(p), 9))
                for p in changed:
                    with open(p) as f:
                        data = f.read()
                    self._handle(p, data)
                    self.mtimes[p] = os.stat(p).st_mtime_ns
            time.sleep(self.poll)

    def slow_unbind(self, drv, delay):
        """The next unbind written to drv blocks its writer for `delay` s."""
        path = os.path.join(self.sys, "bus/pci/drivers", drv, "unbind")
        with self.lock:
            os.unlink(path)
            os.mkfifo(path)

        def later():
            time.sleep(delay)
            # The writer's write returns as soon as we read, before the
            # unbind is applied; holding the lock keeps its next writes
            # (clear, bind) waiting, as the kernel's synchronous write would.
            with self.lock:
                with open(path) as f:        # the writer's open() returns now
                    data = f.read()
                os.unlink(path)
                open(path, "w").close()
                self.mtimes[path] = os.stat(path).st_mtime_ns
                if data.strip():
                    self.do_unbind(data.strip(), drv)

        threading.Thread(target=later, daemon=True).start()

    def stop(self):
        self.stop_flag.set()
        self.thread.join(5)
