# SPDX-License-Identifier: MIT
"""Who may do what on the control socket, and what hostdevctl and hostdevd
say about it: supplementary groups, exit codes, a missing --config."""

import grp
import json
import os
import subprocess
import sys

import pytest

import hdtest
from test_claims import hold_open

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")

AS_USER = r"""
import json, os, socket, sys
groups, gid = json.loads(sys.argv[2]), int(sys.argv[3])
os.setgroups(groups); os.setgid(gid); os.setuid(65534)
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rwb')
f.write(b'{"jsonrpc":"2.0","id":1,"method":"daemon.rescan"}\n'); f.flush()
print(f.readline().decode().strip())
"""


def rescan_as(d, groups, gid):
    out = subprocess.run([sys.executable, "-c", AS_USER, d.sock, json.dumps(groups), str(gid)],
                         capture_output=True, text=True, timeout=30, check=True)
    return json.loads(out.stdout)


@needs_root
def test_supplementary_group_may_mutate(make_daemon):
    d = make_daemon(config={"control": {"group": "nogroup"}})
    os.chmod(d.dir, 0o755)
    nogroup = grp.getgrnam("nogroup").gr_gid
    # usermod -aG: the control group is a supplementary group, not the primary one.
    resp = rescan_as(d, [4, nogroup], 1)
    assert "result" in resp, resp
    os.chmod(d.sock, 0o666)     # so that one without the group may connect
    resp = rescan_as(d, [4], 1)
    assert resp["error"]["code"] == -32001, "without the group: refused"
    assert "refused daemon.rescan to uid 65534" in d.log_text()


def ctl_as_nobody(d, *args):
    def drop():
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    return subprocess.run([hdtest.HOSTDEVCTL, "--socket", d.sock, *args], capture_output=True,
                          text=True, timeout=30, env=hdtest.sanitizer_env(), preexec_fn=drop)


@needs_root
def test_permission_exit_code(make_daemon):
    d = make_daemon()
    os.chmod(d.dir, 0o755)
    # The socket is 0660 root:root: nobody may not even connect.
    r = ctl_as_nobody(d, "status")
    assert r.returncode == 4, (r.returncode, r.stderr)
    assert "permission denied" in r.stderr.lower()
    # Connected, but not allowed to change anything.
    os.chmod(d.sock, 0o666)
    r = ctl_as_nobody(d, "rescan")
    assert r.returncode == 4 and "permission denied" in r.stderr, (r.returncode, r.stderr)
    assert ctl_as_nobody(d, "status").returncode == 0


def test_release_in_use_exits_refused(make_daemon):
    from simkernel import SimKernel
    d = make_daemon(start=False, config={"claims": {"release_timeout_s": 1}})
    k = SimKernel(d.root)
    try:
        d.start()
        ctl = [hdtest.HOSTDEVCTL, "--socket", d.sock]
        env = hdtest.sanitizer_env()
        r = subprocess.run(ctl + ["claim", "0000:01:10.2"], capture_output=True, text=True,
                           timeout=60, env=env)
        assert r.returncode == 0, r.stderr
        with hold_open(os.path.join(d.devroot, "vfio/112")) as holder:
            r = subprocess.run(ctl + ["release", "0000:01:10.2"], capture_output=True,
                               text=True, timeout=60, env=env)
            assert r.returncode == 6, (r.returncode, r.stderr)
            assert f"in use by PID {holder.pid}" in r.stderr
        r = subprocess.run(ctl + ["release", "0000:01:10.2"], capture_output=True, text=True,
                           timeout=60, env=env)
        assert r.returncode == 0, r.stderr
    finally:
        k.stop()


def test_missing_config(make_daemon):
    d = make_daemon(start=False)
    os.unlink(d.config_path)
    r = subprocess.run(d.args(1)[:-2], capture_output=True, text=True, timeout=30,
                       env=hdtest.sanitizer_env())
    assert r.returncode != 0
    assert f"--config {d.config_path}: no such file" in r.stderr, r.stderr
    assert not os.path.exists(d.sock), "it stopped before serving"


@pytest.mark.skipif(os.path.exists("/etc/hostdevd/hostdevd.conf"),
                    reason="this machine has a configuration at the default path")
def test_default_config_missing_is_said(make_daemon):
    d = make_daemon(start=False)
    args = d.args
    d.args = lambda fd: [a for i, a in enumerate(args(fd))
                         if a != "--config" and args(fd)[i - 1] != "--config"]
    d.start()
    assert "no configuration at /etc/hostdevd/hostdevd.conf; using the defaults" in d.log_text()
    assert d.call("daemon.status")["pid"] == d.pid()
