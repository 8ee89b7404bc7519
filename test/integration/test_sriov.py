# SPDX-License-Identifier: MIT
"""modules/sriov on simulated hosts: VF count, VF settings over rtnetlink,
refusals, rollback, journal, drift and kill -9.

A simulated host has no kernel behind its netdevs, so two stand-ins play it:
- SimSriov writes VFs into the sysfs tree when sriov_numvfs is written (the
  virtfn/physfn links, each VF on igbvf with its own netdev and MAC);
- SimNetlink answers the module's rtnetlink requests on a SOCK_SEQPACKET
  socket (the module's HOSTDEVD_SRIOV_NETLINK test seam): RTM_GETLINK with
  the VF list, link and route dumps, RTM_SETLINK of VF attributes applied
  in the kernel's order and with igb's limits (no link state, 802.1Q only,
  min rate 0, no multicast MAC). A count change wipes the VF settings, as
  the kernel does. It answers generic netlink too (on its own connection,
  as the module's NETLINK_GENERIC socket): the controller's family lookup
  and devlink's ESWITCH_GET per PF (a mode, or an errno like igb's). The real kernel (igb under QEMU 10) is test/vm's
  scenario-sriov.
"""

import errno
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading

import pytest

import hdtest
import simhost
from kubelet import Kubelet
from simkernel import SimKernel

PF = "0000:01:00.0"
PF_IF = "enp1s0"
PF_IFINDEX = 2
MGMT = "0000:02:00.0"
MGMT_IF = "eno2"
NVME = "0000:03:00.0"
TOTALVFS = 7

# --- netlink constants (uapi) ---------------------------------------------------
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP = 1, 2, 4, 0x300
RTM_NEWLINK, RTM_GETLINK, RTM_SETLINK, RTM_NEWROUTE, RTM_GETROUTE = 16, 18, 19, 24, 26
IFLA_IFNAME, IFLA_LINK, IFLA_MASTER, IFLA_OPERSTATE, IFLA_LINKINFO = 3, 5, 10, 16, 18
IFLA_NUM_VF, IFLA_VFINFO_LIST, IFLA_EXT_MASK = 21, 22, 29
IFLA_INFO_KIND = 1
IFLA_VF_INFO = 1
(IFLA_VF_MAC, IFLA_VF_VLAN, IFLA_VF_TX_RATE, IFLA_VF_SPOOFCHK, IFLA_VF_LINK_STATE,
 IFLA_VF_RATE, IFLA_VF_RSS_QUERY_EN, IFLA_VF_STATS, IFLA_VF_TRUST) = range(1, 10)
IFLA_VF_VLAN_LIST, IFLA_VF_VLAN_INFO = 12, 1
RTA_OIF, RTA_TABLE = 4, 15
RTEXT_FILTER_VF = 1
# generic netlink: the controller and devlink (27: this responder's family id)
GENL_ID_CTRL, CTRL_CMD_NEWFAMILY, CTRL_CMD_GETFAMILY = 16, 1, 3
CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 1, 2
DEVLINK_FAMILY, DEVLINK_CMD_ESWITCH_GET = 27, 29
DEVLINK_ATTR_BUS_NAME, DEVLINK_ATTR_DEV_NAME, DEVLINK_ATTR_ESWITCH_MODE = 1, 2, 25
DEVLINK_ATTR_ESWITCH_INLINE_MODE = 26
ESWITCH_MODES = {"legacy": 0, "switchdev": 1}
NLMSG_HDR = struct.Struct("=IHHII")
IFINFOMSG = struct.Struct("=BxHiII")
RTMSG = struct.Struct("=BBBBBBBBI")


def align(n):
    return (n + 3) & ~3


def attr(atype, payload):
    return struct.pack("=HH", 4 + len(payload), atype) + payload + b"\0" * (align(len(payload)) - len(payload))


def attrs(data):
    """{type: [payload...]} of a run of attributes."""
    out = {}
    off = 0
    while off + 4 <= len(data):
        alen, atype = struct.unpack_from("=HH", data, off)
        if alen < 4 or off + alen > len(data):
            break
        out.setdefault(atype & 0x3fff, []).append(data[off + 4:off + alen])
        off += align(alen)
    return out


def msg(mtype, flags, seq, payload):
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(payload), mtype, flags, seq, 0) + payload


def mac_bytes(s):
    return bytes(int(x, 16) for x in s.split(":"))


def mac_str(b):
    return ":".join(f"{x:02x}" for x in b[:6])


def default_vf():
    return {"mac": "00:00:00:00:00:00", "vlan": 0, "qos": 0, "proto": 0x8100, "min": 0, "max": 0,
            "spoofchk": 1, "trust": 0, "link_state": 0}


