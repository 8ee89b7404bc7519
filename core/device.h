/* SPDX-License-Identifier: MIT */
/* A host device (PCI function or USB device) and its facts. */
#ifndef HOSTDEVD_DEVICE_H
#define HOSTDEVD_DEVICE_H

#include <stdbool.h>
#include <jansson.h>
#include "hostdevd/module.h"

enum dev_state {
	DEV_STATE_NEW = 0,	/* read from sysfs, not yet in the registry */
	DEV_STATE_PRESENT,	/* in the registry */
	DEV_STATE_REMOVED,	/* gone from sysfs; freed when the last reference drops */
	DEV_STATE_MAX
};

struct module;

struct pci_data {
	struct hdd_pci_facts f;
	char *driver, *physfn, *parent, *vfio_cdev;
	char **virtfns;			/* NULL-terminated, never NULL */
	char *vendor_name, *device_name, *subsystem_vendor_name, *subsystem_device_name;
	char *class_name, *progif_name;
	json_t *mdev_types;		/* mdev_supported_types of a parent, or NULL */
};

struct usb_data {
	struct hdd_usb_facts f;
	char *driver, *controller;
	char *manufacturer, *product, *serial, *speed;
	char *vendor_name, *product_name;
	char **interface_drivers;	/* NULL-terminated, never NULL */
};

struct mdev_data {
	struct hdd_mdev_facts f;
	char *type, *type_name, *parent, *driver;
};

struct device {
	enum hdd_dev_class cls;
	char id[48];			/* PCI address, USB port or mdev UUID */
	char *syspath;			/* relative to the sysfs root */
	enum dev_state state;
	int refs;
	unsigned mark;			/* resync generation that last saw it */
	const struct module *owner;	/* module whose probe won, or NULL */
	json_t *warnings;		/* array of "file: problem" strings */
	union {
		struct pci_data pci;
		struct usb_data usb;
		struct mdev_data mdev;
	};
};

struct device *device_new(enum hdd_dev_class cls, const char *id);
struct device *device_ref(struct device *dev);
void device_unref(struct device *dev);

/* The one setter of the lifecycle state; logs the transition. */
void device_set_state(struct device *dev, enum dev_state state);
const char *dev_state_to_string(enum dev_state s);
const char *dev_class_to_string(enum hdd_dev_class c);
int dev_class_from_string(const char *s);

/* Records a problem reading one of the device's files. */
void device_warn(struct device *dev, const char *file, const char *problem);

/* The view handed to modules; valid while dev lives. */
void device_view(const struct device *dev, struct hdd_device_view *view);

/* The device's facts as a new JSON object (no module part). */
json_t *device_facts_json(const struct device *dev);

/* Whether two reads of a device found the same facts (cheap; no JSON). */
bool device_facts_equal(const struct device *a, const struct device *b);

/* Fields whose values differ between two facts objects, as a new array. */
json_t *device_facts_diff(const json_t *old_facts, const json_t *new_facts);

#endif
