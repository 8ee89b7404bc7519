/* SPDX-License-Identifier: MIT */
/* pci: the module's state, shared by its passthrough view (pci.c) and its
 * claims (claims.c). */
#ifndef HOSTDEVD_MODULE_PCI_H
#define HOSTDEVD_MODULE_PCI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hostdevd/module.h"

#define PCI_ADDR_MAX 16
#define PCI_NAME "pci"

struct pci_job;

/* One claim: a whole IOMMU group on vfio-pci, held in the core's engine
 * (vfio_group_bind) for this module. The engine journals the group; the
 * module keeps what only it reads, in its section of state.json. */
struct pci_claim {
	char address[PCI_ADDR_MAX];	/* the function it was asked for */
	char *resource_name;		/* NULL: the default (or a rule's) name */
	bool from_config;		/* a `resources` rule with "claim": true */
	char (*members)[PCI_ADDR_MAX];	/* its group's functions, as last bound */
	size_t n;
	struct pci_job *job;		/* a claim or release in flight, or NULL */
};

struct pci_state {
	const struct hdd_core_ops *ops;
	struct hdd_core *core;
	struct pci_claim **v;
	size_t n;
	bool started;
};

/* The claim holding `address` (its own or a member's), or NULL. */
struct pci_claim *pci_claim_find(struct pci_state *st, const char *address);

/* Start: folds records carried over from an older state.json, drops those
 * the engine no longer holds, applies the configuration's claim rules. */
int pci_claims_start(struct pci_state *st);
/* A device came or changed: the configuration's claim rules for it. */
void pci_claims_device_event(struct pci_state *st, enum hdd_device_event ev,
			     const struct hdd_device_view *dev);
void pci_claims_stop(struct pci_state *st);
void pci_claims_free(struct pci_state *st);
/* claims.list's part: one object per claim. */
int pci_claims_list(void *state, json_t *out);

extern const struct hdd_method pci_methods[];
extern const struct hdd_worker_op pci_worker_ops[];

/* Worker op (exported for the unit tests): nvidia-smi -pm for one GPU. */
int pci_op_nvidia_pm(int sysfs_fd, const json_t *args, json_t *out);

#endif
