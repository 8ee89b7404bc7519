#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs the integration suite (pytest against the real daemon) for `make check`.
# Results go to $HOSTDEVD_BUILDDIR/test-results/pytest.xml for test/summary.py.
set -u
if [ "${HOSTDEVD_SKIP_INTEGRATION:-0}" = 1 ]; then
	echo "integration tests skipped (HOSTDEVD_SKIP_INTEGRATION=1)"
	exit 77
fi
srcdir=${HOSTDEVD_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
builddir=${HOSTDEVD_BUILDDIR:-$srcdir}
mkdir -p "$builddir/test-results"
export PYTHONDONTWRITEBYTECODE=1
# Debian's interpreter: it has python3-gi and python3-grpcio.
exec /usr/bin/python3 -m pytest -p no:cacheprovider -o junit_family=xunit2 \
	--junitxml="$builddir/test-results/pytest.xml" -rfEs -v \
	"$srcdir/test/integration" "$@"
