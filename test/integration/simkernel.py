# SPDX-License-Identifier: MIT
"""A simulated kernel for simulated hosts: it takes the writes hostdevd's
worker makes (driver_override, drivers/*/bind and unbind, drivers_probe) and
changes the tree the way the kernel would: driver links, /dev/vfio nodes.

No write is lost and they are applied in the order they were made:
- bind, unbind and drivers_probe (write-only in sysfs) become FIFOs. The
  kernel's pipe keeps every write, however fast they come; nothing is read
  back and truncated under a writer.
- driver_override stays a regular file (it is read too); it is read when its
  writer closes it and never written by the simulation (so never clobbered).
  It is a register: a value overwritten before the simulation looked is not
  seen (hostdevd verifies each bind before it writes the next override).
- One inotify queue orders everything: each writer's open and close of a
  FIFO and each close of a driver_override, in the order they happened
  (alternating open/close events are never merged by inotify, so each close
  stands for exactly one write, and one value is taken per close).

Writes are applied a little after the writer's write returns (the real
kernel applies them before); hostdevd verifies each step in sysfs anyway.

Knobs for tests: fail_bind (addresses that no driver will take), slow_unbind
(the driver whose next unbind blocks the writer for a while, as vfio-pci does
while a VFIO user holds the device), vanish_on_unbind."""

import ctypes
import ctypes.util
import errno
import glob
import os
import re
import select
import shutil
import stat
import struct
import threading

IN_MODIFY = 0x2
IN_CLOSE_WRITE = 0x8
IN_OPEN = 0x20
IN_IGNORED = 0x8000
IN_Q_OVERFLOW = 0x4000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = 0o2000000
EVENT = struct.Struct("iIII")

PCI_ADDR = re.compile(rb"\s*([0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])")
WRITE_ONLY = ("bind", "unbind")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _inotify_init():
    fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return fd


