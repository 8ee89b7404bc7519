/* SPDX-License-Identifier: MIT */
/* Fuzz target: the sysfs parsers and scans. The input describes a sysfs tree
 * (fuzz-tree.h: attribute files, driver/iommu_group/physfn/virtfn links, USB
 * and mdev devices, mdev_supported_types); a full resync reads it the way the
 * daemon does at start, then every device is read again and turned into JSON. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-tree.h"
#include "inventory.h"
#include "log.h"
#include "scan.h"
#include "sysfs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static struct fsroot *sys;
static struct names *names;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_init(HDD_LOG_ERR, 0);
	fuzz_tree_init();
	if (fsroot_new(fuzz_root, &sys) < 0 || names_new(NULL, NULL, &names) < 0)
		abort();
	return 0;
}

/* A line that is not a tree record goes to the string parsers. */
static void
parse_line(void *arg, char *line, size_t len)
{
	unsigned long u;
	long l;

	sysfs_parse_hex(line, 0xffffff, &u);
	sysfs_parse_int(line, -1, 65535, &l);
	pci_address_valid(line);
	usb_port_valid(line);
	mdev_uuid_valid(line);
	scan_sanitize_string(line);
}

static void
read_all(struct inventory *inv)
{
	for (size_t i = 0; i < inventory_count(inv); i++) {
		struct device *dev = inventory_at(inv, i);
		struct hdd_device_view view;
		json_t *facts = device_facts_json(dev);

		device_view(dev, &view);
		if (dev->cls == HDD_DEV_PCI) {
			struct device *members[8];

			inventory_group_members(inv, dev->pci.f.iommu_group, members, 8);
		}
		json_decref(facts);
	}
}

/* A line "--" splits the input: the part before it is the host at start,
 * the part after it what changes then (each device is read again, the
 * uevent path that compares old and new, then a mark-and-sweep resync). */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *split = NULL;
	struct inventory *inv;
	size_t first = size;

	for (size_t i = 0; i + 3 <= size; i++)
		if (memcmp(data + i, "--\n", 3) == 0 && (i == 0 || data[i - 1] == '\n')) {
			split = data + i + 3;
			first = i;
			break;
		}
	fuzz_tree_clear();
	fuzz_sysfs_skeleton();
	fuzz_tree_apply(data, first, parse_line, NULL);
	if (inventory_new(sys, names, NULL, NULL, &inv) < 0)
		return 0;
	inventory_resync(inv, "fuzz");
	read_all(inv);
	if (split) {
		fuzz_tree_apply(split, (size_t)(data + size - split), parse_line, NULL);
		for (size_t i = 0; i < inventory_count(inv); i++) {
			struct device *dev = inventory_at(inv, i);
			char id[sizeof(dev->id)];
			enum hdd_dev_class cls = dev->cls;

			snprintf(id, sizeof(id), "%s", dev->id);
			inventory_refresh(inv, cls, id, "fuzz");
		}
		inventory_resync(inv, "fuzz");
		read_all(inv);
	}
	inventory_free(inv);
	return 0;
}
