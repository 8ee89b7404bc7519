/* SPDX-License-Identifier: MIT */
/* JSON-RPC 2.0 on the control socket: request parsing, errors, method table. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "ctl-server.h"
#include "ctl.h"
#include "claim.h"
#include "conf.h"
#include "fsroot.h"
#include "inventory.h"
#include "module.h"
#include "dp.h"
#include "log.h"
#include "loop.h"
#include "scan.h"
#include "sysfs.h"
#include "worker.h"

/* A handler returns the result, or NULL after filling *code and *msg. */
/* What a method returns when its answer comes later (ctl_server_send_to). */
#define CTL_PENDING ((json_t *)&ctl_pending_marker)
static int ctl_pending_marker;

static void ctl_jobs_free(struct ctl *c);

/* The core's control methods and what they answer from. */
struct ctl {
	struct ctl_env env;
	const struct config *cfg;
	struct loop *loop;
	struct worker *worker;
	struct ctl_server *server;
	struct ctl_list_job *list_jobs;	/* whole devices.list answers being built */
};

int
ctl_new(const struct ctl_env *env, const struct config *cfg, struct ctl **ret)
{
	struct ctl *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return -ENOMEM;
	c->env = *env;
	c->cfg = cfg;
	*ret = c;
	return 0;
}

void
ctl_attach(struct ctl *c, struct loop *loop, struct worker *worker, struct ctl_server *server)
{
	c->loop = loop;
	c->worker = worker;
	c->server = server;
}

void
ctl_set_config(struct ctl *c, const struct config *cfg)
{
	c->cfg = cfg;
}

void
ctl_free(struct ctl *c)
{
	if (c == NULL)
		return;
	ctl_jobs_free(c);
	free(c);
}

typedef json_t *(*ctl_fn)(struct ctl *c, struct ctl_peer *peer, json_t *params, int *code,
			  char *msg, size_t msglen);

struct ctl_method {
	const char *name;
	bool mutating;
	ctl_fn fn;
	const char *const *params;	/* allowed parameter names, NULL-terminated */
};

json_t *
ctl_error_response(json_t *id, int code, const char *message)
{
	return json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id",
			 id ? id : json_null(), "error", "code", code, "message", message);
}

bool
ctl_peer_privileged(const struct ctl *c, const struct ctl_peer *peer)
{
	if (peer->uid == 0)
		return true;
	if (c->cfg == NULL || c->cfg->control_group == NULL)
		return false;
	if (peer->gid == c->cfg->control_gid)
		return true;
	/* usermod -aG: the group is one of the peer's supplementary groups. */
	for (size_t i = 0; i < peer->ngroups; i++)
		if (peer->groups[i] == c->cfg->control_gid)
			return true;
	return false;
}

void
ctl_peer_clear(struct ctl_peer *peer)
{
	json_decref(peer->event_types);
	peer->event_types = NULL;
	free(peer->groups);
	peer->groups = NULL;
	peer->ngroups = 0;
}

int
ctl_parse_status_groups(const char *text, gid_t **ret_groups, size_t *ret_n)
{
	const char *p = text;
	gid_t *v = NULL;
	size_t n = 0, cap = 0;

	*ret_groups = NULL;
	*ret_n = 0;
	while (strncmp(p, "Groups:", 7) != 0) {
		p = strchr(p, '\n');
		if (p == NULL)
			return -ENOENT;
		p++;
	}
	for (p += 7;;) {
		unsigned long g;
		char *end;

		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '\n' || *p == '\0')
			break;
		errno = 0;
		g = strtoul(p, &end, 10);
		if (*p < '0' || *p > '9' || errno || g >= (gid_t)-1 ||
		    (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\0')) {
			free(v);
			return -EINVAL;
		}
		if (n == cap) {
			gid_t *nv = realloc(v, (cap ? cap * 2 : 16) * sizeof(*v));

			if (nv == NULL) {
				free(v);
				return -ENOMEM;
			}
			v = nv;
			cap = cap ? cap * 2 : 16;
		}
		v[n++] = (gid_t)g;
		p = end;
	}
	*ret_groups = v;
	*ret_n = n;
	return 0;
}

bool
ctl_peer_wants(const struct ctl_peer *peer, const char *type)
{
	size_t i;
	json_t *v;

	if (!peer->subscribed)
		return false;
	if (peer->event_types == NULL)
		return true;
	json_array_foreach(peer->event_types, i, v) {
		const char *prefix = json_string_value(v);
		size_t n = strlen(prefix);

		if (strncmp(type, prefix, n) == 0 && (type[n] == '\0' || type[n] == '.' ||
						      prefix[n - 1] == '.'))
			return true;
	}
	return false;
}

/* --- views: the methods' JSON (status, modules.list, devices.*, mdev parents) --- */

static int64_t
mono_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

json_t *
ctl_mdev_parents_json(struct ctl *c)
{
	json_t *out = json_array();
	struct dirent *de;
	DIR *dir;
	int fd = fsroot_open_dir(c->env.sys, "class/mdev_bus");

	if (fd < 0)
		return out;
	dir = fdopendir(fd);
	if (dir == NULL) {
		close(fd);
		return out;
	}
	while ((de = readdir(dir)) != NULL) {
		char target[1024];
		json_t *types;

		if (de->d_name[0] == '.' ||
		    fsroot_readlink(c->env.sys, "class/mdev_bus", -1, de->d_name, target, sizeof(target)) < 0)
			continue;
		types = scan_mdev_types(c->env.sys, target);
		json_array_append_new(out, json_pack("{s:s, s:b, s:o}", "parent", de->d_name, "pci",
						     pci_address_valid(de->d_name), "types",
						     types ? types : json_array()));
	}
	closedir(dir);
	return out;
}

