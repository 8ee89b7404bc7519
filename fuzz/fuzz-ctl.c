/* SPDX-License-Identifier: MIT */
/* Fuzz target: control-socket request lines (JSON-RPC, one per input line)
 * against a small simulated host with a live claim engine, as an
 * unprivileged and as a privileged peer. Claims and releases run to their
 * end through the in-process worker of fuzz-daemon.h. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "fuzz-daemon.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_daemon_init();
	/* Never dereferenced: every worker call goes to fuzz-daemon.h. */
	fuzz_d.worker = (struct worker *)&fuzz_d;
	return 0;
}

static void
handle(const char *line, size_t len)
{
	struct ctl_peer peers[2] = { { .uid = 1000, .gid = 1000, .serial = 1 },
				     { .uid = 0, .serial = 2 } };

	for (int i = 0; i < 2; i++) {
		json_t *resp = ctl_handle_line(fuzz_d.methods, &peers[i], line, len);

		if (resp) {
			char *text = json_dumps(resp, JSON_COMPACT);
			free(text);
			json_decref(resp);
		}
		fuzz_drain();
		json_decref(peers[i].event_types);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *line = data, *end;

	if (size > CTL_MAX_LINE)
		return 0;
	fuzz_tree_clear();
	fuzz_host();
	unlinkat(fuzz_state_fd, STATE_FILE, 0);
	fuzz_daemon_scan();
	fuzz_daemon_claims();
	{
		const struct ctl_env env = { .inv = fuzz_d.inv, .mods = fuzz_d.mods,
					     .claims = fuzz_d.claims, .bus = fuzz_d.bus,
					     .sys = fuzz_d.sys };

		if (ctl_new(&env, fuzz_d.cfg, &fuzz_d.methods) < 0)
			abort();
		ctl_attach(fuzz_d.methods, NULL, fuzz_d.worker, NULL);
	}
	/* Several requests in one input: a claim, then its release... */
	for (; line < data + size; line = end + 1) {
		end = memchr(line, '\n', (size_t)(data + size - line));
		if (end == NULL)
			end = data + size;
		handle((const char *)line, (size_t)(end - line));
	}
	fuzz_drain();
	ctl_free(fuzz_d.methods);
	fuzz_d.methods = NULL;
	claims_free(fuzz_d.claims);
	fuzz_d.claims = NULL;
	fuzz_daemon_unscan();
	return 0;
}
