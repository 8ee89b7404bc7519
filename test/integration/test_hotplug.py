# SPDX-License-Identifier: MIT
"""Hotplug through udev: umockdev plays the kernel's uevents; every change is
in devices.list and on an events.subscribe stream in the same loop turn."""

import json
import os
import shutil
import subprocess

import pytest

import hdtest

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "umockdev_helper.py")

pytestmark = pytest.mark.skipif(shutil.which("umockdev-wrapper") is None,
                                reason="umockdev is not installed")


class FakeKernel:
    def __init__(self, host):
        self.proc = subprocess.Popen(["umockdev-wrapper", "/usr/bin/python3", HELPER, host],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line, "the umockdev helper did not start"
        self.root = json.loads(line)["root"]

    def do(self, op, **kw):
        kw["op"] = op
        self.proc.stdin.write(json.dumps(kw) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        assert reply.get("ok"), reply
        return reply

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(30)


@pytest.fixture
def start_hotplug(make_daemon):
    made = []

    def start(config=None):
        k = FakeKernel("dell-190")
        env = {"LD_PRELOAD": "libumockdev-preload.so.0", "UMOCKDEV_DIR": k.root}
        d = make_daemon(host=None, tree=k.root, env=env, node_name="dell-190", config=config)
        sub = d.client()
        sub.call("events.subscribe")
        made.append((k, d, sub))
        return k, d, sub

    yield start
    for k, d, sub in made:
        sub.close()
        d.check_clean_exit()
        k.close()


@pytest.fixture
def hotplug(start_hotplug):
    return start_hotplug()


def test_pci_add_bind_unbind_remove(hotplug):
    k, d, sub = hotplug
    k.do("add_pci", bdf="0000:00:19.0", vendor="8086", device="15bb", **{"class": "020000"},
         driver="e1000e", group=50, numa=0)
    ev = sub.next_event()
    assert (ev["type"], ev["id"], ev["source"]) == ("device.add", "0000:00:19.0", "udev:add")
    assert ev["device"]["driver"] == "e1000e" and ev["device"]["module"] == "pci"
    assert d.call("devices.get", {"address": "0000:00:19.0"})["iommu_group"] == "50"

    k.do("set_driver", bdf="0000:00:19.0", driver=None)
    ev = sub.next_event()
    assert (ev["type"], ev["source"], ev["changed"]) == ("device.change", "udev:unbind", ["driver"])
    assert ev["device"]["driver"] is None
    k.do("set_driver", bdf="0000:00:19.0", driver="vfio-pci")
    ev = sub.next_event()
    assert (ev["type"], ev["source"]) == ("device.change", "udev:bind")
    assert ev["device"]["driver"] == "vfio-pci"
    assert ev["device"]["module_info"]["passthrough"] == "ready"
    assert "0000:00:19.0" in [x["address"] for x in d.call("devices.list", {"driver": "vfio-pci"})]

    k.do("remove_pci", bdf="0000:00:19.0")
    ev = sub.next_event()
    assert (ev["type"], ev["id"], ev["source"]) == ("device.remove", "0000:00:19.0", "udev:remove")
    assert ev["device"]["vendor_id"] == "8086", "the remove event carries the last facts"
    c = d.client()
    assert c.request("devices.get", {"address": "0000:00:19.0"})["error"]["code"] == -32004
    c.close()


def test_vf_hotplug_updates_its_pf(hotplug):
    k, d, sub = hotplug
    k.do("add_pci", bdf="0000:01:10.1", vendor="8086", device="1515", **{"class": "020000"},
         parent="0000:00:01.0", driver="ixgbevf", group=130, physfn="0000:01:00.0")
    seen = {}
    for _ in range(2):
        ev = sub.next_event()
        seen[(ev["type"], ev["id"])] = ev
    assert ("device.add", "0000:01:10.1") in seen
    pf = seen[("device.change", "0000:01:00.0")]
    assert "0000:01:10.1" in pf["device"]["virtfns"] and pf["device"]["sriov_numvfs"] == 5
    assert d.call("devices.get", {"address": "0000:01:10.1"})["physfn"] == "0000:01:00.0"

    k.do("remove_pci", bdf="0000:01:10.1")
    seen = {}
    for _ in range(2):
        ev = sub.next_event()
        seen[(ev["type"], ev["id"])] = ev
    assert ("device.remove", "0000:01:10.1") in seen
    assert "0000:01:10.1" not in seen[("device.change", "0000:01:00.0")]["device"]["virtfns"]


def test_usb_add_remove(hotplug):
    k, d, sub = hotplug
    k.do("add_usb", controller="0000:00:14.0", busnum=1, port="5", vendor="046d",
         product="c52b", devnum=7, name="USB Receiver")
    ev = sub.next_event()
    assert (ev["type"], ev["id"], ev["class"]) == ("device.add", "1-5", "usb")
    dev = d.call("devices.get", {"address": "1-5"})
    assert (dev["busnum"], dev["devnum"], dev["vendor_id"]) == (1, 7, "046d")
    assert dev["module_info"]["resource_name"] == "kubevirt.io/dell-190-046d-c52b-001007"
    k.do("remove_usb", port="1-5")
    ev = sub.next_event()
    assert (ev["type"], ev["id"]) == ("device.remove", "1-5")
    assert all(u["port"] != "1-5" for u in d.call("devices.list", {"class": "usb"}))


def test_uevent_burst_is_debounced(start_hotplug):
    k, d, sub = start_hotplug(config={"debounce_ms": 2000})
    before = d.call("daemon.status")["stats"]
    # A rebind storm: hundreds of uevents; the tree changes once underneath.
    os.unlink(os.path.join(d.sysfs, "devices/pci0000:00/0000:00:17.0/driver"))
    k.do("uevent", bdf="0000:00:17.0", action="change", count=300)
    ev = sub.next_event(match=lambda e: e["id"] == "0000:00:17.0")
    assert ev["type"] == "device.change" and ev["changed"] == ["driver"]

    def settled():
        st = d.call("daemon.status")["stats"]
        return st if st["uevents"] - before["uevents"] >= 300 and \
            st["debounced_bursts"] > before["debounced_bursts"] else None
    st = hdtest.wait_until(settled, what="the burst to be folded into one resync")
    # One resync per overflowing debounce window, not one per uevent: a
    # machine slow enough to spread the 300 over two windows gets two.
    bursts = st["debounced_bursts"] - before["debounced_bursts"]
    assert st["resyncs"] - before["resyncs"] == bursts and 1 <= bursts <= 300 // 64, st
    assert "uevent burst" in d.log_text()


def test_uevent_reaches_list_and_watch(start_hotplug):
    """A bind uevent becomes a ListAndWatch message for the kubelet."""
    from kubelet import Kubelet
    from test_deviceplugin import X540VF
    k, d, sub = start_hotplug()
    kubelet = Kubelet(d.kubelet)
    try:
        plugin = kubelet.wait_registered(X540VF)
        plugin.wait_devices(lambda x: len(x) == 1)
        k.do("set_driver", bdf="0000:01:10.2", driver="vfio-pci")
        devs = plugin.wait_devices(lambda x: len(x) == 2)
        assert [x[0] for x in devs] == ["0000:01:10.0", "0000:01:10.2"]
        k.do("remove_pci", bdf="0000:01:10.2")
        plugin.wait_devices(lambda x: [i for i, _, _ in x] == ["0000:01:10.0"])
    finally:
        kubelet.stop()


def test_claim_with_kernel_uevents(start_hotplug):
    """The simulated kernel answers the worker's writes with unbind and bind
    uevents, which reach the daemon; the inventory and the event stream end
    on vfio-pci whichever of the uevents or the claim's own look comes first."""
    k, d, sub = start_hotplug()
    k.do("simkernel")
    before = d.call("daemon.status")["stats"]["uevents"]
    c = d.client(timeout=60)
    res = c.call("pci.claim", {"address": "0000:01:10.2"})
    c.close()
    assert res["state"] == "claimed"
    ev = sub.next_event(match=lambda e: e["type"] == "device.change" and e["id"] == "0000:01:10.2"
                        and e["device"]["driver"] == "vfio-pci")
    assert ev["changed"] == ["driver"] or "driver" in ev["changed"]
    hdtest.wait_until(lambda: d.call("daemon.status")["stats"]["uevents"] - before >= 2,
                      what="the unbind and bind uevents")
    assert d.call("devices.get", {"address": "0000:01:10.2"})["driver"] == "vfio-pci"
