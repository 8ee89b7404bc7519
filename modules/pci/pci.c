/* SPDX-License-Identifier: MIT */
/* pci: owns passthrough-capable PCI functions and judges their IOMMU groups. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hostdevd/module.h"
#include "pci.h"

#define PCI_BASE_CLASS_BRIDGE 0x06

static int
pci_init(const struct hdd_core_ops *ops, struct hdd_core *core, const json_t *section,
	 void **ret_state)
{
	struct pci_state *st = calloc(1, sizeof(*st));

	if (st == NULL)
		return -ENOMEM;
	st->ops = ops;
	st->core = core;
	*ret_state = st;
	return 0;
}

static void
pci_fini(void *state)
{
	pci_claims_free(state);
	free(state);
}

static int
pci_start(void *state)
{
	return pci_claims_start(state);
}

static void
pci_stop(void *state)
{
	pci_claims_stop(state);
}

static void
pci_device_event(void *state, enum hdd_device_event ev, const struct hdd_device_view *dev)
{
	pci_claims_device_event(state, ev, dev);
}

/* Bridges (host, ISA, PCI-to-PCI...) are plumbing, never handed to a guest. */
static int
pci_probe(void *state, const struct hdd_device_view *dev)
{
	if (dev->cls != HDD_DEV_PCI || dev->pci->class_code < 0)
		return 0;
	if ((dev->pci->class_code >> 16) == PCI_BASE_CLASS_BRIDGE)
		return 0;
	return 10;
}

/* Drivers that leave a group member harmless to a VFIO user (the kernel's
 * viability rule: vfio, pci-stub or no driver; bridges don't count). */
static int
driver_vfio_safe(const char *driver)
{
	return driver == NULL || strcmp(driver, "vfio-pci") == 0 ||
	       strcmp(driver, "pci-stub") == 0 || strncmp(driver, "vfio-pci-", 9) == 0 ||
	       strstr(driver, "_vfio_pci") != NULL;
}

struct group_walk {
	json_t *members;
	int viable;
	const char *self;
	json_t *blockers;
};

static void
group_member_cb(const struct hdd_device_view *m, void *arg)
{
	struct group_walk *w = arg;
	const struct hdd_pci_facts *f = m->pci;
	int safe = f->is_bridge || driver_vfio_safe(f->driver);

	json_array_append_new(w->members,
			      json_pack("{s:s, s:s?, s:b}", "address", f->address, "driver",
					f->driver, "bridge", f->is_bridge));
	if (!safe) {
		w->viable = 0;
		if (strcmp(f->address, w->self) != 0) {
			char line[96];

			snprintf(line, sizeof(line), "%s (%s)", f->address, f->driver);
			json_array_append_new(w->blockers, json_string(line));
		}
	}
}

static int
pci_describe(void *state, const struct hdd_device_view *dev, json_t *out)
{
	struct pci_state *st = state;
	const struct hdd_pci_facts *f = dev->pci;
	json_t *reasons = json_array();
	const char *verdict;
	int bound = f->driver && strcmp(f->driver, "vfio-pci") == 0;
	struct group_walk w = { .viable = 1, .self = f->address };

	if (reasons == NULL)
		return -ENOMEM;
	if (f->iommu_group < 0) {
		json_array_append_new(reasons,
				      json_string("no IOMMU group: enable the IOMMU (intel_iommu=on or amd_iommu=on, VT-d/AMD-Vi in firmware)"));
	}
	if (f->sriov_numvfs > 0) {
		char line[96];

		snprintf(line, sizeof(line), "SR-IOV physical function with %d VFs enabled",
			 f->sriov_numvfs);
		json_array_append_new(reasons, json_string(line));
	}
	/* The same rule the claim path applies (module.h). */
	if (hdd_pci_never_claimable(f))
		json_array_append_new(reasons, json_string(hdd_pci_never_claimable(f) + 3));

	if (f->iommu_group >= 0) {
		char gid[16];

		w.members = json_array();
		w.blockers = json_array();
		st->ops->iommu_group_foreach(st->core, f->iommu_group, group_member_cb, &w);
		snprintf(gid, sizeof(gid), "%d", f->iommu_group);
		json_object_set_new(out, "group",
				    json_pack("{s:s, s:b, s:o}", "id", gid, "viable", w.viable,
					      "members", w.members));
		if (json_array_size(w.blockers) > 0) {
			char *who = json_dumps(w.blockers, JSON_COMPACT);
			char line[512];

			snprintf(line, sizeof(line),
				 "IOMMU group %d has members on host drivers, claimed with it: %s",
				 f->iommu_group, who ? who : "?");
			free(who);
			/* Not a blocker: a claim takes the whole group. */
			json_object_set_new(out, "group_note", json_string(line));
		}
		json_decref(w.blockers);
	}

	if (json_array_size(reasons) > 0)
		verdict = "blocked";
	else if (bound && w.viable)
		verdict = "ready";
	else
		verdict = "possible";
	json_object_set_new(out, "passthrough", json_string(verdict));
	json_object_set_new(out, "reasons", reasons);
	json_object_set_new(out, "vfio_bound", json_boolean(bound));
	return 0;
}