class SimNetlink:
    """An rtnetlink responder with igb's behaviour, for the module's seam."""

    def __init__(self, path, sysfs):
        self.path = path
        self.sysfs = sysfs
        self.links = {}        # ifindex -> {"name", "master", "link", "kind", "pf"}
        self.default_oifs = []
        self.vfs = {}          # ifindex -> [vf dict]
        self.unsupported = {"link_state"}
        self.setlinks = []     # (vf, attribute) applied or refused, in order
        self.hold_setlink = threading.Event()   # set: SETLINK waits for release
        self.release = threading.Event()
        self.in_setlink = threading.Event()
        self.lock = threading.Lock()
        self.devlink = True    # False: no devlink family (the controller says ENOENT)
        self.eswitch = {}      # PF address -> "legacy" | "switchdev" | an errno; absent: ENODEV (igb)
        self.devlink_asked = []   # (bus, dev) of each ESWITCH_GET
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.bind(path)
        self.sock.listen(16)
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def add_link(self, ifindex, name, pf=None, master=0, link=0, kind=""):
        self.links[ifindex] = {"name": name, "master": master, "link": link, "kind": kind, "pf": pf}
        if pf:
            self.vfs[ifindex] = []

    def numvfs(self, ifindex):
        pf = self.links[ifindex]["pf"]
        with open(os.path.join(self.sysfs, "bus/pci/devices", pf, "sriov_numvfs")) as f:
            return int(f.read().strip() or 0)

    def table(self, ifindex):
        """The VF table, wiped when the count changed (as the kernel does)."""
        n = self.numvfs(ifindex)
        if len(self.vfs[ifindex]) != n:
            self.vfs[ifindex] = [default_vf() for _ in range(n)]
        return self.vfs[ifindex]

    def stop(self):
        self.stopped = True
        self.release.set()
        try:
            self.sock.close()
        except OSError:
            pass

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                try:
                    reply = self._handle(data)
                except Exception as e:  # noqa: BLE001 - a test helper says why
                    print("simnetlink:", repr(e))
                    reply = b""
                try:
                    conn.send(reply)
                except OSError:
                    return

    # -- answers ---------------------------------------------------------------
    def _error(self, seq, err, req=b""):
        return msg(NLMSG_ERROR, 0, seq, struct.pack("=i", -err) + req[:16])

    def _link_msg(self, ifindex, seq, flags, with_vf):
        link = self.links[ifindex]
        body = IFINFOMSG.pack(0, 1, ifindex, 0x1 | 0x40, 0)
        body += attr(IFLA_IFNAME, link["name"].encode() + b"\0")
        body += attr(IFLA_OPERSTATE, b"\x06")
        if link["master"]:
            body += attr(IFLA_MASTER, struct.pack("=I", link["master"]))
        if link["link"]:
            body += attr(IFLA_LINK, struct.pack("=I", link["link"]))
        if link["kind"]:
            body += attr(IFLA_LINKINFO, attr(IFLA_INFO_KIND, link["kind"].encode() + b"\0"))
        if link["pf"]:
            vfs = self.table(ifindex)
            body += attr(IFLA_NUM_VF, struct.pack("=I", len(vfs)))
            if with_vf:
                infos = b""
                for i, vf in enumerate(vfs):
                    a = attr(IFLA_VF_MAC, struct.pack("=I", i) + mac_bytes(vf["mac"]) + b"\0" * 26)
                    a += attr(IFLA_VF_VLAN, struct.pack("=III", i, vf["vlan"], vf["qos"]))
                    a += attr(IFLA_VF_RATE, struct.pack("=III", i, vf["min"], vf["max"]))
                    a += attr(IFLA_VF_TX_RATE, struct.pack("=II", i, vf["max"]))
                    a += attr(IFLA_VF_SPOOFCHK, struct.pack("=II", i, vf["spoofchk"]))
                    a += attr(IFLA_VF_LINK_STATE, struct.pack("=II", i, vf["link_state"]))
                    a += attr(IFLA_VF_RSS_QUERY_EN, struct.pack("=II", i, 0xffffffff))
                    a += attr(IFLA_VF_TRUST, struct.pack("=II", i, vf["trust"]))
                    a += attr(IFLA_VF_VLAN_LIST, attr(IFLA_VF_VLAN_INFO, struct.pack(
                        "=IIIHxx", i, vf["vlan"], vf["qos"], socket.htons(vf["proto"]))))
                    infos += attr(IFLA_VF_INFO, a)
                body += attr(IFLA_VFINFO_LIST, infos)
        return msg(RTM_NEWLINK, flags, seq, body)

    def _genl(self, mtype, seq, payload, data):
        cmd = payload[0]
        a = {t: v[0].rstrip(b"\0").decode() for t, v in attrs(payload[4:]).items()}
        if mtype == GENL_ID_CTRL:
            if cmd != CTRL_CMD_GETFAMILY or a.get(CTRL_ATTR_FAMILY_NAME) != "devlink" or not self.devlink:
                return self._error(seq, errno.ENOENT, data)
            return msg(GENL_ID_CTRL, 0, seq, bytes([CTRL_CMD_NEWFAMILY, 2, 0, 0])
                       + attr(CTRL_ATTR_FAMILY_NAME, b"devlink\0")
                       + attr(CTRL_ATTR_FAMILY_ID, struct.pack("=H", DEVLINK_FAMILY)))
        if cmd != DEVLINK_CMD_ESWITCH_GET or not self.devlink:
            return self._error(seq, errno.EOPNOTSUPP, data)
        bus, dev = a.get(DEVLINK_ATTR_BUS_NAME, ""), a.get(DEVLINK_ATTR_DEV_NAME, "")
        self.devlink_asked.append((bus, dev))
        mode = self.eswitch.get(dev, errno.ENODEV) if bus == "pci" else errno.ENODEV
        if isinstance(mode, int):
            return self._error(seq, mode, data)
        return msg(DEVLINK_FAMILY, 0, seq, bytes([DEVLINK_CMD_ESWITCH_GET, 1, 0, 0])
                   + attr(DEVLINK_ATTR_BUS_NAME, b"pci\0") + attr(DEVLINK_ATTR_DEV_NAME, dev.encode() + b"\0")
                   + attr(DEVLINK_ATTR_ESWITCH_MODE, struct.pack("=H", ESWITCH_MODES[mode]))
                   + attr(DEVLINK_ATTR_ESWITCH_INLINE_MODE, b"\0"))

    def _handle(self, data):
        _len, mtype, flags, seq, _pid = NLMSG_HDR.unpack_from(data)
        payload = data[NLMSG_HDR.size:]
        with self.lock:
            # The module sends no RTM_ request of these numbers (16 is RTM_NEWLINK).
            if mtype in (GENL_ID_CTRL, DEVLINK_FAMILY):
                return self._genl(mtype, seq, payload, data)
            if mtype == RTM_GETLINK and flags & NLM_F_DUMP == NLM_F_DUMP:
                out = b"".join(self._link_msg(i, seq, NLM_F_MULTI, False) for i in sorted(self.links))
                return out + msg(NLMSG_DONE, NLM_F_MULTI, seq, struct.pack("=i", 0))
            if mtype == RTM_GETROUTE:
                family = payload[0]
                out = b""
                if family == socket.AF_INET:
                    for oif in self.default_oifs:
                        body = RTMSG.pack(family, 0, 0, 0, 254, 4, 0, 1, 0)
                        body += attr(RTA_TABLE, struct.pack("=I", 254)) + attr(RTA_OIF, struct.pack("=I", oif))
                        out += msg(RTM_NEWROUTE, NLM_F_MULTI, seq, body)
                return out + msg(NLMSG_DONE, NLM_F_MULTI, seq, struct.pack("=i", 0))
            _fam, _type, ifindex, _fl, _ch = IFINFOMSG.unpack_from(payload)
            a = attrs(payload[IFINFOMSG.size:])
            if ifindex not in self.links:
                return self._error(seq, errno.ENODEV, data)
            if mtype == RTM_GETLINK:
                mask = struct.unpack("=I", a[IFLA_EXT_MASK][0])[0] if IFLA_EXT_MASK in a else 0
                return self._link_msg(ifindex, seq, 0, bool(mask & RTEXT_FILTER_VF))
            if mtype != RTM_SETLINK or ifindex not in self.vfs:
                return self._error(seq, errno.EOPNOTSUPP, data)
        # SETLINK may be held (kill -9 tests): outside the lock.
        if self.hold_setlink.is_set():
            self.in_setlink.set()
            self.release.wait(30)
        with self.lock:
            return self._error(seq, self._setlink(ifindex, a), data)

    def _setlink(self, ifindex, a):
        vfs = self.table(ifindex)
        for info in attrs(a.get(IFLA_VFINFO_LIST, [b""])[0]).get(IFLA_VF_INFO, []):
            va = attrs(info)
            # The kernel's order; the first error returns, earlier ones stay.
            for t, name in ((IFLA_VF_MAC, "mac"), (IFLA_VF_VLAN, "vlan"), (IFLA_VF_VLAN_LIST, "vlan"),
                            (IFLA_VF_RATE, "rate"), (IFLA_VF_SPOOFCHK, "spoofchk"),
                            (IFLA_VF_LINK_STATE, "link_state"), (IFLA_VF_TRUST, "trust")):
                if t not in va:
                    continue
                p = va[t][0]
                if t == IFLA_VF_VLAN_LIST:
                    p = attrs(p)[IFLA_VF_VLAN_INFO][0]
                vf = struct.unpack_from("=I", p)[0]
                if vf >= len(vfs):
                    return errno.EINVAL
                self.setlinks.append((vf, name))
                if name in self.unsupported:
                    return errno.EOPNOTSUPP
                v = vfs[vf]
                if t == IFLA_VF_MAC:
                    m = p[4:10]
                    if m[0] & 1:
                        return errno.EINVAL
                    v["mac"] = mac_str(m)
                elif t == IFLA_VF_VLAN:
                    _, vlan, qos = struct.unpack_from("=III", p)
                    if vlan > 4095 or qos > 7:
                        return errno.EINVAL
                    v.update(vlan=vlan, qos=qos, proto=0x8100)
                elif t == IFLA_VF_VLAN_LIST:
                    _, vlan, qos, proto = struct.unpack_from("=IIIH", p)
                    if socket.ntohs(proto) != 0x8100:
                        return errno.EPROTONOSUPPORT    # igb: 802.1Q only
                    v.update(vlan=vlan, qos=qos, proto=0x8100)
                elif t == IFLA_VF_RATE:
                    _, lo, hi = struct.unpack_from("=III", p)
                    if lo != 0:
                        return errno.EINVAL             # igb: no minimum rate
                    v.update(min=lo, max=hi)
                elif t == IFLA_VF_SPOOFCHK:
                    v["spoofchk"] = struct.unpack_from("=II", p)[1]
                elif t == IFLA_VF_LINK_STATE:
                    v["link_state"] = struct.unpack_from("=II", p)[1]
                elif t == IFLA_VF_TRUST:
                    v["trust"] = struct.unpack_from("=II", p)[1]
        return 0


