/* SPDX-License-Identifier: MIT */
/* Fuzz target: uevents and devpath handling. The input is a sysfs tree
 * (fuzz-tree.h records, read at start as the coldplug scan) and uevent lines
 * "u ACTION SUBSYSTEM DEVTYPE SYSNAME DEVPATH" (DEVTYPE "-" for none),
 * handed to the daemon's uevent policy in order; tree records after a uevent
 * change the host before the next one (hotplug: add the files, then the
 * "add"). More than 64 uevents make a burst, resynced at the window's end. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-daemon.h"
#include "loop.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static struct loop *loop;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct loop_hooks hooks;

	fuzz_daemon_init();
	daemon_loop_hooks(&fuzz_d, &hooks);
	if (loop_new(&hooks, fuzz_d.cfg ? fuzz_d.cfg->resync_interval : 0, &loop) < 0)
		abort();
	fuzz_d.loop = loop;
	return 0;
}

static void
uevent_line(void *arg, char *line, size_t len)
{
	char *f[6] = { NULL };
	char *save = NULL, *tok;
	int n = 0;

	if (len < 2 || line[0] != 'u' || line[1] != ' ')
		return;
	for (tok = strtok_r(line + 2, " ", &save); tok && n < 6; tok = strtok_r(NULL, " ", &save))
		f[n++] = tok;
	if (n < 5)
		return;
	daemon_uevent(&fuzz_d, f[0], f[1], strcmp(f[2], "-") == 0 ? NULL : f[2], f[3], f[4]);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data, *first_u = NULL;

	for (size_t i = 0; i + 2 <= size; i++)
		if (data[i] == 'u' && data[i + 1] == ' ' && (i == 0 || data[i - 1] == '\n')) {
			first_u = data + i;
			break;
		}
	fuzz_tree_clear();
	fuzz_sysfs_skeleton();
	fuzz_tree_apply(data, first_u ? (size_t)(first_u - data) : size, NULL, NULL);
	fuzz_daemon_scan();
	fuzz_d.burst_count = 0;
	fuzz_d.burst_resync = false;
	if (first_u) {
		p = first_u;
		/* Records and uevents in order: one line at a time. */
		while (p < data + size) {
			const uint8_t *end = memchr(p, '\n', (size_t)(data + size - p));
			size_t len = end ? (size_t)(end - p) : (size_t)(data + size - p);

			fuzz_tree_apply(p, len, uevent_line, NULL);
			p += len + 1;
		}
	}
	daemon_debounce_expired(&fuzz_d);
	json_decref(fuzz_d.iommu);
	fuzz_d.iommu = NULL;
	fuzz_daemon_unscan();
	return 0;
}
