# SPDX-License-Identifier: MIT
"""The kubelet side: a grpcio kubelet stand-in registers hostdevd's resources,
follows ListAndWatch, and calls Allocate and GetPreferredAllocation."""

import os
import re
import shutil
import socket
import stat
import time

import grpc
import pytest

import hdtest
from kubelet import Kubelet, method, pb

X540VF = "intel.com/X540_ETHERNET_CONTROLLER_VIRTUAL_FUNCTION"
X540VF_SOCK = "hostdevd-intel.com-X540_ETHERNET_CONTROLLER_VIRTUAL_FUNCTION.sock"


@pytest.fixture
def kubelet_daemon(make_daemon):
    """hostdevd on dell-190 with a kubelet already running."""
    d = make_daemon(start=False)
    k = Kubelet(d.kubelet)
    d.start()
    yield k, d
    k.stop()


def bind_vfio(d, bdf):
    """Rebinds a function of the simulated host to vfio-pci."""
    t = hdtest.simhost.Tree(d.root)
    rel = os.path.relpath(os.path.realpath(os.path.join(d.sysfs, "bus/pci/devices", bdf)), d.sysfs)
    t.devices[bdf] = rel
    link = os.path.join(d.sysfs, rel, "driver")
    if os.path.lexists(link):
        os.unlink(link)
    t.bind(bdf, "vfio-pci")
    group = os.path.basename(os.readlink(os.path.join(d.sysfs, rel, "iommu_group")))
    open(os.path.join(d.devroot, "vfio", group), "w").close()


def test_register_and_list(kubelet_daemon):
    k, d = kubelet_daemon
    plugin = k.wait_registered(X540VF)
    req = plugin.req
    assert req.version == "v1beta1"
    assert req.endpoint == X540VF_SOCK
    assert req.options.get_preferred_allocation_available is True
    assert plugin.options.get_preferred_allocation_available is True
    assert plugin.options.pre_start_required is False
    devs = plugin.wait_devices(lambda x: len(x) == 1)
    assert devs == [("0000:01:10.0", "Healthy", [0])]
    st = os.stat(os.path.join(d.kubelet, X540VF_SOCK))
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    # The stand-in records the registration before its answer reaches hostdevd.
    r = hdtest.wait_until(lambda: next((r for r in d.call("resources.list")
                                        if r["name"] == X540VF and r["state"] == "registered"), None),
                          what="hostdevd to see the Register answer")
    assert r["registrations"] == 1
    assert r["socket"] == os.path.join(d.kubelet, X540VF_SOCK)
    assert r["devices"] == [{"id": "0000:01:10.0", "health": "Healthy", "numa_node": 0}]
    assert r["watchers"] == 1 and r["module"] == "pci"


def test_hotplug_updates_list_and_watch(kubelet_daemon):
    k, d = kubelet_daemon
    plugin = k.wait_registered(X540VF)
    plugin.wait_devices(lambda x: len(x) == 1)
    bind_vfio(d, "0000:01:10.2")
    d.call("daemon.rescan")
    devs = plugin.wait_devices(lambda x: len(x) == 2)
    assert [x[0] for x in devs] == ["0000:01:10.0", "0000:01:10.2"]
    # The A100 PF goes to vfio-pci: a new resource named from pci.ids.
    bind_vfio(d, "0000:04:00.0")
    d.call("daemon.rescan")
    gpu = k.wait_registered("nvidia.com/GA100_A100_PCIE_40GB")
    assert gpu.wait_devices(lambda x: len(x) == 1) == [("0000:04:00.0", "Healthy", [1])]
    # The group's node disappears: Unhealthy, and Allocate refuses it.
    os.unlink(os.path.join(d.devroot, "vfio", "116"))
    d.call("daemon.rescan")
    gpu.wait_devices(lambda x: x == [("0000:04:00.0", "Unhealthy", [1])])
    with pytest.raises(grpc.RpcError) as e:
        gpu.allocate(["0000:04:00.0"])
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "unhealthy" in e.value.details()


