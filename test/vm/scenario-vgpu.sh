#!/bin/sh
# SPDX-License-Identifier: MIT
# Real kernel, modules/vgpu (issue 10), with the kernel's mtty sample as the
# mdev parent: vgpu.create makes the mdev, the kubelet stand-in sees the
# type's resource and Allocate hands out its UUID and group node, the VFIO
# API opens it (VFIO_GROUP_GET_DEVICE_FD with the UUID), its removal is
# refused while that process holds it and done after; an mdev removed by
# hand while hostdevd is down is created again, same UUID, at the next start.
. /run/vmtest/lib.sh
G=/run/vmtest
U1=3c6d1f7e-2b9a-4c51-8e0d-7a2f9b4c6e11
U2=6a0e5b2c-9d14-4f37-b8a1-c2e3d4f50622
RES=hostdevd.io/Dual_port_serial

scenario vgpu-mtty
check "the mtty sample loads" modprobe mtty
modprobe vfio_iommu_type1 2>/dev/null
udevadm settle --timeout=20
check "hostdevd starts" hd_start state-vgpu
check "vgpu.types lists mtty and its types" sh -c \
	"rpc vgpu.types '{\"parent\":\"mtty\"}' | jq -e '.result.parents[0] | .flavour == \"mdev\" and (.types | map(.id) | index(\"mtty-2\") != null)'"
check "vgpu.create makes the mdev" sh -c \
	"rpc vgpu.create '{\"parent\":\"mtty\",\"type\":\"mtty-2\",\"uuid\":\"$U1\"}' | jq -e '.result.uuid == \"$U1\" and .result.resource == \"$RES\" and .result.healthy'"
check "it is in sysfs on mtty" sh -c "test -e /sys/bus/mdev/devices/$U1 && test \$(basename \$(readlink /sys/bus/mdev/devices/$U1/mdev_type)) = mtty-2"
GR=$(basename "$(readlink /sys/bus/mdev/devices/$U1/iommu_group)")
check "its group node /dev/vfio/$GR is there" test -c "/dev/vfio/$GR"
cat >/tmp/kubelet_mdev.py <<'EOS'
import os, sys
sys.path.insert(0, os.path.join(os.environ["HOSTDEVD_SRCDIR"], "test", "integration"))
from kubelet import Kubelet
kdir, resource, uuid, group = sys.argv[1:5]
k = Kubelet(kdir)
try:
    p = k.wait_registered(resource, timeout=30)
    print("ListAndWatch:", p.wait_devices(lambda d: (uuid, "Healthy", []) in d, timeout=30))
    resp = p.allocate([uuid]).container_responses[0]
    env, specs = dict(resp.envs), sorted(s.host_path for s in resp.devices)
    print("Allocate:", env, specs)
    assert env == {"MDEV_PCI_RESOURCE_HOSTDEVD_IO_DUAL_PORT_SERIAL": uuid}, env
    assert specs == sorted(["/dev/vfio/vfio", f"/dev/vfio/{group}"]), specs
finally:
    k.stop()
EOS
check "the kubelet sees $RES; Allocate answers the UUID and /dev/vfio/$GR" \
	/usr/bin/python3 /tmp/kubelet_mdev.py $HD/kubelet "$RES" "$U1" "$GR"
# A VFIO user: container, group, VFIO_GROUP_GET_DEVICE_FD with the UUID; held open.
/usr/bin/python3 -c "exec(open('$G/vfio_open.py').read()); print('open', flush=True); import time; time.sleep(120)" \
	"$U1" "$GR" >/tmp/holder.out 2>&1 &
HOLDER=$!
check "the VFIO API opens the mdev" wait_for 30 grep -q '^open$' /tmp/holder.out
cat /tmp/holder.out | sed 's/^/# /'
check "its removal is refused while the process holds it, naming it" sh -c \
	"rpc vgpu.remove '{\"uuid\":\"$U1\"}' | jq -e '.error.code == -32005 and (.error.message | contains(\"$HOLDER\"))'"
check "the mdev is still there" test -e /sys/bus/mdev/devices/$U1
kill $HOLDER
wait $HOLDER 2>/dev/null
check "closed, it is removed" sh -c "rpc vgpu.remove '{\"uuid\":\"$U1\"}' | jq -e '.result.removed'"
check "gone from sysfs" test ! -e /sys/bus/mdev/devices/$U1
check "and from the resources" sh -c "rpc resources.list | jq -e '[.result[] | select(.name == \"$RES\")] | length == 0'"
scenario_end

scenario vgpu-restart
check "create another" sh -c \
	"rpc vgpu.create '{\"parent\":\"mtty\",\"type\":\"Single port serial\",\"uuid\":\"$U2\"}' | jq -e '.result.type == \"mtty-1\"'"
check "hostdevd stops" hd_stop
echo 1 >/sys/bus/mdev/devices/$U2/remove
check "removed by hand" test ! -e /sys/bus/mdev/devices/$U2
check "hostdevd starts again" hd_start state-vgpu
check "the mdev is created again with the same UUID" wait_for 20 test -e /sys/bus/mdev/devices/$U2
check "listed present and healthy" wait_for 20 sh -c \
	"rpc vgpu.list | jq -e '.result.vgpus[] | select(.uuid == \"$U2\") | .present and .healthy and (.busy | not)'"
check "removed through hostdevd" sh -c "rpc vgpu.remove '{\"uuid\":\"$U2\"}' | jq -e '.result.removed'"
scenario_end

check "hostdevd stops cleanly" hd_stop
finish
