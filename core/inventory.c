/* SPDX-License-Identifier: MIT */
/* The device registry: coldplug scan, per-device refresh, mark-and-sweep resync. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "inventory.h"
#include "log.h"
#include "scan.h"
#include "sysfs.h"

struct group_entry {
	int group;
	struct device *dev;
};

struct inventory {
	const struct fsroot *sys;
	struct names *names;
	inv_event_fn fn;
	void *arg;
	struct device **v;	/* sorted by (cls, id) */
	size_t n, cap;
	unsigned generation;
	long last_resync_usec;
	struct group_entry *groups;	/* sorted by (group, id); rebuilt when dirty */
	size_t ngroups;
	int groups_dirty;
};

static const char *const event_names[INV_EVENT_MAX] = {
	[INV_EVENT_ADD] = "add",
	[INV_EVENT_REMOVE] = "remove",
	[INV_EVENT_CHANGE] = "change",
};

const char *
inv_event_to_string(enum inv_event ev)
{
	return (unsigned)ev < INV_EVENT_MAX ? event_names[ev] : "invalid";
}

int
inventory_new(const struct fsroot *sys, struct names *names, inv_event_fn fn, void *arg,
	      struct inventory **ret)
{
	struct inventory *inv = calloc(1, sizeof(*inv));

	if (inv == NULL)
		return -ENOMEM;
	inv->sys = sys;
	inv->names = names;
	inv->fn = fn;
	inv->arg = arg;
	inv->groups_dirty = 1;
	*ret = inv;
	return 0;
}

void
inventory_free(struct inventory *inv)
{
	if (inv == NULL)
		return;
	for (size_t i = 0; i < inv->n; i++) {
		device_set_state(inv->v[i], DEV_STATE_REMOVED);
		device_unref(inv->v[i]);
	}
	free(inv->v);
	free(inv->groups);
	free(inv);
}

static int
dev_cmp(enum hdd_dev_class cls, const char *id, const struct device *d)
{
	if (cls != d->cls)
		return cls < d->cls ? -1 : 1;
	/* PCI addresses and USB ports compare well as strings only when of equal
	 * length; shorter first keeps "1-10" after "1-9" and wide domains last. */
	size_t a = strlen(id), b = strlen(d->id);
	if (a != b)
		return a < b ? -1 : 1;
	return strcmp(id, d->id);
}

/* Index of the device, or -(insertion point) - 1. */
static long
find_index(const struct inventory *inv, enum hdd_dev_class cls, const char *id)
{
	size_t lo = 0, hi = inv->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = dev_cmp(cls, id, inv->v[mid]);

		if (c == 0)
			return (long)mid;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -(long)lo - 1;
}

struct device *
inventory_find(struct inventory *inv, enum hdd_dev_class cls, const char *id)
{
	long i = find_index(inv, cls, id);

	return i >= 0 ? inv->v[i] : NULL;
}

size_t
inventory_count(const struct inventory *inv)
{
	return inv->n;
}

struct device *
inventory_at(const struct inventory *inv, size_t i)
{
	return i < inv->n ? inv->v[i] : NULL;
}

long
inventory_last_resync_usec(const struct inventory *inv)
{
	return inv->last_resync_usec;
}

static int
insert_at(struct inventory *inv, size_t pos, struct device *dev)
{
	if (inv->n == inv->cap) {
		size_t cap = inv->cap ? inv->cap * 2 : 256;
		struct device **v = realloc(inv->v, cap * sizeof(*v));

		if (v == NULL)
			return -ENOMEM;
		inv->v = v;
		inv->cap = cap;
	}
	memmove(&inv->v[pos + 1], &inv->v[pos], (inv->n - pos) * sizeof(*inv->v));
	inv->v[pos] = dev;
	inv->n++;
	return 0;
}

static void
remove_index(struct inventory *inv, size_t i, const char *source)
{
	struct device *dev = inv->v[i];

	memmove(&inv->v[i], &inv->v[i + 1], (inv->n - i - 1) * sizeof(*inv->v));
	inv->n--;
	inv->groups_dirty = 1;
	device_set_state(dev, DEV_STATE_REMOVED);
	log_info("inventory", "%s %s removed (%s)", dev_class_to_string(dev->cls), dev->id, source);
	if (inv->fn)
		inv->fn(inv->arg, INV_EVENT_REMOVE, dev, NULL, NULL, source);
	device_unref(dev);
}

