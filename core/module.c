/* SPDX-License-Identifier: MIT */
/* Loading device-class modules with dlopen and dispatching to their hooks. */
#include "config.h"

#include <ctype.h>
#include <stdarg.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ctl.h"
#include "log.h"
#include "modhost.h"
#include "module.h"

static int
module_name_valid(const char *name)
{
	if (name == NULL || name[0] == '\0' || strlen(name) > 32)
		return 0;
	for (const char *p = name; *p; p++)
		if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p)))
			return 0;
	return 1;
}

/* Modules are allocated one by one: a module's address is the handle the
 * core gave it, so it must never move. */
static struct module *
set_append(struct module_set *set)
{
	struct module **v = realloc(set->v, (set->n + 1) * sizeof(*v));
	struct module *m;

	if (v == NULL)
		return NULL;
	set->v = v;
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		return NULL;
	v[set->n++] = m;
	return m;
}

static void
module_fail(struct module *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
module_fail(struct module *m, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	free(m->error);
	m->error = strdup(buf);
	log_warnx("module", "%s: %s", m->path ? m->path : "(built-in)", buf);
}

static int
name_taken(const struct module_set *set, const struct module *self, const char *name)
{
	for (size_t i = 0; i < set->n; i++)
		if (set->v[i] != self && set->v[i]->active && strcmp(set->v[i]->desc->name, name) == 0)
			return 1;
	return 0;
}

/* The fields every major has: where the version and the size are. */
struct abi_head {
	uint32_t major, minor, size;
};

/* Method names are "<module>.<verb>" and unique among the module's own. */
static const char *
methods_invalid(const struct hdd_module *d)
{
	size_t len = strlen(d->name);

	for (const struct hdd_method *m = d->methods; m && m->name; m++) {
		if (strncmp(m->name, d->name, len) != 0 || m->name[len] != '.' ||
		    m->name[len + 1] == '\0' || m->call == NULL || m->params == NULL ||
		    ctl_core_method(m->name))
			return m->name;
		for (const struct hdd_method *o = d->methods; o != m; o++)
			if (strcmp(o->name, m->name) == 0)
				return m->name;
	}
	return NULL;
}

/* Copies a descriptor of an accepted major: fields past the module's size
 * (an older minor) stay NULL. Returns 0 or -EINVAL with the reason set. */
static int
module_accept(struct module *m, const void *sym)
{
	struct abi_head head;
	size_t size;

	memcpy(&head, sym, sizeof(head));
	m->abi_major = head.major;
	m->abi_minor = head.major == HDD_MODULE_ABI_MAJOR ? head.minor : 0;
	if (head.major != HDD_MODULE_ABI_MAJOR) {
		module_fail(m, "built for module ABI %u, this daemon speaks ABI %u.%u: rebuild the module against this hostdevd",
			    head.major, HDD_MODULE_ABI_MAJOR, HDD_MODULE_ABI_MINOR);
		return -EINVAL;
	}
	size = head.size;
	if (size < offsetof(struct hdd_module, methods)) {
		module_fail(m, "descriptor of %zu bytes is too short for ABI %u", size, head.major);
		return -EINVAL;
	}
	if (size > sizeof(m->copy)) {
		if (head.minor <= HDD_MODULE_ABI_MINOR) {
			module_fail(m, "descriptor of %zu bytes is larger than ABI %u.%u's", size,
				    head.major, head.minor);
			return -EINVAL;
		}
		size = sizeof(m->copy);	/* a newer minor: its extra fields are unknown here */
	}
	memset(&m->copy, 0, sizeof(m->copy));
	memcpy(&m->copy, sym, size);
	m->copy.size = (uint32_t)size;
	m->desc = &m->copy;
	return 0;
}

/* Descriptor checks, configuration and init, shared by loaded and built-in
 * modules. */
static void
module_start(struct module_set *set, struct module *m, const struct config *cfg,
	     const struct hdd_core_ops *ops, const void *sym)
{
	const struct hdd_module *d;
	const json_t *section;
	const char *bad;
	char why[400] = "";
	int err;

	if (module_accept(m, sym) < 0)
		return;
	d = m->desc;
	if (!module_name_valid(d->name)) {
		module_fail(m, "invalid module name");
		m->desc = NULL;
		return;
	}
	if ((bad = methods_invalid(d)) != NULL) {
		module_fail(m, "method \"%.64s\" is not \"%s.<verb>\" with a call and a parameter list, is declared twice or is the core's",
			    bad, d->name);
		return;
	}
	if (name_taken(set, m, d->name)) {
		module_fail(m, "a module named \"%s\" is already loaded", d->name);
		return;
	}
	if (cfg && config_module_disabled(cfg, d->name)) {
		module_fail(m, "disabled in the configuration");
		return;
	}
	section = cfg ? config_section(cfg, d->name) : NULL;
	if (section && d->config_check == NULL) {
		snprintf(set->config_error, sizeof(set->config_error),
			 "%s: module %s takes no configuration", d->name, d->name);
		module_fail(m, "%s", set->config_error);
		return;
	}
	if (d->config_check && (err = d->config_check(section, why, sizeof(why))) < 0) {
		snprintf(set->config_error, sizeof(set->config_error), "%s",
			 why[0] ? why : strerror(-err));
		module_fail(m, "configuration refused: %s", set->config_error);
		return;
	}
	if (d->init) {
		err = d->init(ops, (struct hdd_core *)m, section, &m->state);
		if (err < 0) {
			module_fail(m, "init failed: %s", strerror(-err));
			return;
		}
	}
	m->active = 1;
	log_info("module", "loaded %s (%s), ABI %u.%u", d->name, m->path ? m->path : "built-in",
		 m->abi_major, m->abi_minor);
}

int
module_file_check(const char *path, char *why, size_t whylen)
{
	struct stat st;

	if (lstat(path, &st) < 0) {
		snprintf(why, whylen, "%s", strerror(errno));
		return -errno;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(why, whylen, "not a regular file");
		return -EPERM;
	}
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		snprintf(why, whylen, "writable by group or others; refusing to load");
		return -EPERM;
	}
	if (st.st_uid != 0 && st.st_uid != geteuid()) {
		snprintf(why, whylen, "owned by uid %u; refusing to load", (unsigned)st.st_uid);
		return -EPERM;
	}
	return 0;
}

