/* SPDX-License-Identifier: MIT */
/* Fuzz target: what protects the host's own devices. The mount table, swaps
 * and the IPv4/IPv6 route tables come from the input ("== mountinfo",
 * "== swaps", "== route", "== ipv6_route" start a section; the library's
 * fopen of those /proc files is redirected here, see Makefile.am), and the
 * sysfs side they are followed through (dev/block links and slaves/ of dm
 * and md, class/net with bonds' lower_* and bridges' brif/, class/graphics
 * framebuffers) comes from tree records (fuzz-tree.h) added to a small
 * host. Every PCI function is then checked. */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz-daemon.h"
#include "protect.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);
FILE *__real_fopen(const char *path, const char *mode);
FILE *__wrap_fopen(const char *path, const char *mode);

static const char *const sections[] = { "mountinfo", "swaps", "route", "ipv6_route" };
static const char *const proc_paths[] = { "/proc/self/mountinfo", "/proc/swaps",
					  "/proc/net/route", "/proc/net/ipv6_route" };
#define NSECTIONS (sizeof(sections) / sizeof(sections[0]))

FILE *
__wrap_fopen(const char *path, const char *mode)
{
	for (size_t i = 0; fuzz_root[0] && i < NSECTIONS; i++) {
		if (strcmp(path, proc_paths[i]) == 0) {
			char alt[512];

			snprintf(alt, sizeof(alt), "%s/proc-%s", fuzz_root, sections[i]);
			return __real_fopen(alt, mode);
		}
	}
	return __real_fopen(path, mode);
}

struct split {
	FILE *out[NSECTIONS];
	int current;
};

static void
section_line(void *arg, char *line, size_t len)
{
	struct split *s = arg;

	if (strncmp(line, "== ", 3) == 0) {
		s->current = -1;
		for (size_t i = 0; i < NSECTIONS; i++)
			if (strcmp(line + 3, sections[i]) == 0)
				s->current = (int)i;
		return;
	}
	if (s->current >= 0 && s->out[s->current]) {
		fwrite(line, 1, len, s->out[s->current]);
		fputc('\n', s->out[s->current]);
	}
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_daemon_init();
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct split s = { .current = -1 };
	char path[512], why[512];

	fuzz_tree_clear();
	fuzz_host();
	/* A section that is not in the input is a file that is not there. */
	for (size_t i = 0; i < NSECTIONS; i++) {
		char needle[32];

		snprintf(needle, sizeof(needle), "== %s\n", sections[i]);
		if (memmem(data, size, needle, strlen(needle)) == NULL)
			continue;
		snprintf(path, sizeof(path), "%s/proc-%s", fuzz_root, sections[i]);
		s.out[i] = __real_fopen(path, "we");
	}
	fuzz_tree_apply(data, size, section_line, &s);
	for (size_t i = 0; i < NSECTIONS; i++)
		if (s.out[i])
			fclose(s.out[i]);
	fuzz_daemon_scan();
	for (size_t i = 0; i < inventory_count(fuzz_d.inv); i++) {
		struct device *dev = inventory_at(fuzz_d.inv, i);

		why[0] = '\0';
		protect_check(fuzz_d.sys, fuzz_d.cfg, dev, why, sizeof(why));
	}
	fuzz_daemon_unscan();
	return 0;
}
