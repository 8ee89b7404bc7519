# SPDX-License-Identifier: MIT
"""The worker process's footprint on a large simulated host: it shares no
memory with the daemon (no copy-on-write inventory), neither at start nor
after it was replaced for missing a deadline, and it holds only its socket,
the sysfs root and stdio."""

import os
import signal
import stat
import sys

import hdtest
from hdtest import wait_until
from test_claims import host  # noqa: F401

FUNCTIONS = 4096
VFIO_DEV = "0000:00:00.3"      # simhost's scale host: every 6th function from 3 is on vfio-pci
HIGH_FD = 19000                # an inherited descriptor the worker must not keep


def rollup(pid):
    """/proc/PID/smaps_rollup as {field: kB}."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[-1] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


def children(pid):
    kids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
        except OSError:
            continue
        if int(st.rsplit(")", 1)[1].split()[1]) == pid:
            kids.append(int(p))
    return kids


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def worker_pid(d):
    """The worker's pid, once it runs its loop (it names itself then)."""
    pid = d.call("daemon.status")["worker"]["pid"]
    wait_until(lambda: comm(pid) == "hostdevd-worker", what="the worker to start")
    assert children(d.pid()) == [pid], "the worker is the daemon's only child"
    return pid


def assert_small(d, pid, what):
    """The worker's anonymous memory is its own (none shared with the daemon)
    and a fraction of the daemon's, whose inventory holds 4096 functions."""
    dm, wm = rollup(d.pid()), rollup(pid)
    if "Pss_Anon" in wm:
        assert wm["Pss_Anon"] == wm["Anonymous"], \
            f"{what} shares anonymous pages (copy-on-write from the daemon?): {wm}"
    assert wm["Anonymous"] * 2 < dm["Anonymous"], \
        f"{what}: {wm['Anonymous']} KiB anonymous vs the daemon's {dm['Anonymous']} KiB"
    assert wm["Shared_Dirty"] <= dm["Shared_Dirty"] and wm["Pss"] * 2 < dm["Pss"], (what, wm, dm)


def assert_fds(d, pid):
    fds = {int(f): os.readlink(f"/proc/{pid}/fd/{f}") for f in os.listdir(f"/proc/{pid}/fd")}
    extra = sorted((t, fd) for fd, t in fds.items() if fd > 2)
    assert len(extra) == 2, f"the worker holds {fds}"
    assert os.path.samefile(extra[0][0], d.sysfs), fds
    assert stat.S_ISDIR(os.stat(f"/proc/{pid}/fd/{extra[0][1]}").st_mode), fds
    assert extra[1][0].startswith("socket:"), fds


class WrappedDaemon(hdtest.Daemon):
    """hostdevd started with an extra inherited descriptor (not close-on-exec)
    at HIGH_FD, as a careless parent would leave it."""

    def args(self, ready_fd):
        real = super().args(ready_fd)
        code = ("import os, sys; fd = os.open('/dev/null', os.O_RDONLY); "
                f"os.dup2(fd, {HIGH_FD}, inheritable=True); os.execv(sys.argv[1], sys.argv[1:])")
        return [sys.executable, "-c", code] + real


def test_worker_does_not_carry_the_inventory(tmp_path):
    root = str(tmp_path / "host")
    hdtest.simhost.build("scale", root, FUNCTIONS)
    d = WrappedDaemon(host=None, tree=root, config={"claims": {"release_timeout_s": 1}})
    try:
        assert d.call("daemon.status")["devices"]["pci"] == FUNCTIONS
        assert os.path.exists(f"/proc/{d.pid()}/fd/{HIGH_FD}"), "the wrapper's fd reached the daemon"
        first = worker_pid(d)
        assert_fds(d, first)
        assert_small(d, first, "the first worker")

        # A claim, then a release whose unbind blocks in the kernel past the
        # deadline: the worker is replaced by a new one.
        c = d.client(timeout=60)
        assert c.call("pci.claim", {"address": VFIO_DEV})["state"] == "claimed"
        unbind = os.path.join(d.sysfs, "bus/pci/drivers/vfio-pci/unbind")
        os.unlink(unbind)
        os.mkfifo(unbind)            # the writer's open() blocks: a stuck unbind
        resp = c.request("pci.release", {"address": VFIO_DEV})
        c.close()
        assert "did not finish within 1 s" in resp["error"]["message"], resp
        st = wait_until(lambda: (s := d.call("daemon.status"))["worker"]["restarts"] >= 1 and s,
                        what="the worker to be replaced")
        second = st["worker"]["pid"]
        assert second != first
        wait_until(lambda: not os.path.exists(f"/proc/{first}"), what="the stuck worker to go")
        assert worker_pid(d) == second
        assert_fds(d, second)
        assert_small(d, second, "the replacement worker")
        d.check_clean_exit()
    finally:
        d.cleanup()


def test_worker_killed_while_idle_starts_again_on_demand(host):
    """A worker that dies while idle is replaced by the next operation, not at
    once (a worker that cannot start must not make the daemon spin); the claim
    that needs it then works."""
    d, k = host()
    first = worker_pid(d)
    os.kill(first, signal.SIGKILL)
    st = wait_until(lambda: (s := d.call("daemon.status"))["worker"]["pid"] == -1 and s,
                    what="the daemon to see the worker go")
    assert st["worker"]["restarts"] == 0
    assert "went away; a new one starts with the next operation" in d.log_text()
    assert d.call("pci.claim", {"address": "0000:01:10.2"})["state"] == "claimed"
    assert k.driver_of("0000:01:10.2") == "vfio-pci"
    st = d.call("daemon.status")["worker"]
    assert st["restarts"] == 1 and st["pid"] not in (-1, first)
