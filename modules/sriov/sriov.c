/* SPDX-License-Identifier: MIT */
/* sriov: SR-IOV physical functions: VF count, per-VF settings over
 * rtnetlink and the VFs' driver, recorded in state.json and applied again
 * at start, on hotplug of the PF and when they drift. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hostdevd/module.h"
#include "sriov.h"

#define MOD "sriov"
/* sriov.timeout_ms: each rtnetlink call and IOMMU-group move; a count
 * change (which probes the VFs' drivers) gets twice that. */
#define TIMEOUT_MS 30000
#define CHECK_INTERVAL_MS 60000
#define HOTPLUG_DEBOUNCE_MS 500
#define DRIVER_WAIT_MS 100
/* How long a new VF's netdev is waited for before its MAC is pinned. */
#define PIN_WAIT_MS 5000

/* What sysfs says of a PF, read on the reactor. */
struct pf_live {
	char address[16];
	bool present;
	int totalvfs, numvfs;
	int vendor, device;
	char driver[64];
	char ifname[IF_NAMESIZE];
	int ifindex;			/* 0 when no netdev (or no ifindex file) */
	char operstate[16];
	json_t *vfs;			/* [{"index", "address", "driver", "netdev", "mac"}] */
};

enum job_step {
	STEP_INSPECT = 0,
	STEP_NUMVFS,
	STEP_RELEASE,			/* a count change: this module's VF groups go back first */
	STEP_COUNT,
	STEP_SETVFS,
	STEP_DRIVER,
	STEP_DONE,
	STEP_MAX
};

struct sriov;

struct job {
	struct sriov *st;
	struct job *next;
	char pf[16];
	struct hdd_request *req;	/* sriov.configure waiting, or NULL */
	bool reapply;			/* from the record: start, hotplug, drift */
	bool restoring;			/* putting back what a failed configure changed */
	bool count_only;		/* restoring without a record: the count alone */
	json_t *desired;		/* normalized spec */
	json_t *prev;			/* the record before a configure, or NULL */
	int prev_numvfs;
	bool count_changed;
	bool maybe_changed;		/* a write's outcome is unknown (deadline, worker died) */
	bool drifted;
	bool fresh;			/* the record was never applied: nothing can drift */
	bool journaled;			/* the intent is in state.json */
	enum job_step step;
	size_t driver_next;		/* next VF for the driver step */
	size_t release_next;		/* next VF for the release step */
	int released;			/* VF groups the release step gave back */
	int64_t call;
	int64_t wait_timer;		/* waiting for a new VF to reach the inventory */
	int waited_ms;
	struct pf_live live;
	json_t *readback;		/* VFs as read back */
	json_t *inspect;		/* the PF's inspect result */
};

struct sriov {
	const struct hdd_core_ops *ops;
	struct hdd_core *core;
	json_t *config;			/* the section (copy), or NULL */
	json_t *records;		/* address -> {"desired", "phase", "source"} */
	bool records_loaded;		/* from state.json (at the first probe or at start) */
	json_t *vfcache;		/* address -> the VFs as last read back */
	struct job *running;
	struct job *queue;
	int check_interval_ms;
	int timeout_ms;
	int64_t timer;
	int64_t hotplug_timer;
	json_t *hotplug_pfs;		/* addresses to look at when hotplug_timer fires */
	json_t *checks;			/* sriov.check requests waiting: [pointer ints] */
	json_t *drift_seen;		/* PFs found drifted since the last check answer */
	bool stopping;
	bool enqueuing;			/* check_all is queueing: answer checks after */
	bool netlink_sim;
};

static void job_next(struct sriov *st);
static void job_step(struct job *j);

