# SPDX-License-Identifier: MIT
"""The vgpu module on simulated hosts driven by the simulated kernel: mdevs
on an A2's VFs (hp-130) and on a virtual parent (the mtty sample's shape),
NVIDIA's VF-based vGPU on an A100's VFs (dell-190 with creatable_vgpu_types),
the kubelet's view and Allocate, "in use" refusals, owner generations,
drift, kill -9 at each step and a reboot (a new tree, the same state.json)."""

import json
import os
import shutil
import signal
import subprocess
import zlib

import pytest

import hdtest
from hdtest import RpcError, wait_until
from kubelet import Kubelet
from simkernel import SimKernel, SimVgpuKernel
from test_claims import hold_open

A2Q = "nvidia.com/NVIDIA_A2-2Q"
A2B = "nvidia.com/NVIDIA_A2-2B"
A100_5C = "nvidia.com/GRID_A100-1-5C"
A100_TYPES = [(1147, "GRID A100-1-5C"), (1148, "GRID A100-2-10C"), (1149, "GRID A100-3-20C"),
              (1150, "GRID A100-4-20C"), (1151, "GRID A100-7-40C"), (1160, "GRID A100-5C")]
A100_VFS = ["0000:04:00.4", "0000:04:00.5", "0000:04:00.6", "0000:04:00.7"]
U1 = "5b1f0b58-0a4c-4b0e-9a3c-0d1c2e3f4a5b"
U2 = "9e8d7c6b-5a49-4837-a625-14f3e2d1c0b9"


def add_mtty(t):
    t.mdev_parent_virtual("mtty", [("mtty-1", "Single port serial", 24),
                                   ("mtty-2", "Dual port serial", 12)])


def add_a100_vgpu(t):
    for vf in A100_VFS:
        t.nvidia_vgpu_vf(vf, A100_TYPES)


def build(host, root, extra=()):
    t = hdtest.simhost.build(host, root)
    for f in extra:
        f(t)
    return t


@pytest.fixture
def vhost(make_daemon):
    """start(host, extra=[tree editors], config=None, start=True) -> (daemon, kernel)."""
    kernels = []

    def start(host="hp-130", extra=(), config=None, start=True, tree=None, kernel=True):
        d = make_daemon(host=None, config=config, start=False, tree=tree)
        if tree is None:
            build(host, d.root, extra)
        k = None
        if kernel:
            k = SimVgpuKernel(d.root)
            kernels.append(k)
        if start:
            d.start()
        return d, k

    yield start
    for k in kernels:
        k.stop()


def call(d, method, params=None, timeout=30):
    c = d.client(timeout=timeout)
    try:
        return c.call(method, params)
    finally:
        c.close()


def mdev_exists(d, uuid):
    return os.path.lexists(os.path.join(d.sysfs, "bus/mdev/devices", uuid))


def group_of(d, uuid):
    return os.path.basename(os.readlink(os.path.join(d.sysfs, "bus/mdev/devices", uuid,
                                                     "iommu_group")))


def vgpus(d):
    return {v.get("uuid") or v.get("address"): v for v in call(d, "vgpu.list")["vgpus"]}


def applied(k, entry, n):
    """Waits until the simulated kernel has applied `entry` n times."""
    wait_until(lambda: k.log.count(entry) >= n, what=f"{entry} applied {n} times")


def settled(d, key, present=True):
    """Waits until hostdevd has no operation queued for the vGPU `key` and
    it is (or is not) present; returns its view."""
    def ok():
        v = vgpus(d).get(key)
        return v if (v is not None and not v["busy"] and v["present"] == present) else None
    return wait_until(ok, timeout=15, what=f"{key} to settle")


def resources(d):
    return {r["name"]: r for r in call(d, "resources.list")}


def state_section(d):
    try:
        with open(os.path.join(d.state, "state.json")) as f:
            return json.load(f).get("modules", {}).get("vgpu")
    except FileNotFoundError:
        return None


def rewrite_state(d, edit):
    """Changes state.json the way another boot or a kill would have left it
    (the checksum made again)."""
    path = os.path.join(d.state, "state.json")
    with open(path) as f:
        state = json.load(f)
    state.pop("checksum")
    edit(state)
    canon = json.dumps(state, sort_keys=True, separators=(",", ":")).encode()
    state["checksum"] = "crc32:%08x" % (zlib.crc32(canon) & 0xffffffff)
    with open(path, "w") as f:
        json.dump(state, f)


def kill9(d):
    d.proc.kill()
    d.proc.wait()
    d.stop()


# --- mdevs ---------------------------------------------------------------------


def test_types_of_both_flavours(vhost):
    d, _ = vhost("dell-190", extra=[add_a100_vgpu])
    types = {p["parent"]: p for p in call(d, "vgpu.types")["parents"]}
    vf = types["0000:04:00.4"]
    assert vf["flavour"] == "vf" and vf["current_type"] == 0 and vf["physfn"] == "0000:04:00.0"
    assert vf["types"][0] == {"id": "1147", "name": "GRID A100-1-5C", "available": 1}
    assert len(vf["types"]) == len(A100_TYPES)
    assert "0000:04:00.0" not in types, "the PF has no catalogue"
    d2, _ = vhost("hp-130", extra=[add_mtty])
    types = {p["parent"]: p for p in call(d2, "vgpu.types")["parents"]}
    a2 = types["0000:08:00.4"]
    assert a2["flavour"] == "mdev" and a2["domain"] == "nvidia.com"
    assert [t["id"] for t in a2["types"]] == ["nvidia-743", "nvidia-745", "nvidia-750"]
    assert a2["types"][1]["name"] == "NVIDIA A2-2Q" and a2["types"][1]["device_api"] == "vfio-pci"
    assert a2["mdevs"] == ["aa8d831f-7752-4d32-9f62-d4a95b118e28"]
    assert types["mtty"]["domain"] == "hostdevd.io" and types["mtty"]["types"][0]["available"] == 24
    only = call(d2, "vgpu.types", {"parent": "mtty"})["parents"]
    assert [p["parent"] for p in only] == ["mtty"]
    with pytest.raises(RpcError) as e:
        call(d2, "vgpu.types", {"parent": "0000:99:00.0"})
    assert e.value.code == -32004
    # The module owns the mdevs and the parents; the pci module keeps the rest.
    assert d2.call("devices.get", {"address": "aa8d831f-7752-4d32-9f62-d4a95b118e28"})["module"] == "vgpu"
    assert d2.call("devices.get", {"address": "0000:00:1f.6"})["module"] == "pci"


