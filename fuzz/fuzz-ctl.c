/* SPDX-License-Identifier: MIT */
/* Fuzz target: one control-socket request line (JSON-RPC) against a small
 * simulated host, as an unprivileged and as a privileged peer. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctl.h"
#include "daemon.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static struct daemon d;
static char root[] = "/tmp/hostdevd-fuzz-XXXXXX";

static void
put(const char *rel, const char *text)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	f = fopen(path, "w");
	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char path[512];

	log_init(HDD_LOG_ERR, 0);
	if (mkdtemp(root) == NULL)
		abort();
	const char *dirs[] = { "devices", "devices/pci0000:00", "devices/pci0000:00/0000:00:02.0",
			       "bus", "bus/pci", "bus/pci/devices" };
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", root, dirs[i]);
		mkdir(path, 0755);
	}
	put("devices/pci0000:00/0000:00:02.0/vendor", "0x10de\n");
	put("devices/pci0000:00/0000:00:02.0/device", "0x20f1\n");
	put("devices/pci0000:00/0000:00:02.0/class", "0x030200\n");
	snprintf(path, sizeof(path), "%s/bus/pci/devices/0000:00:02.0", root);
	if (symlink("../../../devices/pci0000:00/0000:00:02.0", path) < 0)
		abort();
	d.opts.sysfs_root = root;
	d.opts.dev_root = "/dev";
	d.opts.kubelet_dir = d.opts.control_socket = d.opts.state_dir = "/nonexistent";
	d.opts.config_file = d.opts.module_dir = "/nonexistent";
	snprintf(d.node_name, sizeof(d.node_name), "fuzz");
	d.cfg = config_defaults();
	if (fsroot_new(root, &d.sys) < 0 || names_new(NULL, NULL, &d.names) < 0 ||
	    inventory_new(d.sys, d.names, NULL, NULL, &d.inv) < 0)
		abort();
	d.mods = calloc(1, sizeof(*d.mods));
	inventory_resync(d.inv, "fuzz");
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctl_peer peers[2] = { { .uid = 1000, .gid = 1000 }, { .uid = 0 } };

	if (size > CTL_MAX_LINE)
		return 0;
	for (int i = 0; i < 2; i++) {
		json_t *resp = ctl_handle_line(&d, &peers[i], (const char *)data, size);

		if (resp) {
			char *text = json_dumps(resp, JSON_COMPACT);
			free(text);
			json_decref(resp);
		}
		json_decref(peers[i].event_types);
	}
	return 0;
}
