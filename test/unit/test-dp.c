/* SPDX-License-Identifier: MIT */
/* Unit tests: resource, env and socket names; gRPC framing between an
 * in-memory client and server; preferred allocation. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>

#include "deviceplugin.pb-c.h"
#include "device.h"
#include "dp-names.h"
#include "dp.h"
#include "grpc.h"
#include "log.h"
#include "tap.h"

static void
name_of(const char *vendor, const char *device, int vid, int did, const char *want)
{
	struct hdd_pci_facts f = { .vendor_id = vid, .device_id = did, .vendor_name = vendor,
				   .device_name = device };
	char buf[256], why[128];

	dp_default_resource_name(&f, buf, sizeof(buf));
	is_str(buf, want, "resource name for %s / %s", vendor ? vendor : "?", device ? device : "?");
	ok(dp_resource_name_check(buf, why, sizeof(why)) == 0, "%s is valid for the kubelet", buf);
}

static void
test_names(void)
{
	char buf[256], why[128];

	name_of("NVIDIA Corporation", "GA100 [A100 PCIe 40GB]", 0x10de, 0x20f1,
		"nvidia.com/GA100_A100_PCIE_40GB");
	name_of("Intel Corporation", "X540 Ethernet Controller Virtual Function", 0x8086, 0x1515,
		"intel.com/X540_ETHERNET_CONTROLLER_VIRTUAL_FUNCTION");
	name_of("Intel Corporation", "Ethernet Connection (11) I219-LM", 0x8086, 0x0d4c,
		"intel.com/ETHERNET_CONNECTION_11_I219LM");
	name_of("Advanced Micro Devices, Inc. [AMD/ATI]", "Rembrandt [Radeon 680M]", 0x1002, 0x1681,
		"amd.com/REMBRANDT_RADEON_680M");
	/* harvester#10108: no trailing '_' */
	name_of("NVIDIA Corporation", "GA104 [RTX A4500 Embedded GPU ]", 0x10de, 0x24ba,
		"nvidia.com/GA104_RTX_A4500_EMBEDDED_GPU");
	name_of("Realtek Semiconductor Co., Ltd.", NULL, 0x10ec, 0x8168, "realtek.com/8168");
	name_of(NULL, NULL, 0x1234, 0xabcd, "pci-1234.hostdevd.io/abcd");
	/* A name that doubles as it is mangled ("a b" -> "A_B") past the
	 * working buffer; found by fuzz-names (was a stack overflow). */
	{
		char longname[700], out[256];
		struct hdd_pci_facts lf = { .vendor_id = 1, .device_id = 2, .vendor_name = "X",
					    .device_name = longname };

		for (size_t k = 0; k + 2 < sizeof(longname); k += 2)
			memcpy(longname + k, "a ", 2);
		longname[sizeof(longname) - 2] = 'a';
		longname[sizeof(longname) - 1] = '\0';
		dp_default_resource_name(&lf, out, sizeof(out));
		ok(dp_resource_name_check(out, why, sizeof(why)) == 0 && strlen(out) <= 6 + 63,
		   "a very long device name is cut to a valid name: %s", out);
	}
	/* The kubelet reserves "requests."; found by fuzz-names. */
	name_of("Requests Inc", "Widget", 0x1234, 0x0001, "pci-1234.hostdevd.io/WIDGET");
	name_of("Intel Corporation", "()", 0x8086, 0x0001, "intel.com/0001");
	/* Over 63: VIRTUAL_FUNCTION becomes VF, then the name is cut. */
	name_of("Mellanox Technologies",
		"MT2910 Family [ConnectX-7] Extremely Long Product Name Virtual Function", 0x15b3,
		0x101e, "mellanox.com/MT2910_FAMILY_CONNECTX7_EXTREMELY_LONG_PRODUCT_NAME_VF");
	name_of("X", "A Really Really Really Really Really Really Really Really Long Product Name", 1,
		2, "x.com/A_REALLY_REALLY_REALLY_REALLY_REALLY_REALLY_REALLY_REALLY_LONG");

	ok(dp_resource_name_check("nvidia.com/GRID_A100-1-5C", why, sizeof(why)) == 0, "vGPU name");
	ok(dp_resource_name_check("nvidia.com/x_", why, sizeof(why)) < 0, "trailing '_' refused");
	ok(dp_resource_name_check("nvidia.com", why, sizeof(why)) < 0, "no '/' refused");
	ok(dp_resource_name_check("a/b/c", why, sizeof(why)) < 0, "two '/' refused");
	ok(dp_resource_name_check("Nvidia.com/x", why, sizeof(why)) < 0, "upper-case domain refused");
	ok(dp_resource_name_check("kubernetes.io/x", why, sizeof(why)) < 0, "kubernetes.io refused");
	ok(dp_resource_name_check("requests.x.io/x", why, sizeof(why)) < 0, "requests. refused");
	ok(dp_resource_name_check("x.io/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
				  why, sizeof(why)) < 0, "64 characters refused");

	is_int(dp_env_name("PCI_RESOURCE", "nvidia.com/GRID_A100-1-5C", buf, sizeof(buf)), 0, "env");
	is_str(buf, "PCI_RESOURCE_NVIDIA_COM_GRID_A100-1-5C", "env name keeps '-'");
	dp_env_name("USB_RESOURCE", "kubevirt.io/node1-0951-1666-002004", buf, sizeof(buf));
	is_str(buf, "USB_RESOURCE_KUBEVIRT_IO_NODE1-0951-1666-002004", "USB env name");

	is_int(dp_socket_name("/var/lib/kubelet/device-plugins", "nvidia.com/GA100_A100_PCIE_40GB",
			      buf, sizeof(buf)), 0, "socket name");
	is_str(buf, "hostdevd-nvidia.com-GA100_A100_PCIE_40GB.sock", "socket name form");
	{
		const char *res = "mellanox.com/MT2910_FAMILY_CONNECTX7_EXTREMELY_LONG_PRODUCT_NAME_VF";
		char other[256];

		is_int(dp_socket_name("/var/lib/kubelet/device-plugins", res, buf, sizeof(buf)), 0,
		       "a long resource still gets a socket");
		ok(strlen("/var/lib/kubelet/device-plugins/") + strlen(buf) == 107,
		   "shortened to fit sun_path exactly (%s)", buf);
		ok(strncmp(buf, "hostdevd-mellanox.com-MT2910", 28) == 0 &&
		   strcmp(buf + strlen(buf) - 5, ".sock") == 0, "keeps the start, ends in .sock");
		dp_socket_name("/var/lib/kubelet/device-plugins", res, other, sizeof(other));
		is_str(other, buf, "stable");
		dp_socket_name("/var/lib/kubelet/device-plugins",
			       "mellanox.com/MT2910_FAMILY_CONNECTX7_EXTREMELY_LONG_PRODUCT_NAME_VX", other,
			       sizeof(other));
		ok(strcmp(other, buf) != 0, "two long names that share a prefix stay apart");
	}
	{
		char dir[120];

		memset(dir, 'd', sizeof(dir) - 1);
		dir[0] = '/';
		dir[sizeof(dir) - 1] = '\0';
		is_int(dp_socket_name(dir, "a.io/b", buf, sizeof(buf)), -ENAMETOOLONG,
		       "a directory too long for any socket");
	}
}

