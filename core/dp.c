/* SPDX-License-Identifier: MIT */
/* Kubelet device plugins: resources, their members and the v1beta1 methods. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "claim.h"
#include "conf.h"
#include "fsroot.h"
#include "inventory.h"
#include "module.h"
#include "deviceplugin.pb-c.h"
#include "dp-names.h"
#include "dp-server.h"
#include "dp.h"
#include "log.h"
#include "metrics.h"
#include "modhost.h"

struct dp_stats {
	uint64_t full;			/* recomputes of every device */
	uint64_t incremental;		/* recomputes of the devices that changed */
	uint64_t evaluated;		/* device evaluations, all recomputes */
	size_t last_evaluated;
	size_t last_changed;		/* resources whose list changed, last recompute */
};

struct dp {
	struct dp_env env;
	const struct config *cfg;	/* in force; replaced on reload */
	struct dp_server *server;	/* the transport, once it runs */
	struct dp_resource **v;
	size_t n;
	bool dirty;			/* every device must be recomputed */
	bool stopping;
	char (*pending)[32];		/* ids to recompute (when not dirty) */
	size_t npending, cap_pending;
	/* <dev-root>/vfio/<group> by group: 0 not known yet, 1 there, 2 not.
	 * Trusted only while dp-server watches the directory. */
	uint8_t *vfio;
	size_t nvfio;
	bool vfio_watched;
	int64_t aer_next;		/* monotonic s when an AER hold ends; 0: none */
	struct dp_stats stats;
};

#define DP_MAX_IDS 4096		/* devices in one request */

static const char *const reg_state_names[DP_REG_STATE_MAX] = {
	[DP_REG_NEW] = "new",
	[DP_REG_WAIT_KUBELET] = "waiting-for-kubelet",
	[DP_REG_REGISTERING] = "registering",
	[DP_REG_REGISTERED] = "registered",
	[DP_REG_BACKOFF] = "backoff",
	[DP_REG_FAILED] = "failed",
};

const char *
dp_reg_state_to_string(enum dp_reg_state s)
{
	return (unsigned)s < DP_REG_STATE_MAX ? reg_state_names[s] : "invalid";
}

void
dp_reg_set_state(struct dp_resource *r, enum dp_reg_state s, const char *why)
{
	if (r->state == s)
		return;
	log_debug("dp", "%s: registration %s -> %s (%s)", r->name, dp_reg_state_to_string(r->state),
		  dp_reg_state_to_string(s), why);
	r->state = s;
}

size_t
dp_resource_count(const struct dp *dp)
{
	return dp->n;
}

struct dp_resource *
dp_resource_at(const struct dp *dp, size_t i)
{
	return dp->v[i];
}

bool
dp_full_pass_due(const struct dp *dp)
{
	return dp->dirty;
}

int64_t
dp_aer_next(const struct dp *dp)
{
	return dp->aer_next;
}

void
dp_attach_server(struct dp *dp, struct dp_server *server)
{
	dp->server = server;
}

void
dp_set_config(struct dp *dp, const struct config *cfg)
{
	dp->cfg = cfg;
}

void
dp_resources_changed(struct dp *dp)
{
	if (dp == NULL)
		return;
	dp->dirty = true;
	dp_server_kick(dp->server);
}

int
dp_new(const struct dp_env *env, const struct config *cfg, struct dp **ret)
{
	struct dp *dp = calloc(1, sizeof(*dp));

	if (dp == NULL)
		return -ENOMEM;
	if (env)
		dp->env = *env;
	dp->cfg = cfg;
	dp->dirty = true;
	*ret = dp;
	return 0;
}

static void
members_free(struct dp_member *m, size_t n)
{
	for (size_t i = 0; i < n; i++)
		device_unref(m[i].dev);
	free(m);
}

static void
resource_free(struct dp_resource *r)
{
	members_free(r->members, r->n);
	free(r->watches);
	free(r);
}

void
dp_free(struct dp *dp)
{
	if (dp == NULL)
		return;
	for (size_t i = 0; i < dp->n; i++)
		resource_free(dp->v[i]);
	free(dp->v);
	free(dp->pending);
	free(dp->vfio);
	free(dp);
}

struct dp_resource *
dp_find(struct dp *dp, const char *name)
{
	for (size_t i = 0; i < dp->n; i++)
		if (strcmp(dp->v[i]->name, name) == 0)
			return dp->v[i];
	return NULL;
}

/* --- membership ------------------------------------------------------------ */

#define DP_MAX_PENDING 512	/* more changed devices than this: recompute all */
#define DP_VFIO_CACHE_MAX 65535	/* larger group numbers are not cached */

struct candidate {
	char name[256];
	struct dp_member m;
	const struct module *module;
};

static int
candidate_cmp(const void *a, const void *b)
{
	const struct candidate *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c ? c : strcmp(x->m.id, y->m.id);
}

static int64_t
mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

/* Binary search over r's members (sorted by id): the member, or NULL;
 * *pos gets where it is or would go. */
