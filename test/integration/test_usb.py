# SPDX-License-Identifier: MIT
"""modules/usb on simulated hosts: KubeVirt's USB_RESOURCE_ contract (rules of
several selectors, serial numbers), Allocate with the current bus:dev and the
nodes chowned all or none without following a planted link, plugin device ids
that hold across replug (through uevents) and restart, and the devices never
offered (a disk behind a mount, hubs, exclude), with devices.get saying why."""

import os
import shutil
import signal
import stat
import subprocess

import grpc
import pytest

import hdtest
import simhost
from kubelet import Kubelet

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown)")
XHCI = "0000:00:14.0"
TABLET = "kubevirt.io/tablet"
ENV_TABLET = "USB_RESOURCE_KUBEVIRT_IO_TABLET"


def build_host(root, extra=()):
    """dell-190 with real character nodes, plus USB devices:
    extra = [(port, vid, pid, devnum, serial, kwargs)]."""
    t = simhost.Tree(root)
    t.usb_char_nodes = True
    simhost.build_dell_190(t)
    for port, vid, pid, devnum, serial, kw in extra:
        t.usb(XHCI, 1, port, vid, pid, devnum=devnum, serial=serial, **kw)
    return t


@pytest.fixture
def usb_daemon(make_daemon, tmp_path):
    """factory(config, extra, args) -> (daemon, tree)"""
    def factory(config, extra=(), extra_args=()):
        root = str(tmp_path / "host")
        t = build_host(root, extra)
        d = make_daemon(host=None, tree=root, node_name="dell-190", config=config,
                        extra_args=list(extra_args))
        return d, t
    return factory


def node(d, bus, dev):
    return os.path.join(d.devroot, "bus/usb", f"{bus:03d}", f"{dev:03d}")


def owner(path):
    st = os.lstat(path)
    return (st.st_uid, st.st_gid)


def rule(name, *sels):
    return {"name": name, "selectors": list(sels)}


def sel(vid, pid, **kw):
    return dict(vendor=vid, product=pid, **kw)


def usb_list(d):
    return d.call("usb.list")


def allocate_env(plugin, *ids):
    resp = plugin.allocate(list(ids)).container_responses[0]
    return dict(resp.envs), [(s.host_path, s.container_path, s.permissions) for s in resp.devices]


TABLETS = [("5", 0x0627, 0x0001, 5, "TAB-1", {}), ("6", 0x0627, 0x0001, 6, "KBD-1", {})]


@pytest.mark.parametrize("section,message", [
    ({"x": 1}, "usb.x: unknown key"),
    ({"rules": {}}, "usb.rules: expected an array"),
    ({"rules": [{"name": "tablet", "selectors": [sel("0627", "0001")]}]},
     "usb.rules[0].name: expected a resource name"),
    ({"rules": [{"name": "a.io/t", "selectors": [{"vendor": "0627"}]}]},
     "usb.rules[0].selectors[0]: vendor and product are required"),
    ({"rules": [{"name": "a.io/t", "selectors": [sel("06270", "0001")]}]},
     "usb.rules[0].selectors[0].vendor: expected 4 hex digits"),
    ({"rules": [{"name": "a.io/t", "selectors": [sel("0627", "0001", colour="red")]}]},
     "usb.rules[0].selectors[0].colour: unknown key"),
    ({"rules": [{"name": "a.io/t", "selectors": []}]}, "usb.rules[0].selectors: expected 1 to"),
    ({"rules": [rule("a.io/t", sel("0627", "0001")), rule("a.io/t", sel("0627", "0002"))]},
     "usb.rules[1].name: a.io/t is named by rule 0 too"),
    ({"rules": [{"name": "a.io/t", "selectors": [sel("0627", "0001", port="1-x")]}]},
     "usb.rules[0].selectors[0].port: expected a USB port path"),
    ({"rules": [{"name": "a.io/t", "selectors": [sel("0627", "0001")], "claim": True}]},
     "usb.rules[0].claim: unknown key"),
    ({"owner": "qemu"}, "usb.owner: expected \"UID:GID\""),
    ({"unlisted": "advertise"}, "usb.unlisted: expected \"ignore\" or \"harvester\""),
    ({"exclude": [{}]}, "usb.exclude[0]: names nothing"),
])
def test_bad_section_refused(make_daemon, section, message):
    d = make_daemon(config={"usb": section}, start=False)
    args = d.args(1)
    i = args.index("--ready-fd")
    del args[i:i + 2]
    r = hdtest.subprocess.run(args, capture_output=True, text=True, timeout=30,
                              env=hdtest.sanitizer_env())
    assert r.returncode != 0
    assert message in r.stderr, r.stderr


