/* SPDX-License-Identifier: MIT */
/* Fuzz target: names. pci.ids and usb.ids lookups over a database that is
 * the input itself, and the names derived from them: the default kubelet
 * resource name (which must always pass the resource-name check), KubeVirt's
 * environment variable name and the endpoint socket name (which must fit
 * sun_path). Input lines: vendor name, device name, "vvvv dddd" ids, socket
 * directory; the whole input is also the ids database. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dp-names.h"
#include "fuzz-tree.h"
#include "log.h"
#include "names.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static char ids_path[256];

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_init(HDD_LOG_ERR, 0);
	fuzz_tree_init();
	snprintf(ids_path, sizeof(ids_path), "%s/ids", fuzz_root);
	return 0;
}

/* The derived names, checked against what they promise. */
static void
derive(struct hdd_pci_facts *f, const char *dir)
{
	char name[512], why[128], env[512], sock[512];
	size_t dirlen = strlen(dir);

	/* The socket's path is the directory without its trailing slashes. */
	while (dirlen > 1 && dir[dirlen - 1] == '/')
		dirlen--;
	dp_default_resource_name(f, name, sizeof(name));
	if (dp_resource_name_check(name, why, sizeof(why)) < 0) {
		fprintf(stderr, "default resource name \"%s\" is invalid: %s\n", name, why);
		abort();
	}
	dp_env_name("PCI_RESOURCE", name, env, sizeof(env));
	if (dp_socket_name(dir, name, sock, sizeof(sock)) == 0 &&
	    dirlen + 1 + strlen(sock) > DP_SUN_PATH_MAX) {
		fprintf(stderr, "socket name \"%.*s/%s\" does not fit\n", (int)dirlen, dir, sock);
		abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1), *line[4] = { NULL }, *p, *save = NULL;
	struct hdd_pci_facts f = { .vendor_id = -1, .device_id = -1, .class_code = -1 };
	char vbuf[256], dbuf[256], buf[256], why[128], env[512];
	struct names *n;
	unsigned vid = 0, did = 0;
	int i = 0;

	if (text == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	fuzz_put_bytes("ids", data, size);
	for (p = strtok_r(text, "\n", &save); p && i < 4; p = strtok_r(NULL, "\n", &save))
		line[i++] = p;
	if (line[2] && sscanf(line[2], "%x %x", &vid, &did) >= 1) {
		f.vendor_id = (int)(vid & 0xffff);
		f.device_id = (int)(did & 0xffff);
	}
	f.vendor_name = line[0];
	f.device_name = line[1];
	derive(&f, line[3] ? line[3] : "/var/lib/kubelet/device-plugins");
	if (line[0]) {
		dp_resource_name_check(line[0], why, sizeof(why));
		dp_env_name("USB_RESOURCE", line[0], env, sizeof(env));
	}

	/* The same from the database's names. */
	if (names_new(ids_path, ids_path, &n) == 0) {
		f.vendor_name = names_pci_vendor(n, f.vendor_id, vbuf, sizeof(vbuf));
		f.device_name = names_pci_device(n, f.vendor_id, f.device_id, dbuf, sizeof(dbuf));
		names_pci_subsystem(n, f.vendor_id, f.device_id, f.vendor_id, f.device_id, buf,
				    sizeof(buf));
		names_pci_class(n, (int)(did & 0xffffff), buf, sizeof(buf));
		names_pci_progif(n, (int)(did & 0xffffff), buf, sizeof(buf));
		derive(&f, "/var/lib/kubelet/device-plugins");
		names_usb_vendor(n, f.vendor_id, buf, sizeof(buf));
		names_usb_product(n, f.vendor_id, f.device_id, buf, sizeof(buf));
		/* Cached: the same answers again. */
		names_usb_product(n, f.vendor_id, f.device_id, buf, sizeof(buf));
		names_trim(n);
		names_pci_vendor(n, f.vendor_id, vbuf, sizeof(vbuf));
		names_free(n);
	}
	free(text);
	return 0;
}
