/* SPDX-License-Identifier: MIT */
/* mig: MIG partitioning of NVIDIA GPUs through NVML, loaded with dlopen in
 * the worker process (never on the reactor). Layouts come from mig.apply or
 * the configuration, are journalled in the module's state section and are
 * re-applied at start, after a reboot (instances never survive one; MIG
 * mode does not either from Hopper on), on a GPU's arrival and on drift.
 * MIG devices may be offered to the kubelet as nvidia.com/mig-<profile>.
 *
 * The module owns no inventory device (the pci and vgpu modules keep the
 * GPUs); it finds them with device_foreach and matches NVML's GPUs to them
 * by PCI address. Everything that reaches NVML is a job in one queue: one
 * at a time, each through the worker under the configured deadline. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "mig.h"

#define MIG_RESOURCE_PREFIX "nvidia.com/mig-"
#define NVIDIA_VENDOR 0x10de
#define DEFAULT_TIMEOUT_MS 60000
#define DEFAULT_INTERVAL_MS 60000

enum job_kind { JOB_LIST, JOB_APPLY, JOB_RECONCILE };

struct mig;

struct job {
	struct mig *st;
	enum job_kind kind;
	struct hdd_request *req;	/* NULL: the daemon's own (start, timer, drift) */
	char bus[16];			/* APPLY: the GPU; LIST: "" for all */
	char selector[128];		/* as the caller named the GPU */
	json_t *desired;		/* APPLY from the API: {enabled, layout}; else NULL */
	bool clear;			/* mig.clear: every instance goes, the mode stays */
	json_t *gpu;			/* APPLY: the GPU as NVML reported it */
	int64_t call;
	struct job *next;
};

struct mig {
	const struct hdd_core_ops *ops;
	struct hdd_core *core;
	/* configuration */
	char library[512];
	int timeout_ms, interval_ms, max_orders;
	bool advertise;
	json_t *selectors;		/* [{gpu, enabled, layout (normalised)}] */
	json_t *ignore_holders;		/* process names that do not make a GPU busy */
	/* the state section, as last put */
	json_t *section;
	bool fail_closed;
	bool after_reboot;		/* until the first reconcile: no drift events */
	/* what NVML said */
	bool nvml_loaded;
	char nvml_error[512];
	char driver_version[96];
	json_t *cache;			/* bus -> {"nv": entry, "outcome", "error", "processes", "reset"} */
	json_t *published;		/* resource names set with resource_set */
	json_t *announced;		/* bus -> the last "mig.instances" params */
	int announced_nvml;		/* -1 never said, else nvml_loaded as last said */
	/* the queue */
	struct job *head, *tail, *running;
	int64_t timer;
	int64_t soon_timer;		/* a reconcile asked for by an event */
	bool stopping;
};

/* --- configuration ------------------------------------------------------------ */

static bool
selector_ok(const char *s)
{
	char bus[16];
	unsigned v, d;
	char tail;

	return s && (strcmp(s, "all") == 0 || mig_bus_id(s, bus) == 0 ||
		     (sscanf(s, "%4x:%4x%c", &v, &d, &tail) == 2 && strlen(s) == 9) ||
		     (strncmp(s, "GPU-", 4) == 0 && strlen(s) < 96));
}

/* {enabled, layout} from a request or a configuration entry. */
static int
desired_from(const json_t *obj, json_t **out, const char *where, char *why, size_t whylen)
{
	const json_t *enabled = json_object_get(obj, "enabled");
	const json_t *layout = json_object_get(obj, "layout");
	json_t *norm;
	char inner[384];

	*out = NULL;
	if (enabled && !json_is_boolean(enabled)) {
		snprintf(why, whylen, "%senabled: expected true or false", where);
		return -EINVAL;
	}
	if (mig_layout_normalize(layout, &norm, inner, sizeof(inner)) < 0) {
		snprintf(why, whylen, "%s%s", where, inner);
		return -EINVAL;
	}
	if (json_is_false(enabled) && json_array_size(norm) > 0) {
		json_decref(norm);
		snprintf(why, whylen, "%slayout: a layout needs MIG mode (enabled: true)", where);
		return -EINVAL;
	}
	*out = json_pack("{s:b, s:o}", "enabled", !json_is_false(enabled), "layout", norm);
	return 0;
}

static int
mig_config_check(const json_t *section, char *why, size_t whylen)
{
	const char *key;
	json_t *v;

	json_object_foreach((json_t *)section, key, v) {
		if (strcmp(key, "nvml_library") == 0) {
			if (!json_is_string(v) || json_string_length(v) == 0 ||
			    json_string_length(v) >= 512) {
				snprintf(why, whylen, "mig.nvml_library: expected a library path");
				return -EINVAL;
			}
		} else if (strcmp(key, "timeout_ms") == 0) {
			if (!json_is_integer(v) || json_integer_value(v) < 100 ||
			    json_integer_value(v) > 600000) {
				snprintf(why, whylen, "mig.timeout_ms: expected 100 to 600000");
				return -EINVAL;
			}
		} else if (strcmp(key, "check_interval_ms") == 0) {
			if (!json_is_integer(v) || json_integer_value(v) < 0 ||
			    (json_integer_value(v) > 0 && json_integer_value(v) < 100) ||
			    json_integer_value(v) > 86400000) {
				snprintf(why, whylen, "mig.check_interval_ms: expected 0 (never) or "
					 "100 to 86400000");
				return -EINVAL;
			}
		} else if (strcmp(key, "max_orders") == 0) {
			if (!json_is_integer(v) || json_integer_value(v) < 1 ||
			    json_integer_value(v) > 5040) {
				snprintf(why, whylen, "mig.max_orders: expected 1 to 5040");
				return -EINVAL;
			}
		} else if (strcmp(key, "advertise") == 0) {
			if (!json_is_boolean(v)) {
				snprintf(why, whylen, "mig.advertise: expected true or false");
				return -EINVAL;
			}
		} else if (strcmp(key, "ignore_holders") == 0) {
			size_t i;
			json_t *x;

			if (!json_is_array(v)) {
				snprintf(why, whylen, "mig.ignore_holders: expected a list of process names");
				return -EINVAL;
			}
			json_array_foreach(v, i, x) {
				if (!json_is_string(x)) {
					snprintf(why, whylen, "mig.ignore_holders[%zu]: expected a process name", i);
					return -EINVAL;
				}
			}
		} else if (strcmp(key, "gpus") == 0) {
			size_t i;
			json_t *g;

			if (!json_is_array(v)) {
				snprintf(why, whylen, "mig.gpus: expected a list of {gpu, enabled, layout}");
				return -EINVAL;
			}
			json_array_foreach(v, i, g) {
				const char *k;
				json_t *x, *d;
				char where[48];

				snprintf(where, sizeof(where), "mig.gpus[%zu].", i);
				if (!json_is_object(g) ||
				    !selector_ok(json_string_value(json_object_get(g, "gpu")))) {
					snprintf(why, whylen, "mig.gpus[%zu].gpu: expected a PCI address, "
						 "VENDOR:DEVICE (10de:20b5), a GPU UUID or \"all\"", i);
					return -EINVAL;
				}
				json_object_foreach(g, k, x) {
					if (strcmp(k, "gpu") && strcmp(k, "enabled") && strcmp(k, "layout")) {
						snprintf(why, whylen, "mig.gpus[%zu].%s: unknown key", i, k);
						return -EINVAL;
					}
				}
				if (desired_from(g, &d, where, why, whylen) < 0)
					return -EINVAL;
				json_decref(d);
			}
		} else {
			snprintf(why, whylen, "mig.%s: unknown key", key);
			return -EINVAL;
		}
	}
	return 0;
}

