/* SPDX-License-Identifier: MIT */
/* The IOMMU-group engine: whole IOMMU groups onto vfio-pci and back for the
 * module that asks (vfio_group_bind/unbind), journalled in state.json per
 * owner so that restart, kill -9 and reboot leave nothing half done. What a
 * group is held for (a PCI claim, VFs for guests) is the owner's business. */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "claim.h"
#include "conf.h"
#include "fsroot.h"
#include "inventory.h"
#include "earlybind.h"
#include "log.h"
#include "metrics.h"
#include "loop.h"
#include "protect.h"
#include "state.h"
#include "sysfs.h"
#include "worker.h"

struct claim_member {
	char address[16];
	char *original_driver;	/* NULL: it had none */
	bool bridge;
	int aer_seen;		/* AER total last seen, -1 before the first look */
	int64_t aer_sick_until;	/* unhealthy until (monotonic s) after new errors */
};

struct claim_job;
struct claim_slot;

struct claim {
	char address[16];	/* the device asked for */
	int group;
	char owner[32];		/* the module that holds it */
	enum claim_state state;
	enum claim_state recorded;	/* the state in state.json when refused */
	char reason[512];	/* why it is refused */
	struct claim_member *members;
	size_t n;
	bool absent;		/* a member is missing from sysfs */
	bool drift;		/* found on another driver; being bound again */
	char last_error[512];
	char step[64];		/* what it is doing or did last */
	char advertised[256];	/* the resource it was last offered under */
	uint64_t allocations;
	int64_t created;
	struct claim_job *job;	/* in flight, or NULL */
	char *saved;		/* its record as state.json holds it, or NULL */
	char saved_key[320];	/* the mutable fields `saved` was made from */
};

struct claims {
	struct claims_env env;
	const struct config *cfg;
	struct loop *loop;
	struct worker *worker;
	struct claim **v;
	size_t n;
	bool fail_closed;	/* state.json unreadable: refuse, keep bindings */
	char fail_reason[256];
	char boot_id[64];
	bool rebooted;		/* boot id differs from the one recorded */
	bool first_since_boot;	/* the same as loaded, kept for this run (modules) */
	int state_dirfd;
	struct claim_slot *index;	/* member address -> claim (open addressing) */
	size_t index_size;	/* a power of two */
	json_t *modules;	/* state.json's "modules": one section per module */
	struct early_bind *early_bind;	/* what <state-dir>/early-bind holds */
};

static void
resources_changed(struct claims *c)
{
	if (c->env.changed)
		c->env.changed(c->env.changed_arg);
}

/* The early-bind directory: every function of a group being applied or
 * held (not releasing), bridges aside. */
static int
sync_early_bind(struct claims *c)
{
	char (*want)[16];
	size_t n = 0, cap = 0;
	int err;

	for (size_t i = 0; i < c->n; i++)
		cap += c->v[i]->n;
	want = cap ? calloc(cap, sizeof(*want)) : NULL;
	if (cap && want == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < c->n; i++) {
		const struct claim *cl = c->v[i];

		if (cl->state != CLAIM_CLAIMING && cl->state != CLAIM_CLAIMED)
			continue;
		for (size_t k = 0; k < cl->n; k++)
			if (!cl->members[k].bridge)
				snprintf(want[n++], sizeof(want[0]), "%s", cl->members[k].address);
	}
	err = early_bind_sync(c->state_dirfd, want, n, &c->early_bind);
	free(want);
	return err;
}

#define VFIO_DRIVER "vfio-pci"
#define WRITE_TIMEOUT_MS 15000
#define VERIFY_FIRST_MS 1		/* first look again after a bind or unbind... */
#define VERIFY_MAX_MS 50		/* ...backing off to this, when no uevent comes first */
#define VERIFY_LIMIT_MS 5000		/* for a bind to show */
#define VERIFY_MAX_TRIES 250
#define MAX_MEMBERS 64
/* Records written before the engine had owners (ABI 2.0 and earlier) were
 * the PCI claims of the module that now carries them on. */
#define LEGACY_OWNER "pci"

enum phase {
	PH_START = 0,
	/* claim */
	PH_MODPROBE, PH_INTENT, PH_OVERRIDE, PH_UNBIND, PH_PROBE, PH_VERIFY,
	PH_CLAIMED,
	/* rollback of a failed claim */
	PH_RB_UNBIND, PH_RB_CLEAR, PH_RB_BIND, PH_RB_DONE,
	/* release */
	PH_RL_HOLDERS, PH_RL_INTENT, PH_RL_UNBIND, PH_RL_CLEAR, PH_RL_BIND, PH_RL_VERIFY,
	PH_RELEASED,
	PH_MAX
};

static const char *const phase_names[PH_MAX] = {
	[PH_START] = "start",
	[PH_INTENT] = "intent", [PH_MODPROBE] = "modprobe", [PH_OVERRIDE] = "override",
	[PH_UNBIND] = "unbind", [PH_PROBE] = "probe", [PH_VERIFY] = "verify",
	[PH_CLAIMED] = "claimed", [PH_RB_UNBIND] = "rollback-unbind",
	[PH_RB_CLEAR] = "rollback-clear", [PH_RB_BIND] = "rollback-bind",
	[PH_RB_DONE] = "rolled-back", [PH_RL_HOLDERS] = "release-holders",
	[PH_RL_INTENT] = "release-intent", [PH_RL_UNBIND] = "release-unbind",
	[PH_RL_CLEAR] = "release-clear", [PH_RL_BIND] = "release-bind",
	[PH_RL_VERIFY] = "release-verify",
	[PH_RELEASED] = "released",
};

static const char *const state_names[CLAIM_STATE_MAX] = {
	[CLAIM_CLAIMING] = "claiming",
	[CLAIM_CLAIMED] = "claimed",
	[CLAIM_RELEASING] = "releasing",
	[CLAIM_REFUSED] = "refused",
};

struct claim_job {
	struct claims *c;
	struct claim *cl;
	bool release;
	bool force;
	bool resumed;		/* continuing after a restart */
	enum phase phase;
	size_t member;		/* the member the phase works on */
	size_t moved;		/* members touched so far (for rollback) */
	int tries;
	int modprobe_err;	/* modprobe's result */
	bool waiting;		/* for a bind/unbind to show (uevent or timer) */
	unsigned verify_gen;	/* the timer that may wake it */
	int verify_wait_ms;
	int64_t verify_deadline;	/* monotonic ms */
	int64_t deadline;	/* monotonic ms the whole move must end by; 0: none */
	char error[512];
	int fail_err;			/* job_fail's error for the caller; 0: -EIO */
	claim_done_fn done;
	void *arg;
	struct claim_job *next;	/* the queue */
};

static const char *crash_after;	/* HOSTDEVD_TEST_CRASH_AFTER, tests only */

static void job_run(struct claim_job *j);
static void index_rebuild(struct claims *c);
static void job_next_member(struct claim_job *j, enum phase first, enum phase after);
static int64_t mono_ms(void);
static const char *member_addr(struct claim_job *j);

const char *
claim_state_to_string(enum claim_state s)
{
	return (unsigned)s < CLAIM_STATE_MAX ? state_names[s] : "invalid";
}

/* The one place a claim's state changes: logged, with why. */
static void
claim_set_state(struct claim *cl, enum claim_state s, const char *why)
{
	if (cl->state == s)
		return;
	log_debug("claim", "%s: %s -> %s (%s)", cl->address, claim_state_to_string(cl->state),
		  claim_state_to_string(s), why);
	cl->state = s;
}

static int
state_from_string(const char *s)
{
	for (int i = 0; i < CLAIM_STATE_MAX; i++)
		if (s && strcmp(s, state_names[i]) == 0)
			return i;
	return -1;
}

static void
claim_free(struct claim *cl)
{
	for (size_t i = 0; i < cl->n; i++)
		free(cl->members[i].original_driver);
	free(cl->members);
	free(cl->saved);
	free(cl);
}

/* --- persistence ---------------------------------------------------------- */

static json_t *
claim_persist_json(const struct claim *cl)
{
	json_t *members = json_array();

	for (size_t i = 0; i < cl->n; i++)
		json_array_append_new(members, json_pack("{s:s, s:s?, s:b}", "address",
							 cl->members[i].address, "original_driver",
							 cl->members[i].original_driver, "bridge",
							 cl->members[i].bridge));
	return json_pack("{s:s, s:i, s:s, s:s, s:o, s:I, s:I, s:s}", "address", cl->address,
			 "iommu_group", cl->group, "owner", cl->owner, "state",
			 claim_state_to_string(cl->state == CLAIM_REFUSED ? cl->recorded : cl->state),
			 "members", members, "created", (json_int_t)cl->created, "allocations",
			 (json_int_t)cl->allocations, "advertised_as", cl->advertised);
}

/* A claim's record, serialised again only when a field that can change
 * did (dp updates allocations and advertised_as), so that a save costs the
 * claims that changed, not all of them. NULL when out of memory. */
