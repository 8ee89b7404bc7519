/* SPDX-License-Identifier: MIT */
/* Fuzz target: protobuf decoding on its own. The first byte chooses a
 * device-plugin method, the rest is its request message; it travels in a
 * well-formed HTTP/2 + gRPC call made by our own client, so every input
 * reaches the method's decoding and answer (dp_handle), and the answer goes
 * back through the client side. Each message type is also decoded and
 * encoded again directly. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "deviceplugin.pb-c.h"
#include "fuzz-dp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static struct grpc_conn *server, *client;

static const char *const methods[] = {
	DP_PATH_PREFIX "GetDevicePluginOptions", DP_PATH_PREFIX "ListAndWatch",
	DP_PATH_PREFIX "Allocate", DP_PATH_PREFIX "GetPreferredAllocation",
	DP_PATH_PREFIX "PreStartContainer",
};

static const ProtobufCMessageDescriptor *const descriptors[] = {
	&v1beta1__empty__descriptor,
	&v1beta1__allocate_request__descriptor,
	&v1beta1__preferred_allocation_request__descriptor,
	&v1beta1__pre_start_container_request__descriptor,
	&v1beta1__register_request__descriptor,
	&v1beta1__list_and_watch_response__descriptor,
	&v1beta1__allocate_response__descriptor,
	&v1beta1__device_plugin_options__descriptor,
	&v1beta1__preferred_allocation_response__descriptor,
};


/* Bytes one side writes are what the other side reads. */
static void
to_server(void *arg, const uint8_t *d, size_t n)
{
	if (server)
		grpc_conn_recv(server, d, n);
}

static void
to_client(void *arg, const uint8_t *d, size_t n)
{
	if (client)
		grpc_conn_recv(client, d, n);
}

static void
response(void *arg, struct grpc_call *call, int status, const char *message, const uint8_t *msg,
	 size_t len)
{
}

static const struct grpc_conn_ops server_ops = {
	.write = to_client, .request = fuzz_dp_request, .call_closed = fuzz_dp_closed,
	.known_path = fuzz_dp_known,
};
static const struct grpc_conn_ops client_ops = {
	.write = to_server, .response = response,
};

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_dp_init();
	return 0;
}

static void
pump(void)
{
	for (int i = 0; i < 16; i++) {
		bool more = false;

		if (client)
			more |= grpc_conn_flush(client, 1 << 20);
		if (server)
			more |= grpc_conn_flush(server, 1 << 20);
		if (!more)
			break;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	for (size_t i = 0; i < sizeof(descriptors) / sizeof(descriptors[0]); i++) {
		ProtobufCMessage *m = protobuf_c_message_unpack(descriptors[i], NULL, size - 1,
								data + 1);

		if (m) {
			size_t n = protobuf_c_message_get_packed_size(m);
			uint8_t *buf = malloc(n ? n : 1);

			if (buf)
				protobuf_c_message_pack(m, buf);
			free(buf);
			protobuf_c_message_free_unpacked(m, NULL);
		}
	}
	if (grpc_conn_new_server(&server_ops, NULL, &server) < 0)
		return 0;
	if (grpc_conn_new_client(&client_ops, NULL, &client) < 0) {
		grpc_conn_free(server);
		server = NULL;
		return 0;
	}
	pump();
	if (grpc_conn_call(client, methods[data[0] % 5], data + 1, size - 1))
		pump();
	dp_resource_end_streams(&res);
	pump();
	grpc_conn_free(client);
	client = NULL;
	grpc_conn_free(server);
	server = NULL;
	res.nwatches = 0;
	return 0;
}