static int
so_filter(const struct dirent *de)
{
	size_t len = strlen(de->d_name);

	return de->d_name[0] != '.' && len > 3 && strcmp(de->d_name + len - 3, ".so") == 0;
}

static void
load_one(struct module_set *set, struct module *m, const struct config *cfg,
	 const struct hdd_core_ops *ops)
{
	char why[256];
	void *sym;

	if (module_file_check(m->path, why, sizeof(why)) < 0) {
		module_fail(m, "%s", why);
		return;
	}
	dlerror();
	m->handle = dlopen(m->path, RTLD_NOW | RTLD_LOCAL);
	if (m->handle == NULL) {
		module_fail(m, "dlopen: %s", dlerror());
		return;
	}
	dlerror();
	sym = dlsym(m->handle, HDD_MODULE_SYMBOL);
	if (sym == NULL) {
		const char *e = dlerror();
		module_fail(m, "no symbol %s%s%s", HDD_MODULE_SYMBOL, e ? ": " : "", e ? e : "");
		return;
	}
	module_start(set, m, cfg, ops, sym);
}

int
modules_load_dir(const char *dir, const struct config *cfg, const struct hdd_core_ops *ops,
		 const struct modhost_env *env, struct module_set **ret)
{
	struct module_set *set = calloc(1, sizeof(*set));
	struct dirent **names = NULL;
	int n;

	if (set == NULL)
		return -ENOMEM;
	n = scandir(dir, &names, so_filter, alphasort);
	if (n < 0) {
		log_warn("module", "cannot list module directory %s; no modules loaded", dir);
		*ret = set;
		return 0;
	}
	for (int i = 0; i < n; i++) {
		struct module *m = set_append(set);

		if (m)
			m->env = env;
		if (m == NULL || asprintf(&m->path, "%s/%s", dir, names[i]->d_name) < 0) {
			if (m)
				m->path = NULL;
			for (int j = i; j < n; j++)
				free(names[j]);
			free(names);
			modules_free(set);
			return -ENOMEM;
		}
		load_one(set, m, cfg, ops);
		free(names[i]);
	}
	free(names);
	*ret = set;
	return 0;
}

int
modules_add_builtin(struct module_set *set, const struct hdd_module *desc,
		    const struct hdd_core_ops *ops, const struct modhost_env *env)
{
	struct module *m = set_append(set);

	if (m == NULL)
		return -ENOMEM;
	m->env = env;
	module_start(set, m, NULL, ops, desc);
	return m->active ? 0 : -EINVAL;
}

