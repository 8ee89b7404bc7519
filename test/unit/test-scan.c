/* SPDX-License-Identifier: MIT */
/* Unit tests: reading PCI and USB devices, and the inventory's resync events. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "inventory.h"
#include "log.h"
#include "scan.h"
#include "tap.h"
#include "tree.h"

static struct names *names;
static struct fsroot *sys;

static void
test_pci_basic(void)
{
	struct device *dev = NULL;

	tree_pci("0000:00:02.0", 0x10de, 0x20f1, 0x030200, "vfio-pci", 12, 1);
	is_int(scan_pci_device(sys, names, "0000:00:02.0", &dev), 0, "scan an A100");
	if (dev == NULL)
		return;
	is_int(dev->pci.f.vendor_id, 0x10de, "vendor id");
	is_int(dev->pci.f.device_id, 0x20f1, "device id");
	is_int(dev->pci.f.class_code, 0x030200, "class code");
	is_int(dev->pci.f.revision, 0xa1, "revision");
	is_str(dev->pci.driver, "vfio-pci", "driver from the driver link");
	is_int(dev->pci.f.iommu_group, 12, "IOMMU group from its link");
	is_int(dev->pci.f.numa_node, 1, "NUMA node");
	is_str(dev->pci.vendor_name, "NVIDIA Corporation", "vendor name from pci.ids");
	ok(dev->pci.device_name && strstr(dev->pci.device_name, "A100") != NULL,
	   "device name from pci.ids names the A100 (%s)", dev->pci.device_name);
	is_str(dev->syspath, "devices/pci0000:00/0000:00:02.0", "syspath resolved inside the root");
	ok(dev->warnings == NULL, "no warnings for a complete device");
	ok(!dev->pci.f.is_bridge, "an endpoint is not a bridge");
	ok(dev->pci.parent == NULL, "no upstream bridge on the root bus");
	device_unref(dev);

	is_int(scan_pci_device(sys, names, "0000:00:09.0", &dev), -ENOENT, "a missing device is -ENOENT");
	is_int(scan_pci_device(sys, names, "../../etc", &dev), -EINVAL, "a bogus address is -EINVAL");
}

static void
test_pci_garbage(void)
{
	struct device *dev = NULL;
	char *w;

	tree_pci("0000:00:03.0", 0x8086, 0x1521, 0x020000, NULL, -1, -1);
	tree_write("devices/pci0000:00/0000:00:03.0/vendor", "not-a-number\n");
	tree_rm("devices/pci0000:00/0000:00:03.0/class");
	tree_write("devices/pci0000:00/0000:00:03.0/numa_node", "\xff\xfe\n");
	tree_link("devices/pci0000:00/0000:00:03.0/driver", "../../../../../../../../../etc");
	is_int(scan_pci_device(sys, names, "0000:00:03.0", &dev), 0,
	       "a device with garbage files is still listed");
	if (dev == NULL)
		return;
	is_int(dev->pci.f.vendor_id, -1, "garbage vendor reads as unknown");
	is_int(dev->pci.f.device_id, 0x1521, "the device id is still read");
	is_int(dev->pci.f.class_code, -1, "missing class reads as unknown");
	ok(dev->pci.driver == NULL, "a driver link leaving the root is not followed");
	w = json_dumps(dev->warnings, JSON_COMPACT);
	ok(w && strstr(w, "vendor: unparsable value"), "warning names the vendor file (%s)", w);
	ok(w && strstr(w, "class: No such file"), "warning names the missing class file");
	ok(w && strstr(w, "numa_node"), "warning names numa_node");
	ok(w && strstr(w, "driver"), "warning names the escaping driver link");
	free(w);
	device_unref(dev);
}

static void
test_pci_sriov(void)
{
	struct device *pf = NULL, *vf = NULL;

	tree_pci("0000:00:04.0", 0x8086, 0x1528, 0x020000, "ixgbe", 20, 0);
	tree_write("devices/pci0000:00/0000:00:04.0/sriov_totalvfs", "63\n");
	tree_write("devices/pci0000:00/0000:00:04.0/sriov_numvfs", "2\n");
	tree_pci("0000:00:04.1", 0x8086, 0x1515, 0x020000, "ixgbevf", 21, 0);
	tree_pci("0000:00:04.2", 0x8086, 0x1515, 0x020000, NULL, 22, 0);
	tree_link("devices/pci0000:00/0000:00:04.0/virtfn0", "../0000:00:04.1");
	tree_link("devices/pci0000:00/0000:00:04.0/virtfn1", "../0000:00:04.2");
	tree_link("devices/pci0000:00/0000:00:04.1/physfn", "../0000:00:04.0");
	tree_link("devices/pci0000:00/0000:00:04.2/physfn", "../0000:00:04.0");
	tree_mkdirs("devices/pci0000:00/0000:00:04.1/vfio-dev/vfio3");

	is_int(scan_pci_device(sys, names, "0000:00:04.0", &pf), 0, "scan an SR-IOV PF");
	is_int(scan_pci_device(sys, names, "0000:00:04.1", &vf), 0, "scan a VF");
	if (pf == NULL || vf == NULL)
		return;
	is_int(pf->pci.f.sriov_totalvfs, 63, "sriov_totalvfs");
	is_int(pf->pci.f.sriov_numvfs, 2, "sriov_numvfs");
	is_str(pf->pci.virtfns[0], "0000:00:04.1", "virtfn0");
	is_str(pf->pci.virtfns[1], "0000:00:04.2", "virtfn1");
	ok(pf->pci.virtfns[2] == NULL, "two VFs listed");
	is_str(vf->pci.physfn, "0000:00:04.0", "the VF's physfn");
	is_str(vf->pci.vfio_cdev, "vfio3", "the VF's vfio cdev");
	is_int(vf->pci.f.sriov_totalvfs, -1, "a VF is not itself SR-IOV capable");
	device_unref(pf);
	device_unref(vf);
}

static void
test_pci_bridge(void)
{
	struct device *dev = NULL;

	tree_pci("0000:00:1c.0", 0x8086, 0xa110, 0x060400, "pcieport", 30, 0);
	tree_mkdirs("devices/pci0000:00/0000:00:1c.0/0000:05:00.0");
	tree_write("devices/pci0000:00/0000:00:1c.0/0000:05:00.0/vendor", "0x15b3\n");
	tree_write("devices/pci0000:00/0000:00:1c.0/0000:05:00.0/device", "0x101b\n");
	tree_write("devices/pci0000:00/0000:00:1c.0/0000:05:00.0/class", "0x020000\n");
	tree_link("bus/pci/devices/0000:05:00.0", "../../../devices/pci0000:00/0000:00:1c.0/0000:05:00.0");
	is_int(scan_pci_device(sys, names, "0000:00:1c.0", &dev), 0, "scan a root port");
	if (dev) {
		ok(dev->pci.f.is_bridge, "class 0604 is a bridge");
		device_unref(dev);
	}
	is_int(scan_pci_device(sys, names, "0000:05:00.0", &dev), 0, "scan a device behind it");
	if (dev) {
		is_str(dev->pci.parent, "0000:00:1c.0", "upstream bridge");
		is_int(dev->pci.f.revision, -1, "no revision file and no config: unknown");
		is_int(dev->pci.f.numa_node, -1, "no numa_node file: -1");
		device_unref(dev);
	}
}

static void
test_usb(void)
{
	struct device *dev = NULL;

	tree_pci("0000:00:14.0", 0x8086, 0xa36d, 0x0c0330, "xhci_hcd", 40, 0);
	tree_mkdirs("devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0");
	tree_write("devices/pci0000:00/0000:00:14.0/usb1/1-2/idVendor", "0951\n");
	tree_write("devices/pci0000:00/0000:00:14.0/usb1/1-2/idProduct", "1666\n");
	tree_write("devices/pci0000:00/0000:00:14.0/usb1/1-2/busnum", "1\n");
	tree_write("devices/pci0000:00/0000:00:14.0/usb1/1-2/devnum", "4\n");
	tree_write("devices/pci0000:00/0000:00:14.0/usb1/1-2/bDeviceClass", "00\n");
	tree_write("devices/pci0000:00/0000:00:14.0/usb1/1-2/product", "DataTraveler\x01 3.0\n");
	tree_mkdirs("bus/usb/devices");
	tree_mkdirs("bus/usb/drivers/usb-storage");
	tree_link("bus/usb/devices/1-2", "../../../devices/pci0000:00/0000:00:14.0/usb1/1-2");
	tree_link("bus/usb/devices/1-2:1.0", "../../../devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0");
	tree_link("devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/driver",
		  "../../../../../../bus/usb/drivers/usb-storage");
	is_int(scan_usb_device(sys, names, "1-2", &dev), 0, "scan a USB stick");
	if (dev) {
		is_int(dev->usb.f.vendor_id, 0x0951, "idVendor");
		is_int(dev->usb.f.product_id, 0x1666, "idProduct");
		is_int(dev->usb.f.busnum, 1, "busnum");
		is_int(dev->usb.f.devnum, 4, "devnum");
		is_str(dev->usb.controller, "0000:00:14.0", "the host controller's PCI address");
		is_str(dev->usb.product, "DataTraveler  3.0", "control characters are replaced");
		is_str(dev->usb.interface_drivers[0], "usb-storage", "interface driver");
		is_str(dev->usb.vendor_name, "Kingston Technology", "vendor name from usb.ids");
		device_unref(dev);
	}
	is_int(scan_usb_device(sys, names, "1-2:1.0", &dev), -ENODEV, "an interface is not a device");
}

struct counts {
	int add, remove, change;
	char last_changed[256];
};

static void
count_cb(void *arg, enum inv_event ev, struct device *dev, struct device *old,
	 const json_t *changed, const char *source)
{
	struct counts *c = arg;

	if (ev == INV_EVENT_ADD)
		c->add++;
	else if (ev == INV_EVENT_REMOVE)
		c->remove++;
	else {
		char *s = json_dumps(changed, JSON_COMPACT);
		c->change++;
		snprintf(c->last_changed, sizeof(c->last_changed), "%s", s ? s : "");
		free(s);
	}
}

static void
test_inventory(void)
{
	struct counts c = { 0 };
	struct inventory *inv;
	struct device *members[8];
	size_t n;

	is_int(inventory_new(sys, names, count_cb, &c, &inv), 0, "new inventory");
	is_int(inventory_resync(inv, "test"), 0, "first resync");
	ok(c.add >= 9, "coldplug adds every device (%d)", c.add);
	is_int(c.remove + c.change, 0, "nothing removed or changed at coldplug");
	ok(inventory_find(inv, HDD_DEV_USB, "1-2") != NULL, "USB device in the inventory");
	ok(inventory_find(inv, HDD_DEV_USB, "1-2:1.0") == NULL, "interfaces are not");

	memset(&c, 0, sizeof(c));
	is_int(inventory_resync(inv, "test"), 0, "second resync");
	is_int(c.add + c.remove + c.change, 0, "an unchanged tree gives no events");

	tree_link("devices/pci0000:00/0000:00:04.2/driver", "../../../bus/pci/drivers/ixgbe");
	tree_rm("bus/pci/devices/0000:00:02.0");
	memset(&c, 0, sizeof(c));
	is_int(inventory_resync(inv, "test"), 0, "resync after a bind and a removal");
	is_int(c.change, 1, "the bind is one change");
	ok(strstr(c.last_changed, "driver") != NULL, "the change names the driver field (%s)", c.last_changed);
	is_int(c.remove, 1, "the removal is swept");
	ok(inventory_find(inv, HDD_DEV_PCI, "0000:00:02.0") == NULL, "removed device is gone");

	tree_pci("0000:00:05.0", 0x8086, 0x1521, 0x020000, NULL, 20, 0);
	n = inventory_group_members(inv, 20, members, 8);
	is_int(n, 1, "group 20 has one member before refresh");
	memset(&c, 0, sizeof(c));
	is_int(inventory_refresh(inv, HDD_DEV_PCI, "0000:00:05.0", "test"), 0, "refresh one new device");
	is_int(c.add, 1, "refresh adds it");
	n = inventory_group_members(inv, 20, members, 8);
	is_int(n, 2, "group 20 now has two members");
	tree_rm("devices/pci0000:00/0000:00:05.0");
	is_int(inventory_refresh(inv, HDD_DEV_PCI, "0000:00:05.0", "test"), 0, "refresh a vanished device");
	is_int(c.remove, 1, "refresh removes it");

	/* An unlistable bus removes nothing. */
	tree_rm("bus/pci");
	memset(&c, 0, sizeof(c));
	ok(inventory_resync(inv, "test") < 0, "resync reports the unlistable bus");
	is_int(c.remove, 0, "and keeps the PCI inventory");
	inventory_free(inv);
}

