# SPDX-License-Identifier: MIT
"""modules/mig against the fake libnvidia-ml.so.1 (test/fakenvml): the real
daemon loads it in its worker and drives a MIG state machine with A100 and
H100 profile tables. Apply, idempotent re-apply, other creation orders on
fragmentation, pending reset, reboot re-apply, drift repair, refusals, the
deadline, kill -9 mid-apply, MIG devices for containers."""

import json
import os
import shutil
import signal
import sys
import zlib

import pytest

import hdtest
from kubelet import Kubelet

sys.path.insert(0, os.path.join(hdtest.SRCDIR, "test", "fakenvml"))
import fakenvml  # noqa: E402

LIB = fakenvml.library(hdtest.BUILDDIR)
A100 = "0000:04:00.0"       # dell-190's A100-PCIE-40GB, with vGPU VFs
H100 = "0000:65:00.0"
A100_80 = "0000:17:00.0"    # on vfio-pci: passed through
H200 = "0000:ca:00.0"
BUSY = -32005
REFUSED = -32003
FAILED = -32010

pytestmark = pytest.mark.skipif(not os.path.exists(LIB),
                                reason="the fake libnvidia-ml is built by `make check`")


def module_dir(tmp, extra=(), first=None):
    """The modules a test loads; `first` ("vgpu.so") is copied under a name
    that sorts first, so that it is loaded and started before the others."""
    d = os.path.join(tmp, "modules")
    os.makedirs(d, exist_ok=True)
    for name in ("pci.so", "usb.so", "mig.so") + tuple(extra):
        to = "0-" + name if name == first else name
        shutil.copy(os.path.join(hdtest.MODULE_DIR, name), os.path.join(d, to))
        os.chmod(os.path.join(d, to), 0o755)
    return d


class Host:
    """dell-190 with an H100 and a passed-through A100-80GB added, and the
    fake NVML reporting the three GPUs at the same addresses."""

    def __init__(self, tmp):
        self.root = os.path.join(tmp, "host")
        self.tree = self.build_tree(self.root)
        self.nvml = fakenvml.FakeNvml(os.path.join(tmp, "nvml.json"))
        self.nvml.add_gpu(A100, "A100-40GB", 0)
        self.nvml.add_gpu(H100, "H100-80GB", 1, mig=1)
        self.nvml.add_gpu(A100_80, "A100-80GB", 2, mig=1, gis=[
            {"id": 1, "profile_id": 0, "start": 0, "size": 8,
             "cis": [{"id": 0, "profile_id": 4, "start": 0, "size": 7,
                      "uuid": "MIG-00000000-0000-0000-0000-000000000001"}]}])
        self.nvml.add_gpu(H200, "H200-141GB", 3)

    @staticmethod
    def build_tree(root):
        t = hdtest.simhost.build("dell-190", root)
        t.pci("0000:60:00.0", 0x8086, 0x2032, 0x060400, driver="pcieport", group=60, numa=1)
        t.pci(H100, 0x10de, 0x2330, 0x030200, parent="0000:60:00.0", driver="nvidia",
              group=61, numa=1, svendor=0x10de, sdevice=0x16c1)
        t.pci(A100_80, 0x10de, 0x20b5, 0x030200, driver="vfio-pci", group=62, numa=0)
        t.pci(H200, 0x10de, 0x2335, 0x030200, driver="nvidia", group=63, numa=1)
        return t


@pytest.fixture
def host(tmp_path):
    return Host(str(tmp_path))


@pytest.fixture
def mig_daemon(make_daemon, host, tmp_path):
    def factory(mig=None, start=True):
        conf = {"nvml_library": LIB, "check_interval_ms": 0}
        conf.update(mig or {})
        return make_daemon(tree=host.root, config={"mig": conf}, start=start,
                           env={"FAKE_NVML_STATE": host.nvml.path},
                           extra_args=["--module-dir", module_dir(str(tmp_path))])
    return factory


def gpus(d):
    return {g["bus_id"]: g for g in d.call("mig.list")["gpus"]}


def fake_reboot(d):
    """state.json as another boot wrote it."""
    path = os.path.join(d.state, "state.json")
    with open(path) as f:
        state = json.load(f)
    state.pop("checksum")
    state["boot_id"] = "00000000-0000-0000-0000-000000000000"
    canon = json.dumps(state, sort_keys=True, separators=(",", ":")).encode()
    state["checksum"] = "crc32:%08x" % zlib.crc32(canon)
    with open(path, "w") as f:
        json.dump(state, f)


def record(d, bus):
    with open(os.path.join(d.state, "state.json")) as f:
        return json.load(f)["modules"]["mig"]["gpus"][bus]


# --- without NVML ---------------------------------------------------------------

def test_without_library_inactive_with_reason(make_daemon, tmp_path):
    d = make_daemon(config={"mig": {"nvml_library": str(tmp_path / "libnvidia-ml.so.1")}},
                    extra_args=["--module-dir", module_dir(str(tmp_path))])
    r = d.call("mig.list")
    assert r["nvml"]["loaded"] is False and r["gpus"] == []
    assert "cannot load" in r["nvml"]["error"] and "libnvidia-ml.so.1" in r["nvml"]["error"]
    with pytest.raises(hdtest.RpcError) as e:
        d.call("mig.apply", {"gpu": A100, "layout": {"1g.5gb": 1}})
    assert e.value.code == FAILED and "cannot load" in e.value.message
    # Nothing else changes: the daemon's own devices are all there.
    assert any(x["address"] == A100 for x in d.call("devices.list", {"class": "pci"}))
    # modules.list says the module cannot work, and why (ABI 2.1 set_ready).
    mig = next(m for m in d.call("modules.list") if m["name"] == "mig")
    assert mig["active"] is True and mig["ready"] is False, mig
    assert "cannot load" in mig["reason"] and "libnvidia-ml.so.1" in mig["reason"], mig


# --- listing ----------------------------------------------------------------------

