# SPDX-License-Identifier: MIT
"""The device-plugin endpoint against hostile and broken peers: garbage,
bad prefaces, truncated frames, oversized and malformed messages, unknown
methods, many streams, a ListAndWatch reader that never reads."""

import os
import signal
import socket
import struct
import threading
import time

import grpc
import h2.config
import h2.connection
import h2.events
import pytest

import hdtest
from kubelet import Kubelet, pb, method
from test_deviceplugin import X540VF, X540VF_SOCK, bind_vfio

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@pytest.fixture
def served(make_daemon):
    d = make_daemon(start=False)
    k = Kubelet(d.kubelet)
    d.start()
    plugin = k.wait_registered(X540VF)
    plugin.wait_devices(lambda x: len(x) == 1)
    yield k, d, plugin, os.path.join(d.kubelet, X540VF_SOCK)
    k.stop()


def still_serving(plugin):
    resp = plugin.allocate(["0000:01:10.0"])
    assert resp.container_responses[0].envs


class H2Client:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.connect(path)
        self.s.settimeout(10)
        self.c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                      header_encoding="utf-8"))
        self.c.initiate_connection()
        self.s.sendall(self.c.data_to_send())
        self.events = []

    def request(self, path, body, content_type="application/grpc", chunk=None):
        sid = self.c.get_next_available_stream_id()
        self.c.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", path),
                                  (":authority", "anything"), ("content-type", content_type),
                                  ("te", "trailers")])
        if chunk:
            for i in range(0, len(body), chunk):
                self.c.send_data(sid, body[i:i + chunk])
                self.s.sendall(self.c.data_to_send())
            self.c.end_stream(sid)
        else:
            self.c.send_data(sid, body, end_stream=True)
        self.s.sendall(self.c.data_to_send())
        return sid

    def pump(self):
        data = self.s.recv(65536)
        if not data:
            raise ConnectionError("closed")
        evs = self.c.receive_data(data)
        # Kept before answering: a peer that already closed makes the send
        # fail, and what it sent last (GOAWAY) must not be lost with it.
        self.events += evs
        self.s.sendall(self.c.data_to_send())
        return evs

    def result(self, sid, timeout=10):
        """(headers, body, trailers) once the stream ends."""
        deadline = time.monotonic() + timeout
        headers, body, trailers = {}, b"", {}
        while True:
            for ev in list(self.events):
                if getattr(ev, "stream_id", None) != sid:
                    continue
                self.events.remove(ev)
                if isinstance(ev, h2.events.ResponseReceived):
                    headers = dict(ev.headers)
                    if ev.stream_ended:
                        return headers, body, trailers
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    self.c.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.TrailersReceived):
                    trailers = dict(ev.headers)
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                    return headers, body, trailers
            if time.monotonic() > deadline:
                raise TimeoutError("no end of stream")
            self.pump()


def grpc_frame(msg, length=None, flag=0):
    return struct.pack(">BI", flag, len(msg) if length is None else length) + msg


def status_of(headers, trailers):
    return int(trailers.get("grpc-status", headers.get("grpc-status", -1)))


def test_server_settings_first_and_ping(served):
    k, d, plugin, path = served
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.settimeout(10)
    head = s.recv(9)
    assert len(head) == 9 and head[3] == 0x4, "the first frame from the server is SETTINGS"
    s.sendall(PREFACE + struct.pack(">I", 0)[1:] + b"\x04\x00" + b"\x00\x00\x00\x00")
    s.sendall(struct.pack(">I", 8)[1:] + b"\x06\x00" + b"\x00\x00\x00\x00" + b"12345678")
    got = b""
    deadline = time.monotonic() + 5
    while b"12345678" not in got and time.monotonic() < deadline:
        got += s.recv(4096)
    assert b"\x06\x01\x00\x00\x00\x0012345678" in got, "PING answered with ACK"
    s.close()


@pytest.mark.parametrize("junk", [
    b"\x00" * 64,
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    PREFACE + b"\xff" * 200,
    PREFACE + b"\x00\x00\x10\x01",            # a truncated frame header
    PREFACE + b"\x00\x40\x00\x01\x05\x00\x00\x00\x01" + b"\x00" * 10,   # truncated HEADERS
    os.urandom(4096),
])
def test_garbage_closes_only_that_connection(served, junk):
    k, d, plugin, path = served
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.settimeout(10)
    s.sendall(junk)
    s.shutdown(socket.SHUT_WR)
    try:
        while s.recv(65536):
            pass
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    still_serving(plugin)


