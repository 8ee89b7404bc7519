# SPDX-License-Identifier: MIT
"""Early binding: <state-dir>/early-bind/ follows the recorded claims (one
file per claimed function, holding "vfio-pci"), which 60-hostdevd.rules reads
when the kernel adds a device at boot."""

import os
import re

import hdtest
from test_claims import claim, host, idle, release  # noqa: F401  (host is a fixture)


def entries(d):
    path = os.path.join(d.state, "early-bind")
    return {n: open(os.path.join(path, n)).read() for n in sorted(os.listdir(path))}


def test_early_bind_follows_claims(host):  # noqa: F811
    d, k = host()
    claim(d, "0000:01:10.2")
    idle(d)
    assert entries(d) == {"0000:01:10.2": "vfio-pci\n"}
    claim(d, "0000:01:10.4")
    idle(d)
    assert set(entries(d)) == {"0000:01:10.2", "0000:01:10.4"}
    release(d, "0000:01:10.2")
    idle(d)
    assert entries(d) == {"0000:01:10.4": "vfio-pci\n"}
    # A stale entry (a release while hostdevd was down, a hand edit) goes at the next save.
    with open(os.path.join(d.state, "early-bind", "0000:99:00.0"), "w") as f:
        f.write("vfio-pci\n")
    release(d, "0000:01:10.4")
    idle(d)
    assert entries(d) == {}


def test_udev_rule_reads_the_state_dir():
    """The rule and the daemon agree on the directory and the attribute."""
    with open(os.path.join(hdtest.SRCDIR, "etc/60-hostdevd.rules")) as f:
        rule = f.read()
    assert re.search(r'ACTION=="add", SUBSYSTEM=="pci", '
                     r'TEST=="/var/lib/hostdevd/early-bind/\$kernel"', rule)
    assert 'ATTR{driver_override}="vfio-pci"' in rule
