/* SPDX-License-Identifier: MIT */
/* Reading one device's facts from sysfs (no libevent, no registry). */
#ifndef HOSTDEVD_SCAN_H
#define HOSTDEVD_SCAN_H

#include "device.h"
#include "fsroot.h"
#include "names.h"

/* Reads PCI function `address` (bus/pci/devices/<address>). Returns 0 with a
 * new device (problems recorded as device warnings), -ENOENT when it is not
 * there, or another -errno when it cannot be read at all. */
int scan_pci_device(const struct fsroot *sys, struct names *names, const char *address,
		    struct device **ret);

/* Reads USB device `port` (bus/usb/devices/<port>). Same contract; -ENODEV
 * when the entry is not a USB device (no idVendor: an interface). */
int scan_usb_device(const struct fsroot *sys, struct names *names, const char *port,
		    struct device **ret);

/* Reads mediated device `uuid` (bus/mdev/devices/<uuid>): parent, type,
 * IOMMU group, driver. Same contract as the others. */
int scan_mdev_device(const struct fsroot *sys, const char *uuid, struct device **ret);

/* The mdev types offered under <dir_rel>/mdev_supported_types, as an array
 * of {id, name, device_api, available_instances}, or NULL when none. */
json_t *scan_mdev_types(const struct fsroot *sys, const char *dir_rel);

/* A lower-case 8-4-4-4-12 UUID. */
int mdev_uuid_valid(const char *s);

/* Strips control characters and invalid UTF-8 from a string read from a
 * device (USB strings come from the device itself). In place. */
void scan_sanitize_string(char *s);

#endif