def test_list_matches_profile_tables(mig_daemon, host):
    d = mig_daemon()
    r = d.call("mig.list")
    assert r["nvml"] == {"loaded": True, "library": LIB, "driver_version": "550.90.07",
                         "error": None}
    mig = next(m for m in d.call("modules.list") if m["name"] == "mig")
    assert mig["ready"] is True and mig["reason"] is None, mig
    g = {x["bus_id"]: x for x in r["gpus"]}
    assert set(g) == {A100, H100, A100_80, H200}
    for bus, model in ((A100, "A100-40GB"), (H100, "H100-80GB"), (A100_80, "A100-80GB"),
                       (H200, "H200-141GB")):
        assert g[bus]["mig_capable"] and g[bus]["inventory"]
        prof = {p["id"]: (p["name"], p["instances"]) for p in g[bus]["profiles"]}
        assert prof == fakenvml.PROFILES[model], bus
    a = g[A100]
    assert a["name"] == "NVIDIA A100-PCIE-40GB" and a["uuid"].startswith("GPU-")
    assert a["mode"] == {"current": False, "pending": False} and a["status"] == "unmanaged"
    assert a["driver"] == "nvidia" and a["desired"] is None
    p3 = next(p for p in a["profiles"] if p["name"] == "3g.20gb")
    assert p3["placements"] == [{"start": 0, "size": 4}, {"start": 4, "size": 4}]
    assert p3["memory_mb"] == 19968 and p3["slices"] == 3
    # The passed-through GPU's one instance, with its MIG device UUID.
    gi = g[A100_80]["gpu_instances"]
    assert [(x["profile"], x["compute_instances"][0]["uuid"]) for x in gi] == \
        [("7g.80gb", "MIG-00000000-0000-0000-0000-000000000001")]
    assert d.call("mig.list", {"gpu": H100})["gpus"][0]["bus_id"] == H100
    # The versioned names, where the library has them.
    calls = host.nvml.read()["calls"]
    assert calls["nvmlInit_v2"] >= 1 and "nvmlInit" not in calls
    assert calls["nvmlDeviceGetGpuInstanceProfileInfoV"] >= 1
    assert "nvmlDeviceGetGpuInstanceProfileInfo" not in calls


def test_older_library_plain_names(mig_daemon, host):
    """An older driver's library without nvmlInit_v2, ..._v3 and the "V"
    profile calls: the plain names give the same GPUs and names."""
    d = mig_daemon({"nvml_library": LIB.replace("/fakenvml/", "/fakenvml/old/")})
    g = gpus(d)
    for bus, model in ((A100, "A100-40GB"), (H200, "H200-141GB")):
        assert {p["id"]: (p["name"], p["instances"]) for p in g[bus]["profiles"]} == \
            fakenvml.PROFILES[model], bus
    # Without the "V" call there is no name: it is made from the memory, and
    # the full H100 (80896 MiB in the fake) reads 7g.79gb where the driver
    # says 7g.80gb. Ids and counts are NVML's own.
    assert {p["id"]: p["instances"] for p in g[H100]["profiles"]} == \
        {k: v[1] for k, v in fakenvml.PROFILES["H100-80GB"].items()}
    assert d.call("mig.apply", {"gpu": H100, "layout": {"3g.40gb": 2}})["changed"] is True
    assert host.nvml.layout(H100) == [(9, 0, 1), (9, 4, 1)]
    # Without the vGPU calls (optional symbols): no such data, no error.
    g = gpus(d)[H100]
    assert [gi["vgpu_types"] for gi in g["gpu_instances"]] == [None, None]
    assert g["status"] == "synced" and "error" not in g
    calls = host.nvml.read()["calls"]
    assert calls["nvmlInit"] >= 1 and "nvmlInit_v2" not in calls
    assert calls["nvmlDeviceGetPciInfo_v2"] >= 1 and "nvmlDeviceGetPciInfo_v3" not in calls
    assert calls["nvmlDeviceGetGpuInstanceProfileInfo"] >= 1
    assert "nvmlDeviceGetGpuInstanceProfileInfoV" not in calls


# --- applying -----------------------------------------------------------------------

def test_apply_then_idempotent_reapply(mig_daemon, host):
    d = mig_daemon()
    c = d.client()
    c.call("events.subscribe", {"types": ["mig"]})
    r = c.call("mig.apply", {"gpu": H100, "layout": {"1g.10gb": 7}})
    assert r["changed"] is True and r["status"] == "synced"
    ev = c.next_event(match=lambda e: e["type"] == "mig.applied")
    assert ev["gpu"] == H100 and ev["layout"] == [{"profile": "1g.10gb"}] * 7
    assert host.nvml.layout(H100) == [(19, s, 1) for s in range(7)]
    g = gpus(d)[H100]
    assert g["status"] == "synced" and g["source"] == "api"
    uuids = [gi["compute_instances"][0]["uuid"] for gi in g["gpu_instances"]]
    assert len(set(uuids)) == 7 and all(u.startswith("MIG-") for u in uuids)
    before = host.nvml.mutations()
    # Again, by UUID and in the list form: nothing destroyed or created.
    r = c.call("mig.apply", {"gpu": g["uuid"], "layout": ["1g.10gb"] * 7})
    assert r["changed"] is False and r["status"] == "synced"
    assert host.nvml.mutations() == before
    assert [gi["compute_instances"][0]["uuid"] for gi in gpus(d)[H100]["gpu_instances"]] == uuids
    assert record(d, H100)["phase"] == "applied"
    c.close()


def test_apply_enables_mig_mode_ampere(mig_daemon, host):
    d = mig_daemon()
    r = d.call("mig.apply", {"gpu": A100, "layout": {"3g.20gb": 2}})
    assert r["changed"] is True
    g = host.nvml.gpu(A100)
    assert g["mig_current"] == 1 and host.nvml.layout(A100) == [(9, 0, 1), (9, 4, 1)]
    assert gpus(d)[A100]["status"] == "synced"


def test_fragmentation_tries_other_orders(mig_daemon, host):
    """Largest first puts 3g.40gb at slice 0; four 1g.10gb then do not fit
    (slice 7 is no 1g placement): another order does."""
    d = mig_daemon()
    r = d.call("mig.apply", {"gpu": H100, "layout": {"3g.40gb": 1, "1g.10gb": 4}})
    assert r["changed"] is True and r["attempts"] > 1
    assert host.nvml.layout(H100) == [(9, 4, 1), (19, 0, 1), (19, 1, 1), (19, 2, 1), (19, 3, 1)]
    assert gpus(d)[H100]["status"] == "synced"


def test_explicit_placements(mig_daemon, host):
    d = mig_daemon()
    d.call("mig.apply", {"gpu": H100, "layout": [{"profile": "3g.40gb", "placement": 4},
                                                 {"profile": "2g.20gb", "placement": 0}]})
    assert host.nvml.layout(H100) == [(9, 4, 1), (14, 0, 1)]


def test_impossible_layout_leaves_gpu_empty(mig_daemon, host):
    d = mig_daemon()
    d.call("mig.apply", {"gpu": H100, "layout": {"7g.80gb": 1}})
    c = d.client()
    c.call("events.subscribe", {"types": ["mig.failed"]})
    # 4 + 3 + 1 compute slices of 7: no order fits.
    with pytest.raises(hdtest.RpcError) as e:
        c.call("mig.apply", {"gpu": H100, "layout": {"4g.40gb": 1, "3g.40gb": 1, "1g.10gb": 1}})
    assert e.value.code == FAILED
    assert "Insufficient Resources" in e.value.message and "left empty" in e.value.message
    assert "every other creation order" in e.value.message
    assert host.nvml.layout(H100) == []
    ev = c.next_event()
    assert ev["type"] == "mig.failed" and ev["gpu"] == H100
    g = gpus(d)[H100]
    assert g["status"] == "error" and "left empty" in g["error"]
    assert record(d, H100)["phase"] == "failed"
    c.close()