def test_mdev_create_allocate_refuse_while_open_remove(vhost):
    d, k = vhost("hp-130", start=False)
    kubelet = Kubelet(d.kubelet)
    try:
        d.start()
        ev = d.client(timeout=15)
        ev.call("events.subscribe", {"types": ["vgpu"]})
        r = call(d, "vgpu.create", {"parent": "0000:08:00.5", "type": "NVIDIA A2-2Q"})
        uuid = r["uuid"]
        assert r["type"] == "nvidia-745" and r["resource"] == A2Q and r["present"] and r["healthy"]
        assert mdev_exists(d, uuid) and k.log[-1] == ("create", uuid, "nvidia-745")
        e = ev.next_event(match=lambda x: x["type"] == "vgpu.created")
        assert e["uuid"] == uuid and e["vgpu_type"] == "nvidia-745" and e["resource"] == A2Q
        # One vGPU per VF: the parent offers no more.
        with pytest.raises(RpcError) as err:
            call(d, "vgpu.create", {"parent": "0000:08:00.5", "type": "nvidia-743"})
        assert err.value.code == -32003 and "available_instances 0" in err.value.message
        group = group_of(d, uuid)
        plugin = kubelet.wait_registered(A2Q)
        plugin.wait_devices(lambda x: x == [(uuid, "Healthy", [])])
        resp = plugin.allocate([uuid]).container_responses[0]
        assert dict(resp.envs) == {"MDEV_PCI_RESOURCE_NVIDIA_COM_NVIDIA_A2-2Q": uuid}
        assert sorted(x.host_path for x in resp.devices) == sorted(["/dev/vfio/vfio", f"/dev/vfio/{group}"])
        assert all(x.permissions == "mrw" for x in resp.devices)
        v = vgpus(d)[uuid]
        assert v["allocated"] is True and v["generation"] > r["generation"], "a new owner generation"
        with pytest.raises(RpcError) as err:
            call(d, "vgpu.remove", {"uuid": uuid, "generation": r["generation"]})
        assert err.value.code == -32003 and "stale" in err.value.message
        assert mdev_exists(d, uuid)
        # In use: a process holds the group node; nothing is written.
        node = os.path.join(d.devroot, "vfio", group)
        with hold_open(node) as holder:
            with pytest.raises(RpcError) as err:
                call(d, "vgpu.remove", {"uuid": uuid})
            assert err.value.code == -32005 and f"PID {holder.pid}" in err.value.message
            assert mdev_exists(d, uuid) and not any(x[0] == "remove" for x in k.log)
        # The group node gone: Unhealthy, and Allocate fails as KubeVirt's does.
        os.unlink(node)
        call(d, "vgpu.reconcile")
        plugin.wait_devices(lambda x: x == [(uuid, "Unhealthy", [])])
        open(node, "w").close()
        call(d, "vgpu.reconcile")
        plugin.wait_devices(lambda x: x == [(uuid, "Healthy", [])])
        r = call(d, "vgpu.remove", {"uuid": uuid})
        assert r == {"uuid": uuid, "removed": True}
        assert not mdev_exists(d, uuid) and uuid not in vgpus(d)
        ev.next_event(match=lambda x: x["type"] == "vgpu.removed")
        plugin.wait_devices(lambda x: x == [])
        assert state_section(d)["vgpus"] == []
        ev.close()
    finally:
        kubelet.stop()


def test_mdev_by_type_id_uuid_and_resource_name(vhost):
    d, k = vhost("hp-130", extra=[add_mtty])
    r = call(d, "vgpu.create", {"parent": "mtty", "type": "mtty-2", "uuid": U1})
    assert r["uuid"] == U1 and r["resource"] == "hostdevd.io/Dual_port_serial"
    r = call(d, "vgpu.create", {"parent": "mtty", "type": "Single port serial", "uuid": U2,
                                "resource_name": "example.com/serial"})
    assert r["resource"] == "example.com/serial" and r["type"] == "mtty-1"
    with open(os.path.join(d.sysfs, "class/mdev_bus/mtty/mdev_supported_types/mtty-2/available_instances")) as f:
        assert f.read().strip() == "11"
    res = resources(d)
    assert [m["id"] for m in res["hostdevd.io/Dual_port_serial"]["devices"]] == [U1]
    assert res["example.com/serial"]["module"] == "vgpu"
    for params, code, text in [
            ({"parent": "mtty", "type": "mtty-9"}, -32004, "offers no type mtty-9"),
            ({"parent": "nope", "type": "mtty-1"}, -32004, "no such mdev parent"),
            ({"parent": "mtty", "type": "mtty-1", "uuid": "X"}, -32602, "uuid"),
            ({"parent": "mtty", "type": "mtty-1", "uuid": U1}, -32003, "already managed"),
            ({"parent": "mtty", "type": "mtty-1", "resource_name": "bad"}, -32602, "resource_name"),
            ({"parent": "../x", "type": "mtty-1"}, -32602, "parent")]:
        with pytest.raises(RpcError) as e:
            call(d, "vgpu.create", params)
        assert e.value.code == code and text in e.value.message, (params, e.value.message)
    # A VF of the SR-IOV flavour is pointed at set_type.
    with pytest.raises(RpcError) as e:
        call(d, "vgpu.remove", {"uuid": "aa8d831f-7752-4d32-9f62-d4a95b118e28"})
    assert e.value.code == -32004 and "manages" in e.value.message
    # hostdevctl reaches the module's methods.
    out = subprocess.run([hdtest.HOSTDEVCTL, "--socket", d.sock, "vgpu", "list"],
                         capture_output=True, text=True, check=True).stdout
    assert U1 in out and U2 in out