def test_allocate(kubelet_daemon):
    k, d = kubelet_daemon
    os.makedirs(os.path.join(d.sysfs, "devices/pci0000:00/0000:00:01.0/0000:01:10.0/vfio-dev/vfio3"))
    bind_vfio(d, "0000:01:10.2")
    d.call("daemon.rescan")
    plugin = k.wait_registered(X540VF)
    plugin.wait_devices(lambda x: len(x) == 2)
    resp = plugin.allocate(["0000:01:10.0", "0000:01:10.2"], ["0000:01:10.2"])
    assert len(resp.container_responses) == 2
    c0 = resp.container_responses[0]
    assert dict(c0.envs) == {
        "PCI_RESOURCE_INTEL_COM_X540_ETHERNET_CONTROLLER_VIRTUAL_FUNCTION": "0000:01:10.0,0000:01:10.2"}
    specs = [(s.host_path, s.container_path, s.permissions) for s in c0.devices]
    assert specs == [("/dev/vfio/vfio", "/dev/vfio/vfio", "mrw"),
                     ("/dev/vfio/111", "/dev/vfio/111", "mrw"),
                     ("/dev/vfio/devices/vfio3", "/dev/vfio/devices/vfio3", "mrw"),
                     ("/dev/vfio/112", "/dev/vfio/112", "mrw")]
    c1 = resp.container_responses[1]
    assert [s.host_path for s in c1.devices] == ["/dev/vfio/vfio", "/dev/vfio/112"]
    for bad, code, text in ((["0000:99:00.0"], grpc.StatusCode.INVALID_ARGUMENT, "unknown device"),
                            (["0000:01:10.0", "0000:01:10.0"], grpc.StatusCode.INVALID_ARGUMENT,
                             "twice"),
                            ([], grpc.StatusCode.INVALID_ARGUMENT, "asks for 0 devices")):
        with pytest.raises(grpc.RpcError) as e:
            plugin.allocate(["0000:01:10.0"], bad)
        assert e.value.code() == code and text in e.value.details()
    assert plugin.prestart(["0000:01:10.0"]) == pb().PreStartContainerResponse()
    r = next(r for r in d.call("resources.list") if r["name"] == X540VF)
    assert r["allocate_calls"] == 4


def test_preferred_allocation(make_daemon):
    """must_include first, then the same IOMMU group, the same NUMA node, the
    same switch; always exactly allocation_size ids."""
    d = make_daemon(host=None, start=False)
    t = hdtest.simhost.Tree(d.root)
    t.pci("0000:00:01.0", 0x8086, 0x2030, 0x060400, driver="pcieport", group=1, numa=0)
    t.pci("0000:00:02.0", 0x8086, 0x2030, 0x060400, driver="pcieport", group=2, numa=1)
    # Switch A (NUMA 0): a two-function group and a single.
    t.pci("0000:10:00.0", 0x10de, 0x20f1, 0x030200, parent="0000:00:01.0", driver="vfio-pci", group=10, numa=0)
    t.pci("0000:10:00.1", 0x10de, 0x20f1, 0x030200, parent="0000:00:01.0", driver="vfio-pci", group=10, numa=0)
    t.pci("0000:11:00.0", 0x10de, 0x20f1, 0x030200, parent="0000:00:01.0", driver="vfio-pci", group=11, numa=0)
    # Switch B (NUMA 1).
    t.pci("0000:20:00.0", 0x10de, 0x20f1, 0x030200, parent="0000:00:02.0", driver="vfio-pci", group=20, numa=1)
    t.pci("0000:21:00.0", 0x10de, 0x20f1, 0x030200, parent="0000:00:02.0", driver="vfio-pci", group=21, numa=1)
    # No NUMA, behind switch B.
    t.pci("0000:22:00.0", 0x10de, 0x20f1, 0x030200, parent="0000:00:02.0", driver="vfio-pci", group=22)
    k = Kubelet(d.kubelet)
    try:
        d.start()
        p = k.wait_registered("nvidia.com/GA100_A100_PCIE_40GB")
        p.wait_devices(lambda x: len(x) == 6)
        allids = ["0000:20:00.0", "0000:11:00.0", "0000:10:00.1", "0000:21:00.0", "0000:10:00.0",
                  "0000:22:00.0"]
        # Must-include pulls its group peer, then its NUMA node.
        assert p.preferred(allids, ["0000:10:00.1"], 3) == ["0000:10:00.1", "0000:10:00.0", "0000:11:00.0"]
        # Same NUMA node before anything else.
        assert p.preferred(allids, ["0000:21:00.0"], 2) == ["0000:21:00.0", "0000:20:00.0"]
        # Same switch when NUMA says nothing.
        assert p.preferred(allids, ["0000:22:00.0"], 2) == ["0000:22:00.0", "0000:20:00.0"]
        # Nothing required: starts from the kubelet's first and packs around it.
        assert p.preferred(allids, [], 2) == ["0000:20:00.0", "0000:21:00.0"]
        assert len(p.preferred(allids, [], 6)) == 6
        for avail, must, size, text in ((allids, [], 7, "available"),
                                        (allids, ["0000:99:00.0"], 1, "not available"),
                                        (["0000:99:00.0"], [], 1, "unknown device"),
                                        (allids, allids[:3], 2, "must be included")):
            with pytest.raises(grpc.RpcError) as e:
                p.preferred(avail, must, size)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and text in e.value.details()
    finally:
        k.stop()


