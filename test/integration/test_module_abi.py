# SPDX-License-Identifier: MIT
"""Module ABI v2 from outside the core: test/modules/demo.c, a module that is
never installed, registers methods, runs a worker operation under a deadline,
keeps a state.json section across kill -9, has a configuration section, and
offers a resource whose members are not inventory devices."""

import json
import os
import shutil
import signal
import threading
import time
import zlib

import pytest

import hdtest
from kubelet import Kubelet

DEMO_DIR = os.path.join(hdtest.BUILDDIR, "test", "modules", ".libs")
RESOURCE = "example.com/demo"
MIG = "MIG-0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0-gi1-ci0"   # 48 characters


def module_dir(tmp, with_bad_abi=False, with_two=False):
    """The real modules and the demo one, in a directory of the test's own."""
    d = os.path.join(tmp, "modules")
    os.makedirs(d, exist_ok=True)
    for name in ("pci.so", "usb.so"):
        shutil.copy(os.path.join(hdtest.MODULE_DIR, name), d)
    shutil.copy(os.path.join(DEMO_DIR, "demo.so"), d)
    if with_bad_abi:
        shutil.copy(os.path.join(DEMO_DIR, "demoabi.so"), d)
    if with_two:    # the same module under another name
        shutil.copy(os.path.join(DEMO_DIR, "demotwo.so"), d)
    for f in os.listdir(d):
        os.chmod(os.path.join(d, f), 0o755)
    return d


@pytest.fixture
def demo_daemon(make_daemon, tmp_path):
    def factory(config=None, start=True, with_bad_abi=False, with_two=False):
        mods = module_dir(str(tmp_path), with_bad_abi, with_two)
        return make_daemon(config=config if config is not None else {},
                           extra_args=["--module-dir", mods], start=start)
    return factory


def test_methods_and_modules_list(demo_daemon):
    d = demo_daemon(with_bad_abi=True)
    assert d.call("demo.echo", {"text": "hi"}) == {"module": "demo", "text": "hi"}
    c = d.client()
    with pytest.raises(hdtest.RpcError) as e:
        c.call("demo.echo", {"txt": "hi"})
    assert e.value.code == -32602 and "unknown parameter" in e.value.message
    with pytest.raises(hdtest.RpcError) as e:
        c.call("demo.nothing")
    assert e.value.code == -32601
    c.close()
    mods = {m["path"].rsplit("/", 1)[1]: m for m in d.call("modules.list")}
    demo = mods["demo.so"]
    assert demo["active"] and demo["abi"] == "2.1" and demo["abi_version"] == 2
    assert demo["methods"] == ["demo.echo", "demo.sleep", "demo.put", "demo.get",
                               "demo.members", "demo.later", "demo.inspect", "demo.write",
                               "demo.read", "demo.holders"]
    assert mods["pci.so"]["abi"] == "2.1" and mods["pci.so"]["methods"] == ["pci.claim", "pci.release"]
    # Another ABI major: refused, and modules.list says why.
    bad = mods["demoabi.so"]
    assert bad["active"] is False and bad["abi_version"] == 3
    assert "ABI 3" in bad["error"] and "2.1" in bad["error"], bad["error"]
    # The core's own methods are all still there.
    assert d.call("daemon.status")["modules"] == 3


def test_host_verdict_devices_and_sysfs_write(demo_daemon):
    d = demo_daemon()
    pci = d.call("devices.list", {"class": "pci"})
    vga = next(x["address"] for x in pci if x["boot_vga"])
    r = d.call("demo.inspect", {"address": vga})
    assert r["host_needs"] is True and "boot VGA" in r["why"] and r["pci_devices"] == len(pci)
    assert d.call("demo.inspect", {"address": "0000:01:10.0"})["host_needs"] is False
    with pytest.raises(hdtest.RpcError) as e:
        d.call("demo.inspect", {"address": "0000:77:00.0"})
    assert e.value.code == -32004
    attr = os.path.join(d.sysfs, "bus/pci/devices/0000:01:10.0/driver_override")
    assert d.call("demo.write", {"path": "bus/pci/devices/0000:01:10.0/driver_override",
                                 "value": "vfio-pci"}) == {"written": True}
    with open(attr) as f:
        assert f.read() == "vfio-pci"
    # Nothing outside the sysfs root, whatever the module asks.
    with pytest.raises(hdtest.RpcError) as e:
        d.call("demo.write", {"path": "../../../../etc/hostname", "value": "x"})
    assert e.value.code == -32010


