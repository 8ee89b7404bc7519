#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The host side of hotplug scenarios: waits for the guest's flag files in
the run directory and drives QEMU over QMP.
    qmp.py add ID DRIVER BUS [key=value...]   after want-add-ID, then added-ID
    qmp.py del ID                             after want-del-ID, then deleted-ID"""
import json
import os
import socket
import sys
import time

run, qmp = os.environ["RUNDIR"], os.environ["QMP"]


def wait_file(name, timeout=240):
    deadline = time.monotonic() + timeout
    while not os.path.exists(os.path.join(run, name)):
        if time.monotonic() > deadline:
            sys.exit(f"qmp: no {name} from the guest")
        time.sleep(0.1)


class Qmp:
    def __init__(self):
        for _ in range(100):
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(qmp)
                break
            except OSError:
                time.sleep(0.1)
        self.f = self.s.makefile("rw")
        json.loads(self.f.readline())
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.f.flush()
        while True:
            msg = json.loads(self.f.readline())
            if "return" in msg or "error" in msg:
                if "error" in msg:
                    sys.exit(f"qmp: {name}: {msg['error']}")
                return msg["return"]

    def wait_event(self, name, timeout=60):
        self.s.settimeout(timeout)
        while True:
            msg = json.loads(self.f.readline())
            if msg.get("event") == name:
                return msg


q = Qmp()
steps = sys.argv[1:]
while steps:
    op, dev_id = steps[0], steps[1]
    if op == "add":
        driver, bus = steps[2], steps[3]
        extra = {}
        rest = steps[4:]
        while rest and "=" in rest[0]:
            k, v = rest.pop(0).split("=", 1)
            extra[k] = v
        steps = rest
        wait_file(f"want-add-{dev_id}")
        q.cmd("device_add", driver=driver, id=dev_id, bus=bus, **extra)
        open(os.path.join(run, f"added-{dev_id}"), "w").close()
    elif op == "del":
        steps = steps[2:]
        wait_file(f"want-del-{dev_id}")
        q.cmd("device_del", id=dev_id)
        q.wait_event("DEVICE_DELETED")
        open(os.path.join(run, f"deleted-{dev_id}"), "w").close()
    else:
        sys.exit(f"qmp: unknown step {op}")
print("qmp: done")