def test_kubelet_restart_reregisters(kubelet_daemon):
    k, d = kubelet_daemon
    k.wait_registered(X540VF)
    # The stand-in records a Register when it arrives, before it answers: a
    # restart in between cancels the answer and the daemon rightly counts a
    # failed attempt (this test's old flakiness). Restart once it is answered.
    hdtest.wait_until(lambda: next((r for r in d.call("resources.list")
                                    if r["name"] == X540VF and r["state"] == "registered"), None),
                      what="the first registration to be answered")
    k.restart()
    plugin = k.wait_registered(X540VF, count=2, timeout=5)
    # Because the kubelet's socket came back (inotify), not a periodic check.
    assert "kubelet.sock appeared: registering every resource again" in d.log_text()
    assert plugin.wait_devices(lambda x: len(x) == 1)
    assert os.path.exists(os.path.join(d.kubelet, X540VF_SOCK))
    r = hdtest.wait_until(lambda: next((r for r in d.call("resources.list")
                                        if r["name"] == X540VF and r["registrations"] == 2
                                        and r["state"] == "registered"), None),
                          what="the second registration to be answered")
    assert r["devices"][0]["id"] == "0000:01:10.0"


def test_no_kubelet_at_start(make_daemon):
    d = make_daemon()
    r = d.call("resources.list")[0]
    assert r["name"] == X540VF and r["state"] == "waiting-for-kubelet"
    assert os.path.exists(os.path.join(d.kubelet, X540VF_SOCK)), "served before registering"
    k = Kubelet(d.kubelet)
    try:
        plugin = k.wait_registered(X540VF, timeout=5)
        assert plugin.wait_devices(lambda x: len(x) == 1)
    finally:
        k.stop()


def test_stream_end_reregisters(kubelet_daemon):
    k, d = kubelet_daemon
    plugin = k.wait_registered(X540VF)
    plugin.wait_devices(lambda x: len(x) == 1)
    plugin.cancel_watch()
    again = k.wait_registered(X540VF, count=2, timeout=5)
    assert again.wait_devices(lambda x: len(x) == 1)


def test_register_refused_then_backoff(make_daemon):
    """A kubelet that has just started may refuse the first Register: the
    retries come quickly at first (50, 100, 200 ms), then back off."""
    d = make_daemon(start=False)
    k = Kubelet(d.kubelet, refuse=3)
    try:
        d.start()
        k.wait_registered(X540VF, timeout=10)
        times = [t for t, name in k.attempts if name == X540VF]
        assert len(times) == 4, times
        hdtest.wait_until(lambda: d.call("resources.list")[0]["last_error"] is None,
                          what="the error to clear once Register is answered")
        log = d.log_text()
        # The daemon's schedule, as it decided it (not the wall clock, which
        # a loaded machine stretches): well before the old fixed 1 s, growing.
        waits = [int(m) for m in re.findall(r"Register refused: .*; retrying in (\d+) ms", log)]
        assert waits == [50, 100, 200], waits
        warned = [l for l in log.splitlines() if " warn " in l and "Register refused" in l]
        assert len(warned) == 1, "the same refusal again is not logged at warn"
        assert "registered with the kubelet after 3 failed attempts" in log
        r = d.call("resources.list")[0]
        assert r["register_attempts"] == 4 and r["registrations"] == 1
    finally:
        k.stop()