void
modules_free(struct module_set *set)
{
	if (set == NULL)
		return;
	for (size_t i = 0; i < set->n; i++) {
		struct module *m = set->v[i];

		if (m->active && m->desc->fini)
			m->desc->fini(m->state);
		modhost_free(m);
		if (m->handle)
			dlclose(m->handle);
		free(m->path);
		free(m->error);
		free(m->unready_reason);
		free(m);
	}
	free(set->v);
	free(set);
}

const struct module *
modules_probe(const struct module_set *set, const struct hdd_device_view *view)
{
	const struct module *best = NULL;
	int best_score = 0;

	for (size_t i = 0; set && i < set->n; i++) {
		const struct module *m = set->v[i];
		int score;

		if (!m->active || m->desc->probe == NULL)
			continue;
		score = m->desc->probe(m->state, view);
		if (score > best_score) {
			best = m;
			best_score = score;
		}
	}
	return best;
}

json_t *
module_describe(const struct module *m, const struct hdd_device_view *view)
{
	json_t *out;

	if (m == NULL || !m->active || m->desc->describe == NULL)
		return NULL;
	out = json_object();
	if (out == NULL)
		return NULL;
	if (m->desc->describe(m->state, view, out) < 0) {
		json_decref(out);
		return NULL;
	}
	return out;
}

struct module *
modules_find(const struct module_set *set, const char *name)
{
	for (size_t i = 0; set && i < set->n; i++)
		if (set->v[i]->active && strcmp(set->v[i]->desc->name, name) == 0)
			return set->v[i];
	return NULL;
}

const struct hdd_method *
modules_find_method(const struct module_set *set, const char *name, struct module **ret_module)
{
	const char *dot = strchr(name, '.');

	for (size_t i = 0; dot && set && i < set->n; i++) {
		struct module *m = set->v[i];

		if (!m->active || strncmp(m->desc->name, name, (size_t)(dot - name)) != 0 ||
		    m->desc->name[dot - name] != '\0')
			continue;
		for (const struct hdd_method *x = m->desc->methods; x && x->name; x++) {
			if (strcmp(x->name, name) == 0) {
				*ret_module = m;
				return x;
			}
		}
	}
	return NULL;
}

bool
modules_known(const struct module_set *set, const char *name)
{
	for (size_t i = 0; set && i < set->n; i++)
		if (set->v[i]->desc && strcmp(set->v[i]->desc->name, name) == 0)
			return true;
	return false;
}

int
modules_reload(struct module_set *set, const struct config *cfg, char *why, size_t whylen)
{
	const char *key;
	json_t *v;

	json_object_foreach(cfg->sections, key, v) {
		if (!modules_known(set, key)) {
			snprintf(why, whylen, "%s: unknown key", key);
			return -EINVAL;
		}
	}
	/* All or nothing: every section is checked before any is applied. */
	for (size_t i = 0; set && i < set->n; i++) {
		const struct module *m = set->v[i];
		const json_t *section;
		int err;

		if (!m->active)
			continue;
		section = config_section(cfg, m->desc->name);
		if (section && m->desc->config_check == NULL) {
			snprintf(why, whylen, "%s: module %s takes no configuration", m->desc->name,
				 m->desc->name);
			return -EINVAL;
		}
		if (m->desc->config_check &&
		    (err = m->desc->config_check(section, why, whylen)) < 0)
			return err;
	}
	for (size_t i = 0; set && i < set->n; i++) {
		const struct module *m = set->v[i];

		if (m->active && m->desc->reload)
			m->desc->reload(m->state, config_section(cfg, m->desc->name));
	}
	return 0;
}

void
modules_start(struct module_set *set)
{
	for (size_t i = 0; set && i < set->n; i++) {
		const struct module *m = set->v[i];
		int err;

		if (!m->active || m->desc->start == NULL)
			continue;
		err = m->desc->start(m->state);
		if (err < 0)
			log_warnx("module", "%s: start failed (%s); carrying on with what it has",
				  m->desc->name, strerror(-err));
	}
}

void
modules_stop(struct module_set *set)
{
	for (size_t i = 0; set && i < set->n; i++) {
		struct module *m = set->v[i];

		if (!m->active)
			continue;
		if (m->desc->stop)
			m->desc->stop(m->state);
		modhost_stop(m);
	}
}

void
modules_device_event(const struct module *owner, enum hdd_device_event ev,
		     const struct hdd_device_view *view)
{
	if (owner && owner->active && owner->desc->device_event)
		owner->desc->device_event(owner->state, ev, view);
}

static bool
wants_subsystem(const struct module *m, const char *subsystem)
{
	for (const char *const *s = m->desc->subsystems; s && *s; s++)
		if (strcmp(*s, subsystem) == 0)
			return true;
	return false;
}