json_t *
ctl_device_json(struct ctl *c, struct device *dev)
{
	json_t *o = device_facts_json(dev);

	if (o == NULL)
		return NULL;
	json_object_set_new(o, "module", dev->owner ? json_string(module_name(dev->owner))
						     : json_null());
	if (dev->cls == HDD_DEV_PCI) {
		struct device *members[64];
		size_t n = inventory_group_members(c->env.inv, dev->pci.f.iommu_group, members, 64);
		json_t *peers = json_array();

		for (size_t i = 0; i < n && i < 64; i++)
			if (members[i] != dev)
				json_array_append_new(peers, json_string(members[i]->id));
		json_object_set_new(o, "iommu_group_members", peers);
	}
	if (dev->owner) {
		struct hdd_device_view view;
		json_t *info;

		device_view(dev, &view);
		info = module_describe(dev->owner, &view);
		if (info)
			json_object_set_new(o, "module_info", info);
	}
	return o;
}

json_t *
ctl_modules_json(struct ctl *c)
{
	json_t *out = json_array();

	for (size_t i = 0; out && i < modules_count(c->env.mods); i++) {
		const struct module *m = modules_at(c->env.mods, i);
		json_t *subs = json_array(), *methods = json_array(), *o;
		struct module_info mi;
		size_t owned = 0;
		char abi[24];

		module_info(m, &mi);
		for (const char *const *s = mi.subsystems; s && *s; s++)
			json_array_append_new(subs, json_string(*s));
		for (const struct hdd_method *x = mi.methods; x && x->name; x++)
			json_array_append_new(methods, json_string(x->name));
		module_abi_string(m, abi, sizeof(abi));
		for (size_t j = 0; j < inventory_count(c->env.inv); j++)
			owned += inventory_at(c->env.inv, j)->owner == m;
		o = json_pack("{s:s?, s:s?, s:s?, s:i, s:s, s:b, s:s?, s:o, s:o, s:I}",
			      "name", mi.name,
			      "description", mi.description,
			      "path", mi.path,
			      "abi_version", mi.abi_major ? (int)mi.abi_major : -1,
			      "abi", abi,
			      "active", mi.active,
			      "error", mi.error,
			      "subsystems", subs,
			      "methods", methods,
			      "devices", (json_int_t)owned);
		if (mi.active) {
			json_object_set_new(o, "ready", json_boolean(mi.ready));
			json_object_set_new(o, "reason", mi.reason ? json_string(mi.reason) : json_null());
		}
		json_array_append_new(out, o);
	}
	return out;
}

static json_t *status_base(struct ctl *c);
static json_t *status_claims(struct ctl *c);

json_t *
ctl_status_json(struct ctl *c)
{
	json_t *o = status_base(c);

	if (o) {
		json_object_set_new(o, "claims", status_claims(c));
		json_object_set_new(o, "worker", c->worker ? json_pack("{s:i, s:I}", "pid",
			worker_pid(c->worker), "restarts", (json_int_t)worker_restarts(c->worker))
			: json_null());
	}
	return o;
}

static json_t *
status_base(struct ctl *c)
{
	size_t npci = 0, nusb = 0, nmdev = 0, nmods = 0;
	struct ctl_facts f;

	memset(&f, 0, sizeof(f));
	if (c->env.facts)
		c->env.facts(c->env.arg, &f);
	for (size_t i = 0; i < inventory_count(c->env.inv); i++) {
		enum hdd_dev_class cls = inventory_at(c->env.inv, i)->cls;

		npci += cls == HDD_DEV_PCI;
		nusb += cls == HDD_DEV_USB;
		nmdev += cls == HDD_DEV_MDEV;
	}
	nmods = modules_active(c->env.mods);
	return json_pack("{s:s, s:s?, s:i, s:f, s:{s:s?, s:s?, s:s?, s:s?, s:s?, s:s?, s:s?}, s:s,"
			 " s:{s:I, s:I, s:I}, s:I, s:O, s:{s:I, s:f, s:i},"
			 " s:{s:I, s:I, s:I, s:I, s:I}, s:{s:i, s:i}}",
			 "version", PACKAGE_VERSION,
			 "node_name", f.node_name,
			 "pid", (int)getpid(),
			 "uptime_s", f.started_usec ? (double)(mono_usec() - f.started_usec) / 1e6 : 0.0,
			 "paths",
			 "sysfs_root", f.sysfs_root,
			 "dev_root", f.dev_root,
			 "kubelet_dir", f.kubelet_dir,
			 "control_socket", f.control_socket,
			 "state_dir", f.state_dir,
			 "config", f.config_file,
			 "module_dir", f.module_dir,
			 "log_level", log_level_to_string(log_get_level()),
			 "devices", "pci", (json_int_t)npci, "usb", (json_int_t)nusb, "mdev",
			 (json_int_t)nmdev,
			 "modules", (json_int_t)nmods,
			 "iommu", f.iommu ? f.iommu : json_null(),
			 "resync",
			 "last", (json_int_t)f.last_resync_wall,
			 "last_duration_ms", (double)inventory_last_resync_usec(c->env.inv) / 1000.0,
			 "interval_s", c->cfg->resync_interval,
			 "stats",
			 "uevents", (json_int_t)f.uevents,
			 "uevents_ignored", (json_int_t)f.uevents_ignored,
			 "resyncs", (json_int_t)f.resyncs,
			 "debounced_bursts", (json_int_t)f.debounced_bursts,
			 "events_sent", (json_int_t)ctl_server_events_sent(c->server),
			 "control",
			 "clients", c->server ? ctl_server_clients(c->server) : 0,
			 "subscribers", c->server ? ctl_server_subscribers(c->server) : 0);
}

static json_t *
status_claims(struct ctl *c)
{
	struct claims_summary sum;

	if (c->env.claims == NULL)
		return json_null();
	claims_summarize(c->env.claims, &sum);
	return json_pack("{s:I, s:b, s:s?}", "count", (json_int_t)sum.n, "fail_closed",
			 sum.fail_closed, "fail_reason", sum.fail_closed ? sum.fail_reason : NULL);
}