def test_resource_withdrawn_with_empty_list(kubelet_daemon):
    k, d = kubelet_daemon
    plugin = k.wait_registered(X540VF)
    plugin.wait_devices(lambda x: len(x) == 1)
    os.unlink(os.path.join(d.sysfs, "devices/pci0000:00/0000:00:01.0/0000:01:10.0/driver"))
    d.call("daemon.rescan")
    assert plugin.wait_devices(lambda x: x == []) == []
    assert plugin.ended.wait(5) and plugin.end_status == grpc.StatusCode.OK
    assert not os.path.exists(os.path.join(d.kubelet, X540VF_SOCK))
    assert d.call("resources.list") == []
    assert len(k.registrations) == 1, "a withdrawn resource does not register again"


def test_config_renames_and_restricts(make_daemon):
    d = make_daemon(start=False, config={"resources": {"rules": [
        {"vendor": "8086", "device": "1515", "name": "example.com/sriov-nic"},
        {"class": "03", "advertise": False}]}})
    bind_vfio(d, "0000:04:00.0")
    k = Kubelet(d.kubelet)
    try:
        d.start()
        p = k.wait_registered("example.com/sriov-nic")
        assert p.req.endpoint == "hostdevd-example.com-sriov-nic.sock"
        assert [r["name"] for r in d.call("resources.list")] == ["example.com/sriov-nic"]
        resp = p.allocate(["0000:01:10.0"])
        assert dict(resp.container_responses[0].envs) == {
            "PCI_RESOURCE_EXAMPLE_COM_SRIOV-NIC": "0000:01:10.0"}
        # Only listed devices, after a reload.
        d.write_config({"resources": {"unlisted": "ignore", "rules": [
            {"address": "0000:04:*", "name": "example.com/gpu"}]}})
        import signal
        d.signal(signal.SIGHUP)
        g = k.wait_registered("example.com/gpu")
        assert g.wait_devices(lambda x: len(x) == 1)[0][0] == "0000:04:00.0"
        p.wait_devices(lambda x: x == [])
    finally:
        k.stop()


def test_kubelet_dir_is_shared_safely(make_daemon):
    d = make_daemon(start=False)
    os.makedirs(d.kubelet, exist_ok=True)
    # Someone else's plugin socket and files in the directory stay untouched.
    other = socket.socket(socket.AF_UNIX)
    other.bind(os.path.join(d.kubelet, "other-plugin.sock"))
    with open(os.path.join(d.kubelet, "kubelet_internal_checkpoint"), "w") as f:
        f.write("{}")
    # A symlink planted at our socket's name is not followed or removed.
    target = os.path.join(d.dir, "precious")
    with open(target, "w") as f:
        f.write("keep")
    os.symlink(target, os.path.join(d.kubelet, X540VF_SOCK))
    d.start()
    r = d.call("resources.list")[0]
    assert r["state"] in ("backoff", "failed") and "not a socket" in r["last_error"]
    assert os.path.islink(os.path.join(d.kubelet, X540VF_SOCK))
    with open(target) as f:
        assert f.read() == "keep"
    # Once it is gone, hostdevd serves there (the backoff retries).
    os.unlink(os.path.join(d.kubelet, X540VF_SOCK))
    k = Kubelet(d.kubelet)
    try:
        k.wait_registered(X540VF, timeout=15)
        # Someone deletes our socket: it comes back.
        os.unlink(os.path.join(d.kubelet, X540VF_SOCK))
        hdtest.wait_until(lambda: os.path.exists(os.path.join(d.kubelet, X540VF_SOCK)),
                          what="the socket to be re-created")
        k.wait_registered(X540VF, count=2)
        # Someone puts their own live socket in its place: left alone.
        theirs = socket.socket(socket.AF_UNIX)
        tmp = os.path.join(d.kubelet, "theirs.tmp")
        theirs.bind(tmp)
        theirs.listen(1)
        their_inode = os.stat(tmp).st_ino
        os.rename(tmp, os.path.join(d.kubelet, X540VF_SOCK))
        hdtest.wait_until(lambda: "in use by another process" in
                          (d.call("resources.list")[0]["last_error"] or ""),
                          what="the replacement to be noticed")
        assert os.stat(os.path.join(d.kubelet, X540VF_SOCK)).st_ino == their_inode, \
            "their socket is not removed"
        theirs.close()
        os.unlink(os.path.join(d.kubelet, X540VF_SOCK))
        k.wait_registered(X540VF, count=3, timeout=15)
        d.check_clean_exit()
        assert not os.path.exists(os.path.join(d.kubelet, X540VF_SOCK)), "ours removed at exit"
        assert os.path.exists(os.path.join(d.kubelet, "other-plugin.sock"))
        assert os.path.exists(os.path.join(d.kubelet, "kubelet_internal_checkpoint"))
    finally:
        k.stop()
        other.close()


