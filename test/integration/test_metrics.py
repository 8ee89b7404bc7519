# SPDX-License-Identifier: MIT
"""The HTTP listener: /metrics in Prometheus text format (checked by promtool
when it is installed), /healthz and /readyz, and `hostdevctl status` failing
when the daemon fails closed."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.request

import pytest

import hdtest
from kubelet import Kubelet
from test_claims import host  # noqa: F401  (a fixture)
from test_deviceplugin import X540VF, bind_vfio


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path):
    """(status, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def samples(text):
    """{'name{labels}': value} of a text exposition."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def metrics_daemon(make_daemon, **kw):
    port = free_port()
    d = make_daemon(extra_args=["--metrics-address", f"127.0.0.1:{port}"], **kw)
    return d, port


def test_metrics_scrape(make_daemon):
    port = free_port()
    d = make_daemon(extra_args=["--metrics-address", f"127.0.0.1:{port}"], start=False)
    k = Kubelet(d.kubelet)
    try:
        d.start()
        os.makedirs(os.path.join(
            d.sysfs, "devices/pci0000:00/0000:00:01.0/0000:01:10.0/vfio-dev/vfio3"))
        bind_vfio(d, "0000:01:10.2")
        d.call("daemon.rescan")
        plugin = k.wait_registered(X540VF)
        hdtest.wait_until(lambda: any(r["name"] == X540VF and r["state"] == "registered"
                                      for r in d.call("resources.list")),
                          what="hostdevd to see the Register answer")
        plugin.wait_devices(lambda x: len(x) == 2)
        plugin.allocate(["0000:01:10.0"])
        status, body = get(port, "/metrics")
        assert status == 200
        m = samples(body)
        st = d.call("daemon.status")
        for cls in ("pci", "usb", "mdev"):
            assert m[f'hostdevd_devices{{class="{cls}"}}'] == st["devices"][cls]
        assert m["hostdevd_fail_closed"] == 0 and m["hostdevd_ready"] == 1
        lbl = f'{{resource="{X540VF}",module="pci"}}'
        assert m["hostdevd_resource_devices" + lbl] == 2
        assert m["hostdevd_resource_healthy_devices" + lbl] == 2
        assert m["hostdevd_resource_registered" + lbl] == 1
        assert m["hostdevd_resource_registrations_total" + lbl] >= 1
        assert m["hostdevd_resource_allocate_calls_total" + lbl] == 1
        assert m["hostdevd_allocate_duration_seconds_count"] == 1
        assert m['hostdevd_allocate_duration_seconds_bucket{le="+Inf"}'] == 1
        assert m["hostdevd_uevents_total"] == st["stats"]["uevents"]
        assert m["hostdevd_resyncs_total"] == st["stats"]["resyncs"] >= 1
        assert m['hostdevd_module_devices{module="pci"}'] > 0
        assert m['hostdevd_claims{state="claimed"}'] == 0
        assert "hostdevd_worker_jobs_total" in m and "hostdevd_worker_timeouts_total" in m
        assert re.search(r'^hostdevd_info\{version="[^"]+",node="dell-190"\} 1$', body, re.M)
        promtool = shutil.which("promtool")
        if promtool:
            r = subprocess.run([promtool, "check", "metrics"], input=body, text=True,
                               capture_output=True)
            assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), \
                r.stdout + r.stderr
        assert get(port, "/healthz") == (200, "ok\n")
        assert get(port, "/readyz") == (200, "ready\n")
        assert get(port, "/nope")[0] == 404
        req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", data=b"x", method="POST")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 501      # evhttp's answer to a method it does not allow
        assert d.call("daemon.status")["claims"]["fail_closed"] is False
    finally:
        k.stop()


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian: prometheus) not installed")
def test_promtool_present():
    """CI installs prometheus: the scrape above is checked by promtool there."""
    assert subprocess.run(["promtool", "--version"], capture_output=True).returncode == 0


def test_fail_closed_turns_probes_red(make_daemon):
    port = free_port()
    d = make_daemon(extra_args=["--metrics-address", f"127.0.0.1:{port}"], start=False)
    os.makedirs(d.state, mode=0o700, exist_ok=True)
    with open(os.path.join(d.state, "state.json"), "w") as f:
        f.write('{"version": 1, "claims": [], "crc32": "00000000"')     # torn
    d.start()
    assert d.call("daemon.status")["claims"]["fail_closed"] is True
    assert get(port, "/readyz")[0] == 503
    assert get(port, "/healthz")[0] == 503
    assert samples(get(port, "/metrics")[1])["hostdevd_fail_closed"] == 1
    r = subprocess.run([hdtest.HOSTDEVCTL, "--socket", d.sock, "status"], capture_output=True,
                       text=True)
    assert r.returncode == 8, (r.returncode, r.stderr)
    assert "fails closed" in r.stderr


def test_status_exit_zero_when_healthy(daemon):
    r = subprocess.run([hdtest.HOSTDEVCTL, "--socket", daemon.sock, "status"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_versions():
    for exe, name in ((hdtest.HOSTDEVD, "hostdevd"), (hdtest.HOSTDEVCTL, "hostdevctl")):
        r = subprocess.run([exe, "--version"], capture_output=True, text=True)
        assert r.returncode == 0 and re.match(rf"^{name} \d+\.\d+\.\d+", r.stdout), r.stdout


@pytest.mark.parametrize("bad", ["9477", "localhost", "::1:80", "[::1]80", "h:99999", "h:x"])
def test_bad_metrics_address(bad):
    r = subprocess.run([hdtest.HOSTDEVD, "--metrics-address", bad, "--foreground"],
                       capture_output=True, text=True, timeout=30, env=hdtest.sanitizer_env())
    assert r.returncode == 2 and "--metrics-address" in r.stderr


def test_metrics_port_taken(make_daemon):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        d = make_daemon(extra_args=["--metrics-address", f"127.0.0.1:{port}"], start=False)
        with pytest.raises(AssertionError, match="before READY"):
            d.start()
        assert "metrics listener" in d.log_text()
        d.stopped_rc = d.proc.returncode
        d.proc = None
        d.log.close()


def test_systemd_notifications(make_daemon, tmp_path):
    """STATUS= while starting, READY=1 once serving, RELOADING=1 then READY=1
    around SIGHUP, WATCHDOG=1 at half of $WATCHDOG_USEC, STOPPING=1 at SIGTERM."""
    path = str(tmp_path / "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(30)
    d = make_daemon(start=False,
                    env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    d.start()

    def until(prefix):
        seen = []
        while True:
            m = s.recv(1024).decode()
            seen.append(m)
            if m.startswith(prefix):
                return seen

    seen = until("READY=1")
    assert seen[0].startswith("STATUS="), seen
    assert "STATUS=serving" in seen[-1], seen
    until("WATCHDOG=1")
    until("WATCHDOG=1")
    d.signal(signal.SIGHUP)
    until("RELOADING=1")
    assert "STATUS=configuration reloaded" in until("READY=1")[-1]
    d.signal(signal.SIGTERM)
    until("STOPPING=1")
    d.check_clean_exit()
    s.close()


def test_ready_waits_for_recorded_claims(host, tmp_path):  # noqa: F811
    """A claim interrupted by kill -9 is re-applied at the next start before
    READY=1 (and /readyz): when READY=1 arrives, nothing is in flight."""
    addr = "0000:01:10.2"
    d, k = host()
    d.stop()
    d.env = {"HOSTDEVD_TEST_CRASH_AFTER": "intent"}
    d.start()
    c = d.client(timeout=30)
    c.send_raw((json.dumps({"jsonrpc": "2.0", "id": 1, "method": "pci.claim",
                            "params": {"address": addr}}) + "\n").encode())
    d.proc.wait(30)
    assert d.proc.returncode == -signal.SIGKILL, d.log_text()[-3000:]
    c.close()
    d.proc = None
    d.log.close()

    path = str(tmp_path / "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(30)
    port = free_port()
    d.env = {"NOTIFY_SOCKET": path}
    d.extra_args += ["--metrics-address", f"127.0.0.1:{port}"]
    d.start()
    seen = []
    while not seen or not seen[-1].startswith("READY=1"):
        seen.append(s.recv(1024).decode())
    s.close()
    assert any(m.startswith("STATUS=re-applying 1 recorded claims") for m in seen), seen
    cl = d.call("claims.list")["claims"]
    assert [(x["state"], x["busy"]) for x in cl] == [("claimed", False)], cl
    assert k.driver_of(addr) == "vfio-pci"
    assert get(port, "/readyz") == (200, "ready\n")
