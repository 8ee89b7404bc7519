# SPDX-License-Identifier: MIT
"""The man pages keep up with the code: every option of `hostdevd --help`
and `hostdevctl --help`, every control method, every configuration key and
every hostdevctl exit code is documented; the pages render without groff
warnings."""

import glob
import os
import re
import shutil
import subprocess

import pytest

import hdtest

MAN = os.path.join(hdtest.SRCDIR, "man")


def page(name):
    with open(os.path.join(MAN, name + ".in")) as f:
        return f.read().replace("\\-", "-")


def help_options(exe):
    out = subprocess.run([exe, "--help"], capture_output=True, text=True,
                         env=hdtest.sanitizer_env()).stdout
    return sorted(set(re.findall(r"(--[a-z][a-z-]*)", out)))


def test_hostdevd_options_documented():
    text = page("hostdevd.8")
    missing = [o for o in help_options(hdtest.HOSTDEVD) if o not in text]
    assert not missing, f"hostdevd(8) lacks {missing}"


def test_hostdevctl_options_commands_and_exit_codes_documented():
    text = page("hostdevctl.8")
    out = subprocess.run([hdtest.HOSTDEVCTL, "--help"], capture_output=True, text=True).stdout
    missing = [o for o in help_options(hdtest.HOSTDEVCTL) if o not in text]
    commands = re.findall(r"^  ([a-z]+)\b", out, re.M)
    assert len(commands) >= 10
    missing += [c for c in commands if not re.search(rf"^\.B[IR]? {c}\b", text, re.M)]
    codes = [int(c) for c in re.findall(r"\b(\d) [a-z(]", out.split("Exit status:")[1])]
    assert codes == list(range(len(codes))) and len(codes) >= 9, codes
    missing += [str(c) for c in codes if not re.search(rf"^\.B {c}$", text, re.M)]
    assert not missing, f"hostdevctl(8) lacks {missing}"


def test_control_methods_documented():
    # The core's own methods and those the modules declare (pci.claim...).
    methods = []
    for src in ["core/ctl.c"] + sorted(glob.glob(os.path.join(hdtest.SRCDIR, "modules/*/*.c"))):
        with open(os.path.join(hdtest.SRCDIR, src)) as f:
            text = f.read()
        # A module may spell its name through a macro: .name = MOD ".list".
        for macro, value in re.findall(r'#define ([A-Z_]+) "([a-z0-9]+)"', text):
            text = text.replace(f'{macro} ".', f'"{value}.')
        methods += re.findall(r'\.name = "([a-z0-9]+\.[a-z_]+)"', text)
    assert len(methods) >= 12
    text = page("hostdevd.8")
    missing = [m for m in methods if m not in text]
    assert not missing, f"hostdevd(8) lacks the methods {missing}"


def test_config_keys_documented():
    with open(os.path.join(hdtest.SRCDIR, "core/conf.c")) as f:
        keys = set(re.findall(r'strcmp\(key, "([a-z_]+)"\)', f.read()))
    assert len(keys) >= 20
    text = page("hostdevd.conf.5")
    missing = sorted(k for k in keys if not re.search(rf"\b{k}\b", text))
    assert not missing, f"hostdevd.conf(5) lacks {missing}"


@pytest.mark.skipif(not shutil.which("groff"), reason="groff not installed")
@pytest.mark.parametrize("name", ["hostdevd.8", "hostdevctl.8", "hostdevd.conf.5"])
def test_page_renders_cleanly(name, tmp_path):
    src = os.path.join(hdtest.BUILDDIR, "man", name)
    if not os.path.exists(src):         # not built yet: render the template
        src = os.path.join(MAN, name + ".in")
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", src], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


@pytest.mark.skipif(not os.path.exists("/usr/share/bash-completion/bash_completion"),
                    reason="bash-completion not installed")
@pytest.mark.parametrize("words,expect", [
    (["hostdevctl", "cl"], ["claim", "claims"]),
    (["hostdevctl", "devices", "--cl"], ["--class"]),
    (["hostdevctl", "devices", "--class", ""], ["mdev", "pci", "usb"]),
    (["hostdevctl", "release", "0000:00:00.0", "--f"], ["--force"]),
])
def test_bash_completion(words, expect):
    script = (". /usr/share/bash-completion/bash_completion; "
              f". {os.path.join(hdtest.SRCDIR, 'etc/hostdevctl.bash-completion')}; "
              'COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; '
              '_hostdevctl; printf "%s\\n" "${COMPREPLY[@]}"')
    r = subprocess.run(["bash", "-c", script, "bash"] + words, capture_output=True, text=True)
    assert sorted(r.stdout.split()) == expect, (r.stdout, r.stderr)