def test_unknown_profile_changes_nothing(mig_daemon, host):
    d = mig_daemon()
    d.call("mig.apply", {"gpu": H100, "layout": {"2g.20gb": 1}})
    before = host.nvml.mutations()
    with pytest.raises(hdtest.RpcError) as e:
        d.call("mig.apply", {"gpu": H100, "layout": {"1g.5gb": 1}})
    assert e.value.code == -32602 and 'no MIG profile "1g.5gb"' in e.value.message
    assert host.nvml.mutations() == before
    for bad in ({"1g.10gb": 8}, {"1g 10gb": 1}, [{"profile": "1g.10gb", "placement": 9}]):
        with pytest.raises(hdtest.RpcError) as e:
            d.call("mig.apply", {"gpu": H100, "layout": bad})
        assert e.value.code == -32602, bad
    # No GPU there: nothing recorded, the list unchanged.
    with pytest.raises(hdtest.RpcError) as e:
        d.call("mig.apply", {"gpu": "0000:99:00.0", "layout": {"1g.10gb": 1}})
    assert e.value.code == -32004 and "NVML does not see a GPU" in e.value.message
    assert set(gpus(d)) == {A100, H100, A100_80, H200}


def test_clear_removes_every_instance(mig_daemon, host):
    d = mig_daemon()
    d.call("mig.apply", {"gpu": H100, "layout": {"2g.20gb": 3}})
    assert len(host.nvml.layout(H100)) == 3
    r = d.call("mig.clear", {"gpu": H100})
    assert r["changed"] is True
    assert host.nvml.layout(H100) == [] and host.nvml.gpu(H100)["mig_current"] == 1
    assert gpus(d)[H100]["status"] == "synced"
    # MIG off (Hopper: no reset needed).
    d.call("mig.apply", {"gpu": H100, "layout": {"1g.10gb": 1}})
    assert d.call("mig.apply", {"gpu": H100, "enabled": False})["changed"] is True
    assert host.nvml.gpu(H100)["mig_current"] == 0 and host.nvml.layout(H100) == []
    g = gpus(d)[H100]
    assert g["status"] == "synced" and g["desired"] == {"enabled": False, "layout": []}


# --- reset rules ----------------------------------------------------------------------

@pytest.mark.parametrize("how,reset", [("in_use", "gpu"), ("reset_required", "reboot")])
def test_ampere_mode_change_pending_reset(mig_daemon, host, how, reset):
    host.nvml.set_gpu(A100, mode_change=how)
    d = mig_daemon()
    c = d.client()
    c.call("events.subscribe", {"types": ["mig"]})
    r = c.call("mig.apply", {"gpu": A100, "layout": {"1g.5gb": 7}})
    assert r == {"changed": True, "status": "pending-reset", "gpu": A100, "reset": reset}
    ev = c.next_event(match=lambda e: e["type"] == "mig.pending_reset")
    assert ev["gpu"] == A100 and ev["reset"] == reset
    g = gpus(d)[A100]
    assert g["status"] == "pending-reset" and g["reset"] == reset
    assert g["mode"] == {"current": False, "pending": True}
    assert ("nvidia-smi -r -i " + A100 in g["hint"]) if reset == "gpu" else "reboot" in g["hint"]
    assert host.nvml.layout(A100) == []
    # hostdevd never resets the GPU itself; once someone has, it applies.
    host.nvml.reset(A100)
    d.call("mig.reconcile")
    ev = c.next_event(match=lambda e: e["type"] == "mig.applied")
    assert ev["gpu"] == A100
    assert host.nvml.layout(A100) == [(19, s, 1) for s in range(7)]
    assert gpus(d)[A100]["status"] == "synced"
    c.close()


def test_reboot_reapplies_layouts_and_hopper_mode(mig_daemon, host):
    d = mig_daemon()
    d.call("mig.apply", {"gpu": H100, "layout": {"3g.40gb": 2}})
    d.call("mig.apply", {"gpu": A100, "layout": {"2g.10gb": 3}})
    d.stop()
    host.nvml.reboot()
    assert host.nvml.gpu(H100)["mig_current"] == 0 and host.nvml.layout(A100) == []
    fake_reboot(d)
    d.start()
    hdtest.wait_until(lambda: all(gpus(d)[b]["status"] == "synced" for b in (A100, H100)),
                      what="layouts re-applied after the reboot")
    assert host.nvml.gpu(H100)["mig_current"] == 1
    assert host.nvml.layout(H100) == [(9, 0, 1), (9, 4, 1)]
    assert host.nvml.layout(A100) == [(14, 0, 1), (14, 2, 1), (14, 4, 1)]
    assert "drift" not in d.log_text()


def test_configured_layout_applied_at_start(mig_daemon, host):
    d = mig_daemon({"gpus": [{"gpu": "10de:2330", "layout": {"2g.20gb": 3}},
                             {"gpu": "all", "enabled": False}]})
    hdtest.wait_until(lambda: gpus(d)[H100]["status"] == "synced", what="configured layout")
    g = gpus(d)
    assert g[H100]["source"] == "config" and host.nvml.layout(H100) == \
        [(14, 0, 1), (14, 2, 1), (14, 4, 1)]
    # "all" (MIG off) matched the A100, which already has MIG off.
    assert g[A100]["status"] == "synced" and g[A100]["desired"]["enabled"] is False
    # The API's layout wins over the configuration until mig.forget.
    d.call("mig.apply", {"gpu": H100, "layout": {"7g.80gb": 1}})
    d.call("mig.reconcile")
    assert host.nvml.layout(H100) == [(0, 0, 1)]
    d.call("mig.forget", {"gpu": H100})
    hdtest.wait_until(lambda: host.nvml.layout(H100) == [(14, 0, 1), (14, 2, 1), (14, 4, 1)],
                      what="the configuration's layout back")


@pytest.mark.parametrize("conf,message", [
    ({"gpus": [{"gpu": "nvidia"}]}, "mig.gpus[0].gpu"),
    ({"gpus": [{"gpu": "all", "layout": {"1g.10gb": 9}}]}, "mig.gpus[0].layout.1g.10gb"),
    ({"gpus": [{"gpu": "all", "enabled": False, "layout": {"1g.10gb": 1}}]}, "needs MIG mode"),
    ({"timeout": 5}, "mig.timeout: unknown key"),
])
def test_bad_configuration_refused(mig_daemon, conf, message):
    d = mig_daemon(conf, start=False)
    args = d.args(1)
    i = args.index("--ready-fd")
    del args[i:i + 2]
    r = hdtest.subprocess.run(args, capture_output=True, text=True, timeout=30,
                              env=hdtest.sanitizer_env())
    assert r.returncode != 0 and message in r.stderr, r.stderr


# --- drift ---------------------------------------------------------------------------

