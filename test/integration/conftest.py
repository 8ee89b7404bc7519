# SPDX-License-Identifier: MIT
"""pytest fixtures: a running hostdevd per test, its log printed on failure."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hdtest  # noqa: E402

_daemons = []


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for d in _daemons:
            # The tests' polling connects many times a second: those lines
            # would push everything else out of the tail.
            text = "".join(line for line in d.log_text().splitlines(keepends=True)
                           if "] client pid " not in line)
            rep.sections.append((f"hostdevd log ({d.dir})", text[-20000:]))


@pytest.fixture
def make_daemon():
    """Factory: make_daemon(host=..., config=...) starts hostdevd; every daemon
    is stopped at the end and must exit 0 without sanitizer reports."""
    made = []

    def factory(*args, **kwargs):
        d = hdtest.Daemon(*args, **kwargs)
        made.append(d)
        _daemons.append(d)
        return d

    yield factory
    try:
        for d in made:
            if d.proc is not None:
                d.check_clean_exit()
    finally:
        for d in made:
            _daemons.remove(d)
            d.cleanup()


@pytest.fixture
def daemon(make_daemon):
    return make_daemon()