def test_hostdevctl_resources(kubelet_daemon):
    k, d = kubelet_daemon
    k.wait_registered(X540VF)
    hdtest.wait_until(lambda: d.call("resources.list")[0]["state"] == "registered",
                      what="the Register answer")
    import subprocess
    r = subprocess.run([hdtest.HOSTDEVCTL, "--socket", d.sock, "resources"], capture_output=True,
                       text=True, timeout=30, env=hdtest.sanitizer_env())
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["RESOURCE", "STATE", "DEVICES", "HEALTHY", "ALLOCATES", "SOCKET", "LAST", "ERROR"]
    assert lines[1].split()[:5] == [X540VF, "registered", "1", "1", "0"]


def x540(d):
    return next(r for r in d.call("resources.list") if r["name"] == X540VF)


def test_extra_stream_end_does_not_register_again(kubelet_daemon):
    """Only the end of the kubelet's own stream means it lost us. Another
    watcher that comes and goes changes nothing (it used to register again,
    and a kubelet that replaces its connection on each Register then closed
    the stream that made the next Register: a storm)."""
    k, d = kubelet_daemon
    plugin = k.wait_registered(X540VF)
    plugin.wait_devices(lambda x: len(x) == 1)
    hdtest.wait_until(lambda: x540(d)["state"] == "registered", what="the Register answer")
    ch = grpc.insecure_channel("unix:" + os.path.join(d.kubelet, X540VF_SOCK))
    law = method(ch, "ListAndWatch", pb().Empty, pb().ListAndWatchResponse, True)
    for _ in range(3):
        stream = law(pb().Empty())
        assert len(next(stream).devices) == 1
        hdtest.wait_until(lambda: x540(d)["watchers"] == 2, what="the extra stream")
        stream.cancel()
        hdtest.wait_until(lambda: x540(d)["watchers"] == 1, what="the extra stream's end")
    ch.close()
    assert len(k.attempts) == 1, "no Register after an extra stream's end"
    assert not plugin.ended.is_set()
    r = x540(d)
    assert (r["register_attempts"], r["registrations"], r["state"]) == (1, 1, "registered")


