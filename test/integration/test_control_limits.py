# SPDX-License-Identifier: MIT
"""Control socket under hostile load: a subscriber dropped by its own request,
bounded answers, batches and budgets, paging, stalled clients, the root slot
and rate-limited refusals."""

import json
import os
import selectors
import socket
import subprocess
import sys

import pytest

from hdtest import Client, wait_until


def flip_drivers(d, n):
    """Moves the first n functions of a scale host to the other driver."""
    drvs = {name: os.path.join(d.sysfs, "bus/pci/drivers", name) for name in ("igb", "nvme")}
    for i in range(n):
        link = os.path.join(d.sysfs, f"devices/pci0000:{i // 256:02x}",
                            f"0000:{i // 256:02x}:{(i // 8) % 32:02x}.{i % 8}", "driver")
        now = os.path.basename(os.readlink(link)) if os.path.islink(link) else None
        if now:
            os.unlink(link)
        other = drvs["nvme" if now == "igb" else "igb"]
        os.symlink(os.path.relpath(other, os.path.dirname(link)), link)


def test_subscriber_dropped_by_its_own_request(make_daemon):
    """A subscriber that does not read asks for a rescan whose events pass its
    output limit: it is dropped while its own request is being handled, and
    the daemon neither touches freed memory nor crashes."""
    d = make_daemon(host="scale", functions=512,
                    config={"control": {"max_output_bytes": 65536}})
    lazy = Client(d.sock)
    lazy.call("events.subscribe")
    flip_drivers(d, 512)
    # 512 device.change events of ~1 KiB each, queued during this request.
    lazy.send_raw(b'{"jsonrpc":"2.0","id":9,"method":"daemon.rescan"}\n')
    wait_until(lambda: "unread; disconnecting it" in d.log_text(),
               what="the subscriber to be dropped")
    st = d.call("daemon.status")
    assert st["control"]["subscribers"] == 0 and st["control"]["clients"] == 1
    lazy.close()
    # check_clean_exit (the fixture) fails on any AddressSanitizer report.


def rpc(method, rid, params=None):
    r = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        r["params"] = params
    return r


@pytest.fixture(scope="module")
def big_host(tmp_path_factory):
    import simhost
    root = str(tmp_path_factory.mktemp("scale4096"))
    simhost.build("scale", root, 4096)
    return root


def test_hostile_batch_is_bounded(make_daemon, big_host):
    d = make_daemon(host=None, tree=big_host, node_name="scale")
    c = d.client(timeout=120)
    assert c.call("daemon.status")["devices"]["pci"] == 4096
    rss_before = d.rss_kib()
    # The field trial's line: 32 whole lists of a 4096-function host.
    line = json.dumps([rpc("devices.list", i) for i in range(32)]).encode() + b"\n"
    c.send_raw(line)
    answer = c.recv_line(timeout=120)
    assert len(answer) == 32
    for r in answer:
        assert r["error"]["code"] == -32006, r
        assert "4096 devices match" in r["error"]["message"] and "cursor" in r["error"]["message"]
    # Pages are allowed, and the batch's answer stays within its budget.
    line = json.dumps([rpc("devices.list", i, {"limit": 256}) for i in range(32)]).encode()
    c.send_raw(line + b"\n")
    c.sock.settimeout(120)
    raw = b""
    while not raw.endswith(b"\n") or b"\n" not in c.buf + raw:
        chunk = c.sock.recv(1 << 20)
        assert chunk, "hostdevd closed the connection"
        raw += chunk
    assert len(raw) <= 4 * 1024 * 1024 + 1, f"a {len(raw)}-byte answer to one batch"
    answer = json.loads(raw)
    done = [r for r in answer if "result" in r]
    refused = [r for r in answer if "error" in r]
    assert len(done) + len(refused) == 32 and done and refused
    assert all(len(r["result"]["devices"]) == 256 for r in done)
    assert all(r["error"]["code"] == -32006 and "max_answer_bytes" in r["error"]["message"]
               for r in refused)
    assert [r["id"] for r in answer] == list(range(32)), "every request is answered, in order"
    grown = d.rss_kib() - rss_before
    assert d.rss_kib() < 200 * 1024 and grown < 150 * 1024, f"RSS grew {grown} KiB"
    assert c.call("daemon.status")["devices"]["pci"] == 4096, "the connection is still usable"
    c.close()


