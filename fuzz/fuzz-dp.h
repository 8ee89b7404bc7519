/* SPDX-License-Identifier: MIT */
/* One device-plugin endpoint for the gRPC fuzz targets (fuzz-grpc, fuzz-proto):
 * a resource of four members (two share an IOMMU group, two NUMA nodes, one
 * unhealthy) owned by a module whose Allocate adds devices, a mount and an
 * environment variable, and the server-side callbacks that hand calls to
 * dp_handle. */
#ifndef HOSTDEVD_FUZZ_DP_H
#define HOSTDEVD_FUZZ_DP_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "dp.h"
#include "grpc.h"
#include "log.h"
#include "module.h"

#define FUZZ_DP_MEMBERS 4

static struct dp *dp;
static struct dp_resource res = { .name = "fuzz.io/dev", .sock = "hostdevd-fuzz.io-dev.sock" };
static struct dp_member members[FUZZ_DP_MEMBERS];

static int
fuzz_allocate(void *state, const char *resource, const struct hdd_device_view *const *devs,
	      size_t n, struct hdd_alloc *alloc)
{
	for (size_t i = 0; i < n; i++)
		dp_alloc_device(alloc, "/dev/vfio/1", NULL, "mrw");
	dp_alloc_mount(alloc, "/dev/shm", "/dev/shm", false);
	return dp_alloc_env(alloc, "PCI_RESOURCE_FUZZ_IO_DEV", "x");
}

static const struct hdd_module fuzz_desc = {
	HDD_MODULE_HEADER,
	.name = "fuzz",
	.allocate = fuzz_allocate,
};
static struct module fuzz_module = { .desc = &fuzz_desc, .active = 1 };

static void
fuzz_dp_request(void *arg, struct grpc_call *call, const char *path, const uint8_t *msg,
		size_t len)
{
	dp_handle(dp, &res, call, path, msg, len);
}

static void
fuzz_dp_closed(void *arg, struct grpc_call *call)
{
	dp_call_closed(dp, &res, call);
}

static bool
fuzz_dp_known(void *arg, const char *path)
{
	return dp_known_path(path);
}

/* Logging off, the resource filled. */
static void
fuzz_dp_init(void)
{
	static const char *const ids[FUZZ_DP_MEMBERS] = { "0000:01:00.0", "0000:01:00.1",
							   "0000:02:00.0", "0000:03:00.0" };

	log_init(HDD_LOG_ERR, 0);
	log_set_level(HDD_LOG_ERR);
	if (dp_new(NULL, NULL, &dp) < 0)
		abort();
	for (int i = 0; i < FUZZ_DP_MEMBERS; i++) {
		snprintf(members[i].id, sizeof(members[i].id), "%s", ids[i]);
		members[i].healthy = i != 2;
		members[i].numa = i / 2;
		members[i].iommu_group = i < 2 ? 1 : i;
		members[i].dev = device_new(HDD_DEV_PCI, ids[i]);
		members[i].dev->syspath = strdup("devices/pci0000:00/0000:00:01.0/x");
	}
	res.members = members;
	res.n = FUZZ_DP_MEMBERS;
	res.module = &fuzz_module;
}

#endif