static void
apply_config(struct mig *st, const json_t *section)
{
	const json_t *v;
	size_t i;
	json_t *g;

	v = json_object_get(section, "nvml_library");
	snprintf(st->library, sizeof(st->library), "%s",
		 json_is_string(v) ? json_string_value(v) : MIG_DEFAULT_LIBRARY);
	v = json_object_get(section, "timeout_ms");
	st->timeout_ms = json_is_integer(v) ? (int)json_integer_value(v) : DEFAULT_TIMEOUT_MS;
	v = json_object_get(section, "check_interval_ms");
	st->interval_ms = json_is_integer(v) ? (int)json_integer_value(v) : DEFAULT_INTERVAL_MS;
	v = json_object_get(section, "max_orders");
	st->max_orders = json_is_integer(v) ? (int)json_integer_value(v) : 5040;
	st->advertise = json_is_true(json_object_get(section, "advertise"));
	json_decref(st->ignore_holders);
	v = json_object_get(section, "ignore_holders");
	st->ignore_holders = v ? json_deep_copy(v) : json_pack("[s]", "nvidia-persistenced");
	json_decref(st->selectors);
	st->selectors = json_array();
	json_array_foreach(json_object_get(section, "gpus"), i, g) {
		char why[256];
		json_t *d;

		if (desired_from(g, &d, "", why, sizeof(why)) == 0) {
			json_object_set(d, "gpu", json_object_get(g, "gpu"));
			json_array_append_new(st->selectors, d);
		}
	}
}

/* --- the inventory's view of a GPU ----------------------------------------------- */

struct gpu_facts {
	bool found;
	bool is_vf;
	char driver[64];
	int vendor, device, numa;
	char vfs[32][16];
	size_t nvfs;
};

struct find_arg {
	const char *bus;
	struct gpu_facts *f;
};

static void
find_cb(const struct hdd_device_view *dev, void *arg)
{
	struct find_arg *a = arg;
	const struct hdd_pci_facts *p = dev->pci;

	if (p == NULL || strcmp(p->address, a->bus) != 0)
		return;
	a->f->found = true;
	snprintf(a->f->driver, sizeof(a->f->driver), "%s", p->driver ? p->driver : "");
	a->f->vendor = p->vendor_id;
	a->f->device = p->device_id;
	a->f->numa = p->numa_node;
	a->f->is_vf = p->physfn != NULL;
	for (const char *const *vf = p->virtfns; vf && *vf && a->f->nvfs < 32; vf++)
		snprintf(a->f->vfs[a->f->nvfs++], 16, "%s", *vf);
}

static bool
gpu_facts(struct mig *st, const char *bus, struct gpu_facts *f)
{
	struct find_arg a = { bus, f };

	memset(f, 0, sizeof(*f));
	f->numa = -1;
	st->ops->device_foreach(st->core, HDD_DEV_PCI, find_cb, &a);
	return f->found;
}

/* vGPUs on the GPU: a VF with a vGPU type (the vendor-VFIO framework's
 * nvidia/current_vgpu_type) or an mdev on the GPU or one of its VFs. */
struct mdev_arg {
	const struct gpu_facts *f;
	const char *bus;
	char found[64];
};

static void
mdev_cb(const struct hdd_device_view *dev, void *arg)
{
	struct mdev_arg *a = arg;
	const char *parent = dev->mdev ? dev->mdev->parent : NULL;

	if (parent == NULL || a->found[0])
		return;
	if (strcmp(parent, a->bus) == 0)
		snprintf(a->found, sizeof(a->found), "mdev %s", dev->mdev->uuid);
	for (size_t i = 0; i < a->f->nvfs && !a->found[0]; i++)
		if (strcmp(parent, a->f->vfs[i]) == 0)
			snprintf(a->found, sizeof(a->found), "mdev %s on VF %s", dev->mdev->uuid,
				 parent);
}

