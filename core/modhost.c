/* SPDX-License-Identifier: MIT */
/* The core's services to modules (ABI v2): the ops table behind each handle. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "claim.h"
#include "ctl.h"
#include "dp-names.h"
#include "dp.h"
#include "inventory.h"
#include "fsroot.h"
#include "log.h"
#include "loop.h"
#include "modhost.h"
#include "module.h"
#include "protect.h"
#include "worker.h"

struct mh_call {
	struct module *m;
	int64_t id;
	hdd_worker_done_fn done;
	void *arg;
	struct mh_call *next;
};

struct mh_timer {
	struct module *m;
	int64_t id;
	void (*fn)(void *arg);
	void *arg;
	bool cancelled;
	struct mh_timer *next;
};

struct mh_resource {
	char *name;
	struct hdd_resource_member *v;	/* ids owned */
	size_t n;
};

/* A call into the IOMMU-group engine: the engine holds it until its job
 * ends, so a cancelled one stays (without done) until then. */
struct mh_ecall {
	struct module *m;
	int64_t id;
	hdd_worker_done_fn done;	/* NULL once cancelled */
	void *arg;
	json_t *now;		/* an answer that was ready at once, for the next turn */
	struct mh_ecall *next;
};

struct modhost {
	struct mh_ecall *ecalls;
	char last_error[512];	/* why its last refused engine call was refused */
	struct mh_call *calls;
	struct mh_timer *timers;
	struct mh_resource *res;
	size_t nres;
	int64_t next_id;
};

static struct module *
mod_of(struct hdd_core *core)
{
	return (struct module *)core;
}

static const struct modhost_env *
env_of(struct hdd_core *core)
{
	return mod_of(core)->env;
}

static struct modhost *
host_of(struct module *m)
{
	if (m->host == NULL) {
		m->host = calloc(1, sizeof(*m->host));
		if (m->host)
			m->host->next_id = 1;
	}
	return m->host;
}

/* --- the services v1 had --------------------------------------------------- */