/* Offered to the kubelet: functions on vfio-pci, and the members of its
 * claims (under the claim's own name when it has one; the core judges
 * their health while they are held). Unhealthy while the group's device
 * node is missing. */
static int
pci_advertise(void *state, const struct hdd_device_view *dev, char *name, size_t size,
	      bool *healthy)
{
	struct pci_state *st = state;
	const struct hdd_pci_facts *f = dev->pci;
	char node[32], owner[32] = "";
	int held = st->ops->vfio_group_holder(st->core, f->address, owner, sizeof(owner), NULL);

	/* Held in the engine for another module (sriov's VFs): that module
	 * offers it under its own name, never this one as well. */
	if (held == 1 && strcmp(owner, PCI_NAME) != 0)
		return 0;
	if (held == 1) {
		struct pci_claim *cl = pci_claim_find(st, f->address);

		*healthy = true;
		if (cl && cl->resource_name) {
			snprintf(name, size, "%s", cl->resource_name);
			return 2;
		}
		st->ops->pci_resource_name(st->core, f, name, size);
		return 1;
	}

	if (f->driver == NULL || strcmp(f->driver, "vfio-pci") != 0)
		return 0;
	st->ops->pci_resource_name(st->core, f, name, size);
	snprintf(node, sizeof(node), "vfio/%d", f->iommu_group);
	*healthy = f->iommu_group >= 0 && st->ops->dev_exists(st->core, node);
	return 1;
}

/* KubeVirt's contract: PCI_RESOURCE_<NAME> = the addresses, and the VFIO
 * container, each group's node and each device's cdev, all "mrw" (the
 * core's builder, shared with every module that hands out PCI functions). */
static int
pci_allocate(void *state, const char *resource, const struct hdd_device_view *const *devs,
	     size_t n, struct hdd_alloc *alloc)
{
	struct pci_state *st = state;

	if (!HDD_CORE_HAS(st->ops, alloc_vfio_pci))
		return -EOPNOTSUPP;
	return st->ops->alloc_vfio_pci(st->core, alloc, resource, devs, n);
}

static const char *const pci_subsystems[] = { "pci", NULL };

__attribute__((visibility("default"))) const struct hdd_module hostdevd_module = {
	HDD_MODULE_HEADER,
	.name = PCI_NAME,
	.description = "PCI functions for vfio-pci passthrough",
	.subsystems = pci_subsystems,
	.methods = pci_methods,
	.worker_ops = pci_worker_ops,
	.init = pci_init,
	.fini = pci_fini,
	.start = pci_start,
	.stop = pci_stop,
	.device_event = pci_device_event,
	.probe = pci_probe,
	.describe = pci_describe,
	.advertise = pci_advertise,
	.allocate = pci_allocate,
	.list_held = pci_claims_list,
};