static bool
vgpus_in_use(struct mig *st, const char *bus, const struct gpu_facts *f, char *why, size_t len)
{
	struct mdev_arg a = { f, bus, "" };

	for (size_t i = 0; i < f->nvfs; i++) {
		char path[96], buf[32] = "";
		int fd;
		ssize_t n;

		snprintf(path, sizeof(path), "bus/pci/devices/%s/nvidia/current_vgpu_type", f->vfs[i]);
		fd = openat(st->ops->sysfs_fd(st->core), path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		buf[n > 0 ? n : 0] = '\0';
		if (n > 0 && strtol(buf, NULL, 10) != 0) {
			snprintf(why, len, "VF %s has vGPU type %ld", f->vfs[i], strtol(buf, NULL, 10));
			return true;
		}
	}
	st->ops->device_foreach(st->core, HDD_DEV_MDEV, mdev_cb, &a);
	if (a.found[0]) {
		snprintf(why, len, "%s", a.found);
		return true;
	}
	return false;
}

/* --- state: {"gpus": {bus: {desired, source, phase, uuid, error}}} ---------------- */

static json_t *
record_of(struct mig *st, const char *bus)
{
	return json_object_get(json_object_get(st->section, "gpus"), bus);
}

static int
record_put(struct mig *st, const char *bus, json_t *rec)
{
	json_t *section = st->section ? json_deep_copy(st->section) : json_object();
	json_t *gpus = json_object_get(section, "gpus");
	int err;

	if (!json_is_object(gpus)) {
		gpus = json_object();
		json_object_set_new(section, "gpus", gpus);
	}
	if (rec)
		json_object_set(gpus, bus, rec);
	else
		json_object_del(gpus, bus);
	err = st->ops->state_put(st->core, section);
	if (err == 0) {
		json_decref(st->section);
		st->section = section;
	} else {
		json_decref(section);
	}
	return err;
}

/* Sets the phase (and error) of a GPU's record; 0 when nothing is recorded. */
static int
record_phase(struct mig *st, const char *bus, const char *phase, const char *error,
	     const char *uuid)
{
	json_t *rec = record_of(st, bus), *copy;
	int err;

	if (rec == NULL)
		return 0;
	copy = json_deep_copy(rec);
	json_object_set_new(copy, "phase", json_string(phase));
	if (error)
		json_object_set_new(copy, "error", json_string(error));
	else
		json_object_del(copy, "error");
	if (uuid && uuid[0])
		json_object_set_new(copy, "uuid", json_string(uuid));
	err = record_put(st, bus, copy);
	json_decref(copy);
	return err;
}

/* --- desired layouts -------------------------------------------------------------- */

static bool
selector_matches(const char *sel, const char *bus, const json_t *nv, const struct gpu_facts *f)
{
	char b[16];
	unsigned v, d;

	if (strcmp(sel, "all") == 0)
		return json_is_true(json_object_get(nv, "mig_capable"));
	if (mig_bus_id(sel, b) == 0)
		return strcmp(b, bus) == 0;
	if (strncmp(sel, "GPU-", 4) == 0)
		return strcasecmp(sel, json_string_value(json_object_get(nv, "uuid")) ?: "") == 0;
	if (sscanf(sel, "%4x:%4x", &v, &d) == 2)
		return f && f->found && (int)v == f->vendor && (int)d == f->device;
	return false;
}

/* The desired {enabled, layout} of a GPU (borrowed) and where it comes
 * from: the API's record, else the first configuration entry that
 * selects it. NULL: unmanaged. */
static const json_t *
desired_of(struct mig *st, const char *bus, const json_t *nv, const char **source)
{
	const json_t *rec = record_of(st, bus);
	struct gpu_facts f;
	size_t i;
	json_t *s;

	if (rec && strcmp(json_string_value(json_object_get(rec, "source")) ?: "", "api") == 0) {
		*source = "api";
		return json_object_get(rec, "desired");
	}
	gpu_facts(st, bus, &f);
	json_array_foreach(st->selectors, i, s) {
		if (selector_matches(json_string_value(json_object_get(s, "gpu")), bus, nv, &f)) {
			*source = "config";
			return s;
		}
	}
	*source = NULL;
	return NULL;
}

/* --- NVML's answers --------------------------------------------------------------- */

static json_t *
cache_rec(struct mig *st, const char *bus)
{
	json_t *c = json_object_get(st->cache, bus);

	if (c == NULL) {
		c = json_object();
		json_object_set_new(st->cache, bus, c);
	}
	return c;
}

static void
nvml_status(struct mig *st, int result, const json_t *out)
{
	const char *e = json_string_value(json_object_get(out, "error"));
	const char *ver = json_string_value(json_object_get(out, "driver_version"));

	if (result == -ENOENT || result == -EIO || result == -ETIMEDOUT || result == -EPIPE) {
		bool was = st->nvml_loaded;
		char why[512];

		if (result == -ETIMEDOUT)
			snprintf(why, sizeof(why), "NVML did not answer within %d ms (the worker was "
				 "replaced)", st->timeout_ms);
		else if (result == -EPIPE)
			snprintf(why, sizeof(why), "the worker died in NVML");
		else
			snprintf(why, sizeof(why), "%s", e ? e : strerror(-result));
		/* No library is the normal case on a host without NVIDIA's driver. */
		if (was || strcmp(why, st->nvml_error) != 0)
			st->ops->log(st->core, result == -ENOENT ? HDD_LOG_INFO : HDD_LOG_WARN, "mig",
				     "inactive: %s", why);
		st->nvml_loaded = false;
		snprintf(st->nvml_error, sizeof(st->nvml_error), "%s", why);
		if (HDD_CORE_HAS(st->ops, set_ready))
			st->ops->set_ready(st->core, false, why);
		return;
	}
	if (result == 0 || json_object_get(out, "gpus")) {
		if (!st->nvml_loaded)
			st->ops->log(st->core, HDD_LOG_INFO, "mig", "NVML loaded from %s%s%s",
				     st->library, ver ? ", driver " : "", ver ? ver : "");
		st->nvml_loaded = true;
		st->nvml_error[0] = '\0';
		if (HDD_CORE_HAS(st->ops, set_ready))
			st->ops->set_ready(st->core, true, NULL);
		if (ver)
			snprintf(st->driver_version, sizeof(st->driver_version), "%s", ver);
	}
}

/* Takes NVML's entries into the cache (all: GPUs not reported are gone). */
static void
cache_update(struct mig *st, const json_t *gpus, bool all)
{
	const char *bus;
	json_t *c, *tmp;
	size_t i;
	json_t *g;

	if (all) {
		json_object_foreach_safe(st->cache, tmp, bus, c) {
			bool seen = false;

			json_array_foreach(gpus, i, g)
				seen |= strcmp(json_string_value(json_object_get(g, "bus_id")) ?: "",
					       bus) == 0;
			if (!seen)
				json_object_del(st->cache, bus);
		}
	}
	json_array_foreach(gpus, i, g) {
		const char *b = json_string_value(json_object_get(g, "bus_id"));

		if (b && b[0])
			json_object_set(cache_rec(st, b), "nv", g);
	}
}

static void announce(struct mig *st);

/* MIG devices as kubelet resources: nvidia.com/mig-<profile>, member ids
 * the MIG device UUIDs. */
static void
publish(struct mig *st)
{
	json_t *want = json_object(), *members, *tmp;
	const char *bus, *name;
	json_t *c;

	json_object_foreach(st->cache, bus, c) {
		const json_t *nv = json_object_get(c, "nv");
		struct gpu_facts f;
		size_t i, j;
		json_t *gi, *ci;

		if (!st->advertise || !gpu_facts(st, bus, &f))
			continue;
		json_array_foreach(json_object_get(nv, "gpu_instances"), i, gi) {
			char res[160];

			snprintf(res, sizeof(res), MIG_RESOURCE_PREFIX "%s",
				 json_string_value(json_object_get(gi, "profile")) ?: "unknown");
			json_array_foreach(json_object_get(gi, "compute_instances"), j, ci) {
				const char *uuid = json_string_value(json_object_get(ci, "uuid"));

				if (uuid == NULL)
					continue;
				members = json_object_get(want, res);
				if (members == NULL) {
					members = json_array();
					json_object_set_new(want, res, members);
				}
				json_array_append_new(members, json_pack("{s:s, s:b, s:i}", "id", uuid,
					"healthy", st->nvml_loaded && !json_object_get(nv, "error"), "numa",
					f.numa));
			}
		}
	}
	json_object_foreach(want, name, members) {
		struct hdd_resource_member m[64];
		size_t n = 0, i;
		json_t *x;

		json_array_foreach(members, i, x) {
			if (n == 64)
				break;
			m[n++] = (struct hdd_resource_member){
				.id = json_string_value(json_object_get(x, "id")),
				.healthy = json_is_true(json_object_get(x, "healthy")),
				.numa_node = (int)json_integer_value(json_object_get(x, "numa")) };
		}
		if (st->ops->resource_set(st->core, name, m, n) < 0)
			st->ops->log(st->core, HDD_LOG_WARN, "mig", "cannot offer %s", name);
	}
	json_object_foreach_safe(st->published, tmp, name, c) {
		if (json_object_get(want, name) == NULL) {
			st->ops->resource_set(st->core, name, NULL, 0);
			json_object_del(st->published, name);
		}
	}
	json_object_foreach(want, name, c)
		json_object_set_new(st->published, name, json_true());
	json_decref(want);
	announce(st);
}

static json_t *gpu_report(struct mig *st, const char *bus, const json_t *c);

/* What the other modules (vgpu) are told of a GPU: its status and its GPU
 * instances with the vGPU types each can host. "applying" while this
 * module changes the GPU. */
static json_t *
instances_view(struct mig *st, const char *bus, const json_t *c)
{
	json_t *r = gpu_report(st, bus, c), *gis = json_array(), *gi, *v;
	const json_t *nv = json_object_get(c, "nv");
	const json_t *desired = json_object_get(r, "desired");
	size_t i;

	json_array_foreach(json_object_get(nv, "gpu_instances"), i, gi)
		json_array_append_new(gis, json_pack("{s:O, s:O?, s:O?, s:O?, s:O?}", "id",
			json_object_get(gi, "id"), "profile", json_object_get(gi, "profile"),
			"profile_id", json_object_get(gi, "profile_id"), "placement",
			json_object_get(gi, "placement"), "vgpu_types",
			json_object_get(gi, "vgpu_types")));
	v = json_pack("{s:s, s:O?, s:s, s:b, s:O?, s:o}", "gpu", bus, "uuid",
			      json_object_get(nv, "uuid"), "status",
			      json_is_true(json_object_get(c, "applying")) ? "applying" :
			      json_string_value(json_object_get(r, "status")) ?: "error",
			      "managed", desired != NULL && !json_is_null(desired),
			      "mode", json_object_get(nv, "mode"), "gpu_instances", gis);
	json_decref(r);
	return v;
}

/* Emits "mig.instances" for each GPU whose view changed since it was last
 * told (and "absent" for one NVML no longer reports), and "mig.nvml" when
 * NVML comes or goes: other modules order their work after the layouts. */
static void
announce(struct mig *st)
{
	const char *bus;
	json_t *c, *tmp;

	/* Said when NVML loads and when it goes away after that; a host that
	 * never had it (the common case) hears nothing. */
	if (st->announced_nvml != (int)st->nvml_loaded &&
	    (st->nvml_loaded || st->announced_nvml == 1)) {
		st->announced_nvml = st->nvml_loaded;
		st->ops->emit(st->core, "nvml", json_pack("{s:b, s:s?}", "loaded", st->nvml_loaded,
							  "error", st->nvml_loaded ? NULL :
							  st->nvml_error));
	}
	json_object_foreach(st->cache, bus, c) {
		json_t *v;

		if (json_object_get(c, "nv") == NULL)
			continue;
		v = instances_view(st, bus, c);
		if (json_equal(v, json_object_get(st->announced, bus))) {
			json_decref(v);
			continue;
		}
		/* A copy: the bus adds seq, type and time to what it is given. */
		json_object_set_new(st->announced, bus, json_deep_copy(v));
		st->ops->emit(st->core, "instances", v);
	}
	json_object_foreach_safe(st->announced, tmp, bus, c) {
		if (json_object_get(json_object_get(st->cache, bus), "nv"))
			continue;
		st->ops->emit(st->core, "instances",
			      json_pack("{s:s, s:s, s:b, s:[]}", "gpu", bus, "status", "absent",
					"managed", 0, "gpu_instances"));
		json_object_del(st->announced, bus);
	}
}

/* A GPU as mig.list shows it: NVML's view, the desired layout, a status. */
static json_t *
gpu_report(struct mig *st, const char *bus, const json_t *c)
{
	const json_t *nv = json_object_get(c, "nv");
	const char *source, *outcome = json_string_value(json_object_get(c, "outcome"));
	const json_t *desired = desired_of(st, bus, nv, &source);
	const json_t *mode = json_object_get(nv, "mode");
	json_t *r = json_deep_copy(nv);
	struct gpu_facts f;
	char why[256] = "";

	json_object_set_new(r, "inventory", json_boolean(gpu_facts(st, bus, &f)));
	json_object_set_new(r, "driver", f.found && f.driver[0] ? json_string(f.driver) : json_null());
	json_object_set_new(r, "desired", desired ? json_deep_copy(desired) : json_null());
	json_object_del(json_object_get(r, "desired"), "gpu");
	json_object_set_new(r, "source", source ? json_string(source) : json_null());
	if (json_object_get(nv, "error")) {
		json_object_set_new(r, "status", json_string("error"));
	} else if (desired == NULL && outcome && strcmp(outcome, "applied") != 0) {
		/* A refused mig.apply records nothing; what stopped it shows. */
		json_object_set_new(r, "status", json_string(strcmp(outcome, "in-use") == 0
								 ? "in-use" : "error"));
		json_object_set(r, "holders", json_object_get(c, "processes") ?: json_null());
		json_object_set(r, "error", json_object_get(c, "error"));
	} else if (desired == NULL) {
		json_object_set_new(r, "status", json_string("unmanaged"));
	} else if (mig_layout_matches(nv, desired, why, sizeof(why))) {
		json_object_set_new(r, "status", json_string("synced"));
	} else if (json_is_true(json_object_get(desired, "enabled")) !=
			   json_is_true(json_object_get(mode, "current")) &&
		   json_is_true(json_object_get(desired, "enabled")) ==
			   json_is_true(json_object_get(mode, "pending"))) {
		const char *reset = json_string_value(json_object_get(c, "reset")) ?: "gpu";
		char hint[256];

		json_object_set_new(r, "status", json_string("pending-reset"));
		json_object_set_new(r, "reset", json_string(reset));
		if (strcmp(reset, "reboot") == 0)
			snprintf(hint, sizeof(hint), "MIG mode changes at the next reboot (the GPU "
				 "cannot be reset here); hostdevd applies the layout then");
		else
			snprintf(hint, sizeof(hint), "stop the GPU's clients and reset it "
				 "(nvidia-smi -r -i %s) or reboot; hostdevd applies the layout then",
				 bus);
		json_object_set_new(r, "hint", json_string(hint));
	} else if (outcome && strcmp(outcome, "in-use") == 0) {
		json_object_set_new(r, "status", json_string("in-use"));
		json_object_set(r, "holders", json_object_get(c, "processes") ?: json_null());
		json_object_set(r, "error", json_object_get(c, "error"));
	} else if (outcome && strcmp(outcome, "failed") == 0) {
		json_object_set_new(r, "status", json_string("error"));
		json_object_set(r, "error", json_object_get(c, "error"));
	} else {
		json_object_set_new(r, "status", json_string("out-of-sync"));
		json_object_set_new(r, "difference", json_string(why));
	}
	return r;
}

/* --- the queue ------------------------------------------------------------------ */

static void run_next(struct mig *st);
static void reconcile_timer(void *arg);

static void
job_free(struct job *j)
{
	json_decref(j->desired);
	json_decref(j->gpu);
	free(j);
}

static void
enqueue(struct mig *st, struct job *j)
{
	j->st = st;
	if (st->tail)
		st->tail->next = j;
	else
		st->head = j;
	st->tail = j;
	run_next(st);
}

static bool
apply_queued(struct mig *st, const char *bus)
{
	for (struct job *j = st->head; j; j = j->next)
		if (j->kind == JOB_APPLY && j->req == NULL && strcmp(j->bus, bus) == 0)
			return true;
	return false;
}

static void
job_finish(struct job *j)
{
	struct mig *st = j->st;

	if (st->running == j)
		st->running = NULL;
	job_free(j);
	if (!st->stopping)
		run_next(st);
}

static void
reply_error(struct job *j, int code, const char *msg)
{
	if (j->req)
		j->st->ops->reply_error(j->req, code, "%s", msg);
	j->req = NULL;
}

static json_t *
worker_args(struct mig *st, const char *bus)
{
	json_t *a = json_pack("{s:s}", "library", st->library);

	if (bus && bus[0])
		json_object_set_new(a, "bus_id", json_string(bus));
	return a;
}

static int
call_worker(struct job *j, const char *op, json_t *args, hdd_worker_done_fn done)
{
	int64_t id = j->st->ops->worker_call(j->st->core, op, args, j->st->timeout_ms, done, j);

	json_decref(args);
	if (id < 0)
		return (int)id;
	j->call = id;
	return 0;
}

static const char *
call_error(int result, const json_t *out, char *buf, size_t len, int timeout_ms)
{
	const char *e = json_string_value(json_object_get(out, "error"));

	if (result == -ETIMEDOUT)
		snprintf(buf, len, "NVML did not answer within %d ms; the worker was replaced "
			 "(the GPU may hang)", timeout_ms);
	else if (result == -ECANCELED)
		snprintf(buf, len, "hostdevd is stopping");
	else if (e)
		snprintf(buf, len, "%s", e);
	else
		snprintf(buf, len, "%s", strerror(-result));
	return buf;
}

/* --- mig.list ---------------------------------------------------------------------- */

static json_t *
list_result(struct mig *st, const char *only)
{
	json_t *gpus = json_array(), *c;
	const char *bus;

	json_object_foreach(st->cache, bus, c)
		if (st->nvml_loaded && (only == NULL || strcmp(only, bus) == 0) &&
		    json_object_get(c, "nv"))
			json_array_append_new(gpus, gpu_report(st, bus, c));
	return json_pack("{s:{s:b, s:s, s:s?, s:s?}, s:b, s:o}", "nvml", "loaded",
			 st->nvml_loaded, "library", st->library, "error",
			 st->nvml_loaded ? NULL : st->nvml_error, "driver_version",
			 st->driver_version[0] ? st->driver_version : NULL, "fail_closed",
			 st->fail_closed, "gpus", gpus);
}

static void
list_done(void *arg, int result, const json_t *out)
{
	struct job *j = arg;
	struct mig *st = j->st;

	nvml_status(st, result, out);
	if (result == 0)
		cache_update(st, json_object_get(out, "gpus"), j->bus[0] == '\0');
	/* Without NVML the MIG devices stay offered, as unhealthy. */
	publish(st);
	if (j->req) {
		if (result < 0 && st->nvml_loaded) {
			char buf[512];

			reply_error(j, HDD_ERR_FAILED,
				    call_error(result, out, buf, sizeof(buf), st->timeout_ms));
		} else if (j->bus[0] && json_object_get(st->cache, j->bus) == NULL && st->nvml_loaded) {
			char buf[64];

			snprintf(buf, sizeof(buf), "%s: NVML reports no GPU there", j->bus);
			reply_error(j, HDD_ERR_NOT_FOUND, buf);
		} else {
			st->ops->reply(j->req, list_result(st, j->bus[0] ? j->bus : NULL));
			j->req = NULL;
		}
	}
	job_finish(j);
}

/* --- applying ----------------------------------------------------------------------- */

static void apply_listed(void *arg, int result, const json_t *out);
static void apply_holders_done(void *arg, int result, const json_t *out);
static void apply_done(void *arg, int result, const json_t *out);

static void
apply_fail(struct job *j, const char *outcome, int code, const char *error, json_t *processes)
{
	struct mig *st = j->st;
	json_t *c = json_object_get(st->cache, j->bus);	/* NULL: NVML does not see it */
	const char *last = json_string_value(json_object_get(c, "error"));
	bool same = last && strcmp(last, error) == 0 &&
		    strcmp(json_string_value(json_object_get(c, "outcome")) ?: "", outcome) == 0;

	if (c) {
		json_object_del(c, "applying");
		json_object_set_new(c, "outcome", json_string(outcome));
		json_object_set_new(c, "error", json_string(error));
		if (processes)
			json_object_set(c, "processes", processes);
		else
			json_object_del(c, "processes");
	}
	/* An unchanged failure of a retry is not news. */
	if (!same || j->req) {
		st->ops->log(st->core, HDD_LOG_WARN, "mig", "%s: %s", j->bus, error);
		st->ops->emit(st->core, "failed",
			      json_pack("{s:s, s:s, s:s, s:O?}", "gpu", j->bus, "status",
					strcmp(outcome, "in-use") == 0 ? "in-use" : "error", "error",
					error, "processes", processes));
	}
	if (j->req) {
		if (processes) {
			char *who = json_dumps(processes, JSON_COMPACT);

			st->ops->reply_error(j->req, code, "%s: %s: %s", j->bus, error, who ? who : "");
			free(who);
		} else {
			st->ops->reply_error(j->req, code, "%s: %s", j->bus, error);
		}
		j->req = NULL;
	}
	announce(st);
	job_finish(j);
}

static void
job_apply(struct job *j)
{
	if (call_worker(j, "list", worker_args(j->st, j->bus), apply_listed) < 0)
		apply_fail(j, "failed", HDD_ERR_FAILED, "cannot reach the worker", NULL);
}

static void
apply_listed(void *arg, int result, const json_t *out)
{
	struct job *j = arg;
	struct mig *st = j->st;
	const json_t *gpu = json_array_get(json_object_get(out, "gpus"), 0);
	const json_t *desired;
	const char *source = NULL;
	struct gpu_facts f;
	char why[512], buf[512];

	nvml_status(st, result, out);
	if (result < 0) {
		call_error(result, out, buf, sizeof(buf), st->timeout_ms);
		if (result == -ENODEV)
			json_object_del(st->cache, j->bus);
		apply_fail(j, "failed", result == -ENODEV ? HDD_ERR_NOT_FOUND : HDD_ERR_FAILED, buf,
			   NULL);
		return;
	}
	cache_update(st, json_object_get(out, "gpus"), false);
	j->gpu = json_incref((json_t *)gpu);
	if (j->clear) {
		json_decref(j->desired);
		j->desired = json_pack("{s:b, s:[]}", "enabled",
				       json_is_true(json_object_get(json_object_get(gpu, "mode"),
								    "current")), "layout");
	}
	desired = j->desired ? j->desired : desired_of(st, j->bus, gpu, &source);
	if (desired == NULL) {
		/* Nothing wanted any more (a reload took it away). */
		if (j->req)
			st->ops->reply(j->req, json_pack("{s:b, s:s}", "changed", 0, "status",
							 "unmanaged"));
		j->req = NULL;
		job_finish(j);
		return;
	}
	if (!json_is_true(json_object_get(gpu, "mig_capable"))) {
		apply_fail(j, "failed", HDD_ERR_REFUSED, "the GPU is not MIG-capable", NULL);
		return;
	}
	if (mig_layout_matches(gpu, desired, why, sizeof(why))) {
		/* Idempotent: nothing destroyed or created. */
		json_t *c = cache_rec(st, j->bus);

		json_object_set_new(c, "outcome", json_string("applied"));
		json_object_del(c, "error");
		json_object_del(c, "processes");
		if (j->desired && !j->clear) {
			json_t *rec = json_pack("{s:O, s:s, s:s, s:s?}", "desired", j->desired,
						"source", "api", "phase", "applied", "uuid",
						json_string_value(json_object_get(gpu, "uuid")));
			int err = record_put(st, j->bus, rec);

			json_decref(rec);
			if (err < 0) {
				apply_fail(j, "failed", HDD_ERR_FAILED,
					   "cannot record the layout in state.json", NULL);
				return;
			}
		} else if (j->clear) {
			json_t *rec = json_pack("{s:O, s:s, s:s}", "desired", j->desired, "source",
						"api", "phase", "applied");

			record_put(st, j->bus, rec);
			json_decref(rec);
		} else {
			record_phase(st, j->bus, "applied", NULL,
				     json_string_value(json_object_get(gpu, "uuid")));
		}
		publish(st);
		if (j->req)
			st->ops->reply(j->req, json_pack("{s:b, s:s, s:s, s:O}", "changed", 0, "status",
							 "synced", "gpu", j->bus, "layout",
							 json_object_get(desired, "layout")));
		j->req = NULL;
		job_finish(j);
		return;
	}
	if (json_is_true(json_object_get(desired, "enabled")) !=
		    json_is_true(json_object_get(json_object_get(gpu, "mode"), "current")) &&
	    json_is_true(json_object_get(desired, "enabled")) ==
		    json_is_true(json_object_get(json_object_get(gpu, "mode"), "pending")) &&
	    j->req == NULL) {
		/* Still waiting for a reset: nothing to do until it happens. */
		job_finish(j);
		return;
	}
	if (st->fail_closed) {
		apply_fail(j, "failed", HDD_ERR_FAILED,
			   "state.json could not be trusted: no MIG change until it is repaired", NULL);
		return;
	}
	/* Refused with nothing destroyed. */
	if (gpu_facts(st, j->bus, &f)) {
		if (strcmp(f.driver, "vfio-pci") == 0) {
			apply_fail(j, "failed", HDD_ERR_REFUSED,
				   "the GPU is on vfio-pci (passed through): MIG is the host "
				   "driver's business", NULL);
			return;
		}
		if (HDD_CORE_HAS(st->ops, vfio_group_holder)) {
			char owner[64] = "";
			bool allocated = false;

			if (st->ops->vfio_group_holder(st->core, j->bus, owner, sizeof(owner),
						       &allocated) == 1) {
				snprintf(buf, sizeof(buf), "the GPU is claimed for passthrough by %s",
					 owner);
				apply_fail(j, "failed", HDD_ERR_REFUSED, buf, NULL);
				return;
			}
		}
		if (vgpus_in_use(st, j->bus, &f, why, sizeof(why))) {
			snprintf(buf, sizeof(buf), "vGPUs are in use on the GPU (%s): remove them first",
				 why);
			apply_fail(j, "in-use", HDD_ERR_REFUSED, buf, NULL);
			return;
		}
	} else {
		apply_fail(j, "failed", HDD_ERR_NOT_FOUND,
			   "NVML sees the GPU but the inventory does not", NULL);
		return;
	}
	/* Who holds the GPU's /dev/nvidiaN (other than the worker's NVML). */
	if (json_is_integer(json_object_get(gpu, "minor")) && HDD_CORE_HAS(st->ops, holders)) {
		char rel[32], path[512];
		const char *paths[2] = { path, NULL };
		int64_t id;

		snprintf(rel, sizeof(rel), "nvidia%d",
			 (int)json_integer_value(json_object_get(gpu, "minor")));
		if (st->ops->dev_path(st->core, rel, path, sizeof(path)) == 0) {
			id = st->ops->holders(st->core, paths, NULL, st->timeout_ms,
					      apply_holders_done, j);
			if (id > 0) {
				j->call = id;
				return;
			}
		}
	}
	apply_holders_done(j, 0, NULL);
}

static bool
ignored_holder(struct mig *st, const char *comm)
{
	size_t i;
	json_t *v;

	if (comm == NULL)
		return false;
	if (strcmp(comm, "hostdevd-worker") == 0)
		return true;
	json_array_foreach(st->ignore_holders, i, v) {
		const char *name = json_string_value(v);

		/* comm is at most 15 characters. */
		if (name && strncmp(name, comm, 15) == 0)
			return true;
	}
	return false;
}

static void
apply_holders_done(void *arg, int result, const json_t *out)
{
	struct job *j = arg;
	struct mig *st = j->st;
	const json_t *desired;
	const char *source = NULL;
	json_t *busy = json_array(), *args, *rec, *h;
	size_t i;
	int err;

	json_array_foreach(json_object_get(out, "holders"), i, h)
		if (!ignored_holder(st, json_string_value(json_object_get(h, "comm"))))
			json_array_append(busy, h);
	if (json_array_size(busy) > 0) {
		apply_fail(j, "in-use", HDD_ERR_BUSY, "processes hold the GPU's device node", busy);
		json_decref(busy);
		return;
	}
	json_decref(busy);
	(void)result;	/* a holder scan that failed does not block: NVML's IN_USE still does */
	desired = j->desired ? j->desired : desired_of(st, j->bus, j->gpu, &source);
	if (desired == NULL) {
		reply_error(j, HDD_ERR_FAILED, "the layout was withdrawn meanwhile");
		job_finish(j);
		return;
	}
	/* The intent first: a kill -9 from here on re-applies at start. */
	rec = json_pack("{s:O, s:s, s:s, s:s?}", "desired", desired, "source",
			j->desired ? "api" : source ? source : "config", "phase", "applying", "uuid",
			json_string_value(json_object_get(j->gpu, "uuid")));
	err = record_put(st, j->bus, rec);
	json_decref(rec);
	if (err < 0) {
		apply_fail(j, "failed", HDD_ERR_FAILED,
			   "cannot record the intent in state.json; nothing changed", NULL);
		return;
	}
	/* Other modules wait for the outcome (vgpu's MIG-backed types). */
	json_object_set_new(cache_rec(st, j->bus), "applying", json_true());
	announce(st);
	args = worker_args(st, j->bus);
	json_object_set(args, "enabled", json_object_get(desired, "enabled"));
	json_object_set(args, "layout", json_object_get(desired, "layout"));
	json_object_set_new(args, "max_orders", json_integer(st->max_orders));
	if (call_worker(j, "apply", args, apply_done) < 0)
		apply_fail(j, "failed", HDD_ERR_FAILED, "cannot reach the worker", NULL);
}

static void
apply_done(void *arg, int result, const json_t *out)
{
	struct job *j = arg;
	struct mig *st = j->st;
	const json_t *gpu = json_object_get(out, "gpu");
	const char *uuid = json_string_value(json_object_get(j->gpu, "uuid"));
	json_t *c = cache_rec(st, j->bus);
	char buf[768];

	json_object_del(c, "applying");
	if (result == -ECANCELED) {
		/* Stopping: the record stays "applying", the next start re-applies. */
		reply_error(j, HDD_ERR_FAILED, "hostdevd is stopping");
		job_finish(j);
		return;
	}
	if (gpu)
		json_object_set(c, "nv", (json_t *)gpu);
	if (result == -ETIMEDOUT || result == -EPIPE)
		nvml_status(st, result, out);
	if (result < 0) {
		const json_t *procs = json_object_get(out, "processes");

		call_error(result, out, buf, sizeof(buf), st->timeout_ms);
		record_phase(st, j->bus, "failed", buf, uuid);
		publish(st);
		apply_fail(j, result == -EBUSY ? "in-use" : "failed",
			   result == -EBUSY ? HDD_ERR_BUSY : result == -EINVAL ? HDD_ERR_INVALID_PARAMS
								   : HDD_ERR_FAILED,
			   buf, (json_t *)procs);
		return;
	}
	if (json_is_true(json_object_get(out, "pending_reset"))) {
		const char *reset = json_string_value(json_object_get(out, "reset")) ?: "gpu";

		json_object_set_new(c, "outcome", json_string("pending-reset"));
		json_object_set_new(c, "reset", json_string(reset));
		json_object_del(c, "error");
		record_phase(st, j->bus, "pending-reset", NULL, uuid);
		st->ops->log(st->core, HDD_LOG_WARN, "mig", "%s: MIG mode change needs a %s", j->bus,
			     strcmp(reset, "reboot") == 0 ? "reboot" : "GPU reset");
		st->ops->emit(st->core, "pending_reset",
			      json_pack("{s:s, s:s, s:O?}", "gpu", j->bus, "reset", reset,
					"activation", json_object_get(out, "activation")));
		if (j->req)
			st->ops->reply(j->req, json_pack("{s:b, s:s, s:s, s:s}", "changed", 1, "status",
							 "pending-reset", "gpu", j->bus, "reset",
							 reset));
		j->req = NULL;
		publish(st);
		job_finish(j);
		return;
	}
	json_object_set_new(c, "outcome", json_string("applied"));
	json_object_del(c, "error");
	json_object_del(c, "processes");
	json_object_del(c, "reset");
	record_phase(st, j->bus, "applied", NULL, uuid);
	publish(st);
	if (json_is_true(json_object_get(out, "changed"))) {
		st->ops->log(st->core, HDD_LOG_INFO, "mig", "%s: layout applied", j->bus);
		st->ops->emit(st->core, "applied",
			      json_pack("{s:s, s:s?, s:O?, s:O?, s:O?}", "gpu", j->bus, "uuid", uuid,
					"layout", json_object_get(json_object_get(record_of(st, j->bus),
										  "desired"), "layout"),
					"order", json_object_get(out, "order"), "attempts",
					json_object_get(out, "attempts")));
	}
	if (j->req)
		st->ops->reply(j->req, json_pack("{s:O, s:s, s:s, s:O?, s:O?}", "changed",
						 json_object_get(out, "changed") ?: json_false(),
						 "status", "synced", "gpu", j->bus, "attempts",
						 json_object_get(out, "attempts"), "order",
						 json_object_get(out, "order")));
	j->req = NULL;
	job_finish(j);
}

/* --- reconciling: start, timer, reload, mig.reconcile -------------------------------- */

static void
reconcile_listed(void *arg, int result, const json_t *out)
{
	struct job *j = arg;
	struct mig *st = j->st;
	json_t *summary = json_array(), *c;
	const char *bus;
	bool after_reboot = st->after_reboot;

	nvml_status(st, result, out);
	st->after_reboot = false;
	if (result < 0) {
		publish(st);
		if (j->req) {
			char buf[512];

			st->ops->reply(j->req, json_pack("{s:b, s:s, s:o}", "nvml", 0, "error",
							 call_error(result, out, buf, sizeof(buf),
								    st->timeout_ms), "gpus", summary));
			j->req = NULL;
		} else {
			json_decref(summary);
		}
		job_finish(j);
		return;
	}
	cache_update(st, json_object_get(out, "gpus"), true);
	publish(st);
	json_object_foreach(st->cache, bus, c) {
		bool rebind = json_is_true(json_object_get(c, "rebind"));
		const json_t *nv = json_object_get(c, "nv");
		const char *source;
		const json_t *desired = desired_of(st, bus, nv, &source);
		const json_t *rec = record_of(st, bus);
		const char *phase = json_string_value(json_object_get(rec, "phase"));
		struct gpu_facts f;
		char why[256];
		struct job *a;

		json_object_del(c, "rebind");
		if (nv == NULL || desired == NULL || json_object_get(nv, "error") ||
		    !gpu_facts(st, bus, &f))
			continue;
		/* Between drivers (sriov-manage parks the PF on pci-pf-stub):
		 * its return to nvidia brings it here again. */
		if (f.driver[0] == '\0' || strcmp(f.driver, "pci-pf-stub") == 0) {
			json_object_set_new(c, "rebind", json_true());
			continue;
		}
		if (mig_layout_matches(nv, desired, why, sizeof(why))) {
			json_array_append_new(summary, json_pack("{s:s, s:s}", "gpu", bus, "status",
								 "synced"));
			continue;
		}
		if (rebind) {
			/* A rebind (sriov-manage enabling VFs, a driver reload)
			 * took the instances: not drift. */
			st->ops->log(st->core, HDD_LOG_INFO, "mig", "%s: re-applying the layout after "
				     "the GPU's driver was bound again (%s)", bus, why);
		} else if (phase && strcmp(phase, "applied") == 0 && !after_reboot) {
			/* Someone changed what hostdevd applied. */
			st->ops->log(st->core, HDD_LOG_WARN, "mig", "%s: drift: %s", bus, why);
			st->ops->emit(st->core, "drift",
				      json_pack("{s:s, s:s, s:O}", "gpu", bus, "found", why, "expected",
						json_object_get(desired, "layout")));
		}
		json_array_append_new(summary, json_pack("{s:s, s:s, s:s}", "gpu", bus, "status",
							 "out-of-sync", "difference", why));
		if (apply_queued(st, bus))
			continue;
		a = calloc(1, sizeof(*a));
		if (a == NULL)
			continue;
		a->kind = JOB_APPLY;
		snprintf(a->bus, sizeof(a->bus), "%s", bus);
		enqueue(st, a);
	}
	if (j->req) {
		st->ops->reply(j->req, json_pack("{s:b, s:o}", "nvml", 1, "gpus", summary));
		j->req = NULL;
	} else {
		json_decref(summary);
	}
	job_finish(j);
}

static void
schedule(struct mig *st)
{
	if (st->timer > 0 || st->interval_ms <= 0 || st->stopping)
		return;
	st->timer = st->ops->timer_add(st->core, st->interval_ms, reconcile_timer, st);
}

static void
run_next(struct mig *st)
{
	struct job *j;
	int err = 0;

	if (st->running || st->stopping || (j = st->head) == NULL)
		return;
	st->head = j->next;
	if (st->head == NULL)
		st->tail = NULL;
	j->next = NULL;
	st->running = j;
	switch (j->kind) {
	case JOB_LIST:
		err = call_worker(j, "list", worker_args(st, j->bus), list_done);
		break;
	case JOB_APPLY:
		job_apply(j);
		return;
	case JOB_RECONCILE:
		err = call_worker(j, "list", worker_args(st, NULL), reconcile_listed);
		schedule(st);
		break;
	}
	if (err < 0) {
		reply_error(j, HDD_ERR_FAILED, "cannot reach the worker");
		job_finish(j);
	}
}

static void
reconcile_enqueue(struct mig *st, struct hdd_request *req)
{
	struct job *j;

	/* One pending reconcile is enough for the daemon's own. */
	for (j = st->head; req == NULL && j; j = j->next)
		if (j->kind == JOB_RECONCILE && j->req == NULL)
			return;
	j = calloc(1, sizeof(*j));
	if (j == NULL) {
		if (req)
			st->ops->reply_error(req, HDD_ERR_FAILED, "out of memory");
		return;
	}
	j->kind = JOB_RECONCILE;
	j->req = req;
	enqueue(st, j);
}

static void
reconcile_timer(void *arg)
{
	struct mig *st = arg;

	st->timer = 0;
	reconcile_enqueue(st, NULL);
}

static void
reconcile_soon_cb(void *arg)
{
	struct mig *st = arg;

	st->soon_timer = 0;
	reconcile_enqueue(st, NULL);
}

/* Events come in bursts (a GPU and its functions): one reconcile. */
static void
reconcile_soon(struct mig *st)
{
	if (st->soon_timer > 0 || st->stopping)
		return;
	st->soon_timer = st->ops->timer_add(st->core, 100, reconcile_soon_cb, st);
	if (st->soon_timer < 0)
		st->soon_timer = 0;
}

/* --- methods ----------------------------------------------------------------------- */

/* The GPU a request names: a PCI address, or a UUID NVML reported. */
static int
resolve_gpu(struct mig *st, const json_t *params, char bus[16], char *why, size_t len)
{
	const char *gpu = json_string_value(json_object_get(params, "gpu"));
	const char *b;
	json_t *c;

	if (gpu == NULL) {
		snprintf(why, len, "gpu: expected a PCI address or a GPU UUID");
		return HDD_ERR_INVALID_PARAMS;
	}
	if (mig_bus_id(gpu, bus) == 0)
		return 0;
	if (strncmp(gpu, "GPU-", 4) == 0) {
		json_object_foreach(st->cache, b, c) {
			if (strcasecmp(json_string_value(json_object_get(json_object_get(c, "nv"),
									 "uuid")) ?: "", gpu) == 0) {
				snprintf(bus, 16, "%s", b);
				return 0;
			}
		}
		snprintf(why, len, "%s: no such GPU (mig.list shows the GPUs NVML reports)", gpu);
		return HDD_ERR_NOT_FOUND;
	}
	snprintf(why, len, "gpu: expected a PCI address or a GPU UUID");
	return HDD_ERR_INVALID_PARAMS;
}

static int
m_list(void *state, struct hdd_request *req, const json_t *params)
{
	struct mig *st = state;
	struct job *j = calloc(1, sizeof(*j));
	char why[256];

	if (j == NULL)
		return -ENOMEM;
	j->kind = JOB_LIST;
	if (json_object_get(params, "gpu")) {
		int code = resolve_gpu(st, params, j->bus, why, sizeof(why));

		if (code) {
			free(j);
			st->ops->reply_error(req, code, "%s", why);
			return 0;
		}
	}
	j->req = req;
	enqueue(st, j);
	return 0;
}

static int
apply_request(struct mig *st, struct hdd_request *req, const json_t *params, bool clear)
{
	struct job *j;
	char why[512], bus[16];
	json_t *desired = NULL;
	int code = resolve_gpu(st, params, bus, why, sizeof(why));

	if (code) {
		st->ops->reply_error(req, code, "%s", why);
		return 0;
	}
	if (!clear && desired_from(params, &desired, "", why, sizeof(why)) < 0) {
		st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS, "%s", why);
		return 0;
	}
	if (!clear && !json_object_get(params, "layout") && !json_object_get(params, "enabled")) {
		json_decref(desired);
		st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS,
				     "layout: expected {\"PROFILE\": COUNT} (or enabled: false)");
		return 0;
	}
	if (st->fail_closed) {
		json_decref(desired);
		st->ops->reply_error(req, HDD_ERR_FAILED, "state.json could not be trusted: no MIG "
				     "change until it is repaired");
		return 0;
	}
	j = calloc(1, sizeof(*j));
	if (j == NULL) {
		json_decref(desired);
		return -ENOMEM;
	}
	j->kind = JOB_APPLY;
	j->req = req;
	j->desired = desired;
	j->clear = clear;
	snprintf(j->bus, sizeof(j->bus), "%s", bus);
	enqueue(st, j);
	return 0;
}

