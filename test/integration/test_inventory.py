# SPDX-License-Identifier: MIT
"""Inventory: hostdevd's PCI facts equal lspci's on every simulated host; USB,
SR-IOV, IOMMU groups, modules, and devices with broken sysfs files."""

import os
import re
import shutil
import stat

import pytest

from hdtest import lspci

GENERIC_NAMES = ("Device", "Vendor", "Unknown vendor", "Unknown device", "Class")


def split_nn(text):
    """'Intel Corporation [8086]' -> ('Intel Corporation', '8086')."""
    m = re.match(r"^(.*) \[([0-9a-f]+)\]$", text)
    assert m, f"unexpected lspci -nn field {text!r}"
    return m.group(1), m.group(2)


def check_name(ours, theirs, field, addr):
    if ours is None:
        assert theirs in GENERIC_NAMES, f"{addr} {field}: lspci knows {theirs!r}, we have null"
    else:
        assert ours == theirs, f"{addr} {field}: {ours!r} != lspci {theirs!r}"


def compare_with_lspci(daemon):
    ours = {d["address"]: d for d in daemon.call("devices.list", {"class": "pci"})}
    theirs = {r["Slot"]: r for r in lspci(daemon.sysfs)}
    assert sorted(ours) == sorted(theirs), "the same PCI functions"
    for addr, r in theirs.items():
        d = ours[addr]
        cname, cid = split_nn(r["Class"])
        assert d["class_id"] == cid, f"{addr} class"
        check_name(d["class_name"], cname, "class name", addr)
        vname, vid = split_nn(r["Vendor"])
        assert d["vendor_id"] == vid, f"{addr} vendor"
        check_name(d["vendor_name"], vname, "vendor name", addr)
        dname, did = split_nn(r["Device"])
        assert d["device_id"] == did, f"{addr} device"
        check_name(d["device_name"], dname, "device name", addr)
        if "SVendor" in r:
            n, i = split_nn(r["SVendor"])
            assert d["subsystem_vendor_id"] == i, f"{addr} subsystem vendor"
            check_name(d["subsystem_vendor_name"], n, "subsystem vendor name", addr)
            n, i = split_nn(r["SDevice"])
            assert d["subsystem_device_id"] == i, f"{addr} subsystem device"
            check_name(d["subsystem_device_name"], n, "subsystem device name", addr)
        # lspci leaves out a zero revision.
        assert d["revision"] == r.get("Rev", "00"), f"{addr} revision"
        if "ProgIf" in r:
            assert d["prog_if"] == r["ProgIf"], f"{addr} prog-if"
        assert d["driver"] == r.get("Driver"), f"{addr} driver"
        assert d["numa_node"] == int(r.get("NUMANode", -1)), f"{addr} NUMA node"
        assert d["iommu_group"] == r.get("IOMMUGroup"), f"{addr} IOMMU group"
    return ours


@pytest.mark.parametrize("host", ["dell-190", "hp-130", "scale"])
def test_inventory_equals_lspci(make_daemon, host):
    d = make_daemon(host=host, functions=300)
    ours = compare_with_lspci(d)
    assert len(ours) >= (300 if host == "scale" else 6)


def test_dell_190_facts(daemon):
    a100 = daemon.call("devices.get", {"address": "0000:04:00.0"})
    assert a100["vendor_name"] == "NVIDIA Corporation"
    assert "A100" in a100["device_name"]
    assert a100["sriov_totalvfs"] == 16 and a100["sriov_numvfs"] == 8
    assert a100["virtfns"][0] == "0000:04:00.4" and len(a100["virtfns"]) == 8
    assert a100["numa_node"] == 1
    assert a100["parent"] == "0000:00:03.0"
    vf = daemon.call("devices.get", {"address": "0000:04:00.6"})
    assert vf["physfn"] == "0000:04:00.0"
    assert vf["iommu_group"] == "119" and vf["iommu_group_members"] == []
    assert vf["class_id"] == "0302" and vf["driver"] == "nvidia"

    nic_vf = daemon.call("devices.get", {"address": "0000:01:10.0"})
    assert nic_vf["driver"] == "vfio-pci" and nic_vf["iommu_group"] == "111"
    assert nic_vf["device_name"] == "X540 Ethernet Controller Virtual Function"
    assert nic_vf["module"] == "pci"
    assert nic_vf["module_info"]["passthrough"] == "ready"
    assert nic_vf["module_info"]["vfio_bound"] is True

    igpu = daemon.call("devices.get", {"address": "0000:35:00.0"})
    assert igpu["iommu_group_members"] == ["0000:35:00.1"]
    assert igpu["boot_vga"] is True
    info = igpu["module_info"]
    assert info["group"]["viable"] is False
    assert [m["address"] for m in info["group"]["members"]] == ["0000:35:00.0", "0000:35:00.1"]
    assert "boot VGA" in " ".join(info["reasons"])

    pf = daemon.call("devices.get", {"address": "0000:01:00.0"})
    assert pf["module_info"]["passthrough"] == "blocked"
    assert "4 VFs" in " ".join(pf["module_info"]["reasons"])

    bridge = daemon.call("devices.get", {"address": "0000:00:01.0"})
    assert bridge["bridge"] is True and bridge["module"] is None


