/* SPDX-License-Identifier: MIT */
/* hostdevd device-class module interface: the only header a module includes. */
#ifndef HOSTDEVD_MODULE_H
#define HOSTDEVD_MODULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * ABI version of this header. A module is loaded only when the first field of
 * its descriptor equals the daemon's version; bump it on any change to the
 * structures below.
 */
#define HDD_MODULE_ABI_VERSION 1u

/* Name of the one symbol a module exports: a const struct hdd_module. */
#define HDD_MODULE_SYMBOL "hostdevd_module"

enum hdd_dev_class {
	HDD_DEV_PCI = 0,
	HDD_DEV_USB,
	HDD_DEV_MDEV,
	HDD_DEV_CLASS_MAX
};

enum hdd_log_level {
	HDD_LOG_ERR = 0,
	HDD_LOG_WARN,
	HDD_LOG_INFO,
	HDD_LOG_DEBUG,
	HDD_LOG_LEVEL_MAX
};

/* Facts of one PCI function, as read from sysfs. Strings are never NULL
 * unless documented; "absent" values are -1 or NULL as stated. */
struct hdd_pci_facts {
	char address[16];		/* "0000:3b:00.0" */
	int vendor_id;			/* -1 when unreadable */
	int device_id;			/* -1 when unreadable */
	int subsystem_vendor_id;	/* -1 when absent */
	int subsystem_device_id;	/* -1 when absent */
	int class_code;			/* 24 bits: class, subclass, prog-if; -1 unreadable */
	int revision;			/* -1 when absent */
	const char *driver;		/* NULL when unbound */
	int iommu_group;		/* -1 when none */
	int numa_node;			/* -1 when none */
	const char *physfn;		/* PF address of a VF, NULL otherwise */
	const char *const *virtfns;	/* NULL-terminated list of VF addresses */
	int sriov_totalvfs;		/* -1 when not SR-IOV capable */
	int sriov_numvfs;		/* -1 when not SR-IOV capable */
	bool is_bridge;
	const char *parent;		/* upstream bridge address, NULL at a root bus */
	const char *vfio_cdev;		/* "vfio3" when the device has a vfio cdev, else NULL */
	bool boot_vga;			/* boot_vga reads 1 */
	int aer_errors;			/* AER fatal + non-fatal totals, -1 when absent */
	const char *vendor_name;	/* from pci.ids, NULL when unknown */
	const char *device_name;	/* from pci.ids, NULL when unknown */
};

/* Why a PCI function is never handed to a guest, or NULL: every bridge (base
 * class 06: host bridges, ISA bridges, root ports, PCI-to-PCI bridges) and
 * the boot VGA device (the firmware's console). One rule for the pci
 * module's "blocked" verdict and for the core's claims, so they agree. */
static inline const char *
hdd_pci_never_claimable(const struct hdd_pci_facts *f)
{
	if (f->class_code >= 0 && (f->class_code >> 16) == 0x06)
		return "is a bridge (PCI class 06xx: host bridges, root ports and PCI bridges stay with the host)";
	if (f->boot_vga)
		return "is the boot VGA device (the firmware's console stays with the host)";
	return NULL;
}

/* Facts of one USB device (not interfaces, not root hubs). */
struct hdd_usb_facts {
	char port[32];			/* sysfs name, e.g. "1-2.1" */
	int vendor_id;			/* idVendor, -1 when unreadable */
	int product_id;			/* idProduct, -1 when unreadable */
	int busnum;
	int devnum;
	int device_class;		/* bDeviceClass, -1 when unreadable */
	const char *driver;		/* driver of the device itself ("usb") or NULL */
	const char *controller;		/* PCI address of the host controller, or NULL */
};

/* Facts of one mediated device (/sys/bus/mdev/devices/<uuid>). */
struct hdd_mdev_facts {
	char uuid[40];
	const char *type;		/* "nvidia-745", from the mdev_type link */
	const char *type_name;		/* "NVIDIA A2-2Q", or NULL */
	const char *parent;		/* a PCI address, or a virtual parent's name */
	int iommu_group;		/* -1 when none */
	const char *driver;		/* NULL when unbound */
};