def test_mdev_drift_and_restart_recreate_same_uuid(vhost):
    d, k = vhost("hp-130")
    ev = d.client(timeout=15)
    ev.call("events.subscribe", {"types": ["vgpu"]})
    call(d, "vgpu.create", {"parent": "0000:08:01.0", "type": "nvidia-750", "uuid": U1})
    # Removed by hand: a drift event, and it is created again, same UUID.
    assert k.remove(U1)
    call(d, "vgpu.reconcile")
    e = ev.next_event(match=lambda x: x["type"] == "vgpu.drift")
    assert U1 in json.dumps(e)
    wait_until(lambda: mdev_exists(d, U1), what="the mdev created again")
    settled(d, U1)
    assert [x for x in k.log if x[1] == U1] == [("create", U1, "nvidia-750"), ("remove", U1, None),
                                                ("create", U1, "nvidia-750")]
    # Removed while hostdevd is down: created again at start.
    d.stop()
    assert k.remove(U1)
    d.start()
    wait_until(lambda: mdev_exists(d, U1), what="the mdev created at start")
    v = vgpus(d)[U1]
    assert v["present"] and v["type"] == "nvidia-750" and v["parent"] == "0000:08:01.0"
    ev.close()


def test_mdev_parent_gone_and_back(vhost):
    """A driver reload: the parent and its mdevs go, the vGPU is Unhealthy
    and waits; the parent comes back: created again, same UUID."""
    d, k = vhost("hp-130", extra=[add_mtty])
    call(d, "vgpu.create", {"parent": "mtty", "type": "mtty-2", "uuid": U1})
    link = os.path.join(d.sysfs, "class/mdev_bus/mtty")
    target = os.readlink(link)
    assert k.remove(U1)
    os.unlink(link)
    call(d, "vgpu.reconcile")
    v = settled(d, U1, present=False)
    assert not v["healthy"] and v["phase"] == "created"
    res = resources(d)["hostdevd.io/Dual_port_serial"]
    assert [(m["id"], m["health"]) for m in res["devices"]] == [(U1, "Unhealthy")]
    assert [x[0] for x in k.log] == ["create", "remove"], "nothing made while the parent is away"
    os.symlink(target, link)
    call(d, "vgpu.reconcile")
    wait_until(lambda: mdev_exists(d, U1), what="created again on the parent's return")
    assert settled(d, U1)["healthy"]
    assert [x[0] for x in k.log] == ["create", "remove", "create"]
    # Gone by hand, then removed through hostdevd: only the record goes.
    assert k.remove(U1)
    assert call(d, "vgpu.remove", {"uuid": U1}) == {"uuid": U1, "removed": True}
    assert U1 not in vgpus(d) and state_section(d)["vgpus"] == []
    assert [x[0] for x in k.log] == ["create", "remove", "create", "remove"]


@pytest.mark.skipif(shutil.which("umockdev-wrapper") is None, reason="umockdev is not installed")
def test_mdev_drift_seen_through_uevents(make_daemon):
    """No reconcile asked for, none on a timer: the mdev's remove uevent
    alone brings it back."""
    from test_hotplug import FakeKernel
    k = FakeKernel("hp-130")
    sim = None
    try:
        env = {"LD_PRELOAD": "libumockdev-preload.so.0", "UMOCKDEV_DIR": k.root}
        d = make_daemon(host=None, tree=k.root, env=env, node_name="hp-130",
                        config={"vgpu": {"reconcile_interval": 0}})
        sim = SimVgpuKernel(k.root, on_event=lambda action, path: k.do(
            "uevent", rel=path[len("/sys/"):], action=action))
        ev = d.client(timeout=20)
        ev.call("events.subscribe", {"types": ["vgpu", "device"]})
        call(d, "vgpu.create", {"parent": "0000:08:00.5", "type": "nvidia-745", "uuid": U1})
        ev.next_event(match=lambda x: x["type"] == "device.add" and x.get("id") == U1)
        assert d.call("devices.get", {"address": U1})["module"] == "vgpu"
        sim.remove(U1)
        e = ev.next_event(match=lambda x: x["type"] == "vgpu.drift")
        assert e["uuid"] == U1
        ev.next_event(match=lambda x: x["type"] == "vgpu.created" and x["uuid"] == U1)
        assert mdev_exists(d, U1) and settled(d, U1)["healthy"]
        assert [x[0] for x in sim.log] == ["create", "remove", "create"]
        ev.close()
        d.check_clean_exit()
    finally:
        if sim:
            sim.stop()
        k.close()


