# SPDX-License-Identifier: MIT
"""Control socket: JSON-RPC errors keep the connection usable, limits hold,
slow and hostile clients cannot stall the daemon, permissions come from
SO_PEERCRED."""

import json
import os
import shutil
import socket
import stat
import subprocess
import threading
import time

import pytest

from hdtest import Client, wait_until


def test_socat_and_jq(daemon):
    if not shutil.which("socat") or not shutil.which("jq"):
        pytest.skip("socat or jq not installed")
    out = subprocess.run(
        f"echo '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"devices.list\"}}' | "
        f"socat - UNIX-CONNECT:{daemon.sock} | jq -r '.result[] | .address // .port'",
        shell=True, capture_output=True, text=True, timeout=20, check=True)
    addrs = out.stdout.split()
    assert "0000:04:00.0" in addrs and "1-4" in addrs and len(addrs) == 27


def test_socket_mode(daemon):
    st = os.stat(daemon.sock)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660


def test_errors_keep_connection(daemon):
    c = daemon.client()
    cases = [
        (b"{this is not json\n", -32700),
        (b'{"jsonrpc":"2.0","id":1}\n', -32600),
        (b'{"jsonrpc":"2.0","id":2,"method":"no.such"}\n', -32601),
        (b'{"jsonrpc":"2.0","id":3,"method":"devices.get","params":{"address":7}}\n', -32602),
        (b'{"jsonrpc":"2.0","id":4,"method":"devices.list","params":{"vendor":"xyz"}}\n', -32602),
        (b'"just a string"\n', -32600),
        (b'\xff\xfe\x00garbage\n', -32700),
        (b'{"jsonrpc":"2.0","id":5,"method":"devices.get","params":{"address":"0000:99:00.0"}}\n',
         -32004),
    ]
    for raw, code in cases:
        c.send_raw(raw)
        resp = c.recv_line()
        assert resp["jsonrpc"] == "2.0"
        assert resp["error"]["code"] == code, (raw, resp)
        assert resp["error"]["message"]
    assert len(c.call("devices.list")) == 27, "the connection is still usable"
    # Two requests in one write, one split over two writes.
    c.send_raw(b'{"jsonrpc":"2.0","id":"a","method":"daemon.status"}\n'
               b'{"jsonrpc":"2.0","id":"b","method":"modules.list"}\n{"jsonrpc":"2.0",')
    assert c.recv_line()["id"] == "a"
    assert c.recv_line()["id"] == "b"
    c.send_raw(b'"id":"c","method":"daemon.status"}\n')
    assert c.recv_line()["id"] == "c"
    # A batch.
    c.send_raw(b'[{"jsonrpc":"2.0","id":1,"method":"daemon.status"},'
               b'{"jsonrpc":"2.0","id":2,"method":"nope"}]\n')
    batch = c.recv_line()
    assert [r.get("id") for r in batch] == [1, 2] and batch[1]["error"]["code"] == -32601
    c.close()


def test_oversized_request(daemon):
    c = daemon.client()
    big = b'{"jsonrpc":"2.0","id":1,"method":"devices.list","params":{"class":"' + \
        b"x" * (70 * 1024) + b'"}}\n'
    c.send_raw(big)
    resp = c.recv_line()
    assert resp["error"]["code"] == -32600 and "65536" in resp["error"]["message"]
    assert c.call("daemon.status")["devices"]["pci"] == 23, "usable after an over-long line"
    c.close()