/* A listener that reacts to a device's event by refreshing that device again
 * (a claim verifying a driver change does): the first event's device must
 * stay valid for the rest of its call. */
struct nested {
	struct inventory *inv;
	int events;
	char seen[32];
};

static void
nested_cb(void *arg, enum inv_event ev, struct device *dev, struct device *old,
	  const json_t *changed, const char *source)
{
	struct nested *n = arg;

	if (strcmp(dev->id, "0000:00:06.0") != 0 || n->events++ > 0)
		return;
	tree_link("devices/pci0000:00/0000:00:06.0/driver", "../../../bus/pci/drivers/vfio-pci");
	inventory_refresh(n->inv, HDD_DEV_PCI, dev->id, "nested");
	/* Read after the nested refresh replaced it (ASan: use after free
	 * when the inventory did not hold it for the call). */
	snprintf(n->seen, sizeof(n->seen), "%s", dev->id);
}

static void
test_inventory_nested_refresh(void)
{
	struct nested n = { 0 };
	struct device *now;

	is_int(inventory_new(sys, names, nested_cb, &n, &n.inv), 0, "new inventory (nested)");
	tree_pci("0000:00:06.0", 0x8086, 0x1521, 0x020000, "igb", 60, 0);
	is_int(inventory_refresh(n.inv, HDD_DEV_PCI, "0000:00:06.0", "test"), 0,
	       "a listener may refresh the device of its event");
	is_int(n.events, 2, "the nested refresh is an event of its own");
	is_str(n.seen, "0000:00:06.0", "the first event's device stayed valid through it");
	now = inventory_find(n.inv, HDD_DEV_PCI, "0000:00:06.0");
	ok(now && now->pci.driver && strcmp(now->pci.driver, "vfio-pci") == 0,
	   "the inventory holds the newest facts");
	inventory_free(n.inv);
	tree_rm("devices/pci0000:00/0000:00:06.0");
	tree_rm("bus/pci/devices/0000:00:06.0");
}

int
main(void)
{
	log_init(HDD_LOG_ERR, 0);
	tree_init();
	if (names_new(NULL, NULL, &names) < 0 || (tree_mkdirs("bus/pci/devices"), fsroot_new(tree_root, &sys)) < 0)
		return 99;
	test_pci_basic();
	test_pci_garbage();
	test_pci_sriov();
	test_pci_bridge();
	test_usb();
	test_inventory_nested_refresh();
	test_inventory();
	fsroot_free(sys);
	names_free(names);
	tree_rm("");
	return tap_done();
}