def test_repair_that_cannot_succeed_says_so_once(vhost):
    """Someone took the VF's one instance while our mdev was gone: the
    repair fails, is reported once, and the other mdev is left alone."""
    d, k = vhost("hp-130")
    call(d, "vgpu.create", {"parent": "0000:08:00.5", "type": "nvidia-745", "uuid": U1})
    assert k.remove(U1)
    with open(os.path.join(d.sysfs, "class/mdev_bus/0000:08:00.5/mdev_supported_types/nvidia-743/create"), "w") as f:
        f.write(U2)
    wait_until(lambda: mdev_exists(d, U2), what="the other mdev")
    c = d.client(timeout=15)
    c.call("events.subscribe", {"types": ["vgpu"]})
    # Events of a call reach the caller's own connection before its answer.
    c.call("vgpu.reconcile")
    seen = [e["type"] for e in c.pending]
    assert seen == ["vgpu.drift", "vgpu.failed"], seen
    assert "no instance of type nvidia-745" in c.pending[1]["error"]
    c.pending.clear()
    c.call("vgpu.reconcile")
    assert [e["type"] for e in c.pending] == [], "said once"
    v = vgpus(d)[U1]
    assert not v["present"] and v["phase"] == "created" and mdev_exists(d, U2)
    assert not any(x == ("remove", U2, None) for x in k.log)
    c.close()


def test_mdev_reboot_recreates_before_use(vhost, tmp_path):
    d, k = vhost("hp-130", extra=[add_mtty])
    call(d, "vgpu.create", {"parent": "0000:08:00.6", "type": "nvidia-743", "uuid": U1})
    call(d, "vgpu.create", {"parent": "mtty", "type": "mtty-1", "uuid": U2})
    gen = vgpus(d)[U1]["generation"]
    d.stop()
    k.stop()
    # The reboot: a new tree without the mdevs, the same state.json, another boot id.
    shutil.rmtree(d.root)
    build("hp-130", d.root, [add_mtty])
    rewrite_state(d, lambda s: s.update(boot_id="00000000-0000-0000-0000-000000000000"))
    k2 = SimVgpuKernel(d.root)
    try:
        d.start()
        wait_until(lambda: mdev_exists(d, U1) and mdev_exists(d, U2), what="both created again")
        v = vgpus(d)
        assert v[U1]["present"] and v[U1]["generation"] == gen and v[U2]["present"]
        assert [x[0] for x in k2.log] == ["create", "create"]
        res = resources(d)
        assert [m["id"] for m in res[A2B]["devices"]] == [U1]
    finally:
        d.stop()
        k2.stop()


def test_mdev_kill9_at_each_step(vhost):
    # Kill while the create is written and not yet applied (no kernel plays).
    d, k = vhost("hp-130", kernel=False)
    c = d.client(timeout=30)
    c.send_raw((json.dumps({"jsonrpc": "2.0", "id": 1, "method": "vgpu.create",
                            "params": {"parent": "0000:08:00.5", "type": "nvidia-745",
                                       "uuid": U1}}) + "\n").encode())
    wait_until(lambda: (state_section(d) or {}).get("vgpus"), what="the intent journalled")
    assert state_section(d)["vgpus"][0]["phase"] == "creating"
    kill9(d)
    c.close()
    assert not mdev_exists(d, U1)
    k = SimVgpuKernel(d.root)
    try:
        d.start()
        wait_until(lambda: mdev_exists(d, U1), what="the interrupted create finished")
        wait_until(lambda: state_section(d)["vgpus"][0]["phase"] == "created", what="outcome")
        assert [x[0] for x in k.log] == ["create"], "created once, no orphan"
        # Kill after the mdev came but before the outcome: adopted, not made twice.
        d.stop()
        rewrite_state(d, lambda s: s["modules"]["vgpu"]["vgpus"][0].update(phase="creating"))
        d.start()
        wait_until(lambda: state_section(d)["vgpus"][0]["phase"] == "created", what="adopted")
        assert [x[0] for x in k.log] == ["create"]
        # Kill during a removal (the kernel not answering): finished at start.
        k.stop()
        c = d.client(timeout=30)
        c.send_raw((json.dumps({"jsonrpc": "2.0", "id": 2, "method": "vgpu.remove",
                                "params": {"uuid": U1}}) + "\n").encode())
        wait_until(lambda: state_section(d)["vgpus"][0]["phase"] == "removing", what="removal intent")
        kill9(d)
        c.close()
        assert mdev_exists(d, U1)
        k = SimVgpuKernel(d.root)
        d.start()
        wait_until(lambda: not mdev_exists(d, U1), what="the interrupted removal finished")
        wait_until(lambda: state_section(d)["vgpus"] == [], what="record dropped")
        # Kill after the removal but before the outcome: the record goes, nothing is made.
        call(d, "vgpu.create", {"parent": "0000:08:00.5", "type": "nvidia-745", "uuid": U2})
        d.stop()
        k.remove(U2)
        rewrite_state(d, lambda s: s["modules"]["vgpu"]["vgpus"][0].update(phase="removing"))
        n = len(k.log)
        d.start()
        wait_until(lambda: state_section(d)["vgpus"] == [], what="record dropped")
        assert k.log[n:] == [] and not mdev_exists(d, U2)
    finally:
        k.stop()


