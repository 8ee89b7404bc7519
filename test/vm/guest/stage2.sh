#!/bin/sh
# SPDX-License-Identifier: MIT
# The VM's second stage, in the real root: udevd, then the scenario.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
cd /run/vmtest
mkdir -p /dev/shm /run/udev
/lib/systemd/systemd-udevd --daemon >/dev/null 2>&1
udevadm trigger --type=subsystems --action=add >/dev/null 2>&1
udevadm trigger --type=devices --action=add >/dev/null 2>&1
udevadm settle --timeout=30 >/dev/null 2>&1
echo "stage2: udev settled in $(cut -d' ' -f1 /proc/uptime) s"
sh /run/vmtest/scenario.sh >/run/vmtest/output 2>&1
echo $? >/run/vmtest/rc
sync
poweroff -f