class SimSriov:
    """Plays the PCI core's part for sriov_numvfs writes in the tree."""

    def __init__(self, tree, pfs):
        self.tree = tree
        self.pfs = pfs         # address -> (vf device id, netdev prefix or None, VF address fn)
        self.hold = threading.Event()     # set: new VFs wait for release
        self.release = threading.Event()
        self.seen = []         # (pf, value) as read at each write
        self.stop_flag = threading.Event()
        self.counts = {pf: 0 for pf in pfs}
        self.kernel = None     # a SimKernel that plays bind, unbind, drivers_probe
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.mtimes = {}
        self.thread.start()

    def path(self, pf):
        return os.path.join(self.tree.sys, "bus/pci/devices", pf, "sriov_numvfs")

    def _run(self):
        # Polling the files' contents: simple and safe for a test helper.
        while not self.stop_flag.wait(0.02):
            for pf in self.pfs:
                try:
                    with open(self.path(pf)) as f:
                        text = f.read().strip()
                except OSError:
                    continue
                if not text.isdigit() or int(text) == self.counts[pf]:
                    continue
                n = int(text)
                self.seen.append((pf, n))
                if n and self.hold.is_set():
                    self.release.wait(30)
                self.apply(pf, n)

    def vf_addr(self, pf, i):
        return self.pfs[pf][2](i)

    def apply(self, pf, n):
        if self.kernel is None:
            self._apply(pf, n)
            return
        # The simulated kernel takes no write to the new VFs before it
        # watches them (their driver_override, igbvf's bind and unbind).
        with self.kernel.lock:
            self._apply(pf, n)
            self.kernel.rescan()

    def _apply(self, pf, n):
        t = self.tree
        device, prefix, _ = self.pfs[pf]
        for i in range(self.counts[pf]):
            addr = self.vf_addr(pf, i)
            rel = t.devices.pop(addr)
            full = t.path(rel)
            for link in (f"bus/pci/devices/{addr}", f"{t.devices[pf]}/virtfn{i}"):
                if os.path.lexists(t.path(link)):
                    os.unlink(t.path(link))
            for drv in os.listdir(t.path("bus/pci/drivers")):
                if os.path.lexists(t.path(f"bus/pci/drivers/{drv}/{addr}")):
                    os.unlink(t.path(f"bus/pci/drivers/{drv}/{addr}"))
            if prefix and os.path.lexists(t.path(f"class/net/{prefix}v{i}")):
                os.unlink(t.path(f"class/net/{prefix}v{i}"))
            group = 200 + i + (10 if prefix is None else 0)
            shutil.rmtree(t.path(f"kernel/iommu_groups/{group}"), ignore_errors=True)
            # A VF on vfio-pci takes its group's node along.
            if os.path.exists(os.path.join(t.dev, "vfio", str(group))):
                os.unlink(os.path.join(t.dev, "vfio", str(group)))
            shutil.rmtree(full, ignore_errors=True)
        vendor = 0x8086 if prefix else 0x144d
        parent = "0000:00:01.0" if prefix else "0000:00:03.0"
        for i in range(n):
            addr = self.vf_addr(pf, i)
            t.pci(addr, vendor, device, 0x020000 if prefix else 0x010802, parent=parent,
                  driver="igbvf" if prefix else "nvme", group=200 + i + (10 if prefix is None else 0))
            t.link(f"{t.devices[pf]}/virtfn{i}", t.devices[addr])
            t.link(f"{t.devices[addr]}/physfn", t.devices[pf])
            if prefix:
                t.netdev(addr, f"{prefix}v{i}")
                t.write(f"{t.devices[addr]}/net/{prefix}v{i}/address", f"02:00:00:00:01:{i:02x}\n")
        self.counts[pf] = n

    def stop(self):
        self.stop_flag.set()
        self.release.set()
        self.thread.join(5)


def build_host(root):
    """An igb PF (82576, 7 VFs) with its netdev, a PF under bond0 with a VLAN
    carrying the default route, an NVMe PF with VFs and no netdev."""
    t = simhost.Tree(root)
    t.pci("0000:00:00.0", 0x8086, 0x29c0, 0x060000, group=0)
    t.pci("0000:00:01.0", 0x8086, 0x29c1, 0x060400, driver="pcieport", group=1)
    t.pci("0000:00:02.0", 0x8086, 0x29c1, 0x060400, driver="pcieport", group=2)
    t.pci("0000:00:03.0", 0x8086, 0x29c1, 0x060400, driver="pcieport", group=3)
    t.driver_dir("pci", "igbvf")    # loaded: its VFs come and go
    t.pci(PF, 0x8086, 0x10c9, 0x020000, parent="0000:00:01.0", driver="igb", group=10)
    t.sriov(PF, [], TOTALVFS, offset_bdf=128)
    t.netdev(PF, PF_IF)
    t.write(f"{t.devices[PF]}/net/{PF_IF}/ifindex", f"{PF_IFINDEX}\n")
    t.pci(MGMT, 0x8086, 0x10c9, 0x020000, parent="0000:00:02.0", driver="igb", group=11)
    t.sriov(MGMT, [], TOTALVFS, offset_bdf=128)
    t.netdev(MGMT, MGMT_IF)
    t.write(f"{t.devices[MGMT]}/net/{MGMT_IF}/ifindex", "3\n")
    t.pci(NVME, 0x144d, 0xa824, 0x010802, parent="0000:00:03.0", driver="nvme", group=12)
    t.sriov(NVME, [], 4, offset_bdf=1)
    return t


class Host:
    def __init__(self, tmp):
        self.root = os.path.join(tmp, "host")
        self.tree = build_host(self.root)
        self.kernel = None
        self.sock = os.path.join(tmp, "nl.sock")
        self.nl = SimNetlink(self.sock, self.tree.sys)
        self.nl.add_link(1, "lo")
        self.nl.add_link(PF_IFINDEX, PF_IF, pf=PF)
        self.nl.add_link(3, MGMT_IF, pf=MGMT, master=10)
        self.nl.add_link(10, "bond0", kind="bond")
        self.nl.add_link(11, "bond0.5", link=10, kind="vlan")
        self.nl.default_oifs = [11]
        self.sim = SimSriov(self.tree, {
            PF: (0x10ca, PF_IF, lambda i: f"0000:01:10.{i}"),
            MGMT: (0x10ca, MGMT_IF, lambda i: f"0000:02:10.{i}"),
            NVME: (0xa824, None, lambda i: f"0000:03:00.{i + 1}"),
        })

    def start_kernel(self):
        """A simulated kernel for driver_override, unbind and drivers_probe
        (the IOMMU-group engine's writes), new VFs included."""
        self.kernel = SimKernel(self.root)
        self.sim.kernel = self.kernel
        return self.kernel

    def numvfs(self, pf=PF):
        with open(self.sim.path(pf)) as f:
            return int(f.read().strip())

    def vfs(self):
        with self.nl.lock:
            return [dict(v) for v in self.nl.table(PF_IFINDEX)]

    def stop(self):
        self.sim.stop()
        self.nl.stop()
        if self.kernel:
            self.kernel.stop()


