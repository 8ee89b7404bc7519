/* SPDX-License-Identifier: MIT */
/* Vendor, device and class names: pci.ids through libpci, usb.ids by lookup. */
#ifndef HOSTDEVD_NAMES_H
#define HOSTDEVD_NAMES_H

#include <stddef.h>

struct names;

/* pci_ids/usb_ids may be NULL for the defaults. Never fails for a missing
 * database (lookups then return NULL); returns -ENOMEM only. */
int names_new(const char *pci_ids, const char *usb_ids, struct names **ret);
void names_free(struct names *n);

/* Each returns a pointer to buf, or NULL when the id is not in the database. */
const char *names_pci_vendor(struct names *n, int vendor, char *buf, size_t size);
const char *names_pci_device(struct names *n, int vendor, int device, char *buf, size_t size);
const char *names_pci_subsystem(struct names *n, int vendor, int device, int svendor,
				int sdevice, char *buf, size_t size);
const char *names_pci_class(struct names *n, int class_code, char *buf, size_t size);
const char *names_pci_progif(struct names *n, int class_code, char *buf, size_t size);
/* Lets libpci drop its copy of the name databases; what was looked up is
 * remembered, anything new loads them again. */
void names_trim(struct names *n);

const char *names_usb_vendor(struct names *n, int vendor, char *buf, size_t size);
const char *names_usb_product(struct names *n, int vendor, int product, char *buf, size_t size);

#endif