/* --- gRPC between an in-memory client and server ---------------------- */

struct pipe_end {
	uint8_t buf[1 << 20];
	size_t len;
};

static struct pipe_end to_server, to_client;
static int requests, responses, last_status;
static char last_message[256];
static size_t last_len;
static char last_path[128];

static void
write_to_server(void *arg, const uint8_t *d, size_t n)
{
	memcpy(to_server.buf + to_server.len, d, n);
	to_server.len += n;
}

static void
write_to_client(void *arg, const uint8_t *d, size_t n)
{
	memcpy(to_client.buf + to_client.len, d, n);
	to_client.len += n;
}

static void
srv_request(void *arg, struct grpc_call *call, const char *path, const uint8_t *msg, size_t len)
{
	requests++;
	snprintf(last_path, sizeof(last_path), "%s", path);
	if (len == 3 && memcmp(msg, "bad", 3) == 0) {
		grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "bad 100% (ünicode)");
		return;
	}
	grpc_call_send(call, msg, len, false);	/* echo */
	grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

static bool
srv_known(void *arg, const char *path)
{
	return strcmp(path, "/test.Echo/Echo") == 0;
}

static void
cli_response(void *arg, struct grpc_call *call, int status, const char *message,
	     const uint8_t *msg, size_t len)
{
	responses++;
	last_status = status;
	snprintf(last_message, sizeof(last_message), "%s", message ? message : "");
	last_len = msg ? len : (size_t)-1;
}