static char *
claim_persist_text(struct claim *cl)
{
	char key[sizeof(cl->saved_key)];
	unsigned long long bridges = 0;
	json_t *o;
	char *text;

	for (size_t i = 0; i < cl->n && i < 64; i++)
		bridges |= (unsigned long long)cl->members[i].bridge << i;
	snprintf(key, sizeof(key), "%d/%d/%llu/%llx/%s", (int)cl->state, (int)cl->recorded,
		 (unsigned long long)cl->allocations, bridges, cl->advertised);
	if (cl->saved && strcmp(key, cl->saved_key) == 0)
		return cl->saved;
	o = claim_persist_json(cl);
	text = state_dump(o);
	json_decref(o);
	if (text == NULL)
		return NULL;
	free(cl->saved);
	cl->saved = text;
	snprintf(cl->saved_key, sizeof(cl->saved_key), "%s", key);
	return text;
}

static int
claims_save(struct claims *c)
{
	char **texts = calloc(c->n + 1, sizeof(*texts));
	int err = texts ? 0 : -ENOMEM;

	for (size_t i = 0; err == 0 && i < c->n; i++)
		if ((texts[i] = claim_persist_text(c->v[i])) == NULL)
			err = -ENOMEM;
	if (err == 0) {
		/* Module sections, when there are any; a file without them stays
		 * what the daemon before ABI v2 wrote. */
		char *mods = c->modules && json_object_size(c->modules) ? state_dump(c->modules)
									 : NULL;

		if (c->modules && json_object_size(c->modules) && mods == NULL)
			err = -ENOMEM;
		else
			err = state_save_all(c->state_dirfd, c->boot_id, texts, c->n, mods);
		free(mods);
	}
	free(texts);
	if (err < 0)
		log_errx("claim", "cannot write %s/%s: %s", c->env.state_dir, STATE_FILE,
			 strerror(-err));
	else if (sync_early_bind(c) < 0)
		log_warnx("claim", "cannot update %s/%s", c->env.state_dir, EARLY_BIND_DIR);
	return err;
}

static struct claim *
claim_from_json(const json_t *o)
{
	struct claim *cl = calloc(1, sizeof(*cl));
	const json_t *members = json_object_get(o, "members");
	const char *addr = json_string_value(json_object_get(o, "address"));
	const char *owner = json_string_value(json_object_get(o, "owner"));
	int st = state_from_string(json_string_value(json_object_get(o, "state")));
	size_t i;
	json_t *m;

	if (st == CLAIM_REFUSED)	/* never written: refusal is judged afresh */
		st = -1;
	if (cl == NULL)
		return NULL;
	if (!addr || !pci_address_valid(addr) || st < 0 || !json_is_array(members) ||
	    (owner && (!owner[0] || strlen(owner) >= sizeof(cl->owner))) ||
	    json_array_size(members) == 0 || json_array_size(members) > MAX_MEMBERS)
		goto bad;
	snprintf(cl->address, sizeof(cl->address), "%s", addr);
	cl->group = (int)json_integer_value(json_object_get(o, "iommu_group"));
	/* A record from before the engine had owners was a PCI claim. */
	snprintf(cl->owner, sizeof(cl->owner), "%s", owner ? owner : LEGACY_OWNER);
	cl->state = (enum claim_state)st;
	cl->created = (int64_t)json_integer_value(json_object_get(o, "created"));
	cl->allocations = (uint64_t)json_integer_value(json_object_get(o, "allocations"));
	snprintf(cl->advertised, sizeof(cl->advertised), "%s",
		 json_string_value(json_object_get(o, "advertised_as")) ?: "");
	cl->members = calloc(json_array_size(members), sizeof(*cl->members));
	if (cl->members == NULL)
		goto bad;
	json_array_foreach(members, i, m) {
		const char *ma = json_string_value(json_object_get(m, "address"));
		const char *drv = json_string_value(json_object_get(m, "original_driver"));

		if (!ma || !pci_address_valid(ma) || (drv && (strchr(drv, '/') || !drv[0])))
			goto bad;
		snprintf(cl->members[i].address, sizeof(cl->members[i].address), "%s", ma);
		cl->members[i].original_driver = drv ? strdup(drv) : NULL;
		cl->members[i].bridge = json_is_true(json_object_get(m, "bridge"));
		cl->members[i].aer_seen = -1;
		cl->n = i + 1;
	}
	return cl;
bad:
	claim_free(cl);
	return NULL;
}

/* A file from before the engine had owners: its records were whole PCI
 * claims. The engine keeps their group part; what only their owner reads
 * (a resource name, whether the configuration asked) goes, record by
 * record as it was, to the owner's section as {"legacy_claims": [...]},
 * which the owner folds into its own records at start. Written back at
 * the next save; until then the file stays as it was. */
static void
legacy_carry_over(struct claims *c, const json_t *list)
{
	json_t *legacy = NULL, *o, *section;
	size_t i;

	json_array_foreach(list, i, o) {
		if (json_object_get(o, "owner"))
			continue;
		if (legacy == NULL && (legacy = json_array()) == NULL)
			return;
		json_array_append(legacy, o);
	}
	if (legacy == NULL)
		return;
	if (c->modules == NULL)
		c->modules = json_object();
	section = c->modules ? json_object_get(c->modules, LEGACY_OWNER) : NULL;
	if (c->modules && section == NULL) {
		json_object_set_new(c->modules, LEGACY_OWNER,
				    json_pack("{s:O}", "legacy_claims", legacy));
		log_info("claim", "%zu records from before owners carried over to module %s",
			 json_array_size(legacy), LEGACY_OWNER);
	}
	json_decref(legacy);
}

int
claims_new(const struct claims_env *env, const struct config *cfg, int state_dirfd,
	   struct claims **ret)
{
	struct claims *c = calloc(1, sizeof(*c));
	char why[256] = "";
	json_t *state = NULL;
	int err;

	if (c == NULL)
		return -ENOMEM;
	c->env = *env;
	c->cfg = cfg;
	c->state_dirfd = state_dirfd;
	crash_after = getenv("HOSTDEVD_TEST_CRASH_AFTER");
	state_boot_id(c->boot_id, sizeof(c->boot_id));
	err = state_load(state_dirfd, &state, why, sizeof(why));
	if (err == -ENOENT) {
		*ret = c;
		return 0;
	}
	if (err < 0) {
		/* Fail closed: never start as if nothing had been claimed. */
		c->fail_closed = true;
		snprintf(c->fail_reason, sizeof(c->fail_reason), "%s",
			 why[0] ? why : strerror(-err));
		log_errx("claim", "state is unusable (%s): keeping every binding as it is and refusing claims and releases until it is repaired or removed",
			 c->fail_reason);
		*ret = c;
		return 0;
	}
	{
		const char *boot = json_string_value(json_object_get(state, "boot_id"));
		json_t *list = json_object_get(state, "claims"), *o;
		size_t i;

		json_t *mods = json_object_get(state, "modules");

		c->rebooted = boot && c->boot_id[0] && strcmp(boot, c->boot_id) != 0;
		c->first_since_boot = c->rebooted;
		if (mods && !json_is_object(mods)) {
			c->fail_closed = true;
			snprintf(c->fail_reason, sizeof(c->fail_reason),
				 "\"modules\" in %s is not an object", STATE_FILE);
			log_errx("claim", "%s: failing closed", c->fail_reason);
		} else if (mods) {
			json_decref(c->modules);
			c->modules = json_incref(mods);
		}
		if (!c->fail_closed)
			legacy_carry_over(c, list);
		json_array_foreach(list, i, o) {
			struct claim *cl = claim_from_json(o);
			struct claim **v;

			if (cl == NULL) {
				c->fail_closed = true;
				snprintf(c->fail_reason, sizeof(c->fail_reason),
					 "claim %zu in %s is malformed", i, STATE_FILE);
				log_errx("claim", "%s: failing closed", c->fail_reason);
				break;
			}
			v = realloc(c->v, (c->n + 1) * sizeof(*v));
			if (v == NULL) {
				claim_free(cl);
				break;
			}
			c->v = v;
			c->v[c->n++] = cl;
		}
	}
	json_decref(state);
	index_rebuild(c);
	log_info("claim", "%zu claims in %s/%s%s", c->n, c->env.state_dir, STATE_FILE,
		 c->rebooted ? " (the node has rebooted since they were written)" : "");
	*ret = c;
	return 0;
}

void
claims_attach(struct claims *c, struct loop *loop, struct worker *worker)
{
	c->loop = loop;
	c->worker = worker;
}

void
claims_set_config(struct claims *c, const struct config *cfg)
{
	c->cfg = cfg;
}

bool
claims_fail_closed(const struct claims *c)
{
	return c && c->fail_closed;
}

bool
claims_first_since_boot(const struct claims *c)
{
	return c && c->first_since_boot;
}