@needs_root
def test_serial_rule_allocate_and_chown(usb_daemon):
    """Keyboard and tablet share 0627:0001: the serial picks the tablet. The
    kubelet gets one plugin device keyed on vid:pid and serial; Allocate hands
    out its bus:dev and node, owned by 107:107 afterwards."""
    d, t = usb_daemon({"usb": {"rules": [rule(TABLET, sel("0627", "0001", serial="TAB-1"))]}},
                      TABLETS)
    k = Kubelet(d.kubelet)
    try:
        p = k.wait_registered(TABLET)
        assert p.wait_devices(lambda x: len(x) == 1) == [("0627:0001-TAB-1", "Healthy", [])]
        assert owner(node(d, 1, 5)) == (0, 0)
        env, specs = allocate_env(p, "0627:0001-TAB-1")
        assert env == {ENV_TABLET: "1:5"}
        assert specs == [("/dev/bus/usb/001/005", "/dev/bus/usb/001/005", "mrw")]
        assert owner(node(d, 1, 5)) == (107, 107)
        assert owner(node(d, 1, 6)) == (0, 0), "the keyboard's node is not touched"
    finally:
        k.stop()
    devs = {x["port"]: x for x in usb_list(d)["devices"]}
    tab = devs["1-5"]
    assert (tab["key"], tab["resource"], tab["plugin_device"]) == \
        ("0627:0001-TAB-1", TABLET, "0627:0001-TAB-1")
    assert tab["healthy"] and tab["offered"] and tab["allocations"] == 1
    assert tab["bus_dev"] == "1:5" and tab["serial"] == "TAB-1"
    kbd = d.call("devices.get", {"address": "1-6"})["module_info"]
    assert kbd["offered"] is False and "no usb rule names it" in kbd["why"]
    # Without a rule (usb.unlisted defaults to "ignore") the others are not offered.
    kvm = d.call("devices.get", {"address": "1-4"})["module_info"]
    assert kvm["offered"] is False and "no usb rule names it" in kvm["why"]
    assert kvm["resource_name"] == "kubevirt.io/dell-190-0624-0251-001004"


@needs_root
def test_owner_is_configurable(usb_daemon):
    d, t = usb_daemon({"usb": {"owner": "1000:2000",
                               "rules": [rule(TABLET, sel("0627", "0001", serial="TAB-1"))]}},
                      TABLETS)
    k = Kubelet(d.kubelet)
    try:
        p = k.wait_registered(TABLET)
        p.wait_devices(lambda x: len(x) == 1)
        allocate_env(p, "0627:0001-TAB-1")
        assert owner(node(d, 1, 5)) == (1000, 2000)
    finally:
        k.stop()


SET_DEVICES = [
    ("5", 0x046d, 0xc077, 5, None, {}), ("6", 0x046d, 0xc31c, 6, None, {}),    # mouse, kbd
    ("7", 0x046d, 0xc077, 7, None, {}), ("8", 0x046d, 0xc31c, 8, None, {}),    # another pair
    ("9", 0x046d, 0xc077, 9, None, {}),                                        # a spare mouse
]
DESK = "example.com/desk"
ENV_DESK = "USB_RESOURCE_EXAMPLE_COM_DESK"


