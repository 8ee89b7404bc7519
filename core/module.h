/* SPDX-License-Identifier: MIT */
/* Loading device-class modules with dlopen and dispatching to their hooks. */
#ifndef HOSTDEVD_MODULE_LOADER_H
#define HOSTDEVD_MODULE_LOADER_H

#include <jansson.h>
#include "hostdevd/module.h"
#include "conf.h"

struct modhost;
struct modhost_env;

struct module {
	struct hdd_module copy;		/* the descriptor, zero past the module's size */
	const struct hdd_module *desc;	/* &copy once its ABI is accepted, else NULL */
	uint32_t abi_major, abi_minor;	/* as the module declared them */
	void *handle;			/* dlopen handle, NULL for built-in (tests) */
	char *path;
	void *state;
	char *error;			/* why it is not active, or NULL */
	int active;
	bool unready;			/* the module said it cannot work now (set_ready) */
	char *unready_reason;
	const struct modhost_env *env;	/* what its services work with (modhost.h) */
	struct modhost *host;		/* timers, calls, resource members it holds */
};

struct module_set {
	struct module **v;		/* stable: a module's address is its handle */
	size_t n;
	char config_error[512];		/* a section refused at start: fatal */
};

/* Loads every "*.so" in `dir` (sorted by name) that passes the checks:
 * regular file, not writable by group or others, owned by root or us, ABI
 * major match, unique name, its configuration section accepted, init
 * succeeds. Modules that fail are kept with `error` set so modules.list can
 * say why. A missing directory gives an empty set. Returns 0 or -ENOMEM. */
int modules_load_dir(const char *dir, const struct config *cfg, const struct hdd_core_ops *ops,
		     const struct modhost_env *env, struct module_set **ret);

/* Checks a module file as the loader does (regular, not writable by group
 * or others, owned by root or us). Returns 0 or -errno with why. */
int module_file_check(const char *path, char *why, size_t whylen);

/* Adds a module from a descriptor in memory (tests). */
int modules_add_builtin(struct module_set *set, const struct hdd_module *desc,
			const struct hdd_core_ops *ops, const struct modhost_env *env);

void modules_free(struct module_set *set);

/* The active module whose probe scores highest for `view`, or NULL. */
const struct module *modules_probe(const struct module_set *set,
				   const struct hdd_device_view *view);

/* The module's description of a device it owns, as a new object (NULL when
 * it has no describe hook or it failed). */
json_t *module_describe(const struct module *m, const struct hdd_device_view *view);

/* The active module with this name, or NULL. */
struct module *modules_find(const struct module_set *set, const char *name);

/* The control method `name` of an active module, or NULL. */
const struct hdd_method *modules_find_method(const struct module_set *set, const char *name,
					     struct module **ret_module);

/* Whether any module (loaded or not) is named `name`: a configuration
 * section of that name is then the module's, not an unknown key. */
bool modules_known(const struct module_set *set, const char *name);

/* SIGHUP: every active module's config_check on its new section, and only
 * when all pass, each reload hook. Returns 0, or -EINVAL with why. */
int modules_reload(struct module_set *set, const struct config *cfg, char *why, size_t whylen);

/* Hooks in turn for every active module. */
void modules_start(struct module_set *set);
void modules_stop(struct module_set *set);
void modules_device_event(const struct module *owner, enum hdd_device_event ev,
			  const struct hdd_device_view *view);
/* A uevent of a subsystem the core does not model: to each module that
 * asked for it. Returns how many took it. */
int modules_uevent(struct module_set *set, const char *action, const char *subsystem,
		   const char *sysname, const char *devpath);
/* The union of the active modules' udev subsystems plus the core's own, as
 * a NULL-terminated array (free the array, not the strings). */
const char **modules_subsystems(const struct module_set *set);

/* What the rest of the core asks of a module: it reads no member of
 * struct module (only module.c and modhost.c, the module host, do). */
const char *module_name(const struct module *m);	/* NULL before its ABI is accepted */
size_t modules_count(const struct module_set *set);
const struct module *modules_at(const struct module_set *set, size_t i);
size_t modules_active(const struct module_set *set);

/* modules.list's facts of one module (borrowed strings). */
struct module_info {
	const char *name, *description, *path;
	uint32_t abi_major;
	bool active;
	const char *error;		/* why it is not active */
	bool ready;			/* set_ready */
	const char *reason;		/* why it is not ready */
	const char *const *subsystems;
	const struct hdd_method *methods;
};
void module_info(const struct module *m, struct module_info *out);

/* The module's hooks; -EOPNOTSUPP when it is inactive or has none. */
bool module_advertises(const struct module *m);
int module_advertise(const struct module *m, const struct hdd_device_view *view, char *name,
		     size_t size, bool *healthy);
int module_allocate(const struct module *m, const char *resource,
		    const struct hdd_device_view *const *views, size_t n, struct hdd_alloc *alloc);
bool module_lists_held(const struct module *m);
int module_list_held(const struct module *m, json_t *list);
int module_call(const struct module *m, const struct hdd_method *method, struct hdd_request *req,
		json_t *params);

/* The modules' event hooks: whether any has one, and an event to every
 * active module with one but `origin` (the module that emitted it). */
bool modules_want_events(const struct module_set *set);
void modules_event(const struct module_set *set, const char *origin, const char *type,
		   const json_t *params);

/* "2.0": the ABI a module declared. */
void module_abi_string(const struct module *m, char *buf, size_t size);

#endif
