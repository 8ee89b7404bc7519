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

# QEMU 10 from bookworm-backports for the emulated igb NIC with SR-IOV
# (scenario-sriov.qemu): downloaded with a private apt configuration and
# unpacked with dpkg -x, nothing installed and the system's sources left
# alone. Optional: without it only scenario-sriov fails.
if [ ! -x qemu10/qemu-system-x86_64 ]; then
	(
		set -e
		rm -rf qemu10 && mkdir -p qemu10/apt/etc/sources.list.d qemu10/apt/etc/preferences.d \
			qemu10/apt/state/lists/partial \
			qemu10/apt/cache/archives/partial qemu10/debs
		echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main" \
			>qemu10/apt/etc/sources.list
		apt_opts=(-o "Dir::Etc=$PWD/qemu10/apt/etc" -o Dir::Etc::sourcelist=sources.list
			-o "Dir::State=$PWD/qemu10/apt/state"
			-o "Dir::Cache=$PWD/qemu10/apt/cache" -o Debug::NoLocking=1 -o APT::Get::List-Cleanup=0)
		apt-get "${apt_opts[@]}" update -qq
		(cd qemu10/debs && apt-get "${apt_opts[@]}" download qemu-system-x86/bookworm-backports \
			qemu-system-common/bookworm-backports qemu-system-data/bookworm-backports \
			qemu-system-modules-spice/bookworm-backports >/dev/null)
		for deb in qemu10/debs/*.deb; do dpkg -x "$deb" qemu10/root; done
		# Firmware for -L: its own data plus SeaBIOS (bios-256k.bin is not in 10's data).
		mkdir -p qemu10/fw
		cp -a qemu10/root/usr/share/qemu/. qemu10/fw/
		cp -n /usr/share/seabios/*.bin qemu10/fw/ 2>/dev/null || true
		cat >qemu10/qemu-system-x86_64 <<'SH'
#!/bin/sh
d=$(cd "$(dirname "$0")" && pwd)
export QEMU_MODULE_DIR="$d/root/usr/lib/x86_64-linux-gnu/qemu"
exec "$d/root/usr/bin/qemu-system-x86_64" -L "$d/fw" "$@"
SH
		chmod +x qemu10/qemu-system-x86_64
		qemu10/qemu-system-x86_64 --version | head -n1
		rm -rf qemu10/debs qemu10/apt
	) || { echo "setup: QEMU 10 from bookworm-backports is not available (scenario-sriov needs it)" >&2; rm -rf qemu10; }
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
