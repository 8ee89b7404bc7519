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

scenario never-claimable
# Bridges of every kind and the boot VGA device stay with the host: refused,
# nothing written (driver_override untouched, same driver).
by_class() { for d in /sys/bus/pci/devices/*; do case $(cat $d/class) in $1*) basename $d; return 0 ;; esac; done; return 1; }
refused_untouched() { # refused_untouched ADDRESS: claim refused (exit 6), nothing moved
	local a=$1 before
	before=$(driver_of "$a")
	ctl claim "$a" >/tmp/claim.out 2>&1
	local rc=$?
	cat /tmp/claim.out
	[ $rc = 6 ] && [ "$(driver_of "$a")" = "$before" ] &&
		[ "$(cat /sys/bus/pci/devices/$a/driver_override)" = "(null)" ]
}
RP=$(by_class 0x060400)
HB=$(by_class 0x060000)
check "a PCIe root port ($RP, $(driver_of "$RP")) is refused, nothing moved" refused_untouched "$RP"
check "the host bridge ($HB) is refused, nothing moved" refused_untouched "$HB"
check "the refusal says it is a bridge" grep -q "bridge" /tmp/claim.out
VGA=
for d in /sys/bus/pci/devices/*; do [ "$(cat $d/boot_vga 2>/dev/null)" = 1 ] && VGA=$(basename $d); done
if [ -n "$VGA" ]; then
	check "the boot VGA device ($VGA) is blocked in the inventory" sh -c \
		"rpc devices.get '{\"address\":\"$VGA\"}' | jq -e '.result.module_info | .passthrough == \"blocked\" and (.reasons | map(test(\"boot VGA\")) | any)'"
	check "and its claim is refused by the same rule, nothing moved" refused_untouched "$VGA"
else
	ok "# SKIP no device reads boot_vga 1 in this VM"
fi
scenario_end

scenario no-vfio-pci
# vfio-pci cannot be loaded: the claim fails saying so before any member
# moves. modules_disabled lasts for this boot, so this runs last.
check "vfio-pci is unloaded (nothing bound to it)" sh -c "modprobe -r vfio_pci && ! test -d /sys/bus/pci/drivers/vfio-pci"
echo 1 >/proc/sys/kernel/modules_disabled
ctl claim "$BOOT" >/tmp/claim.out 2>&1
rc=$?
cat /tmp/claim.out
check "the claim fails (exit $rc)" test $rc != 0
check "it says vfio-pci is not available" grep -q "vfio-pci driver is not available" /tmp/claim.out
check "the e1000e never left its driver" sh -c "test '$(driver_of "$BOOT")' = e1000e && test \"\$(cat /sys/bus/pci/devices/$BOOT/driver_override)\" = '(null)'"
check "nothing is recorded for it" sh -c "rpc claims.list | jq -e '.result.claims | map(select(.address == \"$BOOT\")) | length == 0'"
scenario_end

check "hostdevd stops cleanly" hd_stop
finish
