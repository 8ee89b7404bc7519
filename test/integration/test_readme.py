# SPDX-License-Identifier: MIT
"""The README's examples, run as a reader would run them: the simulated host,
the simulated kernel with a claim, and the socat + jq lines of the control
socket section. Paths under /tmp are moved into a per-test directory, and
./hostdevd, ./hostdevctl and modules/.libs point at the build under test."""

import os
import re
import shutil
import subprocess
import time

import pytest

import hdtest

README = os.path.join(hdtest.SRCDIR, "README.md")


def sh_blocks_after(marker):
    """The ```sh blocks that follow the first line containing marker, up to the
    next heading, as lists of commands (continuation lines joined)."""
    text = open(README).read()
    start = text.index(marker)
    end = text.find("\n## ", start)
    part = text[start:end if end >= 0 else len(text)]
    blocks = []
    for body in re.findall(r"```sh\n(.*?)```", part, re.S):
        cmds = []
        for line in body.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                cmds.append(line)
        blocks.append(cmds)
    return blocks


def localise(cmd, tmp):
    cmd = cmd.replace("/tmp/", tmp + "/")
    cmd = re.sub(r"(^|\s)\./hostdevd(?=\s)", r"\1" + hdtest.HOSTDEVD, cmd)
    cmd = re.sub(r"(^|\s)\./hostdevctl(?=\s)", r"\1" + hdtest.HOSTDEVCTL, cmd)
    cmd = cmd.replace("modules/.libs", hdtest.MODULE_DIR)
    cmd = re.sub(r"(^|\s)test/simhost\.py", r"\1" + os.path.join(hdtest.SRCDIR, "test/simhost.py"), cmd)
    return cmd


@pytest.fixture
def readme_host(tmp_path):
    """Runs the README's simulated-host block; yields (tmp dir, socket path)."""
    if not (shutil.which("socat") and shutil.which("jq")):
        pytest.skip("socat and jq are needed (tools/install-deps installs them)")
    tmp = str(tmp_path)
    (build, run), = [sh_blocks_after("No interesting hardware at hand?")[0]]
    assert "simhost.py build dell-190" in build
    subprocess.run(localise(build, tmp), shell=True, check=True, stdout=subprocess.DEVNULL)
    log = open(os.path.join(tmp, "hostdevd.log"), "w")
    assert "--kubelet-dir" in run, "a simulated host must not talk to this machine's kubelet"
    proc = subprocess.Popen("exec " + localise(run, tmp), shell=True, stdout=log, stderr=subprocess.STDOUT,
                            env=hdtest.sanitizer_env())
    sock = os.path.join(tmp, "hostdevd.sock")
    try:
        hdtest.wait_until(lambda: os.path.exists(sock) or proc.poll() is not None,
                          timeout=30, what="the README's daemon to serve")
        assert proc.poll() is None, open(os.path.join(tmp, "hostdevd.log")).read()
        yield tmp, sock
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0, open(os.path.join(tmp, "hostdevd.log")).read()


def test_readme_socat_examples_answer_on_the_simulated_host(readme_host):
    tmp, sock = readme_host
    (lines,) = sh_blocks_after("## Using the control socket")[:1]
    assert lines[0].startswith("SOCK="), lines[0]
    ran = 0
    for cmd in lines[1:]:
        if "socat -t" in cmd:          # the event stream never ends by itself
            continue
        r = subprocess.run(["bash", "-o", "pipefail", "-c", f"SOCK={sock}; {cmd}"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f"{cmd}\n{r.stdout}\n{r.stderr}"
        out = r.stdout.strip()
        assert out and out != "null", f"{cmd} printed nothing useful: {out!r}"
        ran += 1
    assert ran == 3


def test_readme_claim_on_the_simulated_host_with_its_kernel(readme_host):
    tmp, sock = readme_host
    kernel_cmd, claim_cmd = sh_blocks_after("To try claims")[0]
    kernel = subprocess.Popen(localise(kernel_cmd, tmp), shell=True, stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        assert "playing the kernel" in kernel.stdout.readline()
        r = subprocess.run(localise(claim_cmd, tmp), shell=True, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        addr = claim_cmd.split()[-1]
        drv = os.path.join(tmp, "dell-190/sys/bus/pci/devices", addr, "driver")
        assert os.path.basename(os.readlink(drv)) == "vfio-pci"
    finally:
        os.killpg(kernel.pid, 2)
        kernel.wait(timeout=10)