def test_drift_is_an_event_and_repaired(mig_daemon, host):
    d = mig_daemon({"check_interval_ms": 200})
    d.call("mig.apply", {"gpu": H100, "layout": {"2g.20gb": 2}})
    c = d.client()
    c.call("events.subscribe", {"types": ["mig"]})
    old = {gi["compute_instances"][0]["uuid"] for gi in gpus(d)[H100]["gpu_instances"]}

    def destroy_one(s):
        g = next(x for x in s["gpus"] if x["bus_id"] == H100)
        g["gis"].pop()
    host.nvml.update(destroy_one)      # nvidia-smi mig -dci/-dgi by hand
    ev = c.next_event(match=lambda e: e["type"] == "mig.drift")
    assert ev["gpu"] == H100 and ev["found"] == "1 GPU instances, 2 wanted"
    assert ev["expected"] == [{"profile": "2g.20gb"}] * 2
    ev = c.next_event(match=lambda e: e["type"] == "mig.applied")
    assert ev["gpu"] == H100
    assert [x[0] for x in host.nvml.layout(H100)] == [14, 14]
    new = {gi["compute_instances"][0]["uuid"] for gi in gpus(d)[H100]["gpu_instances"]}
    assert len(new) == 2 and new != old
    c.close()


# --- refusals: nothing destroyed ----------------------------------------------------------

def test_refused_on_vfio_pci(mig_daemon, host):
    d = mig_daemon()
    with pytest.raises(hdtest.RpcError) as e:
        d.call("mig.apply", {"gpu": A100_80, "layout": {"1g.10gb": 7}})
    assert e.value.code == REFUSED and "vfio-pci" in e.value.message
    assert host.nvml.mutations() == {}
    assert host.nvml.layout(A100_80) == [(0, 0, 1)]


def test_refused_with_vgpus_in_use(mig_daemon, host):
    host.tree.write(host.tree.devices["0000:04:00.5"] + "/nvidia/current_vgpu_type", "542\n")
    d = mig_daemon()
    with pytest.raises(hdtest.RpcError) as e:
        d.call("mig.apply", {"gpu": A100, "layout": {"1g.5gb": 1}})
    assert e.value.code == REFUSED and "0000:04:00.5" in e.value.message
    assert "vGPU" in e.value.message
    assert host.nvml.mutations() == {} and host.nvml.gpu(A100)["mig_current"] == 0
    assert gpus(d)[A100]["status"] == "in-use"


def test_refused_while_processes_run_in_instances(mig_daemon, host):
    d = mig_daemon()
    d.call("mig.apply", {"gpu": H100, "layout": {"3g.40gb": 2}})
    gi = host.nvml.gpu(H100)["gis"][0]["id"]
    host.nvml.set_gpu(H100, processes=[{"pid": os.getpid(), "gi": gi, "ci": 0}])
    before = host.nvml.mutations()
    with pytest.raises(hdtest.RpcError) as e:
        d.call("mig.apply", {"gpu": H100, "layout": {"7g.80gb": 1}})
    assert e.value.code == BUSY and "IN_USE" in e.value.message
    assert '"pid":%d' % os.getpid() in e.value.message.replace(" ", "")
    assert host.nvml.mutations() == before and len(host.nvml.layout(H100)) == 2
    g = gpus(d)[H100]
    assert g["status"] == "in-use" and g["holders"][0]["pid"] == os.getpid()


def test_refused_while_the_device_node_is_held(mig_daemon, host):
    d = mig_daemon()
    node = os.path.join(d.devroot, "nvidia1")
    with open(node, "w"):
        with pytest.raises(hdtest.RpcError) as e:
            d.call("mig.apply", {"gpu": H100, "layout": {"1g.10gb": 1}})
        assert e.value.code == BUSY and str(os.getpid()) in e.value.message
        assert host.nvml.mutations() == {}
        g = gpus(d)[H100]
        assert g["status"] == "in-use" and g["holders"][0]["path"] == node
    assert d.call("mig.apply", {"gpu": H100, "layout": {"1g.10gb": 1}})["changed"] is True


# --- deadlines and crashes --------------------------------------------------------------

def test_hanging_nvml_call_meets_the_deadline(mig_daemon, host):
    host.nvml.set(hang="nvmlDeviceCreateGpuInstance")
    d = mig_daemon({"timeout_ms": 1500})
    with pytest.raises(hdtest.RpcError) as e:
        d.call("mig.apply", {"gpu": H100, "layout": {"1g.10gb": 1}})
    assert e.value.code == FAILED and "within 1500 ms" in e.value.message
    # The daemon goes on; a fresh worker loads NVML again.
    host.nvml.set(hang="")
    assert d.call("mig.apply", {"gpu": H100, "layout": {"1g.10gb": 1}})["changed"] is True
    assert host.nvml.layout(H100) == [(19, 0, 1)]


def children(pid):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(p))
            except (OSError, ValueError, IndexError):
                pass
    return out


def test_kill_9_mid_apply(mig_daemon, host):
    d = mig_daemon({"timeout_ms": 60000})
    d.call("mig.apply", {"gpu": H100, "layout": {"7g.80gb": 1}})
    host.nvml.set(hang="nvmlGpuInstanceCreateComputeInstance")
    c = d.client()
    c.send_raw(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "mig.apply",
                           "params": {"gpu": H100, "layout": {"3g.40gb": 2}}}).encode() + b"\n")
    hdtest.wait_until(lambda: host.nvml.calls("nvmlGpuInstanceCreateComputeInstance") > 1,
                      what="the apply to hang half-way")
    assert record(d, H100)["phase"] == "applying"
    workers = children(d.pid())
    d.proc.kill()
    d.proc.wait()
    for w in workers:
        os.kill(w, signal.SIGKILL)
    c.close()
    d.stop()
    # Half a layout: one 3g.40gb GPU instance, without a compute instance.
    assert host.nvml.layout(H100) == [(9, 0, 0)]
    host.nvml.set(hang="")
    d.start()
    hdtest.wait_until(lambda: gpus(d)[H100]["status"] == "synced", what="re-applied at start")
    assert host.nvml.layout(H100) == [(9, 0, 1), (9, 4, 1)]
    assert record(d, H100)["phase"] == "applied"


# --- containers ---------------------------------------------------------------------------