static struct dp_member *
member_search(const struct dp_resource *r, const char *id, size_t *pos)
{
	size_t lo = 0, hi = r->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(r->members[mid].id, id);

		if (c == 0) {
			if (pos)
				*pos = mid;
			return &r->members[mid];
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (pos)
		*pos = lo;
	return NULL;
}

static struct dp_member *
member_find(const struct dp_resource *r, const char *id)
{
	return member_search(r, id, NULL);
}

static bool
members_equal(const struct dp_member *a, size_t na, const struct candidate *b, size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (strcmp(a[i].id, b[i].m.id) || a[i].healthy != b[i].m.healthy ||
		    a[i].numa != b[i].m.numa)
			return false;
	return true;
}

/* --- health of the group nodes ------------------------------------------------ */

/* "vfio/<group>" gives the group, anything else -1. */
static int
vfio_group_of(const char *rel)
{
	char *end;
	long g;

	if (strncmp(rel, "vfio/", 5) != 0 || rel[5] < '0' || rel[5] > '9')
		return -1;
	errno = 0;
	g = strtol(rel + 5, &end, 10);
	if (*end != '\0' || errno != 0 || g > DP_VFIO_CACHE_MAX)
		return -1;
	return (int)g;
}

static void
vfio_cache_set(struct dp *dp, int group, uint8_t v)
{
	if ((size_t)group >= dp->nvfio) {
		size_t n = dp->nvfio ? dp->nvfio : 256;
		uint8_t *p;

		while (n <= (size_t)group)
			n *= 2;
		p = realloc(dp->vfio, n);
		if (p == NULL)
			return;		/* not cached: looked up each time */
		memset(p + dp->nvfio, 0, n - dp->nvfio);
		dp->vfio = p;
		dp->nvfio = n;
	}
	dp->vfio[group] = v;
}

bool
dp_dev_exists(struct dp *dp, const char *rel)
{
	int group = dp->vfio_watched ? vfio_group_of(rel) : -1;
	bool there;

	if (group >= 0 && (size_t)group < dp->nvfio && dp->vfio[group])
		return dp->vfio[group] == 1;
	there = dp->env.dev && fsroot_exists(dp->env.dev, rel) == 0;
	if (group >= 0)
		vfio_cache_set(dp, group, there ? 1 : 2);
	return there;
}

void
dp_vfio_watched(struct dp *dp, bool watched)
{
	if (!watched || !dp->vfio_watched) {
		free(dp->vfio);
		dp->vfio = NULL;
		dp->nvfio = 0;
	}
	dp->vfio_watched = watched;
}

void
dp_vfio_event(struct dp *dp, const char *name, bool present)
{
	struct device *members[256];
	char rel[64];
	size_t n;
	int group;

	snprintf(rel, sizeof(rel), "vfio/%s", name);
	group = vfio_group_of(rel);
	if (group < 0)
		return;		/* the container, devices/: no one's health */
	if (dp->vfio_watched)
		vfio_cache_set(dp, group, present ? 1 : 2);
	n = inventory_group_members(dp->env.inv, group, members, 256);
	if (n > 256) {
		dp_resources_changed(dp);
		return;
	}
	for (size_t i = 0; i < n; i++)
		dp_device_changed(dp, members[i]);
}

/* --- what each device contributes --------------------------------------------- */

/* A member of a group held in the IOMMU-group engine: offered while held,
 * under the name its module gives (a final name as it is, a default one as
 * the configuration renames it; never withheld by it), Unhealthy when it
 * left vfio-pci or its group's node is gone. */
static bool
claimed_candidate(struct dp *dp, const struct claims_member *cm, struct device *dev,
		  struct candidate *c)
{
	const struct config *cfg = dp->cfg;
	const struct resource_rule *rule;
	struct hdd_device_view view;
	bool healthy = true;
	char node[32];
	int said = 1, fresh;
	int64_t now = mono_s(), until = 0;
	int hold = cfg->resync_interval > 60 ? cfg->resync_interval : 60;

	if (!cm->offered || dev->pci.f.is_bridge || dev->owner == NULL)
		return false;
	if (module_advertises(dev->owner)) {
		device_view(dev, &view);
		said = module_advertise(dev->owner, &view, c->name, sizeof(c->name), &healthy);
		if (said != 1 && said != 2)
			return false;
	} else {
		dp_default_resource_name(&dev->pci.f, c->name, sizeof(c->name));
	}
	rule = said == 2 ? NULL : config_match_rule(cfg, dev->id, dev->pci.f.vendor_id,
						    dev->pci.f.device_id, dev->pci.f.class_code);
	if (rule && rule->name)
		snprintf(c->name, sizeof(c->name), "%s", rule->name);
	claims_member_advertised(dp->env.claims, dev->id, c->name);
	snprintf(node, sizeof(node), "vfio/%d", dev->pci.f.iommu_group);
	c->m.healthy = healthy && dev->pci.driver && strcmp(dev->pci.driver, "vfio-pci") == 0 &&
		       dev->pci.f.iommu_group == cm->group && dp_dev_exists(dp, node);
	/* AER errors since the last look: Unhealthy for a resync interval
	 * (at least a minute) after the last new one. */
	if (claims_member_aer(dp->env.claims, dev->id, dev->pci.f.aer_errors, hold, now, &until,
			      &fresh)) {
		c->m.healthy = false;
		/* Recovery is due then, whatever else happens. */
		if (dp->aer_next == 0 || until < dp->aer_next)
			dp->aer_next = until;
	}
	if (fresh > 0)
		log_warnx("dp", "%s: %d new AER errors; Unhealthy for %d s", dev->id, fresh, hold);
	snprintf(c->m.id, sizeof(c->m.id), "%s", dev->id);
	c->m.numa = dev->pci.f.numa_node;
	c->m.iommu_group = dev->pci.f.iommu_group;
	c->m.dev = dev;
	c->module = dev->owner;
	return true;
}

/* What one device contributes: its resource name and health, or nothing. */
static bool
device_candidate(struct dp *dp, struct device *dev, struct candidate *c)
{
	const struct config *cfg = dp->cfg;
	const struct resource_rule *rule;
	struct hdd_device_view view;
	struct claims_member cm;
	bool healthy = true;
	int said;

	if (dev->cls != HDD_DEV_PCI || dev->owner == NULL)
		return false;
	if (claims_member_get(dp->env.claims, dev->id, &cm))
		return claimed_candidate(dp, &cm, dev, c);
	if (!module_advertises(dev->owner))
		return false;
	device_view(dev, &view);
	said = module_advertise(dev->owner, &view, c->name, sizeof(c->name), &healthy);
	if (said != 1 && said != 2)
		return false;
	/* A final name (2) is neither renamed nor withheld by the configuration. */
	rule = said == 2 ? NULL : config_match_rule(cfg, dev->id, dev->pci.f.vendor_id,
						    dev->pci.f.device_id, dev->pci.f.class_code);
	if (said == 1 && rule == NULL && !cfg->advertise_unlisted)
		return false;
	if (rule && !rule->advertise)
		return false;
	if (rule && rule->name)
		snprintf(c->name, sizeof(c->name), "%s", rule->name);
	snprintf(c->m.id, sizeof(c->m.id), "%s", dev->id);
	c->m.healthy = healthy;
	c->m.numa = dev->pci.f.numa_node;
	c->m.iommu_group = dev->pci.f.iommu_group;
	c->m.dev = dev;
	c->module = dev->owner;
	return true;
}

/* A member of a held group missing from sysfs stays in the resource it was
 * offered under, Unhealthy, so the kubelet keeps the capacity and refuses
 * new pods. */
static bool
absent_candidate(struct dp *dp, const struct claims_member *m, struct candidate *c)
{
	const struct module *owner = modules_find(dp->env.mods, m->owner);

	if (owner == NULL || !m->offered || !m->advertised[0] || m->bridge)
		return false;
	memset(c, 0, sizeof(*c));
	snprintf(c->name, sizeof(c->name), "%s", m->advertised);
	snprintf(c->m.id, sizeof(c->m.id), "%s", m->address);
	c->m.healthy = false;
	c->m.numa = -1;
	c->m.iommu_group = m->group;
	c->module = owner;
	return true;
}

/* What the function with this address contributes, present or not. */
static bool
id_candidate(struct dp *dp, const char *id, struct candidate *c)
{
	struct device *dev = inventory_find(dp->env.inv, HDD_DEV_PCI, id);
	struct claims_member cm;

	memset(c, 0, sizeof(*c));
	if (dev)
		return device_candidate(dp, dev, c);
	return claims_member_get(dp->env.claims, id, &cm) && absent_candidate(dp, &cm, c);
}

/* Members a module set that are not inventory devices (MIG instances,
 * mdevs not yet in sysfs): they join its resource as they are. */
struct extra_walk {
	struct candidate *c;
	size_t n;
};

static void
extra_member_cb(const struct module *m, const char *resource,
		const struct hdd_resource_member *member, void *arg)
{
	struct extra_walk *w = arg;
	struct candidate *c = &w->c[w->n++];

	memset(c, 0, sizeof(*c));
	snprintf(c->name, sizeof(c->name), "%s", resource);
	snprintf(c->m.id, sizeof(c->m.id), "%s", member->id);
	c->m.healthy = member->healthy;
	c->m.numa = member->numa_node;
	c->m.iommu_group = -1;
	c->module = m;
}

/* --- resources ---------------------------------------------------------------- */

static struct dp_resource *
resource_new(struct dp *dp, const char *name, const struct module *module)
{
	struct dp_resource *r = calloc(1, sizeof(*r));
	struct dp_resource **v;
	int err;

	if (r == NULL)
		return NULL;
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->module = module;
	err = dp_socket_name(dp->env.kubelet_dir, name, r->sock, sizeof(r->sock));
	if (err < 0) {
		dp_reg_set_state(r, DP_REG_FAILED, "no socket name fits");
		snprintf(r->last_error, sizeof(r->last_error),
			 "the kubelet directory path is too long for any socket name");
	}
	v = realloc(dp->v, (dp->n + 1) * sizeof(*v));
	if (v == NULL) {
		free(r);
		return NULL;
	}
	dp->v = v;
	dp->v[dp->n++] = r;
	return r;
}

/* A new resource is served (and registered) once it has its first members. */
static void
resource_announce(struct dp *dp, struct dp_resource *r)
{
	log_info("dp", "resource %s: %zu devices, endpoint %s", r->name, r->n, r->sock);
	if (r->state != DP_REG_FAILED)
		dp_server_resource_added(dp->server, r);
}

static void
set_members(struct dp_resource *r, const struct candidate *c, size_t n)
{
	struct dp_member *m = calloc(n ? n : 1, sizeof(*m));

	if (m == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		m[i] = c[i].m;
		if (m[i].dev)
			device_ref(m[i].dev);
	}
	members_free(r->members, r->n);
	r->members = m;
	r->n = n;
	r->changed = true;
}

/* Same id, maybe new facts: what the kubelet sees changes only with health
 * or NUMA node; the device object is swapped silently (Allocate reads it). */
static void
member_update(struct dp_resource *r, struct dp_member *cur, const struct dp_member *m)
{
	if (cur->healthy != m->healthy || cur->numa != m->numa)
		r->changed = true;
	cur->healthy = m->healthy;
	cur->numa = m->numa;
	cur->iommu_group = m->iommu_group;
	if (cur->dev != m->dev) {
		if (m->dev)
			device_ref(m->dev);
		device_unref(cur->dev);
		cur->dev = m->dev;
	}
}

static int
member_insert(struct dp_resource *r, size_t pos, const struct dp_member *m)
{
	struct dp_member *v = realloc(r->members, (r->n + 1) * sizeof(*v));

	if (v == NULL)
		return -ENOMEM;
	r->members = v;
	memmove(&v[pos + 1], &v[pos], (r->n - pos) * sizeof(*v));
	v[pos] = *m;
	if (m->dev)
		device_ref(m->dev);
	r->n++;
	r->changed = true;
	return 0;
}

static void
member_remove(struct dp_resource *r, size_t pos)
{
	device_unref(r->members[pos].dev);
	memmove(&r->members[pos], &r->members[pos + 1], (r->n - pos - 1) * sizeof(*r->members));
	r->n--;
	r->changed = true;
}

/* Resources left with no device go away: an empty list, the end of their
 * streams, their socket removed. */
static void
withdraw_unseen(struct dp *dp)
{
	for (size_t i = 0; i < dp->n;) {
		struct dp_resource *r = dp->v[i];

		if (r->seen) {
			i++;
			continue;
		}
		log_info("dp", "resource %s: no devices left; withdrawing it", r->name);
		dp_server_resource_removed(dp->server, r);
		memmove(&dp->v[i], &dp->v[i + 1], (dp->n - i - 1) * sizeof(*dp->v));
		dp->n--;
		resource_free(r);
	}
}

struct absent_walk {
	struct dp *dp;
	struct candidate *c;
	size_t n, evaluated;
};

static void
absent_member_cb(const struct claims_member *m, void *arg)
{
	struct absent_walk *w = arg;

	if (inventory_find(w->dp->env.inv, HDD_DEV_PCI, m->address))
		return;
	w->evaluated++;
	if (absent_candidate(w->dp, m, &w->c[w->n]))
		w->n++;
}

/* Every device, every held group: the safety net (resyncs, claims, reloads). */
static size_t
recompute_all(struct dp *dp)
{
	size_t total = inventory_count(dp->env.inv), extra = 0, n = 0, evaluated = total;
	struct absent_walk absent = { .dp = dp };
	struct extra_walk walk;
	struct candidate *c;

	extra += claims_member_count(dp->env.claims);
	extra += modhost_member_count(dp->env.mods);
	c = calloc(total + extra + 1, sizeof(*c));
	if (c == NULL)
		return 0;
	/* Nothing cached survives a full pass: /dev is read again. */
	if (dp->nvfio)
		memset(dp->vfio, 0, dp->nvfio);
	dp->aer_next = 0;
	for (size_t i = 0; i < total; i++)
		if (device_candidate(dp, inventory_at(dp->env.inv, i), &c[n]))
			n++;
	absent.c = c;
	absent.n = n;
	claims_member_foreach(dp->env.claims, absent_member_cb, &absent);
	n = absent.n;
	evaluated += absent.evaluated;
	walk.c = c;
	walk.n = n;
	modhost_member_foreach(dp->env.mods, extra_member_cb, &walk);
	n = walk.n;
	qsort(c, n, sizeof(*c), candidate_cmp);
	for (size_t i = 0; i < dp->n; i++)
		dp->v[i]->seen = false;

	for (size_t i = 0; i < n;) {
		size_t j = i;
		struct dp_resource *r;

		while (j < n && strcmp(c[j].name, c[i].name) == 0)
			j++;
		r = dp_find(dp, c[i].name);
		if (r == NULL) {
			r = resource_new(dp, c[i].name, c[i].module);
			if (r == NULL)
				break;
			set_members(r, &c[i], j - i);
			r->seen = true;
			resource_announce(dp, r);
		} else if (!members_equal(r->members, r->n, &c[i], j - i)) {
			set_members(r, &c[i], j - i);
			log_info("dp", "resource %s: now %zu devices", r->name, r->n);
			r->seen = true;
		} else {
			for (size_t k = 0; k < r->n; k++)
				member_update(r, &r->members[k], &c[i + k].m);
			r->seen = true;
		}
		i = j;
	}
	free(c);
	withdraw_unseen(dp);
	return evaluated;
}

static int
pending_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* Only the devices named since the last pass: each leaves the resource it
 * was in, joins another, or stays with new facts. */
static size_t
recompute_pending(struct dp *dp)
{
	size_t n = 0;

	qsort(dp->pending, dp->npending, sizeof(*dp->pending), pending_cmp);
	for (size_t i = 0; i < dp->n; i++)
		dp->v[i]->seen = true;
	for (size_t i = 0; i < dp->npending; i++) {
		const char *id = dp->pending[i];
		struct dp_resource *old = NULL, *r;
		struct dp_member *cur = NULL;
		struct candidate c;
		size_t pos = 0;
		bool want;

		if (i > 0 && strcmp(id, dp->pending[i - 1]) == 0)
			continue;
		n++;
		want = id_candidate(dp, id, &c);
		for (size_t k = 0; k < dp->n && cur == NULL; k++)
			if ((cur = member_search(dp->v[k], id, &pos)) != NULL)
				old = dp->v[k];
		if (cur && want && strcmp(old->name, c.name) == 0) {
			member_update(old, cur, &c.m);
			continue;
		}
		if (cur) {
			member_remove(old, pos);
			old->seen = old->n > 0;
		}
		if (!want)
			continue;
		r = dp_find(dp, c.name);
		if (r == NULL) {
			r = resource_new(dp, c.name, c.module);
			if (r == NULL || member_insert(r, 0, &c.m) < 0)
				continue;	/* an empty new resource is withdrawn below */
			r->seen = true;
			resource_announce(dp, r);
			continue;
		}
		member_search(r, c.m.id, &pos);
		if (member_insert(r, pos, &c.m) == 0)
			r->seen = true;
	}
	for (size_t i = 0; i < dp->n; i++)
		if (dp->v[i]->n == 0)
			dp->v[i]->seen = false;
	withdraw_unseen(dp);
	return n;
}

bool
dp_recompute_due(const struct dp *dp)
{
	return dp->dirty || dp->npending > 0;
}

void
dp_recompute(struct dp *dp)
{
	bool full = dp->dirty;
	size_t evaluated, changed = 0;

	if (full)
		evaluated = recompute_all(dp);
	else
		evaluated = recompute_pending(dp);
	dp->dirty = false;
	dp->npending = 0;
	for (size_t i = 0; i < dp->n; i++) {
		if (!dp->v[i]->changed)
			continue;
		changed++;
		if (!full)
			log_info("dp", "resource %s: now %zu devices", dp->v[i]->name, dp->v[i]->n);
	}
	if (full)
		dp->stats.full++;
	else
		dp->stats.incremental++;
	dp->stats.evaluated += evaluated;
	dp->stats.last_evaluated = evaluated;
	dp->stats.last_changed = changed;
	log_debug("dp", "recompute (%s): %zu of %zu devices evaluated, %zu resources changed",
		  full ? "full" : "incremental", evaluated, inventory_count(dp->env.inv), changed);
}

void
dp_id_changed(struct dp *dp, const char *id)
{
	if (!dp->dirty) {
		if (dp->npending == dp->cap_pending && dp->npending < DP_MAX_PENDING) {
			size_t cap = dp->cap_pending ? dp->cap_pending * 2 : 16;
			void *p = realloc(dp->pending, cap * sizeof(*dp->pending));

			if (p) {
				dp->pending = p;
				dp->cap_pending = cap;
			}
		}
		if (dp->npending < dp->cap_pending && dp->npending < DP_MAX_PENDING)
			snprintf(dp->pending[dp->npending++], sizeof(*dp->pending), "%s", id);
		else
			dp->dirty = true;	/* that many: all at once */
	}
	dp_server_kick(dp->server);
}

void
dp_device_changed(struct dp *dp, const struct device *dev)
{
	if (dev->cls == HDD_DEV_PCI)
		dp_id_changed(dp, dev->id);
}

/* --- encoding -------------------------------------------------------------- */

static int
pack(const ProtobufCMessage *m, uint8_t **ret, size_t *len)
{
	size_t n = protobuf_c_message_get_packed_size(m);
	uint8_t *buf = malloc(n ? n : 1);

	if (buf == NULL)
		return -ENOMEM;
	protobuf_c_message_pack(m, buf);
	*ret = buf;
	*len = n;
	return 0;
}

int
dp_encode_list(const struct dp_resource *r, bool empty, uint8_t **ret, size_t *len)
{
	V1beta1__ListAndWatchResponse resp = V1BETA1__LIST_AND_WATCH_RESPONSE__INIT;
	size_t n = empty ? 0 : r->n;
	V1beta1__Device *devs = calloc(n ? n : 1, sizeof(*devs));
	V1beta1__Device **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
	V1beta1__TopologyInfo *topo = calloc(n ? n : 1, sizeof(*topo));
	V1beta1__NUMANode *numa = calloc(n ? n : 1, sizeof(*numa));
	V1beta1__NUMANode **numa_ptrs = calloc(n ? n : 1, sizeof(*numa_ptrs));
	int err = -ENOMEM;

	if (!devs || !ptrs || !topo || !numa || !numa_ptrs)
		goto out;
	for (size_t i = 0; i < n; i++) {
		v1beta1__device__init(&devs[i]);
		devs[i].id = (char *)r->members[i].id;
		devs[i].health = (char *)(r->members[i].healthy ? "Healthy" : "Unhealthy");
		if (r->members[i].numa >= 0) {
			v1beta1__topology_info__init(&topo[i]);
			v1beta1__numanode__init(&numa[i]);
			numa[i].id = r->members[i].numa;
			numa_ptrs[i] = &numa[i];
			topo[i].n_nodes = 1;
			topo[i].nodes = &numa_ptrs[i];
			devs[i].topology = &topo[i];
		}
		ptrs[i] = &devs[i];
	}
	resp.n_devices = n;
	resp.devices = ptrs;
	err = pack(&resp.base, ret, len);
out:
	free(devs);
	free(ptrs);
	free(topo);
	free(numa);
	free(numa_ptrs);
	return err;
}

static void
plugin_options(V1beta1__DevicePluginOptions *o)
{
	v1beta1__device_plugin_options__init(o);
	o->pre_start_required = 0;
	o->get_preferred_allocation_available = 1;
}

int
dp_encode_register(const struct dp_resource *r, uint8_t **ret, size_t *len)
{
	V1beta1__RegisterRequest req = V1BETA1__REGISTER_REQUEST__INIT;
	V1beta1__DevicePluginOptions opts;

	plugin_options(&opts);
	req.version = (char *)DP_API_VERSION;
	req.endpoint = (char *)r->sock;
	req.resource_name = (char *)r->name;
	req.options = &opts;
	return pack(&req.base, ret, len);
}

/* --- Allocate -------------------------------------------------------------- */

struct hdd_alloc {
	V1beta1__ContainerAllocateResponse resp;
	size_t cap_envs, cap_devs, cap_mounts;
	bool prefer_iommufd;
};

bool
dp_alloc_prefer_iommufd(const struct hdd_alloc *a)
{
	return a->prefer_iommufd;
}

static char *
xstrdup(const char *s)
{
	return strdup(s ? s : "");
}

int
dp_alloc_env(struct hdd_alloc *a, const char *name, const char *value)
{
	V1beta1__ContainerAllocateResponse__EnvsEntry *e;

	for (size_t i = 0; i < a->resp.n_envs; i++) {
		if (strcmp(a->resp.envs[i]->key, name) == 0) {
			char *v = xstrdup(value);

			if (v == NULL)
				return -ENOMEM;
			free(a->resp.envs[i]->value);
			a->resp.envs[i]->value = v;
			return 0;
		}
	}
	if (a->resp.n_envs == a->cap_envs) {
		size_t cap = a->cap_envs ? a->cap_envs * 2 : 4;
		void *p = realloc(a->resp.envs, cap * sizeof(*a->resp.envs));

		if (p == NULL)
			return -ENOMEM;
		a->resp.envs = p;
		a->cap_envs = cap;
	}
	e = malloc(sizeof(*e));
	if (e == NULL)
		return -ENOMEM;
	v1beta1__container_allocate_response__envs_entry__init(e);
	e->key = xstrdup(name);
	e->value = xstrdup(value);
	a->resp.envs[a->resp.n_envs++] = e;
	return (e->key && e->value) ? 0 : -ENOMEM;
}

int
dp_alloc_device(struct hdd_alloc *a, const char *host_path, const char *container_path,
		const char *permissions)
{
	V1beta1__DeviceSpec *d;

	for (size_t i = 0; i < a->resp.n_devices; i++)
		if (strcmp(a->resp.devices[i]->host_path, host_path) == 0)
			return 0;	/* already there (two devices of one group) */
	if (a->resp.n_devices == a->cap_devs) {
		size_t cap = a->cap_devs ? a->cap_devs * 2 : 4;
		void *p = realloc(a->resp.devices, cap * sizeof(*a->resp.devices));

		if (p == NULL)
			return -ENOMEM;
		a->resp.devices = p;
		a->cap_devs = cap;
	}
	d = malloc(sizeof(*d));
	if (d == NULL)
		return -ENOMEM;
	v1beta1__device_spec__init(d);
	d->host_path = xstrdup(host_path);
	d->container_path = xstrdup(container_path ? container_path : host_path);
	d->permissions = xstrdup(permissions ? permissions : "mrw");
	a->resp.devices[a->resp.n_devices++] = d;
	return (d->host_path && d->container_path && d->permissions) ? 0 : -ENOMEM;
}

int
dp_alloc_mount(struct hdd_alloc *a, const char *host_path, const char *container_path,
	       bool read_only)
{
	V1beta1__Mount *m;

	if (a->resp.n_mounts == a->cap_mounts) {
		size_t cap = a->cap_mounts ? a->cap_mounts * 2 : 4;
		void *p = realloc(a->resp.mounts, cap * sizeof(*a->resp.mounts));

		if (p == NULL)
			return -ENOMEM;
		a->resp.mounts = p;
		a->cap_mounts = cap;
	}
	m = malloc(sizeof(*m));
	if (m == NULL)
		return -ENOMEM;
	v1beta1__mount__init(m);
	m->host_path = xstrdup(host_path);
	m->container_path = xstrdup(container_path);
	m->read_only = read_only;
	a->resp.mounts[a->resp.n_mounts++] = m;
	return (m->host_path && m->container_path) ? 0 : -ENOMEM;
}

static void
alloc_clear(struct hdd_alloc *a)
{
	for (size_t i = 0; i < a->resp.n_envs; i++) {
		free(a->resp.envs[i]->key);
		free(a->resp.envs[i]->value);
		free(a->resp.envs[i]);
	}
	for (size_t i = 0; i < a->resp.n_devices; i++) {
		free(a->resp.devices[i]->host_path);
		free(a->resp.devices[i]->container_path);
		free(a->resp.devices[i]->permissions);
		free(a->resp.devices[i]);
	}
	for (size_t i = 0; i < a->resp.n_mounts; i++) {
		free(a->resp.mounts[i]->host_path);
		free(a->resp.mounts[i]->container_path);
		free(a->resp.mounts[i]);
	}
	free(a->resp.envs);
	free(a->resp.devices);
	free(a->resp.mounts);
}

/* The views of the devices one container asks for: each a healthy member
 * of `r`, none twice. Returns a gRPC status, with why. */
static int
container_views(struct dp_resource *r, const V1beta1__ContainerAllocateRequest *creq,
		const struct hdd_device_view **views, struct hdd_device_view *vs, bool *taken,
		char *why, size_t whylen)
{
	for (size_t i = 0; i < creq->n_devices_ids; i++) {
		const char *id = creq->devices_ids[i];
		struct dp_member *m = member_find(r, id);

		if (m == NULL) {
			snprintf(why, whylen, "unknown device \"%.64s\" for resource %s", id, r->name);
			return GRPC_STATUS_INVALID_ARGUMENT;
		}
		if (!m->healthy) {
			snprintf(why, whylen, "device %s of resource %s is unhealthy", id, r->name);
			return GRPC_STATUS_FAILED_PRECONDITION;
		}
		if (taken[m - r->members]) {
			snprintf(why, whylen, "device %s is asked for twice", id);
			return GRPC_STATUS_INVALID_ARGUMENT;
		}
		taken[m - r->members] = true;
		if (m->dev) {
			device_view(m->dev, &vs[i]);
		} else {
			/* A module's own member: only its id. */
			vs[i].cls = HDD_DEV_NONE;
			vs[i].id = m->id;
		}
		views[i] = &vs[i];
	}
	return GRPC_STATUS_OK;
}

/* One container's answer, filled by the resource's module. Returns a gRPC
 * status, with why. */
static int
allocate_container(struct dp *dp, struct dp_resource *r,
		   const V1beta1__ContainerAllocateRequest *creq, size_t c, struct hdd_alloc *alloc,
		   char *why, size_t whylen)
{
	const struct hdd_device_view **views;
	struct hdd_device_view *vs;
	bool *taken;		/* by member: asked for already */
	size_t n = creq->n_devices_ids;
	int status, err;

	if (n == 0 || n > DP_MAX_IDS) {
		snprintf(why, whylen, "container request %zu asks for %zu devices", c, n);
		return GRPC_STATUS_INVALID_ARGUMENT;
	}
	views = calloc(n, sizeof(*views));
	vs = calloc(n, sizeof(*vs));
	taken = calloc(r->n ? r->n : 1, sizeof(*taken));
	if (views == NULL || vs == NULL || taken == NULL) {
		status = GRPC_STATUS_RESOURCE_EXHAUSTED;
		snprintf(why, whylen, "out of memory");
		goto out;
	}
	status = container_views(r, creq, views, vs, taken, why, whylen);
	if (status != GRPC_STATUS_OK)
		goto out;
	if (dp->cfg && views[0]->pci) {
		const struct resource_rule *rule =
			config_match_rule(dp->cfg, views[0]->id, views[0]->pci->vendor_id,
					  views[0]->pci->device_id, views[0]->pci->class_code);
		alloc->prefer_iommufd = rule && rule->prefer_iommufd;
	}
	err = module_allocate(r->module, r->name, views, n, alloc);
	if (err < 0) {
		status = GRPC_STATUS_INTERNAL;
		snprintf(why, whylen, "module %s cannot allocate: %s", module_name(r->module),
			 strerror(-err));
	}
out:
	free(views);
	free(vs);
	free(taken);
	return status;
}

static void
handle_allocate(struct dp *dp, struct dp_resource *r, struct grpc_call *call, const uint8_t *msg,
		size_t len)
{
	V1beta1__AllocateRequest *req;
	V1beta1__AllocateResponse resp = V1BETA1__ALLOCATE_RESPONSE__INIT;
	struct hdd_alloc *allocs = NULL;
	V1beta1__ContainerAllocateResponse **ptrs = NULL;
	char why[256] = "";
	int status = GRPC_STATUS_OK;
	uint8_t *out = NULL;
	size_t outlen, ncont = 0;
	int64_t t0 = metrics_now_usec();

	req = v1beta1__allocate_request__unpack(NULL, len, msg);
	if (req == NULL) {
		grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "malformed AllocateRequest");
		return;
	}
	r->allocate_calls++;
	if (req->n_container_requests == 0) {
		status = GRPC_STATUS_INVALID_ARGUMENT;
		snprintf(why, sizeof(why), "AllocateRequest has no container requests");
		goto out;
	}
	ncont = req->n_container_requests;
	allocs = calloc(ncont, sizeof(*allocs));
	ptrs = calloc(ncont, sizeof(*ptrs));
	if (allocs == NULL || ptrs == NULL) {
		status = GRPC_STATUS_RESOURCE_EXHAUSTED;
		snprintf(why, sizeof(why), "out of memory");
		goto out;
	}
	for (size_t c = 0; c < ncont && status == GRPC_STATUS_OK; c++) {
		v1beta1__container_allocate_response__init(&allocs[c].resp);
		ptrs[c] = &allocs[c].resp;
		status = allocate_container(dp, r, req->container_requests[c], c, &allocs[c], why,
					    sizeof(why));
	}
	if (status == GRPC_STATUS_OK) {
		resp.n_container_responses = ncont;
		resp.container_responses = ptrs;
		if (pack(&resp.base, &out, &outlen) < 0) {
			status = GRPC_STATUS_RESOURCE_EXHAUSTED;
			snprintf(why, sizeof(why), "out of memory");
		}
	}
out:
	if (status == GRPC_STATUS_OK) {
		grpc_call_send(call, out, outlen, false);
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
		log_info("dp", "%s: Allocate answered (%zu containers)", r->name, ncont);
		for (size_t c = 0; c < ncont; c++)
			for (size_t i = 0; i < req->container_requests[c]->n_devices_ids; i++)
				claims_member_allocated(dp->env.claims,
							req->container_requests[c]->devices_ids[i]);
	} else {
		log_warnx("dp", "%s: Allocate refused: %s", r->name, why);
		grpc_call_finish(call, status, why);
	}
	metrics_observe_allocate(metrics_now_usec() - t0, status == GRPC_STATUS_OK);
	free(out);
	for (size_t c = 0; allocs && c < ncont; c++)
		alloc_clear(&allocs[c]);
	free(allocs);
	free(ptrs);
	v1beta1__allocate_request__free_unpacked(req, NULL);
}

