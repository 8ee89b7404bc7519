# SPDX-License-Identifier: MIT
"""The daemon's life: options, configuration errors and reloads, readiness,
rescans and periodic resyncs with their events, clean exit on signals."""

import json
import os
import signal
import socket
import subprocess

import pytest

import hdtest
from hdtest import wait_until


def run(args, **kw):
    return subprocess.run([hdtest.HOSTDEVD] + args, capture_output=True, text=True, timeout=30,
                          env=hdtest.sanitizer_env(), **kw)


def test_version_and_help():
    r = run(["--version"])
    assert r.returncode == 0 and r.stdout.startswith("hostdevd ")
    r = run(["--help"])
    assert r.returncode == 0
    for opt in ("--foreground", "--config FILE", "--sysfs-root DIR", "--dev-root DIR",
                "--kubelet-dir DIR", "--control-socket PATH", "--state-dir DIR",
                "--module-dir DIR", "--node-name NAME", "--log-level LEVEL", "--ready-fd FD",
                "--version", "--help"):
        assert opt in r.stdout, opt
    r = run(["--log-level", "chatty"])
    assert r.returncode == 2 and "--log-level" in r.stderr
    r = run(["--no-such-option"])
    assert r.returncode == 2


@pytest.mark.parametrize("config,key", [
    ('{"resync_interval": "soon"}', "resync_interval"),
    ('{"control": {"max_clients": -1}}', "control.max_clients"),
    ('{"bogus": 1}', "bogus: unknown key"),
    ('{"log_level": 3', "line 1"),
])
def test_bad_config_fails_start(make_daemon, config, key):
    d = make_daemon(config=config, start=False)
    r = subprocess.run(d.args(1)[:-2], capture_output=True, text=True, timeout=30,
                       env=hdtest.sanitizer_env())
    assert r.returncode != 0
    assert key in r.stderr, r.stderr
    assert d.config_path in r.stderr


def test_sighup_reload(make_daemon):
    d = make_daemon(config={"resync_interval": 60})
    assert d.call("daemon.status")["resync"]["interval_s"] == 60
    c = d.client()
    c.call("events.subscribe", {"types": ["config"]})
    d.write_config({"resync_interval": 7})
    d.signal(signal.SIGHUP)
    ev = c.next_event()
    assert ev["type"] == "config.reloaded"
    assert d.call("daemon.status")["resync"]["interval_s"] == 7

    d.write_config('{"resync_interval": 7, "typo": true}')
    d.signal(signal.SIGHUP)
    ev = c.next_event()
    assert ev["type"] == "config.reload_failed" and "typo" in ev["error"]
    assert "keeping the old configuration" in d.log_text()
    assert d.call("daemon.status")["resync"]["interval_s"] == 7, "the old config stays"

    # A configuration deleted (or renamed) by mistake is not "the defaults":
    # its excludes and rules would be gone. The running one stays.
    os.unlink(d.config_path)
    d.signal(signal.SIGHUP)
    ev = c.next_event()
    assert ev["type"] == "config.reload_failed" and "No such file" in ev["error"], ev
    assert d.call("daemon.status")["resync"]["interval_s"] == 7, "the old config stays"
    c.close()


def test_sigint_exits_cleanly(daemon):
    daemon.signal(signal.SIGINT)
    daemon.proc.wait(20)
    assert daemon.proc.returncode == 0
    daemon.check_clean_exit()