static const struct grpc_conn_ops srv_ops = { .write = write_to_client, .request = srv_request,
					      .known_path = srv_known };
static const struct grpc_conn_ops cli_ops = { .write = write_to_server, .response = cli_response };

static void
shuttle(struct grpc_conn *srv, struct grpc_conn *cli)
{
	for (int i = 0; i < 50; i++) {
		grpc_conn_flush(cli, 1 << 20);
		grpc_conn_flush(srv, 1 << 20);
		if (to_server.len == 0 && to_client.len == 0)
			break;
		if (to_server.len) {
			size_t n = to_server.len;
			to_server.len = 0;
			grpc_conn_recv(srv, to_server.buf, n);
		}
		if (to_client.len) {
			size_t n = to_client.len;
			to_client.len = 0;
			grpc_conn_recv(cli, to_client.buf, n);
		}
	}
}

static void
test_grpc(void)
{
	struct grpc_conn *srv, *cli;
	uint8_t big[2000];
	char *enc, *dec;

	is_int(grpc_conn_new_server(&srv_ops, NULL, &srv), 0, "server connection");
	is_int(grpc_conn_new_client(&cli_ops, NULL, &cli), 0, "client connection");
	grpc_conn_flush(srv, 1 << 20);
	ok(to_client.len >= 9 && to_client.buf[3] == 0x04, "the server's first frame is SETTINGS");

	ok(grpc_conn_call(cli, "/test.Echo/Echo", (const uint8_t *)"hello", 5) != NULL, "call");
	shuttle(srv, cli);
	is_int(requests, 1, "the server saw one request");
	is_str(last_path, "/test.Echo/Echo", "with its path");
	is_int(responses, 1, "the client saw one response");
	is_int(last_status, 0, "OK");
	is_int((long)last_len, 5, "the echoed message");

	memset(big, 'x', sizeof(big));
	grpc_conn_call(cli, "/test.Echo/Echo", big, sizeof(big));
	shuttle(srv, cli);
	is_int((long)last_len, (long)sizeof(big), "a larger message round-trips");

	grpc_conn_call(cli, "/test.Echo/Nope", (const uint8_t *)"x", 1);
	shuttle(srv, cli);
	is_int(last_status, GRPC_STATUS_UNIMPLEMENTED, "unknown path is UNIMPLEMENTED");
	is_int(requests, 2, "and never reaches the handler");

	grpc_conn_call(cli, "/test.Echo/Echo", (const uint8_t *)"bad", 3);
	shuttle(srv, cli);
	is_int(last_status, GRPC_STATUS_INVALID_ARGUMENT, "an error status");
	is_str(last_message, "bad 100% (ünicode)", "grpc-message survives percent-encoding");
	is_int(grpc_conn_open_calls(srv), 0, "no call left open on the server");

	grpc_conn_free(cli);
	grpc_conn_free(srv);

	enc = grpc_percent_encode("a%b\nc\xc3\xa9");
	is_str(enc, "a%25b%0Ac%C3%A9", "percent-encoding");
	dec = grpc_percent_decode(enc);
	is_str(dec, "a%b\nc\xc3\xa9", "and back");
	free(enc);
	free(dec);
	is_str(grpc_status_to_string(8), "RESOURCE_EXHAUSTED", "status names");
}