def test_config_creates_mdevs_and_renames(vhost):
    config = {"vgpu": {"devices": [{"parent": "0000:08:00.[56]", "type": "NVIDIA A2-2B"},
                                   {"parent": "0000:08:00.4", "type": "nvidia-745"},
                                   {"parent": "mtty", "type": "mtty-1", "count": 3,
                                    "resource_name": "example.com/serial"}],
                       "resources": {"NVIDIA A2-2B": "example.com/a2b"}}}
    d, k = vhost("hp-130", extra=[add_mtty], config=config)
    wait_until(lambda: len([x for x in k.log if x[0] == "create"]) == 5, what="five mdevs")
    wait_until(lambda: all(v["present"] for v in vgpus(d).values()), what="all present")
    v = list(vgpus(d).values())
    assert sorted(x["parent"] for x in v) == ["0000:08:00.4", "0000:08:00.5", "0000:08:00.6", "mtty",
                                              "mtty", "mtty"]
    # The mdev made before hostdevd on 08:00.4 is adopted, not made twice.
    assert vgpus(d)["aa8d831f-7752-4d32-9f62-d4a95b118e28"]["resource"] == A2Q
    assert all(x["config"] for x in v)
    res = resources(d)
    assert len(res["example.com/a2b"]["devices"]) == 2 and len(res["example.com/serial"]["devices"]) == 3
    # A restart does not make more.
    d.stop()
    d.start()
    call(d, "vgpu.reconcile")
    assert len(vgpus(d)) == 6 and len([x for x in k.log if x[0] == "create"]) == 5


@pytest.mark.parametrize("bad,why", [
    ({"x": 1}, "vgpu.x: unknown key"),
    ({"devices": [{"type": "a"}]}, "vgpu.devices[0]"),
    ({"devices": [{"parent": "a", "type": "b", "count": 0}]}, "count"),
    ({"resources": {"a": "NOPE"}}, "vgpu.resources.a"),
    ({"default_domain": "Bad/"}, "default_domain")])
def test_config_refused(make_daemon, bad, why):
    d = make_daemon(config={"vgpu": bad}, start=False)
    r = subprocess.run(d.args(1)[:-2], capture_output=True, text=True, timeout=30,
                       env=hdtest.sanitizer_env())
    assert r.returncode != 0 and why in r.stderr, r.stderr


# --- VF-based vGPU ---------------------------------------------------------------


def test_vf_set_type_allocate_clear(vhost):
    d, k = vhost("dell-190", extra=[add_a100_vgpu], start=False)
    kubelet = Kubelet(d.kubelet)
    try:
        d.start()
        vf = A100_VFS[0]
        r = call(d, "vgpu.set_type", {"address": vf, "type": "GRID A100-1-5C"})
        assert r["type"] == "1147" and r["resource"] == A100_5C and r["present"]
        assert r["parent"] == "0000:04:00.0"
        assert k.current(vf) == 1147
        # The VF lists nothing now; its siblings only the 5 GB profiles.
        wait_until(lambda: [t["id"] for t in call(d, "vgpu.types", {"parent": A100_VFS[1]})["parents"][0]["types"]]
                   == ["1147", "1160"], what="the siblings' catalogues to shrink")
        assert call(d, "vgpu.types", {"parent": vf})["parents"][0]["types"] == []
        with pytest.raises(RpcError) as e:
            call(d, "vgpu.set_type", {"address": A100_VFS[1], "type": "GRID A100-2-10C"})
        assert e.value.code == -32003 and "cannot take type" in e.value.message
        # Another type on a VF that has one: refused.
        with pytest.raises(RpcError) as e:
            call(d, "vgpu.set_type", {"address": vf, "type": 1160})
        assert e.value.code == -32003
        plugin = kubelet.wait_registered(A100_5C)
        plugin.wait_devices(lambda x: x == [(vf, "Healthy", [1])])
        resp = plugin.allocate([vf]).container_responses[0]
        assert dict(resp.envs) == {"PCI_RESOURCE_NVIDIA_COM_GRID_A100-1-5C": vf}
        assert sorted(x.host_path for x in resp.devices) == ["/dev/vfio/117", "/dev/vfio/devices/vfio117",
                                                             "/dev/vfio/vfio"]
        assert d.call("devices.get", {"address": vf})["driver"] == "nvidia", "stays on nvidia"
        gen = vgpus(d)[vf]["generation"]
        # In use through the cdev: refused, nothing written.
        with hold_open(os.path.join(d.devroot, "vfio/devices/vfio117")) as holder:
            with pytest.raises(RpcError) as e:
                call(d, "vgpu.clear", {"address": vf})
            assert e.value.code == -32005 and str(holder.pid) in e.value.message
        assert k.current(vf) == 1147
        # Forced while the driver still refuses (a VM holds it): EPERM, kept.
        if not k.hold_vf(vf):
            pytest.skip("chattr +i does not work here")
        ev = d.client(timeout=15)
        ev.call("events.subscribe", {"types": ["vgpu"]})
        with pytest.raises(RpcError) as e:
            call(d, "vgpu.clear", {"address": vf, "force": True})
        assert "Operation not permitted" in e.value.message
        ev.next_event(match=lambda x: x["type"] == "vgpu.failed")
        v = vgpus(d)[vf]
        assert v["present"] and v["phase"] == "created" and k.current(vf) == 1147
        k.hold_vf(vf, False)
        # A stale release (an older owner generation) is refused.
        with pytest.raises(RpcError) as e:
            call(d, "vgpu.clear", {"address": vf, "generation": gen - 1})
        assert e.value.code == -32003 and "stale" in e.value.message
        assert call(d, "vgpu.clear", {"address": vf, "generation": gen}) == {"address": vf, "removed": True}
        assert k.current(vf) == 0 and vf not in vgpus(d)
        plugin.wait_devices(lambda x: x == [])
        wait_until(lambda: len(call(d, "vgpu.types", {"parent": A100_VFS[1]})["parents"][0]["types"]) == len(A100_TYPES),
                   what="the catalogues back")
        ev.close()
    finally:
        kubelet.stop()


