#!/bin/sh
# SPDX-License-Identifier: MIT
# Real kernel, QEMU 10's emulated igb (82576, sriov_totalvfs 7) and Debian's
# igb/igbvf: the sriov module sets the VF count and VF settings over
# rtnetlink and reads them back as `ip link` shows them; an attribute igb
# refuses (802.1ad, link state) names itself and is rolled back; a count
# change goes through 0 (igb answers EBUSY otherwise); the default route
# through the PF (or a VLAN over it) makes it the management uplink, refused;
# vf_driver vfio-pci moves every VF through the core's IOMMU-group engine,
# offered to the kubelet stand-in under resource_name, a count change refused
# while one is allocated (given back first otherwise), VFs reset by hand
# moved again at the next start, and back to igbvf; the count reset by hand
# is applied again at the next start, and after igb is reloaded while
# hostdevd runs.
. /run/vmtest/lib.sh
G=/run/vmtest
modprobe igb 2>/dev/null
modprobe igbvf 2>/dev/null
udevadm settle --timeout=30 >/dev/null 2>&1
PF=$(by_id 8086 10c9)
wait_for 20 sh -c "ls /sys/bus/pci/devices/$PF/net | grep -q ."
IF=$(ls /sys/bus/pci/devices/$PF/net | head -n1)
# vfline N: VF N's line of `ip link` (a command, for sh -c strings).
cat >$HD/bin/vfline <<EOS
#!/bin/sh
/sbin/ip link show "$IF" | grep "vf \$1 "
EOS
chmod +x $HD/bin/vfline
numvfs() { cat /sys/bus/pci/devices/$PF/sriov_numvfs; }
check "an igb PF with 7 VFs possible ($PF, $IF)" test "$(cat /sys/bus/pci/devices/$PF/sriov_totalvfs)" = 7
check "hostdevd starts" hd_start state-sriov

scenario configure
check "sriov.list shows the PF, no VFs, not management, eswitch null (igb: no devlink eswitch)" sh -c \
	"rpc sriov.list | jq -e '.result[] | select(.address == \"$PF\") | .netdev == \"$IF\" and .numvfs == 0 and .management == false and has(\"eswitch\") and .eswitch == null and .eswitch_error == null'"
VFS='[{"index": 0, "mac": "52:54:00:12:34:56", "vlan": 100, "qos": 3, "trust": true}, {"index": 1, "mac": "52:54:00:12:34:57", "spoofchk": false}]'
check "configure 2 VFs with MAC, VLAN, trust" ctl sriov configure pf="$IF" num_vfs=2 vfs="$VFS"
check "sriov_numvfs is 2" test "$(numvfs)" = 2
/sbin/ip link show "$IF" | grep ' vf ' | sed 's/^/# ip link: /'
check "ip link: VF 0 MAC, vlan 100, qos 3, trust on" sh -c \
	"vfline 0 | grep -q '52:54:00:12:34:56' && vfline 0 | grep -q 'vlan 100, qos 3' && vfline 0 | grep -q 'trust on'"
check "ip link: VF 1 MAC, spoof checking off, trust off" sh -c \
	"vfline 1 | grep -q '52:54:00:12:34:57' && vfline 1 | grep -q 'spoof checking off' && vfline 1 | grep -q 'trust off'"
check "the VFs are on igbvf" sh -c "test \$(basename \$(readlink /sys/bus/pci/devices/$PF/virtfn0/driver)) = igbvf"
check "sriov.list reads the VFs back" sh -c \
	"rpc sriov.list | jq -e '.result[] | select(.address == \"$PF\") | .vfs[0].mac == \"52:54:00:12:34:56\" and .vfs[0].vlan == 100 and .vfs[0].trust == true and .phase == \"applied\"'"
VF0=$(basename "$(readlink /sys/bus/pci/devices/$PF/virtfn0)")
check "devices.get of VF 0 ($VF0) shows its PF and settings" wait_for 20 sh -c \
	"rpc devices.get '{\"address\": \"$VF0\"}' | jq -e '.result.module == \"sriov\" and .result.module_info.pf == \"$PF\" and .result.module_info.vf.mac == \"52:54:00:12:34:56\" and .result.module_info.vf.vlan == 100'"
scenario_end