static void
test_list_encoding(void)
{
	struct dp_resource r = { .name = "x.io/y" };
	struct dp_member m[2] = { { .id = "0000:81:00.0", .healthy = true, .numa = 1 },
				  { .id = "0000:82:00.0", .healthy = false, .numa = -1 } };
	static const uint8_t want[] = {
		0x0a, 0x1d, 0x0a, 0x0c, '0', '0', '0', '0', ':', '8', '1', ':', '0', '0', '.', '0',
		0x12, 0x07, 'H', 'e', 'a', 'l', 't', 'h', 'y', 0x1a, 0x04, 0x0a, 0x02, 0x08, 0x01,
	};
	V1beta1__ListAndWatchResponse *resp;
	uint8_t *buf;
	size_t len;

	r.members = m;
	r.n = 1;
	is_int(dp_encode_list(&r, false, &buf, &len), 0, "encode one device");
	ok(len == sizeof(want) && memcmp(buf, want, len) == 0,
	   "the bytes of the kubelet's example (31 bytes, NUMA 1)");
	free(buf);
	r.n = 2;
	dp_encode_list(&r, false, &buf, &len);
	resp = v1beta1__list_and_watch_response__unpack(NULL, len, buf);
	ok(resp && resp->n_devices == 2 && strcmp(resp->devices[1]->health, "Unhealthy") == 0 &&
	   resp->devices[1]->topology == NULL, "no NUMA node: no topology");
	v1beta1__list_and_watch_response__free_unpacked(resp, NULL);
	free(buf);
	dp_encode_list(&r, true, &buf, &len);
	is_int((long)len, 0, "the empty list is zero bytes");
	free(buf);
}

/* --- preferred allocation --------------------------------------------- */

/* The first implementation (quadratic per pick), kept as the reference the
 * near-linear one must agree with. */
static bool
ref_share_switch(const struct device *a, const struct device *b)
{
	const char *pa, *pb, *enda, *endb;
	size_t common = 0;
	int slashes = 0;

	if (a == NULL || b == NULL)
		return false;
	pa = a->syspath;
	pb = b->syspath;
	enda = strrchr(pa, '/');
	endb = strrchr(pb, '/');
	if (!enda || !endb)
		return false;
	while (pa + common < enda && pb + common < endb && pa[common] == pb[common])
		common++;
	while (common > 0 && pa[common - 1] != '/')
		common--;
	for (size_t i = 0; i < common; i++)
		slashes += pa[i] == '/';
	return slashes >= 3;
}

static int
ref_score(const struct dp_member *cand, const struct dp_member *const *chosen, size_t nchosen)
{
	int best = 0;

	for (size_t i = 0; i < nchosen; i++) {
		const struct dp_member *c = chosen[i];
		int sc = 0;

		if (cand->iommu_group >= 0 && cand->iommu_group == c->iommu_group)
			sc = 3;
		else if (cand->numa >= 0 && cand->numa == c->numa)
			sc = 2;
		else if (ref_share_switch(cand->dev, c->dev))
			sc = 1;
		if (sc > best)
			best = sc;
	}
	return best;
}

static const struct dp_member *
ref_find(const struct dp_resource *r, const char *id)
{
	for (size_t i = 0; i < r->n; i++)
		if (strcmp(r->members[i].id, id) == 0)
			return &r->members[i];
	return NULL;
}