@pytest.fixture
def host(tmp_path):
    h = Host(str(tmp_path))
    yield h
    h.stop()


@pytest.fixture
def sriov_daemon(make_daemon, host):
    def factory(config=None, start=True, env=None):
        e = {"HOSTDEVD_SRIOV_NETLINK": host.sock}
        e.update(env or {})
        cfg = {"sriov": {"check_interval_ms": 0}}
        cfg.update(config or {})
        return make_daemon(host=None, tree=host.root, config=cfg, env=e, start=start)
    return factory


def call_error(d, method, params):
    c = d.client(timeout=60)
    try:
        with pytest.raises(hdtest.RpcError) as e:
            c.call(method, params, timeout=60)
        return e.value
    finally:
        c.close()


def state_section(d):
    with open(os.path.join(d.state, "state.json")) as f:
        st = json.load(f)
    return st.get("modules", st).get("sriov") if isinstance(st.get("modules", st), dict) else None


def sriov_state_text(d):
    with open(os.path.join(d.state, "state.json")) as f:
        return f.read()


VF0 = {"index": 0, "mac": "52:54:00:12:34:56", "vlan": 100, "qos": 3, "trust": True}
VF1 = {"index": 1, "mac": "52:54:00:12:34:57", "spoofchk": False, "max_tx_rate": 100}


def configure(d, **params):
    c = d.client(timeout=60)
    try:
        return c.call("sriov.configure", params, timeout=60)
    finally:
        c.close()


# --- tests ------------------------------------------------------------------------


def test_list_shows_pfs_management_and_vfs(sriov_daemon, host):
    d = sriov_daemon()
    pfs = {p["address"]: p for p in d.call("sriov.list")}
    assert set(pfs) == {PF, MGMT, NVME}
    p = pfs[PF]
    assert p["netdev"] == PF_IF and p["totalvfs"] == TOTALVFS and p["numvfs"] == 0
    assert p["management"] is False and p["vfs"] == [] and p["driver"] == "igb"
    m = pfs[MGMT]
    assert m["management"] is True and m["management_via"] == "bond0.5"
    n = pfs[NVME]
    assert n["netdev"] is None and n["totalvfs"] == 4 and "vfs" not in n and "netlink_error" not in n


def test_list_shows_eswitch_mode_where_devlink_says(sriov_daemon, host):
    """devlink's eswitch mode per PF: what its driver says, null where the
    driver has no devlink eswitch (EOPNOTSUPP, igb's missing instance ENODEV),
    no netdev (NVMe) or no devlink family at all; never an inspect failure."""
    host.nl.eswitch = {PF: "switchdev", MGMT: errno.EOPNOTSUPP}
    d = sriov_daemon()

    def listed():
        return {p["address"]: p for p in d.call("sriov.list")}

    pfs = listed()
    assert pfs[PF]["eswitch"] == "switchdev" and pfs[PF]["vfs"] == []
    m = pfs[MGMT]
    assert m["eswitch"] is None and m["management"] is True
    assert "eswitch_error" not in m and "netlink_error" not in m
    assert "eswitch" in pfs[NVME] and pfs[NVME]["eswitch"] is None
    assert set(host.nl.devlink_asked) == {("pci", PF), ("pci", MGMT)}
    host.nl.eswitch = {PF: "legacy"}          # MGMT: ENODEV, as igb
    pfs = listed()
    assert pfs[PF]["eswitch"] == "legacy" and pfs[MGMT]["eswitch"] is None
    assert "eswitch_error" not in pfs[MGMT]
    host.nl.devlink = False                   # no devlink family: nothing asked of devlink
    del host.nl.devlink_asked[:]
    pfs = listed()
    assert [pfs[a]["eswitch"] for a in (PF, MGMT, NVME)] == [None, None, None]
    assert host.nl.devlink_asked == [] and pfs[PF]["vfs"] == [] and "netlink_error" not in pfs[PF]
    host.nl.devlink = True                    # another error: null, and said
    host.nl.eswitch = {PF: errno.EPERM, MGMT: "switchdev"}
    pfs = listed()
    assert pfs[PF]["eswitch"] is None and pfs[PF]["eswitch_error"] == "devlink: Operation not permitted"
    assert pfs[MGMT]["eswitch"] == "switchdev" and "netlink_error" not in pfs[PF]


def test_configure_sets_count_and_vf_settings_read_back(sriov_daemon, host):
    d = sriov_daemon()
    c = d.client()
    c.call("events.subscribe", {"types": ["sriov"]})
    r = configure(d, pf=PF_IF, num_vfs=2, vfs=[VF0, VF1])
    assert r["pf"] == PF and r["num_vfs"] == 2 and host.numvfs() == 2
    got = {v["index"]: v for v in r["vfs"]}
    assert got[0]["mac"] == VF0["mac"] and got[0]["vlan"] == 100 and got[0]["qos"] == 3
    assert got[0]["trust"] is True and got[0]["spoofchk"] is True
    assert got[1]["spoofchk"] is False and got[1]["max_tx_rate"] == 100 and got[1]["trust"] is False
    assert [v["address"] for v in r["vf_devices"]] == ["0000:01:10.0", "0000:01:10.1"]
    k = host.vfs()
    assert k[0]["mac"] == VF0["mac"] and k[0]["vlan"] == 100 and k[0]["trust"] == 1
    assert k[1]["mac"] == VF1["mac"] and k[1]["spoofchk"] == 0 and k[1]["max"] == 100
    # The record is in state.json, applied.
    text = sriov_state_text(d)
    assert VF0["mac"] in text and '"applied"' in text
    # sriov.list reads it back too.
    p = next(x for x in d.call("sriov.list") if x["address"] == PF)
    assert p["numvfs"] == 2 and p["vfs"][0]["mac"] == VF0["mac"] and p["phase"] == "applied"
    ev = c.next_event(timeout=10)
    assert ev["type"] == "sriov.configured" and ev["pf"] == PF and ev["reapplied"] is False
    c.close()


