#!/bin/sh
# SPDX-License-Identifier: MIT
# Real kernel, QEMU 7.2's NVMe controller with SR-IOV (sriov_totalvfs 4): a
# PF that is not a NIC gets its VF count, and nothing else, from the sriov
# module. The nvme driver cannot drive these VFs (no flexible resources
# assigned), so they are not autoprobed.
. /run/vmtest/lib.sh
G=/run/vmtest
PF=$(by_id 1b36 0010)
numvfs() { cat /sys/bus/pci/devices/$PF/sriov_numvfs; }
check "an NVMe PF with 4 VFs possible ($PF)" test "$(cat /sys/bus/pci/devices/$PF/sriov_totalvfs)" = 4
echo 0 >/sys/bus/pci/devices/$PF/sriov_drivers_autoprobe
check "hostdevd starts" hd_start state-nvme

scenario nvme-count
check "sriov.list shows it without a netdev" sh -c \
	"rpc sriov.list | jq -e '.result[] | select(.address == \"$PF\") | .netdev == null and .totalvfs == 4 and .numvfs == 0'"
check "2 VFs" ctl sriov configure pf="$PF" num_vfs=2
check "sriov_numvfs is 2 and the VFs are there" sh -c "test $(numvfs) = 2 && test -e /sys/bus/pci/devices/$PF/virtfn1"
rpc sriov.configure "{\"pf\": \"$PF\", \"num_vfs\": 2, \"vfs\": [{\"index\": 0, \"trust\": true}]}" >$G/n1.json
check "VF settings are refused for a PF without a netdev" jq -e '.error.message | test("no network interface")' $G/n1.json
rpc sriov.configure "{\"pf\": \"$PF\", \"num_vfs\": 5}" >$G/n2.json
check "more than sriov_totalvfs is refused" jq -e '.error.code == -32602' $G/n2.json
check "2 -> 3 VFs (through 0)" ctl sriov configure pf="$PF" num_vfs=3
check "sriov_numvfs is 3" test "$(numvfs)" = 3
check "back to 0" ctl sriov configure pf="$PF" num_vfs=0
check "sriov_numvfs is 0" test "$(numvfs)" = 0
check "hostdevd stops cleanly" hd_stop
scenario_end
finish
