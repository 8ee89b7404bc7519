/* SPDX-License-Identifier: MIT */
/* Fuzz target: bytes from a kubelet into a device-plugin endpoint: HTTP/2
 * (nghttp2), gRPC framing, and protobuf decoding of every method. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device.h"
#include "dp.h"
#include "grpc.h"
#include "log.h"
#include "module.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static struct dp dp;
static struct dp_resource res = { .name = "fuzz.io/dev", .sock = "hostdevd-fuzz.io-dev.sock" };
static struct dp_member members[3];
static size_t written;

static int
fuzz_allocate(void *state, const char *resource, const struct hdd_device_view *const *devs,
	      size_t n, struct hdd_alloc *alloc)
{
	for (size_t i = 0; i < n; i++)
		dp_alloc_device(alloc, "/dev/vfio/1", NULL, "mrw");
	return dp_alloc_env(alloc, "PCI_RESOURCE_FUZZ_IO_DEV", "x");
}

static const struct hdd_module fuzz_desc = {
	HDD_MODULE_HEADER,
	.name = "fuzz",
	.allocate = fuzz_allocate,
};
static struct module fuzz_module = { .desc = &fuzz_desc, .active = 1 };

static void
w(void *arg, const uint8_t *d, size_t n)
{
	written += n;
}

static void
req(void *arg, struct grpc_call *call, const char *path, const uint8_t *msg, size_t len)
{
	dp_handle(&dp, &res, call, path, msg, len);
}

static void
closed(void *arg, struct grpc_call *call)
{
	dp_call_closed(&dp, &res, call);
}

static bool
known(void *arg, const char *path)
{
	return dp_known_path(path);
}

static const struct grpc_conn_ops ops = {
	.write = w, .request = req, .call_closed = closed, .known_path = known,
};

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char *const ids[3] = { "0000:01:00.0", "0000:01:00.1", "0000:02:00.0" };

	log_init(HDD_LOG_ERR + 0, 0);
	log_set_level(HDD_LOG_ERR);
	for (int i = 0; i < 3; i++) {
		snprintf(members[i].id, sizeof(members[i].id), "%s", ids[i]);
		members[i].healthy = i != 2;
		members[i].numa = i;
		members[i].iommu_group = i < 2 ? 1 : 2;
		members[i].dev = device_new(HDD_DEV_PCI, ids[i]);
		members[i].dev->syspath = strdup("devices/pci0000:00/0000:00:01.0/x");
	}
	res.members = members;
	res.n = 3;
	res.module = &fuzz_module;
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct grpc_conn *c;
	size_t half = size / 2;

	if (grpc_conn_new_server(&ops, NULL, &c) < 0)
		return 0;
	/* Two deliveries, so frames split across reads are exercised too. */
	if (grpc_conn_recv(c, data, half) == 0)
		grpc_conn_recv(c, data + half, size - half);
	for (int i = 0; i < 64 && grpc_conn_flush(c, 1 << 16); i++)
		;
	dp_resource_end_streams(&res);
	grpc_conn_flush(c, 1 << 20);
	grpc_conn_free(c);
	res.nwatches = 0;
	return 0;
}