static int
m_apply(void *state, struct hdd_request *req, const json_t *params)
{
	return apply_request(state, req, params, false);
}

static int
m_clear(void *state, struct hdd_request *req, const json_t *params)
{
	return apply_request(state, req, params, true);
}

/* Forgets what mig.apply recorded: the configuration decides again. */
static int
m_forget(void *state, struct hdd_request *req, const json_t *params)
{
	struct mig *st = state;
	char why[256], bus[16];
	int code = resolve_gpu(st, params, bus, why, sizeof(why)), err;

	if (code) {
		st->ops->reply_error(req, code, "%s", why);
		return 0;
	}
	err = record_of(st, bus) ? record_put(st, bus, NULL) : 0;
	if (err < 0)
		return err;
	st->ops->reply(req, json_pack("{s:s, s:b}", "gpu", bus, "forgotten", 1));
	reconcile_enqueue(st, NULL);
	return 0;
}

static int
m_reconcile(void *state, struct hdd_request *req, const json_t *params)
{
	(void)params;
	reconcile_enqueue(state, req);
	return 0;
}

/* --- hooks ------------------------------------------------------------------------- */

static int
mig_init(const struct hdd_core_ops *ops, struct hdd_core *core, const json_t *section,
	 void **ret_state)
{
	struct mig *st;

	if (!HDD_CORE_HAS(ops, resource_set) || !HDD_CORE_HAS(ops, sysfs_fd))
		return -ENOTSUP;
	st = calloc(1, sizeof(*st));
	if (st == NULL)
		return -ENOMEM;
	st->ops = ops;
	st->core = core;
	st->cache = json_object();
	st->published = json_object();
	st->announced = json_object();
	st->announced_nvml = -1;
	snprintf(st->nvml_error, sizeof(st->nvml_error), "not asked yet");
	apply_config(st, section);
	*ret_state = st;
	return 0;
}

