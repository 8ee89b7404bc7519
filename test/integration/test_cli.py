# SPDX-License-Identifier: MIT
"""hostdevctl: tables, --json, filters, follow mode and exit codes."""

import json
import os
import select
import signal
import subprocess
import time

import hdtest


def ctl(daemon, *args, sock=None):
    return subprocess.run([hdtest.HOSTDEVCTL, "--socket", sock or daemon.sock, *args],
                          capture_output=True, text=True, timeout=30,
                          env=hdtest.sanitizer_env())


def test_devices_table(daemon):
    r = ctl(daemon, "devices")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ADDRESS", "ID", "CLASS", "DRIVER", "GROUP", "NUMA", "MODULE", "NAME"]
    row = next(x for x in lines if x.startswith("0000:01:10.0"))
    assert row.split()[:7] == ["0000:01:10.0", "8086:1515", "0200", "vfio-pci", "111", "0", "pci"]
    # Columns line up: every row's second column starts where the header's does.
    col = lines[0].index("ID")
    assert all(x[col - 2:col] == "  " for x in lines[1:24])
    usb_hdr = next(x for x in lines if x.startswith("PORT"))
    assert usb_hdr.split() == ["PORT", "ID", "BUS:DEV", "DRIVER", "CONTROLLER", "MODULE", "NAME"]
    assert any(x.startswith("1-4 ") and "0624:0251" in x and "1:4" in x for x in lines)


def test_devices_filters_and_json(daemon):
    r = ctl(daemon, "--json", "devices", "--vendor", "10de", "--driver", "nvidia")
    assert r.returncode == 0
    devs = json.loads(r.stdout)
    assert len(devs) == 9 and all(d["driver"] == "nvidia" for d in devs)
    r = ctl(daemon, "devices", "--class", "usb", "--module", "usb")
    assert r.returncode == 0 and "usb1" not in r.stdout and "1-3" in r.stdout
    r = ctl(daemon, "devices", "--iommu-group", "20")
    assert r.returncode == 0 and "0000:35:00.0" in r.stdout and "0000:35:00.1" in r.stdout
    r = ctl(daemon, "devices", "--vendor", "zzzz")
    assert r.returncode == 2 and "vendor" in r.stderr


def test_device_and_status(daemon):
    r = ctl(daemon, "device", "0000:04:00.0")
    assert r.returncode == 0
    assert "GA100 [A100 PCIe 40GB]" in r.stdout and "module_info:" in r.stdout
    r = ctl(daemon, "--json", "device", "1-4")
    assert json.loads(r.stdout)["vendor_id"] == "0624"
    r = ctl(daemon, "device", "0000:99:00.0")
    assert r.returncode == 5 and "no such device" in r.stderr
    r = ctl(daemon, "status")
    assert r.returncode == 0 and "node_name" in r.stdout and "iommu:" in r.stdout
    r = ctl(daemon, "--json", "status")
    assert json.loads(r.stdout)["devices"]["usb"] == 4
    r = ctl(daemon, "modules")
    assert r.returncode == 0 and r.stdout.splitlines()[0].split()[:3] == ["NAME", "ACTIVE", "DEVICES"]
    r = ctl(daemon, "rescan")
    assert r.returncode == 0 and "devices" in r.stdout


def test_exit_codes(daemon):
    r = ctl(daemon, "status", sock=daemon.sock + ".nope")
    assert r.returncode == 3 and "cannot connect" in r.stderr
    r = ctl(daemon, "frobnicate")
    assert r.returncode == 2 and "unknown command" in r.stderr
    r = ctl(daemon, "device")
    assert r.returncode == 2
    r = subprocess.run([hdtest.HOSTDEVCTL], capture_output=True, text=True)
    assert r.returncode == 2 and "Usage" in r.stderr


def test_events_follow(daemon):
    p = subprocess.Popen([hdtest.HOSTDEVCTL, "--socket", daemon.sock, "events"],
                         stdout=subprocess.PIPE, text=True, env=hdtest.sanitizer_env())
    hdtest.wait_until(lambda: daemon.call("daemon.status")["control"]["subscribers"] == 1,
                      what="hostdevctl events to subscribe")
    os.unlink(os.path.join(daemon.sysfs, "bus/pci/devices/0000:00:17.0"))
    daemon.call("daemon.rescan")
    # Other events may come first (a module's, from its start): the stream's
    # device.remove line is the one asked for.
    deadline = time.monotonic() + 20
    fd, buf, seen = p.stdout.fileno(), b"", []
    while not any("device.remove" in x for x in seen) and time.monotonic() < deadline:
        if select.select([fd], [], [], max(0, deadline - time.monotonic()))[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            seen += [x.decode() for x in lines]
    line = next((x for x in seen if "device.remove" in x), "")
    assert "0000:00:17.0" in line and "rescan" in line, seen
    p.send_signal(signal.SIGINT)
    p.wait(10)


def test_claim_commands(make_daemon):
    from simkernel import SimKernel
    d = make_daemon(start=False)
    k = SimKernel(d.root)
    try:
        d.start()
        r = ctl(d, "claim", "0000:01:10.2", "--resource", "example.com/nic")
        assert r.returncode == 0 and "0000:01:10.2: claimed" in r.stdout, r.stderr
        r = ctl(d, "claims")
        lines = r.stdout.splitlines()
        assert lines[0].split()[:4] == ["ADDRESS", "STATE", "GROUP", "MEMBERS"]
        assert "0000:01:10.2(vfio-pci<-ixgbevf)" in lines[1] and "example.com/nic" in lines[1]
        r = ctl(d, "claim", "0000:01:00.0")
        assert r.returncode == 6 and "VFs enabled" in r.stderr
        r = ctl(d, "release", "0000:01:10.4")
        assert r.returncode == 5 and "not claimed" in r.stderr
        r = ctl(d, "release", "0000:01:10.2")
        assert r.returncode == 0 and "released" in r.stdout
        assert ctl(d, "claims").stdout.strip() == "no claims"
    finally:
        k.stop()
