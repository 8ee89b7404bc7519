/* SPDX-License-Identifier: MIT */
/* Fuzz target: the state.json loader and the claim records in it. The first
 * byte chooses how the rest becomes the file: as it is (torn, edited,
 * garbage: the checksum and framing checks), or parsed and written back with
 * a valid checksum by state_save (so the records themselves are fuzzed: the
 * claims loaded, checked against the simulated host and re-applied). */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-daemon.h"
#include "state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_daemon_init();
	fuzz_d.worker = (struct worker *)&fuzz_d;
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *state = NULL, *j;
	char why[256];
	int fd;

	if (size < 1)
		return 0;
	unlinkat(fuzz_state_fd, STATE_FILE, 0);
	if (data[0] & 1) {
		state = json_loadb((const char *)data + 1, size - 1, 0, NULL);
		if (!json_is_object(state) || state_save(fuzz_state_fd, state) < 0) {
			json_decref(state);
			return 0;
		}
		json_decref(state);
		state = NULL;
	} else {
		fd = openat(fuzz_state_fd, STATE_FILE, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (fd < 0)
			abort();
		if (write(fd, data + 1, size - 1) < 0)
			(void)0;
		close(fd);
	}
	if (state_load(fuzz_state_fd, &state, why, sizeof(why)) == 0)
		json_decref(state);

	/* The claim engine at start: load, then reconcile with the host
	 * (which the in-process worker changes: it is rebuilt each time). */
	fuzz_tree_clear();
	fuzz_host();
	fuzz_daemon_scan();
	fuzz_daemon_claims();
	j = claims_json(fuzz_d.claims, NULL);
	json_decref(j);
	if (data[0] & 2) {
		claims_reconcile(fuzz_d.claims, "fuzz");
		fuzz_drain();
		j = claims_json(fuzz_d.claims, NULL);
		json_decref(j);
	}
	claims_free(fuzz_d.claims);
	fuzz_d.claims = NULL;
	fuzz_daemon_unscan();
	return 0;
}