static void
logm(struct sriov *st, enum hdd_log_level lvl, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
logm(struct sriov *st, enum hdd_log_level lvl, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	st->ops->log(st->core, lvl, MOD, "%s", line);
}

/* --- reading sysfs ------------------------------------------------------ */

static int
read_attr(struct sriov *st, const char *path, char *buf, size_t size)
{
	int fd = openat(st->ops->sysfs_fd(st->core), path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	return 0;
}

static int
read_int(struct sriov *st, const char *path, int base, int *v)
{
	char buf[32], *end;
	long x;

	if (read_attr(st, path, buf, sizeof(buf)) < 0 || buf[0] == '\0')
		return -ENOENT;
	x = strtol(buf, &end, base);
	if (*end != '\0')
		return -EINVAL;
	*v = (int)x;
	return 0;
}

static void
read_link_base(struct sriov *st, const char *path, char *buf, size_t size)
{
	char target[512];
	ssize_t n = readlinkat(st->ops->sysfs_fd(st->core), path, target, sizeof(target) - 1);
	const char *b;

	buf[0] = '\0';
	if (n <= 0)
		return;
	target[n] = '\0';
	b = strrchr(target, '/');
	snprintf(buf, size, "%s", b ? b + 1 : target);
}

/* The first network interface of a PCI function (its net/ directory). */
static void
first_netdev(struct sriov *st, const char *addr, char *name, size_t size)
{
	char path[96];
	int fd;
	DIR *d;
	struct dirent *de;

	name[0] = '\0';
	snprintf(path, sizeof(path), "bus/pci/devices/%s/net", addr);
	fd = openat(st->ops->sysfs_fd(st->core), path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || (d = fdopendir(fd)) == NULL) {
		if (fd >= 0)
			close(fd);
		return;
	}
	/* The lowest name: switchdev representors share the PF's address. */
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (name[0] == '\0' || strcmp(de->d_name, name) < 0)
			snprintf(name, size, "%s", de->d_name);
	}
	closedir(d);
}

static bool
valid_address(const char *s)
{
	unsigned a, b, c, dd;
	char end;

	return s && strlen(s) == 12 && sscanf(s, "%4x:%2x:%2x.%1u%c", &a, &b, &c, &dd, &end) == 4;
}

static void
pf_live_clear(struct pf_live *l)
{
	json_decref(l->vfs);
	memset(l, 0, sizeof(*l));
}

/* Reads a PF and its VFs from sysfs. Returns 0, or -ENOENT when absent. */
static int
pf_read(struct sriov *st, const char *addr, struct pf_live *l)
{
	char path[160], buf[64];

	pf_live_clear(l);
	snprintf(l->address, sizeof(l->address), "%s", addr);
	l->totalvfs = l->numvfs = -1;
	l->vfs = json_array();
	snprintf(path, sizeof(path), "bus/pci/devices/%s/vendor", addr);
	if (!valid_address(addr) || read_int(st, path, 16, &l->vendor) < 0)
		return -ENOENT;
	l->present = true;
	snprintf(path, sizeof(path), "bus/pci/devices/%s/device", addr);
	read_int(st, path, 16, &l->device);
	snprintf(path, sizeof(path), "bus/pci/devices/%s/sriov_totalvfs", addr);
	read_int(st, path, 10, &l->totalvfs);
	snprintf(path, sizeof(path), "bus/pci/devices/%s/sriov_numvfs", addr);
	read_int(st, path, 10, &l->numvfs);
	snprintf(path, sizeof(path), "bus/pci/devices/%s/driver", addr);
	read_link_base(st, path, l->driver, sizeof(l->driver));
	first_netdev(st, addr, l->ifname, sizeof(l->ifname));
	if (l->ifname[0]) {
		snprintf(path, sizeof(path), "bus/pci/devices/%s/net/%s/ifindex", addr, l->ifname);
		read_int(st, path, 10, &l->ifindex);
		snprintf(path, sizeof(path), "bus/pci/devices/%s/net/%s/operstate", addr, l->ifname);
		read_attr(st, path, l->operstate, sizeof(l->operstate));
	}
	for (int i = 0; i < RTNL_VF_MAX && l->numvfs > 0; i++) {
		char vf[32], drv[64], nd[IF_NAMESIZE], mac[32] = "";

		snprintf(path, sizeof(path), "bus/pci/devices/%s/virtfn%d", addr, i);
		read_link_base(st, path, vf, sizeof(vf));
		if (vf[0] == '\0')
			break;
		snprintf(path, sizeof(path), "bus/pci/devices/%s/driver", vf);
		read_link_base(st, path, drv, sizeof(drv));
		first_netdev(st, vf, nd, sizeof(nd));
		if (nd[0]) {
			snprintf(path, sizeof(path), "bus/pci/devices/%s/net/%s/address", vf, nd);
			read_attr(st, path, mac, sizeof(mac));
		}
		json_array_append_new(l->vfs,
				      json_pack("{s:i, s:s, s:s?, s:s?, s:s?}", "index", i, "address", vf,
						"driver", drv[0] ? drv : NULL, "netdev",
						nd[0] ? nd : NULL, "mac", mac[0] ? mac : NULL));
	}
	(void)buf;
	return 0;
}

/* --- PFs and selectors ---------------------------------------------------- */

struct pf_walk {
	struct sriov *st;
	json_t *addrs;
};

static void
pf_walk_cb(const struct hdd_device_view *dev, void *arg)
{
	struct pf_walk *w = arg;

	if (dev->pci && dev->pci->sriov_totalvfs > 0 && dev->pci->physfn == NULL)
		json_array_append_new(w->addrs, json_string(dev->pci->address));
}

/* Every SR-IOV capable PF of the inventory, by address. */
static json_t *
pf_addresses(struct sriov *st)
{
	struct pf_walk w = { st, json_array() };

	st->ops->device_foreach(st->core, HDD_DEV_PCI, pf_walk_cb, &w);
	return w.addrs;
}

/* Whether selector `sel` ({"pf": address or netdev} or {"vendor_device"})
 * names the PF l. */
static bool
selector_matches(const json_t *sel, const struct pf_live *l)
{
	const char *pf = json_string_value(json_object_get(sel, "pf"));
	const char *vd = json_string_value(json_object_get(sel, "vendor_device"));

	if (pf)
		return strcmp(pf, l->address) == 0 || (l->ifname[0] && strcmp(pf, l->ifname) == 0);
	if (vd) {
		char have[16];

		snprintf(have, sizeof(have), "%04x:%04x", l->vendor & 0xffff, l->device & 0xffff);
		return strcasecmp(vd, have) == 0;
	}
	return false;
}

/* The address of the PF named by `name` (an address or a netdev name). */
static int
pf_resolve(struct sriov *st, const char *name, char *addr, size_t size)
{
	json_t *all = pf_addresses(st), *v;
	struct pf_live l = { 0 };
	size_t i;
	int found = -ENOENT;

	if (valid_address(name)) {
		snprintf(addr, size, "%s", name);
		json_decref(all);
		return 0;
	}
	json_array_foreach(all, i, v) {
		if (pf_read(st, json_string_value(v), &l) == 0 && strcmp(l.ifname, name) == 0) {
			snprintf(addr, size, "%s", l.address);
			found = 0;
			break;
		}
	}
	pf_live_clear(&l);
	json_decref(all);
	return found;
}

static bool
management_allowed(struct sriov *st, const struct pf_live *l)
{
	const json_t *allow = json_object_get(st->config, "allow_management"), *v;
	size_t i;

	json_array_foreach(allow, i, v) {
		const char *s = json_string_value(v);

		if (s && (strcmp(s, l->address) == 0 || (l->ifname[0] && strcmp(s, l->ifname) == 0)))
			return true;
	}
	return false;
}

/* --- the desired state: checking and normalizing ---------------------------- */

/* Fills spec (normalized: every VF with every attribute) from params.
 * Returns 0 or -EINVAL with why. */
static int
spec_normalize(const json_t *params, json_t **ret, char *why, size_t whylen)
{
	const json_t *n = json_object_get(params, "num_vfs");
	const json_t *drv = json_object_get(params, "vf_driver");
	const json_t *res = json_object_get(params, "resource_name");
	const json_t *vfs = json_object_get(params, "vfs"), *v;
	json_t *out, *nvfs;
	bool seen[RTNL_VF_MAX] = { false };
	size_t i;

	if (!json_is_integer(n) || json_integer_value(n) < 0 || json_integer_value(n) > RTNL_VF_MAX) {
		snprintf(why, whylen, "num_vfs: expected an integer from 0 to %d", RTNL_VF_MAX);
		return -EINVAL;
	}
	if (drv && (!json_is_string(drv) || (strcmp(json_string_value(drv), "default") != 0 &&
					     strcmp(json_string_value(drv), "vfio-pci") != 0))) {
		snprintf(why, whylen, "vf_driver: expected \"default\" or \"vfio-pci\"");
		return -EINVAL;
	}
	if (res && (!json_is_string(res) || !strchr(json_string_value(res), '/') ||
		    json_string_length(res) > 200)) {
		snprintf(why, whylen, "resource_name: expected a name such as intel.com/sriov_vf");
		return -EINVAL;
	}
	if (vfs && !json_is_array(vfs)) {
		snprintf(why, whylen, "vfs: expected an array of objects with an \"index\"");
		return -EINVAL;
	}
	nvfs = json_array();
	json_array_foreach(vfs, i, v) {
		struct rtnl_vf vf;

		if (sriov_vf_from_json(v, &vf, why, whylen) < 0) {
			json_decref(nvfs);
			return -EINVAL;
		}
		if ((json_int_t)vf.index >= json_integer_value(n)) {
			snprintf(why, whylen, "vfs: index %u is not below num_vfs %lld", vf.index,
				 (long long)json_integer_value(n));
			json_decref(nvfs);
			return -EINVAL;
		}
		if (seen[vf.index]) {
			snprintf(why, whylen, "vfs: index %u appears twice", vf.index);
			json_decref(nvfs);
			return -EINVAL;
		}
		seen[vf.index] = true;
		/* An explicit "no MAC" is the default; keep whether one was given. */
		vf.has_mac = json_object_get(v, "mac") && !json_is_null(json_object_get(v, "mac"));
		json_array_append_new(nvfs, sriov_vf_to_json(&vf));
	}
	out = json_pack("{s:I, s:s, s:o}", "num_vfs", json_integer_value(n), "vf_driver",
			drv ? json_string_value(drv) : "default", "vfs", nvfs);
	if (res)
		json_object_set(out, "resource_name", (json_t *)res);
	*ret = out;
	return 0;
}

static int
sriov_config_check(const json_t *section, char *why, size_t whylen)
{
	const char *key;
	json_t *v;

	if (section == NULL)
		return 0;
	if (!json_is_object(section)) {
		snprintf(why, whylen, "sriov: expected an object");
		return -EINVAL;
	}
	json_object_foreach((json_t *)section, key, v) {
		if (strcmp(key, "timeout_ms") == 0) {
			if (!json_is_integer(v) || json_integer_value(v) < 100 ||
			    json_integer_value(v) > 600000) {
				snprintf(why, whylen, "sriov.timeout_ms: expected milliseconds from 100 to 600000");
				return -EINVAL;
			}
		} else if (strcmp(key, "check_interval_ms") == 0) {
			if (!json_is_integer(v) || json_integer_value(v) < 0 ||
			    json_integer_value(v) > 86400000) {
				snprintf(why, whylen, "sriov.check_interval_ms: expected milliseconds (0: never)");
				return -EINVAL;
			}
		} else if (strcmp(key, "allow_management") == 0) {
			size_t i;
			json_t *x;

			if (!json_is_array(v)) {
				snprintf(why, whylen, "sriov.allow_management: expected a list of PF addresses or netdev names");
				return -EINVAL;
			}
			json_array_foreach(v, i, x) {
				if (!json_is_string(x)) {
					snprintf(why, whylen, "sriov.allow_management[%zu]: expected a string", i);
					return -EINVAL;
				}
			}
		} else if (strcmp(key, "pfs") == 0) {
			size_t i;
			json_t *x;

			if (!json_is_array(v)) {
				snprintf(why, whylen, "sriov.pfs: expected a list of PF settings");
				return -EINVAL;
			}
			json_array_foreach(v, i, x) {
				char w[200];
				const char *k;
				json_t *y, *spec = NULL;
				int nsel = 0;

				if (!json_is_object(x)) {
					snprintf(why, whylen, "sriov.pfs[%zu]: expected an object", i);
					return -EINVAL;
				}
				json_object_foreach(x, k, y) {
					if (strcmp(k, "pf") == 0 || strcmp(k, "vendor_device") == 0) {
						nsel++;
						if (!json_is_string(y)) {
							snprintf(why, whylen, "sriov.pfs[%zu].%s: expected a string", i, k);
							return -EINVAL;
						}
					} else if (strcmp(k, "num_vfs") && strcmp(k, "vf_driver") &&
						   strcmp(k, "resource_name") && strcmp(k, "vfs")) {
						snprintf(why, whylen, "sriov.pfs[%zu].%s: unknown key", i, k);
						return -EINVAL;
					}
				}
				if (nsel != 1) {
					snprintf(why, whylen, "sriov.pfs[%zu]: expected one selector, \"pf\" (address or netdev) or \"vendor_device\" (\"8086:10c9\")", i);
					return -EINVAL;
				}
				if (spec_normalize(x, &spec, w, sizeof(w)) < 0) {
					snprintf(why, whylen, "sriov.pfs[%zu].%s", i, w);
					return -EINVAL;
				}
				json_decref(spec);
			}
		} else {
			snprintf(why, whylen, "sriov.%s: unknown key", key);
			return -EINVAL;
		}
	}
	return 0;
}

/* --- the journal ------------------------------------------------------------- */

/* The records of state.json: the coldplug scan probes before the start
 * hook runs, and ownership of VFs depends on them. Returns 0 or -EBADMSG. */
static int
records_load(struct sriov *st)
{
	int err = 0;
	const json_t *section;

	if (st->records_loaded)
		return 0;
	section = st->ops->state_get(st->core, &err);
	if (err < 0)
		return err;
	st->records_loaded = true;
	if (json_is_object(json_object_get(section, "pfs"))) {
		json_decref(st->records);
		st->records = json_deep_copy(json_object_get(section, "pfs"));
	}
	return 0;
}

static int
records_save(struct sriov *st)
{
	json_t *section = json_pack("{s:O}", "pfs", st->records);
	int err = st->ops->state_put(st->core, section);

	json_decref(section);
	return err;
}

static void
record_set(struct sriov *st, const char *pf, const json_t *desired, const char *phase,
	   const char *source)
{
	json_object_set_new(st->records, pf,
			    json_pack("{s:O, s:s, s:s}", "desired", desired, "phase", phase, "source",
				      source));
}

/* --- jobs ------------------------------------------------------------------- */

static struct job *
job_new(struct sriov *st, const char *pf, json_t *desired)
{
	struct job *j = calloc(1, sizeof(*j));

	if (j == NULL)
		return NULL;
	j->st = st;
	snprintf(j->pf, sizeof(j->pf), "%s", pf);
	j->desired = desired;
	j->call = -1;
	j->wait_timer = -1;
	return j;
}

static void
job_free(struct job *j)
{
	if (j->wait_timer > 0)
		j->st->ops->timer_cancel(j->st->core, j->wait_timer);
	json_decref(j->desired);
	json_decref(j->prev);
	json_decref(j->readback);
	json_decref(j->inspect);
	pf_live_clear(&j->live);
	free(j);
}

static bool
job_pending_for(struct sriov *st, const char *pf)
{
	if (st->running && strcmp(st->running->pf, pf) == 0)
		return true;
	for (struct job *j = st->queue; j; j = j->next)
		if (strcmp(j->pf, pf) == 0)
			return true;
	return false;
}

static void
job_enqueue(struct sriov *st, struct job *j)
{
	struct job **p = &st->queue;

	while (*p)
		p = &(*p)->next;
	*p = j;
	if (st->running == NULL)
		job_next(st);
}

/* Answers the sriov.check requests once nothing is left to do. */
static void
checks_answer(struct sriov *st)
{
	size_t i;
	json_t *v;

	if (st->running || st->queue || st->enqueuing || json_array_size(st->checks) == 0)
		return;
	json_array_foreach(st->checks, i, v) {
		struct hdd_request *req = (struct hdd_request *)(uintptr_t)json_integer_value(v);

		st->ops->reply(req, json_pack("{s:O}", "drifted", st->drift_seen));
	}
	json_array_clear(st->checks);
	json_array_clear(st->drift_seen);
}

static void
job_finish(struct job *j)
{
	struct sriov *st = j->st;

	if (st->running == j)
		st->running = NULL;
	job_free(j);
	if (!st->stopping)
		job_next(st);
}

static void enqueue_restore(struct sriov *st, struct job *failed);

/* A job failed with `code` and the words of fmt: the record goes back to
 * what it was, the caller gets the error, and what the attempt changed
 * (the count) is put back by a restoring job. */
static void
job_fail(struct job *j, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
job_fail(struct job *j, int code, const char *fmt, ...)
{
	struct sriov *st = j->st;
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	logm(st, HDD_LOG_WARN, "%s: %s%s", j->pf, j->restoring ? "restoring: " : "", msg);
	if (!j->reapply && !j->restoring) {
		/* Journal: back to the record before this call. */
		if (j->journaled) {
			if (j->prev)
				json_object_set(st->records, j->pf, j->prev);
			else
				json_object_del(st->records, j->pf);
			records_save(st);
		}
		if (j->count_changed || j->maybe_changed)
			enqueue_restore(st, j);
	}
	if (j->req)
		st->ops->reply_error(j->req, code, "%s: %s", j->pf, msg);
	j->req = NULL;
	st->ops->emit(st->core, "failed",
		      json_pack("{s:s, s:s, s:b}", "pf", j->pf, "error", msg, "reapply", j->reapply));
	job_finish(j);
}

/* What a failed configure may have changed goes back: to the previous
 * record, or else to the count and VF settings read before it started. */
static void
enqueue_restore(struct sriov *st, struct job *failed)
{
	const json_t *prev_desired = failed->prev ? json_object_get(failed->prev, "desired") : NULL;
	const json_t *before = json_object_get(failed->inspect, "vfs"), *v;
	json_t *d, *vfs;
	struct job *j;
	size_t i;

	if (prev_desired) {
		d = json_deep_copy(prev_desired);
	} else {
		vfs = json_array();
		json_array_foreach(before, i, v) {
			const char *key;
			json_t *x, *c = json_object();

			/* Unreported values (null) are left alone. */
			json_object_foreach((json_t *)v, key, x)
				if (!json_is_null(x))
					json_object_set(c, key, x);
			json_array_append_new(vfs, c);
		}
		d = json_pack("{s:i, s:s, s:o}", "num_vfs", failed->prev_numvfs, "vf_driver", "default",
			      "vfs", vfs);
	}
	j = job_new(st, failed->pf, d);
	if (j == NULL) {
		json_decref(d);
		return;
	}
	j->restoring = true;
	j->count_only = prev_desired == NULL && before == NULL;
	/* Before anything queued meanwhile. */
	j->next = st->queue;
	st->queue = j;
}

static void
job_next(struct sriov *st)
{
	struct job *j;

	while (st->running == NULL && (j = st->queue) != NULL) {
		st->queue = j->next;
		j->next = NULL;
		st->running = j;
		j->step = STEP_INSPECT;
		job_step(j);
	}
	checks_answer(st);
}

/* The VF list the kernel should end with: desired entries, every other VF
 * at the defaults, MACs pinned for VFs leaving their netdev driver. */
static json_t *
vfs_wanted(struct job *j, int num)
{
	const json_t *given = json_object_get(j->desired, "vfs"), *v;
	json_t *out = json_array();
	size_t i;

	for (int k = 0; k < num; k++) {
		const json_t *found = NULL;

		json_array_foreach(given, i, v)
			if (json_integer_value(json_object_get(v, "index")) == k)
				found = v;
		if (found) {
			json_t *c = json_deep_copy(found);

			if (json_is_null(json_object_get(c, "mac")))
				json_object_set_new(c, "mac", json_string("00:00:00:00:00:00"));
			json_array_append_new(out, c);
		} else {
			json_array_append_new(out, json_pack("{s:i}", "index", k));
		}
	}
	return out;
}

/* VFs that leave their netdev driver for vfio-pci keep the MAC that driver
 * used: it becomes their admin MAC (and part of the record), unless the
 * call gave one. Without it a guest's VF MAC would change at each boot. */
static void
pin_macs(struct job *j)
{
	const char *drv = json_string_value(json_object_get(j->desired, "vf_driver"));
	json_t *vfs = json_object_get(j->desired, "vfs"), *live, *v;
	size_t i, k;

	if (drv == NULL || strcmp(drv, "vfio-pci") != 0 || !json_is_array(vfs))
		return;
	pf_read(j->st, j->pf, &j->live);
	json_array_foreach(j->live.vfs, i, live) {
		const char *mac = json_string_value(json_object_get(live, "mac"));
		json_t *found = NULL;
		uint8_t b[6];

		if (mac == NULL || sriov_parse_mac(mac, b) < 0 || (b[0] | b[1] | b[2] | b[3] | b[4] | b[5]) == 0 ||
		    (b[0] & 1))
			continue;
		json_array_foreach(vfs, k, v)
			if (json_integer_value(json_object_get(v, "index")) == (json_int_t)i)
				found = v;
		if (found && json_is_string(json_object_get(found, "mac")))
			continue;
		if (found == NULL) {
			json_t *idx = json_pack("{s:I}", "index", (json_int_t)i);
			struct rtnl_vf def;
			char why[64];
			int err = sriov_vf_from_json(idx, &def, why, sizeof(why));

			json_decref(idx);
			if (err < 0)
				continue;
			found = sriov_vf_to_json(&def);
			json_array_append_new(vfs, found);
		}
		json_object_set_new(found, "mac", json_string(mac));
		logm(j->st, HDD_LOG_INFO, "%s: VF %zu keeps the MAC %s its driver used (pinned as its admin MAC)",
		     j->pf, i, mac);
	}
}

static void
job_wait_cb(void *arg)
{
	struct job *j = arg;

	j->wait_timer = -1;
	j->waited_ms += DRIVER_WAIT_MS;
	job_step(j);
}

/* The job's current step runs again in DRIVER_WAIT_MS (the kernel or the
 * inventory is a moment behind). Returns whether the timer is set. */
static bool
job_wait(struct job *j)
{
	j->wait_timer = j->st->ops->timer_add(j->st->core, DRIVER_WAIT_MS, job_wait_cb, j);
	return j->wait_timer > 0;
}

/* Whether a VF about to leave its netdev driver for vfio-pci has that
 * driver but not yet its netdev (so no MAC to pin): then look again in
 * DRIVER_WAIT_MS, at most PIN_WAIT_MS in all. Returns true while waiting. */
static bool
pin_wait(struct job *j)
{
	const char *drv = json_string_value(json_object_get(j->desired, "vf_driver"));
	size_t i;
	json_t *vf;
	bool missing = false;

	if (drv == NULL || strcmp(drv, "vfio-pci") != 0 || j->waited_ms >= PIN_WAIT_MS)
		return false;
	pf_read(j->st, j->pf, &j->live);
	json_array_foreach(j->live.vfs, i, vf) {
		const char *d = json_string_value(json_object_get(vf, "driver"));
		const char *mac = json_string_value(json_object_get(vf, "mac"));
		uint8_t b[6];

		/* No netdev yet, or one whose address is not set yet. */
		missing |= (d == NULL || strcmp(d, "vfio-pci") != 0) &&
			   (mac == NULL || sriov_parse_mac(mac, b) < 0 ||
			    (b[0] | b[1] | b[2] | b[3] | b[4] | b[5]) == 0);
	}
	if (!missing)
		return false;
	return job_wait(j);
}

/* The first attribute of VF `want` (normalized or partial) that the read
 * back `have` contradicts, or NULL. Unreported values contradict nothing. */
static const char *
vf_differs(const json_t *want, const json_t *have)
{
	struct rtnl_vf w, h;
	char why[128];
	const char *key;
	json_t *v, *clean = json_object();
	const char *ret = NULL;

	/* Drop nulls from the read back to parse it, then mark them unreported. */
	json_object_foreach((json_t *)have, key, v)
		if (!json_is_null(v))
			json_object_set(clean, key, v);
	if (sriov_vf_from_json(want, &w, why, sizeof(why)) < 0 ||
	    sriov_vf_from_json(clean, &h, why, sizeof(why)) < 0) {
		json_decref(clean);
		return NULL;
	}
	h.has_mac = json_is_string(json_object_get(have, "mac"));
	if (json_is_null(json_object_get(have, "vlan")))
		h.vlan = -1;
	if (json_is_null(json_object_get(have, "max_tx_rate")))
		h.max_tx_rate = -1;
	if (json_is_null(json_object_get(have, "min_tx_rate")))
		h.min_tx_rate = -1;
	if (json_is_null(json_object_get(have, "spoofchk")))
		h.spoofchk = -1;
	if (json_is_null(json_object_get(have, "trust")))
		h.trust = -1;
	if (json_is_null(json_object_get(have, "link_state")))
		h.link_state = -1;
	for (int a = 0; a < RTNL_VF_ATTR_MAX && !ret; a++)
		if (!rtnl_vf_attr_equal(a, &w, &h))
			ret = rtnl_vf_attr_to_string(a);
	json_decref(clean);
	return ret;
}

static void
emit_drift(struct job *j, const char *attribute, json_t *recorded, json_t *found)
{
	struct sriov *st = j->st;

	if (j->fresh) {
		json_decref(recorded);
		json_decref(found);
		return;
	}
	if (!j->drifted)
		json_array_append_new(st->drift_seen, json_string(j->pf));
	j->drifted = true;
	logm(st, HDD_LOG_WARN, "%s: %s drifted from what was recorded; applying it again", j->pf,
	     attribute);
	st->ops->emit(st->core, "drift",
		      json_pack("{s:s, s:s, s:o, s:o}", "pf", j->pf, "attribute", attribute,
				"recorded", recorded ? recorded : json_null(), "found",
				found ? found : json_null()));
}

static void
inspect_done(void *arg, int result, const json_t *out)
{
	struct job *j = arg;
	const json_t *o = json_object_get(json_object_get(out, "pfs"), j->pf);

	j->call = -1;
	if (result < 0 || o == NULL || json_object_get(o, "error")) {
		const char *e = json_string_value(json_object_get(o, "error"));

		if (e == NULL)
			e = json_string_value(json_object_get(out, "error"));
		job_fail(j, HDD_ERR_FAILED, "reading the PF over rtnetlink: %s",
			 e ? e : strerror(result < 0 ? -result : ENODEV));
		return;
	}
	j->inspect = json_deep_copy(o);
	if (json_is_true(json_object_get(o, "management")) && !management_allowed(j->st, &j->live)) {
		job_fail(j, HDD_ERR_REFUSED,
			 "is the management uplink (the default route goes through %s); allow it with sriov.allow_management in the configuration",
			 json_string_value(json_object_get(o, "via")));
		return;
	}
	j->step = STEP_NUMVFS;
	job_step(j);
}

/* A write whose outcome the worker could not report. */
static bool
outcome_unknown(int result)
{
	return result == -ETIMEDOUT || result == -EPIPE || result == -ECANCELED;
}

static void
numvfs_done(void *arg, int result, const json_t *out)
{
	struct job *j = arg;

	j->call = -1;
	j->maybe_changed |= outcome_unknown(result);
	if (result < 0) {
		const char *e = json_string_value(json_object_get(out, "error"));

		job_fail(j, HDD_ERR_FAILED, "setting %d VFs: %s",
			 (int)json_integer_value(json_object_get(j->desired, "num_vfs")),
			 e ? e : strerror(-result));
		return;
	}
	j->step = STEP_SETVFS;
	job_step(j);
}

static void
setvfs_done(void *arg, int result, const json_t *out)
{
	struct job *j = arg;

	j->call = -1;
	if (outcome_unknown(result)) {
		j->maybe_changed = true;
		job_fail(j, HDD_ERR_FAILED, "setting the VFs: %s after %d ms; the VFs are put back as they were",
			 result == -ETIMEDOUT ? "no answer" : strerror(-result), j->st->timeout_ms);
		return;
	}
	if (result < 0) {
		const char *e = json_string_value(json_object_get(out, "error"));

		json_decref(j->readback);
		j->readback = json_incref(json_object_get(out, "vfs"));
		if (json_object_get(out, "rollback"))
			j->maybe_changed = true;
		job_fail(j, HDD_ERR_FAILED, "%s%s", e ? e : strerror(-result),
			 json_object_get(out, "rollback") ? " (rollback incomplete: trying again)" :
			 " (rolled back: the VFs are as they were)");
		return;
	}
	json_decref(j->readback);
	j->readback = json_incref(json_object_get(out, "vfs"));
	j->step = STEP_DRIVER;
	job_step(j);
}

static void
group_done(void *arg, int result, const json_t *out)
{
	struct job *j = arg;

	j->call = -1;
	if (result < 0) {
		const char *e = json_string_value(json_object_get(out, "error"));

		job_fail(j, HDD_ERR_FAILED, "moving VF %zu's IOMMU group: %s", j->driver_next,
			 e ? e : strerror(-result));
		return;
	}
	j->driver_next++;
	job_step(j);
}

/* Whether sysfs already gives VF `addr` an IOMMU group the inventory has
 * not seen yet: a device is in sysfs a moment before its group link (the
 * kernel adds the group from a bus notifier), and the engine judges the
 * inventory's view ("no IOMMU group"). */
static bool
group_link_ahead(struct sriov *st, const char *addr)
{
	char path[96];
	struct stat sb;

	if (!HDD_CORE_HAS(st->ops, sysfs_fd))
		return false;
	snprintf(path, sizeof(path), "bus/pci/devices/%s/iommu_group", addr);
	return fstatat(st->ops->sysfs_fd(st->core), path, &sb, 0) == 0;
}

static void driver_step(struct job *j);

static void
release_done(void *arg, int result, const json_t *out)
{
	struct job *j = arg;

	j->call = -1;
	if (result < 0) {
		const char *e = json_string_value(json_object_get(out, "error"));

		/* What was given back is moved again (the previous record). */
		j->maybe_changed = true;
		job_fail(j, result == -EBUSY ? HDD_ERR_BUSY : HDD_ERR_FAILED,
			 "giving VF %zu's IOMMU group back before the count change: %s", j->release_next,
			 e ? e : strerror(-result));
		return;
	}
	j->release_next++;
	j->released++;
	job_step(j);
}

/* Why the core's IOMMU-group engine refused a call that returned `id` < 0:
 * its own words when it has them, else the errno's. */
static const char *
engine_why(struct sriov *st, int64_t id)
{
	const char *why = HDD_CORE_HAS(st->ops, last_error) ? st->ops->last_error(st->core) : NULL;

	return why && why[0] ? why : strerror((int)-id);
}

/* Before a count change removes the VFs: the groups this module moved to
 * vfio-pci go back to their drivers through the engine (refused while a VF
 * is allocated or a process holds its group), one VF at a time. */
static void
release_step(struct job *j)
{
	struct sriov *st = j->st;
	json_t *vf;

	if (!HDD_CORE_HAS(st->ops, vfio_group_holder)) {
		j->step = STEP_COUNT;
		job_step(j);
		return;
	}
	pf_read(st, j->pf, &j->live);
	while ((vf = json_array_get(j->live.vfs, j->release_next)) != NULL) {
		const char *addr = json_string_value(json_object_get(vf, "address"));
		char owner[32] = "";
		bool allocated = false;
		int64_t id;

		if (st->ops->vfio_group_holder(st->core, addr, owner, sizeof(owner), &allocated) != 1 ||
		    strcmp(owner, MOD) != 0) {
			j->release_next++;
			continue;
		}
		j->maybe_changed |= j->released > 0;
		if (allocated) {
			job_fail(j, HDD_ERR_BUSY, "VF %zu (%s) is allocated by %s: changing the count would remove it",
				 j->release_next, addr, MOD);
			return;
		}
		id = st->ops->vfio_group_unbind(st->core, addr, false, st->timeout_ms, release_done, j);
		if (id < 0) {
			job_fail(j, id == -EBUSY ? HDD_ERR_BUSY : HDD_ERR_FAILED,
				 "VF %zu (%s): the IOMMU-group engine cannot give it back: %s", j->release_next,
				 addr, engine_why(st, id));
			return;
		}
		j->call = id;
		return;
	}
	j->step = STEP_COUNT;
	job_step(j);
}

/* The driver step: one VF at a time through the core's group engine. */
static void
driver_step(struct job *j)
{
	struct sriov *st = j->st;
	const char *want = json_string_value(json_object_get(j->desired, "vf_driver"));
	bool vfio = want && strcmp(want, "vfio-pci") == 0;
	json_t *vf;

	if (j->count_only) {
		j->step = STEP_DONE;
		job_step(j);
		return;
	}
	pf_read(st, j->pf, &j->live);
	while ((vf = json_array_get(j->live.vfs, j->driver_next)) != NULL) {
		const char *addr = json_string_value(json_object_get(vf, "address"));
		const char *drv = json_string_value(json_object_get(vf, "driver"));
		bool on_vfio = drv && strcmp(drv, "vfio-pci") == 0;
		char owner[32] = "";
		bool allocated = false;
		int64_t id;

		if (vfio && !on_vfio) {
			if (!HDD_CORE_HAS(st->ops, vfio_group_bind)) {
				job_fail(j, HDD_ERR_FAILED, "this hostdevd has no IOMMU-group engine: vf_driver vfio-pci is unavailable");
				return;
			}
			id = st->ops->vfio_group_bind(st->core, addr, st->timeout_ms, group_done, j);
		} else if (!vfio && on_vfio && HDD_CORE_HAS(st->ops, vfio_group_holder) &&
			   st->ops->vfio_group_holder(st->core, addr, owner, sizeof(owner), &allocated) == 1 &&
			   strcmp(owner, MOD) == 0) {
			id = st->ops->vfio_group_unbind(st->core, addr, false, st->timeout_ms, group_done, j);
		} else {
			j->driver_next++;
			continue;
		}
		/* A VF the kernel made a moment ago may not be in the inventory
		 * yet (its uevent is on its way): look again shortly, within
		 * the module's deadline. */
		/* So may a VF that came back (the count reset by hand, a
		 * reboot) while the engine moves its recorded group again. */
		if (vfio && j->waited_ms < st->timeout_ms &&
		    (id == -ENOENT || (id == -EPERM && group_link_ahead(st, addr)) ||
		     (id == -EBUSY && st->ops->vfio_group_holder(st->core, addr, owner, sizeof(owner),
								 &allocated) == 1 &&
		      strcmp(owner, MOD) == 0))) {
			/* Still STEP_DRIVER: job_step comes back here. */
			if (job_wait(j))
				return;
		}
		if (id < 0) {
			job_fail(j, id == -EPERM ? HDD_ERR_REFUSED : id == -EBUSY ? HDD_ERR_BUSY : HDD_ERR_FAILED,
				 "VF %s: the IOMMU-group engine refused: %s", addr, engine_why(st, id));
			return;
		}
		j->call = id;
		return;
	}
	j->step = STEP_DONE;
	job_step(j);
}

static void
job_done_ok(struct job *j)
{
	struct sriov *st = j->st;
	json_t *result;

	if (!j->restoring) {
		const json_t *rec = json_object_get(st->records, j->pf);
		const char *source = json_string_value(json_object_get(rec, "source"));

		record_set(st, j->pf, j->desired, "applied", source ? source : "control");
		if (records_save(st) < 0)
			logm(st, HDD_LOG_ERR, "%s: applied but state.json could not record it", j->pf);
	}
	pf_read(st, j->pf, &j->live);
	if (j->readback)
		json_object_set(st->vfcache, j->pf, j->readback);
	result = json_pack("{s:s, s:s?, s:i, s:O, s:O?, s:b, s:s?}", "pf", j->pf, "netdev",
			   j->live.ifname[0] ? j->live.ifname : NULL, "num_vfs", j->live.numvfs,
			   "vf_devices", j->live.vfs, "vfs", j->readback, "reapplied", j->reapply,
			   "resource_name",
			   json_string_value(json_object_get(j->desired, "resource_name")));
	if (j->reapply && !j->drifted && !j->count_changed && !j->fresh) {
		/* Nothing was off: no event. */
	} else if (!j->restoring) {
		logm(st, HDD_LOG_INFO, "%s: %d VFs configured%s", j->pf, j->live.numvfs,
		     j->reapply ? " again" : "");
		st->ops->emit(st->core, "configured", json_deep_copy(result));
	}
	if (j->req)
		st->ops->reply(j->req, result);
	else
		json_decref(result);
	j->req = NULL;
	job_finish(j);
}

static void
job_step(struct job *j)
{
	struct sriov *st = j->st;
	int num = (int)json_integer_value(json_object_get(j->desired, "num_vfs"));
	json_t *args;
	int64_t id;

	switch (j->step) {
	case STEP_INSPECT:
		if (pf_read(st, j->pf, &j->live) < 0) {
			if (j->reapply) {
				/* Gone for now: its interface coming back brings us here again. */
				logm(st, HDD_LOG_INFO, "%s: absent; its record waits for it", j->pf);
				job_finish(j);
				return;
			}
			job_fail(j, HDD_ERR_NOT_FOUND, "no such PCI function");
			return;
		}
		if (j->live.totalvfs <= 0) {
			job_fail(j, HDD_ERR_REFUSED, "is not SR-IOV capable (no sriov_totalvfs)");
			return;
		}
		if (strcmp(j->live.driver, "vfio-pci") == 0 || j->live.driver[0] == '\0') {
			job_fail(j, HDD_ERR_REFUSED, "the PF is %s: VFs need the PF's own driver",
				 j->live.driver[0] ? "on vfio-pci" : "not bound to a driver");
			return;
		}
		if (num > j->live.totalvfs) {
			job_fail(j, HDD_ERR_INVALID_PARAMS, "num_vfs %d is above sriov_totalvfs %d", num,
				 j->live.totalvfs);
			return;
		}
		if (j->reapply && j->live.numvfs != num)
			emit_drift(j, "num_vfs", json_integer(num), json_integer(j->live.numvfs));
		if (j->live.ifindex > 0 && !j->count_only) {
			args = json_pack("{s:[{s:s, s:i}]}", "pfs", "address", j->pf, "ifindex",
					 j->live.ifindex);
			id = st->ops->worker_call(st->core, "inspect", args, st->timeout_ms,
						  inspect_done, j);
			json_decref(args);
			if (id < 0) {
				job_fail(j, HDD_ERR_FAILED, "worker: %s", strerror((int)-id));
				return;
			}
			j->call = id;
			return;
		}
		if (json_array_size(json_object_get(j->desired, "vfs")) > 0) {
			job_fail(j, HDD_ERR_REFUSED, "has no network interface: VF settings need a NIC PF with its netdev");
			return;
		}
		j->step = STEP_NUMVFS;
		/* fall through */
	case STEP_NUMVFS:
		j->prev_numvfs = j->live.numvfs;
		if (!j->reapply && !j->restoring) {
			/* Journal: the intent before the first kernel write. */
			j->prev = json_incref(json_object_get(st->records, j->pf));
			record_set(st, j->pf, j->desired, "applying", "control");
			if (records_save(st) < 0) {
				json_decref(j->prev);
				j->prev = NULL;
				job_fail(j, HDD_ERR_FAILED, "state.json could not record the change (failing closed)");
				return;
			}
			j->journaled = true;
		}
		if (j->live.numvfs == num) {
			j->step = STEP_SETVFS;
			job_step(j);
			return;
		}
		j->step = STEP_RELEASE;
		/* fall through */
	case STEP_RELEASE:
		release_step(j);
		return;
	case STEP_COUNT:
		if (j->live.numvfs != num) {
			j->count_changed = true;
			args = json_pack("{s:s, s:i, s:i}", "pf", j->pf, "num", num, "wait_ms",
					 st->timeout_ms);
			id = st->ops->worker_call(st->core, "numvfs", args, 2 * st->timeout_ms,
						  numvfs_done, j);
			json_decref(args);
			if (id < 0) {
				job_fail(j, HDD_ERR_FAILED, "worker: %s", strerror((int)-id));
				return;
			}
			j->call = id;
			return;
		}
		j->step = STEP_SETVFS;
		/* fall through */
	case STEP_SETVFS: {
		json_t *wanted;
		const json_t *have = json_object_get(j->inspect, "vfs");
		bool differs = j->count_changed;
		size_t i;
		json_t *v;

		if (j->count_only || j->live.ifindex <= 0 || num == 0) {
			j->step = STEP_DRIVER;
			job_step(j);
			return;
		}
		/* A VF the kernel made a moment ago gets its netdev once its
		 * driver has probed it: wait for that (a little) before
		 * reading the MAC to pin, or the pin is silently missed. */
		if (pin_wait(j))
			return;
		pin_macs(j);
		wanted = vfs_wanted(j, num);
		json_array_foreach(wanted, i, v) {
			const json_t *h = json_array_get(have, i);
			const char *attr = h ? vf_differs(v, h) : NULL;

			if (attr && j->reapply && !j->count_changed)
				emit_drift(j, attr, json_pack("{s:I, s:s}", "vf", (json_int_t)i, "attribute", attr),
					   json_deep_copy(h));
			differs |= attr != NULL;
		}
		if (!differs) {
			json_decref(j->readback);
			j->readback = json_incref((json_t *)have);
			json_decref(wanted);
			j->step = STEP_DRIVER;
			job_step(j);
			return;
		}
		args = json_pack("{s:i, s:o}", "ifindex", j->live.ifindex, "vfs", wanted);
		id = st->ops->worker_call(st->core, "setvfs", args, st->timeout_ms, setvfs_done, j);
		json_decref(args);
		if (id < 0) {
			job_fail(j, HDD_ERR_FAILED, "worker: %s", strerror((int)-id));
			return;
		}
		j->call = id;
		return;
	}
	case STEP_DRIVER:
		driver_step(j);
		return;
	case STEP_DONE:
	default:
		job_done_ok(j);
		return;
	}
}

/* --- what the configuration and the record ask for --------------------------- */

/* Queues a re-apply of the record of pf (start, hotplug, drift checks). */
static void
reapply(struct sriov *st, const char *pf)
{
	const json_t *rec = json_object_get(st->records, pf);
	struct job *j;

	if (rec == NULL || job_pending_for(st, pf))
		return;
	j = job_new(st, pf, json_deep_copy(json_object_get(rec, "desired")));
	if (j == NULL)
		return;
	j->reapply = true;
	/* A record still "applying" (a new configuration, a call cut short by
	 * kill -9) is finished, not drift. */
	j->fresh = strcmp(json_string_value(json_object_get(rec, "phase")) ?
			  json_string_value(json_object_get(rec, "phase")) : "", "applied") != 0;
	job_enqueue(st, j);
}

/* Config entries become records of the PFs they select (config wins over an
 * earlier control call for the same PF). */
static int
config_apply(struct sriov *st, const char *only_pf)
{
	const json_t *pfs = json_object_get(st->config, "pfs"), *entry;
	json_t *all = pf_addresses(st), *a;
	struct pf_live l = { 0 };
	size_t i, k;
	int changed = 0;

	json_array_foreach(all, k, a) {
		const char *addr = json_string_value(a);

		if (only_pf && strcmp(only_pf, addr) != 0)
			continue;
		if (pf_read(st, addr, &l) < 0)
			continue;
		json_array_foreach(pfs, i, entry) {
			json_t *spec = NULL;
			char why[200];
			const json_t *rec;

			if (!selector_matches(entry, &l) || spec_normalize(entry, &spec, why, sizeof(why)) < 0)
				continue;
			rec = json_object_get(st->records, addr);
			if (rec == NULL || !json_equal(json_object_get(rec, "desired"), spec)) {
				record_set(st, addr, spec, "applying", "config");
				changed++;
			}
			json_decref(spec);
			break;	/* the first entry that selects a PF wins */
		}
	}
	pf_live_clear(&l);
	json_decref(all);
	if (changed && records_save(st) < 0)
		logm(st, HDD_LOG_ERR, "state.json could not record the configuration's SR-IOV settings");
	return changed;
}

static void check_all(struct sriov *st);

static void
check_timer_cb(void *arg)
{
	struct sriov *st = arg;

	st->timer = -1;
	check_all(st);
	if (st->check_interval_ms > 0 && !st->stopping)
		st->timer = st->ops->timer_add(st->core, st->check_interval_ms, check_timer_cb, st);
}

static void
check_all(struct sriov *st)
{
	const char *pf;
	json_t *v;

	st->enqueuing = true;
	json_object_foreach(st->records, pf, v)
		reapply(st, pf);
	st->enqueuing = false;
	checks_answer(st);
}

/* --- methods ------------------------------------------------------------------ */

struct list_call {
	struct sriov *st;
	struct hdd_request *req;
	json_t *pfs;			/* result array being built */
};

static json_t *
pf_json(struct sriov *st, const struct pf_live *l)
{
	const json_t *rec = json_object_get(st->records, l->address);

	return json_pack("{s:s, s:s?, s:s?, s:i, s:s?, s:i, s:i, s:O, s:O?, s:s?}",
			 "address", l->address, "driver", l->driver[0] ? l->driver : NULL, "netdev",
			 l->ifname[0] ? l->ifname : NULL, "ifindex", l->ifindex,
			 "operstate", l->operstate[0] ? l->operstate : NULL,
			 "totalvfs", l->totalvfs, "numvfs", l->numvfs, "vf_devices", l->vfs,
			 "recorded", rec ? json_object_get(rec, "desired") : NULL,
			 "phase", rec ? json_string_value(json_object_get(rec, "phase")) : NULL);
}

static void
list_done(void *arg, int result, const json_t *out)
{
	struct list_call *c = arg;
	const json_t *res = json_object_get(out, "pfs");
	size_t i;
	json_t *pf;

	json_array_foreach(c->pfs, i, pf) {
		const json_t *o = json_object_get(res, json_string_value(json_object_get(pf, "address")));

		if (json_object_get(pf, "netdev") == NULL || json_is_null(json_object_get(pf, "netdev")))
			continue;
		if (result < 0 || o == NULL || json_object_get(o, "error")) {
			const char *e = json_string_value(json_object_get(o ? o : out, "error"));

			json_object_set_new(pf, "netlink_error",
					    json_string(e ? e : strerror(result < 0 ? -result : ENODEV)));
			continue;
		}
		json_object_set(pf, "management", json_object_get(o, "management"));
		if (json_object_get(o, "via"))
			json_object_set(pf, "management_via", json_object_get(o, "via"));
		json_object_set(pf, "vfs", json_object_get(o, "vfs"));
		json_object_set(c->st->vfcache, json_string_value(json_object_get(pf, "address")),
				json_object_get(o, "vfs"));
		json_object_set(pf, "vf_info", json_object_get(o, "vf_info"));
		json_object_set(pf, "link_up", json_object_get(o, "up"));
		if (json_object_get(o, "eswitch"))
			json_object_set(pf, "eswitch", json_object_get(o, "eswitch"));
		if (json_object_get(o, "eswitch_error"))
			json_object_set(pf, "eswitch_error", json_object_get(o, "eswitch_error"));
	}
	c->st->ops->reply(c->req, c->pfs);
	free(c);
}

static int
m_list(void *state, struct hdd_request *req, const json_t *params)
{
	struct sriov *st = state;
	json_t *all = pf_addresses(st), *a, *args, *nics;
	struct list_call *c = calloc(1, sizeof(*c));
	struct pf_live l = { 0 };
	size_t i;
	int64_t id;

	(void)params;
	if (c == NULL) {
		json_decref(all);
		return -ENOMEM;
	}
	c->st = st;
	c->req = req;
	c->pfs = json_array();
	nics = json_array();
	json_array_foreach(all, i, a) {
		char why[160] = "";
		json_t *pf;

		if (pf_read(st, json_string_value(a), &l) < 0)
			continue;
		pf = pf_json(st, &l);
		/* devlink's answer replaces it (NICs); none: null. */
		json_object_set_new(pf, "eswitch", json_null());
		if (st->ops->host_needs(st->core, l.address, why, sizeof(why)) == 1)
			json_object_set_new(pf, "host_needs", json_string(why));
		json_array_append_new(c->pfs, pf);
		if (l.ifindex > 0)
			json_array_append_new(nics, json_pack("{s:s, s:i}", "address", l.address,
							      "ifindex", l.ifindex));
	}
	pf_live_clear(&l);
	json_decref(all);
	if (json_array_size(nics) == 0) {
		json_decref(nics);
		list_done(c, 0, NULL);
		return 0;
	}
	args = json_pack("{s:o, s:b}", "pfs", nics, "eswitch", 1);
	id = st->ops->worker_call(st->core, "inspect", args, st->timeout_ms, list_done, c);
	json_decref(args);
	if (id < 0)
		list_done(c, (int)id, NULL);
	return 0;
}

static int
m_configure(void *state, struct hdd_request *req, const json_t *params)
{
	struct sriov *st = state;
	const char *name = json_string_value(json_object_get(params, "pf"));
	char addr[16], why[256];
	struct pf_live l = { 0 };
	json_t *spec = NULL, *vf;
	struct job *j;
	size_t i;
	int num;

	if (name == NULL) {
		st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS, "pf: expected the PF's PCI address or netdev name");
		return 0;
	}
	if (spec_normalize(params, &spec, why, sizeof(why)) < 0) {
		st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS, "%s", why);
		return 0;
	}
	if (pf_resolve(st, name, addr, sizeof(addr)) < 0 || pf_read(st, addr, &l) < 0) {
		st->ops->reply_error(req, HDD_ERR_NOT_FOUND, "%s: no such SR-IOV PF (an address or a netdev name)", name);
		goto out;
	}
	num = (int)json_integer_value(json_object_get(spec, "num_vfs"));
	if (job_pending_for(st, addr)) {
		st->ops->reply_error(req, HDD_ERR_BUSY, "%s: a change of this PF is in flight", addr);
		goto out;
	}
	if (strcmp(json_string_value(json_object_get(spec, "vf_driver")), "vfio-pci") == 0 &&
	    !HDD_CORE_HAS(st->ops, vfio_group_bind)) {
		st->ops->reply_error(req, HDD_ERR_FAILED,
				     "%s: this hostdevd has no IOMMU-group engine: vf_driver vfio-pci is unavailable (nothing changed)",
				     addr);
		goto out;
	}
	if (l.totalvfs > 0 && num > l.totalvfs) {
		st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS, "%s: num_vfs %d is above sriov_totalvfs %d",
				     addr, num, l.totalvfs);
		goto out;
	}
	if (!management_allowed(st, &l)) {
		char need[200] = "";

		if (st->ops->host_needs(st->core, addr, need, sizeof(need)) == 1) {
			st->ops->reply_error(req, HDD_ERR_REFUSED, "%s: the host needs it (%s)", addr, need);
			goto out;
		}
	}
	/* A count change removes every VF: refused while one is allocated or
	 * claimed by someone else. The groups this module moved go back to
	 * their drivers first (the job's release step). */
	if (l.numvfs >= 0 && num != l.numvfs) {
		json_array_foreach(l.vfs, i, vf) {
			const char *drv = json_string_value(json_object_get(vf, "driver"));
			const char *va = json_string_value(json_object_get(vf, "address"));
			char owner[32] = "";
			bool allocated = false;
			int held = HDD_CORE_HAS(st->ops, vfio_group_holder) ?
				   st->ops->vfio_group_holder(st->core, va, owner, sizeof(owner), &allocated) : 0;

			if (held == 1 && strcmp(owner, MOD) == 0 && !allocated)
				continue;
			if (held == 1) {
				st->ops->reply_error(req, HDD_ERR_BUSY,
						     "%s: VF %d (%s) is %s by %s: changing the count would remove it",
						     addr, (int)i, va, allocated ? "allocated" : "claimed", owner);
				goto out;
			}
			if (drv && strcmp(drv, "vfio-pci") == 0) {
				st->ops->reply_error(req, HDD_ERR_BUSY,
						     "%s: VF %d (%s) is claimed (on vfio-pci): changing the count would remove it",
						     addr, (int)i, va);
				goto out;
			}
		}
	}
	j = job_new(st, addr, spec);
	if (j == NULL) {
		json_decref(spec);
		pf_live_clear(&l);
		return -ENOMEM;
	}
	spec = NULL;
	j->req = req;
	job_enqueue(st, j);
