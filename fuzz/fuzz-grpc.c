/* SPDX-License-Identifier: MIT */
/* Fuzz target: bytes from a kubelet into a device-plugin endpoint: HTTP/2
 * (nghttp2), gRPC framing, and protobuf decoding of every method. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-dp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static size_t written;

static void
w(void *arg, const uint8_t *d, size_t n)
{
	written += n;
}

static const struct grpc_conn_ops ops = {
	.write = w, .request = fuzz_dp_request, .call_closed = fuzz_dp_closed,
	.known_path = fuzz_dp_known,
};

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_dp_init();
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