@needs_root
def test_rule_with_several_selectors(usb_daemon):
    """KubeVirt's grouping: one device per selector makes one plugin device;
    two full sets make two; the spare mouse, with no keyboard left, none.
    Allocate of both sets: every bus:dev, every node."""
    cfg = {"usb": {"rules": [rule(DESK, sel("046d", "c077"), sel("046d", "c31c"))]}}
    d, t = usb_daemon(cfg, SET_DEVICES)
    # The keyboard (1-2, 046d:c31c) of dell-190 is there too, so there is
    # a third keyboard: it pairs with the spare mouse at 1-9.
    k = Kubelet(d.kubelet)
    try:
        p = k.wait_registered(DESK)
        devs = p.wait_devices(lambda x: len(x) == 3)
        ids = sorted(x[0] for x in devs)
        assert ids == ["046d:c077@1-5+046d:c31c@1-2", "046d:c077@1-7+046d:c31c@1-6",
                       "046d:c077@1-9+046d:c31c@1-8"], ids
        assert all(x[1] == "Healthy" for x in devs)
        env, specs = allocate_env(p, "046d:c077@1-5+046d:c31c@1-2", "046d:c077@1-9+046d:c31c@1-8")
        assert env == {ENV_DESK: "1:5,1:2,1:9,1:8"}
        assert [s[0] for s in specs] == ["/dev/bus/usb/001/005", "/dev/bus/usb/001/002",
                                         "/dev/bus/usb/001/009", "/dev/bus/usb/001/008"]
        for dev in (5, 2, 9, 8):
            assert owner(node(d, 1, dev)) == (107, 107)
        assert owner(node(d, 1, 7)) == (0, 0)
    finally:
        k.stop()


@needs_root
@pytest.mark.skipif(shutil.which("mount") is None, reason="needs mount")
def test_failed_chown_gives_back_the_others(usb_daemon):
    """A set of two whose second node cannot be chowned (a read-only bind
    mount: EROFS): the first node, already given to 107:107, gets its owner
    back and the Allocate fails."""
    cfg = {"usb": {"rules": [rule(DESK, sel("046d", "c077"), sel("046d", "c31c"))]}}
    d, t = usb_daemon(cfg, SET_DEVICES[:2])
    kbd = node(d, 1, 2)
    os.chown(node(d, 1, 5), 5, 6)
    r = subprocess.run(f"mount --bind {kbd} {kbd} && mount -o remount,bind,ro {kbd}",
                       shell=True, capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"no read-only bind mount here: {r.stderr.strip()}")
    k = Kubelet(d.kubelet)
    try:
        p = k.wait_registered(DESK)
        sid = p.wait_devices(lambda x: len(x) == 1)[0][0]
        with pytest.raises(grpc.RpcError) as e:
            allocate_env(p, sid)
        assert "Read-only file system" in e.value.details()
        assert owner(node(d, 1, 5)) == (5, 6), "the mouse's node got its owner back"
        assert owner(kbd) == (0, 0)
        assert "chown of /dev/bus/usb/001/002 to 107:107" in d.log_text()
    finally:
        k.stop()
        subprocess.run(["umount", kbd])
    env, _ = allocate_env_after(d, sid)
    assert env == {ENV_DESK: "1:5,1:2"}


def allocate_env_after(d, sid):
    """A fresh kubelet stand-in's Allocate (the first one is stopped)."""
    k = Kubelet(d.kubelet)
    try:
        p = k.wait_registered(DESK)
        p.wait_devices(lambda x: len(x) == 1)
        return allocate_env(p, sid)
    finally:
        k.stop()