/* --- GetPreferredAllocation ------------------------------------------------- */

/* The PCIe switch a device sits behind: its sysfs path up to and including
 * the component below the root bus ("devices/pci0000:00/0000:00:01.0/"),
 * when the device is deeper than that. Two devices with the same key
 * share a bridge below the root port. Returns the key's length, or 0. */
static size_t
switch_key(const struct device *dev, const char **key)
{
	const char *p, *end;
	int slashes = 0;

	if (dev == NULL || dev->syspath == NULL || (end = strrchr(dev->syspath, '/')) == NULL)
		return 0;
	for (p = dev->syspath; p < end; p++)
		if (*p == '/' && ++slashes == 3) {
			*key = dev->syspath;
			return (size_t)(p - dev->syspath) + 1;
		}
	return 0;
}

/* One placement criterion: the available devices sorted by (key, order),
 * so that those sharing a key form a run. */
struct pref_entry {
	long key;			/* group or NUMA node; -1: none */
	const char *s;			/* switch key, when used */
	size_t slen;
	size_t idx;			/* position in available_deviceIDs */
};

static int
pref_entry_cmp(const void *a, const void *b)
{
	const struct pref_entry *x = a, *y = b;

	if (x->key != y->key)
		return x->key < y->key ? -1 : 1;
	if (x->slen != y->slen)
		return x->slen < y->slen ? -1 : 1;
	if (x->slen) {
		int c = memcmp(x->s, y->s, x->slen);

		if (c)
			return c;
	}
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

struct pref_level {
	struct pref_entry *e;		/* sorted */
	size_t *run;			/* idx -> start of its run in e */
	bool *active;			/* by run start: pushed already */
	size_t *heap;			/* min-heap of idx, lazily cleaned */
	size_t nheap;
};

static void
heap_push(struct pref_level *l, size_t v)
{
	size_t i = l->nheap++;

	while (i > 0 && l->heap[(i - 1) / 2] > v) {
		l->heap[i] = l->heap[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	l->heap[i] = v;
}

static void
heap_pop(struct pref_level *l)
{
	size_t v = l->heap[--l->nheap], i = 0;

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= l->nheap)
			break;
		if (c + 1 < l->nheap && l->heap[c + 1] < l->heap[c])
			c++;
		if (l->heap[c] >= v)
			break;
		l->heap[i] = l->heap[c];
		i = c;
	}
	if (l->nheap)
		l->heap[i] = v;
}

static bool
same_key(const struct pref_entry *x, const struct pref_entry *y)
{
	return x->key == y->key && x->slen == y->slen &&
	       (x->slen == 0 || memcmp(x->s, y->s, x->slen) == 0);
}

/* Device idx was chosen: every device sharing its key becomes a candidate
 * of this level (once per key). */
static void
level_activate(struct pref_level *l, size_t idx, size_t n, const bool *used)
{
	size_t start = l->run[idx];

	if (l->e[start].key < 0 && l->e[start].slen == 0)
		return;		/* no group, NUMA node or switch: shares nothing */
	if (l->active[start])
		return;
	l->active[start] = true;
	for (size_t k = start; k < n && same_key(&l->e[k], &l->e[start]); k++)
		if (!used[l->e[k].idx])
			heap_push(l, l->e[k].idx);
}

/* The smallest unused idx of this level, or n. */
static size_t
level_best(struct pref_level *l, const bool *used, size_t n)
{
	while (l->nheap && used[l->heap[0]])
		heap_pop(l);
	return l->nheap ? l->heap[0] : n;
}

/* Each id once, and each a member: avail[i] is the member of
 * available[i], pos maps a member to its place there. Returns 0 or -EINVAL
 * with why. */
static int
map_available(const struct dp_resource *r, char *const *available, size_t n,
	      const struct dp_member **avail, size_t *pos, char *why, size_t whylen)
{
	for (size_t i = 0; i < r->n; i++)
		pos[i] = SIZE_MAX;
	for (size_t i = 0; i < n; i++) {
		size_t m;

		avail[i] = member_find(r, available[i]);
		if (avail[i] == NULL) {
			snprintf(why, whylen, "unknown device \"%.64s\" in available_deviceIDs",
				 available[i]);
			return -EINVAL;
		}
		m = (size_t)(avail[i] - r->members);
		if (pos[m] != SIZE_MAX) {
			snprintf(why, whylen, "device %s is listed twice", available[i]);
			return -EINVAL;
		}
		pos[m] = i;
	}
	return 0;
}

/* The three levels' entries (IOMMU group, NUMA node, switch), sorted, with
 * each device's run of equal keys. */
static void
levels_build(struct pref_level *lv, const struct dp_member *const *avail, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct dp_member *m = avail[i];

		lv[0].e[i] = (struct pref_entry){ .key = m->iommu_group >= 0 ? m->iommu_group : -1,
						  .idx = i };
		lv[1].e[i] = (struct pref_entry){ .key = m->numa >= 0 ? m->numa : -1, .idx = i };
		lv[2].e[i] = (struct pref_entry){ .key = -1, .idx = i };
		lv[2].e[i].slen = switch_key(m->dev, &lv[2].e[i].s);
	}
	for (int l = 0; l < 3; l++) {
		qsort(lv[l].e, n, sizeof(*lv[l].e), pref_entry_cmp);
		for (size_t k = 0, start = 0; k < n; k++) {
			if (k > 0 && !same_key(&lv[l].e[k], &lv[l].e[k - 1]))
				start = k;
			lv[l].run[lv[l].e[k].idx] = start;
		}
	}
}

