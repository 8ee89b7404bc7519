#!/bin/sh
# SPDX-License-Identifier: MIT
# Real kernel, modules/usb (issue 12): QEMU's xHCI with a keyboard and a tablet
# that share 0627:0001 (told apart by serial number) and a USB disk. The disk
# mounted is never offered, unmounted it is; a rule makes the tablet a
# resource, the kubelet stand-in registers it and Allocate hands out the
# bus:dev lsusb shows, its node owned by 107:107; a replug through QMP
# (device_del, device_add on the same port) turns it Unhealthy, then Healthy
# with the same id, and the next Allocate has the new bus:dev.
. /run/vmtest/lib.sh
G=/run/vmtest
port_of() { # port_of VID PID [SERIAL]: the USB port of that device
	local d
	for d in /sys/bus/usb/devices/*; do
		[ -f "$d/idVendor" ] || continue
		[ "$(cat "$d/idVendor")" = "$1" ] && [ "$(cat "$d/idProduct")" = "$2" ] || continue
		[ -z "${3:-}" ] || [ "$(cat "$d/serial" 2>/dev/null)" = "$3" ] || continue
		basename "$d"
		return 0
	done
	return 1
}

scenario usb-disk
DISK=$(port_of 46f4 0001)
check "the USB disk is there ($DISK)" test -n "$DISK"
udevadm settle --timeout=30
BLK=$(basename "$(ls -d /sys/bus/usb/devices/$DISK/$DISK:*/host*/target*/*/block/* 2>/dev/null | head -n1)")
check "it is a block device ($BLK)" test -b "/dev/$BLK"
mkfs.ext4 -q -F "/dev/$BLK"
mkdir -p /mnt/usb
check "mounted on /mnt/usb" mount "/dev/$BLK" /mnt/usb
cat >$G/usb.conf <<EOC
{"usb": {"rules": [
  {"name": "kubevirt.io/tablet", "selectors": [{"vendor": "0627", "product": "0001", "serial": "TAB-0001"}]},
  {"name": "kubevirt.io/usbdisk", "selectors": [{"vendor": "46f4", "product": "0001"}]}]}}
EOC
check "hostdevd starts with usb rules" hd_start state-usb --config $G/usb.conf
ctl --json events >$G/usb-events.log 2>&1 &
EV=$!
wait_for 10 sh -c "rpc daemon.status | jq -e '.result.control.subscribers == 1'"
check "the mounted disk is not offered, naming the mount" sh -c \
	"rpc usb.list | jq -e '.result.devices[] | select(.port == \"$DISK\") | .offered == false and (.why | contains(\"/mnt/usb\"))'"
check "devices.get says why" sh -c \
	"rpc devices.get '{\"address\":\"$DISK\"}' | jq -e '.result.module_info | .offered == false and (.why | contains(\"mounted filesystem /mnt/usb\"))'"
check "no usbdisk resource" sh -c "rpc resources.list | jq -e '[.result[] | select(.name == \"kubevirt.io/usbdisk\")] | length == 0'"
umount /mnt/usb
check "unmounted, it is offered" wait_for 20 sh -c \
	"rpc usb.list | jq -e '.result.devices[] | select(.port == \"$DISK\") | .offered == true'"
check "as kubevirt.io/usbdisk, Healthy" wait_for 20 sh -c \
	"rpc resources.list | jq -e '.result[] | select(.name == \"kubevirt.io/usbdisk\") | .devices | length == 1 and .[0].health == \"Healthy\"'"
scenario_end

scenario usb-tablet
KBD=$(port_of 0627 0001 KBD-0001)
TAB=$(port_of 0627 0001 TAB-0001)
check "keyboard ($KBD) and tablet ($TAB) share 0627:0001" sh -c "test -n '$KBD' && test -n '$TAB' && test '$KBD' != '$TAB'"
check "the keyboard is not offered: no rule names it" sh -c \
	"rpc devices.get '{\"address\":\"$KBD\"}' | jq -e '.result.module_info | .offered == false and (.why | contains(\"no usb rule\"))'"
# The kubelet stand-in: registration, Allocate, the replug asked of QEMU
# (want-del/want-add flags for qmp.py), Unhealthy then Healthy. It prints
# PASS/FAIL lines, turned into TAP here.
cat >/tmp/usb_kubelet.py <<'EOP'
import os, subprocess, sys, time
sys.path.insert(0, os.path.join(os.environ["HOSTDEVD_SRCDIR"], "test", "integration"))
from kubelet import Kubelet
G = "/run/vmtest"
RES, ENV = "kubevirt.io/tablet", "USB_RESOURCE_KUBEVIRT_IO_TABLET"
failed = False

def step(ok, what):
    global failed
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    failed |= not ok
    return ok

def tablet_sysfs():
    for d in os.listdir("/sys/bus/usb/devices"):
        p = f"/sys/bus/usb/devices/{d}"
        try:
            if open(f"{p}/serial").read().strip() == "TAB-0001":
                return d, int(open(f"{p}/busnum").read()), int(open(f"{p}/devnum").read())
        except OSError:
            pass
    return None

def flag(name, timeout=120):
    deadline = time.monotonic() + timeout
    while not os.path.exists(f"{G}/{name}"):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {name} from qmp.py")
        time.sleep(0.1)

def allocate(p, dev_id, what):
    resp = p.allocate([dev_id]).container_responses[0]
    env = dict(resp.envs)
    specs = [(s.host_path, s.container_path, s.permissions) for s in resp.devices]
    print(f"# Allocate: {env} {specs}", flush=True)
    port, bus, dev = tablet_sysfs()
    lsusb = subprocess.run(["lsusb", "-s", f"{bus}:{dev}"], capture_output=True, text=True).stdout
    print(f"# lsusb -s {bus}:{dev}: {lsusb.strip()}", flush=True)
    node = f"/dev/bus/usb/{bus:03d}/{dev:03d}"
    step(env == {ENV: f"{bus}:{dev}"}, f"{what}: {ENV}={bus}:{dev}, the tablet's bus:dev in sysfs")
    step("ID 0627:0001" in lsusb, f"{what}: lsusb -s {bus}:{dev} shows 0627:0001")
    step(specs == [(node, node, "mrw")], f"{what}: DeviceSpec {node} mrw")
    st = os.stat(node)
    step((st.st_uid, st.st_gid) == (107, 107), f"{what}: {node} owned by 107:107")
    return f"{bus}:{dev}"

k = Kubelet(sys.argv[1])
try:
    p = k.wait_registered(RES, timeout=30)
    devs = p.wait_devices(lambda d: len(d) == 1 and d[0][1] == "Healthy", timeout=30)
    dev_id = devs[0][0]
    step(dev_id == "0627:0001-TAB-0001", f"registered, one Healthy plugin device {dev_id}")
    old = allocate(p, dev_id, "Allocate")
    open(f"{G}/want-del-tab1", "w").close()
    flag("deleted-tab1")
    p.wait_devices(lambda d: d == [(dev_id, "Unhealthy", [])], timeout=30)
    step(True, "unplugged (QMP device_del): Unhealthy, same id")
    open(f"{G}/want-add-tab1", "w").close()
    flag("added-tab1")
    p.wait_devices(lambda d: d == [(dev_id, "Healthy", [])], timeout=30)
    step(True, "plugged back (QMP device_add, same port): Healthy, same id")
    new = allocate(p, dev_id, "Allocate after the replug")
    step(new != old, f"the new bus:dev {new} is not the old {old}")
    print(f"OLD {old}\nNEW {new}", flush=True)
except Exception as e:
    step(False, f"kubelet stand-in: {e!r}")
finally:
    k.stop()
sys.exit(1 if failed else 0)
EOP
/usr/bin/python3 /tmp/usb_kubelet.py $HD/kubelet >/tmp/usb_kubelet.out 2>&1
echo "# kubelet stand-in exited $?"
while IFS= read -r line; do
	case $line in
	"PASS "*) ok "${line#PASS }" ;;
	"FAIL "*) notok "${line#FAIL }" ;;
	"#"*) echo "$line" ;;
	esac
done </tmp/usb_kubelet.out
grep -q '^PASS the new bus:dev' /tmp/usb_kubelet.out || { notok "the replug flow ran to its end"; sed 's/^/#   /' /tmp/usb_kubelet.out | tail -n 20; }
OLD=$(sed -n 's/^OLD //p' /tmp/usb_kubelet.out)
NEW=$(sed -n 's/^NEW //p' /tmp/usb_kubelet.out)
check "a usb.unplugged event named the old bus:dev ($OLD)" wait_for 10 seen $G/usb-events.log \
	".type == \"usb.unplugged\" and .device == \"0627:0001-TAB-0001\" and .last == \"$OLD\""
check "a usb.replugged event: $OLD -> $NEW" wait_for 10 seen $G/usb-events.log \
	".type == \"usb.replugged\" and .device == \"0627:0001-TAB-0001\" and .old == \"$OLD\" and .new == \"$NEW\""
check "usb.list: the tablet at $NEW, one plugin device, 2 allocations" sh -c \
	"rpc usb.list | jq -e '.result.devices[] | select(.key == \"0627:0001-TAB-0001\") | .bus_dev == \"$NEW\" and .healthy and .allocations == 2'"
kill $EV 2>/dev/null
scenario_end

check "hostdevd stops cleanly" hd_stop
finish