out:
	json_decref(spec);
	pf_live_clear(&l);
	return 0;
}

/* Stops managing a PF: its record goes, the kernel keeps what it has. */
static int
m_forget(void *state, struct hdd_request *req, const json_t *params)
{
	struct sriov *st = state;
	const char *name = json_string_value(json_object_get(params, "pf"));
	char addr[16];
	struct pf_live l = { 0 };
	json_t *rec, *vf;
	size_t i;

	if (name == NULL) {
		st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS, "pf: expected the PF's PCI address or netdev name");
		return 0;
	}
	if (pf_resolve(st, name, addr, sizeof(addr)) < 0 || json_object_get(st->records, addr) == NULL) {
		st->ops->reply_error(req, HDD_ERR_NOT_FOUND, "%s: no SR-IOV record for this PF", name);
		return 0;
	}
	if (job_pending_for(st, addr)) {
		st->ops->reply_error(req, HDD_ERR_BUSY, "%s: a change of this PF is in flight", addr);
		return 0;
	}
	/* The groups it moved would stay held for a PF without a record. */
	if (pf_read(st, addr, &l) == 0 && HDD_CORE_HAS(st->ops, vfio_group_holder)) {
		json_array_foreach(l.vfs, i, vf) {
			const char *va = json_string_value(json_object_get(vf, "address"));
			char owner[32] = "";

			if (st->ops->vfio_group_holder(st->core, va, owner, sizeof(owner), NULL) == 1 &&
			    strcmp(owner, MOD) == 0) {
				st->ops->reply_error(req, HDD_ERR_BUSY,
						     "%s: VF %d (%s) is on vfio-pci through this module: configure vf_driver \"default\" first (nothing changed)",
						     addr, (int)i, va);
				pf_live_clear(&l);
				return 0;
			}
		}
	}
	pf_live_clear(&l);
	rec = json_incref(json_object_get(st->records, addr));
	json_object_del(st->records, addr);
	if (records_save(st) < 0) {
		json_object_set_new(st->records, addr, rec);
		st->ops->reply_error(req, HDD_ERR_FAILED, "%s: state.json could not record it", addr);
		return 0;
	}
	logm(st, HDD_LOG_INFO, "%s: forgotten (its VFs stay as they are)", addr);
	st->ops->reply(req, json_pack("{s:s, s:O}", "pf", addr, "forgotten", json_object_get(rec, "desired")));
	json_decref(rec);
	return 0;
}

