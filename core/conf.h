/* SPDX-License-Identifier: MIT */
/* The JSON configuration file: parsed strictly, every error names its key. */
#ifndef HOSTDEVD_CONF_H
#define HOSTDEVD_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct config {
	int log_level;			/* -1: not set in the file */
	int resync_interval;		/* seconds; 0 disables the periodic resync */
	int debounce_ms;		/* quiet time after a uevent burst */
	int control_max_clients;
	size_t control_max_output;	/* bytes queued to one client before it is dropped */
	char *control_group;		/* group allowed mutating methods, or NULL */
	gid_t control_gid;
	char **modules_disable;		/* NULL-terminated, never NULL */
};

/* Loads `path`; a missing file gives the defaults. On error returns -errno
 * and writes a message naming the file and the key to errbuf. */
int config_load(const char *path, struct config **ret, char *errbuf, size_t errlen);

/* Parses a configuration from a string (for tests and fuzzing). */
int config_parse(const char *text, size_t len, const char *origin, struct config **ret,
		 char *errbuf, size_t errlen);

struct config *config_defaults(void);
void config_free(struct config *c);
bool config_module_disabled(const struct config *c, const char *name);

#endif