def test_devices_list_pages(make_daemon, big_host):
    d = make_daemon(host=None, tree=big_host, node_name="scale")
    c = d.client(timeout=60)
    # A whole list is answered whole, built a chunk per loop turn.
    whole = [x["address"] for x in c.call("devices.list")]
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 250}
        if cursor:
            params["cursor"] = cursor
        page = c.call("devices.list", params)
        pages += 1
        assert len(page["devices"]) <= 250
        seen += [x["address"] for x in page["devices"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 17 and len(seen) == 4096 and seen == sorted(set(seen))
    assert whole == seen
    # Filters apply before paging; a small filtered answer needs no page.
    assert [x["address"] for x in c.call("devices.list", {"iommu_group": 300})] == ["0000:01:05.4"]
    igb = c.call("devices.list", {"driver": "igb"})
    assert len(igb) == 683 and all(x["driver"] == "igb" for x in igb)
    page = c.call("devices.list", {"vendor": "8086", "device": "1521", "limit": 7})
    assert len(page["devices"]) == 7 and page["next_cursor"].startswith("pci/")
    assert all(x["device_id"] == "1521" for x in page["devices"])
    for bad in ({"limit": 0}, {"limit": 100000}, {"cursor": "nonsense"}, {"cursor": 5}):
        assert c.request("devices.list", bad)["error"]["code"] == -32602, bad
    c.close()


def test_whole_list_is_built_across_loop_turns(make_daemon, big_host):
    """A whole 4096-device list is built a chunk at a time: a request sent
    after it on another connection is answered before it; a second request
    on the same connection waits for it (answers stay in order); past
    control.max_answer_bytes the list is refused, asking to page."""
    d = make_daemon(host=None, tree=big_host, node_name="scale")
    big, probe = d.client(timeout=60), d.client(timeout=60)
    big.send_raw(b'{"jsonrpc":"2.0","id":1,"method":"devices.list"}\n'
                 b'{"jsonrpc":"2.0","id":2,"method":"daemon.status"}\n')
    probe.send_raw(b'{"jsonrpc":"2.0","id":9,"method":"daemon.status"}\n')
    order = []
    sel = selectors.DefaultSelector()
    sel.register(big.sock, selectors.EVENT_READ, big)
    sel.register(probe.sock, selectors.EVENT_READ, probe)
    while len(order) < 3:
        for key, _ in sel.select(timeout=60):
            cl = key.data
            while True:
                try:
                    msg = cl.recv_line(timeout=0.001)
                except TimeoutError:
                    break
                order.append(msg["id"])
                if msg["id"] == 1:
                    assert len(msg["result"]) == 4096
    assert order.index(9) < order.index(1), order
    assert order.index(1) < order.index(2), order
    big.close()
    probe.close()
    small = make_daemon(host=None, tree=big_host, node_name="scale",
                        config={"control": {"max_answer_bytes": 200000}})
    msg = small.client(timeout=60).request("devices.list")
    assert msg["error"]["code"] == -32006 and "max_answer_bytes" in msg["error"]["message"]
    assert len(small.call("devices.list", {"limit": 100})["devices"]) == 100


def test_hostdevctl_follows_cursors(make_daemon, big_host):
    import hdtest
    d = make_daemon(host=None, tree=big_host, node_name="scale")
    r = subprocess.run([hdtest.HOSTDEVCTL, "--socket", d.sock, "--json", "devices"],
                       capture_output=True, text=True, timeout=120, env=hdtest.sanitizer_env())
    assert r.returncode == 0, r.stderr
    devs = json.loads(r.stdout)
    assert len(devs) == 4096 and len({x["address"] for x in devs}) == 4096
    r = subprocess.run([hdtest.HOSTDEVCTL, "--socket", d.sock, "devices"], capture_output=True, text=True, timeout=120, env=hdtest.sanitizer_env())
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 4097, r.stderr


NOBODY_CLIENTS = r"""
import json, os, socket, sys, time
os.setgid(65534); os.setuid(65534)
path, n, req = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode() + b"\n"
socks = []
for i in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    if req.strip():
        s.sendall(req)
    socks.append(s)
print("connected", flush=True)
sys.stdin.readline()        # hold them until told
out = []
for s in socks:
    s.settimeout(5)
    try:
        data = s.recv(200)
    except OSError:
        data = b""
    out.append(data.decode(errors="replace"))
print(json.dumps(out), flush=True)
"""


def nobody_clients(d, n, request=""):
    os.chmod(d.sock, 0o666)
    os.chmod(d.dir, 0o755)
    p = subprocess.Popen([sys.executable, "-c", NOBODY_CLIENTS, d.sock, str(n), request],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "connected"
    return p


def finish(p):
    p.stdin.write("\n")
    p.stdin.flush()
    out = json.loads(p.stdout.readline())
    p.wait(30)
    return out


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_many_unread_answers_stay_within_the_budget(make_daemon, big_host):
    """255 unprivileged clients each ask a 256-device page and never read: the
    answers queued for all of them stay within max_total_output_bytes."""
    d = make_daemon(host=None, tree=big_host, node_name="scale",
                    config={"control": {"max_total_output_bytes": 16 << 20}})
    d.call("daemon.status")
    rss_before = d.rss_kib()
    req = json.dumps(rpc("devices.list", 1, {"limit": 256}))
    p = nobody_clients(d, 255, req)
    try:
        wait_until(lambda: "too much unsent output" in d.log_text() or
                   d.log_text().count("bytes wait for all clients") > 0, timeout=120,
                   what="the global output budget to refuse requests")
        # Root still gets its answers while the budget is spent.
        assert d.call("daemon.status")["control"]["clients"] >= 255
        grown = d.rss_kib() - rss_before
        assert d.rss_kib() < 200 * 1024, f"RSS {d.rss_kib()} KiB (grew {grown} KiB)"
    finally:
        out = finish(p)
    assert any('"code":-32006' in x for x in out), "some were refused for the budget"
    assert any('"result"' in x for x in out), "the first ones were answered"


def test_stalled_client_is_closed(make_daemon):
    d = make_daemon(config={"control": {"stall_timeout_s": 1}})
    hog = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hog.connect(d.sock)
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.setblocking(False)
    req = b'{"jsonrpc":"2.0","id":1,"method":"devices.list"}\n'
    try:
        hog.send(req * 200)     # ~5 MB of answers: paused at the output limit
    except BlockingIOError:
        pass
    wait_until(lambda: "read nothing of its" in d.log_text(), timeout=20,
               what="the stalled client to be closed")
    wait_until(lambda: d.call("daemon.status")["control"]["clients"] == 1,
               what="its slot to be free")
    hog.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_root_keeps_a_slot_and_refusals_are_summed_up(make_daemon):
    d = make_daemon(config={"control": {"max_clients": 4}})
    p = nobody_clients(d, 40)
    try:
        # Three unprivileged clients got in; the fourth slot is root's.
        wait_until(lambda: "more clients refused" in d.log_text(),
                   what="the summary of refusals")
        st = d.call("daemon.status")
        assert st["control"]["clients"] == 4, st["control"]
    finally:
        out = finish(p)
    assert sum('"code":-32000' in x for x in out) == 37

    def logged():
        log = d.log_text()
        full = log.count("refused a client (pid")
        summed = sum(int(line.split("[ctl] ")[1].split()[0]) for line in log.splitlines()
                     if "more clients refused" in line)
        return full, summed
    # The last summary comes within a second of the last refusal.
    wait_until(lambda: sum(logged()) == 37, what="every refusal to be counted in the log")
    full, summed = logged()
    assert full <= 2 and summed >= 35, (full, summed)


def test_many_requests_then_half_close(daemon):
    """Requests are taken 16 per loop turn; a client that sends many and closes
    its side (as socat does) still gets every answer, the last line's too."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(daemon.sock)
    lines = b"".join(json.dumps(rpc("daemon.status", i)).encode() + b"\n" for i in range(99))
    s.sendall(lines + json.dumps(rpc("modules.list", 99)).encode())   # no newline at the end
    s.shutdown(socket.SHUT_WR)
    s.settimeout(30)
    data = b""
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    s.close()
    ids = [json.loads(x)["id"] for x in data.splitlines()]
    assert ids == list(range(100)), ids[-5:]