int
dp_preferred(const struct dp_resource *r, char *const *available, size_t navailable,
	     char *const *must, size_t nmust, int size, const char **out, char *why, size_t whylen)
{
	const struct dp_member **avail = NULL;
	struct pref_level lv[3];	/* 0: IOMMU group, 1: NUMA node, 2: switch */
	size_t *pos = NULL, nchosen = 0, next0 = 0, n = navailable;
	bool *used = NULL;
	bool nomem = false;
	int err = -EINVAL;

	memset(lv, 0, sizeof(lv));
	if (size <= 0 || (size_t)size > navailable) {
		snprintf(why, whylen, "allocation_size %d but %zu devices available", size, navailable);
		return -EINVAL;
	}
	if (nmust > (size_t)size) {
		snprintf(why, whylen, "%zu devices must be included but allocation_size is %d", nmust,
			 size);
		return -EINVAL;
	}
	avail = calloc(n, sizeof(*avail));
	used = calloc(n, sizeof(*used));
	pos = malloc((r->n ? r->n : 1) * sizeof(*pos));
	for (int l = 0; l < 3; l++) {
		lv[l].e = calloc(n, sizeof(*lv[l].e));
		lv[l].run = calloc(n, sizeof(*lv[l].run));
		lv[l].active = calloc(n, sizeof(*lv[l].active));
		lv[l].heap = calloc(n, sizeof(*lv[l].heap));
		nomem |= !lv[l].e || !lv[l].run || !lv[l].active || !lv[l].heap;
	}
	if (nomem || !avail || !used || !pos) {
		snprintf(why, whylen, "out of memory");
		err = -ENOMEM;
		goto out;
	}
	if (map_available(r, available, n, avail, pos, why, whylen) < 0)
		goto out;
	levels_build(lv, avail, n);
	for (size_t i = 0; i < nmust; i++) {
		const struct dp_member *m = member_find(r, must[i]);
		size_t k = m ? pos[m - r->members] : SIZE_MAX;

		if (k == SIZE_MAX) {
			snprintf(why, whylen, "must-include device \"%.64s\" is not available", must[i]);
			goto out;
		}
		if (used[k])
			continue;
		used[k] = true;
		out[nchosen++] = avail[k]->id;
		for (int l = 0; l < 3; l++)
			level_activate(&lv[l], k, n, used);
	}
	/* Then the best-placed device, one at a time: same IOMMU group, then
	 * same NUMA node, then behind the same switch; ties keep the kubelet's
	 * order. Nothing in common with anything chosen: the first available. */
	while (nchosen < (size_t)size) {
		size_t pick = n;

		for (int l = 0; l < 3 && pick == n; l++)
			pick = level_best(&lv[l], used, n);
		if (pick == n) {
			while (next0 < n && used[next0])
				next0++;
			pick = next0;
		}
		used[pick] = true;
		out[nchosen++] = avail[pick]->id;
		for (int l = 0; l < 3; l++)
			level_activate(&lv[l], pick, n, used);
	}
	err = 0;
out:
	for (int l = 0; l < 3; l++) {
		free(lv[l].e);
		free(lv[l].run);
		free(lv[l].active);
		free(lv[l].heap);
	}
	free(avail);
	free(used);
	free(pos);
	return err;
}