static int
m_check(void *state, struct hdd_request *req, const json_t *params)
{
	struct sriov *st = state;

	(void)params;
	/* The answer lists what this check (or one running with it) found. */
	if (json_array_size(st->checks) == 0)
		json_array_clear(st->drift_seen);
	json_array_append_new(st->checks, json_integer((json_int_t)(uintptr_t)req));
	check_all(st);
	return 0;
}

/* --- hooks --------------------------------------------------------------------- */

static void
apply_section(struct sriov *st, const json_t *section)
{
	const json_t *iv = json_object_get(section, "check_interval_ms");

	json_decref(st->config);
	st->config = section ? json_deep_copy(section) : json_object();
	st->check_interval_ms = iv ? (int)json_integer_value(iv) : CHECK_INTERVAL_MS;
	iv = json_object_get(section, "timeout_ms");
	st->timeout_ms = iv ? (int)json_integer_value(iv) : TIMEOUT_MS;
}

static int
sriov_init(const struct hdd_core_ops *ops, struct hdd_core *core, const json_t *section,
	   void **ret_state)
{
	struct sriov *st;

	if (!HDD_CORE_HAS(ops, sysfs_fd))
		return -ENOTSUP;
	st = calloc(1, sizeof(*st));
	if (st == NULL)
		return -ENOMEM;
	st->ops = ops;
	st->core = core;
	st->records = json_object();
	st->vfcache = json_object();
	st->checks = json_array();
	st->drift_seen = json_array();
	st->hotplug_pfs = json_array();
	st->timer = st->hotplug_timer = -1;
	apply_section(st, section);
	st->netlink_sim = getenv(SRIOV_NETLINK_ENV) && getenv(SRIOV_NETLINK_ENV)[0];
	if (st->netlink_sim)
		logm(st, HDD_LOG_WARN, "rtnetlink goes to the simulated responder at %s (%s is set: tests only)",
		     getenv(SRIOV_NETLINK_ENV), SRIOV_NETLINK_ENV);
	*ret_state = st;
	return 0;
}