def test_cli_configure(sriov_daemon, host):
    d = sriov_daemon()
    out = subprocess.run([hdtest.HOSTDEVCTL, "--socket", d.sock, "sriov", "configure",
                          f"pf={PF}", "num_vfs=1",
                          'vfs=[{"index": 0, "mac": "52:54:00:aa:bb:cc", "trust": true}]'],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr + out.stdout
    assert host.numvfs() == 1 and host.vfs()[0]["mac"] == "52:54:00:aa:bb:cc"


def test_omitted_attributes_go_back_to_defaults(sriov_daemon, host):
    d = sriov_daemon()
    configure(d, pf=PF, num_vfs=2, vfs=[VF0, VF1])
    # Same count, VF 1 omitted and VF 0 without a VLAN: declarative.
    r = configure(d, pf=PF, num_vfs=2, vfs=[{"index": 0, "mac": VF0["mac"]}])
    k = host.vfs()
    assert k[0]["mac"] == VF0["mac"] and k[0]["vlan"] == 0 and k[0]["trust"] == 0
    assert k[1] == {**k[1], "mac": "00:00:00:00:00:00", "spoofchk": 1, "max": 0}
    assert {v["index"]: v["vlan"] for v in r["vfs"]} == {0: 0, 1: 0}


@pytest.mark.parametrize("bad, attribute, words", [
    ({"link_state": "disable"}, "link_state", "Operation not supported"),
    ({"vlan": 200, "vlan_proto": "802.1ad"}, "vlan", "Protocol not supported"),
    ({"max_tx_rate": 100, "min_tx_rate": 10}, "rate", "Invalid argument"),
])
def test_unsupported_attribute_names_it_and_rolls_back(sriov_daemon, host, bad, attribute, words):
    d = sriov_daemon()
    configure(d, pf=PF, num_vfs=2, vfs=[VF0, VF1])
    before = host.vfs()
    record = sriov_state_text(d)
    n = len(host.nl.setlinks)
    # A new MAC (applied first by the kernel's order) and the bad attribute.
    e = call_error(d, "sriov.configure",
                   {"pf": PF, "num_vfs": 2, "vfs": [{**VF0, "mac": "52:54:00:00:00:99", **bad}, VF1]})
    assert e.code == -32010
    assert f"VF 0 {attribute}" in e.message and words in e.message and "rolled back" in e.message
    # The MAC was applied before the failure, then put back.
    assert (0, "mac") in host.nl.setlinks[n:]
    assert host.vfs() == before
    assert sriov_state_text(d) == record, "the record is the one before the call"


def test_refusals_change_nothing(sriov_daemon, host):
    d = sriov_daemon()
    configure(d, pf=PF, num_vfs=1, vfs=[{"index": 0, "mac": "52:54:00:12:34:56"}])
    record = sriov_state_text(d)
    n = len(host.nl.setlinks)
    cases = [
        ({"pf": MGMT_IF, "num_vfs": 2}, -32003, "management uplink"),
        ({"pf": PF, "num_vfs": TOTALVFS + 1}, -32602, "above sriov_totalvfs 7"),
        ({"pf": PF, "num_vfs": 1, "vfs": [{"index": 0, "mac": "01:00:5e:00:00:01"}]}, -32602, "multicast"),
        ({"pf": PF, "num_vfs": 1, "vfs": [{"index": 0, "mac": "52:54:00:12:34"}]}, -32602, "vfs[0].mac"),
        ({"pf": PF, "num_vfs": 1, "vfs": [{"index": 0, "vlan": 4096}]}, -32602, "vfs[0].vlan"),
        ({"pf": PF, "num_vfs": 1, "vfs": [{"index": 0, "qos": 8, "vlan": 5}]}, -32602, "vfs[0].qos"),
        ({"pf": PF, "num_vfs": 1, "vfs": [{"index": 1}]}, -32602, "not below num_vfs"),
        ({"pf": PF, "num_vfs": 1, "vfs": [{"index": 0, "colour": "red"}]}, -32602, "unknown key"),
        ({"pf": "eth9", "num_vfs": 1}, -32004, "no such SR-IOV PF"),
        ({"pf": PF, "num_vfs": -1}, -32602, "num_vfs"),
    ]
    for params, code, words in cases:
        e = call_error(d, "sriov.configure", params)
        assert e.code == code and words in e.message, (params, e.code, e.message)
    assert host.numvfs() == 1 and host.numvfs(MGMT) == 0
    assert len(host.nl.setlinks) == n and sriov_state_text(d) == record


def test_management_pf_allowed_by_configuration(sriov_daemon, host):
    d = sriov_daemon(config={"sriov": {"check_interval_ms": 0, "allow_management": [MGMT_IF]}})
    r = configure(d, pf=MGMT, num_vfs=1)
    assert r["num_vfs"] == 1 and host.numvfs(MGMT) == 1


def test_pf_on_vfio_and_claimed_vf_refused(sriov_daemon, host):
    d = sriov_daemon()
    configure(d, pf=PF, num_vfs=2)
    # A VF claimed for a VM (on vfio-pci): the count stays.
    host.tree.bind("0000:01:10.1", "vfio-pci")
    os.unlink(host.tree.path("bus/pci/drivers/igbvf/0000:01:10.1"))
    e = call_error(d, "sriov.configure", {"pf": PF, "num_vfs": 3})
    assert e.code == -32005 and "0000:01:10.1" in e.message and "VF 1" in e.message
    assert host.numvfs() == 2
    # Settings alone (same count) are still fine.
    configure(d, pf=PF, num_vfs=2, vfs=[{"index": 0, "trust": True}])
    assert host.vfs()[0]["trust"] == 1
    # The PF itself on vfio-pci.
    os.unlink(host.tree.path(f"{host.tree.devices[PF]}/driver"))
    host.tree.bind(PF, "vfio-pci")
    e = call_error(d, "sriov.configure", {"pf": PF, "num_vfs": 2})
    assert e.code == -32003 and "vfio-pci" in e.message


def test_non_nic_pf_count_only(sriov_daemon, host):
    d = sriov_daemon()
    r = configure(d, pf=NVME, num_vfs=2)
    assert r["num_vfs"] == 2 and host.numvfs(NVME) == 2 and r["netdev"] is None
    assert [v["address"] for v in r["vf_devices"]] == ["0000:03:00.1", "0000:03:00.2"]
    e = call_error(d, "sriov.configure", {"pf": NVME, "num_vfs": 2, "vfs": [{"index": 0, "trust": True}]})
    assert e.code == -32003 and "no network interface" in e.message
    assert host.numvfs(NVME) == 2


def test_count_change_wipes_and_reapplies_settings(sriov_daemon, host):
    d = sriov_daemon()
    configure(d, pf=PF, num_vfs=2, vfs=[VF0])
    r = configure(d, pf=PF, num_vfs=3, vfs=[VF0, {"index": 2, "mac": "52:54:00:00:00:02"}])
    assert host.numvfs() == 3 and r["num_vfs"] == 3
    k = host.vfs()
    assert k[0]["mac"] == VF0["mac"] and k[0]["vlan"] == 100 and k[2]["mac"] == "52:54:00:00:00:02"
    # Down to 0 and back: VFs gone, then the record's settings again.
    configure(d, pf=PF, num_vfs=0)
    assert host.numvfs() == 0 and not os.path.lexists(host.tree.path("bus/pci/devices/0000:01:10.0"))


class rescanning:
    """A simulated host sends no uevents: while the module waits for new VFs
    to reach the inventory (before it moves them), rescans bring them."""

    def __init__(self, d):
        self.d = d
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.wait(0.2):
            try:
                self.d.call("daemon.rescan")
            except Exception:   # noqa: BLE001 - the daemon may be restarting
                pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


SRIOV_RES = "example.com/sriov_vf"
VFS2 = ["0000:01:10.0", "0000:01:10.1"]


def sriov_held(d):
    return sorted(c["address"] for c in d.call("claims.list")["claims"] if c.get("owner") == "sriov")


def test_vfio_pci_driver(sriov_daemon, host):
    k = host.start_kernel()
    d = sriov_daemon()
    kubelet = Kubelet(d.kubelet)
    try:
        with rescanning(d):
            r = configure(d, pf=PF, num_vfs=2, vf_driver="vfio-pci", resource_name=SRIOV_RES)
        assert r["num_vfs"] == 2 and [v["address"] for v in r["vf_devices"]] == VFS2
        assert [k.driver_of(vf) for vf in VFS2] == ["vfio-pci", "vfio-pci"], k.log
        assert [("unbind", vf, "igbvf") in k.log and ("bind", vf, "vfio-pci") in k.log for vf in VFS2] == [True] * 2
        # The MAC each VF driver used is pinned as its admin MAC, and recorded.
        assert [v["mac"] for v in host.vfs()] == ["02:00:00:00:01:00", "02:00:00:00:01:01"]
        assert {v["index"]: v["mac"] for v in r["vfs"]} == {0: "02:00:00:00:01:00", 1: "02:00:00:00:01:01"}
        p = next(x for x in d.call("sriov.list") if x["address"] == PF)
        assert [v["mac"] for v in p["recorded"]["vfs"]] == ["02:00:00:00:01:00", "02:00:00:00:01:01"]
        # The engine holds both groups for sriov.
        assert sriov_held(d) == VFS2
        # Offered under resource_name only (not under pci's default name too).
        plugin = kubelet.wait_registered(SRIOV_RES)
        plugin.wait_devices(lambda x: sorted(x) == [(vf, "Healthy", []) for vf in VFS2])
        d.call("daemon.rescan")
        assert [r["name"] for r in d.call("resources.list") if any(
            x["id"] in VFS2 for x in r["devices"])] == [SRIOV_RES]
        dev = d.call("devices.get", {"address": VFS2[0]})
        assert dev["module"] == "sriov" and dev["module_info"]["vfio_bound"] is True
        assert dev["module_info"]["held"]["state"] == "claimed"
        assert dev["module_info"]["held"]["advertised_as"] == SRIOV_RES
        resp = plugin.allocate(VFS2).container_responses[0]
        assert dict(resp.envs) == {"PCI_RESOURCE_EXAMPLE_COM_SRIOV_VF": ",".join(VFS2)}
        assert [s.host_path for s in resp.devices] == ["/dev/vfio/vfio", "/dev/vfio/200", "/dev/vfio/201"]
        # Allocated: a count change (which would remove them) is refused, nothing changed.
        e = call_error(d, "sriov.configure", {"pf": PF, "num_vfs": 3, "vf_driver": "vfio-pci",
                                              "resource_name": SRIOV_RES})
        assert e.code == -32005 and "VF 0 (0000:01:10.0) is allocated by sriov" in e.message, e.message
        assert host.numvfs() == 2 and [k.driver_of(vf) for vf in VFS2] == ["vfio-pci", "vfio-pci"]
        # A restart: still on vfio-pci, still held and offered.
        n = len(k.log)
        d.stop()
        d.start()
        kubelet.wait_registered(SRIOV_RES, count=2, timeout=20).wait_devices(
            lambda x: sorted(x) == [(vf, "Healthy", []) for vf in VFS2])
        assert [k.driver_of(vf) for vf in VFS2] == ["vfio-pci", "vfio-pci"]
        assert k.log[n:] == [] and sriov_held(d) == VFS2
        assert d.call("sriov.check")["drifted"] == []
        # Back to the default driver: the VFs return to igbvf, withdrawn.
        r = configure(d, pf=PF, num_vfs=2, resource_name=SRIOV_RES)
        assert [k.driver_of(vf) for vf in VFS2] == ["igbvf", "igbvf"], k.log
        assert sriov_held(d) == [] and host.numvfs() == 2
        assert "held" not in d.call("devices.get", {"address": VFS2[0]})["module_info"]
        kubelet.plugins[SRIOV_RES].wait_devices(lambda x: x == [])
        # The count may change again.
        assert configure(d, pf=PF, num_vfs=1)["num_vfs"] == 1
    finally:
        kubelet.stop()


def test_vfs_show_their_pf_and_settings_and_go_under_resource_name(sriov_daemon, host):
    d = sriov_daemon()
    configure(d, pf=PF, num_vfs=2, vfs=[VF0], resource_name="example.com/sriov_vf")
    d.call("daemon.rescan")     # a simulated host sends no uevents
    dev = d.call("devices.get", {"address": "0000:01:10.0"})
    info = dev["module_info"]
    assert dev["module"] == "sriov" and info["pf"] == PF and info["vf_index"] == 0
    assert info["pf_netdev"] == PF_IF and info["resource_name"] == "example.com/sriov_vf"
    assert info["vf"]["mac"] == VF0["mac"] and info["vf"]["vlan"] == 100 and info["vf"]["trust"] is True
    assert info["recorded"]["mac"] == VF0["mac"] and info["vfio_bound"] is False
    assert d.call("devices.get", {"address": "0000:01:10.1"})["module_info"]["vf"]["mac"] == "00:00:00:00:00:00"
    # The PF itself stays with the pci module; so do the VFs of PFs without a record.
    assert d.call("devices.get", {"address": PF})["module"] == "pci"
    assert not any(r["name"] == "example.com/sriov_vf" for r in d.call("resources.list"))
    # A VF on vfio-pci (claimed by hand here) is offered under the resource name.
    os.unlink(host.tree.path("bus/pci/drivers/igbvf/0000:01:10.1"))
    host.tree.bind("0000:01:10.1", "vfio-pci")
    open(os.path.join(host.tree.dev, "vfio", "201"), "w").close()
    d.call("daemon.rescan")
    r = hdtest.wait_until(lambda: next((r for r in d.call("resources.list")
                                        if r["name"] == "example.com/sriov_vf"), None),
                          what="the resource")
    assert [x["id"] for x in r["devices"]] == ["0000:01:10.1"]


def test_drift_is_an_event_and_reapplied(sriov_daemon, host):
    d = sriov_daemon()
    configure(d, pf=PF, num_vfs=2, vfs=[VF0, VF1])
    c = d.client(timeout=60)
    # Somebody resets the count by hand (or a driver reload did).
    with open(host.sim.path(PF), "w") as f:
        f.write("0\n")
    hdtest.wait_until(lambda: host.sim.counts[PF] == 0, what="the VFs to go")
    r = c.call("sriov.check", None, timeout=60)
    assert r["drifted"] == [PF]
    assert host.numvfs() == 2 and host.vfs()[0]["mac"] == VF0["mac"] and host.vfs()[1]["spoofchk"] == 0
    # One attribute changed behind hostdevd's back.
    with host.nl.lock:
        host.nl.vfs[PF_IFINDEX][0]["trust"] = 0
    r = c.call("sriov.check", None, timeout=60)
    assert r["drifted"] == [PF] and host.vfs()[0]["trust"] == 1
    # Nothing off: nothing to say.
    assert c.call("sriov.check", None, timeout=60)["drifted"] == []
    c.close()
    assert "num_vfs drifted" in d.log_text() and "trust drifted" in d.log_text()


def test_forget_stops_managing(sriov_daemon, host):
    d = sriov_daemon()
    configure(d, pf=PF, num_vfs=2, vfs=[VF0])
    r = d.call("sriov.forget", {"pf": PF_IF})
    assert r["pf"] == PF and r["forgotten"]["num_vfs"] == 2
    assert host.numvfs() == 2, "the kernel keeps what it has"
    with open(host.sim.path(PF), "w") as f:
        f.write("0\n")
    hdtest.wait_until(lambda: host.sim.counts[PF] == 0, what="the VFs to go")
    assert d.call("sriov.check")["drifted"] == [] and host.numvfs() == 0
    assert VF0["mac"] not in sriov_state_text(d)
    e = call_error(d, "sriov.forget", {"pf": PF})
    assert e.code == -32004


def test_drift_events(sriov_daemon, host):
    d = sriov_daemon()
    configure(d, pf=PF, num_vfs=1, vfs=[VF0])
    c = d.client(timeout=60)
    c.call("events.subscribe", {"types": ["sriov"]})
    with host.nl.lock:
        host.nl.vfs[PF_IFINDEX][0]["vlan"] = 7
    c2 = d.client(timeout=60)
    c2.call("sriov.check", None, timeout=60)
    c2.close()
    ev = c.next_event(timeout=20, match=lambda e: e.get("type") == "sriov.drift")
    assert ev["pf"] == PF and ev["attribute"] == "vlan"
    ev = c.next_event(timeout=20, match=lambda e: e.get("type") == "sriov.configured")
    assert ev["pf"] == PF and ev["reapplied"] is True
    c.close()


def restart(d):
    d.stop()
    d.start()


def test_restart_reapplies_recorded_state(sriov_daemon, host):
    d = sriov_daemon()
    configure(d, pf=PF, num_vfs=2, vfs=[VF0, VF1])
    d.stop()
    # A reboot or driver reload: VFs gone, settings wiped.
    with open(host.sim.path(PF), "w") as f:
        f.write("0\n")
    hdtest.wait_until(lambda: host.sim.counts[PF] == 0, what="the VFs to go")
    d.start()
    hdtest.wait_until(lambda: host.numvfs() == 2 and host.vfs()[1]["mac"] == VF1["mac"],
                      timeout=30, what="the record applied again")
    assert host.vfs()[0]["vlan"] == 100 and host.vfs()[0]["trust"] == 1


def kill9(d):
    d.proc.kill()
    d.proc.wait()
    d.proc = None
    d.log.close()


def test_kill9_while_creating_vfs(sriov_daemon, host):
    d = sriov_daemon()
    host.sim.hold.set()
    c = d.client(timeout=60)
    c.send_raw((json.dumps({"jsonrpc": "2.0", "id": 1, "method": "sriov.configure",
                            "params": {"pf": PF, "num_vfs": 2, "vfs": [VF0]}}) + "\n").encode())
    hdtest.wait_until(lambda: (PF, 2) in host.sim.seen, what="the count written")
    # The intent is recorded before the first kernel write.
    assert '"applying"' in sriov_state_text(d) and VF0["mac"] in sriov_state_text(d)
    kill9(d)
    c.close()
    host.sim.hold.clear()
    host.sim.release.set()
    d.start()
    hdtest.wait_until(lambda: host.numvfs() == 2 and host.vfs()[0]["mac"] == VF0["mac"],
                      timeout=30, what="the recorded state")
    hdtest.wait_until(lambda: '"applied"' in sriov_state_text(d), what="the outcome recorded")


def test_kill9_while_setting_vfs(sriov_daemon, host):
    d = sriov_daemon()
    configure(d, pf=PF, num_vfs=2)
    host.nl.hold_setlink.set()
    c = d.client(timeout=60)
    c.send_raw((json.dumps({"jsonrpc": "2.0", "id": 1, "method": "sriov.configure",
                            "params": {"pf": PF, "num_vfs": 2, "vfs": [VF0, VF1]}}) + "\n").encode())
    assert host.nl.in_setlink.wait(20), "no SETLINK arrived"
    # The reactor keeps answering while the worker waits on rtnetlink.
    assert d.call("daemon.status")["modules"] >= 1
    kill9(d)
    c.close()
    host.nl.hold_setlink.clear()
    host.nl.release.set()
    d.start()
    hdtest.wait_until(lambda: host.vfs()[0]["mac"] == VF0["mac"] and host.vfs()[1]["mac"] == VF1["mac"],
                      timeout=30, what="the recorded state")
    assert host.vfs()[0]["vlan"] == 100 and host.numvfs() == 2


def test_deadline_puts_things_back_and_late_write_is_drift(sriov_daemon, host):
    d = sriov_daemon(config={"sriov": {"check_interval_ms": 0, "timeout_ms": 1000}})
    configure(d, pf=PF, num_vfs=2, vfs=[VF0])
    record = sriov_state_text(d)
    host.nl.hold_setlink.set()
    c = d.client(timeout=60)
    c.send_raw((json.dumps({"jsonrpc": "2.0", "id": 1, "method": "sriov.configure",
                            "params": {"pf": PF, "num_vfs": 2,
                                       "vfs": [{**VF0, "mac": "52:54:00:00:00:77"}]}}) + "\n").encode())
    assert host.nl.in_setlink.wait(20)
    assert d.call("daemon.status")["pid"] > 0, "the reactor answers meanwhile"
    resp = c.recv_line(30)
    c.close()
    assert resp["error"]["code"] == -32010 and "no answer after 1000 ms" in resp["error"]["message"]
    assert sriov_state_text(d) == record, "the record is the one before the call"
    # sriov.check answers once the put-back is done too: nothing to do yet.
    assert d.call("sriov.check")["drifted"] == []
    # The kernel applies the held write late: that is drift, and it goes.
    host.nl.hold_setlink.clear()
    host.nl.release.set()
    hdtest.wait_until(lambda: host.vfs()[0]["mac"] == "52:54:00:00:00:77", what="the late write")
    assert d.call("sriov.check")["drifted"] == [PF]
    assert host.vfs()[0]["mac"] == VF0["mac"] and host.vfs()[0]["vlan"] == 100


def test_sigterm_with_a_change_in_flight(sriov_daemon, host):
    d = sriov_daemon()
    host.nl.hold_setlink.set()
    c = d.client(timeout=60)
    c.send_raw((json.dumps({"jsonrpc": "2.0", "id": 1, "method": "sriov.configure",
                            "params": {"pf": PF, "num_vfs": 1, "vfs": [VF0]}}) + "\n").encode())
    assert host.nl.in_setlink.wait(20)
    d.signal(signal.SIGTERM)
    # Answered with an error, or the connection closes as the daemon goes.
    try:
        assert "stopping" in c.recv_line(30)["error"]["message"]
    except ConnectionError:
        pass
    c.close()
    host.nl.hold_setlink.clear()
    host.nl.release.set()
    d.check_clean_exit()
    # The record stays: the next start finishes the change.
    d.start()
    hdtest.wait_until(lambda: host.vfs()[0]["mac"] == VF0["mac"], timeout=30, what="the change finished")


def test_configuration_section_applied_at_start(sriov_daemon, host):
    d = sriov_daemon(config={"sriov": {"check_interval_ms": 0, "pfs": [
        {"vendor_device": "144d:a824", "num_vfs": 1},
        {"pf": PF_IF, "num_vfs": 2, "vfs": [VF0]}]}})
    hdtest.wait_until(lambda: host.numvfs() == 2 and host.vfs()[0]["mac"] == VF0["mac"]
                      and host.numvfs(NVME) == 1, timeout=30, what="the configuration applied")
    p = next(x for x in d.call("sriov.list") if x["address"] == PF)
    assert p["recorded"]["num_vfs"] == 2


def test_sighup_applies_the_configuration(sriov_daemon, host):
    d = sriov_daemon()
    d.write_config({"sriov": {"check_interval_ms": 0, "pfs": [{"pf": PF, "num_vfs": 1, "vfs": [VF0]}]}})
    d.signal(signal.SIGHUP)
    hdtest.wait_until(lambda: host.numvfs() == 1 and host.vfs()[0]["mac"] == VF0["mac"], timeout=20,
                      what="the new configuration applied")
    # A bad section on SIGHUP changes nothing.
    d.write_config({"sriov": {"pfs": [{"pf": PF, "num_vfs": 2, "vfs": [{"index": 0, "vlan": 5000}]}]}})
    d.signal(signal.SIGHUP)
    hdtest.wait_until(lambda: "sriov.pfs[0].vfs[0].vlan" in d.log_text(), what="the refusal logged")
    assert d.call("sriov.check")["drifted"] == [] and host.numvfs() == 1


@pytest.mark.parametrize("section, words", [
    ({"pfs": [{"pf": PF, "num_vfs": 1, "vfs": [{"index": 0, "mac": "zz"}]}]}, "sriov.pfs[0].vfs[0].mac"),
    ({"pfs": [{"num_vfs": 1}]}, "sriov.pfs[0]: expected one selector"),
    ({"colour": 1}, "sriov.colour: unknown key"),
    ({"timeout_ms": 5}, "sriov.timeout_ms: expected milliseconds"),
])
def test_configuration_errors(sriov_daemon, host, section, words):
    d = sriov_daemon(config={"sriov": section}, start=False)
    with pytest.raises(AssertionError):
        d.start(timeout=15)
    assert words in d.log_text()
    d.proc = None
    d.log.close()


def test_simulated_host_without_responder_says_no_netdev(make_daemon, host):
    d = make_daemon(host=None, tree=host.root, config={"sriov": {"check_interval_ms": 0}})
    p = next(x for x in d.call("sriov.list") if x["address"] == PF)
    assert "no netdev" in p["netlink_error"] and "HOSTDEVD_SRIOV_NETLINK" in p["netlink_error"]
    e = call_error(d, "sriov.configure", {"pf": PF, "num_vfs": 1})
    assert "no netdev" in e.message and host.numvfs() == 0


def test_vfio_pci_vfs_made_before_the_record_go_under_resource_name(sriov_daemon, host):
    """VFs made by hand before the PF had a record (the pci module's then)
    are the sriov module's once it moves them: offered once, under its
    resource_name, never under the pci module's default name."""
    k = host.start_kernel()
    d = sriov_daemon()
    with open(host.sim.path(PF), "w") as f:
        f.write("2\n")
    hdtest.wait_until(lambda: host.sim.counts[PF] == 2, what="the VFs made by hand")
    d.call("daemon.rescan")
    assert d.call("devices.get", {"address": VFS2[0]})["module"] == "pci"
    kubelet = Kubelet(d.kubelet)
    try:
        r = configure(d, pf=PF, num_vfs=2, vf_driver="vfio-pci", resource_name=SRIOV_RES)
        assert r["num_vfs"] == 2 and [k.driver_of(vf) for vf in VFS2] == ["vfio-pci", "vfio-pci"]
        assert sriov_held(d) == VFS2
        plugin = kubelet.wait_registered(SRIOV_RES)
        plugin.wait_devices(lambda x: sorted(x) == [(vf, "Healthy", []) for vf in VFS2])
        d.call("daemon.rescan")
        names = [r["name"] for r in d.call("resources.list") if any(x["id"] in VFS2 for x in r["devices"])]
        assert names == [SRIOV_RES], names
        assert [d.call("devices.get", {"address": vf})["module"] for vf in VFS2] == ["sriov", "sriov"]
        resp = plugin.allocate([VFS2[1]]).container_responses[0]
        assert dict(resp.envs) == {"PCI_RESOURCE_EXAMPLE_COM_SRIOV_VF": VFS2[1]}
    finally:
        kubelet.stop()


def test_vfio_pci_count_change_and_vfs_gone_by_hand(sriov_daemon, host):
    """A count change gives the VFs this module moved back to igbvf first
    (nothing allocated), then moves the new ones; VFs taken away by hand
    while hostdevd is down come back on vfio-pci at the next start."""
    k = host.start_kernel()
    d = sriov_daemon()
    spec = {"pf": PF, "vf_driver": "vfio-pci", "resource_name": SRIOV_RES}
    with rescanning(d):
        configure(d, num_vfs=2, **spec)
        assert sriov_held(d) == VFS2
        n = len(k.log)
        r = configure(d, num_vfs=3, **spec)
    vfs3 = VFS2 + ["0000:01:10.2"]
    assert r["num_vfs"] == 3 and host.numvfs() == 3
    assert [k.driver_of(vf) for vf in vfs3] == ["vfio-pci"] * 3 and sriov_held(d) == vfs3
    # Each old VF left vfio-pci (through the engine) before the count changed.
    assert [e for e in k.log[n:] if e[0] == "unbind"][:2] == [("unbind", vf, "vfio-pci") for vf in VFS2]
    # sriov.forget would leave the groups held for a PF without a record.
    e = call_error(d, "sriov.forget", {"pf": PF})
    assert e.code == -32005 and "vf_driver \"default\" first" in e.message
    # Down, the VFs go (a reboot, someone's echo 0); at the start they come back on vfio-pci.
    d.stop()
    with open(host.sim.path(PF), "w") as f:
        f.write("0\n")
    hdtest.wait_until(lambda: host.sim.counts[PF] == 0, what="the VFs to go")
    d.start()
    with rescanning(d):
        hdtest.wait_until(lambda: host.numvfs() == 3 and all(k.driver_of(vf) == "vfio-pci" for vf in vfs3),
                          timeout=30, what="the VFs back on vfio-pci")
        hdtest.wait_until(lambda: sriov_held(d) == vfs3 and d.call("sriov.check")["drifted"] == [],
                          timeout=30, what="the record applied again")
    assert "num_vfs drifted" in d.log_text()


def test_vfio_pci_kill9_while_moving_a_vf(sriov_daemon, host):
    """kill -9 while the engine moves VF 0 (right after its unbind, by the
    engine's own crash point): the next start finishes the job, both VFs
    end on vfio-pci, held, recorded."""
    k = host.start_kernel()
    d = sriov_daemon(env={"HOSTDEVD_TEST_CRASH_AFTER": "unbind"})
    c = d.client(timeout=60)
    with rescanning(d):
        c.send_raw((json.dumps({"jsonrpc": "2.0", "id": 1, "method": "sriov.configure",
                                "params": {"pf": PF, "num_vfs": 2, "vf_driver": "vfio-pci",
                                           "resource_name": SRIOV_RES}}) + "\n").encode())
        d.proc.wait(30)
        assert d.proc.returncode == -signal.SIGKILL, d.log_text()[-3000:]
        assert '"applying"' in sriov_state_text(d)
        c.close()
        d.proc = None
        d.log.close()
        d.env = {"HOSTDEVD_SRIOV_NETLINK": host.sock}
        d.start()
        hdtest.wait_until(lambda: [k.driver_of(vf) for vf in VFS2] == ["vfio-pci"] * 2, timeout=30,
                          what=f"both VFs on vfio-pci {k.log}")
        hdtest.wait_until(lambda: sriov_held(d) == VFS2 and '"applied"' in sriov_state_text(d),
                          timeout=30, what="the record applied")
    assert host.numvfs() == 2 and host.vfs()[0]["mac"] == "02:00:00:00:01:00"
    assert all(x["state"] == "claimed" for x in d.call("claims.list")["claims"] if x.get("owner") == "sriov")