def test_vf_drift_kill9_and_reboot(vhost):
    d, k = vhost("dell-190", extra=[add_a100_vgpu])
    vf = A100_VFS[1]
    call(d, "vgpu.set_type", {"address": vf, "type": "1148", "resource_name": "example.com/a100"})
    # Each write is applied by the simulation before the next one is made
    # (it reads the file when it takes a write, as a register).
    applied(k, ("set", vf, 1148), 1)
    ev = d.client(timeout=15)
    ev.call("events.subscribe", {"types": ["vgpu"]})
    # Cleared by hand (a driver reload does the same): drift, set again.
    k.set_type_by_hand(vf, 0)
    applied(k, ("clear", vf, 1148), 1)
    call(d, "vgpu.reconcile")
    ev.next_event(match=lambda x: x["type"] == "vgpu.drift")
    applied(k, ("set", vf, 1148), 2)
    assert k.current(vf) == 1148 and settled(d, vf)["healthy"]
    # Another type by hand: drift reported, not undone.
    k.set_type_by_hand(vf, 0)
    applied(k, ("clear", vf, 1148), 2)
    k.set_type_by_hand(vf, 1149)
    applied(k, ("set", vf, 1149), 1)
    call(d, "vgpu.reconcile")
    e = ev.next_event(match=lambda x: x["type"] == "vgpu.drift" and "1149" in json.dumps(x))
    assert k.current(vf) == 1149
    ev.close()
    k.set_type_by_hand(vf, 0)
    wait_until(lambda: k.log[-1] == ("clear", vf, 1149), what="cleared")
    # Kill between intent and write: the type is set once at start.
    d.stop()
    rewrite_state(d, lambda s: s["modules"]["vgpu"]["vgpus"][0].update(phase="creating"))
    d.start()
    wait_until(lambda: k.current(vf) == 1148 and vgpus(d)[vf]["phase"] == "created", what="set at start")
    applied(k, ("set", vf, 1148), 3)
    # Kill during a clear: finished at start.
    d.stop()
    rewrite_state(d, lambda s: s["modules"]["vgpu"]["vgpus"][0].update(phase="removing"))
    d.start()
    wait_until(lambda: k.current(vf) == 0 and vf not in vgpus(d), what="clear finished")
    applied(k, ("clear", vf, 1148), 3)
    # Reboot: the types are gone; they come back with the same resource.
    call(d, "vgpu.set_type", {"address": vf, "type": "1148", "resource_name": "example.com/a100"})
    d.stop()
    k.stop()
    shutil.rmtree(d.root)
    build("dell-190", d.root, [add_a100_vgpu])
    rewrite_state(d, lambda s: s.update(boot_id="00000000-0000-0000-0000-000000000000"))
    k2 = SimVgpuKernel(d.root)
    try:
        d.start()
        wait_until(lambda: k2.current(vf) == 1148, what="the type set after the reboot")
        res = resources(d)
        assert [m["id"] for m in res["example.com/a100"]["devices"]] == [vf]
    finally:
        d.stop()
        k2.stop()


def test_vf_config_rule(vhost):
    config = {"vgpu": {"devices": [{"gpu": "10de:20f1", "type": "GRID A100-2-10C", "count": 2}]}}
    d, k = vhost("dell-190", extra=[add_a100_vgpu], config=config)
    wait_until(lambda: [k.current(v) for v in A100_VFS] == [1148, 1148, 0, 0],
               what=f"two VFs typed: {k.log}")
    wait_until(lambda: len(vgpus(d)) == 2 and all(v["present"] for v in vgpus(d).values()),
               what="both present")
    res = resources(d)
    assert sorted(m["id"] for m in res["nvidia.com/GRID_A100-2-10C"]["devices"]) == A100_VFS[:2]


# --- VFs of an NVIDIA GPU (sriov-manage's steps) ------------------------------------

A100_PF = "0000:04:00.0"


def a100_vf_bdf(i):
    return f"0000:04:{(4 + i) // 8:02x}.{(4 + i) % 8}"


def drop_a100_vfs(t, numvfs=True):
    """The A100 as after a boot: SR-IOV off, no VFs; pci-pf-stub loaded."""
    prel = t.devices[A100_PF]
    for link in sorted(os.listdir(t.path(prel))):
        if link.startswith("virtfn"):
            vrel = os.path.relpath(os.path.realpath(t.path(f"{prel}/{link}")), t.sys)
            vf = os.path.basename(vrel)
            group = os.path.basename(os.readlink(t.path(f"{vrel}/iommu_group")))
            os.unlink(t.path(f"bus/pci/devices/{vf}"))
            drv = t.path(f"bus/pci/drivers/nvidia/{vf}")
            if os.path.lexists(drv):
                os.unlink(drv)
            shutil.rmtree(t.path(f"kernel/iommu_groups/{group}"))
            shutil.rmtree(t.path(vrel))
            os.unlink(t.path(f"{prel}/{link}"))
    if numvfs:
        t.write(f"{prel}/sriov_numvfs", "0\n")
    t.driver_dir("pci", "pci-pf-stub")


def make_a100_vfs(root):
    """The kernel's part of sriov_numvfs for the A100: VFs with their vGPU
    catalogues, unbound (sriov-manage binds them), or none."""
    def make(pf, n):
        t = hdtest.simhost.Tree(root)
        prel = os.path.relpath(os.path.realpath(os.path.join(t.sys, "bus/pci/devices", pf)), t.sys)
        t.devices[pf] = prel
        bridge = os.path.dirname(prel)
        t.devices[os.path.basename(bridge)] = bridge
        if n == 0:
            drop_a100_vfs(t, numvfs=False)     # the write was the kernel's input
            return
        for i in range(n):
            bdf = a100_vf_bdf(i)
            t.pci(bdf, 0x10de, 0x20f1, 0x030200, parent=os.path.basename(bridge), group=117 + i,
                  numa=1, svendor=0x10de, sdevice=0x145f)
            t.nvidia_vgpu_vf(bdf, A100_TYPES)
            t.link(f"{prel}/virtfn{i}", t.devices[bdf])
            t.link(f"{t.devices[bdf]}/physfn", prel)
    return make