def test_reads_and_holders_relative_to_the_roots(demo_daemon):
    """ABI 2.1: a module reads sysfs on the reactor relative to --sysfs-root
    and asks the worker who holds a node under --dev-root."""
    d = demo_daemon()
    assert d.call("demo.read", {"path": "bus/pci/devices/0000:01:10.0/vendor"})["value"] == \
        open(os.path.join(d.sysfs, "bus/pci/devices/0000:01:10.0/vendor")).read().strip()
    with pytest.raises(hdtest.RpcError) as e:
        d.call("demo.read", {"path": "bus/pci/devices/0000:77:00.0/vendor"})
    assert e.value.code == -32004
    node = os.path.join(d.devroot, "demo-node")
    with open(node, "w") as held:
        r = d.call("demo.holders", {"node": "demo-node"})
        mine = [h for h in r["holders"] if h["pid"] == os.getpid()]
        assert mine and mine[0]["path"] == node, r
    assert not [h for h in d.call("demo.holders", {"node": "demo-node"})["holders"]
                if h["pid"] == os.getpid()]


def test_hostdevctl_calls_module_methods(demo_daemon):
    """hostdevctl MODULE VERB KEY=VALUE and hostdevctl call METHOD JSON."""
    import subprocess
    d = demo_daemon()

    def ctl(*args):
        return subprocess.run([hdtest.HOSTDEVCTL, "--socket", d.sock, "--json", *args],
                              capture_output=True, text=True, timeout=30,
                              env=hdtest.sanitizer_env())
    r = ctl("demo", "echo", "text=hello")
    assert r.returncode == 0 and json.loads(r.stdout) == {"module": "demo", "text": "hello"}, r
    r = ctl("demo", "put", 'value={"n": 7}')
    assert r.returncode == 0, r
    assert json.loads(ctl("demo", "get").stdout)["value"] == {"n": 7}
    r = ctl("call", "demo.echo", '{"text": "json"}')
    assert r.returncode == 0 and json.loads(r.stdout)["text"] == "json", r
    r = ctl("demo", "echo", "txt=hi")
    assert r.returncode == 2 and "unknown parameter" in r.stderr, r
    r = ctl("demo", "echo", "novalue")
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr, r
    r = ctl("demo", "nothing")
    assert r.returncode == 1 and r.stderr, r


def test_module_events(demo_daemon):
    d = demo_daemon()
    c = d.client()
    c.call("events.subscribe", {"types": ["demo"]})
    d.call("demo.put", {"value": "x"})
    ev = c.next_event()
    assert ev["type"] == "demo.saved" and ev["value"] == "x" and ev["seq"] > 0
    c.close()


def test_module_event_hook(demo_daemon):
    """A module's event hook gets every event of the core and of the other
    modules, in the order they were published, but never its own."""
    d = demo_daemon(with_two=True)
    d.call("demo.put", {"value": "a"})          # demo.saved: for demotwo only
    d.call("demotwo.put", {"value": "b"})       # demotwo.saved: for demo only
    hdtest.wait_until(lambda: "demotwo.saved" in d.call("demo.get")["events_seen"],
                      what="demo to see demotwo.saved")
    mine = d.call("demo.get")
    assert "demo.saved" not in mine["events_seen"], mine
    assert mine["last_event_seq"] > 0
    # Published before demotwo.saved, so delivered before it too.
    other = d.call("demotwo.get")
    assert "demo.saved" in other["events_seen"], other
    assert "demotwo.saved" not in other["events_seen"], other
    # The core's events come too.
    d.signal(signal.SIGHUP)
    hdtest.wait_until(lambda: "config.reloaded" in d.call("demo.get")["events_seen"],
                      what="demo to see config.reloaded")
    hdtest.wait_until(lambda: "config.reloaded" in d.call("demotwo.get")["events_seen"],
                      what="demotwo to see config.reloaded")


