#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Writes the seed corpus for the fuzz targets: what a kubelet sends to a
device-plugin endpoint (recorded with the h2 library and the project's proto),
protobuf messages alone, control-socket requests (claims included),
configuration files, sysfs trees taken from the simulated hosts (as the
records of fuzz/fuzz-tree.h), uevents, state.json files, /proc tables, names
and worker messages. Run it again after changing a format; the files are
committed. Files named regress-* are inputs that once failed: they are kept
by hand, never rewritten."""

import json
import os
import re
import struct
import subprocess
import sys
import tempfile

import h2.config
import h2.connection

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "test", "integration"))
sys.path.insert(0, os.path.join(HERE, "..", "test"))
import simhost  # noqa: E402
os.environ.setdefault("HOSTDEVD_SRCDIR", os.path.join(HERE, ".."))
from kubelet import pb  # noqa: E402


def frame(msg):
    return struct.pack(">BI", 0, len(msg)) + msg


def session(calls, split=None):
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    for path, body in calls:
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", path),
                             (":authority", "localhost"), ("content-type", "application/grpc"),
                             ("te", "trailers"), ("user-agent", "grpc-go/1.60.1")])
        if split:
            for i in range(0, len(body), split):
                c.send_data(sid, body[i:i + split])
            c.end_stream(sid)
        else:
            c.send_data(sid, body, end_stream=True)
    c.ping(b"12345678")
    return c.data_to_send()


def write_seeds(name, seeds):
    out = os.path.join(HERE, "corpus", name)
    os.makedirs(out, exist_ok=True)
    for old in os.listdir(out):
        if not old.startswith("regress-"):
            os.unlink(os.path.join(out, old))
    for file, data in seeds.items():
        if isinstance(data, str):
            data = data.encode()
        with open(os.path.join(out, file), "wb") as f:
            f.write(data)


def main():
    m = pb()
    dp = "/v1beta1.DevicePlugin/"
    alloc = m.AllocateRequest(container_requests=[
        m.ContainerAllocateRequest(devices_ids=["0000:01:00.0", "0000:01:00.1"]),
        m.ContainerAllocateRequest(devices_ids=["0000:02:00.0"])]).SerializeToString()
    pref = m.PreferredAllocationRequest(container_requests=[
        m.ContainerPreferredAllocationRequest(
            available_deviceIDs=["0000:01:00.0", "0000:01:00.1", "0000:02:00.0"],
            must_include_deviceIDs=["0000:02:00.0"], allocation_size=2)]).SerializeToString()
    seeds = {
        "options": session([(dp + "GetDevicePluginOptions", frame(b""))]),
        "list-and-watch": session([(dp + "ListAndWatch", frame(b""))]),
        "allocate": session([(dp + "Allocate", frame(alloc))]),
        "allocate-split": session([(dp + "Allocate", frame(alloc))], split=3),
        "preferred": session([(dp + "GetPreferredAllocation", frame(pref))]),
        "prestart": session([(dp + "PreStartContainer",
                              frame(m.PreStartContainerRequest(devices_ids=["0000:01:00.0"]).SerializeToString()))]),
        "all": session([(dp + "GetDevicePluginOptions", frame(b"")), (dp + "ListAndWatch", frame(b"")),
                        (dp + "Allocate", frame(alloc)), (dp + "GetPreferredAllocation", frame(pref))]),
        "unknown-method": session([(dp + "Nope", frame(b""))]),
        "huge-length": session([(dp + "Allocate", struct.pack(">BI", 0, 0xFFFFFFFF) + b"xx")]),
    }
    write_seeds("grpc", seeds)
    ctl = {
        "status": b'{"jsonrpc":"2.0","id":1,"method":"daemon.status"}',
        "list": b'{"jsonrpc":"2.0","id":1,"method":"devices.list","params":{"vendor":"10de","class":"pci"}}',
        "get": b'{"jsonrpc":"2.0","id":"x","method":"devices.get","params":{"address":"0000:00:02.0"}}',
        "batch": b'[{"jsonrpc":"2.0","id":1,"method":"modules.list"},{"jsonrpc":"2.0","method":"events.subscribe","params":{"types":["device"]}}]',
        "rescan": b'{"jsonrpc":"2.0","id":2,"method":"daemon.rescan"}',
        "resources": b'{"jsonrpc":"2.0","id":3,"method":"resources.list"}',
        "bad": b'{"jsonrpc":"2.0","id":[],"method":7,"params":"x"}',
        "claim-release": b'{"jsonrpc":"2.0","id":1,"method":"pci.claim","params":{"address":"0000:01:00.0"}}\n'
                         b'{"jsonrpc":"2.0","id":2,"method":"claims.list"}\n'
                         b'{"jsonrpc":"2.0","id":3,"method":"pci.release","params":{"address":"0000:01:00.1"}}',
        "claim-resource": b'{"jsonrpc":"2.0","id":1,"method":"pci.claim","params":{"address":"0000:00:02.0",'
                          b'"resource_name":"example.com/nic"}}\n{"jsonrpc":"2.0","id":2,"method":"pci.release",'
                          b'"params":{"address":"0000:00:02.0","force":true}}',
        "claim-refused": b'{"jsonrpc":"2.0","id":1,"method":"pci.claim","params":{"address":"0000:00:1f.2"}}\n'
                         b'{"jsonrpc":"2.0","id":2,"method":"pci.claim","params":{"address":"0000:00:04.0"}}\n'
                         b'{"jsonrpc":"2.0","id":3,"method":"pci.claim","params":{"address":"0000:00:01.0"}}\n'
                         b'{"jsonrpc":"2.0","id":4,"method":"pci.claim","params":{"address":"0000:00:03.0"}}',
        "claim-twice": b'[{"jsonrpc":"2.0","id":1,"method":"pci.claim","params":{"address":"0000:01:00.1"}},'
                       b'{"jsonrpc":"2.0","id":2,"method":"pci.claim","params":{"address":"0000:01:00.0"}}]\n'
                       b'{"jsonrpc":"2.0","id":3,"method":"daemon.status"}',
    }
    write_seeds("ctl", ctl)
    conf = {
        "full": b'{"log_level":"debug","resync_interval":5,"debounce_ms":10,"control":{"max_clients":8,"max_output_bytes":65536},'
                b'"modules":{"disable":["usb"]},"resources":{"unlisted":"ignore","rules":[{"vendor":"10de","device":"20f1",'
                b'"class":"0302","address":"0000:3b:*","name":"nvidia.com/A100","advertise":true}]}}',
        "empty": b"{}",
        "bad-rule": b'{"resources":{"rules":[{"name":"bad_"}]}}',
    }
    write_seeds("conf", conf)
    write_seeds("proto", proto_seeds(m))
    write_seeds("scan", scan_seeds())
    write_seeds("uevent", uevent_seeds())
    write_seeds("state", state_seeds())
    write_seeds("names", names_seeds())
    write_seeds("proc", proc_seeds())
    write_seeds("worker", worker_seeds())


def esc(data):
    out = []
    for b in data:
        c = chr(b)
        if c == "\\":
            out.append("\\\\")
        elif c == "\n":
            out.append("\\n")
        elif 32 <= b < 127:
            out.append(c)
        else:
            out.append("\\x%02x" % b)
    return "".join(out)


def records(sysdir, keep):
    """The fuzz-tree.h records of the entries of a tree for which keep(rel)."""
    lines = []
    for root, dirs, files in os.walk(sysdir):
        dirs.sort()
        for name in sorted(dirs + files):
            p = os.path.join(root, name)
            rel = os.path.relpath(p, sysdir)
            if not keep(rel):
                continue
            if os.path.islink(p):
                lines.append("l %s %s" % (rel, os.readlink(p)))
            elif os.path.isdir(p):
                if not os.listdir(p):
                    lines.append("d %s" % rel)
            elif name != "config":
                with open(p, "rb") as f:
                    lines.append("f %s %s" % (rel, esc(f.read()[:256])))
    return lines


def host(name):
    d = tempfile.mkdtemp()
    simhost.build(name, d)
    return os.path.join(d, "sys")


def scan_seeds():
    seeds = {}
    for name in ("dell-190", "hp-130"):
        sysdir = host(name)
        devs = sorted(os.listdir(os.path.join(sysdir, "bus/pci/devices")))
        paths = {b: os.path.relpath(os.path.realpath(os.path.join(sysdir, "bus/pci/devices", b)),
                                    sysdir) for b in devs}
        # One seed per PCI function (its own files, links and group), and
        # one of the USB and mdev side.
        for b in devs:
            own = paths[b]

            def keep(rel, own=own, b=b):
                if rel.startswith(own + "/"):
                    rest = rel[len(own) + 1:]
                    return not re.match(r"[0-9a-f]{4}:", rest) and "usb" not in rest.split("/")[0]
                return rel == "bus/pci/devices/" + b or \
                    (rel.startswith("kernel/iommu_groups/") and rel.endswith("/" + b)) or \
                    (rel.startswith("bus/pci/drivers/") and rel.count("/") == 3 and
                     not rel.endswith(("bind", "unbind", "new_id", "remove_id")))
            seeds["%s-%s" % (name, b.replace(":", "_"))] = "\n".join(records(sysdir, keep)) + "\n"
        usb = records(sysdir, lambda rel: "usb" in rel or "mdev" in rel)
        if usb:
            seeds[name + "-usb-mdev"] = "\n".join(usb[:200]) + "\n"
    base = seeds[sorted(seeds)[1]]
    seeds["changed"] = base + "--\nf devices/pci0000:00/0000:00:02.0/numa_node 1\nr bus/pci/devices/0000:00:02.0\n"
    seeds["aer"] = ("l bus/pci/devices/0000:00:05.0 ../../../devices/pci0000:00/0000:00:05.0\n"
                    "f devices/pci0000:00/0000:00:05.0/vendor 0x8086\nf devices/pci0000:00/0000:00:05.0/device 0x1521\n"
                    "f devices/pci0000:00/0000:00:05.0/class 0x020000\n"
                    "f devices/pci0000:00/0000:00:05.0/aer_dev_fatal Undefined 0\\nTOTAL_ERR_FATAL 3\\n\n"
                    "f devices/pci0000:00/0000:00:05.0/aer_dev_nonfatal TOTAL_ERR_NONFATAL 2\\n\n"
                    "d devices/pci0000:00/0000:00:05.0/vfio-dev/vfio3\n0x10de\n-1\n0000:3b:00.0\n1-2.3\n")
    return seeds


def uevent_seeds():
    sysdir = host("dell-190")
    tree = records(sysdir, lambda rel: not rel.startswith(("module", "bus/pci/drivers")) or
                   rel.count("/") <= 3 and not rel.endswith(("bind", "unbind", "new_id", "remove_id")))
    devs = sorted(os.listdir(os.path.join(sysdir, "bus/pci/devices")))
    base = "\n".join(tree) + "\n"
    seeds = {}
    ev = []
    for b in devs[:6]:
        p = "/" + os.path.relpath(os.path.realpath(os.path.join(sysdir, "bus/pci/devices", b)), sysdir)
        ev += ["u change pci - %s %s" % (b, p), "u unbind pci - %s %s" % (b, p), "u bind pci - %s %s" % (b, p)]
    seeds["pci-events"] = base + "\n".join(ev) + "\n"
    b = devs[0]
    p = "/" + os.path.relpath(os.path.realpath(os.path.join(sysdir, "bus/pci/devices", b)), sysdir)
    seeds["remove-add"] = base + "r bus/pci/devices/%s\nu remove pci - %s %s\nl bus/pci/devices/%s ../../..%s\nu add pci - %s %s\n" % (b, b, p, b, p, b, p)
    usb = sorted(os.listdir(os.path.join(sysdir, "bus/usb/devices")))
    ev = []
    for u in usb[:4]:
        p = "/" + os.path.relpath(os.path.realpath(os.path.join(sysdir, "bus/usb/devices", u)), sysdir)
        ev += ["u add usb usb_device %s %s" % (u, p), "u bind usb usb_interface %s:1.0 %s/%s:1.0" % (u, p, u),
               "u remove usb usb_device %s %s" % (u, p)]
    seeds["usb-events"] = base + "\n".join(ev) + "\n"
    mdevs = sorted(os.listdir(os.path.join(sysdir, "bus/mdev/devices")))
    ev = []
    for m in mdevs[:2]:
        p = "/" + os.path.relpath(os.path.realpath(os.path.join(sysdir, "bus/mdev/devices", m)), sysdir)
        ev += ["u add mdev - %s %s" % (m, p), "u remove mdev - %s %s" % (m, p)]
    ev += ["u add mdev - 8a7b1fba-0d76-4c0a-9a5c-31a1c5b2a6f2 /devices/pci0000:00/0000:00:02.0/8a7b1fba-0d76-4c0a-9a5c-31a1c5b2a6f2"]
    seeds["mdev-events"] = base + "\n".join(ev) + "\n"
    seeds["burst"] = base + "".join("u change pci - %s /devices/pci0000:00/%s\n" % (b, b) for _ in range(70)) + \
        "u add block disk sda /devices/x\nu add pci - not-an-address /devices/x\n"
    seeds["small"] = ("l bus/pci/devices/0000:00:02.0 ../../../devices/pci0000:00/0000:00:02.0\n"
                      "f devices/pci0000:00/0000:00:02.0/vendor 0x10de\nf devices/pci0000:00/0000:00:02.0/device 0x20f1\n"
                      "f devices/pci0000:00/0000:00:02.0/class 0x030200\n"
                      "u change pci - 0000:00:02.0 /devices/pci0000:00/0000:00:02.0\n"
                      "f devices/pci0000:00/0000:00:02.0/numa_node 1\n"
                      "u bind pci - 0000:00:02.0 /devices/pci0000:00/0000:00:02.0\n"
                      "r devices/pci0000:00/0000:00:02.0\n"
                      "u remove pci - 0000:00:02.0 /devices/pci0000:00/0000:00:02.0\n")
    return seeds


def state_seeds():
    def claim(addr, group, members, state="claimed", **kw):
        c = {"address": addr, "iommu_group": group, "state": state,
             "members": [{"address": a, "original_driver": d, "bridge": False} for a, d in members],
             "from_config": False, "created": 1700000000, "allocations": 0, "advertised_as": ""}
        c.update(kw)
        return c
    gpu = claim("0000:01:00.0", 12, [("0000:01:00.0", "nvidia"), ("0000:01:00.1", "snd_hda_intel")])
    nic = claim("0000:00:02.0", 13, [("0000:00:02.0", None)], resource_name="example.com/nic")
    claiming = claim("0000:00:03.0", 14, [("0000:00:03.0", "igb")], state="claiming")
    releasing = claim("0000:01:00.0", 12, [("0000:01:00.0", "nvidia"), ("0000:01:00.1", "snd_hda_intel")],
                      state="releasing")
    bad_group = claim("0000:00:1f.2", 99, [("0000:00:1f.2", "ahci"), ("0000:00:04.0", "i915")])
    def doc(claims, boot="x"):
        return json.dumps({"version": 1, "boot_id": boot, "claims": claims}, sort_keys=True).encode()
    seeds = {
        "claimed": b"\x03" + doc([gpu, nic]),
        "claiming": b"\x03" + doc([claiming]),
        "releasing": b"\x03" + doc([releasing]),
        "protected-and-odd": b"\x03" + doc([bad_group, gpu, gpu]),
        "empty": b"\x01" + doc([]),
        "raw-unsigned": b"\x00" + doc([gpu]),
        "raw-torn": b"\x00" + doc([gpu])[:40],
        "raw-garbage": b"\x00\x00\xff{[",
    }
    return seeds


def names_seeds():
    return {
        "nvidia": "NVIDIA Corporation\nGA100 [A100 PCIe 40GB]\n10de 20b0\n/var/lib/kubelet/device-plugins\n"
                  "10de  NVIDIA Corporation\n\t20b0  GA100 [A100 SXM4 40GB]\n\t\t10de 134f  A100 40GB\n"
                  "C 03  Display controller\n\t02  3D controller\n\t\t00  VGA\n",
        "intel-vf": "Intel Corporation\nEthernet Controller X540 Virtual Function\n8086 1515\n/k\n"
                    "8086  Intel Corporation\n\t1515  X540 Ethernet Controller Virtual Function\n",
        "bracket": "Advanced Micro Devices, Inc. [AMD/ATI]\nNavi 21 [Radeon RX 6800/6800 XT / 6900 XT]\n1002 73bf\n"
                   "/var/lib/kubelet/device-plugins/a/very/long/directory/name/that/eats/most/of/the/socket/path/budget/xx\n",
        "usb": "Logitech, Inc.\nUnifying Receiver\n046d c52b\n/k\n046d  Logitech, Inc.\n\tc52b  Unifying Receiver\n",
        "junk": "...\n___\nffff ffff\n/\n",
    }


def proc_seeds():
    mount = ("== mountinfo\n"
             "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
             "23 22 253:0 / /var rw - xfs /dev/mapper/vg-var rw\n"
             "24 22 0:5 / /proc rw - proc proc rw\n")
    tree = ("l dev/block/8:1 ../../devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sda/sda1\n"
            "l dev/block/253:0 ../../devices/virtual/block/dm-0\n"
            "l devices/virtual/block/dm-0/slaves/nvme0n1 ../../../../pci0000:00/0000:00:02.0/nvme/nvme0/nvme0n1\n"
            "f devices/pci0000:00/0000:00:02.0/nvme/nvme0/nvme0n1/dev 259:0\\n\n"
            "l dev/block/259:0 ../../devices/pci0000:00/0000:00:02.0/nvme/nvme0/nvme0n1\n")
    route = ("== route\n"
             "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
             "br0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
             "== ipv6_route\n"
             "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 bond0\n")
    net = ("l class/net/eth0 ../../devices/pci0000:00/0000:00:03.0/net/eth0\n"
           "l class/net/bond0/lower_eth0 ../eth0\n"
           "d class/net/br0/brif/bond0\n"
           "l class/net/bond1 ../../devices/virtual/net/bond1\n"
           "l class/graphics/fb0/device ../../../devices/pci0000:00/0000:00:04.0\n")
    return {
        "mounts": mount + tree,
        "swap": "== swaps\nFilename\tType\tSize\tUsed\tPriority\n/dev/sda2 partition 1 0 -2\n/nonexistent file 1 0 -3\n" + tree,
        "route": route + net,
        "all": mount + route + "== swaps\n/dev/null\n" + tree + net,
        "empty-tables": "== mountinfo\n== route\n== ipv6_route\n== swaps\n",
    }


def worker_seeds():
    return {
        "write": '{"op":"write","path":"bus/pci/devices/0000:00:02.0/driver_override","value":"vfio-pci","id":1}',
        "unbind": '{"op":"write","path":"bus/pci/drivers/igb/unbind","value":"0000:00:03.0","id":2}',
        "escape": '{"op":"write","path":"../../etc/hostname","value":"x","id":3}',
        "missing": '{"op":"write","path":"bus/pci/nope","value":"1","id":4}',
        "holders": '{"op":"holders","paths":["/dev/null"],"prefixes":["/dev/nvidia","/dev/pts/"],"id":5}',
        "wait-free": '{"op":"wait_free","paths":["/dev/vfio/12"],"prefixes":[],"timeout_ms":100,"id":6}',
        "unknown": '{"op":"reboot","id":7}',
        "no-op": '{"id":8}',
        "not-json": '{"op":',
        "wrong-types": '{"op":"write","path":5,"value":null,"id":"x"}',
    }


def proto_seeds(m):
    alloc = m.AllocateRequest(container_requests=[
        m.ContainerAllocateRequest(devices_ids=["0000:01:00.0", "0000:01:00.1"]),
        m.ContainerAllocateRequest(devices_ids=["0000:03:00.0"])]).SerializeToString()
    pref = m.PreferredAllocationRequest(container_requests=[
        m.ContainerPreferredAllocationRequest(
            available_deviceIDs=["0000:01:00.0", "0000:01:00.1", "0000:02:00.0", "0000:03:00.0"],
            must_include_deviceIDs=["0000:03:00.0"], allocation_size=2)]).SerializeToString()
    return {
        "options": b"\x00",
        "list-and-watch": b"\x01",
        "allocate": b"\x02" + alloc,
        "allocate-unknown": b"\x02" + m.AllocateRequest(container_requests=[
            m.ContainerAllocateRequest(devices_ids=["0000:99:00.0"])]).SerializeToString(),
        "preferred": b"\x03" + pref,
        "preferred-too-many": b"\x03" + m.PreferredAllocationRequest(container_requests=[
            m.ContainerPreferredAllocationRequest(available_deviceIDs=["0000:01:00.0"],
                                                  allocation_size=5)]).SerializeToString(),
        "prestart": b"\x04" + m.PreStartContainerRequest(devices_ids=["0000:01:00.0"]).SerializeToString(),
        "garbage": b"\x02\xff\xff\xff\xff\x0f",
    }


if __name__ == "__main__":
    main()
