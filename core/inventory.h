/* SPDX-License-Identifier: MIT */
/* The device registry: coldplug scan, per-device refresh, mark-and-sweep resync. */
#ifndef HOSTDEVD_INVENTORY_H
#define HOSTDEVD_INVENTORY_H

#include <stddef.h>
#include <jansson.h>

#include "device.h"
#include "fsroot.h"
#include "names.h"

enum inv_event {
	INV_EVENT_ADD = 0,
	INV_EVENT_REMOVE,
	INV_EVENT_CHANGE,
	INV_EVENT_MAX
};

/* Told of every change. `changed` (CHANGE only) lists the fields that
 * differ; `dev` is the device now in the registry (for REMOVE: the one that
 * left, in state REMOVED). The listener may refresh devices, this one too
 * (each change is an event of its own, nested in this one); `dev` and `old`
 * stay valid for the whole call, but `dev` is then in state REMOVED when a
 * newer object has taken its place. */
typedef void (*inv_event_fn)(void *arg, enum inv_event ev, struct device *dev,
			     struct device *old, const json_t *changed, const char *source);

struct inventory;

int inventory_new(const struct fsroot *sys, struct names *names, inv_event_fn fn, void *arg,
		  struct inventory **ret);
void inventory_free(struct inventory *inv);
const char *inv_event_to_string(enum inv_event ev);

/* Re-reads every device; adds, changes and removes what differs. A bus
 * directory that cannot be listed removes nothing. Returns 0 or -errno of
 * the first bus that could not be listed. */
int inventory_resync(struct inventory *inv, const char *source);

/* Re-reads one device; removes it when it is gone. Returns 0 or -errno. */
int inventory_refresh(struct inventory *inv, enum hdd_dev_class cls, const char *id,
		      const char *source);

/* Drops a device without reading sysfs (a remove uevent). */
int inventory_remove(struct inventory *inv, enum hdd_dev_class cls, const char *id,
		     const char *source);

struct device *inventory_find(struct inventory *inv, enum hdd_dev_class cls, const char *id);
size_t inventory_count(const struct inventory *inv);
/* Devices in (class, id) order; NULL past the end. */
struct device *inventory_at(const struct inventory *inv, size_t i);

/* PCI functions in IOMMU group `group`, in address order: fills up to `max`
 * and returns how many there are. */
size_t inventory_group_members(struct inventory *inv, int group, struct device **out,
			       size_t max);

/* Duration of the last full resync in microseconds. */
long inventory_last_resync_usec(const struct inventory *inv);

#endif
