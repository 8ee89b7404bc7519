#!/bin/bash
# SPDX-License-Identifier: MIT
# Boots the test VM and runs one guest scenario in it.
#   run-vm.sh [-H "qmp steps"] [-a "qemu args"] [-q qemu-binary] [-t seconds] scenario.sh
# (-H: steps for qmp.py, which runs beside the VM and does what the guest asks)
# The guest sees the host's root read-only (so the build tree and its
# binaries at the same paths) and the run directory at /run/vmtest. Exit
# status: the scenario's; 124 on timeout; 125 when the VM died without
# saying; 126 when the host script failed. The scenario's output and the
# console are printed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
VM_CACHE=${VM_CACHE:-$here/../../.vm-cache}
host_script= qemu_args= limit=300 qemu=qemu-system-x86_64
while getopts "H:a:q:t:" o; do
	case $o in
	H) host_script=$OPTARG ;;
	a) qemu_args=$OPTARG ;;
	q) qemu=$OPTARG ;;
	t) limit=$OPTARG ;;
	*) exit 2 ;;
	esac
done
shift $((OPTIND - 1))
scenario=$1
ver=$(cat "$VM_CACHE/version")
run=$(mktemp -d "$VM_CACHE/run.XXXXXX")
cp "$here/guest/stage2.sh" "$run/stage2.sh"
cp "$scenario" "$run/scenario.sh"
cp "$here"/guest/*.sh "$here"/guest/*.py "$run/" 2>/dev/null
# Scratch disks for the scenarios that want them, one set per run (runs may
# overlap): @RUN@/usb.img and @RUN@/disk.img in the QEMU arguments.
truncate -s 8M "$run/usb.img"
truncate -s 64M "$run/disk.img"
qemu_args=${qemu_args//@RUN@/$run}
qemu_args=${qemu_args//@CACHE@/$VM_CACHE}
{
	echo "export HOSTDEVD='${HOSTDEVD:-}' HOSTDEVCTL='${HOSTDEVCTL:-}'"
	echo "export HOSTDEVD_MODULE_DIR='${HOSTDEVD_MODULE_DIR:-}' HOSTDEVD_SRCDIR='${HOSTDEVD_SRCDIR:-}'"
	echo "export HOSTDEVD_BUILDDIR='${HOSTDEVD_BUILDDIR:-}'"
} >"$run/env.sh"
start=$(date +%s.%N)
timeout "$limit" $qemu -bios /usr/share/qemu/qboot.rom -machine q35 -accel tcg \
	-cpu max -smp 2 -m 1G -display none -serial stdio -no-reboot -nic none -vga none \
	-kernel "$VM_CACHE/vmlinux" -initrd "$VM_CACHE/initramfs.cpio.gz" \
	-append "console=ttyS0 rdinit=/init panic=1 quiet loglevel=3 intel_iommu=on iommu=pt" \
	-device intel-iommu,intremap=on \
	-qmp "unix:$run/qmp.sock,server=on,wait=off" \
	-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
	-virtfs "local,path=$VM_CACHE/kroot/lib/modules,mount_tag=modules,security_model=none,readonly=on" \
	-virtfs "local,path=$run,mount_tag=vmtest,security_model=none" \
	$qemu_args >"$run/console" 2>&1 &
qpid=$!
hrc=0
if [ -n "$host_script" ]; then
	QMP="$run/qmp.sock" RUNDIR="$run" /usr/bin/python3 "$here/qmp.py" $host_script >"$run/host.log" 2>&1
	hrc=$?
fi
wait $qpid
qrc=$?
end=$(date +%s.%N)
cat "$run/output" 2>/dev/null
if [ $qrc = 124 ]; then
	rc=124
elif [ ! -f "$run/rc" ]; then
	rc=125
elif [ $hrc != 0 ]; then
	rc=126
else
	rc=$(cat "$run/rc")
fi
printf '# %s: %.1f s wall, exit %s\n' "$(basename "$scenario")" "$(echo "$end - $start" | bc)" "$rc"
if [ "$rc" != 0 ]; then
	echo "# --- console ---"
	tail -n 60 "$run/console" | sed 's/^/# /'
	[ -f "$run/host.log" ] && { echo "# --- host script ---"; sed 's/^/# /' "$run/host.log"; }
	[ -f "$run/hostdevd.log" ] && { echo "# --- hostdevd log ---"; tail -n 80 "$run/hostdevd.log" | sed 's/^/# /'; }
fi
rm -rf "$run"
exit "$rc"
