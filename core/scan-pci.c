/* SPDX-License-Identifier: MIT */
/* Reading one PCI function's facts from sysfs. */
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

#define PCI_CLASS_BRIDGE_PCI	0x0604
#define PCI_CLASS_BRIDGE_SEMI	0x0609
#define MAX_VFS			4096

static void
warn_errno(struct device *dev, const char *file, int err)
{
	device_warn(dev, file, err == -EINVAL ? "unparsable value" : strerror(-err));
}

/* A hex attribute: absent is fine unless `required`, garbage always warns. */
static int
read_hex_fact(struct device *dev, int dfd, const char *name, unsigned long max, int required)
{
	unsigned long v;
	int err = sysfs_read_hex(dfd, name, max, &v);

	if (err == 0)
		return (int)v;
	if (err != -ENOENT || required)
		warn_errno(dev, name, err);
	return -1;
}

static int
read_revision(struct device *dev, int dfd)
{
	unsigned long v;
	unsigned char byte;
	int err, fd;

	err = sysfs_read_hex(dfd, "revision", 0xff, &v);
	if (err == 0)
		return (int)v;
	if (err != -ENOENT) {
		warn_errno(dev, "revision", err);
		return -1;
	}
	/* Kernels before 4.x have no revision file; lspci then reads config. */
	fd = openat(dfd, "config", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -1;
	if (pread(fd, &byte, 1, 8) == 1)
		err = byte;
	else
		err = -1;
	close(fd);
	return err;
}

/* Basename of a link's target, required to stay inside the root and (when
 * `exists`) to point at something, as realpath-based tools see it. */
static int
read_link_name(const struct fsroot *sys, struct device *dev, int dfd, const char *name,
	       int exists, char *out, size_t size)
{
	char target[1024];
	int err;

	err = fsroot_readlink(sys, dev->syspath, dfd, name, target, sizeof(target));
	if (err == -ENOENT)
		return err;
	if (err < 0) {
		warn_errno(dev, name, err == -EXDEV ? -EXDEV : err);
		return err;
	}
	if (exists && fsroot_exists(sys, target) < 0)
		return -ENOENT;
	snprintf(out, size, "%s", path_basename(target));
	return 0;
}

static void
read_virtfns(const struct fsroot *sys, struct device *dev, int dfd)
{
	struct pci_data *p = &dev->pci;
	size_t n = 0;
	int limit = p->f.sriov_totalvfs > 0 ? p->f.sriov_totalvfs : 0;

	for (int i = 0; i < limit && i < MAX_VFS; i++) {
		char link[24], name[64];
		char **grown;

		snprintf(link, sizeof(link), "virtfn%d", i);
		if (read_link_name(sys, dev, dfd, link, 0, name, sizeof(name)) < 0)
			break;
		if (!pci_address_valid(name)) {
			device_warn(dev, link, "target is not a PCI address");
			continue;
		}
		grown = realloc(p->virtfns, (n + 2) * sizeof(char *));
		if (grown == NULL)
			break;
		p->virtfns = grown;
		p->virtfns[n] = strdup(name);
		if (p->virtfns[n] == NULL)
			break;
		p->virtfns[++n] = NULL;
	}
	p->f.virtfns = (const char *const *)p->virtfns;
}

static void
read_vfio_cdev(struct device *dev, int dfd)
{
	int vfd = openat(dfd, "vfio-dev", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct dirent *de;
	DIR *dir;

	if (vfd < 0)
		return;
	dir = fdopendir(vfd);
	if (dir == NULL) {
		close(vfd);
		return;
	}
	while ((de = readdir(dir)) != NULL) {
		if (strncmp(de->d_name, "vfio", 4) == 0 && de->d_name[4] >= '0' &&
		    de->d_name[4] <= '9') {
			free(dev->pci.vfio_cdev);
			dev->pci.vfio_cdev = strdup(de->d_name);
			break;
		}
	}
	closedir(dir);
	dev->pci.f.vfio_cdev = dev->pci.vfio_cdev;
}

static char *
dup_name(const char *s)
{
	return s ? strdup(s) : NULL;
}

static void
lookup_names(struct names *names, struct pci_data *p)
{
	const struct hdd_pci_facts *f = &p->f;
	char buf[256];

	p->vendor_name = dup_name(names_pci_vendor(names, f->vendor_id, buf, sizeof(buf)));
	p->device_name = dup_name(names_pci_device(names, f->vendor_id, f->device_id, buf,
						   sizeof(buf)));
	p->subsystem_vendor_name = dup_name(names_pci_vendor(names, f->subsystem_vendor_id, buf,
							     sizeof(buf)));
	p->subsystem_device_name = dup_name(names_pci_subsystem(names, f->vendor_id, f->device_id,
								f->subsystem_vendor_id,
								f->subsystem_device_id, buf,
								sizeof(buf)));
	p->class_name = dup_name(names_pci_class(names, f->class_code, buf, sizeof(buf)));
	p->progif_name = dup_name(names_pci_progif(names, f->class_code, buf, sizeof(buf)));
	p->f.vendor_name = p->vendor_name;
	p->f.device_name = p->device_name;
}

/* The upstream bridge: the path component before the device's own, when it is
 * a PCI function (a root bus "pci0000:00" is not). */
static void
find_parent(struct pci_data *p, const char *syspath)
{
	const char *end = strrchr(syspath, '/');
	const char *start;
	char comp[64];
	size_t len;

	if (end == NULL)
		return;
	start = end;
	while (start > syspath && start[-1] != '/')
		start--;
	len = (size_t)(end - start);
	if (len == 0 || len >= sizeof(comp))
		return;
	memcpy(comp, start, len);
	comp[len] = '\0';
	if (pci_address_valid(comp))
		p->parent = strdup(comp);
	p->f.parent = p->parent;
}

/* AER counters: "TOTAL_ERR_FATAL 3" (or _NONFATAL) ends each file. */
static int
read_aer_total(int dfd, const char *name)
{
	char buf[2048], *p;
	long v;

	if (sysfs_read_attr(dfd, name, buf, sizeof(buf)) < 0)
		return -1;
	p = strstr(buf, "TOTAL_ERR_");
	if (p == NULL || (p = strchr(p, ' ')) == NULL || sysfs_parse_int(p, 0, 0x7fffffff, &v) < 0)
		return -1;
	return (int)v;
}

/* driver, iommu_group and physfn: where the device's links point. */
static void
read_links(const struct fsroot *sys, struct device *dev, int dfd)
{
	struct pci_data *p = &dev->pci;
	char name[128];

	if (read_link_name(sys, dev, dfd, "driver", 1, name, sizeof(name)) == 0) {
		p->driver = strdup(name);
		p->f.driver = p->driver;
	}
	if (read_link_name(sys, dev, dfd, "iommu_group", 1, name, sizeof(name)) == 0) {
		long g;

		if (sysfs_parse_int(name, 0, 0x7fffffff, &g) == 0)
			p->f.iommu_group = (int)g;
		else
			device_warn(dev, "iommu_group", "target is not a group number");
	}
	if (read_link_name(sys, dev, dfd, "physfn", 0, name, sizeof(name)) == 0) {
		if (pci_address_valid(name)) {
			p->physfn = strdup(name);
			p->f.physfn = p->physfn;
		} else {
			device_warn(dev, "physfn", "target is not a PCI address");
		}
	}

}

/* SR-IOV counts (and the VFs), boot_vga and the AER totals. */
static void
read_sriov_and_aer(const struct fsroot *sys, struct device *dev, int dfd)
{
	struct pci_data *p = &dev->pci;
	unsigned long v;
	long numa;
	int err, fatal, nonfatal;

	err = sysfs_read_int(dfd, "sriov_totalvfs", 0, MAX_VFS, &numa);
	if (err == 0)
		p->f.sriov_totalvfs = (int)numa;
	else if (err != -ENOENT)
		warn_errno(dev, "sriov_totalvfs", err);
	err = sysfs_read_int(dfd, "sriov_numvfs", 0, MAX_VFS, &numa);
	if (err == 0)
		p->f.sriov_numvfs = (int)numa;
	else if (err != -ENOENT)
		warn_errno(dev, "sriov_numvfs", err);
	if (p->f.sriov_totalvfs > 0)
		read_virtfns(sys, dev, dfd);

	if (sysfs_read_hex(dfd, "boot_vga", 1, &v) == 0)
		p->f.boot_vga = v == 1;
	fatal = read_aer_total(dfd, "aer_dev_fatal");
	nonfatal = read_aer_total(dfd, "aer_dev_nonfatal");
	if (fatal >= 0 || nonfatal >= 0)
		p->f.aer_errors = (fatal > 0 ? fatal : 0) + (nonfatal > 0 ? nonfatal : 0);
}

int
scan_pci_device(const struct fsroot *sys, struct names *names, const char *address,
		struct device **ret)
{
	struct device *dev;
	struct pci_data *p;
	char rel[128], path[1024];
	long numa;
	int dfd, err, cls;

	if (!pci_address_valid(address))
		return -EINVAL;
	snprintf(rel, sizeof(rel), "bus/pci/devices/%s", address);
	err = fsroot_readlink(sys, "bus/pci/devices", -1, address, path, sizeof(path));
	if (err == -EINVAL)		/* a plain directory, as in some hand-made trees */
		snprintf(path, sizeof(path), "%s", rel);
	else if (err < 0)
		return err;

	dev = device_new(HDD_DEV_PCI, address);
	if (dev == NULL)
		return -ENOMEM;
	p = &dev->pci;
	dev->syspath = strdup(path);
	if (dev->syspath == NULL) {
		device_unref(dev);
		return -ENOMEM;
	}
	dfd = fsroot_open_dir(sys, path);
	if (dfd < 0) {
		device_unref(dev);
		return dfd;
	}

	p->f.vendor_id = read_hex_fact(dev, dfd, "vendor", 0xffff, 1);
	p->f.device_id = read_hex_fact(dev, dfd, "device", 0xffff, 1);
	p->f.class_code = read_hex_fact(dev, dfd, "class", 0xffffff, 1);
	p->f.subsystem_vendor_id = read_hex_fact(dev, dfd, "subsystem_vendor", 0xffff, 0);
	p->f.subsystem_device_id = read_hex_fact(dev, dfd, "subsystem_device", 0xffff, 0);
	p->f.revision = read_revision(dev, dfd);

	err = sysfs_read_int(dfd, "numa_node", -1, 65535, &numa);
	if (err == 0)
		p->f.numa_node = (int)numa;
	else if (err != -ENOENT)
		warn_errno(dev, "numa_node", err);

	read_links(sys, dev, dfd);
	read_sriov_and_aer(sys, dev, dfd);
	read_vfio_cdev(dev, dfd);
	close(dfd);

	p->mdev_types = scan_mdev_types(sys, dev->syspath);
	cls = p->f.class_code < 0 ? -1 : p->f.class_code >> 8;
	p->f.is_bridge = cls == PCI_CLASS_BRIDGE_PCI || cls == PCI_CLASS_BRIDGE_SEMI;
	find_parent(p, dev->syspath);
	lookup_names(names, p);
	*ret = dev;
	return 0;
}