def test_usb_inventory(daemon):
    usb = {d["port"]: d for d in daemon.call("devices.list", {"class": "usb"})}
    assert sorted(usb) == ["1-2", "1-3", "1-4", "usb1"]
    kvm = usb["1-4"]
    assert (kvm["vendor_id"], kvm["product_id"]) == ("0624", "0251")
    assert (kvm["busnum"], kvm["devnum"]) == (1, 4)
    assert kvm["devnode"] == "/dev/bus/usb/001/004"
    assert kvm["controller"] == "0000:00:14.0"
    assert kvm["driver"] == "usb"
    assert kvm["interface_drivers"] == ["usbhid"]
    assert kvm["vendor_name"] == "Avocent Corp."
    assert kvm["module"] == "usb"
    # The seed's resource name for this very device.
    assert kvm["module_info"]["resource_name"] == "kubevirt.io/dell-190-0624-0251-001004"
    assert kvm["module_info"]["env_value"] == "1:4"
    stick = usb["1-3"]
    assert stick["interface_drivers"] == ["usb-storage"]
    assert stick["product"] == "DataTraveler 3.0"
    assert usb["usb1"]["module"] is None, "root hubs are not handed out"
    one = daemon.call("devices.get", {"address": "1-2"})
    assert one["vendor_name"] == "Logitech, Inc."


def test_filters(daemon):
    nvidia = daemon.call("devices.list", {"vendor": "10de"})
    assert len(nvidia) == 9 and all(d["vendor_id"] == "10de" for d in nvidia)
    vfio = daemon.call("devices.list", {"driver": "vfio-pci"})
    assert [d["address"] for d in vfio] == ["0000:01:10.0"]
    group = daemon.call("devices.list", {"iommu_group": "20"})
    assert [d["address"] for d in group] == ["0000:35:00.0", "0000:35:00.1"]
    x540vf = daemon.call("devices.list", {"vendor": "8086", "device": "1515"})
    assert len(x540vf) == 4
    assert daemon.call("devices.list", {"module": "usb"}) != []
    unowned = daemon.call("devices.list", {"module": "none", "class": "pci"})
    assert all(d["bridge"] or d["class_id"].startswith("06") for d in unowned)
    assert daemon.call("devices.list", {"driver": "none", "class": "pci"})[0]["address"] == "0000:00:00.0"


def test_status_reports_iommu_state(daemon):
    st = daemon.call("daemon.status")
    assert st["iommu"]["enabled"] is True
    assert st["iommu"]["groups"] > 10
    assert st["iommu"]["modules"]["vfio_pci"] is True
    assert st["iommu"]["dev_vfio"] is True
    assert st["iommu"]["dev_iommu"] is False
    assert st["devices"]["pci"] == 23 and st["devices"]["usb"] == 4
    assert st["node_name"] == "dell-190"


def test_iommu_off_host(make_daemon):
    d = make_daemon(host=None, start=False)
    os.makedirs(os.path.join(d.sysfs, "bus/pci/devices"))
    os.makedirs(d.devroot)
    d.start()
    st = d.call("daemon.status")
    assert st["iommu"]["enabled"] is False and st["devices"]["pci"] == 0
    assert "IOMMU off" in d.log_text()


