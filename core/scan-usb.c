/* SPDX-License-Identifier: MIT */
/* Reading one USB device's facts from sysfs. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "scan.h"
#include "sysfs.h"

void
scan_sanitize_string(char *s)
{
	unsigned char *in = (unsigned char *)s, *out = (unsigned char *)s;

	while (*in) {
		unsigned char c = *in;
		int len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 :
			  (c & 0xf8) == 0xf0 ? 4 : 0;
		int ok = len > 0;

		for (int i = 1; ok && i < len; i++)
			ok = (in[i] & 0xc0) == 0x80;
		if (!ok) {
			*out++ = '?';
			in++;
			continue;
		}
		if (len == 1 && (c < 0x20 || c == 0x7f)) {
			*out++ = ' ';
			in++;
			continue;
		}
		memmove(out, in, (size_t)len);
		out += len;
		in += len;
	}
	*out = '\0';
}

static char *
read_string(struct device *dev, int dfd, const char *name)
{
	char buf[256];
	int n = sysfs_read_attr(dfd, name, buf, sizeof(buf));

	if (n < 0) {
		if (n != -ENOENT)
			device_warn(dev, name, strerror(-n));
		return NULL;
	}
	scan_sanitize_string(buf);
	return strdup(buf);
}

static int
read_hex(struct device *dev, int dfd, const char *name, unsigned long max, int required)
{
	unsigned long v;
	int err = sysfs_read_hex(dfd, name, max, &v);

	if (err == 0)
		return (int)v;
	if (err != -ENOENT || required)
		device_warn(dev, name, err == -EINVAL ? "unparsable value" : strerror(-err));
	return -1;
}

static int
read_dec(struct device *dev, int dfd, const char *name, long max)
{
	long v;
	int err = sysfs_read_int(dfd, name, 0, max, &v);

	if (err == 0)
		return (int)v;
	device_warn(dev, name, err == -EINVAL ? "unparsable value" : strerror(-err));
	return -1;
}

/* The host controller: the last component of the device path that is a PCI
 * function ("devices/pci0000:00/0000:00:14.0/usb1/1-2" -> 0000:00:14.0). */
static char *
find_controller(const char *syspath)
{
	char *copy = strdup(syspath), *save = NULL, *found = NULL;

	if (copy == NULL)
		return NULL;
	for (char *tok = strtok_r(copy, "/", &save); tok; tok = strtok_r(NULL, "/", &save))
		if (pci_address_valid(tok))
			found = tok;
	found = found ? strdup(found) : NULL;
	free(copy);
	return found;
}

/* Drivers bound to the device's interfaces ("1-2:1.0/driver"), deduplicated. */
static void
read_interface_drivers(const struct fsroot *sys, struct device *dev, int dfd)
{
	struct usb_data *u = &dev->usb;
	size_t plen = strlen(dev->id), n = 0;
	struct dirent *de;
	int fd = dup(dfd);
	DIR *dir;

	if (fd < 0)
		return;
	dir = fdopendir(fd);
	if (dir == NULL) {
		close(fd);
		return;
	}
	while ((de = readdir(dir)) != NULL) {
		char rel[1024], target[1024];
		const char *drv;
		char **grown;
		int dup_found = 0;

		if (strncmp(de->d_name, dev->id, plen) != 0 || de->d_name[plen] != ':')
			continue;
		snprintf(rel, sizeof(rel), "%s/%s", dev->syspath, de->d_name);
		if (fsroot_readlink(sys, rel, -1, "driver", target, sizeof(target)) < 0)
			continue;
		drv = path_basename(target);
		for (size_t i = 0; i < n; i++)
			dup_found |= strcmp(u->interface_drivers[i], drv) == 0;
		if (dup_found)
			continue;
		grown = realloc(u->interface_drivers, (n + 2) * sizeof(char *));
		if (grown == NULL)
			break;
		u->interface_drivers = grown;
		u->interface_drivers[n] = strdup(drv);
		if (u->interface_drivers[n] == NULL)
			break;
		u->interface_drivers[++n] = NULL;
	}
	closedir(dir);
	/* readdir order is arbitrary; keep the list stable for change detection. */
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0 && strcmp(u->interface_drivers[j - 1],
						    u->interface_drivers[j]) > 0; j--) {
			char *t = u->interface_drivers[j];
			u->interface_drivers[j] = u->interface_drivers[j - 1];
			u->interface_drivers[j - 1] = t;
		}
}

int
scan_usb_device(const struct fsroot *sys, struct names *names, const char *port,
		struct device **ret)
{
	struct device *dev;
	struct usb_data *u;
	char path[1024], target[1024], buf[256];
	int dfd, err;

	if (strlen(port) >= sizeof(dev->id) || strchr(port, '/') || port[0] == '.')
		return -EINVAL;
	err = fsroot_readlink(sys, "bus/usb/devices", -1, port, path, sizeof(path));
	if (err == -EINVAL)
		snprintf(path, sizeof(path), "bus/usb/devices/%s", port);
	else if (err < 0)
		return err;
	dfd = fsroot_open_dir(sys, path);
	if (dfd < 0)
		return dfd;
	if (faccessat(dfd, "idVendor", F_OK, AT_SYMLINK_NOFOLLOW) < 0) {
		close(dfd);
		return -ENODEV;
	}
	dev = device_new(HDD_DEV_USB, port);
	if (dev == NULL || (dev->syspath = strdup(path)) == NULL) {
		device_unref(dev);
		close(dfd);
		return -ENOMEM;
	}
	u = &dev->usb;
	u->f.vendor_id = read_hex(dev, dfd, "idVendor", 0xffff, 1);
	u->f.product_id = read_hex(dev, dfd, "idProduct", 0xffff, 1);
	u->f.device_class = read_hex(dev, dfd, "bDeviceClass", 0xff, 0);
	u->f.busnum = read_dec(dev, dfd, "busnum", 0xffff);
	u->f.devnum = read_dec(dev, dfd, "devnum", 0xffff);
	u->manufacturer = read_string(dev, dfd, "manufacturer");
	u->product = read_string(dev, dfd, "product");
	u->serial = read_string(dev, dfd, "serial");
	u->speed = read_string(dev, dfd, "speed");
	err = fsroot_readlink(sys, dev->syspath, dfd, "driver", target, sizeof(target));
	if (err == 0)
		u->driver = strdup(path_basename(target));
	else if (err != -ENOENT)
		device_warn(dev, "driver", strerror(-err));
	read_interface_drivers(sys, dev, dfd);
	close(dfd);

	u->controller = find_controller(dev->syspath);
	u->f.driver = u->driver;
	u->f.controller = u->controller;
	if (names_usb_vendor(names, u->f.vendor_id, buf, sizeof(buf)))
		u->vendor_name = strdup(buf);
	if (names_usb_product(names, u->f.vendor_id, u->f.product_id, buf, sizeof(buf)))
		u->product_name = strdup(buf);
	*ret = dev;
	return 0;
}