static void core_log(struct hdd_core *core, enum hdd_log_level level, const char *module,
		     const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void
core_log(struct hdd_core *core, enum hdd_log_level level, const char *module, const char *fmt,
	 ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(level, module ? module : "module", fmt, ap);
	va_end(ap);
}

static const char *
core_node_name(struct hdd_core *core)
{
	return env_of(core)->node_name;
}

static int
core_iommu_group_foreach(struct hdd_core *core, int group,
			 void (*fn)(const struct hdd_device_view *dev, void *arg), void *arg)
{
	const struct modhost_env *e = env_of(core);
	struct device *members[256];
	size_t n = inventory_group_members(e->inv, group, members, 256);

	for (size_t i = 0; i < n && i < 256; i++) {
		struct hdd_device_view view;

		device_view(members[i], &view);
		fn(&view, arg);
	}
	return (int)n;
}

static bool
core_dev_exists(struct hdd_core *core, const char *rel)
{
	const struct modhost_env *e = env_of(core);

	if (e->dp)
		return dp_dev_exists(e->dp, rel);	/* group nodes cached, kept by inotify */
	return e->dev && fsroot_exists(e->dev, rel) == 0;
}

static int
core_pci_resource_name(struct hdd_core *core, const struct hdd_pci_facts *f, char *buf,
		       size_t size)
{
	dp_default_resource_name(f, buf, size);
	return 0;
}

/* --- since 2.0 --------------------------------------------------------------- */

static int
core_device_foreach(struct hdd_core *core, enum hdd_dev_class cls,
		    void (*fn)(const struct hdd_device_view *dev, void *arg), void *arg)
{
	const struct modhost_env *e = env_of(core);
	int n = 0;

	for (size_t i = 0; i < inventory_count(e->inv); i++) {
		struct device *dev = inventory_at(e->inv, i);
		struct hdd_device_view view;

		if (cls != HDD_DEV_NONE && dev->cls != cls)
			continue;
		device_view(dev, &view);
		fn(&view, arg);
		n++;
	}
	return n;
}

static int
core_host_needs(struct hdd_core *core, const char *id, char *why, size_t whylen)
{
	const struct modhost_env *e = env_of(core);
	struct device *dev = inventory_find(e->inv, HDD_DEV_PCI, id);
	const char *never;

	if (dev == NULL)
		return -ENOENT;
	never = hdd_pci_never_claimable(&dev->pci.f);
	if (never) {
		snprintf(why, whylen, "%s", never + 3);	/* past "is " */
		return 1;
	}
	return protect_check(e->sys, e->cfg, dev, why, whylen);
}

static void
call_unlink(struct modhost *h, struct mh_call *c)
{
	for (struct mh_call **p = &h->calls; *p; p = &(*p)->next) {
		if (*p == c) {
			*p = c->next;
			return;
		}
	}
}

static void
call_done_cb(void *arg, int result, const json_t *reply)
{
	struct mh_call *c = arg;
	hdd_worker_done_fn done = c->done;
	void *darg = c->arg;

	call_unlink(c->m->host, c);
	free(c);
	/* The module may start another call from here: unlinked first. */
	/* A module op answers under "out"; the core's own ops (holders) at
	 * the top of the reply. */
	if (done)
		done(darg, result, reply && json_object_get(reply, "out") ? json_object_get(reply, "out")
									   : reply);
}

static int64_t
call_submit(struct hdd_core *core, json_t *req, int timeout_ms, hdd_worker_done_fn done,
	    void *arg)
{
	struct module *m = mod_of(core);
	struct modhost *h = host_of(m);
	struct mh_call *c;
	int err;

	if (req == NULL || h == NULL) {
		json_decref(req);
		return -ENOMEM;
	}
	if (m->env->worker == NULL) {
		json_decref(req);
		return -EAGAIN;		/* before start: no worker yet */
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		json_decref(req);
		return -ENOMEM;
	}
	c->m = m;
	c->id = h->next_id++;
	c->done = done;
	c->arg = arg;
	c->next = h->calls;
	h->calls = c;
	err = worker_submit(m->env->worker, req, timeout_ms, call_done_cb, c);
	if (err < 0) {
		call_unlink(h, c);
		free(c);
		return err;
	}
	return c->id;
}

static int64_t
core_sysfs_write(struct hdd_core *core, const char *path, const char *value, int timeout_ms,
		 hdd_worker_done_fn done, void *arg)
{
	if (path == NULL || value == NULL || path[0] == '/')
		return -EINVAL;
	return call_submit(core, json_pack("{s:s, s:s, s:s}", "op", "write", "path", path, "value",
					   value), timeout_ms, done, arg);
}

static int64_t
core_worker_call(struct hdd_core *core, const char *op, const json_t *args, int timeout_ms,
		 hdd_worker_done_fn done, void *arg)
{
	struct module *m = mod_of(core);
	bool known = false;

	for (const struct hdd_worker_op *w = m->desc->worker_ops; w && w->name && !known; w++)
		known = strcmp(w->name, op) == 0;
	if (!known)
		return -ENOENT;
	if (m->path == NULL)
		return -EOPNOTSUPP;	/* built-in (tests): no file for the worker to load */
	/* The worker loads only this file, the one the daemon checked and loaded. */
	return call_submit(core, json_pack("{s:s, s:s, s:s, s:s, s:O}", "op", "module", "path",
					   m->path, "module", m->desc->name, "name", op, "args",
					   args ? (json_t *)args : json_object()),
			   timeout_ms, done, arg);
}

static void
core_call_cancel(struct hdd_core *core, int64_t id)
{
	struct module *m = mod_of(core);
	struct modhost *h = m->host;

	for (struct mh_ecall *c = h ? h->ecalls : NULL; c; c = c->next)
		if (c->id == id)
			c->done = NULL;

	for (struct mh_call *c = h ? h->calls : NULL; c; c = c->next) {
		if (c->id != id)
			continue;
		if (m->env->worker)
			worker_forget(m->env->worker, c);
		call_unlink(h, c);
		free(c);
		return;
	}
}

static void
timer_cb(void *arg)
{
	struct mh_timer *t = arg;
	struct modhost *h = t->m->host;

	for (struct mh_timer **p = &h->timers; *p; p = &(*p)->next) {
		if (*p == t) {
			*p = t->next;
			break;
		}
	}
	if (!t->cancelled)
		t->fn(t->arg);
	free(t);
}

static int64_t
core_timer_add(struct hdd_core *core, int ms, void (*fn)(void *arg), void *arg)
{
	struct module *m = mod_of(core);
	struct modhost *h = host_of(m);
	struct mh_timer *t;
	int err;

	if (h == NULL)
		return -ENOMEM;
	if (m->env->loop == NULL)
		return -EAGAIN;
	if (fn == NULL || ms < 0)
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return -ENOMEM;
	t->m = m;
	t->id = h->next_id++;
	t->fn = fn;
	t->arg = arg;
	err = loop_call_later(m->env->loop, ms, timer_cb, t);
	if (err < 0) {
		free(t);
		return err;
	}
	t->next = h->timers;
	h->timers = t;
	return t->id;
}

static void
core_timer_cancel(struct hdd_core *core, int64_t id)
{
	struct modhost *h = mod_of(core)->host;

	/* The loop's event stays; it finds the timer cancelled and frees it. */
	for (struct mh_timer *t = h ? h->timers : NULL; t; t = t->next)
		if (t->id == id)
			t->cancelled = true;
}

static const json_t *
core_state_get(struct hdd_core *core, int *err)
{
	struct module *m = mod_of(core);
	struct claims *c = m->env->claims;

	if (err)
		*err = claims_fail_closed(c) ? -EBADMSG : 0;
	return c ? claims_module_section(c, m->desc->name) : NULL;
}

static int
core_state_put(struct hdd_core *core, const json_t *section)
{
	struct module *m = mod_of(core);

	if (m->env->claims == NULL)
		return -EAGAIN;
	return claims_module_section_put(m->env->claims, m->desc->name, section);
}

static bool
core_rebooted(struct hdd_core *core)
{
	return claims_first_since_boot(env_of(core)->claims);
}

static void
core_emit(struct hdd_core *core, const char *event, json_t *params)
{
	struct module *m = mod_of(core);
	char type[96];

	if (params == NULL)
		params = json_object();
	if (params == NULL || !json_is_object(params) || event == NULL) {
		json_decref(params);
		return;
	}
	snprintf(type, sizeof(type), "%s.%.48s", m->desc->name, event);
	bus_publish(m->env->bus, m->desc->name, type, params);
}

static void core_reply_error(struct hdd_request *req, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
core_reply_error(struct hdd_request *req, int code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ctl_request_error(req, code, msg);
}

static void
core_resources_changed(struct hdd_core *core)
{
	const struct modhost_env *e = env_of(core);

	dp_resources_changed(e->dp);	/* recomputed once, at the end of this turn */
}

static void
resource_clear(struct mh_resource *r)
{
	for (size_t i = 0; i < r->n; i++)
		free((char *)r->v[i].id);
	free(r->v);
	r->v = NULL;
	r->n = 0;
}

static int
core_resource_set(struct hdd_core *core, const char *resource,
		  const struct hdd_resource_member *members, size_t n)
{
	struct module *m = mod_of(core);
	struct modhost *h = host_of(m);
	struct mh_resource *r = NULL;
	struct hdd_resource_member *v;

	if (h == NULL)
		return -ENOMEM;
	if (resource == NULL || strchr(resource, '/') == NULL || strlen(resource) >= 256)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (members[i].id == NULL || members[i].id[0] == '\0' ||
		    strlen(members[i].id) > HDD_ID_MAX)
			return -EINVAL;
	for (size_t i = 0; i < h->nres && r == NULL; i++)
		if (strcmp(h->res[i].name, resource) == 0)
			r = &h->res[i];
	if (r == NULL) {
		struct mh_resource *nv;

		if (n == 0)
			return 0;
		nv = realloc(h->res, (h->nres + 1) * sizeof(*nv));
		if (nv == NULL)
			return -ENOMEM;
		h->res = nv;
		r = &h->res[h->nres];
		memset(r, 0, sizeof(*r));
		r->name = strdup(resource);
		if (r->name == NULL)
			return -ENOMEM;
		h->nres++;
	}
	v = calloc(n ? n : 1, sizeof(*v));
	if (v == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		v[i] = members[i];
		v[i].id = strdup(members[i].id);
		if (v[i].id == NULL) {
			for (size_t k = 0; k < i; k++)
				free((char *)v[k].id);
			free(v);
			return -ENOMEM;
		}
	}
	resource_clear(r);
	r->v = v;
	r->n = n;
	core_resources_changed(core);
	return 0;
}

static int
core_sysfs_fd(struct hdd_core *core)
{
	const struct modhost_env *e = env_of(core);

	return e->sys ? fsroot_fd(e->sys) : -1;
}

static int
core_dev_fd(struct hdd_core *core)
{
	const struct modhost_env *e = env_of(core);

	return e->dev ? fsroot_fd(e->dev) : -1;
}

static int
core_dev_path(struct hdd_core *core, const char *rel, char *buf, size_t size)
{
	int n = snprintf(buf, size, "%s/%s", env_of(core)->dev_root, rel ? rel : "");

	return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static json_t *
string_list(const char *const *v)
{
	json_t *a = json_array();

	for (size_t i = 0; v && v[i] && a; i++)
		if (json_array_append_new(a, json_string(v[i])) < 0) {
			json_decref(a);
			return NULL;
		}
	return a;
}

static int64_t
core_holders(struct hdd_core *core, const char *const *paths, const char *const *prefixes,
	     int timeout_ms, hdd_worker_done_fn done, void *arg)
{
	json_t *p = string_list(paths), *x = string_list(prefixes);

	if (p == NULL || x == NULL) {
		json_decref(p);
		json_decref(x);
		return -ENOMEM;
	}
	return call_submit(core, json_pack("{s:s, s:o, s:o}", "op", "holders", "paths", p,
					   "prefixes", x), timeout_ms, done, arg);
}

/* --- the IOMMU-group engine (claim.c) -------------------------------------- */

static void
ecall_unlink(struct modhost *h, struct mh_ecall *c)
{
	for (struct mh_ecall **p = &h->ecalls; *p; p = &(*p)->next) {
		if (*p == c) {
			*p = c->next;
			return;
		}
	}
}

static void
ecall_finish(struct mh_ecall *c, int err, const char *message, json_t *result)
{
	hdd_worker_done_fn done = c->done;
	void *arg = c->arg;
	json_t *out = result;

	ecall_unlink(c->m->host, c);
	json_decref(c->now);
	free(c);
	if (err < 0) {
		json_decref(result);
		out = json_pack("{s:s}", "error", message ? message : strerror(-err));
	}
	if (done)
		done(arg, err, out);
	json_decref(out);
}

static void
ecall_done_cb(void *arg, int err, const char *message, json_t *result)
{
	ecall_finish(arg, err, message, result);
}

static void
ecall_now_cb(void *arg)
{
	struct mh_ecall *c = arg;
	json_t *now = c->now;

	c->now = NULL;
	ecall_finish(c, 0, NULL, now);
}

static struct mh_ecall *
ecall_new(struct hdd_core *core, hdd_worker_done_fn done, void *arg)
{
	struct module *m = mod_of(core);
	struct modhost *h = host_of(m);
	struct mh_ecall *c = h ? calloc(1, sizeof(*c)) : NULL;

	if (c == NULL)
		return NULL;
	c->m = m;
	c->id = h->next_id++;
	c->done = done;
	c->arg = arg;
	c->next = h->ecalls;
	h->ecalls = c;
	return c;
}

/* What claims_bind/claims_unbind said: started (the engine calls back),
 * done at once (answered on the next turn), or refused (why kept). */
static int64_t
ecall_started(struct mh_ecall *c, int err, json_t *now, const char *why)
{
	struct modhost *h = c->m->host;
	int64_t id = c->id;

	if (err == 1) {
		c->now = now;
		if (loop_call_later(c->m->env->loop, 0, ecall_now_cb, c) < 0) {
			ecall_unlink(h, c);
			json_decref(c->now);
			free(c);
			snprintf(h->last_error, sizeof(h->last_error), "cannot arm a timer");
			return -ENOMEM;
		}
		return id;
	}
	if (err < 0) {
		snprintf(h->last_error, sizeof(h->last_error), "%s", why);
		ecall_unlink(h, c);
		free(c);
		return err;
	}
	return id;
}

static int
engine_ready(struct hdd_core *core)
{
	struct module *m = mod_of(core);
	struct modhost *h = host_of(m);

	if (h == NULL)
		return -ENOMEM;
	h->last_error[0] = '\0';
	if (m->env->claims == NULL || m->env->worker == NULL || m->env->loop == NULL) {
		snprintf(h->last_error, sizeof(h->last_error), "the engine starts with the worker");
		return -EAGAIN;
	}
	return 0;
}

/* What a bind and an unbind check first: the engine is up, the arguments
 * make sense; then the call's record. Returns 0 with *ret or -errno. */
static int
ecall_prepare(struct hdd_core *core, const char *address, int timeout_ms,
	      hdd_worker_done_fn done, void *arg, struct mh_ecall **ret)
{
	int err = engine_ready(core);

	if (err < 0)
		return err;
	if (address == NULL || timeout_ms < 0)
		return -EINVAL;
	*ret = ecall_new(core, done, arg);
	return *ret ? 0 : -ENOMEM;
}

static int64_t
core_vfio_group_bind(struct hdd_core *core, const char *address, int timeout_ms,
		     hdd_worker_done_fn done, void *arg)
{
	struct module *m = mod_of(core);
	struct mh_ecall *c;
	char why[512] = "";
	json_t *now = NULL;
	int err = ecall_prepare(core, address, timeout_ms, done, arg, &c);

	if (err < 0)
		return err;
	err = claims_bind(m->env->claims, m->desc->name, address, timeout_ms, ecall_done_cb, c, &now,
			  why, sizeof(why));
	return ecall_started(c, err, now, why);
}

static int64_t
core_vfio_group_unbind(struct hdd_core *core, const char *address, bool force, int timeout_ms,
		       hdd_worker_done_fn done, void *arg)
{
	struct module *m = mod_of(core);
	struct mh_ecall *c;
	char why[512] = "";
	json_t *now = NULL;
	int err = ecall_prepare(core, address, timeout_ms, done, arg, &c);

	if (err < 0)
		return err;
	err = claims_unbind(m->env->claims, m->desc->name, address, force, timeout_ms, ecall_done_cb,
			    c, &now, why, sizeof(why));
	return ecall_started(c, err, now, why);
}

static int
core_vfio_group_holder(struct hdd_core *core, const char *address, char *owner, size_t size,
		       bool *allocated)
{
	if (address == NULL)
		return -EINVAL;
	return claims_holder(env_of(core)->claims, address, owner, size, allocated);
}

static json_t *
core_vfio_group_info(struct hdd_core *core, const char *address)
{
	struct module *m = mod_of(core);

	return address ? claims_member_json(m->env->claims, m->desc->name, address) : NULL;
}

static json_t *
core_vfio_group_list(struct hdd_core *core)
{
	struct module *m = mod_of(core);

	return m->env->claims ? claims_owner_json(m->env->claims, m->desc->name) : json_array();
}

static const char *
core_last_error(struct hdd_core *core)
{
	struct modhost *h = mod_of(core)->host;

	return h ? h->last_error : "";
}

static int
core_resource_rule(struct hdd_core *core, const char *id, char *name, size_t size, bool *claim)
{
	const struct modhost_env *e = env_of(core);
	struct device *dev = id ? inventory_find(e->inv, HDD_DEV_PCI, id) : NULL;
	const struct resource_rule *r;

	if (dev == NULL)
		return -ENOENT;
	r = config_match_rule(e->cfg, dev->id, dev->pci.f.vendor_id, dev->pci.f.device_id,
			      dev->pci.f.class_code);
	if (r == NULL)
		return 0;
	if (name && size)
		snprintf(name, size, "%s", r->name ? r->name : "");
	if (claim)
		*claim = r->claim;
	return 1;
}

static int
core_config_ms(struct hdd_core *core, const char *key)
{
	const struct config *cfg = env_of(core)->cfg;

	if (key && strcmp(key, "claims.gpu_free_timeout") == 0)
		return cfg->gpu_free_timeout_ms;
	if (key && strcmp(key, "claims.release_timeout") == 0)
		return cfg->release_timeout_ms;
	return -ENOENT;
}

static void
core_set_ready(struct hdd_core *core, bool ready, const char *reason)
{
	struct module *m = mod_of(core);
	char *copy = NULL;

	if (!ready && reason)
		copy = strndup(reason, 512);
	if (m->unready != !ready || (copy && (m->unready_reason == NULL ||
					       strcmp(copy, m->unready_reason) != 0)))
		log_info(m->desc->name, ready ? "ready%s" : "not ready: %s", ready ? "" : copy ? copy : "no reason given");
	free(m->unready_reason);
	m->unready_reason = copy;
	m->unready = !ready;
}

static int
core_proc_path(struct hdd_core *core, const char *rel, char *buf, size_t size)
{
	return proc_path(buf, size, rel ? rel : "");
}

static int
core_alloc_vfio_pci(struct hdd_core *core, struct hdd_alloc *a, const char *resource,
		    const struct hdd_device_view *const *devs, size_t n)
{
	char env[320], path[64], *value;
	bool all_cdevs = true;
	size_t len = 0;
	int err;

	for (size_t i = 0; i < n; i++)
		if (devs[i]->pci == NULL)
			return -EINVAL;
	value = calloc(n ? n : 1, 16);
	if (value == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(value + len, 16, "%s%s", i ? "," : "", devs[i]->pci->address);
	err = dp_env_name("PCI_RESOURCE", resource, env, sizeof(env));
	if (err == 0)
		err = dp_alloc_env(a, env, value);
	free(value);
	for (size_t i = 0; i < n; i++)
		all_cdevs &= devs[i]->pci->vfio_cdev != NULL;
	if (err == 0 && all_cdevs && dp_alloc_prefer_iommufd(a) && core_dev_exists(core, "iommu")) {
		/* seed 002, PreferIommuFD: the iommufd API device and the
		 * per-device cdevs instead of container and groups. */
		err = dp_alloc_device(a, "/dev/iommu", "/dev/iommu", "mrw");
		for (size_t i = 0; i < n && err == 0; i++) {
			snprintf(path, sizeof(path), "/dev/vfio/devices/%s", devs[i]->pci->vfio_cdev);
			err = dp_alloc_device(a, path, path, "mrw");
		}
		return err;
	}
	if (err == 0)
		err = dp_alloc_device(a, "/dev/vfio/vfio", "/dev/vfio/vfio", "mrw");
	for (size_t i = 0; i < n && err == 0; i++) {
		const struct hdd_pci_facts *f = devs[i]->pci;

		if (f->iommu_group < 0)
			return -ENODEV;
		snprintf(path, sizeof(path), "/dev/vfio/%d", f->iommu_group);
		err = dp_alloc_device(a, path, path, "mrw");
		if (err == 0 && f->vfio_cdev) {
			snprintf(path, sizeof(path), "/dev/vfio/devices/%s", f->vfio_cdev);
			err = dp_alloc_device(a, path, path, "mrw");
		}
	}
	return err;
}

const struct hdd_core_ops modhost_ops = {
	.size = sizeof(struct hdd_core_ops),
	.log = core_log,
	.node_name = core_node_name,
	.iommu_group_foreach = core_iommu_group_foreach,
	.dev_exists = core_dev_exists,
	.pci_resource_name = core_pci_resource_name,
	.env_name = dp_env_name,
	.alloc_env = dp_alloc_env,
	.alloc_device = dp_alloc_device,
	.alloc_mount = dp_alloc_mount,
	.alloc_prefer_iommufd = dp_alloc_prefer_iommufd,
	.device_foreach = core_device_foreach,
	.host_needs = core_host_needs,
	.sysfs_write = core_sysfs_write,
	.worker_call = core_worker_call,
	.call_cancel = core_call_cancel,
	.timer_add = core_timer_add,
	.timer_cancel = core_timer_cancel,
	.state_get = core_state_get,
	.state_put = core_state_put,
	.rebooted = core_rebooted,
	.emit = core_emit,
	.reply = ctl_request_reply,
	.reply_error = core_reply_error,
	.request_privileged = ctl_request_privileged,
	.resources_changed = core_resources_changed,
	.resource_set = core_resource_set,
	.sysfs_fd = core_sysfs_fd,
	.dev_fd = core_dev_fd,
	.dev_path = core_dev_path,
	.holders = core_holders,
	.vfio_group_bind = core_vfio_group_bind,
	.vfio_group_unbind = core_vfio_group_unbind,
	.vfio_group_holder = core_vfio_group_holder,
	.vfio_group_info = core_vfio_group_info,
	.vfio_group_list = core_vfio_group_list,
	.last_error = core_last_error,
	.resource_rule = core_resource_rule,
	.config_ms = core_config_ms,
	.resource_name_check = dp_resource_name_check,
	.set_ready = core_set_ready,
	.proc_path = core_proc_path,
	.alloc_vfio_pci = core_alloc_vfio_pci,
};

void
modhost_stop(struct module *m)
{
	struct modhost *h = m->host;

	/* Each call still in flight completes now, so its owner frees what it
	 * passed along (and its waiting client gets an answer). An engine call
	 * stays until its job ends, without a completion. */
	for (struct mh_ecall *c = h ? h->ecalls : NULL; c; c = c->next) {
		hdd_worker_done_fn done = c->done;

		c->done = NULL;
		if (done)
			done(c->arg, -ECANCELED, NULL);
	}
	while (h && h->calls) {
		struct mh_call *c = h->calls;
		hdd_worker_done_fn done = c->done;
		void *arg = c->arg;

		h->calls = c->next;
		if (m->env && m->env->worker)
			worker_forget(m->env->worker, c);
		free(c);
		if (done)
			done(arg, -ECANCELED, NULL);
	}
}

void
modhost_free(struct module *m)
{
	struct modhost *h = m->host;

	if (h == NULL)
		return;
	while (h->ecalls) {
		struct mh_ecall *c = h->ecalls;

		h->ecalls = c->next;
		json_decref(c->now);
		free(c);
	}
	while (h->calls) {
		struct mh_call *c = h->calls;

		h->calls = c->next;
		if (m->env && m->env->worker)
			worker_forget(m->env->worker, c);
		free(c);
	}
	/* The loop is gone by now (it is freed first): nothing fires. */
	while (h->timers) {
		struct mh_timer *t = h->timers;

		h->timers = t->next;
		free(t);
	}
	for (size_t i = 0; i < h->nres; i++) {
		resource_clear(&h->res[i]);
		free(h->res[i].name);
	}
	free(h->res);
	free(h);
	m->host = NULL;
}

size_t
modhost_member_count(const struct module_set *set)
{
	size_t n = 0;

	for (size_t i = 0; set && i < set->n; i++)
		for (size_t k = 0; set->v[i]->host && k < set->v[i]->host->nres; k++)
			n += set->v[i]->host->res[k].n;
	return n;
}

void
modhost_member_foreach(const struct module_set *set,
		       void (*fn)(const struct module *m, const char *resource,
				  const struct hdd_resource_member *member, void *arg),
		       void *arg)
{
	for (size_t i = 0; set && i < set->n; i++) {
		const struct module *m = set->v[i];

		if (!m->active || m->host == NULL)
			continue;
		for (size_t k = 0; k < m->host->nres; k++)
			for (size_t j = 0; j < m->host->res[k].n; j++)
				fn(m, m->host->res[k].name, &m->host->res[k].v[j], arg);
	}
}