/* --- methods ------------------------------------------------------------ */

static json_t *
m_daemon_status(struct ctl *c, struct ctl_peer *peer, json_t *params, int *code, char *msg,
		size_t msglen)
{
	return ctl_status_json(c);
}

static json_t *
m_daemon_rescan(struct ctl *c, struct ctl_peer *peer, json_t *params, int *code, char *msg,
		size_t msglen)
{
	json_t *summary = NULL;
	int err = c->env.rescan ? c->env.rescan(c->env.arg, &summary) : -ENOSYS;

	if (err < 0) {
		json_decref(summary);
		*code = CTL_ERR_FAILED;
		snprintf(msg, msglen, "rescan failed: %s", strerror(-err));
		return NULL;
	}
	return summary;
}

static json_t *
m_modules_list(struct ctl *c, struct ctl_peer *peer, json_t *params, int *code, char *msg,
	       size_t msglen)
{
	return ctl_modules_json(c);
}

/* Filter values are compared as the API prints them: hex without 0x in any
 * case, "none" (or null) for no driver/module; checked on the device itself so
 * a filtered list of thousands costs only the matches' JSON. */
static bool
str_matches(json_t *want, const char *have)
{
	if (json_is_null(want) || strcmp(json_string_value(want), "none") == 0)
		return have == NULL;
	return have != NULL && strcmp(json_string_value(want), have) == 0;
}

static bool
device_matches(const struct device *dev, json_t *params)
{
	const char *key;
	json_t *v;

	json_object_foreach(params, key, v) {
		unsigned long x;
		long g;

		if (strcmp(key, "class") == 0) {
			if (dev_class_from_string(json_string_value(v)) != (int)dev->cls)
				return false;
		} else if (strcmp(key, "vendor") == 0 || strcmp(key, "device") == 0) {
			bool vendor = key[0] == 'v';

			if (dev->cls == HDD_DEV_MDEV)
				return false;
			sysfs_parse_hex(json_string_value(v), 0xffff, &x);
			if ((long)x != (dev->cls == HDD_DEV_PCI
						? (vendor ? dev->pci.f.vendor_id : dev->pci.f.device_id)
						: (vendor ? dev->usb.f.vendor_id : dev->usb.f.product_id)))
				return false;
		} else if (strcmp(key, "driver") == 0) {
			if (!str_matches(v, dev->cls == HDD_DEV_PCI ? dev->pci.driver :
					    dev->cls == HDD_DEV_MDEV ? dev->mdev.driver : dev->usb.driver))
				return false;
		} else if (strcmp(key, "module") == 0) {
			if (!str_matches(v, dev->owner ? module_name(dev->owner) : NULL))
				return false;
		} else if (strcmp(key, "iommu_group") == 0) {
			if (dev->cls == HDD_DEV_USB)
				return false;
			if (json_is_integer(v))
				g = (long)json_integer_value(v);
			else if (sysfs_parse_int(json_string_value(v), 0, 0x7fffffff, &g) < 0)
				return false;
			if (g != (dev->cls == HDD_DEV_PCI ? dev->pci.f.iommu_group
							  : dev->mdev.f.iommu_group))
				return false;
		}
	}
	return true;
}

static const char *const list_params[] = {
	"class", "vendor", "device", "driver", "iommu_group", "module", "limit", "cursor", NULL
};

static int
check_list_params(json_t *params, char *msg, size_t msglen)
{
	const char *key;
	json_t *v;

	json_object_foreach(params, key, v) {
		if (strcmp(key, "class") == 0) {
			if (!json_is_string(v) || dev_class_from_string(json_string_value(v)) < 0) {
				snprintf(msg, msglen, "class: expected \"pci\", \"usb\" or \"mdev\"");
				return -1;
			}
		} else if (strcmp(key, "vendor") == 0 || strcmp(key, "device") == 0) {
			unsigned long x;
			if (!json_is_string(v) || sysfs_parse_hex(json_string_value(v), 0xffff, &x) < 0) {
				snprintf(msg, msglen, "%s: expected 4 hex digits", key);
				return -1;
			}
		} else if (strcmp(key, "iommu_group") == 0) {
			if (!json_is_string(v) && !json_is_integer(v)) {
				snprintf(msg, msglen, "iommu_group: expected a group number");
				return -1;
			}
		} else if (strcmp(key, "limit") == 0) {
			if (!json_is_integer(v) || json_integer_value(v) < 1 ||
			    json_integer_value(v) > CTL_LIST_MAX) {
				snprintf(msg, msglen, "limit: expected an integer from 1 to %d",
					 CTL_LIST_MAX);
				return -1;
			}
		} else if (strcmp(key, "cursor") == 0) {
			if (!json_is_string(v) && !json_is_null(v)) {
				snprintf(msg, msglen, "cursor: expected the next_cursor of the last page");
				return -1;
			}
		} else if (!json_is_string(v) && !json_is_null(v)) {
			snprintf(msg, msglen, "%s: expected a string or null", key);
			return -1;
		}
	}
	return 0;
}

/* A page cursor names the first device of the next page, "<class>/<id>":
 * stable across hotplug, since the inventory is in (class, id) order. */
static int
cursor_parse(const char *text, int *ret_cls, const char **ret_id)
{
	const char *slash = strchr(text, '/');
	char cls[8];

	if (slash == NULL || (size_t)(slash - text) >= sizeof(cls) || slash[1] == '\0' ||
	    strlen(slash + 1) >= sizeof(((struct device *)0)->id))
		return -EINVAL;
	memcpy(cls, text, (size_t)(slash - text));
	cls[slash - text] = '\0';
	*ret_cls = dev_class_from_string(cls);
	*ret_id = slash + 1;
	return *ret_cls < 0 ? -EINVAL : 0;
}

