# SPDX-License-Identifier: MIT
"""PCI claims on a simulated host with a simulated kernel: whole IOMMU groups
onto vfio-pci and back, the safety rails, rollback, GPU hand-off, kill -9 at
every step, reboot, a corrupt state file, a slow unbind, drift."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import grpc
import pytest

import hdtest
from hdtest import RpcError, wait_until
from kubelet import Kubelet
from simkernel import SimKernel
from test_deviceplugin import X540VF


@pytest.fixture
def host(make_daemon):
    """Returns start(config=None, env=None, ...) -> (daemon, kernel).
    igpu_boot_vga=False: the iGPU is not the boot VGA device (so its
    two-function group can be claimed)."""
    kernels = []

    def start(config=None, env=None, tree=None, start=True, igpu_boot_vga=True, **kw):
        d = make_daemon(config=config, env=env, tree=tree, start=False, **kw)
        if not igpu_boot_vga:
            with open(os.path.join(d.sysfs, "bus/pci/devices/0000:35:00.0/boot_vga"), "w") as f:
                f.write("0\n")
        k = SimKernel(d.root)
        kernels.append(k)
        if start:
            d.start()
        return d, k

    yield start
    for k in kernels:
        k.stop()


def call(d, method, addr, **kw):
    c = d.client(timeout=60)
    try:
        return c.call(method, dict(address=addr, **kw))
    finally:
        c.close()


def claim(d, addr, **kw):
    return call(d, "pci.claim", addr, **kw)


def release(d, addr, **kw):
    return call(d, "pci.release", addr, **kw)


def override(d, addr):
    """driver_override as the kernel shows it (the simulated one keeps what
    was written: a cleared one reads "\\n")."""
    with open(os.path.join(d.sysfs, "bus/pci/devices", addr, "driver_override")) as f:
        return f.read().strip() or "(null)"


@contextlib.contextmanager
def hold_open(path):
    """A process holding `path` open (as QEMU holds /dev/vfio/N) until the end."""
    holder = subprocess.Popen([sys.executable, "-c",
                               f"import time; f = open({path!r}); print('open', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def claims(d):
    return d.call("claims.list")["claims"]


def idle(d):
    wait_until(lambda: not any(c["busy"] for c in claims(d)), timeout=30, what="claims to settle")


def test_claim_and_release_one_vf(host):
    d, k = host()
    res = claim(d, "0000:01:10.2")
    assert res["state"] == "claimed" and res["iommu_group"] == 112
    assert res["members"] == [{"address": "0000:01:10.2", "original_driver": "ixgbevf", "bridge": False}]
    assert k.driver_of("0000:01:10.2") == "vfio-pci"
    assert override(d, "0000:01:10.2") == "vfio-pci"
    assert os.path.exists(os.path.join(d.devroot, "vfio/112"))
    assert d.call("devices.get", {"address": "0000:01:10.2"})["driver"] == "vfio-pci"
    cl = claims(d)[0]
    assert cl["members"][0]["driver"] == "vfio-pci" and cl["state"] == "claimed"
    r = next(r for r in d.call("resources.list") if r["name"] == X540VF)
    assert [x["id"] for x in r["devices"]] == ["0000:01:10.0", "0000:01:10.2"]
    # Claiming again is a no-op that answers the same.
    assert claim(d, "0000:01:10.2")["state"] == "claimed"

    assert release(d, "0000:01:10.2")["state"] == "released"
    assert k.driver_of("0000:01:10.2") == "ixgbevf"
    assert override(d, "0000:01:10.2") == "(null)"
    assert claims(d) == []
    with open(os.path.join(d.state, "state.json")) as f:
        assert json.load(f)["claims"] == []
    r = next(r for r in d.call("resources.list") if r["name"] == X540VF)
    assert [x["id"] for x in r["devices"]] == ["0000:01:10.0"]
    # Never new_id: the other X540 VFs stayed on ixgbevf throughout.
    assert k.driver_of("0000:01:10.4") == "ixgbevf"
    assert not any(op == "new_id" for op, *_ in k.log)


def test_group_is_the_unit(host):
    d, k = host(igpu_boot_vga=False)
    res = claim(d, "0000:35:00.1")      # the HDMI audio: its iGPU comes along
    assert [m["address"] for m in res["members"]] == ["0000:35:00.0", "0000:35:00.1"]
    assert k.driver_of("0000:35:00.0") == "vfio-pci" and k.driver_of("0000:35:00.1") == "vfio-pci"
    c = d.client()
    err = c.request("pci.claim", {"address": "0000:35:00.0"})
    assert err.get("result", {}).get("state") == "claimed", "the peer is already in the claim"
    c.close()
    release(d, "0000:35:00.0")
    assert k.driver_of("0000:35:00.0") == "amdgpu" and k.driver_of("0000:35:00.1") == "snd_hda_intel"


def refused(d, addr, code=-32003):
    c = d.client(timeout=60)
    try:
        resp = c.request("pci.claim", {"address": addr})
    finally:
        c.close()
    assert "error" in resp, resp
    assert resp["error"]["code"] == code, resp
    return resp["error"]["message"]


def test_protected_devices(host):
    d, k = host(start=False, config={"exclude": [{"vendor": "144d"}]})
    t = hdtest.simhost.Tree(d.root)
    # The real default route goes through eno2 of the simulated X540.
    with open("/proc/net/route") as f:
        ifaces = [ln.split()[0] for ln in f.readlines()[1:] if ln.split()[1] == "00000000"]
    for ifname in ifaces:
        t.devices["0000:01:00.1"] = "devices/pci0000:00/0000:00:01.0/0000:01:00.1"
        t.netdev("0000:01:00.1", ifname)
    d.start()
    assert "excluded by the configuration" in refused(d, "0000:00:17.0")
    msg = refused(d, "0000:35:00.1")
    assert "0000:35:00.0 is the boot VGA device" in msg and "shares an IOMMU group with 0000:35:00.1" in msg
    if ifaces:
        assert "carries the default route" in refused(d, "0000:01:00.1")
    assert "VFs enabled" in refused(d, "0000:01:00.0")
    assert k.driver_of("0000:35:00.0") == "amdgpu", "nothing was touched"
    assert claims(d) == []


def test_boot_disk_is_protected(host):
    st = os.stat("/")
    if os.major(st.st_dev) == 0:
        pytest.skip("the root filesystem is not on a block device here")
    d, k = host(start=False)
    blk = "devices/pci0000:00/0000:00:17.0/nvme/nvme0/nvme0n1"
    os.makedirs(os.path.join(d.sysfs, blk))
    os.makedirs(os.path.join(d.sysfs, "dev/block"))
    os.symlink(f"../../{blk}", os.path.join(d.sysfs, f"dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}"))
    d.start()
    msg = refused(d, "0000:00:17.0")
    assert "backs the mounted filesystem / " in msg, msg


def test_boot_vga_one_rule(host):
    """The inventory's verdict and the claim path agree on the boot VGA
    device, whether or not it carries a framebuffer."""
    d, k = host()
    igpu = d.call("devices.get", {"address": "0000:35:00.0"})
    assert igpu["boot_vga"] is True and igpu["module_info"]["passthrough"] == "blocked"
    msg = refused(d, "0000:35:00.0")
    assert "0000:35:00.0 is the boot VGA device" in msg, msg
    assert "boot VGA device" in " ".join(igpu["module_info"]["reasons"])
    assert k.driver_of("0000:35:00.0") == "amdgpu" and k.driver_of("0000:35:00.1") == "snd_hda_intel"
    assert claims(d) == [] and not [e for e in k.log if e[0] != "override"]
    # Every device the inventory calls blocked is refused.
    for dev in d.call("devices.list", {"class": "pci"}):
        info = dev.get("module_info") or {}
        if info.get("passthrough") == "blocked":
            refused(d, dev["address"])


@pytest.mark.parametrize("addr,what", [("0000:00:01.0", "root port"), ("0000:00:00.0", "host bridge")])
def test_bridges_are_never_claimed(host, addr, what):
    d, k = host()
    msg = refused(d, addr)
    assert f"{addr} is a bridge" in msg, msg
    assert claims(d) == []
    assert override(d, addr) == "(null)" and k.driver_of(addr) == ("pcieport" if what == "root port" else None)
    assert not any(a == addr for _, a, _ in k.log), k.log


def test_no_iommu_group_and_bad_requests(host):
    d, k = host()
    os.unlink(os.path.join(d.sysfs, "devices/pci0000:00/0000:00:17.0/iommu_group"))
    d.call("daemon.rescan")
    assert "intel_iommu=on" in refused(d, "0000:00:17.0")
    assert refused(d, "0000:77:00.0", code=-32004)
    c = d.client()
    assert c.request("pci.claim", {"address": "nope"})["error"]["code"] == -32602
    assert c.request("pci.release", {"address": "0000:01:10.2"})["error"]["code"] == -32004
    assert c.request("pci.claim", {"address": "0000:01:10.2", "resource_name": "bad_"})["error"]["code"] == -32602
    c.close()


def test_rollback_when_the_second_member_fails(host):
    d, k = host(igpu_boot_vga=False)
    k.fail_bind.add("0000:35:00.1")
    c = d.client(timeout=60)
    resp = c.request("pci.claim", {"address": "0000:35:00.0"})
    c.close()
    assert resp["error"]["code"] == -32010
    assert "verify: 0000:35:00.1" in resp["error"]["message"]
    # (the simulated kernel applies writes a few ms after they return)
    wait_until(lambda: k.driver_of("0000:35:00.0") == "amdgpu", what="the first member to go back")
    wait_until(lambda: override(d, "0000:35:00.0") == "(null)" and override(d, "0000:35:00.1") == "(null)",
               what="the overrides to be cleared")
    assert claims(d) == []
    assert ("bind", "0000:35:00.0", "vfio-pci") in k.log


def test_gpu_held_open(host):
    d, k = host(config={"claims": {"gpu_free_timeout_s": 1}})
    node = os.path.join(d.devroot, "nvidia0")
    open(node, "w").close()
    with hold_open(node) as holder:
        c = d.client(timeout=60)
        resp = c.request("pci.claim", {"address": "0000:04:00.4"})
        c.close()
        assert resp["error"]["code"] == -32010
        assert f"PID {holder.pid} (python3" in resp["error"]["message"], resp
        assert k.driver_of("0000:04:00.4") == "nvidia"
    assert claim(d, "0000:04:00.4")["state"] == "claimed"
    assert k.driver_of("0000:04:00.4") == "vfio-pci"
    release(d, "0000:04:00.4")
    assert k.driver_of("0000:04:00.4") == "nvidia"


CLAIM_STEPS = ["intent", "override", "unbind", "probe", "verify", "claimed"]
RELEASE_STEPS = ["release-intent", "release-unbind", "release-clear", "release-bind",
                 "release-verify"]


@pytest.mark.parametrize("step", CLAIM_STEPS + RELEASE_STEPS)
def test_kill_9_at_every_step(host, step):
    addr = "0000:35:00.1"
    releasing = step.startswith("release")
    d, k = host(igpu_boot_vga=False)
    if releasing:
        claim(d, addr)
    d.stop()
    d.env = {"HOSTDEVD_TEST_CRASH_AFTER": step}
    d.start()
    c = d.client(timeout=30)
    c.send_raw((json.dumps({"jsonrpc": "2.0", "id": 1, "method": "pci.release" if releasing else "pci.claim",
                            "params": {"address": addr}}) + "\n").encode())
    d.proc.wait(30)
    assert d.proc.returncode == -signal.SIGKILL, d.log_text()[-3000:]
    c.close()
    d.proc = None
    d.log.close()
    d.env = None
    d.start()
    idle(d)
    drivers = (k.driver_of("0000:35:00.0"), k.driver_of("0000:35:00.1"))
    overrides = (override(d, "0000:35:00.0"), override(d, "0000:35:00.1"))
    if releasing:
        assert drivers == ("amdgpu", "snd_hda_intel") and overrides == ("(null)", "(null)")
        assert claims(d) == []
    else:
        assert drivers == ("vfio-pci", "vfio-pci") and overrides == ("vfio-pci", "vfio-pci")
        assert [c["state"] for c in claims(d)] == ["claimed"]


def test_reboot_reapplies_claims(host):
    d, k = host()
    claim(d, "0000:01:10.2")
    d.check_clean_exit()
    k.stop()
    # A new boot: the tree comes back with the original drivers.
    shutil.rmtree(d.root)
    hdtest.simhost.build("dell-190", d.root)
    with open(os.path.join(d.state, "state.json")) as f:
        state = json.load(f)
    assert state["claims"][0]["state"] == "claimed"
    k2 = SimKernel(d.root)
    try:
        assert k2.driver_of("0000:01:10.2") == "ixgbevf"
        d.start()
        wait_until(lambda: k2.driver_of("0000:01:10.2") == "vfio-pci", timeout=15,
                   what="the claim to be re-applied")
        idle(d)
        assert claims(d)[0]["state"] == "claimed"
    finally:
        d.check_clean_exit()
        k2.stop()


def test_corrupt_state_fails_closed(host):
    d, k = host()
    claim(d, "0000:01:10.2")
    d.check_clean_exit()
    path = os.path.join(d.state, "state.json")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("ixgbevf", "ixgbevX"))      # edited behind our back
    d.start()
    st = d.call("daemon.status")
    assert st["claims"]["fail_closed"] is True and "checksum" in st["claims"]["fail_reason"]
    assert "checksum" in refused(d, "0000:01:10.4")
    assert k.driver_of("0000:01:10.2") == "vfio-pci", "existing bindings are kept"
    c = d.client()
    assert c.request("pci.release", {"address": "0000:01:10.2"})["error"]["code"] == -32003
    c.close()
    for torn in (text[: len(text) // 2], "", "\x00" * 40):
        d.check_clean_exit()
        with open(path, "w") as f:
            f.write(torn)
        d.start()
        assert d.call("daemon.status")["claims"]["fail_closed"] is True


def test_slow_unbind_keeps_the_daemon_answering(host):
    d, k = host()
    kubelet = Kubelet(d.kubelet)
    try:
        claim(d, "0000:01:10.2")
        plugin = kubelet.wait_registered(X540VF)
        plugin.wait_devices(lambda x: len(x) == 2)
        k.slow_unbind("vfio-pci", 4)
        c = d.client(timeout=60)
        c.send_raw(b'{"jsonrpc":"2.0","id":9,"method":"pci.release","params":{"address":"0000:01:10.2"}}\n')
        # Out of the resource first, then the blocking unbind.
        plugin.wait_devices(lambda x: len(x) == 1)
        # Answers come while the unbind still sleeps in the worker: a loop
        # that waited for it would answer only after the step moved on.
        for _ in range(3):
            d.call("daemon.status")
            plugin.allocate(["0000:01:10.0"])
            assert claims(d)[0]["step"] == "release-unbind", "answered during the unbind"
        resp = c.recv_line(timeout=30)
        assert resp["result"]["state"] == "released"
        c.close()
        assert k.driver_of("0000:01:10.2") == "ixgbevf"
    finally:
        kubelet.stop()


def test_release_timeout_names_the_step(host):
    d, k = host(config={"claims": {"release_timeout_s": 1}})
    claim(d, "0000:01:10.2")
    k.slow_unbind("vfio-pci", 3)
    c = d.client(timeout=60)
    resp = c.request("pci.release", {"address": "0000:01:10.2"})
    c.close()
    assert resp["error"]["code"] == -32010
    assert "did not finish within 1 s" in resp["error"]["message"]
    assert "no process holds its /dev/vfio node" in resp["error"]["message"]
    cl = claims(d)[0]
    assert cl["state"] == "releasing" and "release-unbind" in cl["last_error"]
    st = d.call("daemon.status")
    assert st["pid"] == d.pid()
    time.sleep(2.5)   # the kernel lets go in the end
    assert release(d, "0000:01:10.2")["state"] == "released"
    assert k.driver_of("0000:01:10.2") == "ixgbevf"


def test_release_refused_while_held(host):
    d, k = host(config={"claims": {"release_timeout_s": 1}})
    claim(d, "0000:01:10.2")
    node = os.path.join(d.devroot, "vfio/112")
    with hold_open(node) as holder:
        c = d.client(timeout=60)
        resp = c.request("pci.release", {"address": "0000:01:10.2"})
        assert resp["error"]["code"] == -32003 and f"PID {holder.pid}" in resp["error"]["message"]
        assert claims(d)[0]["state"] == "claimed"
        # Forced, while the kernel keeps the unbind waiting: the timeout
        # names the holder.
        k.slow_unbind("vfio-pci", 3)
        d.call("daemon.status")
        resp = c.request("pci.release", {"address": "0000:01:10.2", "force": True})
        assert resp["error"]["code"] == -32010
        assert f"held by PID {holder.pid} (python3" in resp["error"]["message"], resp
        time.sleep(3)
        resp = c.request("pci.release", {"address": "0000:01:10.2", "force": True})
        assert resp["result"]["state"] == "released"
        c.close()


def test_drift_and_absence(host):
    d, k = host()
    kubelet = Kubelet(d.kubelet)
    try:
        claim(d, "0000:01:10.2")
        plugin = kubelet.wait_registered(X540VF)
        sub = d.client()
        sub.call("events.subscribe", {"types": ["drift", "claim"]})
        # Someone binds it back to ixgbevf behind our back.
        with k.lock:
            k.do_unbind("0000:01:10.2", "vfio-pci")
            k.overrides["0000:01:10.2"] = None
            k.do_bind("0000:01:10.2", "ixgbevf")
        d.call("daemon.rescan")
        ev = sub.next_event(match=lambda e: e["type"] == "drift")
        assert "0000:01:10.2 on ixgbevf" in ev["reason"]
        wait_until(lambda: k.driver_of("0000:01:10.2") == "vfio-pci", what="the claim re-applied")
        idle(d)
        # It disappears: kept as absent, Unhealthy for the kubelet.
        rel = os.path.relpath(k.devpath("0000:01:10.2"), d.sysfs)
        os.unlink(os.path.join(d.sysfs, "bus/pci/devices/0000:01:10.2"))
        d.call("daemon.rescan")
        plugin.wait_devices(lambda x: ("0000:01:10.2", "Unhealthy", []) in x)
        assert claims(d)[0]["absent"] is True
        with pytest.raises(grpc.RpcError) as e:
            plugin.allocate(["0000:01:10.2"])
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        # It comes back (on ixgbevf, as after a hot re-plug): bound again.
        os.symlink(os.path.relpath(os.path.join(d.sysfs, rel), os.path.join(d.sysfs, "bus/pci/devices")),
                   os.path.join(d.sysfs, "bus/pci/devices/0000:01:10.2"))
        with k.lock:
            k.do_unbind("0000:01:10.2", "vfio-pci")
            k.do_bind("0000:01:10.2", "ixgbevf")
        d.call("daemon.rescan")
        wait_until(lambda: k.driver_of("0000:01:10.2") == "vfio-pci", what="re-applied on return")
        plugin.wait_devices(lambda x: ("0000:01:10.2", "Healthy", [0]) in x)
        sub.close()
    finally:
        kubelet.stop()


def test_config_claims_and_allocate(host):
    d, k = host(config={"resources": {"rules": [
        {"vendor": "8086", "device": "1515", "claim": True, "name": "example.com/x540vf"}]}})
    kubelet = Kubelet(d.kubelet)
    try:
        wait_until(lambda: all(k.driver_of(f"0000:01:10.{i}") == "vfio-pci" for i in (0, 2, 4, 6)),
                   timeout=20, what="the configured claims")
        idle(d)
        assert sorted(c["address"] for c in claims(d)) == ["0000:01:10.0", "0000:01:10.2",
                                                           "0000:01:10.4", "0000:01:10.6"]
        assert all(c["from_config"] for c in claims(d))
        plugin = kubelet.wait_registered("example.com/x540vf")
        plugin.wait_devices(lambda x: len(x) == 4)
        resp = plugin.allocate(["0000:01:10.4"])
        assert dict(resp.container_responses[0].envs) == {"PCI_RESOURCE_EXAMPLE_COM_X540VF": "0000:01:10.4"}
        assert next(c for c in claims(d) if c["address"] == "0000:01:10.4")["allocations"] == 1
    finally:
        kubelet.stop()


def test_iommufd_policy(host):
    d, k = host(start=False, config={"resources": {"rules": [
        {"vendor": "8086", "device": "1515", "iommu": "prefer-iommufd"}]}})
    os.makedirs(os.path.join(d.sysfs, "devices/pci0000:00/0000:00:01.0/0000:01:10.0/vfio-dev/vfio7"))
    open(os.path.join(d.devroot, "iommu"), "w").close()
    kubelet = Kubelet(d.kubelet)
    try:
        d.start()
        plugin = kubelet.wait_registered(X540VF)
        resp = plugin.allocate(["0000:01:10.0"])
        specs = [s.host_path for s in resp.container_responses[0].devices]
        assert specs == ["/dev/iommu", "/dev/vfio/devices/vfio7"]
    finally:
        kubelet.stop()


def test_health_follows_the_vfio_node_and_aer(host):
    d, k = host()
    kubelet = Kubelet(d.kubelet)
    try:
        claim(d, "0000:01:10.2")
        plugin = kubelet.wait_registered(X540VF)
        plugin.wait_devices(lambda x: ("0000:01:10.2", "Healthy", [0]) in x)
        # The group's node disappears: Unhealthy at once (inotify), no rescan.
        os.unlink(os.path.join(d.devroot, "vfio/112"))
        plugin.wait_devices(lambda x: ("0000:01:10.2", "Unhealthy", [0]) in x, timeout=5)
        open(os.path.join(d.devroot, "vfio/112"), "w").close()
        plugin.wait_devices(lambda x: ("0000:01:10.2", "Healthy", [0]) in x, timeout=5)
        # AER errors rising: Unhealthy.
        dev = k.devpath("0000:01:10.2")
        for name, total in (("aer_dev_fatal", 0), ("aer_dev_nonfatal", 0)):
            with open(os.path.join(dev, name), "w") as f:
                f.write(f"Undefined 0\nTOTAL_ERR_{'FATAL' if 'non' not in name else 'NONFATAL'} {total}\n")
        d.call("daemon.rescan")
        with open(os.path.join(dev, "aer_dev_nonfatal"), "w") as f:
            f.write("BadTLP 2\nTOTAL_ERR_NONFATAL 2\n")
        d.call("daemon.rescan")
        plugin.wait_devices(lambda x: ("0000:01:10.2", "Unhealthy", [0]) in x, timeout=5)
        assert d.call("devices.get", {"address": "0000:01:10.2"})["aer_errors"] == 2
        assert "new AER errors" in d.log_text()
    finally:
        kubelet.stop()


def test_kernel_write_error_rolls_back(host):
    d, k = host()
    # The unbind attribute cannot be written (EISDIR stands in for the
    # kernel's EBUSY/EINVAL: any error from the write).
    unbind = os.path.join(d.sysfs, "bus/pci/drivers/ixgbevf/unbind")
    with k.lock:
        os.unlink(unbind)
        os.mkdir(unbind)
    c = d.client(timeout=60)
    resp = c.request("pci.claim", {"address": "0000:01:10.2"})
    c.close()
    assert resp["error"]["code"] == -32010
    assert "unbind of 0000:01:10.2 failed: Is a directory" in resp["error"]["message"]
    wait_until(lambda: override(d, "0000:01:10.2") == "(null)", what="the override to be cleared")
    assert k.driver_of("0000:01:10.2") == "ixgbevf" and claims(d) == []


def test_state_file_symlink_is_not_followed(host):
    d, k = host()
    claim(d, "0000:01:10.2")
    d.check_clean_exit()
    path = os.path.join(d.state, "state.json")
    shutil.copy(path, os.path.join(d.dir, "elsewhere.json"))
    os.unlink(path)
    os.symlink(os.path.join(d.dir, "elsewhere.json"), path)
    d.start()
    st = d.call("daemon.status")["claims"]
    assert st["fail_closed"] is True, "a planted symlink is not trusted"


def test_device_vanishes_mid_claim(host):
    d, k = host()
    k.vanish_on_unbind.add("0000:01:10.2")
    c = d.client(timeout=60)
    resp = c.request("pci.claim", {"address": "0000:01:10.2"})
    c.close()
    assert resp["error"]["code"] == -32010
    assert "0000:01:10.2 vanished" in resp["error"]["message"], resp
    assert claims(d) == [], "nothing half-claimed is left behind"
    assert d.call("daemon.status")["pid"] == d.pid()
    d.call("daemon.rescan")
    c = d.client()
    assert c.request("devices.get", {"address": "0000:01:10.2"})["error"]["code"] == -32004
    c.close()
