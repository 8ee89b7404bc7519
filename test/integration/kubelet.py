# SPDX-License-Identifier: MIT
"""A kubelet stand-in on grpcio: it serves Registration on kubelet.sock and,
inside Register, dials the plugin and calls GetDevicePluginOptions before it
answers (as the kubelet does), then follows ListAndWatch; tests drive
Allocate and GetPreferredAllocation through it."""

import glob
import importlib
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc

_pb = None


def pb():
    """The v1beta1 messages, compiled from the project's proto by protoc."""
    global _pb
    if _pb is None:
        here = os.path.dirname(os.path.abspath(__file__))
        srcdir = os.environ.get("HOSTDEVD_SRCDIR", os.path.join(here, "..", ".."))
        out = tempfile.mkdtemp(prefix="hdpb")
        subprocess.run(["protoc", f"-I{srcdir}/proto", f"--python_out={out}",
                        f"{srcdir}/proto/deviceplugin.proto"], check=True)
        sys.path.insert(0, out)
        _pb = importlib.import_module("deviceplugin_pb2")
    return _pb


NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def method(ch, name, req_type, resp_type, stream=False):
    path = f"/v1beta1.DevicePlugin/{name}"
    make = ch.unary_stream if stream else ch.unary_unary
    return make(path, request_serializer=req_type.SerializeToString,
                response_deserializer=resp_type.FromString)


class Plugin:
    """What the kubelet holds for one registered resource."""

    def __init__(self, kubelet, req):
        m = pb()
        self.req = req
        self.name = req.resource_name
        self.channel = grpc.insecure_channel("unix:" + os.path.join(kubelet.dir, req.endpoint),
                                             options=[("grpc.default_authority", "localhost")])
        grpc.channel_ready_future(self.channel).result(timeout=10)
        self.options = method(self.channel, "GetDevicePluginOptions", m.Empty,
                              m.DevicePluginOptions)(m.Empty(), timeout=10)
        self._allocate = method(self.channel, "Allocate", m.AllocateRequest, m.AllocateResponse)
        self._preferred = method(self.channel, "GetPreferredAllocation",
                                 m.PreferredAllocationRequest, m.PreferredAllocationResponse)
        self._prestart = method(self.channel, "PreStartContainer", m.PreStartContainerRequest,
                                m.PreStartContainerResponse)
        self._law = method(self.channel, "ListAndWatch", m.Empty, m.ListAndWatchResponse, True)
        self.updates = queue.Queue()	# (number, devices), every message in order
        self.latest = None
        self.latest_n = 0
        self.lock = threading.Lock()
        self.ended = threading.Event()
        self.end_status = None
        self.stream = None
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def start(self):
        self.stream = self._law(pb().Empty())
        self.thread.start()

    def _watch(self):
        try:
            for resp in self.stream:
                devs = [(d.ID, d.health, [n.ID for n in d.topology.nodes]) for d in resp.devices]
                with self.lock:
                    self.latest_n += 1
                    self.latest = devs
                    self.updates.put((self.latest_n, devs))
            self.end_status = grpc.StatusCode.OK
        except grpc.RpcError as e:
            self.end_status = e.code()
        self.ended.set()

    def cancel_watch(self):
        self.stream.cancel()

    def wait_devices(self, pred, timeout=10.0):
        """Waits for a ListAndWatch message whose device list satisfies pred:
        the latest one, or one that comes after it (never an older one still
        queued: it would answer for a state the daemon already left)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            latest, seen = self.latest, self.latest_n
        if latest is not None and pred(latest):
            return latest
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no ListAndWatch update matched; "
                                     f"last: {self.latest}")
            try:
                n, devs = self.updates.get(timeout=left)
            except queue.Empty:
                continue
            if n > seen and pred(devs):
                return devs

    def allocate(self, *containers, timeout=10):
        m = pb()
        req = m.AllocateRequest(container_requests=[
            m.ContainerAllocateRequest(devices_ids=list(ids)) for ids in containers])
        return self._allocate(req, timeout=timeout)

    def preferred(self, available, must, size, timeout=10):
        m = pb()
        req = m.PreferredAllocationRequest(container_requests=[
            m.ContainerPreferredAllocationRequest(available_deviceIDs=available,
                                                  must_include_deviceIDs=must,
                                                  allocation_size=size)])
        return list(self._preferred(req, timeout=timeout).container_responses[0].deviceIDs)

    def prestart(self, ids):
        return self._prestart(pb().PreStartContainerRequest(devices_ids=ids), timeout=10)

    def close(self):
        self.channel.close()


class Kubelet:
    def __init__(self, directory, refuse=0):
        self.dir = directory
        self.sock = os.path.join(directory, "kubelet.sock")
        self.plugins = {}
        self.registrations = []
        self.attempts = []          # (monotonic, resource) of every Register, refused too
        self.refuse = refuse        # answer this many Registers with an error first
        self.lock = threading.Lock()
        self.registered = threading.Condition(self.lock)
        self.server = None
        self.start()

    def start(self):
        m = pb()
        handler = grpc.method_handlers_generic_handler("v1beta1.Registration", {
            "Register": grpc.unary_unary_rpc_method_handler(
                self._register, request_deserializer=m.RegisterRequest.FromString,
                response_serializer=m.Empty.SerializeToString)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers((handler,))
        self.server.add_insecure_port("unix:" + self.sock)
        self.server.start()

    def _register(self, req, ctx):
        with self.lock:
            self.attempts.append((time.monotonic(), req.resource_name))
        if self.refuse > 0:
            self.refuse -= 1
            ctx.abort(grpc.StatusCode.UNAVAILABLE, "kubelet is busy (test)")
        if req.version != "v1beta1":
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad version {req.version}")
        domain, _, name = req.resource_name.partition("/")
        if not domain or not NAME_RE.match(name) or len(name) > 63:
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid name {req.resource_name}")
        # Synchronously, inside Register: dial and ask for the options.
        plugin = Plugin(self, req)
        plugin.start()
        with self.lock:
            old = self.plugins.get(req.resource_name)
            self.plugins[req.resource_name] = plugin
            self.registrations.append((time.monotonic(), req))
            self.registered.notify_all()
        if old:
            old.close()
        return pb().Empty()

    def wait_registered(self, resource, count=1, timeout=10.0):
        """Waits until `resource` has registered `count` times; returns its plugin."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while sum(1 for _, r in self.registrations if r.resource_name == resource) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{resource} did not register ({count}); seen: "
                                         f"{[r.resource_name for _, r in self.registrations]}")
                self.registered.wait(left)
            return self.plugins[resource]

    def restart(self, wipe=True):
        """What a kubelet restart does: stop, delete every socket, serve again."""
        self.stop()
        if wipe:
            for f in glob.glob(os.path.join(self.dir, "*")):
                if not os.path.isdir(f) and not f.endswith("kubelet_internal_checkpoint"):
                    os.unlink(f)
        self.start()

    def stop(self):
        if self.server:
            self.server.stop(0).wait()
            self.server = None
        # A Register handler may still be finishing: iterate over a copy.
        with self.lock:
            plugins = list(self.plugins.values())
        for p in plugins:
            p.close()
        if os.path.exists(self.sock):
            os.unlink(self.sock)