def test_mig_devices_for_containers(mig_daemon, host):
    d = mig_daemon({"advertise": True}, start=False)
    k = Kubelet(d.kubelet)
    try:
        d.start()
        d.call("mig.apply", {"gpu": H100, "layout": {"1g.10gb": 2, "3g.40gb": 1}})
        g = gpus(d)[H100]
        small = sorted(gi["compute_instances"][0]["uuid"] for gi in g["gpu_instances"]
                       if gi["profile"] == "1g.10gb")
        plugin = k.wait_registered("nvidia.com/mig-1g.10gb")
        devs = plugin.wait_devices(lambda x: len(x) == 2)
        assert sorted(x[0] for x in devs) == small and all(x[1] == "Healthy" for x in devs)
        k.wait_registered("nvidia.com/mig-3g.40gb")
        resp = plugin.allocate([small[0]])
        assert dict(resp.container_responses[0].envs) == {"NVIDIA_VISIBLE_DEVICES": small[0]}
        # Health from NVML: failing, the devices stay, unhealthy; back, healthy.
        host.nvml.set(fail={"nvmlDeviceGetCount_v2": 999})
        d.call("mig.reconcile")
        plugin.wait_devices(lambda x: len(x) == 2 and all(y[1] == "Unhealthy" for y in x))
        assert d.call("mig.list")["nvml"]["error"] == "nvmlDeviceGetCount: Unknown Error"
        host.nvml.set(fail={})
        d.call("mig.reconcile")
        plugin.wait_devices(lambda x: len(x) == 2 and all(y[1] == "Healthy" for y in x))
        d.call("mig.clear", {"gpu": H100})
        plugin.wait_devices(lambda x: x == [])
    finally:
        k.stop()


# --- tools/mig-check -------------------------------------------------------------------

# What nvidia-smi prints for an H100 80GB HBM3 with MIG on and no instances
# (the format of drivers 535-550; ids, names and counts as a real H100
# reported them, REFERENCE-MODULES A.7).
H100_LGIP = """\
+-----------------------------------------------------------------------------+
| GPU instance profiles:                                                      |
| GPU   Name             ID    Instances   Memory     P2P    SM    DEC   ENC  |
|                              Free/Total   GiB              CE    JPEG  OFA  |
|=============================================================================|
|   0  MIG 1g.10gb       19     7/7        9.75       No     16     1     0   |
|                                                             1     1     0   |
+-----------------------------------------------------------------------------+
|   0  MIG 1g.10gb+me    20     1/1        9.75       No     16     1     0   |
|                                                             1     1     1   |
+-----------------------------------------------------------------------------+
|   0  MIG 1g.20gb       15     4/4        19.62      No     26     1     0   |
|                                                             1     1     0   |
+-----------------------------------------------------------------------------+
|   0  MIG 2g.20gb       14     3/3        19.62      No     32     2     0   |
|                                                             2     2     0   |
+-----------------------------------------------------------------------------+
|   0  MIG 3g.40gb        9     2/2        39.38      No     60     3     0   |
|                                                             3     3     0   |
+-----------------------------------------------------------------------------+
|   0  MIG 4g.40gb        5     1/1        39.38      No     64     4     0   |
|                                                             4     4     0   |
+-----------------------------------------------------------------------------+
|   0  MIG 7g.80gb        0     1/1        79.00      No     132    7     0   |
|                                                             8     7     1   |
+-----------------------------------------------------------------------------+
"""

NVIDIA_SMI = '''#!/usr/bin/python3
import sys
a = sys.argv[1:]
if a == ["-q", "-x"]:
    print("""<?xml version="1.0" ?><nvidia_smi_log><gpu id="00000000:65:00.0">
<product_name>NVIDIA H100 80GB HBM3</product_name><uuid>%(uuid)s</uuid>
<minor_number>1</minor_number><mig_mode><current_mig>Enabled</current_mig>
<pending_mig>Enabled</pending_mig></mig_mode></gpu></nvidia_smi_log>""")
elif a == ["mig", "-i", "0", "-lgip"]:
    sys.stdout.write(%(lgip)r)
elif a == ["-L"]:
    print("GPU 0: NVIDIA H100 80GB HBM3 (UUID: %(uuid)s)")
else:
    sys.exit("nvidia-smi stand-in: queries only, not %%s" %% a)
'''