def run_clients(d, n=100, rounds=3):
    errors = []

    def worker(i):
        try:
            c = Client(d.sock, timeout=120)
            for _ in range(rounds):
                # 342 devices: more than one answer holds, so two pages.
                page = c.call("devices.list", {"vendor": "8086", "device": "1521", "limit": 256})
                rest = c.call("devices.list", {"vendor": "8086", "device": "1521",
                                               "cursor": page["next_cursor"]})
                assert rest["next_cursor"] is None
                assert len(page["devices"]) + len(rest["devices"]) == 342
            c.close()
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(f"client {i}: {e!r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors[:5]


def test_many_clients_and_one_that_never_reads(make_daemon):
    d = make_daemon(host="scale", functions=2048)
    run_clients(d)          # warm-up: the allocator's working set for 100 clients
    rss_before = d.rss_kib()
    # One client that floods requests and never reads its answers.
    hog = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hog.connect(d.sock)
    hog.setblocking(False)
    req = b'{"jsonrpc":"2.0","id":1,"method":"devices.list","params":{"limit":256}}\n'
    for _ in range(2000):
        try:
            hog.send(req * 50)
        except BlockingIOError:
            break
    run_clients(d)          # everyone else is still served
    for _ in range(20):
        try:
            hog.send(req * 50)
        except BlockingIOError:
            pass
    assert d.call("daemon.status")["control"]["clients"] >= 2
    grown = d.rss_kib() - rss_before
    assert grown < 64 * 1024, f"RSS grew {grown} KiB with a client that never reads"
    hog.close()


def test_subscriber_that_never_reads_is_dropped(make_daemon):
    d = make_daemon(host="scale", functions=512,
                    config={"control": {"max_output_bytes": 65536}})
    lazy = Client(d.sock)
    lazy.call("events.subscribe")
    lazy.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    c = d.client()
    # Each rescan after flipping drivers produces 512 change events.
    drvs = [os.path.join(d.sysfs, "bus/pci/drivers", n) for n in ("igb", "nvme")]
    for r in range(6):
        for i in range(0, 512, 6):
            link = os.path.join(d.sysfs, f"devices/pci0000:{i // 256:02x}",
                                f"0000:{i // 256:02x}:{(i // 8) % 32:02x}.{i % 8}", "driver")
            os.unlink(link)
            os.symlink(os.path.relpath(drvs[r % 2], os.path.dirname(link)), link)
        c.call("daemon.rescan")
    wait_until(lambda: "has " in d.log_text() and "unread; disconnecting it" in d.log_text(),
               what="the lazy subscriber to be dropped")
    assert d.call("daemon.status")["control"]["subscribers"] == 0
    c.close()
    lazy.close()


def test_max_clients(make_daemon):
    d = make_daemon(config={"control": {"max_clients": 3}})
    held = [d.client() for _ in range(3)]
    for c in held:
        c.call("daemon.status")
    extra = Client(d.sock)
    msg = extra.recv_line()
    assert msg["error"]["code"] == -32000 and "too many clients" in msg["error"]["message"]
    extra.close()
    held.pop().close()
    c = wait_until(lambda: _try_status(d), what="a free slot")
    for h in held:
        h.close()


def _try_status(d):
    try:
        c = d.client()
        c.call("daemon.status")
        c.close()
        return True
    except (RuntimeError, ConnectionError, KeyError, TimeoutError, AssertionError):
        return False


def test_permissions_from_peer_credentials(daemon):
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    os.chmod(daemon.sock, 0o666)
    os.chmod(daemon.dir, 0o755)
    script = (
        "import json, os, socket, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rwb')\n"
        "for m in ('devices.list', 'daemon.rescan', 'daemon.status'):\n"
        "    f.write(json.dumps({'jsonrpc': '2.0', 'id': m, 'method': m}).encode() + b'\\n'); f.flush()\n"
        "    print(f.readline().decode().strip())\n")
    out = subprocess.run(["/usr/bin/python3", "-c", script, daemon.sock], capture_output=True,
                         text=True, timeout=30, check=True)
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert len(lines[0]["result"]) == 27, "reading is open to anyone who can connect"
    assert lines[1]["error"]["code"] == -32001
    assert "permission denied" in lines[1]["error"]["message"]
    assert "result" in lines[2], "the refusal did not end the connection"
    assert "refused daemon.rescan to uid 65534" in daemon.log_text()


def test_control_group_may_mutate(make_daemon):
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user")
    d = make_daemon(config={"control": {"group": "nogroup"}})
    os.chmod(d.dir, 0o755)
    st = os.stat(d.sock)
    import grp
    assert st.st_gid == grp.getgrnam("nogroup").gr_gid, "the socket belongs to the group"
    script = (
        "import json, os, socket, sys, grp\n"
        "os.setgid(grp.getgrnam('nogroup').gr_gid); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rwb')\n"
        "f.write(b'{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.rescan\"}\\n'); f.flush()\n"
        "print(f.readline().decode().strip())\n")
    out = subprocess.run(["/usr/bin/python3", "-c", script, d.sock], capture_output=True,
                         text=True, timeout=30, check=True)
    assert "result" in json.loads(out.stdout)


def test_stale_socket_is_replaced_and_others_are_left_alone(make_daemon):
    d = make_daemon(start=False)
    s = socket.socket(socket.AF_UNIX)
    s.bind(d.sock)
    s.close()   # a stale socket from a crashed daemon
    d.start()
    assert d.call("daemon.status")["pid"] == d.pid()
    d.check_clean_exit()
    assert not os.path.exists(d.sock), "the socket is removed on exit"

    with open(d.sock, "w") as f:
        f.write("precious")
    r = subprocess.run(d.args(1)[:-2], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "exists and is not a socket" in r.stderr
    with open(d.sock) as f:
        assert f.read() == "precious"


def test_second_daemon_refused(daemon):
    r = subprocess.run(daemon.args(1)[:-2], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "another hostdevd" in r.stderr
    assert daemon.call("daemon.status")["pid"] == daemon.pid(), "the first one is unharmed"
