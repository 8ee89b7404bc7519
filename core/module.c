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

#include "log.h"
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

static struct module *
set_append(struct module_set *set)
{
	struct module *v = realloc(set->v, (set->n + 1) * sizeof(*v));

	if (v == NULL)
		return NULL;
	set->v = v;
	memset(&v[set->n], 0, sizeof(v[0]));
	return &v[set->n++];
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
		if (&set->v[i] != self && set->v[i].active && strcmp(set->v[i].desc->name, name) == 0)
			return 1;
	return 0;
}

/* Descriptor checks and init, shared by loaded and built-in modules. */
static void
module_start(struct module_set *set, struct module *m, const struct config *cfg,
	     const struct hdd_core_ops *ops, struct hdd_core *core)
{
	const struct hdd_module *d = m->desc;
	int err;

	if (d->abi_version != HDD_MODULE_ABI_VERSION) {
		module_fail(m, "ABI version %u, daemon has %u", d->abi_version,
			    HDD_MODULE_ABI_VERSION);
		m->desc = NULL;
		return;
	}
	if (!module_name_valid(d->name)) {
		module_fail(m, "invalid module name");
		m->desc = NULL;
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
	if (d->init) {
		err = d->init(ops, core, &m->state);
		if (err < 0) {
			module_fail(m, "init failed: %s", strerror(-err));
			return;
		}
	}
	m->active = 1;
	log_info("module", "loaded %s (%s)", d->name, m->path ? m->path : "built-in");
}

static int
so_filter(const struct dirent *de)
{
	size_t len = strlen(de->d_name);

	return de->d_name[0] != '.' && len > 3 && strcmp(de->d_name + len - 3, ".so") == 0;
}

static void
load_one(struct module_set *set, struct module *m, const struct config *cfg,
	 const struct hdd_core_ops *ops, struct hdd_core *core)
{
	struct stat st;
	void *sym;

	if (lstat(m->path, &st) < 0) {
		module_fail(m, "%s", strerror(errno));
		return;
	}
	if (!S_ISREG(st.st_mode)) {
		module_fail(m, "not a regular file");
		return;
	}
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		module_fail(m, "writable by group or others; refusing to load");
		return;
	}
	if (st.st_uid != 0 && st.st_uid != geteuid()) {
		module_fail(m, "owned by uid %u; refusing to load", (unsigned)st.st_uid);
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
	m->desc = sym;
	module_start(set, m, cfg, ops, core);
}

int
modules_load_dir(const char *dir, const struct config *cfg, const struct hdd_core_ops *ops,
		 struct hdd_core *core, struct module_set **ret)
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

		if (m == NULL || asprintf(&m->path, "%s/%s", dir, names[i]->d_name) < 0) {
			if (m)
				m->path = NULL;
			for (int j = i; j < n; j++)
				free(names[j]);
			free(names);
			modules_free(set);
			return -ENOMEM;
		}
		load_one(set, m, cfg, ops, core);
		free(names[i]);
	}
	free(names);
	*ret = set;
	return 0;
}

int
modules_add_builtin(struct module_set *set, const struct hdd_module *desc,
		    const struct hdd_core_ops *ops, struct hdd_core *core)
{
	struct module *m = set_append(set);

	if (m == NULL)
		return -ENOMEM;
	m->desc = desc;
	module_start(set, m, NULL, ops, core);
	return m->active ? 0 : -EINVAL;
}

void
modules_free(struct module_set *set)
{
	if (set == NULL)
		return;
	for (size_t i = 0; i < set->n; i++) {
		struct module *m = &set->v[i];

		if (m->active && m->desc->fini)
			m->desc->fini(m->state);
		if (m->handle)
			dlclose(m->handle);
		free(m->path);
		free(m->error);
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
		const struct module *m = &set->v[i];
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
