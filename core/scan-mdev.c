/* SPDX-License-Identifier: MIT */
/* Reading mediated devices and the mdev types their parents offer. */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "scan.h"
#include "sysfs.h"

int
mdev_uuid_valid(const char *s)
{
	static const int dashes[] = { 8, 13, 18, 23 };

	if (strlen(s) != 36)
		return 0;
	for (int i = 0, k = 0; i < 36; i++) {
		if (k < 4 && i == dashes[k]) {
			if (s[i] != '-')
				return 0;
			k++;
		} else if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i])) {
			return 0;
		}
	}
	return 1;
}

json_t *
scan_mdev_types(const struct fsroot *sys, const char *dir_rel)
{
	char rel[1024];
	struct dirent *de;
	json_t *types;
	DIR *dir;
	int fd;

	snprintf(rel, sizeof(rel), "%s/mdev_supported_types", dir_rel);
	fd = fsroot_open_dir(sys, rel);
	if (fd < 0)
		return NULL;
	dir = fdopendir(fd);
	if (dir == NULL) {
		close(fd);
		return NULL;
	}
	types = json_array();
	while ((de = readdir(dir)) != NULL) {
		char buf[256], name[256] = "", api[64] = "";
		long avail = -1;
		int tfd;

		if (de->d_name[0] == '.')
			continue;
		snprintf(buf, sizeof(buf), "%s/%s", rel, de->d_name);
		tfd = fsroot_open_dir(sys, buf);
		if (tfd < 0)
			continue;
		sysfs_read_attr(tfd, "name", name, sizeof(name));
		sysfs_read_attr(tfd, "device_api", api, sizeof(api));
		sysfs_read_int(tfd, "available_instances", 0, 1 << 20, &avail);
		close(tfd);
		scan_sanitize_string(name);
		json_array_append_new(types, json_pack("{s:s, s:s?, s:s?, s:I}", "id", de->d_name,
						       "name", name[0] ? name : NULL, "device_api",
						       api[0] ? api : NULL, "available_instances",
						       (json_int_t)avail));
	}
	closedir(dir);
	/* readdir order is arbitrary: sort by id for stable comparisons. */
	{
		size_t n = json_array_size(types);

		for (size_t i = 1; i < n; i++)
			for (size_t j = i; j > 0; j--) {
				json_t *a = json_array_get(types, j - 1), *b = json_array_get(types, j);

				if (strcmp(json_string_value(json_object_get(a, "id")),
					   json_string_value(json_object_get(b, "id"))) <= 0)
					break;
				json_incref(a);
				json_array_set(types, j - 1, b);
				json_array_set_new(types, j, a);
			}
	}
	return types;
}

int
scan_mdev_device(const struct fsroot *sys, const char *uuid, struct device **ret)
{
	char path[1024], target[1024], parent[256];
	struct device *dev;
	const char *end, *start;
	int dfd, err;

	if (!mdev_uuid_valid(uuid))
		return -EINVAL;
	err = fsroot_readlink(sys, "bus/mdev/devices", -1, uuid, path, sizeof(path));
	if (err < 0)
		return err == -EINVAL ? -ENODEV : err;
	dfd = fsroot_open_dir(sys, path);
	if (dfd < 0)
		return dfd;
	dev = device_new(HDD_DEV_MDEV, uuid);
	if (dev == NULL || (dev->syspath = strdup(path)) == NULL) {
		device_unref(dev);
		close(dfd);
		return -ENOMEM;
	}
	/* The parent is the directory the mdev sits in. */
	end = strrchr(path, '/');
	if (end) {
		start = end;
		while (start > path && start[-1] != '/')
			start--;
		snprintf(parent, sizeof(parent), "%.*s", (int)(end - start), start);
		dev->mdev.parent = strdup(parent);
	}
	if (fsroot_readlink(sys, path, dfd, "mdev_type", target, sizeof(target)) == 0) {
		char name[256];
		int tfd;

		dev->mdev.type = strdup(path_basename(target));
		tfd = fsroot_open_dir(sys, target);
		if (tfd >= 0) {
			if (sysfs_read_attr(tfd, "name", name, sizeof(name)) > 0) {
				scan_sanitize_string(name);
				dev->mdev.type_name = strdup(name);
			}
			close(tfd);
		}
	} else {
		device_warn(dev, "mdev_type", "missing or not a link");
	}
	if (fsroot_readlink(sys, path, dfd, "iommu_group", target, sizeof(target)) == 0) {
		long g;

		if (sysfs_parse_int(path_basename(target), 0, 0x7fffffff, &g) == 0)
			dev->mdev.f.iommu_group = (int)g;
	}
	if (fsroot_readlink(sys, path, dfd, "driver", target, sizeof(target)) == 0)
		dev->mdev.driver = strdup(path_basename(target));
	close(dfd);
	dev->mdev.f.type = dev->mdev.type;
	dev->mdev.f.type_name = dev->mdev.type_name;
	dev->mdev.f.parent = dev->mdev.parent;
	dev->mdev.f.driver = dev->mdev.driver;
	*ret = dev;
	return 0;
}