def test_deferred_reply_from_timer(demo_daemon):
    d = demo_daemon()
    assert d.call("demo.later", {"ms": 50}) == {"later": True}


def test_worker_op_and_deadline(demo_daemon):
    d = demo_daemon()
    r = d.call("demo.sleep", {"ms": 10, "timeout_ms": 5000})
    worker = d.call("daemon.status")["worker"]
    assert r["slept_ms"] == 10 and r["pid"] == worker["pid"] and r["pid"] != d.pid()
    # One past its deadline: a timeout error, the worker replaced, and the
    # daemon answers others while it waits.
    result = {}

    def slow():
        c = d.client(timeout=30)
        try:
            c.call("demo.sleep", {"ms": 20000, "timeout_ms": 1500})
        except hdtest.RpcError as e:
            result["err"] = e
        finally:
            c.close()

    t = threading.Thread(target=slow)
    t.start()
    # Waits until the worker has the call (the status counts it as busy).
    t0 = time.monotonic()
    while t.is_alive() and time.monotonic() - t0 < 1.0:
        assert d.call("demo.echo", {"text": "still here"})["text"] == "still here"
    t.join(30)
    assert not t.is_alive()
    err = result["err"]
    assert err.code == -32010 and "timed out after 1500 ms" in err.message
    status = d.call("daemon.status")["worker"]
    assert status["restarts"] == worker["restarts"] + 1 and status["pid"] != worker["pid"]
    assert d.call("demo.sleep", {"ms": 1, "timeout_ms": 5000})["pid"] == status["pid"]


def test_sigterm_with_a_worker_call_in_flight(demo_daemon):
    d = demo_daemon()
    c = d.client()
    c.send_raw(b'{"jsonrpc":"2.0","id":"slow","method":"demo.sleep",'
               b'"params":{"ms":20000,"timeout_ms":30000}}\n')
    # Requests of one client are handled in order: once the echo is
    # answered, the sleep is in the worker and its answer deferred.
    assert c.call("demo.echo", {"text": "after"})["text"] == "after"
    # The call completes as cancelled; the daemon exits 0 with nothing leaked.
    d.check_clean_exit()
    c.close()


def test_state_section_survives_kill_9(demo_daemon):
    d = demo_daemon()
    assert d.call("demo.put", {"value": {"layout": "1g.10gb", "n": 7}}) == {"saved": True}
    assert d.call("demo.members", {"ids": [MIG, "mdev-pending-1"]})["members"] == 2
    with open(os.path.join(d.state, "state.json")) as f:
        state = json.load(f)
    assert state["modules"]["demo"]["value"] == {"layout": "1g.10gb", "n": 7}
    assert state["claims"] == [] and state["checksum"].startswith("crc32:")
    d.proc.kill()
    d.proc.wait()
    d.stop()
    d.start()
    r = d.call("demo.get")
    assert r["value"] == {"layout": "1g.10gb", "n": 7}
    # The start hook re-applied the members from the section.
    assert r["members"] == [MIG, "mdev-pending-1"] and r["starts"] == 1
    assert r["rebooted"] is False
    res = {x["name"]: x for x in d.call("resources.list")}
    assert sorted(m["id"] for m in res[RESOURCE]["devices"]) == sorted([MIG, "mdev-pending-1"])
    assert res[RESOURCE]["module"] == "demo"