scenario refused-attributes
BEFORE=$(/sbin/ip link show "$IF" | grep ' vf ')
rpc sriov.configure "{\"pf\": \"$PF\", \"num_vfs\": 2, \"vfs\": [{\"index\": 0, \"mac\": \"52:54:00:00:00:99\", \"vlan\": 200, \"vlan_proto\": \"802.1ad\"}]}" >$G/ad.json
check "802.1ad on igb: the error names the VLAN" jq -e '.error.message | test("VF 0 vlan: Protocol not supported")' $G/ad.json
check "and everything is rolled back (MAC included)" test "$(/sbin/ip link show "$IF" | grep ' vf ')" = "$BEFORE"
rpc sriov.configure "{\"pf\": \"$PF\", \"num_vfs\": 2, \"vfs\": [{\"index\": 0, \"mac\": \"52:54:00:00:00:98\", \"vlan\": 100, \"qos\": 3, \"trust\": true, \"link_state\": \"disable\"}, {\"index\": 1, \"mac\": \"52:54:00:12:34:57\", \"spoofchk\": false}]}" >$G/ls.json
check "link state on igb: the error names it" jq -e '.error.message | test("VF 0 link_state: Operation not supported")' $G/ls.json
check "rolled back again" test "$(/sbin/ip link show "$IF" | grep ' vf ')" = "$BEFORE"
check "the record is still the applied one" sh -c \
	"rpc sriov.list | jq -e '.result[] | select(.address == \"$PF\") | .recorded.vfs[0].mac == \"52:54:00:12:34:56\"'"
scenario_end

scenario count
check "2 -> 3 VFs (through 0: igb refuses 2 -> 3)" ctl sriov configure pf="$PF" num_vfs=3 vfs="$VFS"
check "sriov_numvfs is 3" test "$(numvfs)" = 3
check "the settings wiped by the change are applied again" sh -c \
	"vfline 0 | grep -q '52:54:00:12:34:56' && vfline 0 | grep -q 'vlan 100, qos 3' && vfline 2 | grep -q '00:00:00:00:00:00'"
scenario_end

scenario management
# IPv4 only: QEMU's user network also announces an IPv6 default route.
echo 1 >/proc/sys/net/ipv6/conf/$IF/disable_ipv6
/sbin/ip link set "$IF" up
/sbin/ip addr add 10.0.2.15/24 dev "$IF"
/sbin/ip route add default via 10.0.2.2 dev "$IF"
rpc sriov.configure "{\"pf\": \"$PF\", \"num_vfs\": 1}" >$G/mg.json
check "the PF carrying the default route is refused" jq -e '.error.code == -32003 and (.error.message | test("default route"))' $G/mg.json
check "nothing changed" test "$(numvfs)" = 3
/sbin/ip route del default
modprobe 8021q 2>/dev/null
/sbin/ip link add link "$IF" name "$IF.5" type vlan id 5 && /sbin/ip link set "$IF.5" up &&
	/sbin/ip addr add 10.0.5.1/24 dev "$IF.5" && /sbin/ip route add default via 10.0.5.2 dev "$IF.5"
rpc sriov.configure "{\"pf\": \"$PF\", \"num_vfs\": 1}" >$G/mg2.json
check "also through a VLAN over it" jq -e ".error.code == -32003 and (.error.message | test(\"$IF.5\"))" $G/mg2.json
check "sriov.list says management" sh -c \
	"rpc sriov.list | jq -e '.result[] | select(.address == \"$PF\") | .management == true'"
/sbin/ip route del default
/sbin/ip link del "$IF.5"
/sbin/ip link set "$IF" down
check "no default route left" sh -c "! /sbin/ip route show default | grep -q . && ! /sbin/ip -6 route show default | grep -q ."
scenario_end

scenario vfio
# vf_driver vfio-pci: every VF's IOMMU group moves through the core's engine
# (igbvf -> vfio-pci), its MAC pinned first; offered under resource_name.
RES=example.com/igb_vf
rpc sriov.configure "{\"pf\": \"$PF\", \"num_vfs\": 3, \"vf_driver\": \"vfio-pci\", \"resource_name\": \"$RES\", \"vfs\": [{\"index\": 0, \"mac\": \"52:54:00:12:34:56\"}]}" >$G/vf.json
check "vf_driver vfio-pci applied" jq -e '.result.num_vfs == 3' $G/vf.json || sed 's/^/# /' $G/vf.json
VF1=$(basename "$(readlink /sys/bus/pci/devices/$PF/virtfn1)")
for i in 0 1 2; do
	check "VF $i is on vfio-pci (readlink driver)" sh -c \
		"test \$(basename \$(readlink /sys/bus/pci/devices/$PF/virtfn$i/driver)) = vfio-pci"
done
check "each VF's /dev/vfio node is there" test -e "/dev/vfio/$(group_of "$VF1")"
check "VF 1's MAC (igbvf's) was pinned as its admin MAC" sh -c "vfline 1 | grep -vq '00:00:00:00:00:00'"
check "VF 0 got the MAC it was given" sh -c "vfline 0 | grep -q '52:54:00:12:34:56'"
check "the engine holds the groups for sriov" sh -c \
	"rpc claims.list | jq -e '[.result.claims[] | select(.owner == \"sriov\")] | length == 3'"
check "the kubelet is offered them under $RES and Allocate answers" /usr/bin/python3 $G/kubelet_check.py $HD/kubelet \
	"$RES" "$VF1" "$(group_of "$VF1")"
check "no VF under the pci module's default name" sh -c \
	"rpc resources.list | jq -e '[.result[] | select(.devices[]?.id == \"$VF1\") | .name] == [\"$RES\"]'"