@needs_root
def test_planted_link_and_missing_node_refused_all_or_none(usb_daemon, tmp_path):
    """A link planted at a node (or at its bus directory) is never followed:
    the Allocate fails and nothing is chowned, not even the set's other
    node; so does a missing node or one that is not a USB device node."""
    cfg = {"usb": {"rules": [rule(DESK, sel("046d", "c077"), sel("046d", "c31c"))]}}
    d, t = usb_daemon(cfg, SET_DEVICES[:2])
    # What a planted link points at: a real USB device node (the kind the
    # module would chown) outside the device root.
    victim = tmp_path / "victim"
    os.mknod(str(victim), 0o600 | stat.S_IFCHR, os.makedev(189, 200))
    k = Kubelet(d.kubelet)
    try:
        p = k.wait_registered(DESK)
        devs = p.wait_devices(lambda x: len(x) == 1)
        sid = devs[0][0]
        assert sid == "046d:c077@1-5+046d:c31c@1-2"
        # The mouse's node is a link to that node.
        os.unlink(node(d, 1, 5))
        os.symlink(str(victim), node(d, 1, 5))
        with pytest.raises(grpc.RpcError) as e:
            allocate_env(p, sid)
        assert "cannot allocate" in e.value.details()
        assert owner(str(victim)) == (0, 0) and owner(node(d, 1, 2)) == (0, 0)
        assert "/dev/bus/usb/001/005 is not its device node" in d.log_text()
        # A regular file, then nothing at all.
        os.unlink(node(d, 1, 5))
        victim_copy = node(d, 1, 5)
        open(victim_copy, "w").close()
        with pytest.raises(grpc.RpcError):
            allocate_env(p, sid)
        assert owner(node(d, 1, 2)) == (0, 0)
        os.unlink(node(d, 1, 5))
        with pytest.raises(grpc.RpcError):
            allocate_env(p, sid)
        assert owner(node(d, 1, 2)) == (0, 0)
        # The bus directory replaced by a link to a copy holding real nodes.
        os.mknod(node(d, 1, 5), 0o664 | stat.S_IFCHR, os.makedev(189, 4))
        bus = os.path.join(d.devroot, "bus/usb/001")
        elsewhere = str(tmp_path / "bus001")
        shutil.move(bus, elsewhere)
        os.symlink(elsewhere, bus)
        with pytest.raises(grpc.RpcError):
            allocate_env(p, sid)
        assert owner(os.path.join(elsewhere, "005")) == (0, 0)
        assert owner(os.path.join(elsewhere, "002")) == (0, 0)
        # Put right: it goes through.
        os.unlink(bus)
        shutil.move(elsewhere, bus)
        env, _ = allocate_env(p, sid)
        assert env == {ENV_DESK: "1:5,1:2"}
        assert owner(node(d, 1, 5)) == (107, 107) and owner(node(d, 1, 2)) == (107, 107)
    finally:
        k.stop()


def _mountinfo(root, lines):
    os.makedirs(os.path.join(root, "1"), exist_ok=True)
    with open(os.path.join(root, "1", "mountinfo"), "w") as f:
        f.write("22 1 0:21 / /proc rw,nosuid - proc proc rw\n")
        for line in lines:
            f.write(line + "\n")
    with open(os.path.join(root, "swaps"), "w") as f:
        f.write("Filename\tType\tSize\tUsed\tPriority\n")