static void
ref_preferred(const struct dp_resource *r, char **available, size_t navailable, char **must,
	      size_t nmust, int size, const char **out)
{
	const struct dp_member *avail[256], *chosen[256];
	bool used[256] = { false };
	size_t nchosen = 0;

	for (size_t i = 0; i < navailable; i++)
		avail[i] = ref_find(r, available[i]);
	for (size_t i = 0; i < nmust; i++) {
		size_t k;

		for (k = 0; k < navailable; k++)
			if (strcmp(available[k], must[i]) == 0)
				break;
		if (used[k])
			continue;
		used[k] = true;
		chosen[nchosen++] = avail[k];
	}
	while (nchosen < (size_t)size) {
		int best = -1;
		size_t pick = navailable;

		for (size_t k = 0; k < navailable; k++) {
			int sc;

			if (used[k])
				continue;
			sc = ref_score(avail[k], chosen, nchosen);
			if (sc > best) {
				best = sc;
				pick = k;
			}
		}
		used[pick] = true;
		chosen[nchosen++] = avail[pick];
	}
	for (size_t i = 0; i < nchosen; i++)
		out[i] = chosen[i]->id;
}

static unsigned rng = 12345;

static unsigned
rnd(unsigned n)
{
	rng = rng * 1103515245u + 12345u;
	return (rng >> 16) % n;
}

/* A resource of n functions spread over root ports, switches, groups and
 * NUMA nodes (some with none), ids sorted as the core keeps them. */
static void
make_resource(struct dp_resource *r, struct dp_member *m, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char path[256];
		unsigned rp = rnd(4), sw = rnd(3), depth = rnd(3);

		snprintf(m[i].id, sizeof(m[i].id), "0000:%02zx:%02zx.%zu", i / 64, (i / 8) % 8, i % 8);
		m[i].healthy = true;
		m[i].iommu_group = rnd(5) == 0 ? -1 : (int)rnd((unsigned)n / 2 + 1);
		m[i].numa = rnd(4) == 0 ? -1 : (int)rnd(3);
		m[i].dev = device_new(HDD_DEV_PCI, m[i].id);
		if (depth == 0)		/* on the root bus */
			snprintf(path, sizeof(path), "devices/pci0000:%02u/%s", rp, m[i].id);
		else if (depth == 1)	/* below a root port */
			snprintf(path, sizeof(path), "devices/pci0000:00/0000:00:0%u.0/%s", rp, m[i].id);
		else			/* behind a switch */
			snprintf(path, sizeof(path),
				 "devices/pci0000:00/0000:00:0%u.0/0000:1%u:00.0/0000:2%u:0%u.0/%s", rp, rp,
				 rp, sw, m[i].id);
		m[i].dev->syspath = strdup(path);
	}
	r->members = m;
	r->n = n;
}

