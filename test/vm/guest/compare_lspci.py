# SPDX-License-Identifier: MIT
"""Inventory on a real kernel equals lspci -D -nn -k -vmm, field by field."""
import json
import re
import socket
import subprocess
import sys

sock = sys.argv[1]
s = socket.socket(socket.AF_UNIX)
s.connect(sock)
s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"devices.list","params":{"class":"pci"}}\n')
buf = b""
while not buf.endswith(b"\n"):
    buf += s.recv(1 << 20)
ours = {d["address"]: d for d in json.loads(buf)["result"]}
out = subprocess.run(["lspci", "-D", "-nn", "-k", "-vmm"], capture_output=True, text=True, check=True).stdout
theirs = {}
for block in out.strip().split("\n\n"):
    rec = dict(line.split(":\t", 1) for line in block.splitlines() if ":\t" in line)
    theirs[rec["Slot"]] = rec
assert sorted(ours) == sorted(theirs), (sorted(ours), sorted(theirs))
ids = lambda v: re.search(r"\[([0-9a-f]+)\]$", v).group(1)
for a, r in theirs.items():
    d = ours[a]
    assert d["vendor_id"] == ids(r["Vendor"]) and d["device_id"] == ids(r["Device"]), a
    assert d["class_id"] == ids(r["Class"]), a
    assert d["driver"] == r.get("Driver"), (a, d["driver"], r.get("Driver"))
    assert d["iommu_group"] == r.get("IOMMUGroup"), (a, d["iommu_group"], r.get("IOMMUGroup"))
    assert d["revision"] == r.get("Rev", "00"), a
print(f"{len(ours)} functions match lspci")
