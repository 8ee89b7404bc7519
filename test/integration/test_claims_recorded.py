# SPDX-License-Identifier: MIT
"""Claims that state.json brings back are checked against the live system
before any kernel write: protection, exclude, the IOMMU group, duplicates.
Also: vfio-pci must be there before anything moves, and a state file that is
not a regular file does not hang the start."""

import json
import os
import shutil
import signal
import zlib

import pytest

import hdtest
from hdtest import wait_until
from simkernel import SimKernel
from test_claims import claim, claims, host, idle, override, refused, release  # noqa: F401


def boot_id():
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def write_state(d, records):
    """A state.json with a valid checksum (the canonical form hostdevd
    checksums: sorted keys, compact, CRC-32): whole, but not sane."""
    state = {"boot_id": boot_id(), "claims": records, "version": 1}
    canon = json.dumps(state, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    state["checksum"] = "crc32:%08x" % (zlib.crc32(canon.encode()) & 0xffffffff)
    os.makedirs(d.state, mode=0o700, exist_ok=True)
    with open(os.path.join(d.state, "state.json"), "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)


def record(addr, group, members, state="claimed"):
    return {"address": addr, "iommu_group": group, "resource_name": None, "state": state,
            "members": [{"address": a, "original_driver": drv, "bridge": False} for a, drv in members],
            "from_config": False, "created": 1764600000, "allocations": 0, "advertised_as": ""}


def kernel_writes(k, addr):
    return [e for e in k.log if e[1] == addr and e[0] != "override"]


def reboot(d):
    """A new boot: the tree comes back with its original drivers."""
    shutil.rmtree(d.root)
    hdtest.simhost.build("dell-190", d.root)
    return SimKernel(d.root)


def test_recorded_claim_now_excluded_is_refused(host):
    d, k = host()
    claim(d, "0000:01:10.2")
    d.check_clean_exit()
    k.stop()
    d.write_config({"exclude": [{"address": "0000:01:10.2"}]})
    k2 = reboot(d)
    try:
        d.start()
        idle(d)
        assert k2.driver_of("0000:01:10.2") == "ixgbevf", "nothing was bound"
        assert kernel_writes(k2, "0000:01:10.2") == [] and override(d, "0000:01:10.2") == "(null)"
        cl = claims(d)
        assert len(cl) == 1 and cl[0].get("refused") is True and cl[0]["state"] == "refused", cl
        assert "0000:01:10.2 is excluded by the configuration" in cl[0]["reason"], cl
        assert "is refused, nothing is written for it" in d.log_text()
        # A new claim of it is refused too, with the reason.
        assert "excluded by the configuration" in refused(d, "0000:01:10.2")
        # The record stays in state.json as it was, for the operator to see.
        with open(os.path.join(d.state, "state.json")) as f:
            assert [c["state"] for c in json.load(f)["claims"]] == ["claimed"]
        # Releasing it forgets it without a kernel write.
        res = release(d, "0000:01:10.2")
        assert res["state"] == "released" and res["forgotten"] is True
        assert claims(d) == [] and k2.driver_of("0000:01:10.2") == "ixgbevf"
        assert kernel_writes(k2, "0000:01:10.2") == []
    finally:
        d.check_clean_exit()
        k2.stop()


def test_refused_when_it_drifts_after_becoming_excluded(host):
    """At run time: excluded by a reloaded configuration, then found on its
    host driver: not bound again; refused, with an event."""
    d, k = host()
    claim(d, "0000:01:10.2")
    sub = d.client()
    sub.call("events.subscribe", {"types": ["claim", "drift", "config"]})
    d.write_config({"exclude": [{"vendor": "8086", "device": "1515"}]})
    d.signal(signal.SIGHUP)
    sub.next_event(match=lambda e: e["type"] == "config.reloaded")
    # A claimed record that the configuration now excludes answers "refused".
    assert "excluded by the configuration" in refused(d, "0000:01:10.2")
    ev = sub.next_event(match=lambda e: e["type"] == "claim.refused")
    assert ev["id"] == "0000:01:10.2" and "excluded by the configuration" in ev["reason"]
    cl = claims(d)[0]
    assert cl["refused"] is True and "excluded" in cl["reason"]
    # Found on its host driver (as after a reboot): stays there.
    with k.lock:
        k.do_unbind("0000:01:10.2", "vfio-pci")
        k.overrides["0000:01:10.2"] = None
        k.do_bind("0000:01:10.2", "ixgbevf")
    n = len(k.log)
    d.call("daemon.rescan")
    idle(d)
    assert k.driver_of("0000:01:10.2") == "ixgbevf" and k.log[n:] == []
    sub.close()


def test_checksum_is_not_sanity(host):
    """Records with a valid checksum that the live system contradicts."""
    d, k = host(start=False, igpu_boot_vga=False)
    write_state(d, [
        # Binds a member that is not in its group.
        record("0000:01:10.2", 112, [("0000:01:10.2", "ixgbevf"), ("0000:01:10.4", "ixgbevf")]),
        # A valid claim, then the same again (a duplicate).
        record("0000:01:10.6", 114, [("0000:01:10.6", "ixgbevf")]),
        record("0000:01:10.6", 114, [("0000:01:10.6", "ixgbevf")]),
        # A root port.
        record("0000:00:01.0", 1, [("0000:00:01.0", "pcieport")]),
        # Half a group: the iGPU's HDMI audio without the iGPU.
        record("0000:35:00.1", 20, [("0000:35:00.1", "snd_hda_intel")]),
        # The wrong group for the device.
        record("0000:00:14.0", 99, [("0000:00:14.0", "xhci_hcd")]),
    ])
    d.start()
    idle(d)
    drivers = {a: k.driver_of(a) for a in ("0000:01:10.2", "0000:01:10.4", "0000:00:01.0",
                                           "0000:35:00.0", "0000:35:00.1", "0000:00:14.0")}
    assert drivers == {"0000:01:10.2": "ixgbevf", "0000:01:10.4": "ixgbevf",
                       "0000:00:01.0": "pcieport", "0000:35:00.0": "amdgpu",
                       "0000:35:00.1": "snd_hda_intel", "0000:00:14.0": "xhci_hcd"}, drivers
    for a in drivers:
        assert kernel_writes(k, a) == [], (a, k.log)
    assert k.driver_of("0000:01:10.6") == "vfio-pci", "the valid record is applied"
    by = {}
    for c in claims(d):
        by.setdefault(c["address"], []).append(c)
    assert "member 0000:01:10.4 is not in IOMMU group 112" in by["0000:01:10.2"][0]["reason"]
    first, dup = by["0000:01:10.6"]
    assert first["state"] == "claimed" and first["refused"] is False
    assert dup["refused"] is True and "duplicate" in dup["reason"]
    assert "0000:00:01.0 is a bridge" in by["0000:00:01.0"][0]["reason"]
    assert "IOMMU group 20 holds 0000:35:00.0, which the record does not list" in \
        by["0000:35:00.1"][0]["reason"]
    assert "0000:00:14.0 is in IOMMU group 7 now, not 99" in by["0000:00:14.0"][0]["reason"]


def test_recorded_claim_of_a_mounted_disk_is_refused(host):
    st = os.stat("/")
    if os.major(st.st_dev) == 0:
        pytest.skip("the root filesystem is not on a block device here")
    d, k = host(start=False)
    # Claimed once; since then the root filesystem lives on it.
    write_state(d, [record("0000:00:17.0", 8, [("0000:00:17.0", "nvme")])])
    blk = "devices/pci0000:00/0000:00:17.0/nvme/nvme0/nvme0n1"
    os.makedirs(os.path.join(d.sysfs, blk))
    os.makedirs(os.path.join(d.sysfs, "dev/block"))
    os.symlink(f"../../{blk}", os.path.join(d.sysfs, f"dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}"))
    d.start()
    idle(d)
    assert k.driver_of("0000:00:17.0") == "nvme" and kernel_writes(k, "0000:00:17.0") == []
    cl = claims(d)[0]
    assert cl.get("refused") is True and "backs the mounted filesystem / " in cl["reason"], cl
    assert "backs the mounted filesystem" in refused(d, "0000:00:17.0")


def test_no_vfio_pci_moves_nothing(host):
    d, k = host()
    with k.lock:
        shutil.rmtree(os.path.join(d.sysfs, "bus/pci/drivers/vfio-pci"))
    c = d.client(timeout=60)
    resp = c.request("pci.claim", {"address": "0000:01:10.2"})
    c.close()
    assert resp["error"]["code"] == -32010, resp
    msg = resp["error"]["message"]
    assert msg.startswith("modprobe: the vfio-pci driver is not available") and "Nothing was moved" in msg, msg
    assert k.driver_of("0000:01:10.2") == "ixgbevf"
    assert override(d, "0000:01:10.2") == "(null)"
    assert [e for e in k.log if e[1] == "0000:01:10.2"] == [], k.log
    assert claims(d) == []
    with open(os.path.join(d.state, "state.json")) if os.path.exists(os.path.join(d.state, "state.json")) \
            else open(os.devnull) as f:
        text = f.read()
    assert "0000:01:10.2" not in text


def test_state_file_fifo_does_not_hang_start(host):
    d, k = host(start=False)
    os.makedirs(d.state, mode=0o700, exist_ok=True)
    os.mkfifo(os.path.join(d.state, "state.json"))
    d.start(timeout=15)
    st = d.call("daemon.status")["claims"]
    assert st["fail_closed"] is True and "not a regular file (a FIFO)" in st["fail_reason"], st
    assert "not a regular file (a FIFO)" in refused(d, "0000:01:10.2")
    assert k.driver_of("0000:01:10.2") == "ixgbevf"