def test_message_framing_errors(served):
    k, d, plugin, path = served
    c = H2Client(path)
    alloc = "/v1beta1.DevicePlugin/Allocate"
    req = pb().AllocateRequest(container_requests=[
        pb().ContainerAllocateRequest(devices_ids=["0000:01:10.0"])]).SerializeToString()

    sid = c.request(alloc, grpc_frame(b"x" * 16, length=0xFFFFFFFF))
    h, body, t = c.result(sid)
    assert status_of(h, t) == 8, (h, t)
    assert "larger than the limit" in t.get("grpc-message", h.get("grpc-message", ""))

    sid = c.request(alloc, grpc_frame(req, flag=1))
    h, body, t = c.result(sid)
    assert status_of(h, t) == 3

    sid = c.request(alloc, grpc_frame(req) + grpc_frame(req))
    h, body, t = c.result(sid)
    assert status_of(h, t) == 3 and "exactly one" in t.get("grpc-message", h.get("grpc-message", ""))

    sid = c.request(alloc, grpc_frame(b"\xff\xff\xff\xff\x0f"))
    h, body, t = c.result(sid)
    assert status_of(h, t) == 3 and "malformed" in h.get("grpc-message", t.get("grpc-message", ""))

    sid = c.request(alloc, grpc_frame(req)[:7])
    h, body, t = c.result(sid)
    assert status_of(h, t) == 3

    # A well-formed message split over one-byte DATA frames still works.
    sid = c.request(alloc, grpc_frame(req), chunk=1)
    h, body, t = c.result(sid)
    assert h[":status"] == "200" and status_of(h, t) == 0
    resp = pb().AllocateResponse.FromString(body[5:])
    assert resp.container_responses[0].envs

    sid = c.request(alloc, grpc_frame(req), content_type="text/plain")
    h, body, t = c.result(sid)
    assert h[":status"] == "415"

    sid = c.request("/v1beta1.DevicePlugin/Frobnicate", grpc_frame(b""))
    h, body, t = c.result(sid)
    assert status_of(h, t) == 12 and "Frobnicate" in h.get("grpc-message", "")
    c.s.close()
    still_serving(plugin)


def test_unknown_method_with_grpcio(served):
    k, d, plugin, path = served
    m = method(plugin.channel, "Nope", pb().Empty, pb().Empty)
    with pytest.raises(grpc.RpcError) as e:
        m(pb().Empty(), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_two_hundred_concurrent_streams(served):
    k, d, plugin, path = served
    alloc = method(plugin.channel, "Allocate", pb().AllocateRequest, pb().AllocateResponse)
    req = pb().AllocateRequest(container_requests=[
        pb().ContainerAllocateRequest(devices_ids=["0000:01:10.0"])])
    calls = [alloc.future(req, timeout=30) for _ in range(200)]
    watch = method(plugin.channel, "ListAndWatch", pb().Empty, pb().ListAndWatchResponse, True)
    streams = [watch(pb().Empty(), timeout=30) for _ in range(50)]
    firsts = [next(s) for s in streams]
    assert all(len(f.devices) == 1 for f in firsts)
    results = [c.result() for c in calls]
    assert all(r.container_responses[0].envs for r in results)
    for s in streams:
        s.cancel()


def test_list_and_watch_reader_that_never_reads(served):
    k, d, plugin, path = served
    lazy = socket.socket(socket.AF_UNIX)
    lazy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    lazy.connect(path)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    sid = c.get_next_available_stream_id()
    c.send_headers(sid, [(":method", "POST"), (":scheme", "http"),
                         (":path", "/v1beta1.DevicePlugin/ListAndWatch"), (":authority", "x"),
                         ("content-type", "application/grpc"), ("te", "trailers")])
    c.send_data(sid, grpc_frame(b""), end_stream=True)
    lazy.sendall(c.data_to_send())
    time.sleep(0.2)
    rss0 = d.rss_kib()
    vfs = ["0000:01:10.2", "0000:01:10.4", "0000:01:10.6"]
    for i in range(60):
        for bdf in vfs:
            link = os.path.join(d.sysfs, f"devices/pci0000:00/0000:00:01.0/{bdf}/driver")
            if i % 2 == 0:
                bind_vfio(d, bdf)
            else:
                os.unlink(link)
        d.call("daemon.rescan")
    plugin.wait_devices(lambda x: len(x) == 1)
    still_serving(plugin)
    grown = d.rss_kib() - rss0
    assert grown < 32 * 1024, f"RSS grew {grown} KiB behind a reader that never reads"
    r = next(r for r in d.call("resources.list") if r["name"] == X540VF)
    assert r["watchers"] == 2
    lazy.close()


def test_goaway_on_shutdown(served):
    k, d, plugin, path = served
    c = H2Client(path)
    sid = c.request("/v1beta1.DevicePlugin/ListAndWatch", grpc_frame(b""))
    deadline = time.monotonic() + 10
    while not any(isinstance(e, h2.events.DataReceived) for e in c.events):
        assert time.monotonic() < deadline
        c.pump()
    d.signal(signal.SIGTERM)
    first = len(c.events)
    try:
        while True:
            c.pump()
    except (ConnectionError, ConnectionResetError, socket.timeout):
        pass
    seen = c.events[first:]
    kinds = {type(e).__name__ for e in seen}
    assert "ConnectionTerminated" in kinds, kinds
    empty = [e for e in seen if isinstance(e, h2.events.DataReceived)]
    assert empty and empty[-1].data == grpc_frame(b""), "an empty list before the end"
    assert any(isinstance(e, h2.events.TrailersReceived) and dict(e.headers).get("grpc-status") == "0"
               for e in seen)
    d.check_clean_exit()
