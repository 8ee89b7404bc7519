# SPDX-License-Identifier: MIT
# Helpers for guest scenarios: TAP lines, hostdevd started and stopped,
# devices found by vendor:device (never by address).
. /run/vmtest/env.sh
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:verify_asan_link_order=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export PYTHONDONTWRITEBYTECODE=1 HOSTDEVD_SRCDIR
T=0
FAILED=0
HD=/run/hd
SOCK=$HD/ctl.sock
ok() { T=$((T + 1)); echo "ok $T - $*"; }
notok() { T=$((T + 1)); FAILED=1; echo "not ok $T - $*"; }
check() { # check DESCRIPTION command...
	local d=$1
	shift
	if "$@" >/tmp/check.out 2>&1; then ok "$d"; else notok "$d"; sed 's/^/#   /' /tmp/check.out | tail -n 20; fi
}
scenario() { SC_NAME=$1; SC_START=$(cut -d' ' -f1 /proc/uptime); echo "# scenario: $1"; }
scenario_end() { echo "# scenario $SC_NAME took $(echo "$(cut -d' ' -f1 /proc/uptime) - $SC_START" | bc) s"; }
by_id() { # by_id VENDOR DEVICE [N]: the Nth (1-based) function with these ids
	local n=${3:-1} i=0 d
	for d in /sys/bus/pci/devices/*; do
		if [ "$(cat "$d/vendor")" = "0x$1" ] && [ "$(cat "$d/device")" = "0x$2" ]; then
			i=$((i + 1))
			[ $i = "$n" ] && { basename "$d"; return 0; }
		fi
	done
	return 1
}
driver_of() { basename "$(readlink "/sys/bus/pci/devices/$1/driver" 2>/dev/null)" 2>/dev/null; }
group_of() { basename "$(readlink "/sys/bus/pci/devices/$1/iommu_group")"; }
hd_start() { # hd_start STATE-NAME [extra hostdevd args]
	local state=$1
	shift
	mkdir -p $HD/kubelet /run/vmtest/$state
	rm -f $HD/ready
	mkfifo $HD/ready
	"$HOSTDEVD" --foreground --control-socket $SOCK --state-dir /run/vmtest/$state \
		--kubelet-dir $HD/kubelet --module-dir "$HOSTDEVD_MODULE_DIR" --log-level debug \
		--node-name vm --ready-fd 3 "$@" 3>$HD/ready >>/run/vmtest/hostdevd.log 2>&1 &
	HD_PID=$!
	read -r line <$HD/ready
	[ "$line" = READY ]
}
hd_stop() {
	kill -TERM "$HD_PID"
	wait "$HD_PID"
	local rc=$?
	if grep -q -E 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' /run/vmtest/hostdevd.log; then
		echo "# sanitizer report in the hostdevd log"
		return 1
	fi
	return $rc
}
# ctl and rpc are commands (not functions) so that sh -c strings see them.
mkdir -p $HD/bin
cat >$HD/bin/ctl <<EOS
#!/bin/sh
exec "$HOSTDEVCTL" --socket $SOCK "\$@"
EOS
cat >$HD/bin/rpc <<EOS
#!/bin/sh
# rpc METHOD [PARAMS-JSON]: prints the response
echo "{\\"jsonrpc\\":\\"2.0\\",\\"id\\":1,\\"method\\":\\"\$1\\",\\"params\\":\${2:-{\}}}" |
	socat -t 120 - UNIX-CONNECT:$SOCK
EOS
chmod +x $HD/bin/ctl $HD/bin/rpc
export PATH=$HD/bin:$PATH
seen() { # seen FILE JQ-FILTER: an event in the stream matches
	jq -e -s "map(select($2)) | length > 0" "$1"
}
wait_for() { # wait_for SECONDS command...: until the command succeeds
	local n=$(($1 * 10))
	shift
	while ! "$@" >/dev/null 2>&1; do n=$((n - 1)); [ $n -le 0 ] && return 1; sleep 0.1; done
}
finish() { echo "1..$T"; exit $FAILED; }
