/* SPDX-License-Identifier: MIT */
/* Loading device-class modules with dlopen and dispatching to their hooks. */
#ifndef HOSTDEVD_MODULE_LOADER_H
#define HOSTDEVD_MODULE_LOADER_H

#include <jansson.h>
#include "hostdevd/module.h"
#include "conf.h"

struct module {
	const struct hdd_module *desc;
	void *handle;			/* dlopen handle, NULL for built-in (tests) */
	char *path;
	void *state;
	char *error;			/* why it is not active, or NULL */
	int active;
};

struct module_set {
	struct module *v;
	size_t n;
};

/* Loads every "*.so" in `dir` (sorted by name) that passes the checks:
 * regular file, not writable by group or others, owned by root or us, ABI
 * version match, unique name, init succeeds. Modules that fail are kept
 * with `error` set so modules.list can say why. A missing directory gives an
 * empty set. Returns 0 or -ENOMEM. */
int modules_load_dir(const char *dir, const struct config *cfg, const struct hdd_core_ops *ops,
		     struct hdd_core *core, struct module_set **ret);

/* Adds a module from a descriptor in memory (tests). */
int modules_add_builtin(struct module_set *set, const struct hdd_module *desc,
			const struct hdd_core_ops *ops, struct hdd_core *core);

void modules_free(struct module_set *set);

/* The active module whose probe scores highest for `view`, or NULL. */
const struct module *modules_probe(const struct module_set *set,
				   const struct hdd_device_view *view);

/* The module's description of a device it owns, as a new object (NULL when
 * it has no describe hook or it failed). */
json_t *module_describe(const struct module *m, const struct hdd_device_view *view);

#endif
