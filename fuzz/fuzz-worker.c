/* SPDX-License-Identifier: MIT */
/* Fuzz target: the worker's JSON protocol. The input is one message as the
 * worker receives it from the daemon; it is parsed the way the worker does
 * and handled over a small simulated sysfs tree (writes land in the tree,
 * "holders" scans this machine's /proc), and the reply is parsed back the
 * way the daemon does. Operations that run programs (modprobe, nvidia-smi)
 * are not run, and wait_free does not wait. */
#include "config.h"

#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

#include "fuzz-daemon.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static bool have_openat2;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct open_how how = { .flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC,
				.resolve = RESOLVE_BENEATH };
	int fd;

	fuzz_daemon_init();
	/* Without openat2 the worker falls back to a plain openat: then no
	 * path may climb out of the tree (this runs as root in CI). */
	fd = (int)syscall(SYS_openat2, fuzz_root_fd, ".", &how, sizeof(how));
	have_openat2 = fd >= 0;
	if (fd >= 0)
		close(fd);
	return 0;
}

static bool
safe(const json_t *req)
{
	const char *op = json_string_value(json_object_get(req, "op"));
	const char *path = json_string_value(json_object_get(req, "path"));

	if (op == NULL)
		return true;
	if (strcmp(op, "modprobe") == 0 || strcmp(op, "nvidia_pm") == 0)
		return false;
	if (strcmp(op, "write") == 0 && path && !have_openat2 &&
	    (path[0] == '/' || strstr(path, "..")))
		return false;
	return true;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *req, *reply, *back;
	char *text;

	fuzz_tree_clear();
	fuzz_host();
	/* The worker's side: what worker_main does with a message. */
	req = json_loadb((const char *)data, size, 0, NULL);
	if (req == NULL) {
		reply = json_pack("{s:i}", "result", -EINVAL);
	} else {
		if (!safe(req)) {
			json_decref(req);
			return 0;
		}
		if (json_object_get(req, "timeout_ms"))
			json_object_set_new(req, "timeout_ms", json_integer(0));
		reply = worker_handle(fuzz_root_fd, fuzz_dev_dir, req);
	}
	json_decref(req);
	text = json_dumps(reply, JSON_COMPACT);
	json_decref(reply);
	if (text == NULL)
		return 0;
	/* The daemon's side: what worker_read_cb takes from the reply. */
	back = json_loadb(text, strlen(text), 0, NULL);
	if (back == NULL) {
		fprintf(stderr, "the worker's reply does not parse: %s\n", text);
		abort();
	}
	(void)json_integer_value(json_object_get(back, "id"));
	(void)json_integer_value(json_object_get(back, "result"));
	json_decref(back);
	free(text);
	return 0;
}
