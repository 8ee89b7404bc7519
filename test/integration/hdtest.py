# SPDX-License-Identifier: MIT
"""Helpers for the integration tests: start the real hostdevd, talk JSON-RPC."""

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("HOSTDEVD_SRCDIR", os.path.abspath(os.path.join(HERE, "..", "..")))
BUILDDIR = os.environ.get("HOSTDEVD_BUILDDIR", SRCDIR)
HOSTDEVD = os.environ.get("HOSTDEVD", os.path.join(BUILDDIR, "hostdevd"))
HOSTDEVCTL = os.environ.get("HOSTDEVCTL", os.path.join(BUILDDIR, "hostdevctl"))
MODULE_DIR = os.environ.get("HOSTDEVD_MODULE_DIR", os.path.join(BUILDDIR, "modules", ".libs"))
sys.path.insert(0, os.path.join(SRCDIR, "test"))
import simhost  # noqa: E402

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "SUMMARY: UndefinedBehaviorSanitizer")


def sanitizer_env(extra=None):
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:verify_asan_link_order=0:" \
                          "handle_segv=1:detect_stack_use_after_return=0:quarantine_size_mb=4"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    env.pop("NOTIFY_SOCKET", None)
    if extra:
        env.update(extra)
    return env


def wait_until(pred, timeout=10.0, what="condition"):
    """Polls pred() until it is truthy; the value is returned."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class RpcError(Exception):
    def __init__(self, err):
        super().__init__(f"{err.get('code')}: {err.get('message')}")
        self.code = err.get("code")
        self.message = err.get("message")


class Client:
    """One connection to the control socket; requests and notifications."""

    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.timeout = timeout
        self.buf = b""
        self.next_id = 1
        self.pending = []   # notifications read while waiting for a response

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def recv_line(self, timeout=None):
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no line from hostdevd")
            self.sock.settimeout(left)
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("hostdevd closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def request(self, method, params=None, timeout=None):
        rid = self.next_id
        self.next_id += 1
        req = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            req["params"] = params
        self.send_raw((json.dumps(req) + "\n").encode())
        while True:
            msg = self.recv_line(timeout)
            if msg.get("method") == "event":
                self.pending.append(msg["params"])
                continue
            assert msg.get("id") == rid, f"response for another id: {msg}"
            return msg

    def call(self, method, params=None, timeout=None):
        msg = self.request(method, params, timeout)
        if "error" in msg:
            raise RpcError(msg["error"])
        return msg["result"]

    def next_event(self, timeout=None, match=None):
        """The next event notification (optionally the next matching one)."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            while self.pending:
                ev = self.pending.pop(0)
                if match is None or match(ev):
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching event")
            msg = self.recv_line(left)
            if msg.get("method") == "event":
                self.pending.append(msg["params"])


class Daemon:
    """A hostdevd process on a simulated host, with per-test paths."""

    def __init__(self, host="dell-190", config=None, extra_args=(), env=None, tree=None,
                 functions=64, start=True, node_name=None):
        self.dir = tempfile.mkdtemp(prefix="hd", dir="/tmp")
        self.root = tree or os.path.join(self.dir, "host")
        if tree is None and host:
            simhost.build(host, self.root, functions)
        self.sysfs = os.path.join(self.root, "sys")
        self.devroot = os.path.join(self.root, "dev")
        self.sock = os.path.join(self.dir, "ctl.sock")
        self.state = os.path.join(self.dir, "state")
        self.kubelet = os.path.join(self.dir, "kubelet")
        self.config_path = os.path.join(self.dir, "hostdevd.conf")
        self.log_path = os.path.join(self.dir, "hostdevd.log")
        self.node_name = node_name or host or "node"
        os.makedirs(self.kubelet, exist_ok=True)
        # --config names this file, and a missing one is an error.
        self.write_config(config if config is not None else {})
        self.extra_args = list(extra_args)
        self.env = env
        self.proc = None
        self.stopped_rc = None
        if start:
            self.start()

    def write_config(self, config):
        with open(self.config_path, "w") as f:
            f.write(config if isinstance(config, str) else json.dumps(config))

    def args(self, ready_fd):
        return [HOSTDEVD, "--foreground", "--sysfs-root", self.sysfs, "--dev-root", self.devroot,
                "--control-socket", self.sock, "--state-dir", self.state,
                "--kubelet-dir", self.kubelet, "--module-dir", MODULE_DIR,
                "--config", self.config_path, "--node-name", self.node_name,
                "--log-level", "debug", "--ready-fd", str(ready_fd)] + self.extra_args

    def start(self, timeout=30.0):
        r, w = os.pipe()
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args(w), pass_fds=(w,), stdout=self.log,
                                     stderr=subprocess.STDOUT, env=sanitizer_env(self.env))
        os.close(w)
        try:
            deadline = time.monotonic() + timeout
            data = b""
            while b"READY\n" not in data:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("hostdevd did not become ready\n" + self.log_text())
                rl, _, _ = select.select([r], [], [], left)
                if rl:
                    chunk = os.read(r, 64)
                    if not chunk:
                        self.proc.wait(5)
                        raise AssertionError(
                            f"hostdevd exited ({self.proc.returncode}) before READY\n"
                            + self.log_text())
                    data += chunk
        finally:
            os.close(r)

    def log_text(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def client(self, timeout=10.0):
        return Client(self.sock, timeout)

    def call(self, method, params=None):
        c = self.client()
        try:
            return c.call(method, params)
        finally:
            c.close()

    def pid(self):
        return self.proc.pid

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=20.0):
        """SIGTERM; returns the exit status. Sanitizer reports fail the test."""
        if self.proc is None:
            return self.stopped_rc
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("hostdevd did not stop on SIGTERM\n" + self.log_text())
        self.stopped_rc = self.proc.returncode
        self.proc = None
        self.log.close()
        return self.stopped_rc

    def check_clean_exit(self):
        rc = self.stop()
        text = self.log_text()
        bad = [m for m in SANITIZER_MARKERS if m in text]
        assert not bad, f"sanitizer report in the daemon log:\n{text}"
        assert rc == 0, f"hostdevd exited {rc}\n{text}"

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def parse_lspci_vmm(text):
    """Records of `lspci -vmm` as dicts keyed by field name."""
    recs = []
    for block in text.strip().split("\n\n"):
        rec = {}
        for line in block.splitlines():
            if ":\t" in line:
                k, v = line.split(":\t", 1)
                rec[k] = v
        if "Slot" in rec:
            recs.append(rec)
    return recs


def lspci(sysfs_root):
    out = subprocess.run(["lspci", "-O", f"sysfs.path={sysfs_root}/bus/pci", "-D", "-nn", "-k",
                          "-vmm"], capture_output=True, text=True, check=True)
    return parse_lspci_vmm(out.stdout)
