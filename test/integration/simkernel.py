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
                # The kernel reads driver_override when it probes: so
                # does this, whether or not its inotify event came first.
                over = os.path.join(self.devpath(value), "driver_override")
                if os.path.isfile(over):
                    self._override(over, log=False)
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

    def rescan(self):
        """Meets what appeared since the start: driver directories (their
        bind and unbind become FIFOs), devices, and devices re-created at an
        address seen before (VFs after a count change): their new
        driver_override is watched and their driver is their original one.
        Call it with the lock held around the change (self.lock) so that no
        write to the new devices is taken before."""
        with self.lock:
            for drvdir in glob.glob(os.path.join(self.sys, "bus/pci/drivers/*")):
                self._driver_dir(os.path.basename(drvdir))
            for link in glob.glob(os.path.join(self.sys, "bus/pci/devices/*")):
                addr = os.path.basename(link)
                over = os.path.join(link, "driver_override")
                if addr in self.known and os.path.isfile(over):
                    real = os.path.realpath(over)
                    wd = _libc.inotify_add_watch(self.ino, os.fsencode(real), IN_CLOSE_WRITE)
                    if wd < 0 or wd in self.wds:
                        continue        # the same file: watched already
                    # A new file (inotify never reuses a wd): a new device.
                    self.wds[wd] = real
                    self.known.discard(addr)
                    self.original.pop(addr, None)
                    self.overrides.pop(addr, None)
                self._device(addr)

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


UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
PROFILE_SIZE = re.compile(r"-(\d+)[A-Z]$")


