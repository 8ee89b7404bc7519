#!/bin/sh
# SPDX-License-Identifier: MIT
# Real kernel, one boot: inventory = lspci (1), claim an e1000e through to the
# kubelet and the VFIO API (2), a two-function group (3), SR-IOV VFs (6), USB
# (7), a mounted disk refused, at a claim and as a claim recorded before it was
# mounted (9), mdev (8).
. /run/vmtest/lib.sh
G=/run/vmtest
check "hostdevd starts on the real kernel" hd_start state-a

scenario inventory
check "inventory equals lspci -D -nn -k -vmm" /usr/bin/python3 $G/compare_lspci.py $SOCK
check "IOMMU state seen" sh -c "rpc daemon.status | jq -e '.result.iommu.enabled and .result.iommu.groups > 3'"
scenario_end

scenario e1000e
E=$(by_id 8086 10d3)
GR=$(group_of "$E")
check "an e1000e on e1000e ($E, group $GR)" test "$(driver_of "$E")" = e1000e
check "claim it" ctl claim "$E"
check "it is on vfio-pci" test "$(driver_of "$E")" = vfio-pci
check "/dev/vfio/$GR exists" test -c "/dev/vfio/$GR"
check "the kubelet sees it and Allocate answers" /usr/bin/python3 $G/kubelet_check.py $HD/kubelet \
	intel.com/82574L_GIGABIT_NETWORK_CONNECTION "$E" "$GR"
check "the VFIO API opens it" /usr/bin/python3 $G/vfio_open.py "$E" "$GR"
check "release it" ctl release "$E"
check "it is back on e1000e" test "$(driver_of "$E")" = e1000e
check "the resource is gone" sh -c "rpc resources.list | jq -e '.result | length == 0'"
scenario_end

scenario group
A=$(by_id 8086 100e 1)
B=$(by_id 8086 100e 2)
check "two e1000 behind one bridge share a group" test "$(group_of "$A")" = "$(group_of "$B")"
check "claim one of them" ctl claim "$A"
check "both moved to vfio-pci" sh -c "test $(driver_of "$A") = vfio-pci && test \$(basename \$(readlink /sys/bus/pci/devices/$B/driver)) = vfio-pci"
check "release" ctl release "$B"
check "both back on e1000" sh -c "test \$(basename \$(readlink /sys/bus/pci/devices/$A/driver)) = e1000 && test \$(basename \$(readlink /sys/bus/pci/devices/$B/driver)) = e1000"
scenario_end

scenario sriov
P=$(by_id 1b36 0010)
echo 0 >/sys/bus/pci/devices/$P/sriov_drivers_autoprobe
echo 2 >/sys/bus/pci/devices/$P/sriov_numvfs
udevadm settle --timeout=20
check "the PF lists two VFs" sh -c "ctl --json device $P | jq -e '.virtfns | length == 2'"
VF=$(ctl --json device "$P" | jq -r '.virtfns[0]')
check "the VF points at its PF" sh -c "ctl --json device $VF | jq -e '.physfn == \"$P\"'"
check "claim the VF" ctl claim "$VF"
check "the VF is on vfio-pci" test "$(driver_of "$VF")" = vfio-pci
check "release the VF" ctl release "$VF"
echo 0 >/sys/bus/pci/devices/$P/sriov_numvfs
udevadm settle --timeout=20
check "the VFs are gone from the inventory" sh -c "ctl --json device $P | jq -e '.virtfns | length == 0'"
scenario_end

scenario usb
check "USB keyboard listed with bus and device numbers" sh -c \
	"ctl --json devices --class usb | jq -e '.[] | select(.vendor_id == \"0627\" and .product_id == \"0001\") | .busnum > 0 and .devnum > 0'"
check "USB storage listed on usb-storage" sh -c \
	"ctl --json devices --class usb | jq -e '[.[] | select(.interface_drivers | index(\"usb-storage\"))] | length == 1'"
scenario_end

scenario protected
D=$(by_id 1af4 1042)
BLK=$(ls /sys/bus/pci/devices/$D/virtio*/block | head -n1)
mkfs.ext4 -q -F /dev/$BLK
mkdir -p /mnt/data
mount /dev/$BLK /mnt/data
ctl claim "$D" >/tmp/claim.out 2>&1
rc=$?
check "a disk with a mounted filesystem is refused (exit $rc)" test $rc = 6
check "the error names the mount point" grep -q "/mnt/data" /tmp/claim.out
umount /mnt/data
check "after unmounting, the claim succeeds" ctl claim "$D"
# Claimed; then, as after a reboot, back on its driver and mounted: the
# recorded claim is checked against the live system at the next start.
check "hostdevd stops with the disk claimed" hd_stop
echo >/sys/bus/pci/devices/$D/driver_override
echo $D >/sys/bus/pci/drivers/vfio-pci/unbind
echo $D >/sys/bus/pci/drivers_probe
udevadm settle --timeout=20
BLK=$(ls /sys/bus/pci/devices/$D/virtio*/block | head -n1)
mount /dev/$BLK /mnt/data
check "the disk is on virtio-pci again and mounted" sh -c "test '$(driver_of "$D")' = virtio-pci && mountpoint -q /mnt/data"
check "hostdevd starts again" hd_start state-a
check "the recorded claim is refused, naming the mount point" sh -c \
	"rpc claims.list | jq -e '.result.claims[] | select(.address == \"$D\") | .refused and (.reason | contains(\"/mnt/data\"))'"
check "the disk stays on virtio-pci" test "$(driver_of "$D")" = virtio-pci
check "and stays mounted" mountpoint -q /mnt/data
ctl claim "$D" >/tmp/claim.out 2>&1
rc=$?
check "a new claim of it is refused (exit $rc)" test $rc = 6
check "releasing the refused claim forgets it, nothing moved" sh -c \
	"ctl release $D && rpc claims.list | jq -e '.result.claims | length == 0' && test \$(basename \$(readlink /sys/bus/pci/devices/$D/driver)) = virtio-pci"
umount /mnt/data
check "unmounted, it is claimed again and released" sh -c "ctl claim $D && ctl release $D"
scenario_end

scenario mdev
check "the mtty sample loads" modprobe mtty
udevadm settle --timeout=20
check "mtty's mdev types are in the inventory" sh -c \
	"rpc mdev.parents | jq -e '.result[] | select(.parent == \"mtty\") | .types | map(.id) | index(\"mtty-2\") != null'"
ctl --json events >$G/events-mdev.log 2>&1 &
EV=$!
wait_for 10 sh -c "rpc daemon.status | jq -e '.result.control.subscribers == 1'"
UUID=83b8f4f2-509f-382f-3c1e-e6bfe0fa1001
echo $UUID >/sys/class/mdev_bus/mtty/mdev_supported_types/mtty-2/create
udevadm settle --timeout=20
check "an add event for the new mdev" wait_for 20 seen $G/events-mdev.log ".type == \"device.add\" and .id == \"$UUID\""
check "it is in the inventory with its type, parent and IOMMU group" sh -c \
	"ctl --json device $UUID | jq -e '.type == \"mtty-2\" and .parent == \"mtty\" and .iommu_group != null'"
echo 1 >/sys/bus/mdev/devices/$UUID/remove
udevadm settle --timeout=20
check "a remove event when it goes" wait_for 20 seen $G/events-mdev.log ".type == \"device.remove\" and .id == \"$UUID\""
kill $EV 2>/dev/null
scenario_end

check "hostdevd stops cleanly" hd_stop
finish