static void
sriov_fini(void *state)
{
	struct sriov *st = state;

	while (st->queue) {
		struct job *j = st->queue;

		st->queue = j->next;
		job_free(j);
	}
	if (st->running)
		job_free(st->running);
	json_decref(st->config);
	json_decref(st->records);
	json_decref(st->vfcache);
	json_decref(st->checks);
	json_decref(st->drift_seen);
	json_decref(st->hotplug_pfs);
	free(st);
}

static int
sriov_start(void *state)
{
	struct sriov *st = state;
	int err = 0;
	const char *pf;
	json_t *v;

	err = records_load(st);
	if (err < 0) {
		/* Fail closed: change nothing the journal would have to vouch for. */
		logm(st, HDD_LOG_ERR, "state.json cannot be trusted: SR-IOV settings are not applied");
		return 0;
	}
	config_apply(st, NULL);
	json_object_foreach(st->records, pf, v) {
		const char *phase = json_string_value(json_object_get(v, "phase"));

		logm(st, HDD_LOG_INFO, "%s: re-applying the recorded VF settings (%s%s)", pf,
		     phase ? phase : "?", st->ops->rebooted(st->core) ? ", after a reboot" : "");
		reapply(st, pf);
	}
	if (st->check_interval_ms > 0)
		st->timer = st->ops->timer_add(st->core, st->check_interval_ms, check_timer_cb, st);
	return 0;
}