static void
mig_fini(void *state)
{
	struct mig *st = state;

	while (st->head) {
		struct job *j = st->head;

		st->head = j->next;
		job_free(j);
	}
	if (st->running)
		job_free(st->running);
	json_decref(st->selectors);
	json_decref(st->ignore_holders);
	json_decref(st->section);
	json_decref(st->cache);
	json_decref(st->published);
	json_decref(st->announced);
	free(st);
}

static int
mig_start(void *state)
{
	struct mig *st = state;
	int err = 0;
	const json_t *section = st->ops->state_get(st->core, &err);

	if (err < 0) {
		st->fail_closed = true;
		st->ops->log(st->core, HDD_LOG_ERR, "mig",
			     "state.json could not be trusted: no MIG layout is applied");
	}
	st->section = section ? json_deep_copy(section) : json_object();
	st->after_reboot = st->ops->rebooted(st->core);
	if (st->after_reboot && json_object_size(json_object_get(st->section, "gpus")) > 0)
		st->ops->log(st->core, HDD_LOG_INFO, "mig",
			     "the node rebooted: re-applying the recorded MIG layouts");
	/* Re-applied through the worker; the control socket opens meanwhile. */
	reconcile_enqueue(st, NULL);
	return 0;
}

static void
mig_reload(void *state, const json_t *section)
{
	struct mig *st = state;

	apply_config(st, section);
	if (st->timer > 0) {
		st->ops->timer_cancel(st->core, st->timer);
		st->timer = 0;
	}
	reconcile_enqueue(st, NULL);
}

