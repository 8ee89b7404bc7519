# SPDX-License-Identifier: MIT
"""--proc-root, the way the DaemonSet runs hostdevd: the daemon in its own
mount and PID namespace (unshare), the host's /proc bind-mounted into it.
A filesystem mounted outside the namespace (a loop device behind a simulated
PCI function) still protects that function, and a process outside the
namespace holding a claimed group's /dev/vfio node still blocks the release.
Without --proc-root the namespace sees neither (the control at the start)."""

import os
import shutil
import signal
import subprocess

import pytest

import hdtest
from simkernel import SimKernel
from test_claims import call, claim, claims, hold_open, idle

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("unshare", "losetup", "mkfs.ext4")),
    reason="needs root, unshare, losetup and mkfs.ext4")

# In the new namespaces: keep the host's /proc at $HOSTPROC, mount the
# namespace's own /proc, drop the disk's mount from this mount namespace.
NS_SCRIPT = ('mkdir -p "$HOSTPROC" && mount --bind /proc "$HOSTPROC" && '
             'mount -t proc proc /proc && umount -l "$DISK" && exec "$@"')


def ns_command(hostproc, disk, argv):
    return ["unshare", "--mount", "--pid", "--fork", "--kill-child", "env",
            f"HOSTPROC={hostproc}", f"DISK={disk}", "sh", "-c", NS_SCRIPT, "sh"] + list(argv)


class NsDaemon(hdtest.Daemon):
    """hostdevd as PID 1 of a PID namespace, in its own mount namespace."""

    def __init__(self, disk, *a, **kw):
        self.disk = disk
        self.hostproc = None
        super().__init__(*a, **kw)

    def args(self, ready_fd):
        self.hostproc = os.path.join(self.dir, "host-proc")
        return ns_command(self.hostproc, self.disk,
                          super().args(ready_fd) + ["--proc-root", self.hostproc])

    def stop(self, timeout=20.0):
        # unshare --fork ignores SIGTERM and waits: signal hostdevd itself.
        if self.proc is not None and self.proc.poll() is None:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                for pid in f.read().split():
                    os.kill(int(pid), signal.SIGTERM)
        return super().stop(timeout)


@pytest.fixture
def loop_disk(tmp_path):
    """An ext4 filesystem on a loop device, mounted here (outside any test
    namespace). Yields (device, major, minor, mount point)."""
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(8 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True)
    r = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("no loop device: " + r.stderr.strip())
    dev = r.stdout.strip()
    mnt = tmp_path / "data"
    mnt.mkdir()
    try:
        subprocess.run(["mount", dev, str(mnt)], check=True)
        st = os.stat(dev)
        with open("/proc/1/mountinfo") as f:
            if f" {os.major(st.st_rdev)}:{os.minor(st.st_rdev)} " not in f.read():
                pytest.skip("not in PID 1's mount namespace: --proc-root reads PID 1's mounts")
        yield dev, os.major(st.st_rdev), os.minor(st.st_rdev), str(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)])
        subprocess.run(["losetup", "-d", dev])


def put_disk_behind(d, bdf, name, maj, mnr):
    """The simulated sysfs gets block device maj:mnr under PCI function bdf."""
    fn = os.path.realpath(os.path.join(d.sysfs, "bus/pci/devices", bdf))
    blk = os.path.join(fn, "block", name)
    os.makedirs(blk)
    with open(os.path.join(blk, "dev"), "w") as f:
        f.write(f"{maj}:{mnr}\n")
    os.makedirs(os.path.join(d.sysfs, "dev/block"), exist_ok=True)
    os.symlink(os.path.relpath(blk, os.path.join(d.sysfs, "dev/block")),
               os.path.join(d.sysfs, "dev/block", f"{maj}:{mnr}"))


def test_host_view_through_proc_root(make_daemon, loop_disk, tmp_path):
    dev, maj, mnr, mnt = loop_disk
    disk_bdf, vm_bdf = "0000:01:10.4", "0000:01:10.2"
    node = None

    # The control: inside the namespaces, without --proc-root, neither the
    # mount nor a process outside is visible.
    with hold_open(os.devnull) as outside:
        r = subprocess.run(ns_command(str(tmp_path / "hp"), mnt, [
            "sh", "-c", f'grep -c " {maj}:{mnr} " /proc/self/mountinfo; '
                        f'test -e /proc/{outside.pid} && echo visible || echo hidden']),
            capture_output=True, text=True)
        assert r.stdout.split() == ["0", "hidden"], (r.stdout, r.stderr)

    d = NsDaemon(mnt, start=False)
    k = SimKernel(d.root)
    try:
        put_disk_behind(d, disk_bdf, os.path.basename(dev), maj, mnr)
        d.start()
        resp = d.client(timeout=60).request("pci.claim", {"address": disk_bdf})
        assert resp.get("error", {}).get("code") == -32003, resp
        assert "mounted filesystem" in resp["error"]["message"] and mnt in resp["error"]["message"]

        claim(d, vm_bdf)
        idle(d)
        group = claims(d)[0]["iommu_group"]
        node = os.path.join(d.devroot, "vfio", str(group))
        with hold_open(node) as holder:
            c = d.client(timeout=60)
            resp = c.request("pci.release", {"address": vm_bdf})
            c.close()
            assert "error" in resp and f"PID {holder.pid}" in resp["error"]["message"], resp
        assert call(d, "pci.release", vm_bdf)["state"] == "released"
        d.check_clean_exit()
    finally:
        k.stop()
        d.cleanup()
