/* SPDX-License-Identifier: MIT */
/* Reading sysfs attribute files: strict parsers that tell garbage from absence. */
#ifndef HOSTDEVD_SYSFS_H
#define HOSTDEVD_SYSFS_H

#include <stddef.h>

/* Reads attribute `name` in directory `dirfd` (never following a symlink)
 * into buf, NUL-terminated, trailing whitespace stripped. Returns the length
 * or -errno (-ENOENT missing, -EFBIG longer than the buffer); buf is then "". */
int sysfs_read_attr(int dirfd, const char *name, char *buf, size_t size);

/* Parses a hex number ("0x10de", "10de", "0x030200\n") of at most `max`.
 * Returns 0, or -EINVAL for garbage or a value above max. */
int sysfs_parse_hex(const char *s, unsigned long max, unsigned long *ret);

/* Parses a decimal integer with optional sign in [min, max]. */
int sysfs_parse_int(const char *s, long min, long max, long *ret);

/* Read + parse in one: -ENOENT when absent, -EINVAL for garbage. */
int sysfs_read_hex(int dirfd, const char *name, unsigned long max, unsigned long *ret);
int sysfs_read_int(int dirfd, const char *name, long min, long max, long *ret);

/* Validates a PCI address "dddd:bb:dd.f" (domain may have 4 to 8 hex
 * digits). Returns 1 when valid. */
int pci_address_valid(const char *s);

/* Validates a USB device sysfs name: "<bus>-<port>[.<port>]*" (no ':' — that
 * marks interfaces — and not "usbN"). Returns 1 when valid. */
int usb_port_valid(const char *s);

#endif