static void
handle_preferred(struct dp_resource *r, struct grpc_call *call, const uint8_t *msg, size_t len)
{
	V1beta1__PreferredAllocationRequest *req;
	V1beta1__PreferredAllocationResponse resp = V1BETA1__PREFERRED_ALLOCATION_RESPONSE__INIT;
	V1beta1__ContainerPreferredAllocationResponse *cres = NULL, **ptrs = NULL;
	const char ***ids = NULL;
	char why[256] = "";
	int status = GRPC_STATUS_OK;
	size_t n = 0, outlen;
	uint8_t *out = NULL;

	req = v1beta1__preferred_allocation_request__unpack(NULL, len, msg);
	if (req == NULL) {
		grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
				 "malformed PreferredAllocationRequest");
		return;
	}
	n = req->n_container_requests;
	cres = calloc(n ? n : 1, sizeof(*cres));
	ptrs = calloc(n ? n : 1, sizeof(*ptrs));
	ids = calloc(n ? n : 1, sizeof(*ids));
	if (!cres || !ptrs || !ids) {
		status = GRPC_STATUS_RESOURCE_EXHAUSTED;
		snprintf(why, sizeof(why), "out of memory");
		goto out;
	}
	for (size_t c = 0; c < n; c++) {
		V1beta1__ContainerPreferredAllocationRequest *cr = req->container_requests[c];
		int size = cr->allocation_size;

		v1beta1__container_preferred_allocation_response__init(&cres[c]);
		ptrs[c] = &cres[c];
		if (cr->n_available_deviceids > DP_MAX_IDS || size > DP_MAX_IDS) {
			status = GRPC_STATUS_INVALID_ARGUMENT;
			snprintf(why, sizeof(why), "too many devices in container request %zu", c);
			break;
		}
		ids[c] = calloc(size > 0 ? (size_t)size : 1, sizeof(char *));
		if (ids[c] == NULL) {
			status = GRPC_STATUS_RESOURCE_EXHAUSTED;
			break;
		}
		if (dp_preferred(r, cr->available_deviceids, cr->n_available_deviceids,
				 cr->must_include_deviceids, cr->n_must_include_deviceids, size, ids[c],
				 why, sizeof(why)) < 0) {
			status = GRPC_STATUS_INVALID_ARGUMENT;
			break;
		}
		cres[c].n_deviceids = (size_t)size;
		cres[c].deviceids = (char **)ids[c];
	}
	if (status == GRPC_STATUS_OK) {
		resp.n_container_responses = n;
		resp.container_responses = ptrs;
		if (pack(&resp.base, &out, &outlen) < 0)
			status = GRPC_STATUS_RESOURCE_EXHAUSTED;
	}