def test_old_state_file_without_modules_loads(demo_daemon):
    d = demo_daemon(start=False)
    os.makedirs(d.state, mode=0o700, exist_ok=True)
    # What the daemon before ABI v2 wrote (no "modules"), from another boot.
    old = {"boot_id": "00000000-0000-0000-0000-000000000000", "claims": [], "version": 1}
    canon = json.dumps(old, sort_keys=True, separators=(",", ":")).encode()
    old["checksum"] = "crc32:%08x" % zlib.crc32(canon)
    with open(os.path.join(d.state, "state.json"), "w") as f:
        json.dump(old, f)
    d.start()
    assert d.call("claims.list")["fail_closed"] is False
    r = d.call("demo.get")
    assert r["value"] is None and r["members"] == [] and r["rebooted"] is True
    d.call("demo.put", {"value": 1})
    with open(os.path.join(d.state, "state.json")) as f:
        new = json.load(f)
    assert new["modules"] == {"demo": {"members": [], "value": 1}} and new["claims"] == []


def test_torn_state_fails_module_closed(demo_daemon):
    d = demo_daemon()
    d.call("demo.put", {"value": 2})
    d.stop()
    path = os.path.join(d.state, "state.json")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace('"value":2', '"value":3'))
    d.start()
    # The checksum fails: the section is not trusted and cannot be written.
    with pytest.raises(hdtest.RpcError) as e:
        d.call("demo.put", {"value": 4})
    assert e.value.code == -32010 and "Read-only file system" in e.value.message


def test_non_inventory_members_reach_kubelet(demo_daemon):
    d = demo_daemon(start=False)
    k = Kubelet(d.kubelet)
    try:
        d.start()
        d.call("demo.members", {"ids": [MIG, "mdev-pending-1"]})
        plugin = k.wait_registered(RESOURCE)
        devs = plugin.wait_devices(lambda x: len(x) == 2)
        assert sorted(x[0] for x in devs) == sorted([MIG, "mdev-pending-1"])
        assert all(x[1] == "Healthy" for x in devs)
        resp = plugin.allocate([MIG, "mdev-pending-1"])
        assert dict(resp.container_responses[0].envs) == {
            "DEMO_DEVICES": f"{MIG},mdev-pending-1"}
        # Withdrawn members leave the kubelet's list.
        d.call("demo.members", {"ids": [MIG]})
        plugin.wait_devices(lambda x: [y[0] for y in x] == [MIG])
        # The simulated host's own resource registers too; not stopped mid-way.
        k.wait_registered("intel.com/X540_ETHERNET_CONTROLLER_VIRTUAL_FUNCTION")
    finally:
        k.stop()


def test_member_id_longer_than_64_refused(demo_daemon):
    d = demo_daemon()
    with pytest.raises(hdtest.RpcError) as e:
        d.call("demo.members", {"ids": ["x" * 65]})
    assert e.value.code == -32602
    d.call("demo.members", {"ids": ["y" * 64]})
    res = {x["name"]: x for x in d.call("resources.list")}
    assert [m["id"] for m in res[RESOURCE]["devices"]] == ["y" * 64]


def test_config_section(demo_daemon):
    d = demo_daemon(config={"demo": {"resource": "example.com/other"}})
    assert d.call("demo.get")["resource"] == "example.com/other"
    # A bad section on SIGHUP: refused, the old configuration stays.
    c = d.client()
    c.call("events.subscribe", {"types": ["config"]})
    d.write_config({"demo": {"resource": "example.com/third", "colour": "red"}})
    d.signal(signal.SIGHUP)
    ev = c.next_event()
    assert ev["type"] == "config.reload_failed" and "demo.colour: unknown key" in ev["error"]
    assert d.call("demo.get")["resource"] == "example.com/other"
    d.write_config({"demo": {"resource": "example.com/third"}})
    d.signal(signal.SIGHUP)
    assert c.next_event()["type"] == "config.reloaded"
    assert d.call("demo.get")["resource"] == "example.com/third"
    c.close()