static int
cursor_cmp(const struct device *dev, int cls, const char *id)
{
	if ((int)dev->cls != cls)
		return (int)dev->cls < cls ? -1 : 1;
	return strcmp(dev->id, id);
}

/* A whole devices.list answer built across loop turns: the matching devices
 * are named at the call (class and id), then CTL_LIST_CHUNK of them are
 * serialised per turn, as they are then (one that has gone is left out),
 * into the answer's text. Lists are built one at a time, in call order, and
 * wait while the clients' unsent output passes its budget. */
struct ctl_list_job {
	struct ctl_list_job *next;
	uint64_t serial;
	json_t *id;
	json_t *params;			/* the filter, checked again per device */
	char (*keys)[72];		/* "<class>/<id>" */
	size_t n, i, written;
	FILE *mem;			/* the answer's text so far */
	char *text;
	size_t len;
	bool paged;			/* {devices, next_cursor}, not an array */
	bool root;			/* asked by uid 0: not held to the output budget */
	char next_cursor[72];		/* "" for null */
};

static void list_job_step(void *arg);

static void
list_job_free(struct ctl_list_job *j)
{
	if (j->mem)
		fclose(j->mem);
	free(j->text);
	json_decref(j->id);
	json_decref(j->params);
	free(j->keys);
	free(j);
}

static void
ctl_jobs_free(struct ctl *c)
{
	while (c->list_jobs) {
		struct ctl_list_job *j = c->list_jobs;

		c->list_jobs = j->next;
		list_job_free(j);
	}
}

/* Ends the job at the head of the queue and schedules the next one. */
static void
list_job_pop(struct ctl *c)
{
	struct ctl_list_job *j = c->list_jobs;

	c->list_jobs = j->next;
	ctl_server_list_done(c->server, j->serial);
	list_job_free(j);
	if (c->list_jobs && loop_call_later(c->loop, 0, list_job_step, c) < 0)
		log_warnx("ctl", "cannot schedule the next devices.list: out of memory");
}

static void
list_job_fail(struct ctl *c, struct ctl_list_job *j, int code, const char *why)
{
	ctl_server_send_to(c->server, j->serial, ctl_error_response(j->id, code, why));
	list_job_pop(c);
}

/* Writes the next chunk of the list's devices (those still there and
 * matching). Returns 0 or -ENOMEM. */
static int
list_job_chunk(struct ctl *c, struct ctl_list_job *j)
{
	for (size_t end = j->i + CTL_LIST_CHUNK; j->i < j->n && j->i < end; j->i++) {
		char *slash = strchr(j->keys[j->i], '/');
		struct device *dev;
		json_t *dj;

		*slash = '\0';
		dev = inventory_find(c->env.inv, (enum hdd_dev_class)dev_class_from_string(j->keys[j->i]),
				     slash + 1);
		if (dev == NULL || (j->params && !device_matches(dev, j->params)))
			continue;
		dj = ctl_device_json(c, dev);
		if (dj == NULL || (j->written && fputc(',', j->mem) == EOF) ||
		    json_dumpf(dj, j->mem, JSON_COMPACT) < 0) {
			json_decref(dj);
			return -ENOMEM;
		}
		json_decref(dj);
		j->written++;
	}
	return 0;
}

static void
list_job_step(void *arg)
{
	struct ctl *c = arg;
	struct ctl_list_job *j = c->list_jobs;
	size_t limit = c->cfg->control_max_answer;

	if (j == NULL)
		return;
	if (!ctl_server_serial_alive(c->server, j->serial)) {
		list_job_pop(c);	/* nobody waits for it any more */
		return;
	}
	if (!j->root && ctl_server_total_output(c->server) >= c->cfg->control_max_total_output) {
		/* As for any request while the clients hold their budget of
		 * unsent output (root's are let through). */
		log_debug("ctl", "devices.list: %zu bytes wait for all clients; request refused",
			  ctl_server_total_output(c->server));
		list_job_fail(c, j, CTL_ERR_TOO_LARGE,
			      "the daemon holds too much unsent output for its clients "
			      "(control.max_total_output_bytes); try again later");
		return;
	}
	if (list_job_chunk(c, j) < 0 || fflush(j->mem) == EOF) {
		list_job_fail(c, j, CTL_INTERNAL_ERROR, "out of memory");
		return;
	}
	if (j->len > limit) {
		char why[200];

		snprintf(why, sizeof(why), "the answer would pass %zu bytes (control.max_answer_bytes): "
			 "page it (devices.list limit and cursor) or filter", limit);
		list_job_fail(c, j, CTL_ERR_TOO_LARGE, why);
		return;
	}
	if (j->i < j->n) {
		if (loop_call_later(c->loop, 0, list_job_step, c) < 0)
			list_job_fail(c, j, CTL_INTERNAL_ERROR, "out of memory");
		return;
	}
	if (j->paged) {
		json_t *cur = j->next_cursor[0] ? json_string(j->next_cursor) : json_null();
		int bad = cur == NULL;

		fputs("],\"next_cursor\":", j->mem);
		bad = bad || json_dumpf(cur, j->mem, JSON_ENCODE_ANY) < 0;
		json_decref(cur);
		fputs("}}", j->mem);
		if (bad) {
			list_job_fail(c, j, CTL_INTERNAL_ERROR, "out of memory");
			return;
		}
	} else {
		fputs("]}", j->mem);
	}
	if (ferror(j->mem) || fclose(j->mem) == EOF) {
		j->mem = NULL;
		list_job_fail(c, j, CTL_INTERNAL_ERROR, "out of memory");
		return;
	}
	j->mem = NULL;
	ctl_server_send_text_to(c->server, j->serial, j->text, j->len);
	j->text = NULL;
	list_job_pop(c);
}

/* Queues the answer of the `n` matching devices from inventory index
 * `start` (a page when `paged`, with `next_cursor` or NULL); returns
 * CTL_PENDING, or NULL with *code set. */