out:
	if (status == GRPC_STATUS_OK) {
		grpc_call_send(call, out, outlen, false);
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
	} else {
		log_warnx("dp", "%s: GetPreferredAllocation refused: %s", r->name, why);
		grpc_call_finish(call, status, why);
	}
	free(out);
	for (size_t c = 0; ids && c < n; c++)
		free(ids[c]);
	free(ids);
	free(cres);
	free(ptrs);
	v1beta1__preferred_allocation_request__free_unpacked(req, NULL);
}

/* --- dispatch ---------------------------------------------------------------- */

static const char *const dp_methods[] = {
	"GetDevicePluginOptions", "ListAndWatch", "GetPreferredAllocation", "Allocate",
	"PreStartContainer",
};

bool
dp_known_path(const char *path)
{
	size_t n = strlen(DP_PATH_PREFIX);

	if (strncmp(path, DP_PATH_PREFIX, n) != 0)
		return false;
	for (size_t i = 0; i < sizeof(dp_methods) / sizeof(dp_methods[0]); i++)
		if (strcmp(path + n, dp_methods[i]) == 0)
			return true;
	return false;
}

static bool
empty_message(const uint8_t *msg, size_t len, const ProtobufCMessageDescriptor *desc)
{
	ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, msg);

	if (m == NULL)
		return false;
	protobuf_c_message_free_unpacked(m, NULL);
	return true;
}