def test_mounted_disk_hub_and_exclude_not_offered(make_daemon, tmp_path):
    """The stick behind a mounted filesystem is never offered, and says so;
    once unmounted it is. A hub and an excluded device: never, saying why."""
    proc = str(tmp_path / "proc")
    stick_mount = "36 25 8:1 / /mnt/stick rw,relatime shared:1 - ext4 /dev/sda1 rw"
    _mountinfo(proc, [stick_mount])
    cfg = {"usb": {"rules": [rule("example.com/stick", sel("0951", "1666")),
                             rule("example.com/kvm", sel("0624", "0251"))],
                   "exclude": [{"serial": "NOPE"}]}}
    extra = [("1", 0x05e3, 0x0608, 9, None, {"cls": 0x09}),          # a hub
             ("7", 0x046d, 0xc52b, 7, "NOPE", {})]                   # excluded
    root = str(tmp_path / "host")
    t = simhost.Tree(root)
    simhost.build_dell_190(t)
    for port, vid, pid, devnum, serial, kw in extra:
        t.usb(XHCI, 1, port, vid, pid, devnum=devnum, serial=serial, **kw)
    # sda1 on the stick at 1-3: the block device's sysfs path runs through it.
    stick = os.path.relpath(os.path.realpath(t.path("bus/usb/devices/1-3")), t.sys)
    blk = f"{stick}/1-3:1.0/host0/target0:0:0/0:0:0:0/block/sda/sda1"
    t.write(f"{blk}/dev", "8:1\n")
    t.link("dev/block/8:1", blk)
    d = make_daemon(host=None, tree=root, node_name="dell-190", config=cfg,
                    extra_args=["--proc-root", proc])
    k = Kubelet(d.kubelet)
    try:
        k.wait_registered("example.com/kvm")
        devs = {x["port"]: x for x in usb_list(d)["devices"]}
        assert devs["1-3"]["offered"] is False
        assert devs["1-3"]["why"] == "backs the mounted filesystem /mnt/stick (/dev/sda1, 8:1)"
        info = d.call("devices.get", {"address": "1-3"})["module_info"]
        assert info["offered"] is False and "/mnt/stick" in info["why"]
        assert "example.com/stick" not in k.plugins
        hub = d.call("devices.get", {"address": "1-1"})
        assert hub["module"] == "usb" and "is a hub" in hub["module_info"]["why"]
        assert devs["1-7"]["why"] == "is excluded by usb.exclude"
        # Unmounted: offered (usb.list judges afresh; a timer does too).
        _mountinfo(proc, [])
        devs = {x["port"]: x for x in usb_list(d)["devices"]}
        assert devs["1-3"]["offered"] is True and "why" not in devs["1-3"]
        p = k.wait_registered("example.com/stick")
        p.wait_devices(lambda x: x == [("0951:1666@1-3", "Healthy", [])])
        # Mounted again: Unhealthy, with the same id, and no Allocate.
        _mountinfo(proc, [stick_mount])
        p.wait_devices(lambda x: x == [("0951:1666@1-3", "Unhealthy", [])])
        with pytest.raises(grpc.RpcError) as e:
            allocate_env(p, "0951:1666@1-3")
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        k.stop()


def test_unlisted_harvester_names(usb_daemon):
    """usb.unlisted "harvester": every device no rule names is offered under
    Harvester's name, the seed's kubevirt.io/dell-190-0624-0251-001004."""
    d, t = usb_daemon({"usb": {"unlisted": "harvester",
                               "rules": [rule("example.com/kbd", sel("046d", "c31c"))]}})
    k = Kubelet(d.kubelet)
    try:
        p = k.wait_registered("kubevirt.io/dell-190-0624-0251-001004")
        assert p.wait_devices(lambda x: len(x) == 1)[0][0] == "0624:0251@1-4"
        k.wait_registered("kubevirt.io/dell-190-0951-1666-001003")
        k.wait_registered("example.com/kbd")
        assert not any("046d-c31c" in r for r in k.plugins)
    finally:
        k.stop()
    listed = usb_list(d)
    assert listed["unlisted"] == "harvester" and listed["owner"] == "107:107"
    assert sorted(s["resource"] for s in listed["plugin_devices"]) == [
        "example.com/kbd", "kubevirt.io/dell-190-0624-0251-001004",
        "kubevirt.io/dell-190-0951-1666-001003"]