@pytest.mark.parametrize("config,message", [
    ({"demo": {"colour": "red"}}, "demo.colour: unknown key"),
    ({"demo": {"resource": 5}}, "demo.resource: expected"),
    ({"nosuchmodule": {}}, "nosuchmodule: unknown key"),
    ({"usb": {"x": 1}}, "usb.x: unknown key"),
])
def test_bad_module_section_fails_start(demo_daemon, config, message):
    d = demo_daemon(config=config, start=False)
    args = d.args(1)
    i = args.index("--ready-fd")
    del args[i:i + 2]
    r = hdtest.subprocess.run(args, capture_output=True, text=True, timeout=30,
                              env=hdtest.sanitizer_env())
    assert r.returncode != 0
    assert message in r.stderr and d.config_path in r.stderr, r.stderr


@pytest.mark.skipif(shutil.which("umockdev-wrapper") is None, reason="umockdev is not installed")
def test_uevent_of_unmodelled_subsystem_reaches_module(make_daemon, tmp_path):
    """The monitor's filter is the union of the modules' subsystems: a "net"
    uevent, which the core does not model, reaches demo's uevent hook."""
    from test_hotplug import FakeKernel
    k = FakeKernel("dell-190")
    try:
        net = os.path.realpath(os.path.join(k.root, "sys/class/net/eno1"))
        # What the kernel has for a netdev and the simulated host leaves out.
        os.symlink(os.path.join(k.root, "sys/class/net"), os.path.join(net, "subsystem"))
        with open(os.path.join(net, "uevent"), "w") as f:
            f.write("INTERFACE=eno1\nIFINDEX=2\n")
        env = {"LD_PRELOAD": "libumockdev-preload.so.0", "UMOCKDEV_DIR": k.root}
        d = make_daemon(host=None, tree=k.root, env=env, node_name="dell-190",
                        extra_args=["--module-dir", module_dir(str(tmp_path))])
        before = d.call("daemon.status")["stats"]["uevents_ignored"]
        k.do("uevent", rel=os.path.relpath(net, os.path.join(k.root, "sys")), action="change")
        r = hdtest.wait_until(lambda: (lambda g: g if g["uevents"] else None)(d.call("demo.get")),
                              what="demo to see the net uevent")
        assert r["uevents"] == 1 and r["last_uevent"] == "change net eno1"
        assert d.call("daemon.status")["stats"]["uevents_ignored"] == before
        d.check_clean_exit()
    finally:
        k.close()


@pytest.mark.skipif(shutil.which("umockdev-wrapper") is None, reason="umockdev is not installed")
def test_device_events_of_owned_devices(make_daemon, tmp_path):
    """A device the module's probe takes: its add and remove reach the
    module's device_event hook; others' do not."""
    from test_hotplug import FakeKernel
    k = FakeKernel("dell-190")
    try:
        env = {"LD_PRELOAD": "libumockdev-preload.so.0", "UMOCKDEV_DIR": k.root}
        d = make_daemon(host=None, tree=k.root, env=env, node_name="dell-190",
                        config={"demo": {"own_vendor": "046d"}},
                        extra_args=["--module-dir", module_dir(str(tmp_path))])
        assert d.call("demo.get")["device_events"] == [], "none during the coldplug scan"
        k.do("add_usb", controller="0000:00:14.0", busnum=1, port="6", vendor="1234",
             product="0001", devnum=8, name="Other")
        k.do("add_usb", controller="0000:00:14.0", busnum=1, port="5", vendor="046d",
             product="c52b", devnum=7, name="USB Receiver")
        hdtest.wait_until(lambda: d.call("demo.get")["device_events"] == ["add 1-5"],
                          what="demo to see its device come")
        assert d.call("devices.get", {"address": "1-5"})["module"] == "demo"
        assert d.call("devices.get", {"address": "1-6"})["module"] == "usb"
        k.do("remove_usb", port="1-5")
        hdtest.wait_until(lambda: d.call("demo.get")["device_events"] == ["add 1-5", "remove 1-5"],
                          what="demo to see its device go")
        d.check_clean_exit()
    finally:
        k.close()
