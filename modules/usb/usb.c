/* SPDX-License-Identifier: MIT */
/* usb: owns USB devices a VM can take over, and names their resources. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hostdevd/module.h"

#define USB_CLASS_HUB 0x09

struct usb_state {
	const struct hdd_core_ops *ops;
	struct hdd_core *core;
};

static int
usb_init(const struct hdd_core_ops *ops, struct hdd_core *core, const json_t *section,
	 void **ret_state)
{
	struct usb_state *st = calloc(1, sizeof(*st));

	if (st == NULL)
		return -ENOMEM;
	st->ops = ops;
	st->core = core;
	*ret_state = st;
	return 0;
}

static void
usb_fini(void *state)
{
	free(state);
}

/* Root hubs ("usbN") and hubs are the bus itself, not something to hand out. */
static int
usb_probe(void *state, const struct hdd_device_view *dev)
{
	if (dev->cls != HDD_DEV_USB)
		return 0;
	if (strncmp(dev->id, "usb", 3) == 0 || dev->usb->device_class == USB_CLASS_HUB)
		return 0;
	if (dev->usb->vendor_id < 0 || dev->usb->product_id < 0)
		return 0;
	return 10;
}

/* A resource name part from the node name: lower-case [a-z0-9-], as the
 * kubelet accepts, with no leading or trailing '-'. */
static void
node_part(const char *node, char *out, size_t size)
{
	size_t n = 0;

	for (const char *p = node; *p && n + 1 < size; p++) {
		unsigned char c = (unsigned char)tolower((unsigned char)*p);

		out[n++] = (isalnum(c) || c == '-') ? (char)c : '-';
	}
	while (n > 0 && out[n - 1] == '-')
		n--;
	out[n] = '\0';
	while (out[0] == '-')
		memmove(out, out + 1, strlen(out));
}

static int
usb_describe(void *state, const struct hdd_device_view *dev, json_t *out)
{
	struct usb_state *st = state;
	const struct hdd_usb_facts *f = dev->usb;
	char node[64], res[160], env[32];

	node_part(st->ops->node_name(st->core), node, sizeof(node));
	/* One resource per physical device, named as Harvester names them:
	 * kubevirt.io/<node>-<vid>-<pid>-<bus><dev> (3 digits each). The
	 * name part stays within the kubelet's 63 characters. */
	snprintf(res, sizeof(res), "kubevirt.io/%.40s-%04x-%04x-%03d%03d", node[0] ? node : "node",
		 f->vendor_id, f->product_id, f->busnum, f->devnum);
	json_object_set_new(out, "resource_name", json_string(res));
	/* KubeVirt's USB_RESOURCE_* value: "bus:dev" in decimal. */
	snprintf(env, sizeof(env), "%d:%d", f->busnum, f->devnum);
	json_object_set_new(out, "env_value", json_string(env));
	return 0;
}

static const char *const usb_subsystems[] = { "usb", NULL };

__attribute__((visibility("default"))) const struct hdd_module hostdevd_module = {
	HDD_MODULE_HEADER,
	.name = "usb",
	.description = "USB devices for per-device passthrough",
	.subsystems = usb_subsystems,
	.init = usb_init,
	.fini = usb_fini,
	.probe = usb_probe,
	.describe = usb_describe,
};
