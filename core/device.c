/* SPDX-License-Identifier: MIT */
/* A host device (PCI function or USB device) and its facts. */
#include "config.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "log.h"

static const char *const state_names[DEV_STATE_MAX] = {
	[DEV_STATE_NEW] = "new",
	[DEV_STATE_PRESENT] = "present",
	[DEV_STATE_REMOVED] = "removed",
};

static const char *const class_names[HDD_DEV_CLASS_MAX] = {
	[HDD_DEV_PCI] = "pci",
	[HDD_DEV_USB] = "usb",
	[HDD_DEV_MDEV] = "mdev",
};

const char *
dev_state_to_string(enum dev_state s)
{
	return (unsigned)s < DEV_STATE_MAX ? state_names[s] : "invalid";
}

const char *
dev_class_to_string(enum hdd_dev_class c)
{
	return (unsigned)c < HDD_DEV_CLASS_MAX ? class_names[c] : "invalid";
}

int
dev_class_from_string(const char *s)
{
	for (int i = 0; i < HDD_DEV_CLASS_MAX; i++)
		if (strcmp(s, class_names[i]) == 0)
			return i;
	return -EINVAL;
}

struct device *
device_new(enum hdd_dev_class cls, const char *id)
{
	struct device *dev = calloc(1, sizeof(*dev));

	if (dev == NULL)
		return NULL;
	dev->cls = cls;
	dev->refs = 1;
	snprintf(dev->id, sizeof(dev->id), "%s", id);
	if (cls == HDD_DEV_PCI) {
		struct hdd_pci_facts *f = &dev->pci.f;

		snprintf(f->address, sizeof(f->address), "%s", id);
		f->vendor_id = f->device_id = -1;
		f->subsystem_vendor_id = f->subsystem_device_id = -1;
		f->class_code = f->revision = -1;
		f->iommu_group = f->numa_node = -1;
		f->sriov_totalvfs = f->sriov_numvfs = -1;
		f->aer_errors = -1;
		dev->pci.virtfns = calloc(1, sizeof(char *));
		if (dev->pci.virtfns == NULL)
			goto fail;
	} else if (cls == HDD_DEV_MDEV) {
		snprintf(dev->mdev.f.uuid, sizeof(dev->mdev.f.uuid), "%s", id);
		dev->mdev.f.iommu_group = -1;
	} else {
		struct hdd_usb_facts *f = &dev->usb.f;

		snprintf(f->port, sizeof(f->port), "%s", id);
		f->vendor_id = f->product_id = -1;
		f->busnum = f->devnum = f->device_class = -1;
		dev->usb.interface_drivers = calloc(1, sizeof(char *));
		if (dev->usb.interface_drivers == NULL)
			goto fail;
	}
	return dev;
fail:
	free(dev);
	return NULL;
}

struct device *
device_ref(struct device *dev)
{
	dev->refs++;
	return dev;
}

