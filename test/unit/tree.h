/* SPDX-License-Identifier: MIT */
/* Building small sysfs trees in a temporary directory for unit tests. */
#ifndef HOSTDEVD_TEST_TREE_H
#define HOSTDEVD_TEST_TREE_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tree_root[64];

static void
tree_mkdirs(const char *rel)
{
	char path[1024];

	snprintf(path, sizeof(path), "%s/%s", tree_root, rel);
	for (char *p = path + strlen(tree_root) + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			mkdir(path, 0755);
			*p = '/';
		}
	}
	mkdir(path, 0755);
}

static void tree_write(const char *rel, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
tree_write(const char *rel, const char *fmt, ...)
{
	char path[1024];
	va_list ap;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tree_root, rel);
	f = fopen(path, "w");
	if (f == NULL)
		return;
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fclose(f);
}

static void
tree_link(const char *rel, const char *target)
{
	char path[1024];

	snprintf(path, sizeof(path), "%s/%s", tree_root, rel);
	unlink(path);
	if (symlink(target, path) < 0)
		perror(path);
}

static void
tree_rm(const char *rel)
{
	char cmd[1200];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s/%s'", tree_root, rel);
	if (system(cmd) != 0)
		perror(cmd);
}

static void
tree_init(void)
{
	snprintf(tree_root, sizeof(tree_root), "/tmp/hostdevd-tree-XXXXXX");
	if (mkdtemp(tree_root) == NULL) {
		perror("mkdtemp");
		exit(99);
	}
}

/* A PCI function on root bus 0000:00 with ids, class, driver and group. */
static void
tree_pci(const char *addr, int vendor, int device, int cls, const char *driver, int group,
	 int numa)
{
	char dev[256], rel[512], target[512];

	snprintf(dev, sizeof(dev), "devices/pci0000:00/%s", addr);
	tree_mkdirs(dev);
	snprintf(rel, sizeof(rel), "%s/vendor", dev);
	tree_write(rel, "0x%04x\n", vendor);
	snprintf(rel, sizeof(rel), "%s/device", dev);
	tree_write(rel, "0x%04x\n", device);
	snprintf(rel, sizeof(rel), "%s/class", dev);
	tree_write(rel, "0x%06x\n", cls);
	snprintf(rel, sizeof(rel), "%s/subsystem_vendor", dev);
	tree_write(rel, "0x%04x\n", vendor);
	snprintf(rel, sizeof(rel), "%s/subsystem_device", dev);
	tree_write(rel, "0x0000\n");
	snprintf(rel, sizeof(rel), "%s/revision", dev);
	tree_write(rel, "0xa1\n");
	snprintf(rel, sizeof(rel), "%s/numa_node", dev);
	tree_write(rel, "%d\n", numa);
	tree_mkdirs("bus/pci/devices");
	snprintf(rel, sizeof(rel), "bus/pci/devices/%s", addr);
	snprintf(target, sizeof(target), "../../../%s", dev);
	tree_link(rel, target);
	if (driver) {
		snprintf(rel, sizeof(rel), "bus/pci/drivers/%s", driver);
		tree_mkdirs(rel);
		snprintf(rel, sizeof(rel), "%s/driver", dev);
		snprintf(target, sizeof(target), "../../../bus/pci/drivers/%s", driver);
		tree_link(rel, target);
	}
	if (group >= 0) {
		snprintf(rel, sizeof(rel), "kernel/iommu_groups/%d/devices", group);
		tree_mkdirs(rel);
		snprintf(rel, sizeof(rel), "%s/iommu_group", dev);
		snprintf(target, sizeof(target), "../../../kernel/iommu_groups/%d", group);
		tree_link(rel, target);
	}
}

#endif