static void
mig_stop(void *state)
{
	struct mig *st = state;

	st->stopping = true;
	if (st->timer > 0)
		st->ops->timer_cancel(st->core, st->timer);
	st->timer = 0;
	if (st->soon_timer > 0)
		st->ops->timer_cancel(st->core, st->soon_timer);
	st->soon_timer = 0;
	/* Queued jobs never run; the running one completes with -ECANCELED. */
	while (st->head) {
		struct job *j = st->head;

		st->head = j->next;
		reply_error(j, HDD_ERR_FAILED, "hostdevd is stopping");
		job_free(j);
	}
	st->tail = NULL;
}

static bool
changed_has(const json_t *changed, const char *field)
{
	size_t i;
	json_t *v;

	json_array_foreach(changed, i, v)
		if (strcmp(json_string_value(v) ?: "", field) == 0)
			return true;
	return false;
}

/* Other modules' and the core's events: a GPU that arrives (hotplug, a
 * driver bound) gets its layout at once, not at the next check; a GPU
 * whose VFs vgpu enabled lost its instances in sriov-manage's rebind. */
static void
mig_event(void *state, const char *type, const json_t *params)
{
	struct mig *st = state;
	const char *id = json_string_value(json_object_get(params, "id"));
	const char *cls = json_string_value(json_object_get(params, "class"));
	struct gpu_facts f;
	char bus[16];

	if (st->stopping)
		return;
	if (strcmp(type, "vgpu.vfs_enabled") == 0) {
		json_t *c;

		if (mig_bus_id(json_string_value(json_object_get(params, "gpu")), bus) < 0)
			return;
		if ((c = json_object_get(st->cache, bus)) != NULL)
			json_object_set_new(c, "rebind", json_true());
		/* Said again after the next look, changed or not: vgpu waits for it. */
		json_object_del(st->announced, bus);
		reconcile_soon(st);
		return;
	}
	if (strncmp(type, "device.", 7) != 0 || id == NULL || cls == NULL || strcmp(cls, "pci") != 0)
		return;
	if (strcmp(type, "device.remove") == 0) {
		if (json_object_get(st->cache, id))
			reconcile_soon(st);
		return;
	}
	if (strcmp(type, "device.change") == 0 &&
	    !changed_has(json_object_get(params, "changed"), "driver"))
		return;
	if (strcmp(type, "device.add") != 0 && strcmp(type, "device.change") != 0)
		return;
	if (!gpu_facts(st, id, &f) || f.vendor != NVIDIA_VENDOR || f.is_vf)
		return;
	if (strcmp(type, "device.change") == 0 && json_object_get(st->cache, id)) {
		/* A driver bound again (a reload, sriov-manage) took the
		 * instances: not drift. Said again after the next look. */
		json_object_set_new(json_object_get(st->cache, id), "rebind", json_true());
		json_object_del(st->announced, id);
	}
	st->ops->log(st->core, HDD_LOG_DEBUG, "mig", "%s: NVIDIA GPU %s: checking its MIG layout",
		     id, strcmp(type, "device.add") == 0 ? "arrived" : "changed driver");
	reconcile_soon(st);
}