int
modules_uevent(struct module_set *set, const char *action, const char *subsystem,
	       const char *sysname, const char *devpath)
{
	int n = 0;

	for (size_t i = 0; set && i < set->n; i++) {
		const struct module *m = set->v[i];

		if (!m->active || m->desc->uevent == NULL || !wants_subsystem(m, subsystem))
			continue;
		m->desc->uevent(m->state, action, subsystem, sysname, devpath);
		n++;
	}
	return n;
}

const char **
modules_subsystems(const struct module_set *set)
{
	static const char *const core[] = { "pci", "usb", "mdev" };
	size_t max = 3, n = 0;
	const char **v;

	for (size_t i = 0; set && i < set->n; i++)
		for (const char *const *s = set->v[i]->active ? set->v[i]->desc->subsystems : NULL;
		     s && *s; s++)
			max++;
	v = calloc(max + 1, sizeof(*v));
	if (v == NULL)
		return NULL;
	for (size_t i = 0; i < 3; i++)
		v[n++] = core[i];
	for (size_t i = 0; set && i < set->n; i++) {
		for (const char *const *s = set->v[i]->active ? set->v[i]->desc->subsystems : NULL;
		     s && *s; s++) {
			bool dup = false;

			for (size_t k = 0; k < n; k++)
				dup |= strcmp(v[k], *s) == 0;
			if (!dup)
				v[n++] = *s;
		}
	}
	return v;
}

void
module_abi_string(const struct module *m, char *buf, size_t size)
{
	snprintf(buf, size, "%u.%u", m->abi_major, m->abi_minor);
}

/* --- what the rest of the core asks of a module --------------------------- */

const char *
module_name(const struct module *m)
{
	return m && m->desc ? m->desc->name : NULL;
}

size_t
modules_count(const struct module_set *set)
{
	return set ? set->n : 0;
}

const struct module *
modules_at(const struct module_set *set, size_t i)
{
	return set && i < set->n ? set->v[i] : NULL;
}

size_t
modules_active(const struct module_set *set)
{
	size_t n = 0;

	for (size_t i = 0; set && i < set->n; i++)
		n += set->v[i]->active != 0;
	return n;
}

void
module_info(const struct module *m, struct module_info *out)
{
	memset(out, 0, sizeof(*out));
	out->name = module_name(m);
	out->description = m->desc ? m->desc->description : NULL;
	out->path = m->path;
	out->abi_major = m->abi_major;
	out->active = m->active != 0;
	out->error = m->error;
	out->ready = !m->unready;
	out->reason = m->unready ? m->unready_reason : NULL;
	out->subsystems = m->desc ? m->desc->subsystems : NULL;
	out->methods = m->desc ? m->desc->methods : NULL;
}

bool
module_advertises(const struct module *m)
{
	return m && m->active && m->desc->advertise;
}

int
module_advertise(const struct module *m, const struct hdd_device_view *view, char *name,
		 size_t size, bool *healthy)
{
	if (!module_advertises(m))
		return -EOPNOTSUPP;
	return m->desc->advertise(m->state, view, name, size, healthy);
}

int
module_allocate(const struct module *m, const char *resource,
		const struct hdd_device_view *const *views, size_t n, struct hdd_alloc *alloc)
{
	if (m == NULL || !m->active || m->desc->allocate == NULL)
		return -EOPNOTSUPP;
	return m->desc->allocate(m->state, resource, views, n, alloc);
}

bool
module_lists_held(const struct module *m)
{
	return m && m->active && m->desc->list_held;
}

int
module_list_held(const struct module *m, json_t *list)
{
	if (!module_lists_held(m))
		return -EOPNOTSUPP;
	return m->desc->list_held(m->state, list);
}

int
module_call(const struct module *m, const struct hdd_method *method, struct hdd_request *req,
	    json_t *params)
{
	return method->call(m->state, req, params);
}

bool
modules_want_events(const struct module_set *set)
{
	for (size_t i = 0; set && i < set->n; i++)
		if (set->v[i]->active && set->v[i]->desc && set->v[i]->desc->event)
			return true;
	return false;
}

void
modules_event(const struct module_set *set, const char *origin, const char *type,
	      const json_t *params)
{
	for (size_t i = 0; set && i < set->n; i++) {
		const struct module *m = set->v[i];

		if (!m->active || m->desc == NULL || m->desc->event == NULL ||
		    (origin && strcmp(origin, m->desc->name) == 0))
			continue;
		m->desc->event(m->state, type, params);
	}
}
