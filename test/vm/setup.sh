#!/bin/bash
# SPDX-License-Identifier: MIT
# Prepares the real-kernel test VM under $VM_CACHE (default: the build
# tree's vm-cache): Debian's kernel image (fetched with apt-get download,
# unpacked, depmod'ed), an uncompressed vmlinux (QEMU boots it through PVH,
# faster than the bzImage under TCG) and a busybox initramfs. A second run
# with the cache in place does nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
VM_CACHE=${VM_CACHE:-$here/../../.vm-cache}
mkdir -p "$VM_CACHE"
cd "$VM_CACHE"
[ -f ready ] && [ ready -nt "$here/setup.sh" ] && [ ready -nt "$here/init.sh" ] && exit 0

ver=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: linux-image-\(.*\)$/\1/p' | head -n1)
if [ -z "$ver" ]; then
	apt-get update -qq >/dev/null
	ver=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: linux-image-\(.*\)$/\1/p' | head -n1)
fi
[ -n "$ver" ] || { echo "setup: cannot find Debian's kernel package" >&2; exit 1; }
if [ ! -d "kroot/lib/modules/$ver" ]; then
	rm -rf kroot ./*.deb
	(cd /tmp && apt-get download "linux-image-$ver" >/dev/null 2>&1 && mv linux-image-"$ver"_*.deb "$VM_CACHE/") ||
		apt-get download "linux-image-$ver"
	dpkg -x linux-image-"$ver"_*.deb kroot
	rm -f linux-image-"$ver"_*.deb
	/sbin/depmod -b kroot "$ver"
fi
echo "$ver" >version

# The mtty mdev sample, built out of tree against the matching headers
# (Debian's kernel ships mdev.ko but no samples).
mods="kroot/lib/modules/$ver"
if [ ! -f "$mods/extra/mtty.ko" ]; then
	abi=${ver%-amd64}
	kver=$(dpkg-query -W -f='${Version}' linux-image-amd64 2>/dev/null || true)
	rm -rf mdev-build && mkdir -p mdev-build && cd mdev-build
	(cd /tmp && apt-get download "linux-headers-$ver" "linux-headers-$abi-common" \
		"linux-kbuild-${abi%.*-*}" "linux-source-${abi%.*-*}" >/dev/null 2>&1 &&
		mv /tmp/linux-headers-"$ver"_*.deb /tmp/linux-headers-"$abi"-common_*.deb \
			/tmp/linux-kbuild-*.deb /tmp/linux-source-*.deb "$VM_CACHE/mdev-build/")
	for deb in ./*.deb; do dpkg -x "$deb" root; done
	headers=$PWD/root/usr/src/linux-headers-$ver
	sed -i "s|/usr/src/|$PWD/root/usr/src/|" "$headers/Makefile"
	tar -xJf root/usr/src/linux-source-*.tar.xz --wildcards '*/samples/vfio-mdev/mtty.c'
	mkdir -p mtty && cp ./*/samples/vfio-mdev/mtty.c mtty/ && echo 'obj-m := mtty.o' >mtty/Makefile
	make -s -C "$headers" M="$PWD/mtty" modules >build.log 2>&1 || { cat build.log; exit 1; }
	mkdir -p "../$mods/extra" && cp mtty/mtty.ko "../$mods/extra/"
	cd .. && rm -rf mdev-build
	/sbin/depmod -b kroot "$ver"
	: "${kver:=}"
fi

# vmlinux: the XZ payload of the bzImage.
if [ ! -s vmlinux ]; then
	/usr/bin/python3 - "kroot/boot/vmlinuz-$ver" vmlinux <<'PY'
import lzma, sys
data = open(sys.argv[1], "rb").read()
off = data.find(b"\xfd7zXZ\x00")
if off < 0:
    sys.exit("no XZ payload in the kernel image")
out = lzma.LZMADecompressor().decompress(data[off:])
assert out[:4] == b"\x7fELF", "the payload is not an ELF vmlinux"
open(sys.argv[2], "wb").write(out)
PY
fi

# initramfs: busybox and the modules to mount the host root over 9p.
rm -rf initramfs && mkdir -p initramfs/bin initramfs/lib/modules initramfs/dev initramfs/proc \
	initramfs/sys initramfs/mnt/lower initramfs/mnt/upper initramfs/newroot
cp /bin/busybox initramfs/bin/busybox
for m in virtio_pci 9pnet_virtio 9p overlay; do
	/sbin/modprobe -d kroot -S "$ver" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
done | awk '!seen[$0]++' >modules.list
: >initramfs/modules.order
while read -r ko; do
	cp "$ko" initramfs/lib/modules/
	echo "$(basename "$ko")" >>initramfs/modules.order
done <modules.list
cp "$here/init.sh" initramfs/init
chmod +x initramfs/init
(cd initramfs && find . | cpio -o -H newc 2>/dev/null | gzip -1) >initramfs.cpio.gz
touch ready
echo "vm: kernel $ver ready in $VM_CACHE"