/* The MIG devices' Allocate: the NVIDIA container runtime's contract. */
static int
mig_allocate(void *state, const char *resource, const struct hdd_device_view *const *devs,
	     size_t n, struct hdd_alloc *alloc)
{
	struct mig *st = state;
	size_t len = 0, size = n * (HDD_ID_MAX + 1) + 1;
	char *value = calloc(1, size);
	int err;

	(void)resource;
	if (value == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (devs[i]->cls != HDD_DEV_NONE) {
			free(value);
			return -EINVAL;
		}
		len += (size_t)snprintf(value + len, size - len, "%s%s", i ? "," : "", devs[i]->id);
	}
	err = st->ops->alloc_env(alloc, "NVIDIA_VISIBLE_DEVICES", value);
	free(value);
	return err;
}

static const char *const list_params[] = { "gpu", NULL };
static const char *const apply_params[] = { "gpu", "enabled", "layout", NULL };
static const char *const gpu_params[] = { "gpu", NULL };
static const char *const no_params[] = { NULL };

static const struct hdd_method mig_methods[] = {
	{ .name = "mig.list", .params = list_params, .call = m_list },
	{ .name = "mig.apply", .params = apply_params, .call = m_apply, .mutating = true },
	{ .name = "mig.clear", .params = gpu_params, .call = m_clear, .mutating = true },
	{ .name = "mig.forget", .params = gpu_params, .call = m_forget, .mutating = true },
	{ .name = "mig.reconcile", .params = no_params, .call = m_reconcile, .mutating = true },
	{ .name = NULL },
};

static const struct hdd_worker_op mig_worker_ops[] = {
	{ .name = "list", .run = mig_w_list },
	{ .name = "apply", .run = mig_w_apply },
	{ .name = NULL },
};

__attribute__((visibility("default"))) const struct hdd_module hostdevd_module = {
	HDD_MODULE_HEADER,
	.name = "mig",
	.description = "MIG partitioning of NVIDIA GPUs through NVML (dlopen'ed in the worker)",
	.methods = mig_methods,
	.worker_ops = mig_worker_ops,
	.config_check = mig_config_check,
	.init = mig_init,
	.fini = mig_fini,
	.start = mig_start,
	.reload = mig_reload,
	.stop = mig_stop,
	.allocate = mig_allocate,
	.event = mig_event,
};