def test_mig_check_agrees_with_recorded_nvidia_smi(mig_daemon, host, tmp_path):
    """tools/mig-check against an nvidia-smi that prints a real H100's
    answers: the fake's H100 table must say what the hardware said."""
    d = mig_daemon()
    uuid = gpus(d)[H100]["uuid"]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    smi = bindir / "nvidia-smi"
    smi.write_text(NVIDIA_SMI % {"uuid": uuid, "lgip": H100_LGIP})
    smi.chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    tool = os.path.join(hdtest.SRCDIR, "tools", "mig-check")
    rec = tmp_path / "h100.json"
    r = hdtest.subprocess.run([tool, "--socket", d.sock, "--record", str(rec)],
                              capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "hostdevd and nvidia-smi agree" in r.stdout and "DIFF" not in r.stdout
    assert json.loads(rec.read_text())[H100]["profiles"]["15"] == ["1g.20gb", 4, 4]
    # A difference is found: an instance nvidia-smi does not show.
    d.call("mig.apply", {"gpu": H100, "layout": {"7g.80gb": 1}})
    r = hdtest.subprocess.run([tool, "--socket", d.sock], capture_output=True, text=True,
                              timeout=60, env=env)
    assert r.returncode == 1 and "DIFF MIG devices" in r.stdout, r.stdout
    # No nvidia-smi: nothing to check.
    r = hdtest.subprocess.run([tool, "--socket", d.sock], capture_output=True, text=True,
                              timeout=60, env=dict(os.environ, PATH="/nonexistent"))
    assert r.returncode == 77


def test_mig_bundle_runs_the_check_on_a_host_without_the_build(host, tmp_path):
    """tools/mig-bundle packs hostdevd, its modules, mig-check and the
    libraries they link; its run script starts a daemon with no configured
    layout (it changes nothing), records what nvidia-smi and mig.list say,
    and stops it: the one prepared step for a session lent a real GPU.
    Tried here on the simulated host, with the fake NVML and the stand-in
    nvidia-smi."""
    bundle, out = tmp_path / "bundle", tmp_path / "out"
    tool = os.path.join(hdtest.SRCDIR, "tools", "mig-bundle")
    r = hdtest.subprocess.run([tool, hdtest.BUILDDIR, str(bundle)], capture_output=True,
                              text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    libs = os.listdir(bundle / "lib")
    assert "libevent-2.1.so.7" in libs and "libjansson.so.4" in libs, libs
    assert not any(x.startswith(("libc.so", "libnvidia-ml")) for x in libs), libs
    assert {"mig.so", "vgpu.so", "pci.so"} <= set(os.listdir(bundle / "modules"))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    smi = bindir / "nvidia-smi"
    env = dict(hdtest.sanitizer_env(), PATH=f"{bindir}:{os.environ['PATH']}", NVML_LIBRARY=LIB,
               SYSFS_ROOT=host.tree.sys, DEV_ROOT=os.path.join(host.root, "dev"),
               FAKE_NVML_STATE=host.nvml.path)
    uuid = host.nvml.gpu(H100)["uuid"]
    # No nvidia-smi yet: nothing to compare (77), the daemon's view kept.
    r = hdtest.subprocess.run(["sh", str(bundle / "run"), str(out)], capture_output=True,
                              text=True, timeout=120, env=env)
    assert r.returncode == 77, r.stdout + r.stderr
    listed = json.loads((out / "mig-list.json").read_text())["result"]
    assert listed["nvml"]["loaded"] and \
        next(g["uuid"] for g in listed["gpus"] if g["bus_id"] == H100) == uuid
    smi.write_text(NVIDIA_SMI % {"uuid": uuid, "lgip": H100_LGIP})
    smi.chmod(0o755)
    r = hdtest.subprocess.run(["sh", str(bundle / "run"), str(out)], capture_output=True,
                              text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr + (out / "hostdevd.log").read_text()
    assert "hostdevd and nvidia-smi agree" in r.stdout
    assert json.loads((out / "real-gpu.json").read_text())[H100]["profiles"]["15"] == \
        ["1g.20gb", 4, 4]
    # The driver's own answers are kept beside the record (the stand-in
    # knows -q -x; a real nvidia-smi also answers "mig -lgip" for all GPUs).
    assert uuid in (out / "nvidia-smi-q.xml").read_text()
    assert "SIGTERM" in (out / "hostdevd.log").read_text()
    assert host.nvml.mutations() == {}, "read-only: no layout configured, nothing changed"


def test_gpu_that_arrives_gets_its_configured_layout(make_daemon, tmp_path):
    """Hotplug: a GPU the configuration selects, appearing in sysfs and in
    NVML after the start, gets its layout on its arrival (the inventory's
    device.add), not at a periodic check (there is none here)."""
    h = Host(str(tmp_path))
    def drop_h200(s):
        s["gpus"] = [g for g in s["gpus"] if g["bus_id"] != H200]
    h.nvml.update(drop_h200)
    gone = os.path.join(h.tree.sys, "bus/pci/devices", H200)
    target = os.path.realpath(gone)
    os.unlink(gone)
    hidden = target + ".away"
    os.rename(target, hidden)
    d = make_daemon(tree=h.root, env={"FAKE_NVML_STATE": h.nvml.path},
                    config={"mig": {"nvml_library": LIB, "check_interval_ms": 0,
                                    "gpus": [{"gpu": "10de:2335", "layout": {"3g.71gb": 2}}]}},
                    extra_args=["--module-dir", module_dir(str(tmp_path))])
    assert H200 not in gpus(d)
    c = d.client()
    c.call("events.subscribe", {"types": ["mig.applied"]})
    os.rename(hidden, target)
    os.symlink(os.path.relpath(target, os.path.dirname(gone)), gone)
    h.nvml.add_gpu(H200, "H200-141GB", 3)
    d.call("daemon.rescan")
    ev = c.next_event(timeout=20)
    assert ev["type"] == "mig.applied" and ev["gpu"] == H200
    assert h.nvml.layout(H200) == [(9, 0, 1), (9, 4, 1)]
    g = gpus(d)[H200]
    assert g["status"] == "synced" and g["source"] == "config"
    c.close()


def test_reload_applies_the_new_layout(mig_daemon, host):
    d = mig_daemon({"gpus": [{"gpu": H100, "layout": {"7g.80gb": 1}}]})
    hdtest.wait_until(lambda: gpus(d)[H100]["status"] == "synced", what="first layout")
    c = d.client()
    c.call("events.subscribe", {"types": ["mig.applied", "config"]})
    conf = {"mig": {"nvml_library": LIB, "check_interval_ms": 0,
                    "gpus": [{"gpu": H100, "layout": {"4g.40gb": 1, "3g.40gb": 1}}]}}
    d.write_config(conf)
    d.signal(signal.SIGHUP)
    assert c.next_event(match=lambda e: e["type"].startswith("config"))["type"] == \
        "config.reloaded"
    assert c.next_event(match=lambda e: e["type"] == "mig.applied")["gpu"] == H100
    assert host.nvml.layout(H100) == [(5, 0, 1), (9, 4, 1)]
    c.close()


def test_untrusted_state_changes_nothing(mig_daemon, host):
    d = mig_daemon()
    d.call("mig.apply", {"gpu": H100, "layout": {"7g.80gb": 1}})
    d.stop()
    path = os.path.join(d.state, "state.json")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace('"phase":"applied"', '"phase":"applyinG"'))
    host.nvml.reboot()
    d.start()
    with pytest.raises(hdtest.RpcError) as e:
        d.call("mig.apply", {"gpu": H100, "layout": {"1g.10gb": 1}})
    assert e.value.code == FAILED and "could not be trusted" in e.value.message
    assert d.call("mig.list")["fail_closed"] is True
    d.call("mig.reconcile")
    assert host.nvml.layout(H100) == [] and host.nvml.gpu(H100)["mig_current"] == 0


def test_gpu_instances_list_their_vgpu_types(mig_daemon, host):
    """Each GPU instance says which vGPU types it can host (NVML's
    nvmlGpuInstanceGetCreatableVgpus), and mig.instances tells the other
    modules the GPU's status and instances whenever they change."""
    d = mig_daemon()
    c = d.client()
    c.call("events.subscribe", {"types": ["mig.instances"]})
    d.call("mig.apply", {"gpu": H100, "layout": {"3g.40gb": 1, "1g.10gb": 2}})
    g = gpus(d)[H100]
    types = {gi["profile"]: gi["vgpu_types"] for gi in g["gpu_instances"]}
    assert types == {"3g.40gb": [{"id": 1303, "name": "NVIDIA H100-3-40C",
                                  "gpu_instance_profile_id": 9}],
                     "1g.10gb": [{"id": 1301, "name": "NVIDIA H100-1-10C",
                                  "gpu_instance_profile_id": 19}]}
    # The GPU's word: applying, then synced with its instances.
    ev = c.next_event(match=lambda e: e["gpu"] == H100 and e["status"] == "applying")
    ev = c.next_event(match=lambda e: e["gpu"] == H100 and e["status"] == "synced")
    assert ev["managed"] is True and ev["uuid"] == g["uuid"]
    assert sorted((x["profile"], x["id"], [t["id"] for t in x["vgpu_types"]])
                  for x in ev["gpu_instances"]) == \
        sorted((x["profile"], x["id"], [t["id"] for t in x["vgpu_types"]])
               for x in g["gpu_instances"])
    # A GPU instance a vGPU uses lists nothing (the driver's answer).
    def take(s):
        next(x for x in s["gpus"] if x["bus_id"] == H100)["gis"][0]["vgpu_taken"] = True
    host.nvml.update(take)
    d.call("mig.reconcile")
    ev = c.next_event(match=lambda e: e["gpu"] == H100)
    assert sorted(len(x["vgpu_types"]) for x in ev["gpu_instances"]) == [0, 1, 1]
    # Unchanged: not said again.
    d.call("mig.reconcile")
    d.call("mig.list")
    c.call("daemon.status")     # what was emitted before is on c by now
    assert [e for e in c.pending if e["type"] == "mig.instances"] == []
    c.close()


# --- with the vgpu module: MIG-backed vGPU on the A100's VFs -----------------------

from simkernel import SimVgpuKernel  # noqa: E402
from test_vgpu import A100_TYPES, A100_VFS  # noqa: E402

# The A100-40GB's MIG-backed types in the fake (test/fakenvml) and the VFs'
# catalogue (test_vgpu.A100_TYPES): type id -> GPU-instance profile id.
A100_MIG_TYPES = {1147: 19, 1148: 14, 1149: 9, 1150: 5, 1151: 0}


class VgpuHost(Host):
    """The A100's VFs with their vGPU catalogues, the simulated kernel's
    driver giving a MIG-backed type only where the fake NVML has a GPU
    instance of its profile (and reporting which in gpu_instance_id)."""

    def __init__(self, tmp):
        super().__init__(tmp)
        for vf in A100_VFS:
            self.tree.nvidia_vgpu_vf(vf, A100_TYPES)
        self.nvml.set_gpu(A100, mig_current=1, mig_pending=1)
        self.kernel = None

    def free_gi(self, addr, type_id):
        profile = A100_MIG_TYPES.get(type_id)
        if profile is None:
            return None
        used = set()
        for vf in list(self.kernel.types_now):
            if vf != addr and self.kernel.types_now.get(vf):
                with open(os.path.join(self.tree.sys, "bus/pci/devices", vf,
                                       "nvidia/gpu_instance_id")) as f:
                    used.add(int(f.read()))
        for gi in sorted(self.nvml.gpu(A100)["gis"], key=lambda x: x["id"]):
            if gi["profile_id"] == profile and gi["id"] not in used:
                return gi["id"]
        return None

    def start_kernel(self, make_vfs=None):
        self.kernel = SimVgpuKernel(self.root, make_vfs=make_vfs)
        # No GPU instance of its profile: the driver refuses the type (EIO).
        self.kernel.refuse_type = lambda addr, t: t in A100_MIG_TYPES and \
            self.free_gi(addr, t) is None
        self.kernel.gpu_instance_of = self.free_gi
        return self.kernel


@pytest.fixture
def vgpu_mig(make_daemon, tmp_path):
    """start(mig=None) -> (daemon, VgpuHost); the vgpu module loaded too."""
    hosts = []
    h = VgpuHost(str(tmp_path))
    hosts.append(h)
    h.start_kernel()

    def start(mig=None, start=True, first=None):
        conf = {"nvml_library": LIB, "check_interval_ms": 0}
        conf.update(mig or {})
        return make_daemon(tree=h.root, config={"mig": conf}, start=start,
                           env={"FAKE_NVML_STATE": h.nvml.path},
                           extra_args=["--module-dir", module_dir(str(tmp_path), ("vgpu.so",),
                                                                  first)])
    yield start, h
    for x in hosts:
        if x.kernel:
            x.kernel.stop()


def vf_types(d, vf):
    return {t["id"]: t for t in d.call("vgpu.types", {"parent": vf})["parents"][0]["types"]}


def vgpu_list(d):
    return {v["address"]: v for v in d.call("vgpu.list")["vgpus"] if "address" in v}


def test_vgpu_types_show_the_gpu_instance(vgpu_mig):
    start, h = vgpu_mig
    d = start()
    d.call("mig.apply", {"gpu": A100, "layout": {"3g.20gb": 2}})
    gis = sorted(gi["id"] for gi in h.nvml.gpu(A100)["gis"])
    vf0, vf1 = A100_VFS[0], A100_VFS[1]
    # vgpu learns the instances from mig's event (on the next loop turn).
    hdtest.wait_until(lambda: vf_types(d, vf0)["1149"].get("mig_backed") is True,
                      what="vgpu.types to know the GPU instances")
    t = vf_types(d, vf0)
    assert [(g["id"], g["profile"], g["free"], g["vf"]) for g in t["1149"]["gpu_instances"]] == \
        [(gis[0], "3g.20gb", True, None), (gis[1], "3g.20gb", True, None)]
    # Time-sliced, and MIG-backed on a profile without an instance: none.
    assert t["1160"]["mig_backed"] is False and t["1160"]["gpu_instances"] is None
    assert t["1147"]["mig_backed"] is False
    r = d.call("vgpu.set_type", {"address": vf0, "type": "GRID A100-3-20C"})
    assert r["present"] and r["mig_backed"] is True and h.kernel.current(vf0) == 1149
    # The VF's vGPU took one instance (its gpu_instance_id): taken, by it.
    v = d.call("vgpu.types", {"parent": vf0})["parents"][0]
    assert v["gpu_instance"]["id"] == gis[0] and v["gpu_instance"]["profile"] == "3g.20gb"
    assert v["mig"]["status"] == "synced"
    t = vf_types(d, vf1)
    assert [(g["id"], g["free"], g["vf"]) for g in t["1149"]["gpu_instances"]] == \
        [(gis[0], False, vf0), (gis[1], True, None)]
    # The layout is not changed under the vGPU: refused, nothing destroyed.
    before = h.nvml.mutations()
    with pytest.raises(hdtest.RpcError) as e:
        d.call("mig.apply", {"gpu": A100, "layout": {"7g.40gb": 1}})
    assert e.value.code == REFUSED and vf0 in e.value.message and "vGPU" in e.value.message
    assert h.nvml.mutations() == before and len(h.nvml.layout(A100)) == 2
    assert vgpu_list(d)[vf0]["mig_backed"] is True


@pytest.mark.parametrize("first", [None, "vgpu.so"])
def test_mig_backed_vgpu_waits_for_the_layout_after_a_reboot(vgpu_mig, first):
    """After a reboot the recorded MIG layout comes first, then the VF's
    MIG-backed type: vgpu does not set it (the driver would refuse it) until
    mig says the GPU's layout is in place, and sets it then; whichever of
    the two modules starts first."""
    start, h = vgpu_mig
    d = start(first=first)
    log = d.log_text()
    assert (log.index("loaded vgpu") < log.index("loaded mig")) == (first == "vgpu.so")
    vf = A100_VFS[2]
    d.call("mig.apply", {"gpu": A100, "layout": {"2g.10gb": 3}})
    hdtest.wait_until(lambda: vf_types(d, vf)["1148"].get("mig_backed") is True,
                      what="vgpu to know the GPU instances")
    assert d.call("vgpu.set_type", {"address": vf, "type": 1148})["mig_backed"] is True
    d.stop()
    # The reboot: no instances, no VF type; GPU instances cannot be made yet.
    h.nvml.reboot()
    h.kernel.set_type_by_hand(vf, 0)
    hdtest.wait_until(lambda: h.kernel.current(vf) == 0 and
                      ("clear", vf, 1148) in h.kernel.log, what="the type gone")
    h.nvml.set(fail={"nvmlDeviceCreateGpuInstance": 23})
    fake_reboot(d)
    n = len(h.kernel.log)
    d.start()
    hdtest.wait_until(lambda: gpus(d)[A100]["status"] == "error", what="the layout failing")
    hdtest.wait_until(lambda: vgpu_list(d)[vf]["waiting_for"] == "mig",
                      what="the VF type waiting for the layout")
    d.call("vgpu.reconcile")
    assert h.kernel.log[n:] == [], "nothing written to the VF before its GPU instance"
    # The layout applies: the type follows, without a refused write.
    h.nvml.set(fail={})
    d.call("mig.reconcile")
    hdtest.wait_until(lambda: h.kernel.log[n:], what="the type after the layout")
    assert h.kernel.log[n:] == [("set", vf, 1148)] and h.kernel.current(vf) == 1148
    assert len(h.nvml.layout(A100)) == 3
    v = vgpu_list(d)[vf]
    assert v["waiting_for"] is None and v["mig_backed"] is True


def test_layout_again_after_the_vfs_are_enabled(make_daemon, tmp_path):
    """sriov-manage's rebind (vgpu.enable_vfs) takes every GPU instance of
    the GPU: mig applies the layout again at once (there is no periodic
    check here), without calling it drift, and says so to vgpu."""
    from simkernel import SimKernel
    from test_vgpu import drop_a100_vfs, make_a100_vfs
    h = Host(str(tmp_path))
    drop_a100_vfs(h.tree)
    h.nvml.set_gpu(A100, mig_current=1, mig_pending=1)
    make = make_a100_vfs(h.root)

    def make_and_rebind(pf, n):
        make(pf, n)
        h.nvml.set_gpu(pf, gis=[])      # the driver's rebind: instances gone
    pk = SimKernel(h.root)
    vk = SimVgpuKernel(h.root, make_vfs=make_and_rebind)
    try:
        d = make_daemon(tree=h.root, env={"FAKE_NVML_STATE": h.nvml.path},
                        config={"mig": {"nvml_library": LIB, "check_interval_ms": 0}},
                        extra_args=["--module-dir", module_dir(str(tmp_path), ("vgpu.so",))])
        d.call("mig.apply", {"gpu": A100, "layout": {"3g.20gb": 2}})
        c = d.client(timeout=60)
        c.call("events.subscribe", {"types": ["mig", "vgpu.vfs_enabled"]})
        c.call("vgpu.enable_vfs", {"gpu": A100})
        assert vk.log.count(("numvfs", A100, 16)) == 1      # the rebind was made
        seen = []
        c.next_event(match=lambda e: seen.append(e["type"]) or
                     (e["type"] == "mig.applied" and e["gpu"] == A100))
        assert h.nvml.layout(A100) == [(9, 0, 1), (9, 4, 1)]
        c.call("daemon.status")
        seen += [e["type"] for e in c.pending]
        assert "mig.drift" not in seen and "vgpu.vfs_enabled" in seen, seen
        hdtest.wait_until(lambda: gpus(d)[A100]["status"] == "synced", what="synced")
        assert "re-applying the layout after the GPU's driver was bound again" in d.log_text()
        c.close()
    finally:
        vk.stop()
        pk.stop()


def test_mig_backed_type_refused_while_the_layout_is_applied(vgpu_mig):
    """The layout first, then the vGPUs on it: a MIG-backed type asked for
    while mig changes the GPU is refused (busy), nothing written."""
    start, h = vgpu_mig
    d = start({"timeout_ms": 1500})
    d.call("mig.apply", {"gpu": A100, "layout": {"3g.20gb": 2}})
    vf = A100_VFS[1]
    hdtest.wait_until(lambda: vf_types(d, vf)["1149"].get("mig_backed") is True,
                      what="vgpu to know the GPU instances")
    h.nvml.set(hang="nvmlGpuInstanceCreateComputeInstance")
    n = h.nvml.calls("nvmlGpuInstanceCreateComputeInstance")
    c = d.client()
    c.send_raw(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "mig.apply",
                           "params": {"gpu": A100, "layout": {"3g.20gb": 1}}}).encode() + b"\n")
    hdtest.wait_until(lambda: h.nvml.calls("nvmlGpuInstanceCreateComputeInstance") > n,
                      what="the apply to be under way")
    with pytest.raises(hdtest.RpcError) as e:
        d.call("vgpu.set_type", {"address": vf, "type": 1149})
    assert e.value.code == BUSY and "being applied" in e.value.message
    assert h.kernel.current(vf) == 0 and vf not in vgpu_list(d)
    h.nvml.set(hang="")
    c.close()