static json_t *
list_job_start(struct ctl *c, struct ctl_peer *peer, json_t *params, size_t start, size_t n,
	       bool paged, const char *next_cursor, int *code, char *msg, size_t msglen)
{
	struct ctl_list_job *j = calloc(1, sizeof(*j)), **tail;
	size_t count = inventory_count(c->env.inv), k = 0;
	char *id = NULL;

	if (j == NULL || (n > 0 && (j->keys = calloc(n, sizeof(*j->keys))) == NULL))
		goto oom;
	j->paged = paged;
	j->root = peer->uid == 0;
	snprintf(j->next_cursor, sizeof(j->next_cursor), "%s", next_cursor ? next_cursor : "");
	for (size_t i = start; i < count && k < n; i++) {
		struct device *dev = inventory_at(c->env.inv, i);

		if (params && !device_matches(dev, params))
			continue;
		snprintf(j->keys[k++], sizeof(j->keys[0]), "%s/%s", dev_class_to_string(dev->cls),
			 dev->id);
	}
	j->n = k;
	j->serial = peer->serial;
	j->id = json_incref(peer->current_id);
	j->params = json_incref(params);
	j->mem = open_memstream(&j->text, &j->len);
	id = json_dumps(j->id, JSON_COMPACT | JSON_ENCODE_ANY);
	if (j->mem == NULL || id == NULL ||
	    fprintf(j->mem, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":%s", id,
		    paged ? "{\"devices\":[" : "[") < 0)
		goto oom;
	free(id);
	id = NULL;
	for (tail = &c->list_jobs; *tail; tail = &(*tail)->next)
		;
	*tail = j;
	if (c->list_jobs == j && loop_call_later(c->loop, 0, list_job_step, c) < 0) {
		c->list_jobs = NULL;
		goto oom;
	}
	peer->pending++;
	peer->lists++;
	return CTL_PENDING;
oom:
	free(id);
	if (j)
		list_job_free(j);
	*code = CTL_INTERNAL_ERROR;
	snprintf(msg, msglen, "out of memory");
	return NULL;
}

static json_t *
m_devices_list(struct ctl *c, struct ctl_peer *peer, json_t *params, int *code, char *msg,
	       size_t msglen)
{
	json_t *jlimit = params ? json_object_get(params, "limit") : NULL;
	json_t *jcursor = params ? json_object_get(params, "cursor") : NULL;
	size_t count = inventory_count(c->env.inv), start = 0, limit = SIZE_MAX, n = 0, i;
	bool paged = jlimit || jcursor;
	struct device *next = NULL;
	char key[72];
	json_t *out;

	if (params && check_list_params(params, msg, msglen) < 0) {
		*code = CTL_INVALID_PARAMS;
		return NULL;
	}
	if (paged)
		limit = jlimit ? (size_t)json_integer_value(jlimit) : CTL_LIST_MAX;
	if (json_is_string(jcursor)) {
		const char *id;
		int cls;

		if (cursor_parse(json_string_value(jcursor), &cls, &id) < 0) {
			*code = CTL_INVALID_PARAMS;
			snprintf(msg, msglen, "cursor: expected the next_cursor of the last page");
			return NULL;
		}
		while (start < count && cursor_cmp(inventory_at(c->env.inv, start), cls, id) < 0)
			start++;
	}
	/* What the answer holds, counted first (no JSON). */
	for (i = start; i < count; i++) {
		struct device *dev = inventory_at(c->env.inv, i);

		if (params && !device_matches(dev, params))
			continue;
		if (n == limit) {
			next = dev;
			break;
		}
		n++;
	}
	if (next)
		snprintf(key, sizeof(key), "%s/%s", dev_class_to_string(next->cls), next->id);
	/* Long answers, whole lists and pages alike, are built across loop
	 * turns, when there is a loop and someone to answer later (not inside
	 * a batch). */
	if (n > CTL_LIST_CHUNK && c->loop && peer->current_id && !peer->in_batch)
		return list_job_start(c, peer, params, start, n, paged, next ? key : NULL, code,
				      msg, msglen);
	if (n > CTL_LIST_MAX) {
		*code = CTL_ERR_TOO_LARGE;
		snprintf(msg, msglen, "%zu devices match, more than %d in one answer: "
			 "page with limit and cursor, or filter", n, CTL_LIST_MAX);
		return NULL;
	}
	out = json_array();
	if (out == NULL)
		goto oom;
	for (i = start; i < count && json_array_size(out) < n; i++) {
		struct device *dev = inventory_at(c->env.inv, i);
		json_t *dj;

		if (params && !device_matches(dev, params))
			continue;
		dj = ctl_device_json(c, dev);
		if (dj == NULL) {
			json_decref(out);
			goto oom;
		}
		json_array_append_new(out, dj);
	}
	if (!paged)
		return out;
	return json_pack("{s:o, s:s?}", "devices", out, "next_cursor", next ? key : NULL);
oom:
	*code = CTL_INTERNAL_ERROR;
	snprintf(msg, msglen, "out of memory");
	return NULL;
}

static const char *const get_params[] = { "address", "id", "class", NULL };