static void
strv_free(char **v)
{
	if (v == NULL)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

static void
device_free(struct device *dev)
{
	if (dev->cls == HDD_DEV_PCI) {
		struct pci_data *p = &dev->pci;

		free(p->driver);
		free(p->physfn);
		free(p->parent);
		free(p->vfio_cdev);
		strv_free(p->virtfns);
		free(p->vendor_name);
		free(p->device_name);
		free(p->subsystem_vendor_name);
		free(p->subsystem_device_name);
		free(p->class_name);
		free(p->progif_name);
		json_decref(p->mdev_types);
	} else if (dev->cls == HDD_DEV_MDEV) {
		free(dev->mdev.type);
		free(dev->mdev.type_name);
		free(dev->mdev.parent);
		free(dev->mdev.driver);
	} else {
		struct usb_data *u = &dev->usb;

		free(u->driver);
		free(u->controller);
		free(u->manufacturer);
		free(u->product);
		free(u->serial);
		free(u->speed);
		free(u->vendor_name);
		free(u->product_name);
		strv_free(u->interface_drivers);
	}
	json_decref(dev->warnings);
	free(dev->syspath);
	free(dev);
}

void
device_unref(struct device *dev)
{
	if (dev == NULL)
		return;
	assert(dev->refs > 0);
	if (--dev->refs == 0)
		device_free(dev);
}

void
device_set_state(struct device *dev, enum dev_state state)
{
	assert((unsigned)state < DEV_STATE_MAX);
	if (dev->state == state)
		return;
	log_debug("device", "%s %s: %s -> %s", dev_class_to_string(dev->cls), dev->id,
		  dev_state_to_string(dev->state), dev_state_to_string(state));
	dev->state = state;
}

void
device_warn(struct device *dev, const char *file, const char *problem)
{
	char line[256];

	if (dev->warnings == NULL) {
		dev->warnings = json_array();
		if (dev->warnings == NULL)
			return;
	}
	snprintf(line, sizeof(line), "%s: %s", file, problem);
	json_array_append_new(dev->warnings, json_string(line));
}

void
device_view(const struct device *dev, struct hdd_device_view *view)
{
	memset(view, 0, sizeof(*view));
	view->cls = dev->cls;
	view->id = dev->id;
	if (dev->cls == HDD_DEV_PCI)
		view->pci = &dev->pci.f;
	else if (dev->cls == HDD_DEV_MDEV)
		view->mdev = &dev->mdev.f;
	else
		view->usb = &dev->usb.f;
}

static json_t *
hex_or_null(int v, int digits)
{
	char buf[16];

	if (v < 0)
		return json_null();
	snprintf(buf, sizeof(buf), "%0*x", digits, v);
	return json_string(buf);
}

static json_t *
str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

static json_t *
strv_json(char *const *v)
{
	json_t *a = json_array();

	for (; a && v && *v; v++)
		json_array_append_new(a, json_string(*v));
	return a;
}

static json_t *
int_or_null(int v)
{
	return v < 0 ? json_null() : json_integer(v);
}

static json_t *
pci_facts_json(const struct device *dev)
{
	const struct pci_data *p = &dev->pci;
	const struct hdd_pci_facts *f = &p->f;
	char group[16];
	json_t *o = json_object();

	if (o == NULL)
		return NULL;
	snprintf(group, sizeof(group), "%d", f->iommu_group);
	json_object_set_new(o, "class", json_string("pci"));
	json_object_set_new(o, "address", json_string(f->address));
	json_object_set_new(o, "vendor_id", hex_or_null(f->vendor_id, 4));
	json_object_set_new(o, "device_id", hex_or_null(f->device_id, 4));
	json_object_set_new(o, "subsystem_vendor_id", hex_or_null(f->subsystem_vendor_id, 4));
	json_object_set_new(o, "subsystem_device_id", hex_or_null(f->subsystem_device_id, 4));
	json_object_set_new(o, "class_id", hex_or_null(f->class_code < 0 ? -1 : f->class_code >> 8, 4));
	json_object_set_new(o, "prog_if", hex_or_null(f->class_code < 0 ? -1 : f->class_code & 0xff, 2));
	json_object_set_new(o, "revision", hex_or_null(f->revision, 2));
	json_object_set_new(o, "vendor_name", str_or_null(p->vendor_name));
	json_object_set_new(o, "device_name", str_or_null(p->device_name));
	json_object_set_new(o, "subsystem_vendor_name", str_or_null(p->subsystem_vendor_name));
	json_object_set_new(o, "subsystem_device_name", str_or_null(p->subsystem_device_name));
	json_object_set_new(o, "class_name", str_or_null(p->class_name));
	json_object_set_new(o, "prog_if_name", str_or_null(p->progif_name));
	json_object_set_new(o, "driver", str_or_null(p->driver));
	json_object_set_new(o, "iommu_group", f->iommu_group < 0 ? json_null() : json_string(group));
	json_object_set_new(o, "numa_node", json_integer(f->numa_node));
	json_object_set_new(o, "physfn", str_or_null(p->physfn));
	json_object_set_new(o, "virtfns", strv_json(p->virtfns));
	json_object_set_new(o, "sriov_totalvfs", int_or_null(f->sriov_totalvfs));
	json_object_set_new(o, "sriov_numvfs", int_or_null(f->sriov_numvfs));
	json_object_set_new(o, "bridge", json_boolean(f->is_bridge));
	json_object_set_new(o, "parent", str_or_null(p->parent));
	json_object_set_new(o, "boot_vga", json_boolean(f->boot_vga));
	json_object_set_new(o, "aer_errors", int_or_null(f->aer_errors));
	json_object_set_new(o, "mdev_types", p->mdev_types ? json_deep_copy(p->mdev_types) : json_array());
	if (p->vfio_cdev) {
		char path[64];

		snprintf(path, sizeof(path), "/dev/vfio/devices/%s", p->vfio_cdev);
		json_object_set_new(o, "vfio_cdev", json_string(path));
	} else {
		json_object_set_new(o, "vfio_cdev", json_null());
	}
	return o;
}

static json_t *
usb_facts_json(const struct device *dev)
{
	const struct usb_data *u = &dev->usb;
	const struct hdd_usb_facts *f = &u->f;
	json_t *o = json_object();

	if (o == NULL)
		return NULL;
	json_object_set_new(o, "class", json_string("usb"));
	json_object_set_new(o, "port", json_string(f->port));
	json_object_set_new(o, "vendor_id", hex_or_null(f->vendor_id, 4));
	json_object_set_new(o, "product_id", hex_or_null(f->product_id, 4));
	json_object_set_new(o, "vendor_name", str_or_null(u->vendor_name));
	json_object_set_new(o, "product_name", str_or_null(u->product_name));
	json_object_set_new(o, "manufacturer", str_or_null(u->manufacturer));
	json_object_set_new(o, "product", str_or_null(u->product));
	json_object_set_new(o, "serial", str_or_null(u->serial));
	json_object_set_new(o, "busnum", int_or_null(f->busnum));
	json_object_set_new(o, "devnum", int_or_null(f->devnum));
	if (f->busnum >= 0 && f->devnum >= 0) {
		char node[40];

		snprintf(node, sizeof(node), "/dev/bus/usb/%03d/%03d", f->busnum, f->devnum);
		json_object_set_new(o, "devnode", json_string(node));
	} else {
		json_object_set_new(o, "devnode", json_null());
	}
	json_object_set_new(o, "device_class", hex_or_null(f->device_class, 2));
	json_object_set_new(o, "speed", str_or_null(u->speed));
	json_object_set_new(o, "driver", str_or_null(u->driver));
	json_object_set_new(o, "interface_drivers", strv_json(u->interface_drivers));
	json_object_set_new(o, "controller", str_or_null(u->controller));
	return o;
}

static json_t *
mdev_facts_json(const struct device *dev)
{
	const struct mdev_data *m = &dev->mdev;
	char group[16];

	snprintf(group, sizeof(group), "%d", m->f.iommu_group);
	return json_pack("{s:s, s:s, s:s?, s:s?, s:s?, s:o, s:s?}", "class", "mdev", "uuid",
			 m->f.uuid, "type", m->type, "type_name", m->type_name, "parent", m->parent,
			 "iommu_group", m->f.iommu_group < 0 ? json_null() : json_string(group),
			 "driver", m->driver);
}

json_t *
device_facts_json(const struct device *dev)
{
	json_t *o = dev->cls == HDD_DEV_PCI ? pci_facts_json(dev) :
		    dev->cls == HDD_DEV_MDEV ? mdev_facts_json(dev) : usb_facts_json(dev);

	if (o == NULL)
		return NULL;
	json_object_set_new(o, "syspath", str_or_null(dev->syspath));
	json_object_set_new(o, "warnings",
			    dev->warnings ? json_deep_copy(dev->warnings) : json_array());
	return o;
}

static bool
str_eq(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

static bool
strv_eq(char *const *a, char *const *b)
{
	for (; *a && *b; a++, b++)
		if (strcmp(*a, *b) != 0)
			return false;
	return *a == NULL && *b == NULL;
}

static bool
warnings_eq(const json_t *a, const json_t *b)
{
	size_t na = a ? json_array_size(a) : 0, nb = b ? json_array_size(b) : 0;

	return na == nb && (na == 0 || json_equal((json_t *)a, (json_t *)b));
}

bool
device_facts_equal(const struct device *a, const struct device *b)
{
	if (a->cls != b->cls || !str_eq(a->syspath, b->syspath) ||
	    !warnings_eq(a->warnings, b->warnings))
		return false;
	if (a->cls == HDD_DEV_PCI) {
		const struct pci_data *x = &a->pci, *y = &b->pci;

		return x->f.vendor_id == y->f.vendor_id && x->f.device_id == y->f.device_id &&
		       x->f.subsystem_vendor_id == y->f.subsystem_vendor_id &&
		       x->f.subsystem_device_id == y->f.subsystem_device_id &&
		       x->f.class_code == y->f.class_code && x->f.revision == y->f.revision &&
		       x->f.iommu_group == y->f.iommu_group && x->f.numa_node == y->f.numa_node &&
		       x->f.sriov_totalvfs == y->f.sriov_totalvfs &&
		       x->f.sriov_numvfs == y->f.sriov_numvfs && x->f.is_bridge == y->f.is_bridge &&
		       x->f.boot_vga == y->f.boot_vga && x->f.aer_errors == y->f.aer_errors &&
		       str_eq(x->driver, y->driver) &&
		       str_eq(x->physfn, y->physfn) && str_eq(x->parent, y->parent) &&
		       str_eq(x->vfio_cdev, y->vfio_cdev) && strv_eq(x->virtfns, y->virtfns) &&
		       str_eq(x->vendor_name, y->vendor_name) &&
		       str_eq(x->device_name, y->device_name) &&
		       str_eq(x->subsystem_vendor_name, y->subsystem_vendor_name) &&
		       str_eq(x->subsystem_device_name, y->subsystem_device_name) &&
		       str_eq(x->class_name, y->class_name) && str_eq(x->progif_name, y->progif_name) &&
		       (x->mdev_types == NULL) == (y->mdev_types == NULL) &&
		       (x->mdev_types == NULL || json_equal(x->mdev_types, y->mdev_types));
	}
	if (a->cls == HDD_DEV_MDEV) {
		const struct mdev_data *x = &a->mdev, *y = &b->mdev;

		return str_eq(x->type, y->type) && str_eq(x->type_name, y->type_name) &&
		       str_eq(x->parent, y->parent) && str_eq(x->driver, y->driver) &&
		       x->f.iommu_group == y->f.iommu_group;
	}
	const struct usb_data *x = &a->usb, *y = &b->usb;

	return x->f.vendor_id == y->f.vendor_id && x->f.product_id == y->f.product_id &&
	       x->f.busnum == y->f.busnum && x->f.devnum == y->f.devnum &&
	       x->f.device_class == y->f.device_class && str_eq(x->driver, y->driver) &&
	       str_eq(x->controller, y->controller) && str_eq(x->manufacturer, y->manufacturer) &&
	       str_eq(x->product, y->product) && str_eq(x->serial, y->serial) &&
	       str_eq(x->speed, y->speed) && str_eq(x->vendor_name, y->vendor_name) &&
	       str_eq(x->product_name, y->product_name) &&
	       strv_eq(x->interface_drivers, y->interface_drivers);
}

json_t *
device_facts_diff(const json_t *old_facts, const json_t *new_facts)
{
	json_t *changed = json_array();
	const char *key;
	json_t *value;

	if (changed == NULL)
		return NULL;
	json_object_foreach((json_t *)new_facts, key, value) {
		json_t *before = json_object_get(old_facts, key);

		if (before == NULL || !json_equal(before, value))
			json_array_append_new(changed, json_string(key));
	}
	json_object_foreach((json_t *)old_facts, key, value) {
		if (json_object_get(new_facts, key) == NULL)
			json_array_append_new(changed, json_string(key));
	}
	return changed;
}