static int
watch_add(struct dp_resource *r, struct grpc_call *call)
{
	struct grpc_call **v = realloc(r->watches, (r->nwatches + 1) * sizeof(*v));

	if (v == NULL)
		return -ENOMEM;
	r->watches = v;
	r->watches[r->nwatches++] = call;
	grpc_call_set_data(call, r);
	return 0;
}

static void
send_list(struct dp_resource *r, struct grpc_call *call)
{
	uint8_t *buf;
	size_t len;

	if (dp_encode_list(r, false, &buf, &len) < 0)
		return;
	grpc_call_send(call, buf, len, true);
	free(buf);
}

void
dp_handle(struct dp *dp, struct dp_resource *r, struct grpc_call *call, const char *path,
	  const uint8_t *msg, size_t len)
{
	const char *method = path + strlen(DP_PATH_PREFIX);

	if (r == NULL || dp->stopping) {
		grpc_call_finish(call, GRPC_STATUS_UNAVAILABLE, "this resource is no longer served");
		return;
	}
	if (strcmp(method, "GetDevicePluginOptions") == 0) {
		V1beta1__DevicePluginOptions o;
		uint8_t *buf;
		size_t n;

		if (!empty_message(msg, len, &v1beta1__empty__descriptor)) {
			grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "malformed Empty");
			return;
		}
		plugin_options(&o);
		if (pack(&o.base, &buf, &n) == 0) {
			grpc_call_send(call, buf, n, false);
			free(buf);
		}
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
	} else if (strcmp(method, "ListAndWatch") == 0) {
		if (!empty_message(msg, len, &v1beta1__empty__descriptor)) {
			grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "malformed Empty");
			return;
		}
		if (watch_add(r, call) < 0) {
			grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
			return;
		}
		log_info("dp", "%s: ListAndWatch opened (%zu devices)", r->name, r->n);
		send_list(r, call);
	} else if (strcmp(method, "Allocate") == 0) {
		handle_allocate(dp, r, call, msg, len);
	} else if (strcmp(method, "GetPreferredAllocation") == 0) {
		handle_preferred(r, call, msg, len);
	} else if (strcmp(method, "PreStartContainer") == 0) {
		if (!empty_message(msg, len, &v1beta1__pre_start_container_request__descriptor)) {
			grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT,
					 "malformed PreStartContainerRequest");
			return;
		}
		grpc_call_send(call, (const uint8_t *)"", 0, false);
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
	} else {
		grpc_call_finish(call, GRPC_STATUS_UNIMPLEMENTED, "unknown method");
	}
}