class SimVgpuKernel:
    """The kernel's part for vGPUs on a simulated host: writes of a UUID to
    class/mdev_bus/*/mdev_supported_types/*/create create the mdev (its
    directory, mdev_type and iommu_group links, bus/mdev/devices link,
    /dev/vfio/<group>), "1" to an mdev's remove takes it away, and writes to
    an NVIDIA VF's nvidia/current_vgpu_type give it the type (a /dev/vfio node
    and a vfio-dev cdev, the VF's catalogue empties and its siblings' shrink
    to the same profile size) or take it back ("0"). A parent whose types all
    offer one instance (NVIDIA's VFs) offers none once it has an mdev.

    The files stay regular files (read too); each writer's close is taken
    from inotify in order and the file read then, so writes are applied a
    little after they return. hold_vf() makes current_vgpu_type refuse writes
    with EPERM (chattr +i), as the driver does while a VM holds the VF.
    With make_vfs, a write to an NVIDIA PF's sriov_numvfs calls it to lay out
    (or take away) the VFs, as the kernel does.
    self.log: [(action, id, value)]."""

    def __init__(self, root, on_event=None, make_vfs=None):
        self.root = root
        self.make_vfs = make_vfs    # (pf, n): lays out n VFs of NVIDIA PF pf (0: none)
        self.sys = os.path.join(root, "sys")
        self.dev = os.path.join(root, "dev")
        self.on_event = on_event
        self.lock = threading.RLock()
        self.stop_flag = threading.Event()
        self.log = []
        self.ino = _inotify_init()
        self.wds = {}
        self.watched = set()
        self.own = {}           # path -> closes of the simulation's own writes
        self.vf_types = {}      # VF address -> full catalogue [(id, name)]
        self.avail = {}         # type dir -> available_instances at the start
        self.held = set()
        self.fail_create = set()   # parents whose create writes are taken but do nothing
        self.types_now = {}     # VF address -> the type the simulation applied
        # MIG-backed vGPU (test_mig.py): refuse_type(addr, type) -> True makes
        # the driver refuse a type (its EIO: no GPU instance for it), and
        # gpu_instance_of(addr, type) -> the GPU instance id the driver
        # reports in the VF's nvidia/gpu_instance_id once it has the type.
        self.refuse_type = None
        self.gpu_instance_of = None
        with self.lock:
            self.rescan()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _watch(self, path):
        real = os.path.realpath(path)
        if real in self.watched or not os.path.exists(real):
            return
        wd = _libc.inotify_add_watch(self.ino, os.fsencode(real), IN_CLOSE_WRITE)
        if wd < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), real)
        self.wds[wd] = real
        self.watched.add(real)

    def rescan(self):
        """Watches the files of parents, mdevs and VFs that came since."""
        with self.lock:
            for create in glob.glob(os.path.join(self.sys, "class/mdev_bus/*/mdev_supported_types/*/create")):
                tdir = os.path.realpath(os.path.dirname(create))
                if tdir not in self.avail:
                    self.avail[tdir] = self._baseline(tdir)
                self._watch(create)
            for remove in glob.glob(os.path.join(self.sys, "bus/mdev/devices/*/remove")):
                self._watch(remove)
            if self.make_vfs:
                for num in glob.glob(os.path.join(self.sys, "bus/pci/devices/*/sriov_numvfs")):
                    if self._read(os.path.join(os.path.dirname(num), "vendor")) == "0x10de":
                        self._watch(num)
            for cur in glob.glob(os.path.join(self.sys, "bus/pci/devices/*/nvidia/current_vgpu_type")):
                addr = os.path.basename(os.path.dirname(os.path.dirname(cur)))
                if addr not in self.vf_types:
                    self.vf_types[addr] = self._catalogue(addr)
                    self.types_now[addr] = self.current(addr)
                self._watch(cur)

    # -- helpers -------------------------------------------------------------
    def _baseline(self, tdir):
        """available_instances with none of the parent's mdevs: what is left
        plus the type's own mdevs; a type left at 0 by another type's mdev
        offers one (NVIDIA's one vGPU per VF)."""
        left = int(self._read(os.path.join(tdir, "available_instances")) or 0)
        devs = os.path.join(tdir, "devices")
        mine = len(os.listdir(devs)) if os.path.isdir(devs) else 0
        parent_dir = os.path.dirname(os.path.dirname(tdir))
        others = any(UUID_RE.match(e) for e in os.listdir(parent_dir))
        if left == 0 and mine == 0 and others:
            return "1"
        return str(left + mine)

    def _read(self, path):
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            return None

    def _write_own(self, path, text):
        real = os.path.realpath(path)
        if real in self.watched:
            self.own[real] = self.own.get(real, 0) + 1
            with open(path, "w") as f:
                f.write(text)
            return
        # Whole or not at all, as a sysfs read sees it (no watch to keep).
        tmp = real + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, real)

    def _catalogue(self, addr):
        text = self._read(os.path.join(self.sys, "bus/pci/devices", addr,
                                       "nvidia/creatable_vgpu_types")) or ""
        out = []
        for line in text.splitlines()[1:]:
            tid, _, name = line.partition(":")
            if tid.strip().isdigit():
                out.append((int(tid), name.strip()))
        return out

    def _set_catalogue(self, addr, types):
        lines = ["ID    : vGPU Name"] + [f"{tid:<5} : {name}" for tid, name in types]
        self._write_own(os.path.join(self.sys, "bus/pci/devices", addr, "nvidia/creatable_vgpu_types"),
                        "\n".join(lines) + "\n")

    def _uevent(self, action, path):
        if self.on_event:
            self.on_event(action, "/sys/" + os.path.relpath(path, self.sys))

    def _new_group(self):
        groups = [int(g) for g in os.listdir(os.path.join(self.sys, "kernel/iommu_groups")) if g.isdigit()]
        return max(groups + [999]) + 1

    def _link(self, at, target):
        os.makedirs(os.path.dirname(at), exist_ok=True)
        if os.path.lexists(at):
            os.unlink(at)
        os.symlink(os.path.relpath(target, os.path.dirname(at)), at)

    # -- mdevs ----------------------------------------------------------------
    def mdev_path(self, uuid):
        return os.path.realpath(os.path.join(self.sys, "bus/mdev/devices", uuid))

    def _types_of(self, parent_dir):
        return [os.path.join(parent_dir, "mdev_supported_types", t)
                for t in sorted(os.listdir(os.path.join(parent_dir, "mdev_supported_types")))]

    def _single(self, parent_dir):
        return all(self.avail.get(os.path.realpath(t)) in ("1", "0") for t in self._types_of(parent_dir))

    def _recount(self, parent_dir, gone=None):
        """available_instances of every type of a parent, from its mdevs
        (less `gone`, on its way out)."""
        mdevs = [e for e in os.listdir(parent_dir) if UUID_RE.match(e) and e != gone]
        for t in self._types_of(parent_dir):
            real = os.path.realpath(t)
            start = int(self.avail.get(real) or 0)
            if self._single(parent_dir):
                left = 0 if mdevs else start
            else:
                mine = len(os.listdir(os.path.join(real, "devices"))) if os.path.isdir(os.path.join(real, "devices")) else 0
                left = max(start - mine, 0)
            self._write_own(os.path.join(real, "available_instances"), f"{left}\n")

    def create(self, tdir, uuid):
        parent_dir = os.path.dirname(os.path.dirname(tdir))
        if not UUID_RE.match(uuid) or os.path.lexists(os.path.join(self.sys, "bus/mdev/devices", uuid)):
            self.log.append(("create-refused", uuid, tdir))
            return
        if os.path.basename(parent_dir) in self.fail_create or self._read(os.path.join(tdir, "available_instances")) == "0":
            self.log.append(("create-refused", uuid, tdir))
            return
        rel = os.path.join(parent_dir, uuid)
        os.makedirs(rel)
        with open(os.path.join(rel, "uevent"), "w") as f:
            f.write(f"MDEV_TYPE={os.path.basename(tdir)}\n")
        open(os.path.join(rel, "remove"), "w").close()
        self._link(os.path.join(rel, "subsystem"), os.path.join(self.sys, "bus/mdev"))
        self._link(os.path.join(rel, "mdev_type"), tdir)
        self._link(os.path.join(tdir, "devices", uuid), rel)
        group = self._new_group()
        gdir = os.path.join(self.sys, "kernel/iommu_groups", str(group))
        os.makedirs(os.path.join(gdir, "devices"))
        self._link(os.path.join(rel, "iommu_group"), gdir)
        self._link(os.path.join(gdir, "devices", uuid), rel)
        os.makedirs(os.path.join(self.dev, "vfio"), exist_ok=True)
        open(os.path.join(self.dev, "vfio", "vfio"), "a").close()
        open(os.path.join(self.dev, "vfio", str(group)), "a").close()
        self._recount(parent_dir)
        self._watch(os.path.join(rel, "remove"))
        # Logged before it shows on the bus: whoever sees it sees the log.
        self.log.append(("create", uuid, os.path.basename(tdir)))
        self._link(os.path.join(self.sys, "bus/mdev/devices", uuid), rel)
        self._uevent("add", rel)

    def remove(self, uuid):
        """Takes the mdev away (the kernel's remove, or a person's by hand)."""
        with self.lock:
            link = os.path.join(self.sys, "bus/mdev/devices", uuid)
            if not os.path.lexists(link):
                return False
            rel = os.path.realpath(link)
            parent_dir = os.path.dirname(rel)
            tdir = os.path.realpath(os.path.join(rel, "mdev_type"))
            gdir = os.path.realpath(os.path.join(rel, "iommu_group"))
            self.log.append(("remove", uuid, None))
            # The count first, as the kernel's remove returns with it done.
            if os.path.lexists(os.path.join(tdir, "devices", uuid)):
                os.unlink(os.path.join(tdir, "devices", uuid))
            self._recount(parent_dir, gone=uuid)
            os.unlink(link)
            node = os.path.join(self.dev, "vfio", os.path.basename(gdir))
            if os.path.exists(node):
                os.unlink(node)
            shutil.rmtree(gdir, ignore_errors=True)
            self.watched.discard(os.path.join(rel, "remove"))
            # The kernel sends "remove" while the directory still resolves.
            self._uevent("remove", rel)
            shutil.rmtree(rel)
            return True

    # -- NVIDIA VFs --------------------------------------------------------------
    def vf_dir(self, addr):
        return os.path.realpath(os.path.join(self.sys, "bus/pci/devices", addr))

    def current(self, addr):
        return int(self._read(os.path.join(self.vf_dir(addr), "nvidia/current_vgpu_type")) or 0)

    def _siblings(self, addr):
        pf = os.path.join(self.vf_dir(addr), "physfn")
        if not os.path.islink(pf):
            return [addr]
        pf = os.path.realpath(pf)
        return sorted(os.path.basename(os.path.realpath(v)) for v in glob.glob(os.path.join(pf, "virtfn*")))

    def _catalogues(self, addr):
        """Each VF of the GPU lists what it could take now: nothing when it
        has a type, else the profiles of the size the GPU's VFs use."""
        sibs = [a for a in self._siblings(addr) if a in self.vf_types]
        sizes = set()
        for a in sibs:
            cur = self.types_now.get(a, 0)
            if cur:
                name = dict(self.vf_types[a]).get(cur, "")
                m = PROFILE_SIZE.search(name)
                sizes.add(m.group(1) if m else name)
        for a in sibs:
            if self.types_now.get(a, 0):
                self._set_catalogue(a, [])
            elif sizes:
                self._set_catalogue(a, [(t, n) for t, n in self.vf_types[a]
                                        if (PROFILE_SIZE.search(n).group(1) if PROFILE_SIZE.search(n) else n) in sizes])
            else:
                self._set_catalogue(a, self.vf_types[a])

    def _vf_nodes(self, addr, on):
        d = self.vf_dir(addr)
        glink = os.path.join(d, "iommu_group")
        group = os.path.basename(os.readlink(glink)) if os.path.islink(glink) else None
        cdev = os.path.join(d, "vfio-dev")
        if on:
            os.makedirs(os.path.join(cdev, f"vfio{group}"), exist_ok=True)
            os.makedirs(os.path.join(self.dev, "vfio/devices"), exist_ok=True)
            open(os.path.join(self.dev, "vfio", "vfio"), "a").close()
            if group:
                open(os.path.join(self.dev, "vfio", group), "a").close()
                open(os.path.join(self.dev, "vfio/devices", f"vfio{group}"), "a").close()
        else:
            shutil.rmtree(cdev, ignore_errors=True)
            for p in (os.path.join(self.dev, "vfio", group or "-"),
                      os.path.join(self.dev, "vfio/devices", f"vfio{group}")):
                if os.path.exists(p):
                    os.unlink(p)

    def _vgpu_type(self, path, value, before):
        addr = os.path.basename(os.path.dirname(os.path.dirname(path)))
        try:
            want = int(value)
        except ValueError:
            want = -1
        prev = before.get(addr, 0)
        if want == 0:
            if prev:
                self._vf_nodes(addr, False)
            before[addr] = 0
            entry = ("clear", addr, prev)
        elif prev and want != prev:
            self._write_own(path, f"{prev}\n")          # the driver refuses: keeps the old
            self.log.append(("set-refused", addr, want))
            return
        elif want not in dict(self._catalogue(addr)) and want != prev:
            self._write_own(path, "0\n")               # an invalid id resets to 0
            before[addr] = 0
            entry = ("set-refused", addr, want)
        elif want != prev and self.refuse_type and self.refuse_type(addr, want):
            self._write_own(path, "0\n")
            before[addr] = 0
            entry = ("set-refused", addr, want)
        else:
            before[addr] = want
            self._vf_nodes(addr, True)
            gi = self.gpu_instance_of(addr, want) if self.gpu_instance_of else None
            if gi is not None:
                self._write_own(os.path.join(self.vf_dir(addr), "nvidia/gpu_instance_id"), f"{gi}\n")
            entry = ("set", addr, want)
        self._catalogues(addr)
        # Logged once all is done: whoever sees the log sees the catalogues.
        self.log.append(entry)
        self._uevent("change", self.vf_dir(addr))

    def set_type_by_hand(self, addr, value):
        """What a person's echo to current_vgpu_type does."""
        with open(os.path.join(self.vf_dir(addr), "nvidia/current_vgpu_type"), "w") as f:
            f.write(f"{value}\n")

    def hold_vf(self, addr, held=True):
        """current_vgpu_type refuses writes with EPERM while held (a VM holds
        the VF). Returns False where chattr cannot do it (not ext4/tmpfs)."""
        path = os.path.join(self.vf_dir(addr), "nvidia/current_vgpu_type")
        import subprocess
        r = subprocess.run(["chattr", "+i" if held else "-i", path], capture_output=True)
        if r.returncode == 0:
            (self.held.add if held else self.held.discard)(addr)
        return r.returncode == 0

    # -- the loop ---------------------------------------------------------------
    def _events(self):
        try:
            data = os.read(self.ino, 1 << 20)
        except BlockingIOError:
            return
        off = 0
        while off < len(data):
            wd, mask, _cookie, size = EVENT.unpack_from(data, off)
            off += EVENT.size + size
            path = self.wds.get(wd)
            if path is None or not mask & IN_CLOSE_WRITE:
                continue
            if self.own.get(path):
                self.own[path] -= 1
                continue
            value = self._read(path)
            if value is None:
                continue
            name = os.path.basename(path)
            if name == "create":
                self.create(os.path.dirname(path), value)
            elif name == "remove" and value == "1":
                self.remove(os.path.basename(os.path.dirname(path)))
            elif name == "current_vgpu_type":
                self._vgpu_type(path, value, self.types_now)
            elif name == "sriov_numvfs" and value.isdigit():
                pf = os.path.basename(os.path.dirname(path))
                self.log.append(("numvfs", pf, int(value)))
                self.make_vfs(pf, int(value))
                # VFs taken away: their files go, and a VF made again at the
                # same address is a new file to watch, with no type.
                self.watched = {p for p in self.watched if os.path.exists(p)}
                for addr in [a for a in self.types_now
                             if not os.path.lexists(os.path.join(self.sys, "bus/pci/devices", a))]:
                    del self.types_now[addr]
                self.rescan()

    def _run(self):
        while not self.stop_flag.is_set():
            r, _, _ = select.select([self.ino], [], [], 0.1)
            if r:
                with self.lock:
                    self._events()

    def stop(self):
        self.stop_flag.set()
        self.thread.join(5)
        for addr in list(self.held):
            self.hold_vf(addr, False)
        try:
            os.close(self.ino)
        except OSError:
            pass
