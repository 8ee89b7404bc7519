# SPDX-License-Identifier: MIT
"""Many claims: 256 functions claimed and released on a simulated host, every
one applied and given back (no write lost, none waiting out a timer)."""

import json
import os

from hdtest import wait_until
from test_claims import claims, host  # noqa: F401

N = 256


def pipelined(d, method, addrs, timeout=300):
    """Sends every request at once on one connection, then reads the answers."""
    c = d.client(timeout=timeout)
    try:
        reqs = "".join(json.dumps({"jsonrpc": "2.0", "id": i, "method": method,
                                   "params": {"address": a}}) + "\n"
                       for i, a in enumerate(addrs))
        c.send_raw(reqs.encode())
        answers = {}
        while len(answers) < len(addrs):
            msg = c.recv_line()
            if "id" in msg:
                answers[msg["id"]] = msg
        return [answers[i] for i in range(len(addrs))]
    finally:
        c.close()


def test_claim_and_release_256(host):
    d, k = host(host="scale", functions=N)
    addrs = sorted(k.original)
    assert len(addrs) == N
    before = dict(k.original)

    answers = pipelined(d, "pci.claim", addrs)
    bad = [(a, r.get("error")) for a, r in zip(addrs, answers) if r.get("result", {}).get("state") != "claimed"]
    assert bad == [], bad[:5]
    assert [a for a in addrs if k.driver_of(a) != "vfio-pci"] == []
    cl = claims(d)
    assert len(cl) == N and all(c["state"] == "claimed" and not c["busy"] for c in cl)
    with open(os.path.join(d.state, "state.json")) as f:
        assert len(json.load(f)["claims"]) == N

    answers = pipelined(d, "pci.release", addrs)
    bad = [(a, r.get("error")) for a, r in zip(addrs, answers) if r.get("result", {}).get("state") != "released"]
    assert bad == [], bad[:5]
    # A function that had no driver (or vfio-pci) is probed again and left
    # to whatever takes it: wait for the simulated kernel to get there.
    wait_until(lambda: [a for a in addrs if k.driver_of(a) != before[a]] == [], timeout=30,
               what="every function back on its driver")
    assert claims(d) == []
    with open(os.path.join(d.state, "state.json")) as f:
        assert json.load(f)["claims"] == []
    log = d.log_text()
    assert "did not go back" not in log and "verify:" not in log
    assert [e for e in k.log if e[0] == "bind-failed" or e[0] == "overflow"] == []
