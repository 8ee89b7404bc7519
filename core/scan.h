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

/* Strips control characters and invalid UTF-8 from a string read from a
 * device (USB strings come from the device itself). In place. */
void scan_sanitize_string(char *s);

#endif