def test_garbage_sysfs_files(make_daemon):
    d = make_daemon(start=False)
    dev = os.path.join(d.sysfs, "devices/pci0000:00/0000:00:17.0")
    with open(os.path.join(dev, "vendor"), "wb") as f:
        f.write(b"\xff\xfe not hex\n")
    os.unlink(os.path.join(dev, "class"))
    os.unlink(os.path.join(dev, "numa_node"))
    os.mkdir(os.path.join(dev, "numa_node"))   # read() gives EISDIR
    os.unlink(os.path.join(dev, "driver"))
    os.symlink("../../../../../../../../../../etc", os.path.join(dev, "driver"))
    with open(os.path.join(d.sysfs, "devices/pci0000:00/0000:00:14.0/usb1/1-3/busnum"), "w") as f:
        f.write("banana\n")
    # A bus/pci/devices entry that is not a PCI address is skipped.
    os.symlink("../../../devices", os.path.join(d.sysfs, "bus/pci/devices/evil"))
    d.start()
    nvme = d.call("devices.get", {"address": "0000:00:17.0"})
    assert nvme["vendor_id"] is None and nvme["device_id"] == "a808"
    assert nvme["class_id"] is None and nvme["numa_node"] == -1
    assert nvme["driver"] is None, "a driver link out of the sysfs root is not followed"
    w = " | ".join(nvme["warnings"])
    assert "vendor: unparsable value" in w
    assert "class: No such file or directory" in w
    assert "numa_node: Is a directory" in w
    assert "driver" in w
    stick = d.call("devices.get", {"address": "1-3"})
    assert stick["busnum"] is None and "busnum: unparsable value" in " ".join(stick["warnings"])
    log = d.log_text()
    assert "0000:00:17.0: listed with problems" in log and "vendor: unparsable value" in log
    assert len(d.call("devices.list", {"class": "pci"})) == 23


def test_vanished_bus_keeps_inventory(daemon):
    before = len(daemon.call("devices.list"))
    shutil.rmtree(os.path.join(daemon.sysfs, "bus/pci"))
    c = daemon.client()
    res = c.request("daemon.rescan")
    assert res["error"]["code"] == -32010 and "No such file" in res["error"]["message"]
    assert len(c.call("devices.list")) == before, "an unlistable bus removes nothing"
    c.close()


def test_modules_list_and_bad_modules(make_daemon, tmp_path):
    import hdtest
    moddir = tmp_path / "mods"
    moddir.mkdir()
    shutil.copy(os.path.join(hdtest.MODULE_DIR, "pci.so"), moddir / "pci.so")
    shutil.copy(os.path.join(hdtest.MODULE_DIR, "usb.so"), moddir / "usb.so")
    os.chmod(moddir / "usb.so", 0o666)
    (moddir / "junk.so").write_bytes(b"not an ELF file")
    shutil.copy(os.path.join(hdtest.MODULE_DIR, "pci.so"), moddir / "zpci.so")
    d = make_daemon(extra_args=["--module-dir", str(moddir)])
    mods = {os.path.basename(m["path"]): m for m in d.call("modules.list")}
    assert mods["pci.so"]["active"] is True and mods["pci.so"]["devices"] > 10
    assert mods["pci.so"]["abi_version"] == 2 and mods["pci.so"]["subsystems"] == ["pci"]
    assert mods["usb.so"]["active"] is False and "writable" in mods["usb.so"]["error"]
    assert mods["junk.so"]["active"] is False and "dlopen" in mods["junk.so"]["error"]
    assert mods["zpci.so"]["active"] is False and "already loaded" in mods["zpci.so"]["error"]
    assert d.call("devices.get", {"address": "1-4"})["module"] is None


def test_modules_disabled_by_config(make_daemon):
    d = make_daemon(config={"modules": {"disable": ["usb"]}})
    mods = {m["name"]: m for m in d.call("modules.list")}
    assert mods["usb"]["active"] is False and "disabled" in mods["usb"]["error"]
    assert mods["pci"]["active"] is True


def test_mdev_inventory(make_daemon):
    d = make_daemon(host="hp-130")
    mdevs = {m["uuid"]: m for m in d.call("devices.list", {"class": "mdev"})}
    assert sorted(mdevs) == ["0558c582-5856-4b16-a95d-bd0b40786e76",
                             "aa8d831f-7752-4d32-9f62-d4a95b118e28"]
    m = mdevs["aa8d831f-7752-4d32-9f62-d4a95b118e28"]
    assert (m["type"], m["type_name"], m["parent"], m["iommu_group"]) == \
        ("nvidia-745", "NVIDIA A2-2Q", "0000:08:00.4", "60")
    assert d.call("devices.get", {"address": "0558c582-5856-4b16-a95d-bd0b40786e76"})["type"] == "nvidia-750"
    vf = d.call("devices.get", {"address": "0000:08:00.4"})
    assert [t["id"] for t in vf["mdev_types"]] == ["nvidia-743", "nvidia-745", "nvidia-750"]
    assert vf["mdev_types"][1] == {"id": "nvidia-745", "name": "NVIDIA A2-2Q", "device_api": "vfio-pci",
                                   "available_instances": 1}
    parents = {p["parent"]: p for p in d.call("mdev.parents")}
    assert len(parents) == 16 and parents["0000:08:00.4"]["pci"] is True
    assert d.call("daemon.status")["devices"]["mdev"] == 2
    assert len(d.call("devices.list", {"iommu_group": "60"})) == 1