static void
sriov_reload(void *state, const json_t *section)
{
	struct sriov *st = state;

	apply_section(st, section);
	if (st->timer > 0)
		st->ops->timer_cancel(st->core, st->timer);
	st->timer = -1;
	if (config_apply(st, NULL) > 0)
		check_all(st);
	if (st->check_interval_ms > 0)
		st->timer = st->ops->timer_add(st->core, st->check_interval_ms, check_timer_cb, st);
}

static void
sriov_stop(void *state)
{
	struct sriov *st = state;
	size_t i;
	json_t *v;

	st->stopping = true;
	if (st->timer > 0)
		st->ops->timer_cancel(st->core, st->timer);
	if (st->hotplug_timer > 0)
		st->ops->timer_cancel(st->core, st->hotplug_timer);
	st->timer = st->hotplug_timer = -1;
	/* Calls in flight complete with -ECANCELED; the waiting callers hear it. */
	if (st->running && st->running->call > 0) {
		st->ops->call_cancel(st->core, st->running->call);
		st->running->call = -1;
	}
	if (st->running && st->running->wait_timer > 0) {
		st->ops->timer_cancel(st->core, st->running->wait_timer);
		st->running->wait_timer = -1;
	}
	if (st->running && st->running->req)
		st->ops->reply_error(st->running->req, HDD_ERR_FAILED,
				     "%s: hostdevd is stopping (the record is applied at the next start)",
				     st->running->pf);
	if (st->running)
		st->running->req = NULL;
	for (struct job *j = st->queue; j; j = j->next) {
		if (j->req)
			st->ops->reply_error(j->req, HDD_ERR_FAILED, "%s: hostdevd is stopping", j->pf);
		j->req = NULL;
	}
	json_array_foreach(st->checks, i, v)
		st->ops->reply_error((struct hdd_request *)(uintptr_t)json_integer_value(v),
				     HDD_ERR_FAILED, "hostdevd is stopping");
	json_array_clear(st->checks);
}