def test_enable_and_disable_vfs(make_daemon):
    d = make_daemon(host=None, start=False)
    build("dell-190", d.root, [drop_a100_vfs])
    pk = SimKernel(d.root)
    vk = SimVgpuKernel(d.root, make_vfs=make_a100_vfs(d.root))
    try:
        d.start()
        r = call(d, "vgpu.enable_vfs", {"gpu": A100_PF}, timeout=60)
        vfs = [a100_vf_bdf(i) for i in range(16)]
        assert r["num_vfs"] == 16
        assert r["steps"][:5] == [f"unbind {A100_PF} from nvidia", f"bind {A100_PF} to pci-pf-stub",
                                  f"{A100_PF}: sriov_numvfs 16", f"unbind {A100_PF} from pci-pf-stub",
                                  f"bind {A100_PF} to nvidia"]
        assert r["steps"][5:] == [f"bind VF {vf} to nvidia" for vf in vfs], (r["steps"], pk.log, vk.log)
        assert pk.driver_of(A100_PF) == "nvidia" and all(pk.driver_of(vf) == "nvidia" for vf in vfs)
        assert [x for x in pk.log if x[1] == A100_PF] == [
            ("unbind", A100_PF, "nvidia"), ("bind", A100_PF, "pci-pf-stub"),
            ("unbind", A100_PF, "pci-pf-stub"), ("bind", A100_PF, "nvidia")]
        # Already on: nothing is done.
        assert call(d, "vgpu.enable_vfs", {"gpu": A100_PF})["steps"] == [f"{A100_PF} already has VFs"]
        call(d, "daemon.rescan")
        r = call(d, "vgpu.set_type", {"address": vfs[3], "type": "GRID A100-7-40C"})
        assert r["present"] and vk.current(vfs[3]) == 1151
        # A VF with a type: the VFs stay.
        with pytest.raises(RpcError) as e:
            call(d, "vgpu.disable_vfs", {"gpu": A100_PF})
        assert e.value.code == -32003 and vfs[3] in e.value.message
        call(d, "vgpu.clear", {"address": vfs[3]})
        with pytest.raises(RpcError) as e:
            call(d, "vgpu.enable_vfs", {"gpu": "0000:01:00.0"})
        assert e.value.code == -32003 and "not an NVIDIA GPU" in e.value.message
        assert call(d, "vgpu.disable_vfs", {"gpu": A100_PF})["steps"] == [f"{A100_PF}: sriov_numvfs 0"]
        wait_until(lambda: not os.path.lexists(os.path.join(d.sysfs, "bus/pci/devices", vfs[0])),
                   what=f"the VFs gone {vk.log} {vk.thread.is_alive()}")
    finally:
        vk.stop()
        pk.stop()


def test_vf_allocate_follows_the_iommufd_policy(vhost):
    config = {"resources": {"rules": [{"vendor": "10de", "device": "20f1", "iommu": "prefer-iommufd"}]}}
    d, k = vhost("dell-190", extra=[add_a100_vgpu], config=config, start=False)
    open(os.path.join(d.devroot, "iommu"), "w").close()
    kubelet = Kubelet(d.kubelet)
    try:
        d.start()
        vf = A100_VFS[2]
        call(d, "vgpu.set_type", {"address": vf, "type": "GRID A100-1-5C"})
        plugin = kubelet.wait_registered(A100_5C)
        plugin.wait_devices(lambda x: x == [(vf, "Healthy", [1])])
        resp = plugin.allocate([vf]).container_responses[0]
        assert dict(resp.envs) == {"PCI_RESOURCE_NVIDIA_COM_GRID_A100-1-5C": vf}
        assert [s.host_path for s in resp.devices] == ["/dev/iommu", "/dev/vfio/devices/vfio119"]
    finally:
        kubelet.stop()


def vf_host(d):
    """dell-190 as after a boot (A100 without VFs), its kernels started."""
    build("dell-190", d.root, [drop_a100_vfs])
    return SimKernel(d.root), SimVgpuKernel(d.root, make_vfs=make_a100_vfs(d.root))