static void
test_preferred(void)
{
	static struct dp_member m[683];
	struct dp_resource r = { .name = "x.io/y" };
	const char *got[683], *want[683];
	char *ids[683], *must[8], why[256];
	int mismatches = 0, trials = 0;

	for (int t = 0; t < 400; t++) {
		size_t n = 1 + rnd(60), navail, nmust;
		int size;

		make_resource(&r, m, n);
		/* The kubelet's order: a random subset in a random order. */
		navail = 1 + rnd((unsigned)n);
		for (size_t i = 0; i < n; i++)
			ids[i] = m[i].id;
		for (size_t i = n; i > 1; i--) {
			size_t j = rnd((unsigned)i);
			char *x = ids[i - 1];

			ids[i - 1] = ids[j];
			ids[j] = x;
		}
		size = 1 + (int)rnd((unsigned)navail);
		nmust = rnd((unsigned)(size < 4 ? size : 4) + 1);
		for (size_t i = 0; i < nmust; i++)
			must[i] = ids[rnd((unsigned)navail)];
		ref_preferred(&r, ids, navail, must, nmust, size, want);
		if (dp_preferred(&r, ids, navail, must, nmust, size, got, why, sizeof(why)) != 0) {
			mismatches++;
		} else {
			for (int i = 0; i < size; i++)
				if (strcmp(got[i], want[i]) != 0) {
					mismatches++;
					break;
				}
		}
		trials++;
		for (size_t i = 0; i < n; i++)
			device_unref(m[i].dev);
	}
	is_int(mismatches, 0, "the same picks as the reference in %d random requests", trials);

	/* The field's size: 683 functions, all of them asked for. */
	make_resource(&r, m, 683);
	for (size_t i = 0; i < 683; i++)
		ids[i] = m[682 - i].id;
	ref_preferred(&r, ids, 256, NULL, 0, 256, want);
	ok(dp_preferred(&r, ids, 256, NULL, 0, 256, got, why, sizeof(why)) == 0 &&
	   memcmp(got, want, 256 * sizeof(*got)) == 0, "256 of 683 as the reference picks them");
	is_int(dp_preferred(&r, ids, 683, NULL, 0, 683, got, why, sizeof(why)), 0,
	       "all 683 at once");
	{
		bool seen[683] = { false };
		int dup = 0;

		for (size_t i = 0; i < 683; i++) {
			size_t k = (size_t)(ref_find(&r, got[i]) - m);

			dup += seen[k];
			seen[k] = true;
		}
		is_int(dup, 0, "each device once");
	}
	must[0] = ids[10];
	must[1] = ids[10];
	is_int(dp_preferred(&r, ids, 683, must, 2, 2, got, why, sizeof(why)), 0,
	       "a must-include id given twice counts once");
	ok(got[0] == m[672].id, "must-include first");
	ids[1] = ids[0];
	is_int(dp_preferred(&r, ids, 683, NULL, 0, 1, got, why, sizeof(why)), -EINVAL,
	       "an id listed twice is refused");
	ok(strstr(why, "twice") != NULL, "and says so: %s", why);
	ids[1] = (char *)"0000:ff:00.0";
	is_int(dp_preferred(&r, ids, 683, NULL, 0, 1, got, why, sizeof(why)), -EINVAL,
	       "an unknown id is refused");
	ids[1] = m[681].id;
	must[0] = (char *)"0000:ff:00.0";
	is_int(dp_preferred(&r, ids, 683, must, 1, 1, got, why, sizeof(why)), -EINVAL,
	       "a must-include id that is not available is refused");
	is_int(dp_preferred(&r, ids, 5, NULL, 0, 6, got, why, sizeof(why)), -EINVAL,
	       "more than available is refused");
	for (size_t i = 0; i < 683; i++)
		device_unref(m[i].dev);
}

/* The budget shared by server connections, the handshake flag, and the
 * deadline for requests whose body never ends. */
static void
test_grpc_bounds(void)
{
	struct grpc_budget budget = { .max = 100 };
	struct grpc_conn *srv, *cli;
	uint8_t big[200];

	to_server.len = to_client.len = 0;
	requests = responses = 0;
	is_int(grpc_conn_new_server(&srv_ops, NULL, &srv), 0, "server connection");
	is_int(grpc_conn_new_client(&cli_ops, NULL, &cli), 0, "client connection");
	grpc_conn_set_budget(srv, &budget);
	ok(!grpc_conn_established(srv), "not established before the client's preface");
	grpc_conn_call(cli, "/test.Echo/Echo", (const uint8_t *)"hi", 2);
	shuttle(srv, cli);
	ok(grpc_conn_established(srv), "established once its SETTINGS came");
	is_int(last_status, 0, "a small request within the budget");
	is_int((long)budget.used, 0, "nothing held once it is answered");

	memset(big, 'x', sizeof(big));
	grpc_conn_call(cli, "/test.Echo/Echo", big, sizeof(big));
	shuttle(srv, cli);
	is_int(last_status, GRPC_STATUS_RESOURCE_EXHAUSTED, "a request past the budget is refused");
	is_int(requests, 1, "and never reaches the handler");
	is_int((long)budget.used, 0, "what it buffered is given back");
	is_int((long)grpc_conn_buffered(srv), 0, "by the connection too");
	is_int(grpc_conn_expire_requests(srv, 0), 0, "no request is still arriving");
	grpc_conn_free(cli);
	grpc_conn_free(srv);
	is_int((long)budget.used, 0, "the budget is back to zero");
}

int
main(void)
{
	log_init(HDD_LOG_ERR, 0);
	test_names();
	test_grpc();
	test_grpc_bounds();
	test_list_encoding();
	test_preferred();
	return tap_done();
}