static json_t *
m_devices_get(struct ctl *c, struct ctl_peer *peer, json_t *params, int *code, char *msg,
	      size_t msglen)
{
	json_t *a = params ? json_object_get(params, "address") : NULL;
	struct device *dev;
	const char *id;

	if (a == NULL && params)
		a = json_object_get(params, "id");
	if (!json_is_string(a)) {
		*code = CTL_INVALID_PARAMS;
		snprintf(msg, msglen, "address: expected a PCI address or USB port");
		return NULL;
	}
	id = json_string_value(a);
	if (pci_address_valid(id))
		dev = inventory_find(c->env.inv, HDD_DEV_PCI, id);
	else if (mdev_uuid_valid(id))
		dev = inventory_find(c->env.inv, HDD_DEV_MDEV, id);
	else if (usb_port_valid(id) || strncmp(id, "usb", 3) == 0)
		dev = inventory_find(c->env.inv, HDD_DEV_USB, id);
	else {
		*code = CTL_INVALID_PARAMS;
		snprintf(msg, msglen, "address: \"%.64s\" is not a PCI address (0000:3b:00.0), USB port (1-2.1) or mdev UUID",
			 id);
		return NULL;
	}
	if (dev == NULL) {
		*code = CTL_ERR_NOT_FOUND;
		snprintf(msg, msglen, "no such device: %s", id);
		return NULL;
	}
	return ctl_device_json(c, dev);
}

static const char *const subscribe_params[] = { "types", NULL };

static json_t *
m_events_subscribe(struct ctl *c, struct ctl_peer *peer, json_t *params, int *code,
		   char *msg, size_t msglen)
{
	json_t *types = params ? json_object_get(params, "types") : NULL;
	size_t i;
	json_t *v;

	if (types) {
		if (!json_is_array(types) || json_array_size(types) == 0 ||
		    json_array_size(types) > 64) {
			*code = CTL_INVALID_PARAMS;
			snprintf(msg, msglen, "types: expected a non-empty array of event type prefixes");
			return NULL;
		}
		json_array_foreach(types, i, v) {
			if (!json_is_string(v) || json_string_length(v) == 0 ||
			    json_string_length(v) > 64) {
				*code = CTL_INVALID_PARAMS;
				snprintf(msg, msglen, "types[%zu]: expected a type such as \"device\" or \"device.add\"",
					 i);
				return NULL;
			}
		}
	}
	json_decref(peer->event_types);
	peer->event_types = types ? json_deep_copy(types) : NULL;
	peer->subscribed = true;
	return json_pack("{s:b, s:I}", "subscribed", 1, "seq", (json_int_t)bus_seq(c->env.bus));
}

static json_t *
m_events_unsubscribe(struct ctl *c, struct ctl_peer *peer, json_t *params, int *code,
		     char *msg, size_t msglen)
{
	peer->subscribed = false;
	json_decref(peer->event_types);
	peer->event_types = NULL;
	return json_pack("{s:b}", "subscribed", 0);
}

static json_t *
m_resources_list(struct ctl *c, struct ctl_peer *peer, json_t *params, int *code, char *msg,
		 size_t msglen)
{
	return c->env.dp ? dp_resources_json(c->env.dp) : json_array();
}

static int
errno_to_code(int err)
{
	switch (err) {
	case -EPERM: return CTL_ERR_REFUSED;
	case -ENOENT: return CTL_ERR_NOT_FOUND;
	case -EBUSY: return CTL_ERR_BUSY;
	case -EINVAL: return CTL_INVALID_PARAMS;
	default: return CTL_ERR_FAILED;
	}
}

static json_t *
m_claims_list(struct ctl *c, struct ctl_peer *peer, json_t *params, int *code, char *msg,
	      size_t msglen)
{
	json_t *list = json_array(), *all, *v;
	size_t i;

	if (list == NULL)
		return NULL;
	/* What each module holds, as it describes it ("list what you hold"). */
	for (size_t k = 0; k < modules_count(c->env.mods); k++) {
		const struct module *m = modules_at(c->env.mods, k);

		if (module_lists_held(m) && module_list_held(m, list) < 0)
			log_warnx("control", "claims.list: module %s could not list what it holds",
				  module_name(m));
	}
	/* Groups in the engine whose owner does not list them: as the engine
	 * sees them (an owner without the hook, or not loaded). */
	all = c->env.claims ? claims_owner_json(c->env.claims, NULL) : NULL;
	json_array_foreach(all, i, v) {
		struct module *m = modules_find(c->env.mods, json_string_value(json_object_get(v, "owner")));

		if (!module_lists_held(m))
			json_array_append(list, v);
	}
	json_decref(all);
	return claims_json(c->env.claims, list);
}

static json_t *
m_mdev_parents(struct ctl *c, struct ctl_peer *peer, json_t *params, int *code, char *msg,
	       size_t msglen)
{
	return ctl_mdev_parents_json(c);
}

static const char *const no_params[] = { NULL };

static const struct ctl_method methods[] = {
	{ .name = "daemon.status", .fn = m_daemon_status, .params = no_params },
	{ .name = "daemon.rescan", .fn = m_daemon_rescan, .params = no_params, .mutating = true },
	{ .name = "modules.list", .fn = m_modules_list, .params = no_params },
	{ .name = "devices.list", .fn = m_devices_list, .params = list_params },
	{ .name = "devices.get", .fn = m_devices_get, .params = get_params },
	{ .name = "events.subscribe", .fn = m_events_subscribe, .params = subscribe_params },
	{ .name = "events.unsubscribe", .fn = m_events_unsubscribe, .params = no_params },
	{ .name = "resources.list", .fn = m_resources_list, .params = no_params },
	{ .name = "claims.list", .fn = m_claims_list, .params = no_params },
	{ .name = "mdev.parents", .fn = m_mdev_parents, .params = no_params },
};

/* --- module methods (ABI v2) ----------------------------------------------- */

struct hdd_request {
	struct ctl *c;
	uint64_t serial;
	json_t *id;			/* NULL: a notification, nobody waits */
	bool privileged;
	bool in_call;			/* its method is running: answer in place */
	json_t *answer;			/* the answer given during the call */
	struct hdd_request *next, *prev;	/* waiting, after the call */
};

static struct hdd_request *waiting;

static void
request_unlink(struct hdd_request *req)
{
	if (req->prev)
		req->prev->next = req->next;
	else if (waiting == req)
		waiting = req->next;
	if (req->next)
		req->next->prev = req->prev;
	req->next = req->prev = NULL;
}