/* What a module sees of a device. Valid only during the call. */
struct hdd_device_view {
	enum hdd_dev_class cls;
	const char *id;			/* PCI address or USB port */
	const struct hdd_pci_facts *pci;	/* set when cls == HDD_DEV_PCI */
	const struct hdd_usb_facts *usb;	/* set when cls == HDD_DEV_USB */
	const struct hdd_mdev_facts *mdev;	/* set when cls == HDD_DEV_MDEV */
};

struct hdd_core;

/* The container part of an Allocate answer, built through the core's ops. */
struct hdd_alloc;

/* Services the core gives a module. Passed to init; valid until fini. */
struct hdd_core_ops {
	uint32_t abi_version;
	void (*log)(struct hdd_core *core, enum hdd_log_level level,
		    const char *module, const char *fmt, ...)
		__attribute__((format(printf, 4, 5)));
	const char *(*node_name)(struct hdd_core *core);
	/* Calls fn for every PCI function in IOMMU group `group` (including the
	 * one asking). Returns the number of members. */
	int (*iommu_group_foreach)(struct hdd_core *core, int group,
				   void (*fn)(const struct hdd_device_view *dev, void *arg),
				   void *arg);
	/* Whether `rel` exists under --dev-root ("vfio/12"). */
	bool (*dev_exists)(struct hdd_core *core, const char *rel);
	/* The kubelet's default resource name for a PCI function, derived from
	 * its pci.ids names ("nvidia.com/GA100_A100_PCIE_40GB"). Returns 0. */
	int (*pci_resource_name)(struct hdd_core *core, const struct hdd_pci_facts *f,
				 char *buf, size_t size);
	/* KubeVirt's variable name for a resource: PREFIX_ + the name upper-
	 * cased with '/' and '.' turned into '_'. Returns 0 or -ENAMETOOLONG. */
	int (*env_name)(const char *prefix, const char *resource, char *buf, size_t size);
	/* Allocate answer builders; each returns 0 or -errno. */
	int (*alloc_env)(struct hdd_alloc *a, const char *name, const char *value);
	int (*alloc_device)(struct hdd_alloc *a, const char *host_path, const char *container_path,
			    const char *permissions);
	int (*alloc_mount)(struct hdd_alloc *a, const char *host_path, const char *container_path,
			   bool read_only);
	/* The resource's policy: hand out /dev/iommu and the vfio cdevs
	 * instead of the group and container nodes. */
	bool (*alloc_prefer_iommufd)(const struct hdd_alloc *a);
};

struct hdd_module {
	uint32_t abi_version;		/* HDD_MODULE_ABI_VERSION; must come first */
	const char *name;		/* short name, [a-z0-9]+ */
	const char *description;
	const char *const *subsystems;	/* udev subsystems it wants, NULL-terminated */

	/* Called once after load. Returns 0 or -errno; *ret_state is passed to
	 * every later hook. */
	int (*init)(const struct hdd_core_ops *ops, struct hdd_core *core, void **ret_state);
	void (*fini)(void *state);

	/* Says whether the module owns a device: a score > 0 claims it (the
	 * highest score wins; ties go to the module loaded first), 0 declines. */
	int (*probe)(void *state, const struct hdd_device_view *dev);

	/* Adds the module's view of a device it owns to `out` (a JSON object
	 * that becomes the device's "module_info" member). Returns 0 or -errno. */
	int (*describe)(void *state, const struct hdd_device_view *dev, json_t *out);

	/* Says whether a device it owns is offered to the kubelet now: returns
	 * 1 and writes its default resource name (the configuration may rename
	 * or withhold it) and its health, or 0. NULL: never advertises. */
	int (*advertise)(void *state, const struct hdd_device_view *dev, char *name, size_t size,
			 bool *healthy);

	/* Fills the answer to one container's Allocate for `n` devices of
	 * `resource` (all healthy, all its own): env, device nodes, mounts.
	 * Returns 0 or -errno (the whole call then fails). */
	int (*allocate)(void *state, const char *resource, const struct hdd_device_view *const *devs,
			size_t n, struct hdd_alloc *alloc);
};

#ifdef __cplusplus
}
#endif

#endif /* HOSTDEVD_MODULE_H */
