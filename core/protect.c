/* SPDX-License-Identifier: MIT */
/* Devices the host needs: never handed out, whatever the request says. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "conf.h"
#include "device.h"
#include "fsroot.h"
#include "protect.h"
#include "sysfs.h"

/* A directory under the sysfs root as a DIR, or NULL. */
static DIR *
open_sysdir(struct fsroot *sys, const char *rel)
{
	int fd = fsroot_open_dir(sys, rel);
	DIR *dir;

	if (fd < 0)
		return NULL;
	dir = fdopendir(fd);
	if (dir == NULL)
		close(fd);
	return dir;
}

/* Whether the sysfs path `rel` (relative to the root) lies under the PCI
 * function `addr`: one of its components is that address. */
static int
path_has_pci(const char *rel, const char *addr)
{
	size_t n = strlen(addr);

	for (const char *p = rel; (p = strstr(p, addr)) != NULL; p += n)
		if ((p == rel || p[-1] == '/') && (p[n] == '/' || p[n] == '\0'))
			return 1;
	return 0;
}

/* A block device (major:minor) and everything it stacks on (dm, md,
 * partitions): does any of it sit on `addr`? */
static int
block_on_device(struct fsroot *sys, unsigned maj, unsigned min, const char *addr, int depth)
{
	char rel[64], target[1024];
	int found = 0;
	DIR *dir;
	struct dirent *de;

	if (depth > 8)
		return 0;
	snprintf(rel, sizeof(rel), "%u:%u", maj, min);
	if (fsroot_readlink(sys, "dev/block", -1, rel, target, sizeof(target)) < 0)
		return 0;
	if (path_has_pci(target, addr))
		return 1;
	/* dm/md: the devices under it are in slaves/. */
	snprintf(rel, sizeof(rel), "dev/block/%u:%u/slaves", maj, min);
	dir = open_sysdir(sys, rel);
	if (dir == NULL)
		return 0;
	while (!found && (de = readdir(dir)) != NULL) {
		char devrel[512], buf[32];
		unsigned a, b;
		int dfd;

		if (de->d_name[0] == '.')
			continue;
		snprintf(devrel, sizeof(devrel), "%s/%s", rel, de->d_name);
		dfd = fsroot_open_dir(sys, devrel);
		if (dfd < 0)
			continue;
		if (sysfs_read_attr(dfd, "dev", buf, sizeof(buf)) > 0 && sscanf(buf, "%u:%u", &a, &b) == 2)
			found = block_on_device(sys, a, b, addr, depth + 1);
		close(dfd);
	}
	closedir(dir);
	return found;
}

static int
check_mounts(struct fsroot *sys, const char *addr, char *why, size_t whylen)
{
	char line[4096];
	char ppath[4096];
	FILE *f = proc_path(ppath, sizeof(ppath), "self/mountinfo") ? NULL : fopen(ppath, "re");
	int hit = 0;

	if (f == NULL)
		return 0;
	while (!hit && fgets(line, sizeof(line), f)) {
		unsigned maj, min;
		char mnt[1024], src[256] = "?";
		const char *sep;

		/* id parent major:minor root mount-point ... - fstype source opts */
		if (sscanf(line, "%*u %*u %u:%u %*s %1023s", &maj, &min, mnt) != 3 || maj == 0)
			continue;
		sep = strstr(line, " - ");
		if (sep)
			sscanf(sep + 3, "%*s %255s", src);
		if (block_on_device(sys, maj, min, addr, 0)) {
			snprintf(why, whylen, "backs the mounted filesystem %s (%s, %u:%u)", mnt, src,
				 maj, min);
			hit = 1;
		}
	}
	fclose(f);
	if (hit)
		return 1;
	f = proc_path(ppath, sizeof(ppath), "swaps") ? NULL : fopen(ppath, "re");
	if (f == NULL)
		return 0;
	while (!hit && fgets(line, sizeof(line), f)) {
		char path[1024];
		struct stat st;

		if (sscanf(line, "%1023s", path) != 1 || path[0] != '/' || stat(path, &st) < 0 ||
		    !S_ISBLK(st.st_mode))
			continue;
		if (block_on_device(sys, major(st.st_rdev), minor(st.st_rdev), addr, 0)) {
			snprintf(why, whylen, "backs the swap device %s", path);
			hit = 1;
		}
	}
	fclose(f);
	return hit;
}

/* The interfaces under a bond, bridge or VLAN: lower_* links, brif/. */
static int
iface_on_device(struct fsroot *sys, const char *ifname, const char *addr, int depth)
{
	char rel[256], target[1024];
	int found = 0;
	DIR *dir;
	struct dirent *de;

	if (depth > 6 || strchr(ifname, '/') || ifname[0] == '.')
		return 0;
	snprintf(rel, sizeof(rel), "class/net/%s", ifname);
	if (fsroot_readlink(sys, "class/net", -1, ifname, target, sizeof(target)) == 0 &&
	    path_has_pci(target, addr))
		return 1;
	dir = open_sysdir(sys, rel);
	if (dir == NULL)
		return 0;
	while (!found && (de = readdir(dir)) != NULL)
		if (strncmp(de->d_name, "lower_", 6) == 0)
			found = iface_on_device(sys, de->d_name + 6, addr, depth + 1);
	closedir(dir);
	if (found)
		return 1;
	snprintf(rel, sizeof(rel), "class/net/%s/brif", ifname);
	dir = open_sysdir(sys, rel);
	if (dir == NULL)
		return 0;
	while (!found && (de = readdir(dir)) != NULL)
		if (de->d_name[0] != '.')
			found = iface_on_device(sys, de->d_name, addr, depth + 1);
	closedir(dir);
	return found;
}

static int
check_default_route(struct fsroot *sys, const char *addr, char *why, size_t whylen)
{
	char line[512], ifname[64], path[4096];
	FILE *f = proc_path(path, sizeof(path), "net/route") ? NULL : fopen(path, "re");
	int hit = 0;

	if (f) {
		while (!hit && fgets(line, sizeof(line), f)) {
			unsigned long dest, mask;

			if (sscanf(line, "%63s %lx %*x %*x %*d %*d %*d %lx", ifname, &dest, &mask) == 3 &&
			    dest == 0 && mask == 0 && iface_on_device(sys, ifname, addr, 0))
				hit = 1;
		}
		fclose(f);
	}
	f = hit || proc_path(path, sizeof(path), "net/ipv6_route") ? NULL : fopen(path, "re");
	if (f) {
		while (!hit && fgets(line, sizeof(line), f)) {
			char dest[40];
			unsigned plen;

			if (sscanf(line, "%32s %x %*s %*s %*s %*s %*s %*s %*s %63s", dest, &plen, ifname) == 3 &&
			    plen == 0 && strcmp(ifname, "lo") != 0 && iface_on_device(sys, ifname, addr, 0))
				hit = 1;
		}
		fclose(f);
	}
	if (hit)
		snprintf(why, whylen, "carries the default route (interface %s)", ifname);
	return hit;
}

int
protect_check(struct fsroot *sys, const struct config *cfg, const struct device *dev, char *why,
	      size_t whylen)
{
	const struct resource_rule *rule;

	if (dev->cls != HDD_DEV_PCI)
		return 0;
	rule = config_match_exclude(cfg, dev->id, dev->pci.f.vendor_id, dev->pci.f.device_id,
				    dev->pci.f.class_code);
	if (rule) {
		snprintf(why, whylen, "is excluded by the configuration");
		return 1;
	}
	if (check_mounts(sys, dev->id, why, whylen))
		return 1;
	return check_default_route(sys, dev->id, why, whylen);
}