def test_replaced_registration_stream_end_does_not_register_again(kubelet_daemon):
    """A kubelet replaces its connection when a plugin registers again: the
    old registration's stream ending is expected, not a reason to register
    once more. The current one's end is, once."""
    k, d = kubelet_daemon
    first = k.wait_registered(X540VF)
    first.wait_devices(lambda x: len(x) == 1)
    hdtest.wait_until(lambda: x540(d)["state"] == "registered", what="the Register answer")
    os.unlink(os.path.join(d.kubelet, X540VF_SOCK))     # served again, registered again
    second = k.wait_registered(X540VF, count=2)
    second.wait_devices(lambda x: len(x) == 1)
    assert first.ended.wait(10), "the stand-in closes the replaced registration's channel"
    hdtest.wait_until(lambda: x540(d)["watchers"] == 1 and x540(d)["state"] == "registered",
                      what="the old stream's end to be seen")
    assert x540(d)["register_attempts"] == 2
    second.cancel_watch()
    third = k.wait_registered(X540VF, count=3)
    third.wait_devices(lambda x: len(x) == 1)
    hdtest.wait_until(lambda: x540(d)["registrations"] == 3 and x540(d)["watchers"] == 1,
                      what="the third registration")
    assert x540(d)["register_attempts"] == 3
    assert len([t for t, n in k.attempts if n == X540VF]) == 3


def recomputes(d, since):
    """(kind, evaluated, total, changed) of each recompute logged after `since`."""
    out = []
    for line in d.log_text()[since:].splitlines():
        m = re.search(r"recompute \((\w+)\): (\d+) of (\d+) devices evaluated, (\d+) resources", line)
        if m:
            out.append((m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))))
    return out


def test_health_follows_dev_vfio_incrementally(kubelet_daemon):
    """The group node's removal is seen through inotify and re-evaluates its
    group's members only; their health comes from a cache that inotify keeps."""
    k, d = kubelet_daemon
    plugin = k.wait_registered(X540VF)
    plugin.wait_devices(lambda x: x == [("0000:01:10.0", "Healthy", [0])])
    mark = len(d.log_text())
    os.unlink(os.path.join(d.devroot, "vfio", "111"))
    plugin.wait_devices(lambda x: x == [("0000:01:10.0", "Unhealthy", [0])])
    seen = recomputes(d, mark)
    assert seen and all(kind == "incremental" and n == 1 for kind, n, _, _ in seen), seen
    assert seen[-1][2] == 27 and seen[-1][3] == 1
    mark = len(d.log_text())
    open(os.path.join(d.devroot, "vfio", "111"), "w").close()
    plugin.wait_devices(lambda x: x == [("0000:01:10.0", "Healthy", [0])])
    assert all(kind == "incremental" and n == 1 for kind, n, _, _ in recomputes(d, mark))
    # A full pass reads /dev again and agrees.
    d.call("daemon.rescan")
    assert x540(d)["devices"] == [{"id": "0000:01:10.0", "health": "Healthy", "numa_node": 0}]


@pytest.mark.skipif(shutil.which("umockdev-wrapper") is None, reason="umockdev is not installed")
def test_uevent_recomputes_only_what_changed(make_daemon):
    """A hotplug uevent costs work for the devices it names (the function and
    its PF), not for every device of the host."""
    from test_hotplug import FakeKernel
    fk = FakeKernel("dell-190")
    k = None
    try:
        env = {"LD_PRELOAD": "libumockdev-preload.so.0", "UMOCKDEV_DIR": fk.root}
        d = make_daemon(host=None, tree=fk.root, env=env, node_name="dell-190", start=False)
        k = Kubelet(d.kubelet)
        d.start()
        plugin = k.wait_registered(X540VF)
        plugin.wait_devices(lambda x: len(x) == 1)
        mark = len(d.log_text())
        fk.do("set_driver", bdf="0000:01:10.2", driver="vfio-pci")
        plugin.wait_devices(lambda x: [i for i, _, _ in x] == ["0000:01:10.0", "0000:01:10.2"])
        seen = recomputes(d, mark)
        assert seen and all(kind == "incremental" for kind, _, _, _ in seen), seen
        assert sum(n for _, n, _, _ in seen) <= 4 and seen[-1][2] == 27, seen
        assert all(changed <= 1 for _, _, _, changed in seen), seen
        mark = len(d.log_text())
        fk.do("set_driver", bdf="0000:01:10.2", driver=None)
        plugin.wait_devices(lambda x: len(x) == 1)
        assert all(kind == "incremental" for kind, _, _, _ in recomputes(d, mark))
    finally:
        if k:
            k.stop()
        d.check_clean_exit()
        fk.close()