def test_notify_socket(make_daemon, tmp_path):
    path = str(tmp_path / "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(30)
    d = make_daemon(env={"NOTIFY_SOCKET": path}, start=False)
    d.env = {"NOTIFY_SOCKET": path}
    orig = hdtest.sanitizer_env

    def env_with_notify(extra=None):
        e = orig(extra)
        e["NOTIFY_SOCKET"] = path
        return e

    hdtest.sanitizer_env = env_with_notify
    try:
        d.start()
    finally:
        hdtest.sanitizer_env = orig
    msgs = [s.recv(256)]          # STATUS= lines come first (test_metrics.py has the rest)
    while not msgs[-1].startswith(b"READY=1"):
        msgs.append(s.recv(256))
    s.close()


def test_rescan_events(daemon):
    sub = daemon.client()
    assert sub.call("events.subscribe")["subscribed"] is True
    dev = os.path.join(daemon.sysfs, "devices/pci0000:00/0000:00:17.0")
    os.unlink(os.path.join(dev, "driver"))
    os.symlink("../../../bus/pci/drivers/vfio-pci", os.path.join(dev, "driver"))
    # A new function appears: written the way the kernel lays it out.
    t = hdtest.simhost.Tree(daemon.root)
    t.devices.update({"0000:00:01.0": "devices/pci0000:00/0000:00:01.0"})
    t.pci("0000:02:00.0", 0x15b3, 0x101b, 0x020700, parent="0000:00:01.0", driver="mlx5_core",
          group=90, numa=0)
    # A VF disappears, as when sriov_numvfs goes from 8 to 7.
    import shutil
    os.unlink(os.path.join(daemon.sysfs, "bus/pci/devices/0000:04:01.3"))
    shutil.rmtree(os.path.join(daemon.sysfs, "devices/pci0000:00/0000:00:03.0/0000:04:01.3"))
    os.unlink(os.path.join(daemon.sysfs, "devices/pci0000:00/0000:00:03.0/0000:04:00.0/virtfn7"))
    with open(os.path.join(daemon.sysfs, "devices/pci0000:00/0000:00:03.0/0000:04:00.0/sriov_numvfs"), "w") as f:
        f.write("7\n")
    summary = daemon.call("daemon.rescan")
    assert (summary["added"], summary["removed"], summary["changed"]) == (1, 1, 2)
    events = {}
    for _ in range(4):
        ev = sub.next_event()
        events[(ev["type"], ev["id"])] = ev
    ch = events[("device.change", "0000:00:17.0")]
    assert ch["changed"] == ["driver"] and ch["device"]["driver"] == "vfio-pci"
    assert ch["source"] == "rescan"
    add = events[("device.add", "0000:02:00.0")]
    assert add["device"]["vendor_name"] == "Mellanox Technologies"
    assert add["device"]["parent"] == "0000:00:01.0"
    assert ("device.remove", "0000:04:01.3") in events
    pf = events[("device.change", "0000:04:00.0")]
    assert sorted(pf["changed"]) == ["sriov_numvfs", "virtfns"]
    assert len(pf["device"]["virtfns"]) == 7
    seqs = sorted(e["seq"] for e in events.values())
    assert seqs == list(range(seqs[0], seqs[0] + 4)), "events are numbered without gaps"
    sub.close()


def test_periodic_resync(make_daemon):
    d = make_daemon(config={"resync_interval": 1})
    sub = d.client()
    sub.call("events.subscribe", {"types": ["device.remove"]})
    os.unlink(os.path.join(d.sysfs, "bus/pci/devices/0000:35:00.1"))
    ev = sub.next_event(timeout=15)
    assert ev["id"] == "0000:35:00.1" and ev["source"] == "periodic"
    assert d.call("devices.get", {"address": "0000:35:00.0"})["iommu_group_members"] == []
    sub.close()


def test_events_stream_with_socat(daemon):
    """A subscriber that closes its sending side keeps receiving events."""
    import shutil
    if not shutil.which("socat"):
        pytest.skip("socat not installed")
    p = subprocess.Popen(f"echo '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events.subscribe\"}}' | "
                         f"socat -t 30 - UNIX-CONNECT:{daemon.sock}", shell=True,
                         stdout=subprocess.PIPE, text=True)
    first = json.loads(p.stdout.readline())
    assert first["result"]["subscribed"] is True
    os.unlink(os.path.join(daemon.sysfs, "bus/usb/devices/1-3"))
    daemon.call("daemon.rescan")
    ev = json.loads(p.stdout.readline())
    assert ev["method"] == "event" and ev["params"]["type"] == "device.remove"
    assert ev["params"]["id"] == "1-3" and ev["params"]["class"] == "usb"
    p.kill()
    p.wait()