@needs_root
def test_shared_serial_falls_back_to_port(usb_daemon):
    """Two devices reporting one serial number: neither is keyed on it."""
    same = [("5", 0x0627, 0x0001, 5, "42", {}), ("6", 0x0627, 0x0001, 6, "42", {})]
    d, t = usb_daemon({"usb": {"rules": [rule(TABLET, sel("0627", "0001"))]}}, same)
    keys = sorted(x["key"] for x in usb_list(d)["devices"] if x["vendor_id"] == "0627")
    assert keys == ["0627:0001@1-5", "0627:0001@1-6"]


@needs_root
def test_serial_shared_later_keeps_the_known_device_id(usb_daemon):
    """A device keyed on its serial number keeps that id (where it is) when
    another device with the same serial number turns up; the newcomer is
    keyed on its port, now and after it is alone."""
    d, t = usb_daemon({"usb": {"rules": [rule(TABLET, sel("0627", "0001"))]}},
                      [("5", 0x0627, 0x0001, 5, "42", {})])
    assert [s["id"] for s in usb_list(d)["plugin_devices"]] == ["0627:0001-42"]
    assert d.stop() == 0
    t.usb(XHCI, 1, "6", 0x0627, 0x0001, devnum=6, serial="42")
    d.start()
    ids = sorted(s["id"] for s in usb_list(d)["plugin_devices"])
    assert ids == ["0627:0001-42", "0627:0001@1-6"]
    assert d.stop() == 0
    t.usb_unplug("1-5")
    d.start()
    sets = {s["id"]: s["healthy"] for s in usb_list(d)["plugin_devices"]}
    assert sets == {"0627:0001-42": False, "0627:0001@1-6": True}


@needs_root
def test_ids_hold_across_restart_with_new_devnum(usb_daemon):
    """Restarted with the tablet replugged meanwhile (new devnum): the same
    plugin device id, and Allocate hands out the new bus:dev."""
    cfg = {"usb": {"rules": [rule(TABLET, sel("0627", "0001", serial="TAB-1"))]}}
    d, t = usb_daemon(cfg, TABLETS)
    assert d.stop() == 0
    t.usb_unplug("1-5")
    t.usb(XHCI, 1, "3.1", 0x0627, 0x0001, devnum=12, serial="TAB-1")   # another port too
    d.start()
    c = d.client()
    k = Kubelet(d.kubelet)
    try:
        p = k.wait_registered(TABLET)
        assert p.wait_devices(lambda x: len(x) == 1) == [("0627:0001-TAB-1", "Healthy", [])]
        env, specs = allocate_env(p, "0627:0001-TAB-1")
        assert env == {ENV_TABLET: "1:12"} and specs[0][0] == "/dev/bus/usb/001/012"
    finally:
        k.stop()
        c.close()
    tab = next(x for x in usb_list(d)["devices"] if x["key"] == "0627:0001-TAB-1")
    assert tab["port"] == "1-3.1" and tab["bus_dev"] == "1:12"