void
claims_summarize(const struct claims *c, struct claims_summary *out)
{
	memset(out, 0, sizeof(*out));
	if (c == NULL)
		return;
	out->n = c->n;
	out->fail_closed = c->fail_closed;
	out->fail_reason = c->fail_reason;
	out->rebooted = c->rebooted;
	for (size_t i = 0; i < c->n; i++) {
		const struct claim *cl = c->v[i];

		out->busy += cl->job != NULL;
		if ((unsigned)cl->state < CLAIM_STATE_MAX)
			out->by_state[cl->state]++;
		out->absent += cl->absent;
		out->drift += cl->drift;
	}
}

static struct claim_job *running;	/* one job at a time: the worker is sequential anyway */
static struct claim_job *queue_head, *queue_tail;

void
claims_free(struct claims *c)
{
	if (c == NULL)
		return;
	/* Jobs in flight just stop: the journal says where they were. */
	free(running);
	running = NULL;
	while (queue_head) {
		struct claim_job *next = queue_head->next;
		free(queue_head);
		queue_head = next;
	}
	queue_tail = NULL;
	for (size_t i = 0; i < c->n; i++)
		claim_free(c->v[i]);
	free(c->v);
	early_bind_free(c->early_bind);
	free(c->index);
	json_decref(c->modules);
	free(c);
}

const json_t *
claims_module_section(const struct claims *c, const char *module)
{
	return c && c->modules ? json_object_get(c->modules, module) : NULL;
}

int
claims_module_section_put(struct claims *c, const char *module, const json_t *section)
{
	json_t *old;
	int err;

	if (c->fail_closed)
		return -EROFS;
	if (c->modules == NULL && (c->modules = json_object()) == NULL)
		return -ENOMEM;
	old = json_object_get(c->modules, module);
	if (old)
		json_incref(old);
	if (section)
		err = json_object_set_new(c->modules, module, json_deep_copy(section)) < 0 ? -ENOMEM : 0;
	else
		err = json_object_del(c->modules, module) < 0 ? 0 : 0;
	if (err == 0)
		err = claims_save(c);
	if (err < 0) {
		/* Not written: the section stays what the file says. */
		if (old)
			json_object_set(c->modules, module, old);
		else
			json_object_del(c->modules, module);
	}
	json_decref(old);
	return err;
}

/* --- lookups ---------------------------------------------------------------- */

struct claim_slot {
	const char *address;	/* a member's, owned by its claim */
	struct claim *cl;
};

static size_t
slot_of(const struct claims *c, const char *address)
{
	uint32_t h = 2166136261u;

	for (const unsigned char *p = (const unsigned char *)address; *p; p++)
		h = (h ^ *p) * 16777619u;
	return h & (c->index_size - 1);
}

/* The member index, made again whenever claims come or go (the first claim
 * holding an address wins, as a scan in order would find it): the
 * device-plugin side looks every device up on every change. */
static void
index_rebuild(struct claims *c)
{
	size_t members = 0, size = 16;

	for (size_t i = 0; i < c->n; i++)
		members += c->v[i]->n;
	while (size < 2 * members + 16)
		size *= 2;
	free(c->index);
	c->index = calloc(size, sizeof(*c->index));
	c->index_size = c->index ? size : 0;
	for (size_t i = 0; c->index && i < c->n; i++)
		for (size_t k = 0; k < c->v[i]->n; k++) {
			const char *a = c->v[i]->members[k].address;
			size_t s = slot_of(c, a);

			while (c->index[s].cl && strcmp(c->index[s].address, a) != 0)
				s = (s + 1) & (c->index_size - 1);
			if (c->index[s].cl == NULL)
				c->index[s] = (struct claim_slot){ a, c->v[i] };
		}
}

struct claim *
claims_find_member(struct claims *c, const char *address)
{
	if (c == NULL || c->index == NULL) {
		/* No index (out of memory): the slow way. */
		for (size_t i = 0; c && i < c->n; i++)
			for (size_t k = 0; k < c->v[i]->n; k++)
				if (strcmp(c->v[i]->members[k].address, address) == 0)
					return c->v[i];
		return NULL;
	}
	for (size_t s = slot_of(c, address); c->index[s].cl; s = (s + 1) & (c->index_size - 1))
		if (strcmp(c->index[s].address, address) == 0)
			return c->index[s].cl;
	return NULL;
}

static void
claims_remove(struct claims *c, struct claim *cl)
{
	for (size_t i = 0; i < c->n; i++) {
		if (c->v[i] != cl)
			continue;
		memmove(&c->v[i], &c->v[i + 1], (c->n - i - 1) * sizeof(*c->v));
		c->n--;
		claim_free(cl);
		index_rebuild(c);
		return;
	}
}

/* The member's driver right now, from sysfs; NULL when unbound or gone. */
static int
current_driver(struct claims *c, const char *addr, char *buf, size_t size, bool *present)
{
	char dir[64], target[1024];
	int err;

	snprintf(dir, sizeof(dir), "bus/pci/devices/%s", addr);
	*present = fsroot_exists(c->env.sys, dir) == 0;
	buf[0] = '\0';
	err = fsroot_readlink(c->env.sys, "bus/pci/devices", -1, addr, target, sizeof(target));
	if (err < 0)
		return err;
	if (fsroot_readlink(c->env.sys, target, -1, "driver", target, sizeof(target)) < 0)
		return 0;
	snprintf(buf, size, "%s", path_basename(target));
	return 0;
}

json_t *
claim_json(const struct claim *cl)
{
	json_t *o = claim_persist_json(cl);

	json_object_set_new(o, "step", json_string(cl->step));
	json_object_set_new(o, "busy", json_boolean(cl->job != NULL));
	json_object_set_new(o, "absent", json_boolean(cl->absent));
	json_object_set_new(o, "drift", json_boolean(cl->drift));
	json_object_set_new(o, "last_error", cl->last_error[0] ? json_string(cl->last_error)
							      : json_null());
	json_object_set_new(o, "state", json_string(claim_state_to_string(cl->state)));
	json_object_set_new(o, "refused", json_boolean(cl->state == CLAIM_REFUSED));
	json_object_set_new(o, "reason", cl->state == CLAIM_REFUSED ? json_string(cl->reason)
								     : json_null());
	return o;
}

json_t *
claim_view_json(struct claims *c, const struct claim *cl)
{
	json_t *o = claim_json(cl);
	json_t *members = json_object_get(o, "members"), *m;
	size_t k;

	/* Each member's driver now, beside the one it had. */
	json_array_foreach(members, k, m) {
		char drv[64];
		bool present;

		current_driver(c, cl->members[k].address, drv, sizeof(drv), &present);
		json_object_set_new(m, "driver", drv[0] ? json_string(drv) : json_null());
		json_object_set_new(m, "present", json_boolean(present));
	}
	json_object_set_new(o, "group", json_integer(cl->group));
	return o;
}

json_t *
claims_owner_json(struct claims *c, const char *owner)
{
	json_t *list = json_array();

	for (size_t i = 0; list && c && i < c->n; i++)
		if (owner == NULL || strcmp(c->v[i]->owner, owner) == 0)
			json_array_append_new(list, claim_view_json(c, c->v[i]));
	return list;
}

json_t *
claims_json(struct claims *c, json_t *list)
{
	if (list == NULL)
		list = claims_owner_json(c, NULL);
	if (c == NULL)
		return json_pack("{s:o}", "claims", list ? list : json_array());
	return json_pack("{s:o, s:b, s:s?, s:s, s:b}", "claims", list ? list : json_array(),
			 "fail_closed", c->fail_closed, "fail_reason",
			 c->fail_closed ? c->fail_reason : NULL, "boot_id", c->boot_id, "rebooted",
			 c->rebooted);
}

/* --- jobs ------------------------------------------------------------------- */

static void
emit(struct claims *c, const char *type, const struct claim *cl, const char *extra_key,
     const char *extra)
{
	json_t *p = json_pack("{s:s, s:s, s:s, s:s}", "class", "pci", "id", cl->address, "owner",
			      cl->owner, "step", cl->step);

	if (p && extra_key)
		json_object_set_new(p, extra_key, json_string(extra ? extra : ""));
	bus_publish(c->env.bus, NULL, type, p);
}

static void
refresh_members(struct claims *c, struct claim *cl)
{
	for (size_t i = 0; i < cl->n; i++)
		inventory_refresh(c->env.inv, HDD_DEV_PCI, cl->members[i].address, "claim");
	resources_changed(c);
}

static void
job_start_queued(struct claims *c);
static bool claim_check_recorded(struct claims *c, struct claim *cl);

static void
job_finish(struct claim_job *j, int err)
{
	struct claims *c = j->c;
	struct claim *cl = j->cl;
	json_t *result = NULL;

	if (cl)
		cl->job = NULL;
	if (err == 0 && cl)
		result = claim_view_json(c, cl);
	if (j->done)
		j->done(j->arg, err, err ? j->error : NULL, result);
	else
		json_decref(result);
	if (running == j)
		running = NULL;
	free(j);
	job_start_queued(c);
}