rpc sriov.configure "{\"pf\": \"$PF\", \"num_vfs\": 2, \"vf_driver\": \"vfio-pci\", \"resource_name\": \"$RES\"}" >$G/vfc.json
check "a count change while VF 1 is allocated is refused" jq -e \
	".error.code == -32005 and (.error.message | test(\"$VF1\\\\) is allocated\"))" $G/vfc.json || sed 's/^/# /' $G/vfc.json
check "nothing changed" sh -c "test \$(cat /sys/bus/pci/devices/$PF/sriov_numvfs) = 3 && test \$(basename \$(readlink /sys/bus/pci/devices/$PF/virtfn1/driver)) = vfio-pci"
check "back to vf_driver default" ctl sriov configure pf="$PF" num_vfs=3 vfs="$VFS"
for i in 0 1 2; do
	check "VF $i is back on igbvf" sh -c \
		"test \$(basename \$(readlink /sys/bus/pci/devices/$PF/virtfn$i/driver)) = igbvf"
done
check "the engine holds nothing for sriov" sh -c \
	"rpc claims.list | jq -e '[.result.claims[] | select(.owner == \"sriov\")] | length == 0'"
check "VF 0's settings are the record's again" sh -c "vfline 0 | grep -q '52:54:00:12:34:56' && vfline 0 | grep -q 'vlan 100, qos 3'"
scenario_end

scenario vfio-count
# Nothing allocated: a count change gives the groups back, then moves the new VFs.
check "3 VFs on vfio-pci again" ctl sriov configure pf="$PF" num_vfs=3 vf_driver=vfio-pci resource_name=$RES
check "3 -> 2 VFs on vfio-pci (the groups given back first)" ctl sriov configure pf="$PF" num_vfs=2 vf_driver=vfio-pci resource_name=$RES
check "2 VFs, both on vfio-pci" sh -c "test \$(cat /sys/bus/pci/devices/$PF/sriov_numvfs) = 2 && \
	test \$(basename \$(readlink /sys/bus/pci/devices/$PF/virtfn0/driver)) = vfio-pci && \
	test \$(basename \$(readlink /sys/bus/pci/devices/$PF/virtfn1/driver)) = vfio-pci"
check "the engine holds exactly those for sriov" sh -c \
	"rpc claims.list | jq -e '[.result.claims[] | select(.owner == \"sriov\")] | length == 2'"
check "hostdevd stops" hd_stop
echo 0 >/sys/bus/pci/devices/$PF/sriov_numvfs
check "hostdevd starts (the VFs reset by hand)" hd_start state-sriov
check "the VFs are made and moved to vfio-pci again" wait_for 40 sh -c \
	"test \$(cat /sys/bus/pci/devices/$PF/sriov_numvfs) = 2 && \
	test \$(basename \$(readlink /sys/bus/pci/devices/$PF/virtfn1/driver)) = vfio-pci && \
	rpc claims.list | jq -e '[.result.claims[] | select(.owner == \"sriov\" and .state == \"claimed\")] | length == 2'"
check "back to 3 VFs on their driver" ctl sriov configure pf="$PF" num_vfs=3 vfs="$VFS"
check "VF 1 is on igbvf" sh -c "test \$(basename \$(readlink /sys/bus/pci/devices/$PF/virtfn1/driver)) = igbvf"
scenario_end

scenario restart
check "hostdevd stops" hd_stop
echo 0 >/sys/bus/pci/devices/$PF/sriov_numvfs
check "the count was reset by hand" test "$(numvfs)" = 0
check "hostdevd starts again" hd_start state-sriov
check "the recorded count is applied again" wait_for 30 sh -c "test \$(cat /sys/bus/pci/devices/$PF/sriov_numvfs) = 3"
check "and the VF settings" wait_for 30 sh -c "vfline 0 | grep -q '52:54:00:12:34:56' && vfline 0 | grep -q 'vlan 100, qos 3'"
check "drift was logged" grep -q "num_vfs drifted" /run/vmtest/hostdevd.log
scenario_end

scenario driver-reload
# igb's removal takes its VFs along; its interface coming back (a net
# uevent) brings the record back while hostdevd runs.
modprobe -r igb
check "igb unloaded: no VFs" sh -c "! test -e /sys/bus/pci/devices/$PF/virtfn0"
modprobe igb
check "the recorded count is applied when the PF's interface returns" wait_for 60 sh -c \
	"test \$(cat /sys/bus/pci/devices/$PF/sriov_numvfs) = 3"
IF=$(ls /sys/bus/pci/devices/$PF/net | head -n1)
cat >$HD/bin/vfline <<EOS
#!/bin/sh
/sbin/ip link show "$IF" | grep "vf \$1 "
EOS
check "and the VF settings ($IF)" wait_for 30 sh -c "vfline 0 | grep -q '52:54:00:12:34:56' && vfline 0 | grep -q 'vlan 100, qos 3'"
check "hostdevd stops cleanly" hd_stop
scenario_end
finish