def test_reboot_order_vfs_layout_then_types(make_daemon, tmp_path):
    """After a reboot with everything recorded: the VFs are enabled again
    (sriov-manage's rebind takes every GPU instance), the MIG layout is
    applied after that, and only then the VF's MIG-backed type is set (the
    driver refuses it without its instance: no refused write is seen)."""
    from simkernel import SimKernel
    from test_vgpu import a100_vf_bdf, drop_a100_vfs, make_a100_vfs
    h = VgpuHost(str(tmp_path))
    vf = a100_vf_bdf(3)

    def host_after_boot():
        drop_a100_vfs(h.tree)
        make = make_a100_vfs(h.root)

        def make_and_rebind(pf, n):
            make(pf, n)
            h.nvml.set_gpu(pf, gis=[])      # the driver's rebind: instances gone
        return SimKernel(h.root), h.start_kernel(make_and_rebind)

    pk, vk = host_after_boot()
    d = make_daemon(tree=h.root, env={"FAKE_NVML_STATE": h.nvml.path}, start=False,
                    config={"mig": {"nvml_library": LIB, "check_interval_ms": 0}},
                    extra_args=["--module-dir", module_dir(str(tmp_path), ("vgpu.so",))])
    try:
        d.start()
        d.call("vgpu.enable_vfs", {"gpu": A100})
        d.call("daemon.rescan")
        d.call("mig.apply", {"gpu": A100, "layout": {"2g.10gb": 3}})
        hdtest.wait_until(lambda: vf_types(d, vf)["1148"].get("mig_backed") is True,
                          what="vgpu to know the GPU instances")
        assert d.call("vgpu.set_type", {"address": vf, "type": 1148})["mig_backed"] is True
        d.stop()
    finally:
        vk.stop()
        pk.stop()
    # The reboot: a new tree without VFs, no instances, the same state.json.
    shutil.rmtree(h.root)
    h.tree = Host.build_tree(h.root)
    h.nvml.reboot()
    fake_reboot(d)
    pk, vk = host_after_boot()
    try:
        d.start()
        hdtest.wait_until(lambda: ("set", vf, 1148) in vk.log, timeout=40,
                          what=f"the type set again: {vk.log}")
        assert [x for x in vk.log if x[0] != "clear"] == [("numvfs", A100, 16), ("set", vf, 1148)]
        assert len(h.nvml.layout(A100)) == 3 and vk.current(vf) == 1148
        hdtest.wait_until(lambda: gpus(d)[A100]["status"] == "synced", what="synced")
        assert vgpu_list(d)[vf]["waiting_for"] is None
    finally:
        d.stop()
        vk.stop()
        pk.stop()