static void
hotplug_timer_cb(void *arg)
{
	struct sriov *st = arg;
	size_t i;
	json_t *v;

	st->hotplug_timer = -1;
	json_array_foreach(st->hotplug_pfs, i, v) {
		const char *pf = json_string_value(v);

		if (config_apply(st, pf) > 0 || json_object_get(st->records, pf))
			reapply(st, pf);
	}
	json_array_clear(st->hotplug_pfs);
}

/* A network interface came: its PF may have come back (hotplug, driver
 * reload): debounced, then the record (or the configuration) is applied. */
static void
sriov_uevent(void *state, const char *action, const char *subsystem, const char *sysname,
	     const char *devpath)
{
	struct sriov *st = state;
	const char *net = devpath ? strstr(devpath, "/net/") : NULL;
	char pf[16];
	const char *p;

	if (st->stopping || strcmp(subsystem, "net") != 0 || net == NULL ||
	    (strcmp(action, "add") != 0 && strcmp(action, "move") != 0))
		return;
	for (p = net; p > devpath && p[-1] != '/'; p--)
		;
	if (net - p != 12)
		return;
	memcpy(pf, p, 12);
	pf[12] = '\0';
	if (!valid_address(pf))
		return;
	logm(st, HDD_LOG_DEBUG, "%s: interface %s %s", pf, sysname, action);
	json_array_append_new(st->hotplug_pfs, json_string(pf));
	if (st->hotplug_timer < 0)
		st->hotplug_timer = st->ops->timer_add(st->core, HOTPLUG_DEBOUNCE_MS, hotplug_timer_cb, st);
}

