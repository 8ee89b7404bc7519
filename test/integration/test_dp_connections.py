# SPDX-License-Identifier: MIT
"""Connections to a device-plugin endpoint are bounded: a limit per endpoint
(with a GOAWAY for the refused, logged once then counted), a close for
connections with no stream, a deadline for the HTTP/2 handshake and for a
request's body, and a budget for buffered request bytes whose memory goes
back to the system. The kubelet's connection, which keeps a ListAndWatch
stream open, is never closed."""

import os
import socket
import struct
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import pytest

import hdtest
from kubelet import Kubelet, pb
from test_deviceplugin import X540VF, X540VF_SOCK

LAW = "/v1beta1.DevicePlugin/ListAndWatch"
ALLOCATE = "/v1beta1.DevicePlugin/Allocate"
MAX_CONNS = 32          # core/dp-server.c MAX_CONNS
SHORT = "400,400,400"   # HOSTDEVD_TEST_DP_TIMEOUTS: idle, handshake, request (ms)


def grpc_frame(msg, length=None):
    return struct.pack(">BI", 0, len(msg) if length is None else length) + msg


class Peer:
    """A raw HTTP/2 client on the endpoint (the h2 library)."""

    def __init__(self, path, handshake=True, timeout=10):
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                      header_encoding="utf-8"))
        self.events = []
        self.closed = False
        self.talk = handshake       # False: never sends a byte of HTTP/2
        if handshake:
            self.c.initiate_connection()
            self.flush()

    def flush(self):
        data = self.c.data_to_send()
        if data and self.talk:
            try:
                self.s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                self.closed = True      # refused: pump() reads what came first

    def pump(self):
        """Reads once; False at EOF."""
        try:
            data = self.s.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.closed = True
            return False
        self.events += self.c.receive_data(data)
        self.flush()
        return True

    def pump_until(self, pred, what):
        while not pred():
            if not self.pump():
                raise AssertionError(f"connection closed before {what}; events {self.events}")

    def until_closed(self):
        """Reads until hostdevd closes the connection (the socket timeout
        fails the test when it does not)."""
        while self.pump():
            pass
        return self.events

    def start(self, path, body, end=True):
        sid = self.c.get_next_available_stream_id()
        self.c.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", path),
                                  (":authority", "x"), ("content-type", "application/grpc"),
                                  ("te", "trailers")])
        if body is not None:
            self.c.send_data(sid, body, end_stream=end)
        self.flush()
        return sid

    def data_on(self, sid):
        return any(isinstance(e, h2.events.DataReceived) and e.stream_id == sid
                   for e in self.events)

    def ended(self, sid):
        return any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset))
                   and e.stream_id == sid for e in self.events)

    def trailers(self, sid):
        for e in self.events:
            if isinstance(e, h2.events.TrailersReceived) and e.stream_id == sid:
                return dict(e.headers)
            if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid \
                    and "grpc-status" in dict(e.headers):
                return dict(e.headers)
        return None

    def terminated(self):
        return next((e for e in self.events if isinstance(e, h2.events.ConnectionTerminated)),
                    None)

    def close(self):
        self.s.close()


def resource(d):
    return next(r for r in d.call("resources.list") if r["name"] == X540VF)


def served(make_daemon, timeouts=None):
    d = make_daemon(start=False, env={"HOSTDEVD_TEST_DP_TIMEOUTS": timeouts} if timeouts else None)
    k = Kubelet(d.kubelet)
    d.start()
    plugin = k.wait_registered(X540VF)
    plugin.wait_devices(lambda x: len(x) == 1)
    hdtest.wait_until(lambda: resource(d)["state"] == "registered", what="the Register answer")
    return d, k, plugin, os.path.join(d.kubelet, X540VF_SOCK)


def watcher(path):
    p = Peer(path)
    sid = p.start(LAW, grpc_frame(b""))
    p.pump_until(lambda: p.data_on(sid), "the first ListAndWatch message")
    return p


def test_connection_limit(make_daemon):
    d, k, plugin, path = served(make_daemon)
    try:
        # The kubelet's connection plus 31 more, each with a stream open.
        peers = [watcher(path) for _ in range(MAX_CONNS - 1)]
        refused = []
        for _ in range(5):
            p = Peer(path)
            p.until_closed()
            refused.append(p.terminated())
            p.close()
        assert all(t is not None and t.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
                   for t in refused), refused
        r = resource(d)
        assert r["refused_connections"] == 5 and r["connections"] == MAX_CONNS
        log = d.log_text()
        assert log.count("refusing new ones") == 1, "one line for the first refusal"
        # One leaves: the next comes in, and the rest are summed up.
        peers.pop().close()
        hdtest.wait_until(lambda: resource(d)["connections"] == MAX_CONNS - 1,
                          what="the closed connection to go")
        peers.append(watcher(path))
        assert "4 more connections refused; accepting again" in d.log_text()
        # The kubelet was never disturbed.
        assert plugin.allocate(["0000:01:10.0"]).container_responses[0].envs
        assert not plugin.ended.is_set()
        for p in peers:
            p.close()
    finally:
        k.stop()