static void
maybe_crash(struct claim_job *j)
{
	char want[96];

	if (crash_after == NULL)
		return;
	snprintf(want, sizeof(want), "%s@%zu", phase_names[j->phase], j->member);
	if (strcmp(crash_after, phase_names[j->phase]) == 0 || strcmp(crash_after, want) == 0) {
		log_warnx("claim", "HOSTDEVD_TEST_CRASH_AFTER=%s: killing myself", crash_after);
		raise(SIGKILL);
	}
}

static void
set_step(struct claim_job *j, enum phase p)
{
	j->phase = p;
	snprintf(j->cl->step, sizeof(j->cl->step), "%s", phase_names[p]);
}

static void
job_fail(struct claim_job *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* After a failure: a claim rolls back what it moved; a release stops where
 * it is (the claim stays, marked releasing, so a retry or restart goes on). */
static void
job_fail(struct claim_job *j, const char *fmt, ...)
{
	struct claim *cl = j->cl;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(j->error, sizeof(j->error), fmt, ap);
	va_end(ap);
	snprintf(cl->last_error, sizeof(cl->last_error), "%s", j->error);
	log_warnx("claim", "%s: %s", cl->address, j->error);
	emit(j->c, j->release ? "release.failed" : "claim.failed", cl, "error", j->error);
	metrics_count(j->release ? METRICS_RELEASES_FAILED : METRICS_CLAIMS_FAILED);
	if (!j->release && j->resumed) {
		/* Re-applying a recorded claim: keep it, unhealthy, and try
		 * again at the next resync. */
		claim_set_state(cl, CLAIM_CLAIMED, "re-applying failed; kept, bound again later");
		cl->drift = true;
		claims_save(j->c);
		job_finish(j, -EIO);
		return;
	}
	if (!j->release && j->phase >= PH_INTENT && j->phase < PH_CLAIMED && cl->state == CLAIM_CLAIMING) {
		j->member = j->moved;
		job_next_member(j, PH_RB_UNBIND, PH_RB_DONE);
		return;
	}
	if (!j->release && cl->state == CLAIM_CLAIMING) {
		/* Nothing was written to the kernel or the state yet. */
		struct claims *c = j->c;

		j->cl = NULL;
		claims_remove(c, cl);
		job_finish(j, -EIO);
		return;
	}
	job_finish(j, j->fail_err ? j->fail_err : -EIO);
}

static void job_after_write(void *arg, int result, const json_t *reply);
static json_t *holder_paths(struct claims *c, struct claim *cl);

static void
format_holders(const json_t *holders, char *buf, size_t size)
{
	size_t i, len = 0;
	json_t *h;

	buf[0] = '\0';
	json_array_foreach(holders, i, h)
		len += (size_t)snprintf(buf + len, len < size ? size - len : 0, "%s%d (%s)",
					i ? ", " : "", (int)json_integer_value(json_object_get(h, "pid")),
					json_string_value(json_object_get(h, "comm")));
}

/* A release whose unbind timed out: say who holds the device. */
static void
release_timeout_holders(void *arg, int result, const json_t *reply)
{
	struct claim_job *j = arg;
	const json_t *holders = reply ? json_object_get(reply, "holders") : NULL;
	char who[384];

	format_holders(holders, who, sizeof(who));
	job_fail(j, "release-unbind: unbinding %s from vfio-pci did not finish within %d s; %s%s",
		 j->member < j->cl->n ? j->cl->members[j->member].address : j->cl->address,
		 j->c->cfg->release_timeout_ms / 1000,
		 json_array_size(holders) ? "held by PID " : "no process holds its /dev/vfio node (the kernel is still busy)",
		 who);
}

static void
submit(struct claim_job *j, json_t *req, int timeout_ms)
{
	bool rollback = j->phase >= PH_RB_UNBIND && j->phase <= PH_RB_DONE;

	/* The owner's deadline bounds the move; a rollback always runs. */
	if (j->deadline && !rollback) {
		int64_t left = j->deadline - mono_ms();

		if (left <= 0) {
			json_decref(req);
			j->fail_err = -ETIMEDOUT;
			job_fail(j, "%s of %s: the deadline of the move passed", phase_names[j->phase],
				 member_addr(j));
			return;
		}
		if (left < timeout_ms)
			timeout_ms = (int)left;
	}
	if (worker_submit(j->c->worker, req, timeout_ms, job_after_write, j) < 0)
		job_fail(j, "%s: out of memory", phase_names[j->phase]);
}

static void
write_attr(struct claim_job *j, const char *path, const char *value, int timeout_ms)
{
	log_debug("claim", "%s: %s: %s <- %s", j->cl->address, phase_names[j->phase], path, value);
	submit(j, json_pack("{s:s, s:s, s:s}", "op", "write", "path", path, "value", value),
	       timeout_ms);
}

static const char *
member_addr(struct claim_job *j)
{
	return j->member < j->cl->n ? j->cl->members[j->member].address : j->cl->address;
}

/* Moves to `first` for the next non-bridge member at or after j->member
 * (counting down when rolling back), or to `after` when there is none. */
static void
job_next_member(struct claim_job *j, enum phase first, enum phase after)
{
	bool down = first == PH_RB_UNBIND;

	if (down) {
		while (j->member > 0 && j->cl->members[j->member - 1].bridge)
			j->member--;
		if (j->member == 0) {
			set_step(j, after);
		} else {
			j->member--;
			set_step(j, first);
		}
	} else {
		while (j->member < j->cl->n && j->cl->members[j->member].bridge)
			j->member++;
		set_step(j, j->member < j->cl->n ? first : after);
	}
	job_run(j);
}

static void verify_begin(struct claim_job *j);

static void
job_after_write(void *arg, int result, const json_t *reply)
{
	struct claim_job *j = arg;
	const json_t *holders = reply ? json_object_get(reply, "holders") : NULL;

	bool best_effort = j->phase >= PH_RB_UNBIND && j->phase <= PH_RB_DONE;

	if (result < 0 && (result == -ETIMEDOUT || !best_effort) && j->phase != PH_MODPROBE) {
		if (j->phase == PH_RL_UNBIND && result == -ETIMEDOUT) {
			/* Who holds it? The fresh worker looks. */
			if (worker_submit(j->c->worker,
					  json_pack("{s:s, s:o, s:[]}", "op", "holders", "paths",
						    holder_paths(j->c, j->cl), "prefixes"),
					  WRITE_TIMEOUT_MS, release_timeout_holders, j) < 0)
				job_fail(j, "release-unbind: timed out");
			return;
		}
		job_fail(j, "%s of %s failed: %s", phase_names[j->phase], member_addr(j),
			 strerror(-result));
		return;
	}
	if (result < 0)
		log_warnx("claim", "%s: %s of %s: %s (carrying on)", j->cl->address,
			  phase_names[j->phase], member_addr(j), strerror(-result));
	if (j->phase == PH_RL_HOLDERS && json_array_size(holders) > 0 && !j->force) {
		char who[384];

		format_holders(holders, who, sizeof(who));
		j->fail_err = -EBUSY;	/* the owner refuses with it */
		job_fail(j, "release refused: in use by PID %s (force to release anyway)", who);
		return;
	}
	maybe_crash(j);
	switch (j->phase) {
	case PH_MODPROBE:
		/* Looked at again: the driver must be there now. */
		j->modprobe_err = result;
		break;
	case PH_OVERRIDE: set_step(j, PH_UNBIND); break;
	case PH_UNBIND: set_step(j, PH_PROBE); break;
	case PH_PROBE:
		verify_begin(j);
		set_step(j, PH_VERIFY);
		break;
	case PH_RB_UNBIND: set_step(j, PH_RB_CLEAR); break;
	case PH_RB_CLEAR: set_step(j, PH_RB_BIND); break;
	case PH_RB_BIND:
		job_next_member(j, PH_RB_UNBIND, PH_RB_DONE);
		return;
	case PH_RL_HOLDERS: set_step(j, PH_RL_INTENT); break;
	case PH_RL_UNBIND: set_step(j, PH_RL_CLEAR); break;
	case PH_RL_CLEAR: set_step(j, PH_RL_BIND); break;
	case PH_RL_BIND:
		verify_begin(j);
		set_step(j, PH_RL_VERIFY);
		break;
	default:
		break;
	}
	job_run(j);
}

static int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
verify_begin(struct claim_job *j)
{
	j->tries = 0;
	j->verify_wait_ms = VERIFY_FIRST_MS;
	j->verify_deadline = mono_ms() + VERIFY_LIMIT_MS;
}

/* Whether the wait for a bind or unbind is over (it failed). */
static bool
verify_expired(struct claim_job *j)
{
	return ++j->tries > VERIFY_MAX_TRIES || mono_ms() >= j->verify_deadline;
}

static unsigned verify_gen;

/* The timer of a wait: `arg` is the wait's number, so a timer that a uevent
 * overtook (or whose job is gone) finds nothing to do. */
static void
verify_tick(void *arg)
{
	struct claim_job *j = running;

	if (j == NULL || !j->waiting || j->verify_gen != (unsigned)(uintptr_t)arg)
		return;
	j->waiting = false;
	job_run(j);
}

/* Waits for the member's bind or unbind to show in sysfs: its uevent wakes
 * the job at once (claims_device_event); without one, the timer looks
 * again after 1 ms, backing off to 50 ms. The real kernel has usually done
 * it by the time the write returns, so this is seldom reached there. */
static void
job_wait_verify(struct claim_job *j)
{
	j->waiting = true;
	j->verify_gen = ++verify_gen;
	if (loop_call_later(j->c->loop, j->verify_wait_ms, verify_tick,
			    (void *)(uintptr_t)j->verify_gen) < 0) {
		j->waiting = false;
		job_fail(j, "%s: cannot arm a timer", phase_names[j->phase]);
		return;
	}
	j->verify_wait_ms = j->verify_wait_ms * 2 > VERIFY_MAX_MS ? VERIFY_MAX_MS
								  : j->verify_wait_ms * 2;
}

static json_t *
holder_paths(struct claims *c, struct claim *cl)
{
	json_t *paths = json_array();
	char path[1200];

	snprintf(path, sizeof(path), "%s/vfio/%d", c->env.dev_root, cl->group);
	json_array_append_new(paths, json_string(path));
	for (size_t i = 0; i < cl->n; i++) {
		struct device *dev = inventory_find(c->env.inv, HDD_DEV_PCI, cl->members[i].address);

		if (dev && dev->pci.vfio_cdev) {
			snprintf(path, sizeof(path), "%s/vfio/devices/%s", c->env.dev_root,
				 dev->pci.vfio_cdev);
			json_array_append_new(paths, json_string(path));
		}
	}
	return paths;
}

/* What a step sees of its member before it acts: every step looks at
 * sysfs first, so running it again after a crash does no harm. */
struct look {
	char drv[64];		/* its driver now, "" when none */
	bool present;
};

static void
job_again(struct claim_job *j, enum phase p)
{
	set_step(j, p);
	job_run(j);
}

/* --- the claim's steps --- */

static void
ph_start(struct claim_job *j, const struct look *lk)
{
	/* vfio-pci first: nothing moves unless it is there. */
	j->tries = 0;
	job_again(j, PH_MODPROBE);
}

static void
ph_modprobe(struct claim_job *j, const struct look *lk)
{
	if (fsroot_exists(j->c->env.sys, "bus/pci/drivers/" VFIO_DRIVER) == 0) {
		job_again(j, PH_INTENT);
		return;
	}
	if (j->tries++ > 0) {
		if (j->modprobe_err < 0)
			job_fail(j, "modprobe: the vfio-pci driver is not available: modprobe vfio-pci failed (%s); is the module installed? Nothing was moved",
				 j->modprobe_err == -ENOENT ? "no modprobe, or no such module"
							   : strerror(-j->modprobe_err));
		else
			job_fail(j, "modprobe: the vfio-pci driver is not available: modprobe vfio-pci succeeded but bus/pci/drivers/vfio-pci did not appear. Nothing was moved");
		return;
	}
	submit(j, json_pack("{s:s, s:s}", "op", "modprobe", "module", "vfio-pci"), WRITE_TIMEOUT_MS);
}

static void
ph_intent(struct claim_job *j, const struct look *lk)
{
	claim_set_state(j->cl, CLAIM_CLAIMING, "intent");
	if (claims_save(j->c) < 0) {
		job_fail(j, "intent: cannot record the claim in %s", STATE_FILE);
		return;
	}
	maybe_crash(j);
	emit(j->c, "claim.progress", j->cl, NULL, NULL);
	j->member = 0;
	job_next_member(j, PH_OVERRIDE, PH_CLAIMED);
}

static void
ph_override(struct claim_job *j, const struct look *lk)
{
	char path[256];

	if (!lk->present) {
		job_fail(j, "override: %s vanished", member_addr(j));
		return;
	}
	if (j->member + 1 > j->moved)
		j->moved = j->member + 1;
	snprintf(path, sizeof(path), "bus/pci/devices/%s/driver_override", member_addr(j));
	write_attr(j, path, VFIO_DRIVER, WRITE_TIMEOUT_MS);
}

static void
ph_unbind(struct claim_job *j, const struct look *lk)
{
	char path[256];

	if (lk->drv[0] == '\0' || strcmp(lk->drv, VFIO_DRIVER) == 0) {
		job_again(j, PH_PROBE);
		return;
	}
	snprintf(path, sizeof(path), "bus/pci/drivers/%s/unbind", lk->drv);
	write_attr(j, path, member_addr(j), j->c->cfg->release_timeout_ms);
}

static void
ph_probe(struct claim_job *j, const struct look *lk)
{
	if (strcmp(lk->drv, VFIO_DRIVER) == 0) {
		verify_begin(j);
		job_again(j, PH_VERIFY);
		return;
	}
	write_attr(j, "bus/pci/drivers_probe", member_addr(j), WRITE_TIMEOUT_MS);
}

static void
ph_verify(struct claim_job *j, const struct look *lk)
{
	char path[64];

	snprintf(path, sizeof(path), "vfio/%d", j->cl->group);
	if (lk->present && strcmp(lk->drv, VFIO_DRIVER) == 0 &&
	    fsroot_exists(j->c->env.dev, path) == 0) {
		maybe_crash(j);
		j->member++;
		job_next_member(j, PH_OVERRIDE, PH_CLAIMED);
		return;
	}
	if (!lk->present) {
		job_fail(j, "verify: %s vanished", member_addr(j));
		return;
	}
	if (verify_expired(j)) {
		job_fail(j, "verify: %s is on %s, not vfio-pci%s, %d ms after the probe",
			 member_addr(j), lk->drv[0] ? lk->drv : "no driver",
			 strcmp(lk->drv, VFIO_DRIVER) == 0 ? " (no /dev/vfio node)" : "",
			 (int)(mono_ms() - (j->verify_deadline - VERIFY_LIMIT_MS)));
		return;
	}
	job_wait_verify(j);
}

static void
ph_claimed(struct claim_job *j, const struct look *lk)
{
	struct claims *c = j->c;
	struct claim *cl = j->cl;
	int err;

	claim_set_state(cl, CLAIM_CLAIMED, "bound");
	cl->drift = false;
	cl->absent = false;
	cl->last_error[0] = '\0';
	err = claims_save(c);
	refresh_members(c, cl);
	if (err < 0) {
		/* Bound, but not recorded: say so; a restart re-reads the
		 * intent and finishes the same way. */
		snprintf(j->error, sizeof(j->error), "bound, but the state could not be written: %s",
			 strerror(-err));
		job_finish(j, err);
		return;
	}
	maybe_crash(j);
	log_info("claim", "%s: claimed (%zu functions on vfio-pci)", cl->address, cl->n);
	emit(c, "claim.done", cl, NULL, NULL);
	job_finish(j, 0);
}

/* --- steps back: a failed claim's rollback and a release share them --- */

static void
ph_rb_unbind(struct claim_job *j, const struct look *lk)
{
	if (strcmp(lk->drv, VFIO_DRIVER) != 0 || !lk->present) {
		job_again(j, PH_RB_CLEAR);
		return;
	}
	write_attr(j, "bus/pci/drivers/" VFIO_DRIVER "/unbind", member_addr(j),
		   j->c->cfg->release_timeout_ms);
}

static void
ph_clear(struct claim_job *j, const struct look *lk)
{
	char path[256];

	if (!lk->present) {
		job_again(j, j->phase == PH_RB_CLEAR ? PH_RB_BIND : PH_RL_BIND);
		return;
	}
	snprintf(path, sizeof(path), "bus/pci/devices/%s/driver_override", member_addr(j));
	write_attr(j, path, "\n", WRITE_TIMEOUT_MS);
}

static void
ph_bind_back(struct claim_job *j, const struct look *lk)
{
	const char *orig = j->cl->members[j->member].original_driver;
	char path[256];

	/* Still on vfio-pci: the unbind has not shown yet; probe all the
	 * same (a no-op on a bound device), in order after it. */
	if (!lk->present || (lk->drv[0] && strcmp(lk->drv, VFIO_DRIVER) != 0 &&
			     (orig == NULL || strcmp(lk->drv, orig) == 0))) {
		if (j->phase == PH_RB_BIND) {
			job_next_member(j, PH_RB_UNBIND, PH_RB_DONE);
		} else {
			verify_begin(j);
			job_again(j, PH_RL_VERIFY);
		}
		return;
	}
	if (orig) {
		snprintf(path, sizeof(path), "bus/pci/drivers/%s/bind", orig);
		if (fsroot_exists(j->c->env.sys, path) == 0) {
			write_attr(j, path, member_addr(j), WRITE_TIMEOUT_MS);
			return;
		}
	}
	write_attr(j, "bus/pci/drivers_probe", member_addr(j), WRITE_TIMEOUT_MS);
}

static void
ph_rb_done(struct claim_job *j, const struct look *lk)
{
	/* Everything moved is back; the claim never happened. */
	struct claims *c = j->c;
	claim_done_fn done = j->done;
	void *arg = j->arg;
	char error[512];
	int err = j->fail_err ? j->fail_err : -EIO;

	snprintf(error, sizeof(error), "%s", j->error);
	refresh_members(c, j->cl);
	claims_remove(c, j->cl);
	claims_save(c);
	j->cl = NULL;
	j->done = NULL;
	job_finish(j, err);
	if (done)
		done(arg, err, error, NULL);
}

/* --- the release's steps --- */

static void
ph_rl_holders(struct claim_job *j, const struct look *lk)
{
	if (j->resumed) {
		job_again(j, PH_RL_INTENT);
		return;
	}
	submit(j, json_pack("{s:s, s:o, s:[]}", "op", "holders", "paths", holder_paths(j->c, j->cl),
			    "prefixes"), WRITE_TIMEOUT_MS);
}

static void
ph_rl_intent(struct claim_job *j, const struct look *lk)
{
	struct claims *c = j->c;

	claim_set_state(j->cl, CLAIM_RELEASING, "release intent");
	if (claims_save(c) < 0) {
		job_fail(j, "release-intent: cannot record the release in %s", STATE_FILE);
		return;
	}
	/* Out of the kubelet's resource before the kernel writes. */
	resources_changed(c);
	maybe_crash(j);
	emit(c, "claim.progress", j->cl, NULL, NULL);
	j->member = 0;
	job_next_member(j, PH_RL_UNBIND, PH_RELEASED);
}

static void
ph_rl_unbind(struct claim_job *j, const struct look *lk)
{
	if (!lk->present || strcmp(lk->drv, VFIO_DRIVER) != 0) {
		job_again(j, PH_RL_CLEAR);
		return;
	}
	/* Blocks in the kernel while a VFIO user holds the device: only ever
	 * in the worker, with a deadline. */
	write_attr(j, "bus/pci/drivers/" VFIO_DRIVER "/unbind", member_addr(j),
		   j->c->cfg->release_timeout_ms);
}

static void
ph_rl_verify(struct claim_job *j, const struct look *lk)
{
	const char *orig = j->cl->members[j->member].original_driver;

	if (!lk->present || orig == NULL || strcmp(lk->drv, orig) == 0) {
		maybe_crash(j);
		j->member++;
		job_next_member(j, PH_RL_UNBIND, PH_RELEASED);
		return;
	}
	if (verify_expired(j)) {
		log_warnx("claim", "%s: %s did not go back to %s (now %s); released from vfio-pci all the same",
			  j->cl->address, member_addr(j), orig, lk->drv[0] ? lk->drv : "no driver");
		j->member++;
		job_next_member(j, PH_RL_UNBIND, PH_RELEASED);
		return;
	}
	job_wait_verify(j);
}

static void
ph_released(struct claim_job *j, const struct look *lk)
{
	struct claims *c = j->c;
	struct claim *cl = j->cl;
	claim_done_fn done = j->done;
	void *arg = j->arg;
	json_t *result = claim_view_json(c, cl);

	refresh_members(c, cl);
	log_info("claim", "%s: released", cl->address);
	emit(c, "release.done", cl, NULL, NULL);
	claims_remove(c, cl);
	claims_save(c);
	j->cl = NULL;
	j->done = NULL;
	json_object_set_new(result, "state", json_string("released"));
	job_finish(j, 0);
	if (done)
		done(arg, 0, NULL, result);
	else
		json_decref(result);
}

static void (*const phase_fns[PH_MAX])(struct claim_job *j, const struct look *lk) = {
	[PH_START] = ph_start, [PH_MODPROBE] = ph_modprobe, [PH_INTENT] = ph_intent,
	[PH_OVERRIDE] = ph_override, [PH_UNBIND] = ph_unbind, [PH_PROBE] = ph_probe,
	[PH_VERIFY] = ph_verify, [PH_CLAIMED] = ph_claimed,
	[PH_RB_UNBIND] = ph_rb_unbind, [PH_RB_CLEAR] = ph_clear, [PH_RB_BIND] = ph_bind_back,
	[PH_RB_DONE] = ph_rb_done,
	[PH_RL_HOLDERS] = ph_rl_holders, [PH_RL_INTENT] = ph_rl_intent,
	[PH_RL_UNBIND] = ph_rl_unbind, [PH_RL_CLEAR] = ph_clear, [PH_RL_BIND] = ph_bind_back,
	[PH_RL_VERIFY] = ph_rl_verify, [PH_RELEASED] = ph_released,
};

/* One step of the state machine: what its member looks like now, then
 * the phase's step. */
static void
job_run(struct claim_job *j)
{
	struct look lk = { .present = true };

	if (j->member < j->cl->n)
		current_driver(j->c, member_addr(j), lk.drv, sizeof(lk.drv), &lk.present);
	if ((unsigned)j->phase >= PH_MAX || phase_fns[j->phase] == NULL) {
		job_fail(j, "internal error: phase %d", (int)j->phase);
		return;
	}
	phase_fns[j->phase](j, &lk);
}

static void
job_start_queued(struct claims *c)
{
	while (running == NULL && queue_head) {
		struct claim_job *j = queue_head;

		queue_head = j->next;
		if (queue_head == NULL)
			queue_tail = NULL;
		j->next = NULL;
		running = j;
		job_run(j);
	}
}

static void
job_queue(struct claims *c, struct claim_job *j)
{
	metrics_count(j->release ? METRICS_RELEASES_STARTED : METRICS_CLAIMS_STARTED);
	j->cl->job = j;
	if (queue_tail)
		queue_tail->next = j;
	else
		queue_head = j;
	queue_tail = j;
	job_start_queued(c);
}

static struct claim_job *
job_new(struct claims *c, struct claim *cl, bool release, claim_done_fn done, void *arg)
{
	struct claim_job *j = calloc(1, sizeof(*j));

	if (j == NULL)
		return NULL;
	j->c = c;
	j->cl = cl;
	j->release = release;
	j->done = done;
	j->arg = arg;
	j->phase = release ? PH_RL_HOLDERS : PH_START;
	return j;
}

/* --- requests --------------------------------------------------------------- */

/* Drivers that leave a group member harmless to a VFIO user (the kernel's
 * viability rule). */
static bool
driver_vfio_safe(const char *drv)
{
	return drv == NULL || strcmp(drv, VFIO_DRIVER) == 0 || strcmp(drv, "pci-stub") == 0;
}

/* Whether member `m` of the group that `dev` asks for may go to vfio-pci:
 * 0 (with *stays set for a bridge, left where it is), or 1 with why. One
 * rule for new claims and for the claims state.json brings back. */
static int
member_refused(struct claims *c, const struct device *dev, const struct device *m, bool *stays,
	       char *why, size_t whylen)
{
	const char *never = hdd_pci_never_claimable(&m->pci.f);
	char reason[384];

	*stays = false;
	if (never && m != dev && (m->pci.f.class_code >> 16) == 0x06) {
		/* A bridge in the group stays as it is: PCI bridges never
		 * count for VFIO, other bridges (host, ISA) only when they
		 * have a host driver. */
		if (m->pci.f.is_bridge || driver_vfio_safe(m->pci.driver)) {
			*stays = true;
			return 0;
		}
		snprintf(why, whylen, "refused: %s shares IOMMU group %d with %s, which %s and is bound to %s",
			 dev->id, dev->pci.f.iommu_group, m->id, never, m->pci.driver);
		return 1;
	}
	if (never) {
		snprintf(why, whylen, "refused: %s %s%s%s", m->id, never,
			 m == dev ? "" : "; it shares an IOMMU group with ", m == dev ? "" : dev->id);
		return 1;
	}
	if (protect_check(c->env.sys, c->cfg, m, reason, sizeof(reason))) {
		snprintf(why, whylen, "refused: %s %s%s%s", m->id, reason,
			 m == dev ? "" : "; it shares IOMMU group with ",
			 m == dev ? "" : dev->id);
		return 1;
	}
	if (m->pci.f.sriov_numvfs > 0) {
		snprintf(why, whylen, "refused: %s is an SR-IOV physical function with %d VFs enabled; set sriov_numvfs to 0 first",
			 m->id, m->pci.f.sriov_numvfs);
		return 1;
	}
	return 0;
}

static struct claim *
build_claim(struct claims *c, struct device *dev, char *why, size_t whylen)
{
	struct device *members[MAX_MEMBERS];
	bool stays[MAX_MEMBERS];
	struct claim *cl;
	size_t n;

	if (hdd_pci_never_claimable(&dev->pci.f)) {
		snprintf(why, whylen, "refused: %s %s", dev->id, hdd_pci_never_claimable(&dev->pci.f));
		return NULL;
	}
	if (dev->pci.f.iommu_group < 0) {
		snprintf(why, whylen, "%s has no IOMMU group: turn the IOMMU on (intel_iommu=on or amd_iommu=on on the kernel command line, VT-d or AMD-Vi in the firmware)",
			 dev->id);
		return NULL;
	}
	n = inventory_group_members(c->env.inv, dev->pci.f.iommu_group, members, MAX_MEMBERS);
	if (n == 0 || n > MAX_MEMBERS) {
		snprintf(why, whylen, "IOMMU group %d of %s is empty or too large (%zu)",
			 dev->pci.f.iommu_group, dev->id, n);
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		struct device *m = members[i];
		struct claim *other = claims_find_member(c, m->id);

		if (member_refused(c, dev, m, &stays[i], why, whylen))
			return NULL;
		if (stays[i])
			continue;
		if (other) {
			snprintf(why, whylen, "%s shares IOMMU group %d with %s, which belongs to the claim of %s",
				 dev->id, dev->pci.f.iommu_group, m->id, other->address);
			return NULL;
		}
	}
	cl = calloc(1, sizeof(*cl));
	if (cl == NULL || (cl->members = calloc(n, sizeof(*cl->members))) == NULL) {
		free(cl);
		snprintf(why, whylen, "out of memory");
		return NULL;
	}
	snprintf(cl->address, sizeof(cl->address), "%s", dev->id);
	cl->group = dev->pci.f.iommu_group;
	cl->created = (int64_t)time(NULL);
	cl->state = CLAIM_CLAIMING;
	for (size_t i = 0; i < n; i++) {
		struct claim_member *m = &cl->members[i];
		const char *drv = members[i]->pci.driver;

		snprintf(m->address, sizeof(m->address), "%s", members[i]->id);
		m->bridge = stays[i];
		m->aer_seen = -1;
		/* Remember the driver to give it back to; a device already on
		 * vfio-pci goes back to whatever probes it. */
		m->original_driver = drv && strcmp(drv, VFIO_DRIVER) != 0 ? strdup(drv) : NULL;
	}
	cl->n = n;
	return cl;
}

static int
claims_add(struct claims *c, struct claim *cl)
{
	struct claim **v = realloc(c->v, (c->n + 1) * sizeof(*v));

	if (v == NULL)
		return -ENOMEM;
	c->v = v;
	c->v[c->n++] = cl;
	index_rebuild(c);
	return 0;
}

static void
whyf(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
whyf(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
}

int
claims_bind(struct claims *c, const char *owner, const char *address, int timeout_ms,
	    claim_done_fn done, void *arg, json_t **now, char *why, size_t whylen)
{
	struct claim_job *j;
	struct device *dev;
	struct claim *cl;

	*now = NULL;
	if (c->fail_closed) {
		whyf(why, whylen, "claims are refused: %s", c->fail_reason);
		return -EROFS;
	}
	dev = pci_address_valid(address) ? inventory_find(c->env.inv, HDD_DEV_PCI, address) : NULL;
	if (dev == NULL) {
		whyf(why, whylen, "no such PCI device: %s", address);
		return -ENOENT;
	}
	cl = claims_find_member(c, address);
	if (cl && strcmp(cl->owner, owner) != 0) {
		whyf(why, whylen, "%s: its IOMMU group %d is held by module %s", address, cl->group,
		     cl->owner);
		return -EBUSY;
	}
	if (cl) {
		if (cl->job) {
			whyf(why, whylen, "%s: a %s is in progress (%s)", address,
			     cl->state == CLAIM_RELEASING ? "release" : "claim", cl->step);
			return -EBUSY;
		}
		if (cl->state == CLAIM_CLAIMED && claim_check_recorded(c, cl)) {
			*now = claim_view_json(c, cl);
			return *now ? 1 : -ENOMEM;
		}
		if (cl->state == CLAIM_REFUSED) {
			whyf(why, whylen, "%s", cl->reason);
			return -EPERM;
		}
		whyf(why, whylen, "%s is %s", address, claim_state_to_string(cl->state));
		return -EBUSY;
	}
	cl = build_claim(c, dev, why, whylen);
	if (cl == NULL)
		return -EPERM;
	snprintf(cl->owner, sizeof(cl->owner), "%s", owner);
	j = job_new(c, cl, false, done, arg);
	if (j == NULL || claims_add(c, cl) < 0) {
		free(j);
		claim_free(cl);
		whyf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	if (timeout_ms > 0)
		j->deadline = mono_ms() + timeout_ms;
	log_info("claim", "%s: binding IOMMU group %d (%zu functions) for module %s", cl->address,
		 cl->group, cl->n, owner);
	job_queue(c, j);
	return 0;
}

int
claims_unbind(struct claims *c, const char *owner, const char *address, bool force,
	      int timeout_ms, claim_done_fn done, void *arg, json_t **now, char *why,
	      size_t whylen)
{
	struct claim *cl;
	struct claim_job *j;

	*now = NULL;
	if (c->fail_closed) {
		whyf(why, whylen, "releases are refused: %s", c->fail_reason);
		return -EROFS;
	}
	cl = claims_find_member(c, address);
	if (cl == NULL || strcmp(cl->owner, owner) != 0) {
		whyf(why, whylen, "%s is not claimed", address);
		return -ENOENT;
	}
	if (cl->job) {
		whyf(why, whylen, "%s: a %s is in progress (%s)", address,
		     cl->state == CLAIM_RELEASING ? "release" : "claim", cl->step);
		return -EBUSY;
	}
	if (cl->state == CLAIM_REFUSED) {
		/* Never applied: forgotten without a kernel write; its members
		 * keep the drivers they have. */
		json_t *result = claim_view_json(c, cl);

		log_info("claim", "%s: the refused claim is forgotten (no driver changed)", cl->address);
		emit(c, "release.done", cl, "reason", "refused claim forgotten");
		json_object_set_new(result, "state", json_string("released"));
		json_object_set_new(result, "forgotten", json_true());
		claims_remove(c, cl);
		claims_save(c);
		*now = result;
		return 1;
	}
	j = job_new(c, cl, true, done, arg);
	if (j == NULL) {
		whyf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	j->force = force;
	if (timeout_ms > 0)
		j->deadline = mono_ms() + timeout_ms;
	log_info("claim", "%s: releasing IOMMU group %d for module %s%s", cl->address, cl->group,
		 owner, force ? " (forced)" : "");
	job_queue(c, j);
	return 0;
}

int
claims_holder(struct claims *c, const char *address, char *owner, size_t size, bool *allocated)
{
	struct claim *cl = c ? claims_find_member(c, address) : NULL;

	if (allocated)
		*allocated = cl && cl->allocations > 0;
	if (cl) {
		if (owner && size)
			snprintf(owner, size, "%s", cl->owner);
		return 1;
	}
	if (c == NULL || inventory_find(c->env.inv, HDD_DEV_PCI, address) == NULL)
		return -ENOENT;
	return 0;
}

static bool
member_view(struct claim *cl, size_t k, struct claims_member *out)
{
	out->address = cl->members[k].address;
	out->owner = cl->owner;
	out->group = cl->group;
	out->offered = cl->state == CLAIM_CLAIMED && cl->job == NULL;
	out->bridge = cl->members[k].bridge;
	out->advertised = cl->advertised;
	return true;
}

static struct claim_member *
member_of(struct claim *cl, const char *address)
{
	for (size_t k = 0; cl && k < cl->n; k++)
		if (strcmp(cl->members[k].address, address) == 0)
			return &cl->members[k];
	return NULL;
}

bool
claims_member_get(struct claims *c, const char *address, struct claims_member *out)
{
	struct claim *cl = c ? claims_find_member(c, address) : NULL;
	struct claim_member *m = member_of(cl, address);

	return m && member_view(cl, (size_t)(m - cl->members), out);
}

void
claims_member_foreach(struct claims *c, void (*fn)(const struct claims_member *m, void *arg),
		      void *arg)
{
	struct claims_member v;

	for (size_t i = 0; c && i < c->n; i++)
		for (size_t k = 0; k < c->v[i]->n; k++)
			if (member_view(c->v[i], k, &v))
				fn(&v, arg);
}

size_t
claims_member_count(const struct claims *c)
{
	size_t n = 0;

	for (size_t i = 0; c && i < c->n; i++)
		n += c->v[i]->n;
	return n;
}

void
claims_member_advertised(struct claims *c, const char *address, const char *resource)
{
	struct claim *cl = c ? claims_find_member(c, address) : NULL;

	if (cl)
		snprintf(cl->advertised, sizeof(cl->advertised), "%s", resource);
}

bool
claims_member_aer(struct claims *c, const char *address, int aer_errors, int hold_s, int64_t now,
		  int64_t *until, int *new_errors)
{
	struct claim *cl = c ? claims_find_member(c, address) : NULL;
	struct claim_member *m = member_of(cl, address);

	*new_errors = 0;
	if (m == NULL)
		return false;
	if (m->aer_seen >= 0 && aer_errors > m->aer_seen) {
		*new_errors = aer_errors - m->aer_seen;
		m->aer_sick_until = now + hold_s;
	}
	if (aer_errors >= 0)
		m->aer_seen = aer_errors;
	*until = m->aer_sick_until;
	return now < m->aer_sick_until;
}

void
claims_member_allocated(struct claims *c, const char *address)
{
	struct claim *cl = c ? claims_find_member(c, address) : NULL;

	if (cl)
		cl->allocations++;
}

json_t *
claims_member_json(struct claims *c, const char *owner, const char *address)
{
	struct claim *cl = c ? claims_find_member(c, address) : NULL;

	if (cl == NULL || (owner && strcmp(cl->owner, owner) != 0))
		return NULL;
	return claim_view_json(c, cl);
}

/* --- reconcile ---------------------------------------------------------------- */

static bool
claim_has_member(const struct claim *cl, const char *addr)
{
	for (size_t k = 0; k < cl->n; k++)
		if (strcmp(cl->members[k].address, addr) == 0)
			return true;
	return false;
}

/* A recorded claim against the live system, before any kernel write for
 * it: the checksum proves state.json whole, not sane. Its members are its
 * IOMMU group's (no more, no fewer), no other record holds them, and (but
 * for a release, which gives devices back to the host) each may be claimed
 * now. 0, or 1 with why. Absent devices are judged when they return. */
static int
claim_validate(struct claims *c, struct claim *cl, char *why, size_t whylen)
{
	struct device *members[MAX_MEMBERS], *asked;
	size_t n;

	if (!claim_has_member(cl, cl->address)) {
		snprintf(why, whylen, "%s is not among its own members", cl->address);
		return 1;
	}
	for (size_t i = 0; i < cl->n; i++) {
		const char *a = cl->members[i].address;

		for (size_t k = 0; k < i; k++)
			if (strcmp(cl->members[k].address, a) == 0) {
				snprintf(why, whylen, "member %s is listed twice", a);
				return 1;
			}
		for (size_t o = 0; o < c->n && c->v[o] != cl; o++)
			if (claim_has_member(c->v[o], a)) {
				snprintf(why, whylen, "%s is also in the claim of %s recorded before it (a duplicate)",
					 a, c->v[o]->address);
				return 1;
			}
	}
	for (size_t o = 0; o < c->n && c->v[o] != cl; o++)
		if (c->v[o]->group == cl->group) {
			snprintf(why, whylen, "IOMMU group %d is also in the claim of %s recorded before it (a duplicate)",
				 cl->group, c->v[o]->address);
			return 1;
		}
	asked = inventory_find(c->env.inv, HDD_DEV_PCI, cl->address);
	if (asked == NULL)
		return 0;
	if (asked->pci.f.iommu_group != cl->group) {
		snprintf(why, whylen, "%s is in IOMMU group %d now, not %d as recorded", cl->address,
			 asked->pci.f.iommu_group, cl->group);
		return 1;
	}
	for (size_t i = 0; i < cl->n; i++) {
		struct device *m = inventory_find(c->env.inv, HDD_DEV_PCI, cl->members[i].address);

		if (m && m->pci.f.iommu_group != cl->group) {
			snprintf(why, whylen, "member %s is not in IOMMU group %d of %s (it is in %d)",
				 m->id, cl->group, cl->address, m->pci.f.iommu_group);
			return 1;
		}
	}
	n = inventory_group_members(c->env.inv, cl->group, members, MAX_MEMBERS);
	if (n > MAX_MEMBERS) {
		snprintf(why, whylen, "IOMMU group %d is too large (%zu)", cl->group, n);
		return 1;
	}
	for (size_t i = 0; i < n; i++) {
		struct device *m = members[i];
		bool stays;

		if (cl->state == CLAIM_RELEASING) {
			if (!claim_has_member(cl, m->id) && !m->pci.f.is_bridge &&
			    !hdd_pci_never_claimable(&m->pci.f)) {
				snprintf(why, whylen, "IOMMU group %d holds %s, which the record does not list",
					 cl->group, m->id);
				return 1;
			}
			continue;
		}
		if (member_refused(c, asked, m, &stays, why, whylen))
			return 1;
		if (!stays && !claim_has_member(cl, m->id)) {
			snprintf(why, whylen, "IOMMU group %d holds %s, which the record does not list",
				 cl->group, m->id);
			return 1;
		}
		/* What stays where it is follows the live system, not the file. */
		for (size_t k = 0; k < cl->n; k++)
			if (strcmp(cl->members[k].address, m->id) == 0)
				cl->members[k].bridge = stays;
	}
	return 0;
}

/* A recorded claim the live system says no to: kept (listed with the
 * reason, in state.json as it was), never applied. */
static void
claim_refuse(struct claims *c, struct claim *cl, const char *why)
{
	if (cl->state != CLAIM_REFUSED)
		cl->recorded = cl->state;
	claim_set_state(cl, CLAIM_REFUSED, "the live system says no");
	cl->drift = false;
	if (strncmp(why, "refused: ", 9) == 0)
		why += 9;
	snprintf(cl->reason, sizeof(cl->reason), "%s", why);
	snprintf(cl->step, sizeof(cl->step), "refused");
	log_warnx("claim", "%s: the %s claim recorded in %s is refused, nothing is written for it: %s",
		  cl->address, claim_state_to_string(cl->recorded), STATE_FILE, why);
	emit(c, "claim.refused", cl, "reason", why);
	claims_save(c);		/* what follows the claims (early binding) drops it */
	resources_changed(c);
}

/* Validates before a recorded claim is applied again; false when refused. */
static bool
claim_check_recorded(struct claims *c, struct claim *cl)
{
	char why[512];

	if (cl->state == CLAIM_REFUSED)
		return false;
	if (claim_validate(c, cl, why, sizeof(why)) == 0)
		return true;
	claim_refuse(c, cl, why);
	return false;
}

static void
reapply(struct claims *c, struct claim *cl, const char *why)
{
	struct claim_job *j;

	if (!claim_check_recorded(c, cl))
		return;
	j = job_new(c, cl, false, NULL, NULL);
	if (j == NULL)
		return;
	j->resumed = true;
	log_info("claim", "%s: %s; binding it to vfio-pci again", cl->address, why);
	job_queue(c, j);
}

static void
check_claimed(struct claims *c, struct claim *cl, const char *source)
{
	bool absent = false, drift = false;
	char who[64] = "", drv[64];

	if (cl->job || cl->state != CLAIM_CLAIMED)
		return;
	for (size_t i = 0; i < cl->n; i++) {
		bool present;

		if (cl->members[i].bridge)
			continue;
		current_driver(c, cl->members[i].address, drv, sizeof(drv), &present);
		if (!present) {
			absent = true;
		} else if (strcmp(drv, VFIO_DRIVER) != 0) {
			drift = true;
			snprintf(who, sizeof(who), "%s on %s", cl->members[i].address,
				 drv[0] ? drv : "no driver");
		}
	}
	if (absent != cl->absent) {
		cl->absent = absent;
		snprintf(cl->step, sizeof(cl->step), "%s", absent ? "absent" : "claimed");
		log_info("claim", "%s: %s (%s)", cl->address,
			 absent ? "a member is missing; kept as absent" : "back", source);
		emit(c, "drift", cl, "reason", absent ? "absent" : "returned");
	}
	if (drift && !absent) {
		cl->drift = true;
		emit(c, "drift", cl, "reason", who);
		reapply(c, cl, who);
	}
}

void
claims_reconcile(struct claims *c, const char *source)
{
	if (c->fail_closed)
		return;
	if (c->rebooted)
		log_info("claim", "reboot detected: re-applying %zu claims before anything else", c->n);
	/* Every record is judged before the first write for any of them. */
	for (size_t i = 0; i < c->n; i++)
		if (c->v[i]->job == NULL)
			claim_check_recorded(c, c->v[i]);
	for (size_t i = 0; i < c->n; i++) {
		struct claim *cl = c->v[i];
		struct claim_job *j;

		if (cl->job)
			continue;
		switch (cl->state) {
		case CLAIM_CLAIMING:
			reapply(c, cl, "an interrupted claim");
			break;
		case CLAIM_REFUSED:
			break;
		case CLAIM_RELEASING:
			j = job_new(c, cl, true, NULL, NULL);
			if (j) {
				j->resumed = true;
				j->force = true;
				log_info("claim", "%s: finishing an interrupted release", cl->address);
				job_queue(c, j);
			}
			break;
		default:
			check_claimed(c, cl, source);
			break;
		}
	}
	if (c->rebooted) {
		c->rebooted = false;
		claims_save(c);		/* records this boot */
	}
}

void
claims_device_event(struct claims *c, struct device *dev, bool removed)
{
	struct claim *cl;

	if (c == NULL || c->fail_closed || dev->cls != HDD_DEV_PCI)
		return;
	cl = claims_find_member(c, dev->id);
	if (cl && running && running->waiting && running->cl == cl &&
	    strcmp(member_addr(running), dev->id) == 0) {
		/* The bind or unbind the job waits for: look now. */
		running->waiting = false;
		job_run(running);
		return;
	}
	if (cl)
		check_claimed(c, cl, removed ? "removed" : "changed");
}
