/* SPDX-License-Identifier: MIT */
/* usb: the module's configuration and what its files share. */
#ifndef HOSTDEVD_MODULE_USB_H
#define HOSTDEVD_MODULE_USB_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

#define USB_MAX_SELECTORS 16		/* devices in one plugin device */
#define USB_SERIAL_MAX 128
#define USB_PORT_MAX 32
#define USB_RESOURCE_MAX 128
#define USB_DEFAULT_UID 107		/* KubeVirt's qemu user (util.NonRootUID) */

/* One selector: a rule's (vendor and product required) or an exclude
 * entry's (any field may be absent: -1 or ""). */
struct usb_selector {
	int vendor;
	int product;
	char serial[USB_SERIAL_MAX];
	char port[USB_PORT_MAX];
};

/* One rule: a device of each selector together form one plugin device. */
struct usb_rule {
	char name[USB_RESOURCE_MAX];
	struct usb_selector sel[USB_MAX_SELECTORS];
	size_t nsel;
};

struct usb_conf {
	struct usb_rule *rules;
	size_t nrules;
	struct usb_selector *exclude;
	size_t nexclude;
	bool harvester;			/* unlisted: "harvester" (default "ignore") */
	unsigned uid, gid;		/* owner of an allocated node, 107:107 */
};

/* Checks a `usb` section (NULL: none); -EINVAL with why naming the key. */
int usb_conf_check(const json_t *section, char *why, size_t whylen);
/* Parses a checked section into c (zeroed first); 0 or -errno. */
int usb_conf_parse(const json_t *section, struct usb_conf *c, char *why, size_t whylen);
void usb_conf_clear(struct usb_conf *c);

/* Whether a device (serial "" when it has none) matches a selector. */
bool usb_selector_match(const struct usb_selector *s, int vendor, int product, const char *serial,
			const char *port);

#endif /* HOSTDEVD_MODULE_USB_H */
