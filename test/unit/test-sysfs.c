/* SPDX-License-Identifier: MIT */
/* Unit tests: path normalisation, root-confined opens, attribute parsers. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fsroot.h"
#include "sysfs.h"
#include "tap.h"

static void
write_file(const char *dir, const char *name, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

static void
test_normalize(void)
{
	char out[256];

	is_int(path_join_normalize("bus/pci/devices", "../../../devices/pci0000:00/0000:00:01.0",
				   out, sizeof(out)), 0, "join a sysfs device link");
	is_str(out, "devices/pci0000:00/0000:00:01.0", "the link resolves inside the root");
	is_int(path_join_normalize("devices/pci0000:00/0000:00:01.0", "../../../bus/pci/drivers/vfio-pci",
				   out, sizeof(out)), 0, "join a driver link");
	is_str(out, "bus/pci/drivers/vfio-pci", "driver link target");
	is_int(path_join_normalize("bus/pci/devices", "../../../../etc/passwd", out, sizeof(out)),
	       -EXDEV, "a link climbing above the root is refused");
	is_int(path_join_normalize("a", "/etc/passwd", out, sizeof(out)), -EXDEV,
	       "an absolute link target is refused");
	is_int(path_join_normalize("a/./b", "./c//d/..", out, sizeof(out)), 0, "dots and doubled slashes");
	is_str(out, "a/b/c", "dots and doubled slashes are folded");
	is_int(path_join_normalize("", "xy", out, 2), -ENAMETOOLONG, "too small an output buffer");
	is_str(path_basename("a/b/c"), "c", "basename of a path");
	is_str(path_basename("c"), "c", "basename without a slash");
}

static void
test_parsers(void)
{
	unsigned long v;
	long i;

	is_int(sysfs_parse_hex("0x10de\n", 0xffff, &v), 0, "hex with 0x and newline");
	is_int(v, 0x10de, "hex value");
	is_int(sysfs_parse_hex("030200", 0xffffff, &v), 0, "hex without 0x");
	is_int(v, 0x030200, "class value");
	is_int(sysfs_parse_hex("garbage", 0xffff, &v), -EINVAL, "garbage is refused");
	is_int(sysfs_parse_hex("0x", 0xffff, &v), -EINVAL, "bare 0x is refused");
	is_int(sysfs_parse_hex("0x10000", 0xffff, &v), -EINVAL, "a value above the maximum is refused");
	is_int(sysfs_parse_hex("0x10de zz", 0xffff, &v), -EINVAL, "trailing junk is refused");
	is_int(sysfs_parse_int("-1\n", -1, 100, &i), 0, "numa_node -1");
	is_int(i, -1, "negative value");
	is_int(sysfs_parse_int("", 0, 10, &i), -EINVAL, "empty is refused");
	is_int(sysfs_parse_int("12a", 0, 100, &i), -EINVAL, "trailing letters are refused");
	is_int(sysfs_parse_int("99999999999999999999", 0, 100, &i), -EINVAL, "overflow is refused");

	ok(pci_address_valid("0000:3b:00.0"), "a PCI address");
	ok(pci_address_valid("10000:00:00.7"), "a wide PCI domain (VMD)");
	ok(!pci_address_valid("0000:3b:00.8"), "function 8 is not valid");
	ok(!pci_address_valid("0000:3B:00.0"), "upper-case hex is not how sysfs writes it");
	ok(!pci_address_valid("0000:3b:00.0/../x"), "trailing path");
	ok(!pci_address_valid("3b:00.0"), "no domain");
	ok(usb_port_valid("1-2"), "a USB port");
	ok(usb_port_valid("3-1.4.2"), "a USB port behind hubs");
	ok(!usb_port_valid("1-2:1.0"), "an interface is not a device");
	ok(!usb_port_valid("usb1"), "a root hub name is not a port");
	ok(!usb_port_valid("1-"), "empty port");
}

static void
test_files(void)
{
	char dir[] = "/tmp/hostdevd-test-XXXXXX";
	char buf[16], out[256], sub[600];
	struct fsroot *r;
	unsigned long v;
	int dfd, fd;

	if (mkdtemp(dir) == NULL) {
		ok(0, "mkdtemp");
		return;
	}
	write_file(dir, "vendor", "0x8086\n");
	write_file(dir, "garbage", "\x01\x02zz\n");
	write_file(dir, "long", "0123456789abcdefghijklmnopqrstuvwxyz\n");
	snprintf(sub, sizeof(sub), "%s/sub", dir);
	mkdir(sub, 0755);
	if (symlink("../vendor", (snprintf(out, sizeof(out), "%s/sub/link", dir), out)) < 0)
		ok(0, "symlink");
	if (symlink("../../../../../../../..", (snprintf(out, sizeof(out), "%s/escape", dir), out)) < 0)
		ok(0, "symlink");
	if (symlink("/etc", (snprintf(out, sizeof(out), "%s/abs", dir), out)) < 0)
		ok(0, "symlink");

	is_int(fsroot_new(dir, &r), 0, "open a root");
	dfd = fsroot_open_dir(r, "");
	ok(dfd >= 0, "open the root itself");
	is_int(sysfs_read_hex(dfd, "vendor", 0xffff, &v), 0, "read a hex attribute");
	is_int(v, 0x8086, "its value");
	is_int(sysfs_read_hex(dfd, "missing", 0xffff, &v), -ENOENT, "a missing attribute is -ENOENT");
	is_int(sysfs_read_hex(dfd, "garbage", 0xffff, &v), -EINVAL, "garbage is -EINVAL");
	is_int(sysfs_read_attr(dfd, "long", buf, sizeof(buf)), -EFBIG, "an over-long value is -EFBIG");
	is_int(sysfs_read_hex(dfd, "sub/link", 0xffff, &v), -EINVAL, "an attribute that is a symlink is refused");
	close(dfd);

	fd = fsroot_open_dir(r, "escape");
	is_int(fd, -EXDEV, "a symlink leaving the root is not followed");
	if (fd >= 0)
		close(fd);
	fd = fsroot_open_dir(r, "abs");
	is_int(fd, -EXDEV, "an absolute symlink is not followed");
	if (fd >= 0)
		close(fd);
	fd = fsroot_open_dir(r, "../");
	is_int(fd, -EXDEV, "a relative path above the root is refused");
	if (fd >= 0)
		close(fd);
	is_int(fsroot_readlink(r, "sub", -1, "link", out, sizeof(out)), 0, "read a link inside the root");
	is_str(out, "vendor", "the link's target relative to the root");
	is_int(fsroot_readlink(r, "", -1, "escape", out, sizeof(out)), -EXDEV,
	       "a link pointing out of the root is reported");
	is_int(fsroot_readlink(r, "", -1, "vendor", out, sizeof(out)), -EINVAL,
	       "a file that is not a link is -EINVAL");
	ok(fsroot_exists(r, "sub") == 0 && fsroot_exists(r, "nope") == -ENOENT, "existence checks");
	fsroot_free(r);
	is_int(fsroot_new("/nonexistent/hostdevd", &r), -ENOENT, "a missing root is an error");

	snprintf(out, sizeof(out), "rm -rf '%s'", dir);
	if (system(out) != 0)
		ok(0, "cleanup");
}

int
main(void)
{
	test_normalize();
	test_parsers();
	test_files();
	return tap_done();
}