def test_enabled_vfs_come_back_before_their_types(make_daemon):
    d = make_daemon(host=None, start=False)
    pk, vk = vf_host(d)
    vfs = [a100_vf_bdf(i) for i in range(16)]
    vf = vfs[3]
    try:
        d.start()
        call(d, "vgpu.enable_vfs", {"gpu": A100_PF}, timeout=60)
        assert state_section(d)["vf_gpus"] == [{"gpu": A100_PF, "driver": "nvidia", "phase": "enabled"}]
        call(d, "daemon.rescan")
        call(d, "vgpu.set_type", {"address": vf, "type": "1148", "resource_name": "example.com/a100"})
        assert vk.current(vf) == 1148
        # Disabled by hand: drift, enabled again, then the type again.
        ev = d.client(timeout=60)
        ev.call("events.subscribe", {"types": ["vgpu"]})
        with open(os.path.join(d.sysfs, "bus/pci/devices", A100_PF, "sriov_numvfs"), "w") as f:
            f.write("0")
        applied(vk, ("numvfs", A100_PF, 0), 1)
        call(d, "vgpu.reconcile")
        e = ev.next_event(match=lambda x: x["type"] == "vgpu.drift")
        assert e["gpu"] == A100_PF and "enabling them again" in e["error"], e
        ev.next_event(match=lambda x: x["type"] == "vgpu.vfs_enabled")
        applied(vk, ("numvfs", A100_PF, 16), 2)
        applied(vk, ("set", vf, 1148), 2)
        ev.close()
        n = vk.log.index(("numvfs", A100_PF, 16), vk.log.index(("numvfs", A100_PF, 0)))
        assert vk.log.index(("set", vf, 1148), n) > n and vk.current(vf) == 1148, vk.log
        assert pk.driver_of(A100_PF) == "nvidia" and all(pk.driver_of(v) == "nvidia" for v in vfs)
    finally:
        d.stop()
        vk.stop()
        pk.stop()
    # The reboot: a new tree without VFs, the same state.json, another boot id.
    shutil.rmtree(d.root)
    pk, vk = vf_host(d)
    rewrite_state(d, lambda s: s.update(boot_id="00000000-0000-0000-0000-000000000000"))
    try:
        d.start()
        applied(vk, ("set", vf, 1148), 1)
        assert vk.current(vf) == 1148
        assert vk.log.index(("numvfs", A100_PF, 16)) < vk.log.index(("set", vf, 1148))
        assert pk.driver_of(A100_PF) == "nvidia" and all(pk.driver_of(v) == "nvidia" for v in vfs)
        call(d, "daemon.rescan")
        wait_until(lambda: [m["id"] for m in resources(d).get("example.com/a100", {}).get("devices", [])]
                   == [vf], what="the VF offered under its resource again")
        assert state_section(d)["vf_gpus"][0]["phase"] == "enabled"
        # Disabled: the record goes, and nothing comes back at the next check.
        call(d, "vgpu.clear", {"address": vf})
        call(d, "vgpu.disable_vfs", {"gpu": A100_PF})
        assert state_section(d)["vf_gpus"] == []
        call(d, "vgpu.reconcile")
        assert vk.log.count(("numvfs", A100_PF, 16)) == 1
    finally:
        d.stop()
        vk.stop()
        pk.stop()


def driver_of(pk, addr):
    """pk.driver_of, for a link that may change between its two looks."""
    try:
        return pk.driver_of(addr)
    except OSError:
        return "(changing)"


def test_enable_vfs_killed_is_finished_at_start(make_daemon):
    d = make_daemon(host=None, start=False)
    pk, vk = vf_host(d)
    vfs = [a100_vf_bdf(i) for i in range(16)]
    pfdir = os.path.join(d.sysfs, "bus/pci/devices", A100_PF)
    try:
        d.start()
        call(d, "vgpu.enable_vfs", {"gpu": A100_PF}, timeout=60)
        call(d, "daemon.rescan")
        call(d, "vgpu.set_type", {"address": vfs[0], "type": "1147"})
        d.stop()
        # Killed between the intent and the first write: enabled at start,
        # then the type.
        with open(os.path.join(pfdir, "sriov_numvfs"), "w") as f:
            f.write("0")
        applied(vk, ("numvfs", A100_PF, 0), 1)
        wait_until(lambda: not any(os.path.lexists(os.path.join(d.sysfs, "bus/pci/devices", v))
                                   for v in vfs), what="the VFs gone from sysfs")
        rewrite_state(d, lambda s: s["modules"]["vgpu"]["vf_gpus"][0].update(phase="enabling"))
        d.start()
        wait_until(lambda: vk.current(vfs[0]) == 1147, timeout=40, what=f"enabled and typed at start: {vk.log}")
        wait_until(lambda: state_section(d)["vf_gpus"][0]["phase"] == "enabled", what="the outcome")
        assert all(driver_of(pk, v) == "nvidia" for v in vfs)
        d.stop()
        # Killed after sriov_numvfs: the PF left on pci-pf-stub, the VFs on
        # no driver and without their type. Start finishes the steps.
        with open(os.path.join(pfdir, "sriov_numvfs"), "w") as f:
            f.write("0")
        applied(vk, ("numvfs", A100_PF, 0), 2)
        wait_until(lambda: not any(os.path.lexists(os.path.join(d.sysfs, "bus/pci/devices", v))
                                   for v in vfs), what="the VFs gone from sysfs")
        with open(os.path.join(d.sysfs, "bus/pci/drivers/nvidia/unbind"), "w") as f:
            f.write(A100_PF)
        wait_until(lambda: driver_of(pk, A100_PF) is None, what="unbound by hand")
        with open(os.path.join(d.sysfs, "bus/pci/drivers/pci-pf-stub/bind"), "w") as f:
            f.write(A100_PF)
        wait_until(lambda: driver_of(pk, A100_PF) == "pci-pf-stub", what="on pci-pf-stub")
        with open(os.path.join(pfdir, "sriov_numvfs"), "w") as f:
            f.write("16")
        applied(vk, ("numvfs", A100_PF, 16), 3)
        # The simulated kernel logs the write before the VFs are all in
        # sysfs: the daemon must find them at its coldplug scan.
        wait_until(lambda: all(os.path.exists(os.path.join(d.sysfs, "bus/pci/devices", v)) for v in vfs),
                   what="the 16 VFs in sysfs")
        pk.rescan()
        assert driver_of(pk, vfs[0]) is None
        rewrite_state(d, lambda s: s["modules"]["vgpu"]["vf_gpus"][0].update(phase="enabling"))
        d.start()
        wait_until(lambda: driver_of(pk, A100_PF) == "nvidia" and all(driver_of(pk, v) == "nvidia" for v in vfs),
                   timeout=40, what=f"the steps finished: {pk.log[-6:]}")
        wait_until(lambda: vk.current(vfs[0]) == 1147, what="the type after the VFs")
        wait_until(lambda: state_section(d)["vf_gpus"][0]["phase"] == "enabled", what="the outcome")
        assert vk.log.count(("numvfs", A100_PF, 16)) == 3, vk.log
    finally:
        d.stop()
        vk.stop()
        pk.stop()