bool
dp_is_watch(const struct dp_resource *r, const struct grpc_call *call)
{
	for (size_t i = 0; r && i < r->nwatches; i++)
		if (r->watches[i] == call)
			return true;
	return false;
}

bool
dp_call_closed(struct dp *dp, struct dp_resource *r, struct grpc_call *call)
{
	for (size_t i = 0; r && i < r->nwatches; i++) {
		if (r->watches[i] != call)
			continue;
		memmove(&r->watches[i], &r->watches[i + 1], (r->nwatches - i - 1) * sizeof(call));
		r->nwatches--;
		if (r->reg_watch != call) {
			/* Someone else's stream, or a registration's we replaced. */
			log_info("dp", "%s: a ListAndWatch stream ended (not the registration's)",
				 r->name);
			return false;
		}
		r->reg_watch = NULL;
		r->reg_watch_new_conn = false;
		log_info("dp", "%s: the registration's ListAndWatch stream ended by the kubelet side",
			 r->name);
		return !dp->stopping;
	}
	return false;
}

void
dp_push_updates(struct dp *dp)
{
	for (size_t i = 0; i < dp->n; i++) {
		struct dp_resource *r = dp->v[i];

		if (!r->changed)
			continue;
		r->changed = false;
		for (size_t j = 0; j < r->nwatches; j++)
			send_list(r, r->watches[j]);
		if (r->nwatches)
			log_debug("dp", "%s: ListAndWatch update to %zu streams", r->name, r->nwatches);
	}
}

/* Ends r's streams with an empty list first, as the kubelet expects. */
void
dp_resource_end_streams(struct dp_resource *r)
{
	uint8_t *buf;
	size_t len;

	if (dp_encode_list(r, true, &buf, &len) < 0)
		buf = NULL;
	r->reg_watch = NULL;
	r->reg_watch_new_conn = false;
	while (r->nwatches > 0) {
		struct grpc_call *call = r->watches[--r->nwatches];

		if (buf)
			grpc_call_send(call, buf, len, true);
		grpc_call_finish(call, GRPC_STATUS_OK, NULL);
	}
	free(buf);
}

void
dp_stop_all(struct dp *dp)
{
	dp->stopping = true;
	for (size_t i = 0; i < dp->n; i++)
		dp_resource_end_streams(dp->v[i]);
}

json_t *
dp_resources_json(struct dp *dp)
{
	json_t *out = json_array();

	for (size_t i = 0; out && i < dp->n; i++) {
		struct dp_resource *r = dp->v[i];
		json_t *devs = json_array();
		char path[512];

		for (size_t j = 0; j < r->n; j++) {
			const struct dp_member *m = &r->members[j];

			json_array_append_new(devs, json_pack("{s:s, s:s, s:i}", "id", m->id, "health",
							      m->healthy ? "Healthy" : "Unhealthy",
							      "numa_node", m->numa));
		}
		snprintf(path, sizeof(path), "%s/%s", dp->env.kubelet_dir, r->sock);
		json_array_append_new(
			out, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s?, s:I, s:I, s:I, s:I, s:i, s:i, "
				       "s:I, s:o}",
				       "name", r->name, "module", module_name(r->module), "socket", path,
				       "endpoint", r->sock, "state", dp_reg_state_to_string(r->state),
				       "last_error", r->last_error[0] ? r->last_error : NULL,
				       "registrations", (json_int_t)r->registrations,
				       "register_attempts", (json_int_t)r->register_attempts,
				       "registered_at", (json_int_t)r->registered_at,
				       "allocate_calls", (json_int_t)r->allocate_calls, "watchers",
				       (int)r->nwatches, "connections", r->connections,
				       "refused_connections", (json_int_t)r->refused_connections,
				       "devices", devs));
	}
	return out;
}