/* --- the VFs of recorded PFs: owned, described, advertised ----------------------- */

/* A VF of a PF with a record is this module's: devices.get shows its PF and
 * settings, and on vfio-pci it is offered under the record's resource_name.
 * Ownership is decided when the VF appears (VFs that were there before the
 * PF's first record stay with the pci module). */
static int
sriov_probe(void *state, const struct hdd_device_view *dev)
{
	struct sriov *st = state;

	char owner[32] = "";

	if (dev->cls != HDD_DEV_PCI || dev->pci->physfn == NULL)
		return 0;
	/* A VF whose group this module holds stays its own (offered under
	 * its resource name, never the pci module's), record or not. */
	if (HDD_CORE_HAS(st->ops, vfio_group_holder) &&
	    st->ops->vfio_group_holder(st->core, dev->id, owner, sizeof(owner), NULL) == 1 &&
	    strcmp(owner, MOD) == 0)
		return 20;
	if (records_load(st) < 0)
		return 0;
	return json_object_get(st->records, dev->pci->physfn) ? 20 : 0;
}

static int
sriov_describe(void *state, const struct hdd_device_view *dev, json_t *out)
{
	struct sriov *st = state;
	const char *pfa = dev->pci->physfn;
	const json_t *rec = json_object_get(st->records, pfa), *v;
	const json_t *desired = json_object_get(rec, "desired");
	struct pf_live l = { 0 };
	json_int_t index = -1;
	size_t i;

	if (pf_read(st, pfa, &l) == 0) {
		json_array_foreach(l.vfs, i, v)
			if (strcmp(json_string_value(json_object_get(v, "address")), dev->id) == 0)
				index = (json_int_t)i;
		if (l.ifname[0])
			json_object_set_new(out, "pf_netdev", json_string(l.ifname));
	}
	pf_live_clear(&l);
	json_object_set_new(out, "pf", json_string(pfa));
	json_object_set_new(out, "vf_index", index >= 0 ? json_integer(index) : json_null());
	json_array_foreach(json_object_get(st->vfcache, pfa), i, v)
		if (index >= 0 && json_integer_value(json_object_get(v, "index")) == index)
			json_object_set(out, "vf", (json_t *)v);
	json_array_foreach(json_object_get(desired, "vfs"), i, v)
		if (index >= 0 && json_integer_value(json_object_get(v, "index")) == index)
			json_object_set(out, "recorded", (json_t *)v);
	json_object_set_new(out, "vf_driver", json_string(json_string_value(json_object_get(desired, "vf_driver")) ?
							  json_string_value(json_object_get(desired, "vf_driver")) : "default"));
	if (json_object_get(desired, "resource_name"))
		json_object_set(out, "resource_name", json_object_get(desired, "resource_name"));
	json_object_set_new(out, "vfio_bound",
			    json_boolean(dev->pci->driver && strcmp(dev->pci->driver, "vfio-pci") == 0));
	/* The engine's view of its group while this module holds it. */
	if (HDD_CORE_HAS(st->ops, vfio_group_info)) {
		json_t *held = st->ops->vfio_group_info(st->core, dev->id);

		if (held)
			json_object_set_new(out, "held",
					    json_pack("{s:O?, s:O?, s:O?, s:O?}", "state",
						      json_object_get(held, "state"), "iommu_group",
						      json_object_get(held, "iommu_group"), "allocations",
						      json_object_get(held, "allocations"), "advertised_as",
						      json_object_get(held, "advertised_as")));
		json_decref(held);
	}
	return 0;
}

/* Offered while on vfio-pci, as the pci module offers a claimed function,
 * under the record's resource_name when it has one. */
static int
sriov_advertise(void *state, const struct hdd_device_view *dev, char *name, size_t size,
		bool *healthy)
{
	struct sriov *st = state;
	const json_t *desired = json_object_get(json_object_get(st->records, dev->pci->physfn), "desired");
	const char *res = json_string_value(json_object_get(desired, "resource_name"));
	const struct hdd_pci_facts *f = dev->pci;
	char node[32];

	if (f->driver == NULL || strcmp(f->driver, "vfio-pci") != 0)
		return 0;
	snprintf(node, sizeof(node), "vfio/%d", f->iommu_group);
	*healthy = f->iommu_group >= 0 && st->ops->dev_exists(st->core, node);
	if (res) {
		/* The record's own name: final, as a claim's resource name. */
		snprintf(name, size, "%s", res);
		return 2;
	}
	st->ops->pci_resource_name(st->core, f, name, size);
	return 1;
}

/* KubeVirt's contract, as for any PCI function: PCI_RESOURCE_<NAME> = the
 * addresses, the VFIO container and each group's node. */
static int
sriov_allocate(void *state, const char *resource, const struct hdd_device_view *const *devs,
	       size_t n, struct hdd_alloc *alloc)
{
	struct sriov *st = state;
	char env[320], path[64], *value;
	size_t len = 0;
	int err;

	if (HDD_CORE_HAS(st->ops, alloc_vfio_pci))
		return st->ops->alloc_vfio_pci(st->core, alloc, resource, devs, n);
	/* An older core: the same contract, built here. */
	value = calloc(n, 16);
	if (value == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(value + len, 16, "%s%s", i ? "," : "", devs[i]->pci->address);
	err = st->ops->env_name("PCI_RESOURCE", resource, env, sizeof(env));
	if (err == 0)
		err = st->ops->alloc_env(alloc, env, value);
	free(value);
	if (err == 0 && st->ops->alloc_prefer_iommufd(alloc) && st->ops->dev_exists(st->core, "iommu")) {
		bool all_cdevs = true;

		for (size_t i = 0; i < n; i++)
			all_cdevs &= devs[i]->pci->vfio_cdev != NULL;
		if (all_cdevs) {
			/* The resource's policy: /dev/iommu and each VF's cdev. */
			err = st->ops->alloc_device(alloc, "/dev/iommu", "/dev/iommu", "mrw");
			for (size_t i = 0; i < n && err == 0; i++) {
				snprintf(path, sizeof(path), "/dev/vfio/devices/%s", devs[i]->pci->vfio_cdev);
				err = st->ops->alloc_device(alloc, path, path, "mrw");
			}
			return err;
		}
	}
	if (err == 0)
		err = st->ops->alloc_device(alloc, "/dev/vfio/vfio", "/dev/vfio/vfio", "mrw");
	for (size_t i = 0; i < n && err == 0; i++) {
		const struct hdd_pci_facts *f = devs[i]->pci;

		if (f->iommu_group < 0)
			return -ENODEV;
		snprintf(path, sizeof(path), "/dev/vfio/%d", f->iommu_group);
		err = st->ops->alloc_device(alloc, path, path, "mrw");
		if (err == 0 && f->vfio_cdev) {
			snprintf(path, sizeof(path), "/dev/vfio/devices/%s", f->vfio_cdev);
			err = st->ops->alloc_device(alloc, path, path, "mrw");
		}
	}
	return err;
}

/* --- the worker's side: see nl.c ------------------------------------------------ */

static const char *const no_params[] = { NULL };
static const char *const forget_params[] = { "pf", NULL };
static const char *const configure_params[] = { "pf", "num_vfs", "vf_driver", "resource_name",
						"vfs", NULL };

static const struct hdd_method sriov_methods[] = {
	{ .name = MOD ".list", .params = no_params, .call = m_list },
	{ .name = MOD ".configure", .params = configure_params, .call = m_configure,
	  .mutating = true },
	{ .name = MOD ".check", .params = no_params, .call = m_check, .mutating = true },
	{ .name = MOD ".forget", .params = forget_params, .call = m_forget, .mutating = true },
	{ .name = NULL },
};

static const struct hdd_worker_op sriov_worker_ops[] = {
	{ .name = "inspect", .run = sriov_op_inspect },
	{ .name = "setvfs", .run = sriov_op_setvfs },
	{ .name = "numvfs", .run = sriov_op_numvfs },
	{ .name = NULL },
};

static const char *const sriov_subsystems[] = { "net", NULL };

__attribute__((visibility("default"))) const struct hdd_module hostdevd_module = {
	HDD_MODULE_HEADER,
	.name = MOD,
	.description = "SR-IOV NIC virtual functions: count, VF settings over rtnetlink, VF driver",
	.subsystems = sriov_subsystems,
	.methods = sriov_methods,
	.worker_ops = sriov_worker_ops,
	.config_check = sriov_config_check,
	.init = sriov_init,
	.fini = sriov_fini,
	.start = sriov_start,
	.reload = sriov_reload,
	.stop = sriov_stop,
	.uevent = sriov_uevent,
	.probe = sriov_probe,
	.describe = sriov_describe,
	.advertise = sriov_advertise,
	.allocate = sriov_allocate,
};