@needs_root
@pytest.mark.skipif(shutil.which("umockdev-wrapper") is None, reason="umockdev is not installed")
def test_replug_unhealthy_then_healthy_same_id(make_daemon):
    """Through uevents: unplugged, the plugin device turns Unhealthy and
    Allocate is refused; plugged back (new devnum) it is Healthy with the
    same id, usb.replugged says old and new bus:dev, and Allocate hands out
    the new one. A tablet without a serial number keeps its port key."""
    from test_hotplug import FakeKernel
    k = FakeKernel("dell-190")
    kube = sub = None
    try:
        t = simhost.Tree(k.root)
        t.usb_char_nodes = True
        t.devices[XHCI] = os.path.relpath(
            os.path.realpath(os.path.join(k.root, "sys/bus/pci/devices", XHCI)), t.sys)
        env = {"LD_PRELOAD": "libumockdev-preload.so.0", "UMOCKDEV_DIR": k.root}
        cfg = {"usb": {"rules": [rule(TABLET, sel("0627", "0001", serial="TAB-1")),
                                 rule("example.com/pad", sel("0627", "0002"))]}}
        d = make_daemon(host=None, tree=k.root, env=env, node_name="dell-190", config=cfg)
        sub = d.client()
        sub.call("events.subscribe")
        kube = Kubelet(d.kubelet)

        def plug(port, pid, devnum, serial):
            name = t.usb(XHCI, 1, port, 0x0627, pid, devnum=devnum, serial=serial)
            k.do("uevent", rel=os.path.relpath(
                os.path.realpath(t.path(f"bus/usb/devices/{name}")), t.sys), action="add")

        def unplug(name):
            rel = os.path.relpath(os.path.realpath(t.path(f"bus/usb/devices/{name}")), t.sys)
            k.do("uevent", rel=rel, action="remove")
            t.usb_unplug(name)

        plug("5", 0x0001, 7, "TAB-1")
        plug("6", 0x0002, 8, None)
        p = kube.wait_registered(TABLET)
        pad = kube.wait_registered("example.com/pad")
        p.wait_devices(lambda x: x == [("0627:0001-TAB-1", "Healthy", [])])
        pad.wait_devices(lambda x: x == [("0627:0002@1-6", "Healthy", [])])
        assert allocate_env(p, "0627:0001-TAB-1")[0] == {ENV_TABLET: "1:7"}

        unplug("1-5")
        p.wait_devices(lambda x: x == [("0627:0001-TAB-1", "Unhealthy", [])])
        ev = sub.next_event(match=lambda e: e["type"] == "usb.unplugged")
        assert (ev["device"], ev["last"], ev["plugin_device"]) == \
            ("0627:0001-TAB-1", "1:7", "0627:0001-TAB-1")
        with pytest.raises(grpc.RpcError) as e:
            allocate_env(p, "0627:0001-TAB-1")
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        plug("5", 0x0001, 9, "TAB-1")
        p.wait_devices(lambda x: x == [("0627:0001-TAB-1", "Healthy", [])])
        ev = sub.next_event(match=lambda e: e["type"] == "usb.replugged")
        assert (ev["device"], ev["old"], ev["new"], ev["resource"]) == \
            ("0627:0001-TAB-1", "1:7", "1:9", TABLET)
        env_, specs = allocate_env(p, "0627:0001-TAB-1")
        assert env_ == {ENV_TABLET: "1:9"} and specs[0][0] == "/dev/bus/usb/001/009"
        assert owner(node(d, 1, 9)) == (107, 107)

        # No serial number: the same port brings the same id back.
        unplug("1-6")
        pad.wait_devices(lambda x: x == [("0627:0002@1-6", "Unhealthy", [])])
        plug("6", 0x0002, 10, None)
        pad.wait_devices(lambda x: x == [("0627:0002@1-6", "Healthy", [])])
        assert allocate_env(pad, "0627:0002@1-6")[0] == {
            "USB_RESOURCE_EXAMPLE_COM_PAD": "1:10"}
    finally:
        if kube:
            kube.stop()
        if sub:
            sub.close()
        k.close()


def test_reload_withdraws_and_renames(usb_daemon):
    """SIGHUP with another rule: the old resource is withdrawn (an empty
    list), the new one offered."""
    d, t = usb_daemon({"usb": {"rules": [rule("example.com/kvm", sel("0624", "0251"))]}})
    k = Kubelet(d.kubelet)
    try:
        old = k.wait_registered("example.com/kvm")
        old.wait_devices(lambda x: len(x) == 1)
        c = d.client()
        c.call("events.subscribe", {"types": ["config"]})
        d.write_config({"usb": {"rules": [rule("example.com/bmc", sel("0624", "0251"))]}})
        d.signal(signal.SIGHUP)
        assert c.next_event()["type"] == "config.reloaded"
        c.close()
        new = k.wait_registered("example.com/bmc")
        assert new.wait_devices(lambda x: len(x) == 1)[0][0] == "0624:0251@1-4"
        old.wait_devices(lambda x: x == [])
    finally:
        k.stop()