static void
request_answer(struct hdd_request *req, json_t *resp)
{
	if (req->in_call) {
		json_decref(req->answer);	/* answering twice is the module's bug */
		req->answer = resp;
		req->in_call = false;
		return;
	}
	request_unlink(req);
	if (req->id && resp)
		ctl_server_send_to(req->c->server, req->serial, resp);
	else
		json_decref(resp);
	json_decref(req->id);
	free(req);
}

void
ctl_request_reply(struct hdd_request *req, json_t *result)
{
	if (req == NULL) {
		json_decref(result);
		return;
	}
	request_answer(req, req->id ? json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", req->id,
						"result", result ? result : json_object())
				    : (json_decref(result), NULL));
}

void
ctl_request_error(struct hdd_request *req, int code, const char *message)
{
	if (req)
		request_answer(req, req->id ? ctl_error_response(req->id, code, message) : NULL);
}

bool
ctl_request_privileged(const struct hdd_request *req)
{
	return req && req->privileged;
}

void
ctl_requests_free(void)
{
	while (waiting) {
		struct hdd_request *req = waiting;

		request_unlink(req);
		json_decref(req->id);
		free(req);
	}
}

/* Runs a module's method; its answer now, or CTL_PENDING when it comes later. */
static json_t *
call_module_method(struct ctl *c, struct ctl_peer *peer, struct module *mod,
		   const struct hdd_method *m, json_t *params, json_t *id)
{
	struct hdd_request *req = calloc(1, sizeof(*req));
	json_t *answer;
	int err;

	if (req == NULL)
		return id ? ctl_error_response(id, CTL_INTERNAL_ERROR, "out of memory") : NULL;
	req->c = c;
	req->serial = peer->serial;
	req->id = id ? json_incref(id) : NULL;
	req->privileged = ctl_peer_privileged(c, peer);
	req->in_call = true;
	err = module_call(mod, m, req, params);
	if (req->in_call && err < 0) {
		char msg[160];

		snprintf(msg, sizeof(msg), "%s: %s", m->name, strerror(-err));
		ctl_request_error(req, errno_to_code(err), msg);
	}
	if (!req->in_call) {
		answer = req->answer;
		json_decref(req->id);
		free(req);
		return answer;
	}
	/* Deferred: the module answers from a callback (tmux-style wait). */
	req->in_call = false;
	if (req->id)
		peer->pending++;
	req->next = waiting;
	if (waiting)
		waiting->prev = req;
	waiting = req;
	return CTL_PENDING;
}

static const struct ctl_method *
find_method(const char *name)
{
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (strcmp(methods[i].name, name) == 0)
			return &methods[i];
	return NULL;
}

bool
ctl_core_method(const char *name)
{
	return find_method(name) != NULL;
}

static bool
id_valid(json_t *id)
{
	return json_is_string(id) || json_is_integer(id) || json_is_real(id) || json_is_null(id);
}

/* The request's envelope: an object with "jsonrpc": "2.0", an id that is a
 * string, a number or null (or none: a notification), a string method and
 * nothing else. Returns NULL when it is one (*ret_id: the id, borrowed),
 * else the error response. */
static json_t *
check_envelope(json_t *req, json_t **ret_id)
{
	char msg[128];
	const char *key;
	json_t *id, *v;

	*ret_id = NULL;
	if (!json_is_object(req))
		return ctl_error_response(NULL, CTL_INVALID_REQUEST, "request must be a JSON object");
	id = json_object_get(req, "id");
	if (id && !id_valid(id))
		return ctl_error_response(NULL, CTL_INVALID_REQUEST,
					  "id must be a string, a number or null");
	v = json_object_get(req, "jsonrpc");
	if (!json_is_string(v) || strcmp(json_string_value(v), "2.0") != 0)
		return ctl_error_response(id, CTL_INVALID_REQUEST, "jsonrpc must be \"2.0\"");
	if (!json_is_string(json_object_get(req, "method")))
		return ctl_error_response(id, CTL_INVALID_REQUEST, "method must be a string");
	json_object_foreach(req, key, v) {
		if (strcmp(key, "jsonrpc") && strcmp(key, "id") && strcmp(key, "method") &&
		    strcmp(key, "params")) {
			snprintf(msg, sizeof(msg), "unexpected member \"%.64s\" in request", key);
			return ctl_error_response(id, CTL_INVALID_REQUEST, msg);
		}
	}
	*ret_id = id;
	return NULL;
}

/* The core's method `name`, or a module's as a table entry in `modm` (the
 * same checks apply) with *ret_mm and *ret_mod set; NULL when none. */
static const struct ctl_method *
resolve_method(struct ctl *c, const char *name, struct ctl_method *modm,
	       const struct hdd_method **ret_mm, struct module **ret_mod)
{
	const struct ctl_method *m = find_method(name);
	const struct hdd_method *mm;

	*ret_mm = NULL;
	*ret_mod = NULL;
	if (m)
		return m;
	mm = modules_find_method(c->env.mods, name, ret_mod);
	if (mm == NULL)
		return NULL;
	modm->name = mm->name;
	modm->mutating = mm->mutating;
	modm->params = mm->params;
	modm->fn = NULL;
	*ret_mm = mm;
	return modm;
}

/* The request's params for `m`: *ret NULL for none (absent, null, [] or
 * {}), else an object whose names `m` all takes. Returns 0, or an error
 * code with why in msg. */
static int
check_params(const struct ctl_method *m, json_t *req, json_t **ret, char *msg, size_t msglen)
{
	json_t *params = json_object_get(req, "params"), *v;
	const char *key;

	*ret = NULL;
	if (params == NULL || json_is_null(params) ||
	    (json_is_array(params) && json_array_size(params) == 0))
		return 0;
	if (!json_is_object(params)) {
		snprintf(msg, msglen, "params must be an object of named parameters");
		return CTL_INVALID_PARAMS;
	}
	json_object_foreach(params, key, v) {
		bool known = false;

		for (const char *const *p = m->params; *p; p++)
			known |= strcmp(*p, key) == 0;
		if (!known) {
			snprintf(msg, msglen, "%s: unknown parameter \"%.64s\"", m->name, key);
			return CTL_INVALID_PARAMS;
		}
	}
	*ret = json_object_size(params) ? params : NULL;
	return 0;
}