def test_idle_connection_closed_at_limit_to_make_room(make_daemon):
    d, k, plugin, path = served(make_daemon)
    try:
        peers = [watcher(path) for _ in range(MAX_CONNS - 2)]
        idle = Peer(path)
        idle.pump_until(lambda: any(isinstance(e, h2.events.RemoteSettingsChanged)
                                    for e in idle.events), "the server's SETTINGS")
        late = watcher(path)            # at the limit: the idle one makes room
        idle.until_closed()
        assert resource(d)["refused_connections"] == 0
        assert resource(d)["connections"] == MAX_CONNS
        for p in peers + [late]:
            p.close()
    finally:
        k.stop()


def test_idle_connection_closed_stream_kept(make_daemon):
    d, k, plugin, path = served(make_daemon, SHORT)
    try:
        p = Peer(path)
        sid = p.start("/v1beta1.DevicePlugin/GetDevicePluginOptions", grpc_frame(b""))
        p.pump_until(lambda: p.ended(sid), "the answer")
        assert p.trailers(sid)["grpc-status"] == "0"
        # Then nothing: hostdevd says goodbye and closes it.
        p.until_closed()
        t = p.terminated()
        assert t is not None and t.error_code == h2.errors.ErrorCodes.NO_ERROR
        p.close()
        hdtest.wait_until(lambda: resource(d)["connections"] == 1, what="only the kubelet's")
        # The kubelet's connection, idle for as long but with its stream
        # open, stays: updates still reach it, calls on it still work.
        assert not plugin.ended.is_set()
        assert resource(d)["watchers"] == 1
        assert plugin.allocate(["0000:01:10.0"]).container_responses[0].envs
        os.unlink(os.path.join(d.devroot, "vfio", "111"))
        plugin.wait_devices(lambda x: x and x[0][1] == "Unhealthy")
    finally:
        k.stop()


def test_half_open_connections_closed(make_daemon):
    d, k, plugin, path = served(make_daemon, SHORT)
    try:
        silent = Peer(path, handshake=False)
        partial = Peer(path, handshake=False)
        partial.s.sendall(b"PRI * HTTP/2.0\r\n")        # half a preface
        for p in (silent, partial):
            p.until_closed()
            p.close()
        # A handshake, then a request whose body never ends: the stream
        # gets DEADLINE_EXCEEDED, then the connection (now idle) goes.
        slow = Peer(path)
        req = pb().AllocateRequest(container_requests=[
            pb().ContainerAllocateRequest(devices_ids=["0000:01:10.0"])]).SerializeToString()
        sid = slow.start(ALLOCATE, grpc_frame(req)[:8], end=False)
        slow.pump_until(lambda: slow.trailers(sid) is not None, "an answer to the slow request")
        assert slow.trailers(sid)["grpc-status"] == "4"
        slow.until_closed()
        slow.close()
        hdtest.wait_until(lambda: resource(d)["connections"] == 1, what="only the kubelet's")
        assert not plugin.ended.is_set()
        assert "no HTTP/2 handshake within 400 ms" in d.log_text()
    finally:
        k.stop()


def send_body(p, sid, body):
    """Sends as flow control allows; stops when hostdevd ends the stream."""
    off = 0
    while off < len(body):
        if p.ended(sid) or p.closed:
            return
        window = min(p.c.local_flow_control_window(sid), p.c.max_outbound_frame_size)
        if window <= 0:
            p.pump()
            continue
        try:
            p.c.send_data(sid, body[off:off + window])
        except h2.exceptions.StreamClosedError:
            return
        off += window
        p.flush()


def test_half_finished_requests_memory_bounded_and_returned(make_daemon):
    """20 connections each with two 1 MB requests that never end: what
    hostdevd buffers stays within its budget, and goes back to the system
    with the connections."""
    d, k, plugin, path = served(make_daemon)
    try:
        for _ in range(20):             # warm-up: allocator arenas, page cache
            plugin.allocate(["0000:01:10.0"])
        rss0 = d.rss_kib()
        body = grpc_frame(b"\x0a" * 1_000_000)[:999_000]
        peers = []
        for _ in range(20):
            p = Peer(path)
            for _ in range(2):
                sid = p.start(ALLOCATE, None)
                send_body(p, sid, body)
            peers.append(p)
        # Everything sent has been read: a PING answered comes after it.
        for p in peers:
            p.c.ping(b"12345678")
            p.flush()
            p.pump_until(lambda: any(isinstance(e, h2.events.PingAckReceived)
                                     for e in p.events), "the PING's answer")
        peak = d.rss_kib() - rss0
        refused = sum(1 for p in peers for e in p.events
                      if isinstance(e, h2.events.TrailersReceived) or
                      (isinstance(e, h2.events.ResponseReceived)
                       and dict(e.headers).get("grpc-status") == "8"))
        assert peak < 24 * 1024, f"RSS grew {peak} KiB holding 40 MB of half-finished requests"
        assert refused > 0, "requests past the budget are refused"
        for p in peers:
            p.close()
        hdtest.wait_until(lambda: resource(d)["connections"] == 1, what="the connections to go")
        after = d.rss_kib() - rss0
        print(f"RSS: +{peak} KiB holding the requests, +{after} KiB once they are gone")
        assert after < 6 * 1024, f"RSS still {after} KiB above the start once they are gone"
        assert plugin.allocate(["0000:01:10.0"]).container_responses[0].envs
    finally:
        k.stop()