/* Puts a freshly read device in place of the old one (or adds it) and tells
 * the listener what changed. Takes over the caller's reference. */
static int
commit_device(struct inventory *inv, struct device *dev, const char *source)
{
	long i = find_index(inv, dev->cls, dev->id);
	struct device *old;
	json_t *a, *b, *changed;
	int err;

	dev->mark = inv->generation;
	if (i < 0) {
		err = insert_at(inv, (size_t)(-i - 1), dev);
		if (err < 0) {
			device_unref(dev);
			return err;
		}
		inv->groups_dirty = 1;
		device_set_state(dev, DEV_STATE_PRESENT);
		log_debug("inventory", "%s %s added (%s)", dev_class_to_string(dev->cls), dev->id,
			  source);
		if (dev->warnings && json_array_size(dev->warnings) > 0) {
			char *w = json_dumps(dev->warnings, JSON_COMPACT);
			log_warnx("inventory", "%s %s: listed with problems: %s",
				  dev_class_to_string(dev->cls), dev->id, w ? w : "?");
			free(w);
		}
		if (inv->fn) {
			/* The listener may refresh this very device, which
			 * replaces (and drops) it: hold it for the call. */
			device_ref(dev);
			inv->fn(inv->arg, INV_EVENT_ADD, dev, NULL, NULL, source);
			device_unref(dev);
		}
		return 0;
	}

	old = inv->v[i];
	if (device_facts_equal(old, dev)) {
		/* Nothing new: keep the old object (and whoever holds it). */
		old->mark = inv->generation;
		device_unref(dev);
		return 0;
	}
	a = device_facts_json(old);
	b = device_facts_json(dev);
	changed = (a && b) ? device_facts_diff(a, b) : NULL;
	json_decref(a);
	json_decref(b);
	if (changed != NULL && json_array_size(changed) == 0) {
		/* Nothing new: keep the old object (and whoever holds it). */
		old->mark = inv->generation;
		json_decref(changed);
		device_unref(dev);
		return 0;
	}
	dev->owner = old->owner;
	inv->v[i] = dev;
	inv->groups_dirty = 1;
	device_set_state(dev, DEV_STATE_PRESENT);
	device_set_state(old, DEV_STATE_REMOVED);
	if (inv->fn) {
		device_ref(dev);	/* as above */
		inv->fn(inv->arg, INV_EVENT_CHANGE, dev, old, changed, source);
		device_unref(dev);
	}
	json_decref(changed);
	device_unref(old);
	return 0;
}

static int
scan_one(struct inventory *inv, enum hdd_dev_class cls, const char *id, struct device **ret)
{
	if (cls == HDD_DEV_PCI)
		return scan_pci_device(inv->sys, inv->names, id, ret);
	if (cls == HDD_DEV_MDEV)
		return scan_mdev_device(inv->sys, id, ret);
	return scan_usb_device(inv->sys, inv->names, id, ret);
}

int
inventory_refresh(struct inventory *inv, enum hdd_dev_class cls, const char *id,
		  const char *source)
{
	struct device *dev = NULL;
	int err;

	err = scan_one(inv, cls, id, &dev);
	if (err == -ENOENT || err == -ENODEV || err == -ENOTDIR) {
		long i = find_index(inv, cls, id);

		if (i >= 0)
			remove_index(inv, (size_t)i, source);
		return 0;
	}
	if (err < 0)
		return err;
	return commit_device(inv, dev, source);
}

int
inventory_remove(struct inventory *inv, enum hdd_dev_class cls, const char *id,
		 const char *source)
{
	long i = find_index(inv, cls, id);

	if (i < 0)
		return -ENOENT;
	remove_index(inv, (size_t)i, source);
	return 0;
}

static int
usb_name_valid(const char *name)
{
	if (strncmp(name, "usb", 3) == 0) {
		long bus;
		return sysfs_parse_int(name + 3, 1, 65535, &bus) == 0;
	}
	return usb_port_valid(name);
}

