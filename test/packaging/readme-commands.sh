#!/bin/sh
# SPDX-License-Identifier: MIT
# README command 1 as a new user runs it, on a copy of the tree (tracked
# files as they are in the work tree): it must build, install, start the
# daemon on this machine, and leave hostdevctl on PATH talking to it. Then the
# start of command 2 (tools/check-all) on the same copy: the in-tree build is
# cleaned and an out-of-tree configure works. Installs under /usr/local and
# removes it again (make uninstall). Needs root; exits 77 (skip) otherwise.
set -u
srcdir=$(cd "$(dirname "$0")/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "not root"; exit 77; }
command -v sudo >/dev/null || { echo "no sudo (tools/install-deps installs it)"; exit 77; }
if [ -e /run/hostdevd/hostdevd.sock ] || [ -e /usr/local/sbin/hostdevd ]; then
	echo "a hostdevd is already installed or running here; not touching it"
	exit 77
fi
tmp=$(mktemp -d /tmp/hostdevd-readme.XXXXXX)
state_existed=no
[ -e /var/lib/hostdevd ] && state_existed=yes
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	[ -f "$tmp/tree/Makefile" ] && (cd "$tmp/tree" && make uninstall >/dev/null 2>&1)
	[ $state_existed = no ] && rm -rf /var/lib/hostdevd
	rm -rf "$tmp"
}
trap cleanup EXIT

(cd "$srcdir" && git ls-files -z | cpio -0pdm --quiet "$tmp/tree") || exit 1
cd "$tmp/tree" || exit 1
# The first ```sh block of the README, minus the daemon that runs for ever
# (started below in the background, as the block would run it).
cmd1=$(awk '/^```sh$/ { inblock = 1; next } inblock && /^```$/ { exit } inblock' README.md)
echo "command 1: $cmd1"
case $cmd1 in
*"&& sudo hostdevd --foreground") ;;
*) echo "README command 1 does not end by starting the installed hostdevd"; exit 1 ;;
esac
build=${cmd1%&& sudo hostdevd --foreground}
# nproc on this 2-core machine; the build's output goes to a log.
sh -c "$build" >"$tmp/build.log" 2>&1 || { tail -n 40 "$tmp/build.log"; exit 1; }
# A fresh shell's PATH, as the user's next terminal has it.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
[ "$(command -v hostdevctl)" = /usr/local/bin/hostdevctl ] ||
	{ echo "hostdevctl is not on PATH after command 1: $(command -v hostdevctl)"; exit 1; }
sudo hostdevd --foreground >"$tmp/daemon.log" 2>&1 &
pid=$!
i=0
until hostdevctl status >"$tmp/status.txt" 2>&1; do
	i=$((i + 1))
	if [ $i -gt 100 ] || ! kill -0 "$pid" 2>/dev/null; then
		echo "hostdevctl status never answered:"; cat "$tmp/status.txt"; tail -n 30 "$tmp/daemon.log"
		exit 1
	fi
	sleep 0.2
done
head -n 5 "$tmp/status.txt"
hostdevctl devices >/dev/null || { echo "hostdevctl devices failed"; exit 1; }
kill "$pid" && wait "$pid"
rc=$?
pid=
[ $rc = 0 ] || { echo "hostdevd exited $rc on SIGTERM"; tail -n 30 "$tmp/daemon.log"; exit 1; }
make uninstall >/dev/null 2>&1 || { echo "make uninstall failed"; exit 1; }
# Command 2 on the same tree starts like this (tools/check-all).
make distclean >/dev/null 2>&1 || { echo "make distclean failed"; exit 1; }
mkdir -p b && cd b && ../configure >configure.log 2>&1 ||
	{ echo "out-of-tree configure failed after command 1:"; tail -n 20 configure.log; exit 1; }
echo "README command 1 then command 2's configure: fine"
