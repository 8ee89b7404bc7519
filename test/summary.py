#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Counts every test of a `make check` run: each TAP result of the unit tests
(automake .trs files) and each pytest case (JUnit XML). Prints each fuzz
target's final libFuzzer coverage (":fuzz-stat:" lines tools/check-all
writes to fuzz/smoke.trs: "cov: N ft: M" against the target's floor), then
the closing line "N passed, N failed[, N skipped]"; exits 1 when anything
failed."""

import glob
import os
import sys
import xml.etree.ElementTree as ET


def main(builddir):
    passed = failed = skipped = 0
    trs_files = glob.glob(os.path.join(builddir, "test", "unit", "*.trs")) + \
        glob.glob(os.path.join(builddir, "fuzz", "*.trs")) + \
        glob.glob(os.path.join(builddir, "test", "vm", "*.trs")) + \
        glob.glob(os.path.join(builddir, "test", "packaging", "*.trs"))
    for trs in sorted(trs_files):
        with open(trs) as f:
            for line in f:
                if line.startswith(":fuzz-stat:"):
                    print(line[len(":fuzz-stat:"):].strip())
                elif line.startswith(":test-result:"):
                    res = line.split()[1]
                    if res in ("PASS", "XFAIL"):
                        passed += 1
                    elif res == "SKIP":
                        skipped += 1
                    else:
                        failed += 1
    xml = os.path.join(builddir, "test-results", "pytest.xml")
    if os.path.exists(xml):
        for suite in ET.parse(xml).getroot().iter("testsuite"):
            tests = int(suite.get("tests", 0))
            f = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
            s = int(suite.get("skipped", 0))
            failed += f
            skipped += s
            passed += tests - f - s
    else:
        print("summary: no pytest results (test-results/pytest.xml); counting that as a failure")
        failed += 1
    line = f"{passed} passed, {failed} failed"
    if skipped:
        line += f", {skipped} skipped"
    print(line)
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