static int
resync_bus(struct inventory *inv, enum hdd_dev_class cls, const char *source)
{
	const char *dirname = cls == HDD_DEV_PCI ? "bus/pci/devices" :
			      cls == HDD_DEV_MDEV ? "bus/mdev/devices" : "bus/usb/devices";
	struct dirent *de;
	DIR *dir;
	int fd;

	fd = fsroot_open_dir(inv->sys, dirname);
	if (fd < 0)
		return fd;
	dir = fdopendir(fd);
	if (dir == NULL) {
		int err = -errno;
		close(fd);
		return err;
	}
	while ((de = readdir(dir)) != NULL) {
		struct device *dev = NULL;
		int err;

		if (de->d_name[0] == '.')
			continue;
		if (cls == HDD_DEV_PCI ? !pci_address_valid(de->d_name) :
		    cls == HDD_DEV_MDEV ? !mdev_uuid_valid(de->d_name) : !usb_name_valid(de->d_name))
			continue;
		err = scan_one(inv, cls, de->d_name, &dev);
		if (err == -ENODEV || err == -ENOENT)
			continue;
		if (err < 0) {
			/* Unreadable now: keep what we knew rather than drop it. */
			struct device *known = inventory_find(inv, cls, de->d_name);

			if (known)
				known->mark = inv->generation;
			log_warnx("inventory", "%s %s: cannot read: %s", dev_class_to_string(cls),
				  de->d_name, strerror(-err));
			continue;
		}
		commit_device(inv, dev, source);
	}
	closedir(dir);

	for (size_t i = inv->n; i-- > 0;) {
		struct device *dev = inv->v[i];

		if (dev->cls == cls && dev->mark != inv->generation)
			remove_index(inv, i, source);
	}
	return 0;
}

int
inventory_resync(struct inventory *inv, const char *source)
{
	struct timespec t0, t1;
	int err, first = 0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	inv->generation++;
	err = resync_bus(inv, HDD_DEV_PCI, source);
	if (err < 0) {
		log_warnx("inventory", "cannot list %s/bus/pci/devices: %s; keeping the PCI inventory",
			  fsroot_path(inv->sys), strerror(-err));
		first = err;
	}
	err = resync_bus(inv, HDD_DEV_USB, source);
	if (err < 0 && err != -ENOENT) {
		log_warnx("inventory", "cannot list %s/bus/usb/devices: %s; keeping the USB inventory",
			  fsroot_path(inv->sys), strerror(-err));
		if (first == 0)
			first = err;
	}
	/* No mdev bus (mdev not loaded) is the common case, not a problem. */
	err = resync_bus(inv, HDD_DEV_MDEV, source);
	if (err < 0 && err != -ENOENT)
		log_warnx("inventory", "cannot list %s/bus/mdev/devices: %s", fsroot_path(inv->sys),
			  strerror(-err));
	clock_gettime(CLOCK_MONOTONIC, &t1);
	inv->last_resync_usec = (t1.tv_sec - t0.tv_sec) * 1000000L +
				(t1.tv_nsec - t0.tv_nsec) / 1000;
	return first;
}

static int
group_cmp(const void *a, const void *b)
{
	const struct group_entry *x = a, *y = b;

	if (x->group != y->group)
		return x->group < y->group ? -1 : 1;
	return dev_cmp(x->dev->cls, x->dev->id, y->dev);
}

static void
rebuild_groups(struct inventory *inv)
{
	size_t n = 0;

	free(inv->groups);
	inv->groups = calloc(inv->n ? inv->n : 1, sizeof(*inv->groups));
	inv->ngroups = 0;
	if (inv->groups == NULL)
		return;
	for (size_t i = 0; i < inv->n; i++) {
		struct device *dev = inv->v[i];

		if (dev->cls == HDD_DEV_PCI && dev->pci.f.iommu_group >= 0) {
			inv->groups[n].group = dev->pci.f.iommu_group;
			inv->groups[n].dev = dev;
			n++;
		}
	}
	qsort(inv->groups, n, sizeof(*inv->groups), group_cmp);
	inv->ngroups = n;
	inv->groups_dirty = 0;
}

size_t
inventory_group_members(struct inventory *inv, int group, struct device **out, size_t max)
{
	size_t lo = 0, hi, count = 0;

	if (group < 0)
		return 0;
	if (inv->groups_dirty)
		rebuild_groups(inv);
	hi = inv->ngroups;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (inv->groups[mid].group < group)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (size_t i = lo; i < inv->ngroups && inv->groups[i].group == group; i++) {
		if (count < max)
			out[count] = inv->groups[i].dev;
		count++;
	}
	return count;
}
