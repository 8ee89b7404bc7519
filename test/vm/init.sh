#!/bin/busybox sh
# SPDX-License-Identifier: MIT
# The VM's first stage: the host's root (read-only, 9p) under a tmpfs
# overlay becomes the guest's root; the run directory and the modules come
# over 9p too; then stage2.sh of the run directory takes over.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do insmod "/lib/modules/$m" 2>/dev/null; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose hostroot /mnt/lower || {
	echo "init: cannot mount the host root"; poweroff -f; }
mount -t tmpfs tmpfs /mnt/upper
mkdir -p /mnt/upper/u /mnt/upper/w
mount -t overlay overlay -o lowerdir=/mnt/lower,upperdir=/mnt/upper/u,workdir=/mnt/upper/w /newroot
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/run
# /run is the guest's own; /tmp stays the host's (writable through the
# overlay), since the build tree under test may live there.
mount -t tmpfs tmpfs /newroot/run
mkdir -p /newroot/run/vmtest /newroot/lib/modules
mount -t 9p -o trans=virtio,version=9p2000.L modules /newroot/lib/modules
mount -t 9p -o trans=virtio,version=9p2000.L vmtest /newroot/run/vmtest
exec switch_root /newroot /bin/sh /run/vmtest/stage2.sh