/* A mutating method needs root or the configured group. Returns 0, or an
 * error code with why in msg (logged once here). */
static int
check_privilege(struct ctl *c, struct ctl_peer *peer, const struct ctl_method *m, char *msg,
		size_t msglen)
{
	if (!m->mutating || ctl_peer_privileged(c, peer))
		return 0;
	log_info("ctl", "refused %s to uid %u pid %d: not privileged", m->name,
		 (unsigned)peer->uid, (int)peer->pid);
	snprintf(msg, msglen, "%s: permission denied (needs root%s%s)", m->name,
		 c->cfg->control_group ? " or group " : "",
		 c->cfg->control_group ? c->cfg->control_group : "");
	return CTL_ERR_PERMISSION;
}

static json_t *
handle_one(struct ctl *c, struct ctl_peer *peer, json_t *req)
{
	const struct ctl_method *m;
	struct ctl_method modm;
	const struct hdd_method *modmethod;
	struct module *modmod;
	json_t *id, *params, *result;
	char msg[512] = "";
	int code = CTL_INTERNAL_ERROR;
	const char *name;

	result = check_envelope(req, &id);
	if (result)
		return result;
	name = json_string_value(json_object_get(req, "method"));
	m = resolve_method(c, name, &modm, &modmethod, &modmod);
	if (m == NULL) {
		snprintf(msg, sizeof(msg), "no method \"%.64s\"", name);
		return id ? ctl_error_response(id, CTL_METHOD_NOT_FOUND, msg) : NULL;
	}
	code = check_params(m, req, &params, msg, sizeof(msg));
	if (code == 0)
		code = check_privilege(c, peer, m, msg, sizeof(msg));
	if (code != 0)
		return id ? ctl_error_response(id, code, msg) : NULL;
	if (modmethod) {
		result = call_module_method(c, peer, modmod, modmethod, params, id);
		return result == CTL_PENDING ? NULL : result;
	}
	code = CTL_INTERNAL_ERROR;
	peer->current_id = id;
	result = m->fn(c, peer, params, &code, msg, sizeof(msg));
	peer->current_id = NULL;
	if (result == CTL_PENDING)
		return NULL;		/* answered later through the token */
	if (id == NULL) {
		json_decref(result);
		return NULL;
	}
	if (result == NULL)
		return ctl_error_response(id, code, msg[0] ? msg : "internal error");
	return json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", id, "result", result);
}

/* Bytes the compact text of `v` takes (no allocation). */
static size_t
answer_size(const json_t *v)
{
	return v ? json_dumpb(v, NULL, 0, JSON_COMPACT) + 1 : 0;
}

static json_t *
too_large(json_t *id, size_t limit)
{
	char msg[160];

	snprintf(msg, sizeof(msg), "the answer would pass %zu bytes (control.max_answer_bytes): "
		 "page it (devices.list limit and cursor) or split the batch", limit);
	return ctl_error_response(id, CTL_ERR_TOO_LARGE, msg);
}

/* A batch answers each element, within one answer's budget: once the
 * answers pass it, the rest are not run and each gets -32006. */
static json_t *
handle_batch(struct ctl *c, struct ctl_peer *peer, json_t *req, size_t limit)
{
	json_t *out, *item;
	size_t i, total = 2;
	bool full = false;

	if (json_array_size(req) > CTL_MAX_BATCH) {
		char msg[96];

		snprintf(msg, sizeof(msg), "a batch of more than %d requests", CTL_MAX_BATCH);
		return ctl_error_response(NULL, CTL_INVALID_REQUEST, msg);
	}
	out = json_array();
	if (out == NULL)
		return NULL;
	json_array_foreach(req, i, item) {
		json_t *id = json_is_object(item) ? json_object_get(item, "id") : NULL;
		json_t *r;
		size_t size;

		if (full) {
			if (id)
				json_array_append_new(out, too_large(id, limit));
			continue;
		}
		peer->in_batch = true;
		r = handle_one(c, peer, item);
		peer->in_batch = false;
		size = answer_size(r);
		if (total + size > limit) {
			json_decref(r);
			full = true;
			r = id ? too_large(id, limit) : NULL;
			size = answer_size(r);
		}
		total += size;
		if (r)
			json_array_append_new(out, r);
	}
	if (json_array_size(out) == 0) {
		json_decref(out);
		return NULL;
	}
	return out;
}

json_t *
ctl_handle_line(struct ctl *c, struct ctl_peer *peer, const char *line, size_t len)
{
	size_t limit = c->cfg ? c->cfg->control_max_answer : 4 * 1024 * 1024;
	json_error_t jerr;
	json_t *req, *out;
	char msg[256];

	while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
		len--;
	if (len == 0)
		return NULL;	/* blank lines are allowed between requests */
	req = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (req == NULL) {
		snprintf(msg, sizeof(msg), "parse error at column %d: %s", jerr.column, jerr.text);
		return ctl_error_response(NULL, CTL_PARSE_ERROR, msg);
	}
	if (json_is_array(req)) {
		if (json_array_size(req) == 0) {
			json_decref(req);
			return ctl_error_response(NULL, CTL_INVALID_REQUEST, "empty batch");
		}
		out = handle_batch(c, peer, req, limit);
		json_decref(req);
		return out;
	}
	out = handle_one(c, peer, req);
	if (out && answer_size(out) > limit) {
		json_decref(out);
		out = too_large(json_object_get(req, "id"), limit);
	}
	json_decref(req);
	return out;
}
