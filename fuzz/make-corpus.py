#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Writes the seed corpus for the fuzz targets: what a kubelet sends to a
device-plugin endpoint (recorded with the h2 library and the project's proto),
control-socket requests and configuration files. Run it again after changing
the protocol; the files are committed."""

import os
import struct
import subprocess
import sys
import tempfile

import h2.config
import h2.connection

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "test", "integration"))
os.environ.setdefault("HOSTDEVD_SRCDIR", os.path.join(HERE, ".."))
from kubelet import pb  # noqa: E402


def frame(msg):
    return struct.pack(">BI", 0, len(msg)) + msg


def session(calls, split=None):
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    for path, body in calls:
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", path),
                             (":authority", "localhost"), ("content-type", "application/grpc"),
                             ("te", "trailers"), ("user-agent", "grpc-go/1.60.1")])
        if split:
            for i in range(0, len(body), split):
                c.send_data(sid, body[i:i + split])
            c.end_stream(sid)
        else:
            c.send_data(sid, body, end_stream=True)
    c.ping(b"12345678")
    return c.data_to_send()


def write_seeds(name, seeds):
    out = os.path.join(HERE, "corpus", name)
    os.makedirs(out, exist_ok=True)
    for file, data in seeds.items():
        with open(os.path.join(out, file), "wb") as f:
            f.write(data)


def main():
    m = pb()
    dp = "/v1beta1.DevicePlugin/"
    alloc = m.AllocateRequest(container_requests=[
        m.ContainerAllocateRequest(devices_ids=["0000:01:00.0", "0000:01:00.1"]),
        m.ContainerAllocateRequest(devices_ids=["0000:02:00.0"])]).SerializeToString()
    pref = m.PreferredAllocationRequest(container_requests=[
        m.ContainerPreferredAllocationRequest(
            available_deviceIDs=["0000:01:00.0", "0000:01:00.1", "0000:02:00.0"],
            must_include_deviceIDs=["0000:02:00.0"], allocation_size=2)]).SerializeToString()
    seeds = {
        "options": session([(dp + "GetDevicePluginOptions", frame(b""))]),
        "list-and-watch": session([(dp + "ListAndWatch", frame(b""))]),
        "allocate": session([(dp + "Allocate", frame(alloc))]),
        "allocate-split": session([(dp + "Allocate", frame(alloc))], split=3),
        "preferred": session([(dp + "GetPreferredAllocation", frame(pref))]),
        "prestart": session([(dp + "PreStartContainer",
                              frame(m.PreStartContainerRequest(devices_ids=["0000:01:00.0"]).SerializeToString()))]),
        "all": session([(dp + "GetDevicePluginOptions", frame(b"")), (dp + "ListAndWatch", frame(b"")),
                        (dp + "Allocate", frame(alloc)), (dp + "GetPreferredAllocation", frame(pref))]),
        "unknown-method": session([(dp + "Nope", frame(b""))]),
        "huge-length": session([(dp + "Allocate", struct.pack(">BI", 0, 0xFFFFFFFF) + b"xx")]),
    }
    write_seeds("grpc", seeds)
    ctl = {
        "status": b'{"jsonrpc":"2.0","id":1,"method":"daemon.status"}',
        "list": b'{"jsonrpc":"2.0","id":1,"method":"devices.list","params":{"vendor":"10de","class":"pci"}}',
        "get": b'{"jsonrpc":"2.0","id":"x","method":"devices.get","params":{"address":"0000:00:02.0"}}',
        "batch": b'[{"jsonrpc":"2.0","id":1,"method":"modules.list"},{"jsonrpc":"2.0","method":"events.subscribe","params":{"types":["device"]}}]',
        "rescan": b'{"jsonrpc":"2.0","id":2,"method":"daemon.rescan"}',
        "resources": b'{"jsonrpc":"2.0","id":3,"method":"resources.list"}',
        "bad": b'{"jsonrpc":"2.0","id":[],"method":7,"params":"x"}',
    }
    write_seeds("ctl", ctl)
    conf = {
        "full": b'{"log_level":"debug","resync_interval":5,"debounce_ms":10,"control":{"max_clients":8,"max_output_bytes":65536},'
                b'"modules":{"disable":["usb"]},"resources":{"unlisted":"ignore","rules":[{"vendor":"10de","device":"20f1",'
                b'"class":"0302","address":"0000:3b:*","name":"nvidia.com/A100","advertise":true}]}}',
        "empty": b"{}",
        "bad-rule": b'{"resources":{"rules":[{"name":"bad_"}]}}',
    }
    write_seeds("conf", conf)


if __name__ == "__main__":
    main()
