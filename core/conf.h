/* SPDX-License-Identifier: MIT */
/* The JSON configuration file: parsed strictly, every error names its key. */
#ifndef HOSTDEVD_CONF_H
#define HOSTDEVD_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <jansson.h>

/* Which devices are offered to the kubelet, and under which name. A rule
 * matches when every selector it has matches. */
struct resource_rule {
	int vendor;			/* -1: any */
	int device;			/* -1: any */
	int class_code;			/* -1: any; 2 hex digits (base class) or 4 (with subclass) */
	int class_digits;
	char *address;			/* fnmatch(3) glob on the PCI address, or NULL */
	char *name;			/* resource name, or NULL for the default */
	bool advertise;
	bool claim;			/* claim matching devices at start and on hotplug */
	bool prefer_iommufd;		/* Allocate: /dev/iommu + vfio cdevs, not groups */
};

struct config {
	int log_level;			/* -1: not set in the file */
	int resync_interval;		/* seconds; 0 disables the periodic resync */
	int debounce_ms;		/* quiet time after a uevent burst */
	int control_max_clients;
	size_t control_max_output;	/* bytes queued to one client before it is dropped */
	size_t control_max_answer;	/* largest answer to one request or batch */
	size_t control_max_total_output; /* unsent output held for all clients together */
	int control_stall_timeout_s;	/* a client that reads nothing for this long is closed */
	char *control_group;		/* group allowed mutating methods, or NULL */
	gid_t control_gid;
	char **modules_disable;		/* NULL-terminated, never NULL */
	struct resource_rule *rules;
	size_t nrules;
	bool advertise_unlisted;	/* devices no rule matches: offered (default) */
	struct resource_rule *excludes;	/* never claimed, never offered */
	size_t nexcludes;
	int gpu_free_timeout_ms;	/* the pci module's wait for GPU node users */
	int release_timeout_ms;		/* unbind from vfio-pci may block this long */
	/* Top-level objects under other keys that may be a module's section
	 * ("sriov": {...}); the module loader checks each against its module,
	 * and a key no module takes is an unknown key. Never NULL. */
	json_t *sections;
};

/* A module's section, or NULL (borrowed). */
const json_t *config_section(const struct config *c, const char *module);

/* The first exclude entry matching a PCI function, or NULL. */
const struct resource_rule *config_match_exclude(const struct config *c, const char *address,
						 int vendor, int device, int class_code);

/* The first rule matching a PCI function, or NULL. */
const struct resource_rule *config_match_rule(const struct config *c, const char *address,
					      int vendor, int device, int class_code);

/* Loads `path`; a missing file gives the defaults. On error returns -errno
 * and writes a message naming the file and the key to errbuf. */
int config_load(const char *path, struct config **ret, char *errbuf, size_t errlen);
/* The same for SIGHUP: a missing file is an error (-ENOENT, errbuf says so),
 * so a configuration deleted or renamed by mistake keeps the running one
 * instead of turning into the defaults (no excludes, no rules). */
int config_reload(const char *path, struct config **ret, char *errbuf, size_t errlen);

/* Parses a configuration from a string (for tests and fuzzing). */
int config_parse(const char *text, size_t len, const char *origin, struct config **ret,
		 char *errbuf, size_t errlen);

struct config *config_defaults(void);
void config_free(struct config *c);
bool config_module_disabled(const struct config *c, const char *name);

#endif
