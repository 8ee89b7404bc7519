#!/bin/sh
# SPDX-License-Identifier: MIT
# Real kernel: PCI hotplug through QMP with an auto-claim rule, removal (4);
# a claim re-applied after its device went back to its driver, as after a
# reboot (5); USB hot-add and hot-remove (7).
. /run/vmtest/lib.sh
G=/run/vmtest
wait_flag() { i=0; while [ ! -e "$G/$1" ]; do i=$((i + 1)); [ $i -gt 600 ] && return 1; sleep 0.1; done; }
echo '{"resources": {"rules": [{"vendor": "8086", "device": "10d3", "claim": true, "name": "example.com/hotnic"}]}}' >$G/b.conf
check "hostdevd starts with an auto-claim rule" hd_start state-b --config $G/b.conf
ctl --json events >$G/events.log 2>&1 &
EV=$!
wait_for 10 sh -c "rpc daemon.status | jq -e '.result.control.subscribers == 1'"

scenario hotplug
BOOT=$(by_id 8086 10d3)
wait_for 30 sh -c "ctl claims | grep -q '$BOOT'"
touch $G/want-add-hp1
check "QEMU hot-added an e1000e" wait_flag added-hp1
udevadm settle --timeout=30
NEW=$(for d in /sys/bus/pci/devices/*; do [ "$(cat $d/device)" = 0x10d3 ] && [ "$(basename $d)" != "$BOOT" ] && basename $d; done | head -n1)
check "it is in the inventory ($NEW)" sh -c "ctl device $NEW >/dev/null"
check "an add event was streamed" wait_for 20 seen $G/events.log ".type == \"device.add\" and .id == \"$NEW\""
check "the rule claimed it" wait_for 30 sh -c "test \$(basename \$(readlink /sys/bus/pci/devices/$NEW/driver)) = vfio-pci"
check "the kubelet is offered it" /usr/bin/python3 $G/kubelet_check.py $HD/kubelet example.com/hotnic "$NEW" "$(group_of "$NEW")"
touch $G/want-del-hp1
check "QEMU removed it" wait_flag deleted-hp1
udevadm settle --timeout=30
check "a remove event was streamed" wait_for 20 seen $G/events.log ".type == \"device.remove\" and .id == \"$NEW\""
check "its claim is kept as absent" wait_for 20 sh -c "ctl --json claims | jq -e '.claims[] | select(.address == \"$NEW\") | .absent'"
check "hostdevd is still serving" sh -c "rpc daemon.status | jq -e '.result.pid > 0'"
scenario_end

scenario reboot
check "the boot e1000e is claimed" test "$(driver_of "$BOOT")" = vfio-pci
kill $EV 2>/dev/null
check "hostdevd stops" hd_stop
# As after a reboot: the device is back on its own driver.
echo > /sys/bus/pci/devices/$BOOT/driver_override
echo $BOOT > /sys/bus/pci/drivers/vfio-pci/unbind
echo $BOOT > /sys/bus/pci/drivers_probe
check "it went back to e1000e by hand" test "$(driver_of "$BOOT")" = e1000e
check "hostdevd starts with the same state" hd_start state-b --config $G/b.conf
check "the claim is applied again" wait_for 30 sh -c "test \$(basename \$(readlink /sys/bus/pci/devices/$BOOT/driver)) = vfio-pci"
check "and released on request" ctl release "$BOOT"
check "back on e1000e" test "$(driver_of "$BOOT")" = e1000e
scenario_end

scenario usb-hotplug
ctl --json events >$G/events2.log 2>&1 &
EV=$!
wait_for 10 sh -c "rpc daemon.status | jq -e '.result.control.subscribers == 1'"
touch $G/want-add-kbd2
check "QEMU hot-added a USB keyboard" wait_flag added-kbd2
check "a USB add event was streamed" wait_for 20 seen $G/events2.log '.type == "device.add" and .class == "usb"' 
touch $G/want-del-kbd2
check "QEMU removed it" wait_flag deleted-kbd2
check "a USB remove event was streamed" wait_for 20 seen $G/events2.log '.type == "device.remove" and .class == "usb"' 
kill $EV 2>/dev/null
scenario_end

check "hostdevd stops cleanly" hd_stop
finish