class SimKernel:
    def __init__(self, root, poll=None, on_event=None):
        self.sys = os.path.join(root, "sys")
        self.dev = os.path.join(root, "dev")
        self.fail_bind = set()
        self.vanish_on_unbind = set()  # addresses that disappear when unbound
        self.on_event = on_event        # (action, sysfs devpath) -> sends the uevent
        self.overrides = {}
        self.original = {}
        self.lock = threading.RLock()
        self.stop_flag = threading.Event()
        self.log = []
        self.ino = _inotify_init()
        self.wds = {}        # wd -> path
        self.fifos = {}      # FIFO path -> read fd (None while a slow unbind holds its writer)
        self.pending = {}    # FIFO path -> bytes read but not yet taken
        self.fifo_paths = [os.path.join(self.sys, "bus/pci/drivers_probe")]
        self.known = set()   # devices whose driver_override is watched
        with self.lock:
            for link in glob.glob(os.path.join(self.sys, "bus/pci/devices/*")):
                self._device(os.path.basename(link))
            self._fifo(self.fifo_paths[0])
            for drvdir in glob.glob(os.path.join(self.sys, "bus/pci/drivers/*")):
                self._driver_dir(os.path.basename(drvdir))
            # vfio-pci is "loaded": its driver directory is there.
            self._driver_dir("vfio-pci")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    # -- plumbing ------------------------------------------------------------
    def _watch(self, path, mask):
        wd = _libc.inotify_add_watch(self.ino, os.fsencode(path), mask)
        if wd < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), path)
        self.wds[wd] = path

    def _fifo(self, path):
        """Makes `path` a FIFO (once) whose writes this simulation takes."""
        if path in self.fifos:
            return
        st = os.lstat(path) if os.path.lexists(path) else None
        if st is None or not stat.S_ISFIFO(st.st_mode):
            if st is not None:
                os.unlink(path)
            os.mkfifo(path, 0o600)
        self._watch(path, IN_OPEN | IN_CLOSE_WRITE)
        self.fifos[path] = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self.pending[path] = b""

    def _device(self, addr):
        """Watches a device's driver_override (devices hot-added after the
        start are met at their first bind or probe)."""
        if addr in self.known:
            return
        link = os.path.join(self.sys, "bus/pci/devices", addr)
        if not os.path.isdir(link):
            return
        self.known.add(addr)
        drv = os.path.join(link, "driver")
        if addr not in self.original:
            self.original[addr] = os.path.basename(os.readlink(drv)) if os.path.islink(drv) else None
        over = os.path.join(link, "driver_override")
        if os.path.isfile(over):
            self._watch(os.path.realpath(over), IN_CLOSE_WRITE)
            self._override(over, log=False)

    def _take(self, path):
        """The next value written to the FIFO `path`, or None."""
        fd = self.fifos.get(path)
        if fd is not None:
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                self.pending[path] += chunk
        buf = self.pending.get(path, b"")
        m = PCI_ADDR.match(buf)
        if m:
            self.pending[path] = buf[m.end():]
            return m.group(1).decode()
        # Not an address (the kernel answers EINVAL): drop the word.
        junk = re.match(rb"\s*\S*", buf)
        self.pending[path] = buf[junk.end():] if junk else b""
        return None

    # -- the tree ----------------------------------------------------------
    def _driver_dir(self, name):
        d = os.path.join(self.sys, "bus/pci/drivers", name)
        os.makedirs(d, exist_ok=True)
        for f in ("new_id", "remove_id"):
            p = os.path.join(d, f)
            if not os.path.exists(p):
                open(p, "w").close()
        for f in WRITE_ONLY:
            p = os.path.join(d, f)
            self._fifo(p)
            if p not in self.fifo_paths:
                self.fifo_paths.append(p)
        return d

    def devpath(self, addr):
        return os.path.realpath(os.path.join(self.sys, "bus/pci/devices", addr))

    def driver_of(self, addr):
        link = os.path.join(self.devpath(addr), "driver")
        return os.path.basename(os.readlink(link)) if os.path.islink(link) else None

    def group_of(self, addr):
        link = os.path.join(self.devpath(addr), "iommu_group")
        return os.path.basename(os.readlink(link)) if os.path.islink(link) else None

    def override_of(self, addr):
        """What reading driver_override shows: the value or "(null)"."""
        with self.lock:
            return self.overrides.get(addr) or "(null)"

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

    def _override(self, path, log=True):
        addr = os.path.basename(os.path.realpath(os.path.dirname(path)))
        try:
            with open(path) as f:
                value = f.read().split("\n")[0].strip()
        except OSError:
            return
        self.overrides[addr] = None if value in ("", "(null)") else value
        if log:
            self.log.append(("override", addr, self.overrides[addr]))

    def _write(self, path):
        """One write to the FIFO `path` was closed: apply it."""
        value = self._take(path)
        if value is None:
            return
        name = os.path.basename(path)
        self._device(value)
        if name == "drivers_probe":
            if self.driver_of(value) is None:
                target = self.overrides.get(value) or self.original.get(value)
                if target:
                    self.do_bind(value, target)
        elif name == "unbind":
            self.do_unbind(value, os.path.basename(os.path.dirname(path)))
        elif name == "bind":
            self.do_bind(value, os.path.basename(os.path.dirname(path)))

    def _take_all(self, path):
        self._write(path)
        while self.pending.get(path, b"").strip():
            self._write(path)

    def _events(self):
        try:
            data = os.read(self.ino, 1 << 20)
        except BlockingIOError:
            return
        off = 0
        while off < len(data):
            wd, mask, _cookie, size = EVENT.unpack_from(data, off)
            off += EVENT.size + size
            if mask & IN_Q_OVERFLOW:
                # Not at these rates; if it happens, the order is lost but
                # no write is: take everything there is.
                self.log.append(("overflow", None, None))
                for p in list(self.fifos):
                    self._take_all(p)
                continue
            path = self.wds.get(wd)
            if path is None or mask & IN_IGNORED:
                continue
            if mask & IN_CLOSE_WRITE:
                if path in self.fifos:
                    self._write(path)
                elif os.path.basename(path) == "driver_override":
                    self._override(path)

    def _run(self):
        while not self.stop_flag.is_set():
            r, _, _ = select.select([self.ino], [], [], 0.1)
            if r:
                with self.lock:
                    self._events()

    def slow_unbind(self, drv, delay):
        """The next unbind written to drv blocks its writer for `delay` s:
        nobody reads the FIFO meanwhile, so the writer's open waits."""
        path = os.path.join(self.sys, "bus/pci/drivers", drv, "unbind")
        with self.lock:
            fd = self.fifos.get(path)
            if fd is not None:
                self._take(path)        # what was written before stays taken
                self.fifos[path] = None
                os.close(fd)

        def later():
            if self.stop_flag.wait(delay):
                return
            with self.lock:
                self.fifos[path] = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)

        threading.Thread(target=later, daemon=True).start()

    def stop(self):
        self.stop_flag.set()
        self.thread.join(5)
        with self.lock:
            for path, fd in self.fifos.items():
                if fd is not None:
                    os.close(fd)
                # Plain files again: a writer without a simulation fails
                # to nothing rather than blocking on a FIFO nobody reads.
                try:
                    if stat.S_ISFIFO(os.lstat(path).st_mode):
                        os.unlink(path)
                        open(path, "w").close()
                except OSError:
                    pass
            self.fifos.clear()
            try:
                os.close(self.ino)
            except OSError:
                pass
