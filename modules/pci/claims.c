/* SPDX-License-Identifier: MIT */
/* pci: claims. pci.claim and pci.release move a function's whole IOMMU group
 * onto vfio-pci and back through the core's engine (vfio_group_bind and
 * vfio_group_unbind: journalled, rolled back, re-bound after drift and
 * reboot); this file is the policy around it: who may be claimed and why
 * not, the resource name a claim is offered under, the configuration's
 * claim rules, the NVIDIA hand-off (nothing may hold /dev/nvidia* when a GPU
 * leaves its driver; persistence mode off before, on after), and the
 * records of all that in the module's section of state.json. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hostdevd/module.h"
#include "pci.h"

#define GPU_DRIVER "nvidia"
#define GPU_POLL_MS 200
#define STEP_TIMEOUT_MS 15000
#define STATE_FILE "state.json"

struct pci_job {
	struct pci_state *st;
	struct pci_claim *cl;		/* the record it works for, or NULL */
	char address[PCI_ADDR_MAX];	/* as asked */
	struct hdd_request *req;	/* NULL: the configuration asked */
	bool release;
	bool force;
	bool fresh;			/* the record is this job's: dropped on failure */
	bool gpu;			/* a member is (or was) on the GPU driver */
	bool stopping;
	bool pm_off;			/* persistence mode was turned off for it */
	int64_t call;			/* a core call in flight, or 0 */
	int64_t timer;			/* the gpu-free poll, or 0 */
	int64_t gpu_deadline;		/* monotonic ms */
	int gpu_wait_ms;
	json_t *result;			/* a release's answer, after persistence-on */
	char step[32];
};

static void pcilog(struct pci_state *st, enum hdd_log_level l, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
pcilog(struct pci_state *st, enum hdd_log_level l, const char *fmt, ...)
{
	char msg[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	st->ops->log(st->core, l, PCI_NAME, "%s", msg);
}

static int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "0000:3b:00.0": domain (4 to 8 hex digits), bus, device, function 0-7. */
static bool
address_valid(const char *s)
{
	size_t n = 0;

	while (n < 8 && s[n] && strchr("0123456789abcdefABCDEF", s[n]))
		n++;
	if (n < 4 || s[n] != ':')
		return false;
	s += n + 1;
	for (int part = 0; part < 2; part++, s += 3) {
		if (!s[0] || !s[1] || !strchr("0123456789abcdefABCDEF", s[0]) ||
		    !strchr("0123456789abcdefABCDEF", s[1]) || s[2] != (part ? '.' : ':'))
			return false;
	}
	return s[0] >= '0' && s[0] <= '7' && s[1] == '\0';
}

/* --- records ----------------------------------------------------------------- */

static void
claim_free(struct pci_claim *cl)
{
	if (cl == NULL)
		return;
	free(cl->resource_name);
	free(cl->members);
	free(cl);
}

struct pci_claim *
pci_claim_find(struct pci_state *st, const char *address)
{
	for (size_t i = 0; i < st->n; i++) {
		struct pci_claim *cl = st->v[i];

		if (strcmp(cl->address, address) == 0)
			return cl;
		for (size_t k = 0; k < cl->n; k++)
			if (strcmp(cl->members[k], address) == 0)
				return cl;
	}
	return NULL;
}

static struct pci_claim *
claim_add(struct pci_state *st, const char *address, const char *resource_name, bool from_config)
{
	struct pci_claim *cl = calloc(1, sizeof(*cl));
	struct pci_claim **v;

	if (cl == NULL)
		return NULL;
	snprintf(cl->address, sizeof(cl->address), "%s", address);
	cl->from_config = from_config;
	if (resource_name && resource_name[0] && (cl->resource_name = strdup(resource_name)) == NULL)
		goto fail;
	v = realloc(st->v, (st->n + 1) * sizeof(*v));
	if (v == NULL)
		goto fail;
	st->v = v;
	st->v[st->n++] = cl;
	return cl;
fail:
	claim_free(cl);
	return NULL;
}

static void
claim_remove(struct pci_state *st, struct pci_claim *cl)
{
	for (size_t i = 0; i < st->n; i++) {
		if (st->v[i] != cl)
			continue;
		memmove(&st->v[i], &st->v[i + 1], (st->n - i - 1) * sizeof(*st->v));
		st->n--;
		claim_free(cl);
		return;
	}
}

/* The members of a group view ({"members": [{"address"}]}) into the record. */
static void
claim_set_members(struct pci_claim *cl, const json_t *view)
{
	const json_t *members = json_object_get(view, "members"), *m;
	char (*v)[PCI_ADDR_MAX];
	size_t i;

	if (!json_is_array(members))
		return;
	v = calloc(json_array_size(members) + 1, sizeof(*v));
	if (v == NULL)
		return;
	json_array_foreach(members, i, m)
		snprintf(v[i], sizeof(v[i]), "%s", json_string_value(json_object_get(m, "address")) ?: "");
	free(cl->members);
	cl->members = v;
	cl->n = json_array_size(members);
}

/* The section: {"claims": [{"address", "resource_name", "from_config"}]}. */
static int
records_save(struct pci_state *st)
{
	json_t *list = json_array(), *section;
	int err;

	for (size_t i = 0; list && i < st->n; i++)
		json_array_append_new(list, json_pack("{s:s, s:s?, s:b}", "address", st->v[i]->address,
						      "resource_name", st->v[i]->resource_name,
						      "from_config", st->v[i]->from_config));
	section = list ? json_pack("{s:o}", "claims", list) : NULL;
	if (section == NULL)
		return -ENOMEM;
	err = st->ops->state_put(st->core, section);
	json_decref(section);
	return err;
}

/* Records from the section, and from {"legacy_claims": [...]}: whole claim
 * records of a state.json from before the engine had owners, which the
 * core hands over as they were. Returns whether legacy ones were folded. */
static bool
records_load(struct pci_state *st, const json_t *section)
{
	const char *keys[] = { "claims", "legacy_claims" };
	bool legacy = false;

	for (size_t k = 0; k < 2; k++) {
		const json_t *list = json_object_get(section, keys[k]), *o;
		size_t i;

		json_array_foreach(list, i, o) {
			const char *a = json_string_value(json_object_get(o, "address"));
			const char *r = json_string_value(json_object_get(o, "resource_name"));

			if (a == NULL || !address_valid(a) || pci_claim_find(st, a))
				continue;
			if (r && st->ops->resource_name_check(r, NULL, 0) < 0)
				r = NULL;
			if (claim_add(st, a, r, json_is_true(json_object_get(o, "from_config"))) &&
			    k == 1)
				legacy = true;
		}
	}
	return legacy;
}

/* --- answers ----------------------------------------------------------------- */

static int
errno_code(int err)
{
	switch (err) {
	case -EPERM: case -EROFS: return HDD_ERR_REFUSED;
	case -ENOENT: return HDD_ERR_NOT_FOUND;
	case -EBUSY: return HDD_ERR_BUSY;
	case -EINVAL: return HDD_ERR_INVALID_PARAMS;
	default: return HDD_ERR_FAILED;
	}
}

static void answer_error(struct pci_state *st, struct hdd_request *req, const char *address,
			 int code, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* The answer to the client, or (the configuration asked) the log's line. */
static void
answer_error(struct pci_state *st, struct hdd_request *req, const char *address, int code,
	     const char *fmt, ...)
{
	char msg[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (req)
		st->ops->reply_error(req, code, "%s", msg);
	else
		pcilog(st, HDD_LOG_WARN, "%s: not claimed by the configuration: %s", address, msg);
}

/* A group view with what the module adds: its resource name, whether the
 * configuration asked. */
static json_t *
claim_view(struct pci_state *st, const struct pci_claim *cl, json_t *view)
{
	if (view == NULL)
		return NULL;
	json_object_set_new(view, "resource_name",
			    cl && cl->resource_name ? json_string(cl->resource_name) : json_null());
	json_object_set_new(view, "from_config", json_boolean(cl && cl->from_config));
	(void)st;
	return view;
}

/* pci.claim's and pci.release's answer: the claim as its record reads, as
 * it always did (the members without their drivers now, no group or owner
 * keys: claims.list has those). */
static json_t *
claim_result(struct pci_state *st, const struct pci_claim *cl, const json_t *view)
{
	json_t *o = claim_view(st, cl, json_deep_copy(view)), *m;
	size_t i;

	if (o == NULL)
		return NULL;
	json_object_del(o, "group");
	json_object_del(o, "owner");
	json_array_foreach(json_object_get(o, "members"), i, m) {
		json_object_del(m, "driver");
		json_object_del(m, "present");
	}
	return o;
}

int
pci_claims_list(void *state, json_t *out)
{
	struct pci_state *st = state;
	json_t *views = st->ops->vfio_group_list(st->core), *v;
	size_t i;

	if (views == NULL)
		return -ENOMEM;
	json_array_foreach(views, i, v) {
		const char *a = json_string_value(json_object_get(v, "address"));

		json_array_append(out, claim_view(st, a ? pci_claim_find(st, a) : NULL, v));
	}
	json_decref(views);
	return 0;
}

/* --- jobs -------------------------------------------------------------------- */

static void
job_free(struct pci_job *j)
{
	if (j->cl && j->cl->job == j)
		j->cl->job = NULL;
	json_decref(j->result);
	free(j);
}

/* A failed claim: the record goes if it was this job's, the GPU gets its
 * persistence mode back (best effort), the caller its answer. */
static void job_pm(struct pci_job *j, bool enable);
static void job_bind(struct pci_job *j);

static void
job_fail(struct pci_job *j, int code, const char *msg)
{
	struct pci_state *st = j->st;

	if (j->fresh && j->cl && !j->stopping) {
		j->cl->job = NULL;
		claim_remove(st, j->cl);
		j->cl = NULL;
		records_save(st);
	}
	answer_error(st, j->req, j->address, code, "%s", msg);
	j->req = NULL;
	if (j->pm_off && !j->release && !j->stopping) {
		j->pm_off = false;
		job_pm(j, true);	/* frees j when done */
		return;
	}
	job_free(j);
}

static void
pm_done(void *arg, int result, const json_t *out)
{
	struct pci_job *j = arg;
	struct pci_state *st = j->st;
	bool enable = strcmp(j->step, "persistence-on") == 0;

	j->call = 0;
	(void)out;
	if (result < 0)
		pcilog(st, HDD_LOG_WARN, "%s: %s of %s: %s (carrying on)", j->address, j->step,
		       j->address, strerror(-result));
	if (!enable) {
		j->pm_off = true;
		job_bind(j);
		return;
	}
	/* After a release (or a failed claim): the answer, if still owed. */
	if (j->req && j->result) {
		st->ops->reply(j->req, j->result);
		j->result = NULL;
	}
	job_free(j);
}

/* nvidia-smi -pm 0/1 for the GPU, in the worker (it may take seconds). */
static void
job_pm(struct pci_job *j, bool enable)
{
	json_t *args = json_pack("{s:s, s:b}", "bus_id", j->address, "enable", enable);

	snprintf(j->step, sizeof(j->step), "%s", enable ? "persistence-on" : "persistence-off");
	j->call = args ? j->st->ops->worker_call(j->st->core, "nvidia_pm", args, STEP_TIMEOUT_MS,
						 pm_done, j) : -ENOMEM;
	json_decref(args);
	if (j->call < 0) {
		int err = (int)j->call;

		j->call = 0;
		pm_done(j, err, NULL);
	}
}

static void
bind_done(void *arg, int result, const json_t *out)
{
	struct pci_job *j = arg;
	struct pci_state *st = j->st;
	const char *a = json_string_value(json_object_get(out, "address"));

	j->call = 0;
	if (result < 0) {
		job_fail(j, errno_code(result),
			 json_string_value(json_object_get(out, "error")) ?: strerror(-result));
		return;
	}
	if (j->cl == NULL && a && (j->cl = pci_claim_find(st, a)) == NULL &&
	    (j->cl = claim_add(st, a, NULL, false)) != NULL)
		records_save(st);	/* held in the engine without a record */
	if (j->cl)
		claim_set_members(j->cl, out);
	if (j->req)
		st->ops->reply(j->req, claim_result(st, j->cl, out));
	j->req = NULL;
	job_free(j);
}

static void
job_bind(struct pci_job *j)
{
	struct pci_state *st = j->st;
	char why[768];
	json_t *info;
	int64_t id;

	snprintf(j->step, sizeof(j->step), "bind");
	id = st->ops->vfio_group_bind(st->core, j->address, 0, bind_done, j);
	if (id > 0) {
		j->call = id;
		return;
	}
	snprintf(why, sizeof(why), "%s", st->ops->last_error(st->core));
	info = st->ops->vfio_group_info(st->core, j->address);
	if (id == -EPERM && info &&
	    strcmp(json_string_value(json_object_get(info, "state")) ?: "", "refused") == 0) {
		char more[1024];

		snprintf(more, sizeof(more), "%s (the claim of %s recorded in %s is refused; pci.release forgets it)",
			 why, json_string_value(json_object_get(info, "address")) ?: j->address,
			 STATE_FILE);
		snprintf(why, sizeof(why), "%s", more);
	}
	json_decref(info);
	job_fail(j, errno_code((int)id), why[0] ? why : strerror((int)-id));
}

static void gpu_poll(void *arg);

static void
format_holders(const json_t *holders, char *buf, size_t size)
{
	size_t i, len = 0;
	json_t *h;

	buf[0] = '\0';
	json_array_foreach(holders, i, h)
		len += (size_t)snprintf(buf + len, len < size ? size - len : 0, "%s%d (%s)",
					i ? ", " : "", (int)json_integer_value(json_object_get(h, "pid")),
					json_string_value(json_object_get(h, "comm")) ?: "?");
}

static void
gpu_holders_done(void *arg, int result, const json_t *out)
{
	struct pci_job *j = arg;
	struct pci_state *st = j->st;
	const json_t *holders = json_object_get(out, "holders");

	j->call = 0;
	if (result < 0) {
		char msg[256];

		snprintf(msg, sizeof(msg), "gpu-free: cannot look for users of /dev/nvidia*: %s",
			 strerror(-result));
		job_fail(j, HDD_ERR_FAILED, msg);
		return;
	}
	if (json_array_size(holders) == 0) {
		job_pm(j, false);
		return;
	}
	if (mono_ms() >= j->gpu_deadline) {
		char who[384], msg[512];

		format_holders(holders, who, sizeof(who));
		snprintf(msg, sizeof(msg), "gpu-free: still in use after %d s by PID %s",
			 j->gpu_wait_ms / 1000, who);
		job_fail(j, HDD_ERR_FAILED, msg);
		return;
	}
	j->timer = st->ops->timer_add(st->core, GPU_POLL_MS, gpu_poll, j);
	if (j->timer < 0) {
		j->timer = 0;
		job_fail(j, HDD_ERR_FAILED, "gpu-free: cannot arm a timer");
	}
}

/* Seed 002: nothing may hold the GPU's /dev/nvidia* when it leaves the
 * nvidia driver. Looked at every 200 ms until the deadline. */
static void
gpu_poll(void *arg)
{
	struct pci_job *j = arg;
	struct pci_state *st = j->st;
	const char *prefixes[2] = { NULL, NULL };
	char prefix[1024];

	j->timer = 0;
	if (st->ops->dev_path(st->core, GPU_DRIVER, prefix, sizeof(prefix)) < 0) {
		job_fail(j, HDD_ERR_FAILED, "gpu-free: the device root's path is too long");
		return;
	}
	prefixes[0] = prefix;
	j->call = st->ops->holders(st->core, NULL, prefixes, STEP_TIMEOUT_MS, gpu_holders_done, j);
	if (j->call < 0) {
		int err = (int)j->call;

		j->call = 0;
		gpu_holders_done(j, err, NULL);
	}
}

/* --- claim ------------------------------------------------------------------- */

struct group_walk {
	struct pci_state *st;
	const struct hdd_pci_facts *asked;
	bool gpu;
	char why[768];
};

static void
group_member_cb(const struct hdd_device_view *m, void *arg)
{
	struct group_walk *w = arg;
	const struct hdd_pci_facts *f = m->pci;
	const char *never = hdd_pci_never_claimable(f);
	bool self = strcmp(f->address, w->asked->address) == 0;
	char reason[512];

	w->gpu |= f->driver && strcmp(f->driver, GPU_DRIVER) == 0;
	if (w->why[0])
		return;
	if (never && !self && (f->class_code >> 16) == 0x06)
		return;		/* a bridge in the group: the engine decides if it stays */
	if (never) {
		snprintf(w->why, sizeof(w->why), "refused: %s %s%s%s", f->address, never,
			 self ? "" : "; it shares an IOMMU group with ", self ? "" : w->asked->address);
	} else if (w->st->ops->host_needs(w->st->core, f->address, reason, sizeof(reason)) == 1) {
		snprintf(w->why, sizeof(w->why), "refused: %s %s%s%s", f->address, reason,
			 self ? "" : "; it shares IOMMU group with ", self ? "" : w->asked->address);
	} else if (f->sriov_numvfs > 0) {
		snprintf(w->why, sizeof(w->why), "refused: %s is an SR-IOV physical function with %d VFs enabled; set sriov_numvfs to 0 first",
			 f->address, f->sriov_numvfs);
	}
}

struct find_walk {
	const char *address;
	struct hdd_pci_facts facts;
	bool found;
};

static void
find_cb(const struct hdd_device_view *dev, void *arg)
{
	struct find_walk *w = arg;

	if (!w->found && strcmp(dev->id, w->address) == 0) {
		w->facts = *dev->pci;
		w->found = true;
	}
}

/* The policy before the engine is asked: who may be claimed, and whether
 * the GPU hand-off comes first. 0, or 1 with why. */
static int
claim_check(struct pci_state *st, const char *address, bool *gpu, char *why, size_t whylen)
{
	struct find_walk f = { .address = address };
	struct group_walk w = { .st = st };
	const char *never;

	*gpu = false;
	st->ops->device_foreach(st->core, HDD_DEV_PCI, find_cb, &f);
	if (!f.found)
		return 0;	/* the engine says "no such PCI device" */
	never = hdd_pci_never_claimable(&f.facts);
	if (never) {
		snprintf(why, whylen, "refused: %s %s", address, never);
		return 1;
	}
	if (f.facts.iommu_group < 0)
		return 0;	/* the engine says how to turn the IOMMU on */
	w.asked = &f.facts;
	st->ops->iommu_group_foreach(st->core, f.facts.iommu_group, group_member_cb, &w);
	*gpu = w.gpu;
	if (w.why[0]) {
		snprintf(why, whylen, "%s", w.why);
		return 1;
	}
	return 0;
}

static void
claim_start(struct pci_state *st, const char *address, const char *resource_name,
	    bool from_config, struct hdd_request *req)
{
	struct pci_claim *cl = pci_claim_find(st, address);
	char owner[32] = "", why[768];
	struct pci_job *j;
	int err, held;
	bool gpu = false;

	if (cl && cl->job) {
		answer_error(st, req, address, HDD_ERR_BUSY, "%s: a %s is in progress (%s)", address,
			     cl->job->release ? "release" : "claim", cl->job->step);
		return;
	}
	j = calloc(1, sizeof(*j));
	if (j == NULL) {
		answer_error(st, req, address, HDD_ERR_FAILED, "out of memory");
		return;
	}
	j->st = st;
	j->req = req;
	snprintf(j->address, sizeof(j->address), "%s", address);
	held = st->ops->vfio_group_holder(st->core, address, owner, sizeof(owner), NULL);
	if (held != 0) {
		/* Held already (the engine answers with it, or says whose it
		 * is), or unknown (the engine says so). */
		j->cl = cl;
		if (cl)
			cl->job = j;
		job_bind(j);
		return;
	}
	if (cl) {
		/* A record of a group the engine let go meanwhile (a release
		 * it finished at start): this claim is a new one. */
		claim_remove(st, cl);
		cl = NULL;
	}
	st->ops->state_get(st->core, &err);
	if (err == 0 && claim_check(st, address, &gpu, why, sizeof(why))) {
		job_fail(j, HDD_ERR_REFUSED, why);
		return;
	}
	/* The record first (the engine's journal follows before any write);
	 * when the state cannot be written, the engine says why. */
	if (cl == NULL) {
		cl = claim_add(st, address, resource_name, from_config);
		if (cl == NULL) {
			job_fail(j, HDD_ERR_FAILED, "out of memory");
			return;
		}
		j->fresh = true;
		err = records_save(st);
		if (err < 0 && err != -EROFS) {
			snprintf(why, sizeof(why), "intent: cannot record the claim in %s: %s",
				 STATE_FILE, strerror(-err));
			j->cl = cl;
			job_fail(j, HDD_ERR_FAILED, why);
			return;
		}
	}
	j->cl = cl;
	cl->job = j;
	j->gpu = gpu;
	if (from_config)
		pcilog(st, HDD_LOG_INFO, "%s: claiming by configuration", address);
	if (!gpu) {
		job_bind(j);
		return;
	}
	snprintf(j->step, sizeof(j->step), "gpu-free");
	j->gpu_wait_ms = st->ops->config_ms(st->core, "claims.gpu_free_timeout");
	if (j->gpu_wait_ms < 0)
		j->gpu_wait_ms = 0;
	j->gpu_deadline = mono_ms() + j->gpu_wait_ms;
	gpu_poll(j);
}

static const char *const claim_params[] = { "address", "resource_name", NULL };

static int
m_claim(void *state, struct hdd_request *req, const json_t *params)
{
	struct pci_state *st = state;
	const json_t *a = json_object_get(params, "address");
	const json_t *r = json_object_get(params, "resource_name");
	char why[128];

	if (!json_is_string(a) || !address_valid(json_string_value(a)) ||
	    (r && !json_is_string(r))) {
		st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS,
				     "address: expected a PCI address such as 0000:3b:00.0%s",
				     r && !json_is_string(r) ? "; resource_name: expected a string" : "");
		return 0;
	}
	if (json_is_string(r) &&
	    st->ops->resource_name_check(json_string_value(r), why, sizeof(why)) < 0) {
		st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS, "resource_name: %s", why);
		return 0;
	}
	claim_start(st, json_string_value(a), json_string_value(r), false, req);
	return 0;
}

/* --- release ----------------------------------------------------------------- */

static void
unbind_done(void *arg, int result, const json_t *out)
{
	struct pci_job *j = arg;
	struct pci_state *st = j->st;
	struct pci_claim *cl;
	const char *a;

	j->call = 0;
	if (result < 0) {
		/* -EBUSY after the start: a process holds the group. */
		job_fail(j, result == -EBUSY ? HDD_ERR_REFUSED : errno_code(result),
			 json_string_value(json_object_get(out, "error")) ?: strerror(-result));
		return;
	}
	a = json_string_value(json_object_get(out, "address"));
	cl = a ? pci_claim_find(st, a) : j->cl;
	j->result = claim_result(st, cl, out);
	if (j->cl && j->cl->job == j)
		j->cl->job = NULL;
	if (cl) {
		if (cl == j->cl)
			j->cl = NULL;
		claim_remove(st, cl);
		records_save(st);
	}
	if (j->gpu && !json_is_true(json_object_get(out, "forgotten"))) {
		job_pm(j, true);	/* answers and frees j */
		return;
	}
	if (j->req)
		st->ops->reply(j->req, j->result);
	j->result = NULL;
	job_free(j);
}

static void
release_start(struct pci_state *st, const char *address, bool force, struct hdd_request *req)
{
	struct pci_claim *cl = pci_claim_find(st, address);
	json_t *info, *m;
	struct pci_job *j;
	size_t i;

	if (cl && cl->job) {
		answer_error(st, req, address, HDD_ERR_BUSY, "%s: a %s is in progress (%s)", address,
			     cl->job->release ? "release" : "claim", cl->job->step);
		return;
	}
	j = calloc(1, sizeof(*j));
	if (j == NULL) {
		st->ops->reply_error(req, HDD_ERR_FAILED, "out of memory");
		return;
	}
	j->st = st;
	j->req = req;
	j->release = true;
	j->force = force;
	snprintf(j->address, sizeof(j->address), "%s", address);
	snprintf(j->step, sizeof(j->step), "release");
	info = st->ops->vfio_group_info(st->core, address);
	json_array_foreach(json_object_get(info, "members"), i, m) {
		const char *orig = json_string_value(json_object_get(m, "original_driver"));

		j->gpu |= orig && strcmp(orig, GPU_DRIVER) == 0;
	}
	if (info && json_string_value(json_object_get(info, "address")))
		snprintf(j->address, sizeof(j->address), "%s",
			 json_string_value(json_object_get(info, "address")));
	json_decref(info);
	j->call = st->ops->vfio_group_unbind(st->core, address, force, 0, unbind_done, j);
	if (j->call < 0) {
		int err = (int)j->call;

		j->call = 0;
		job_fail(j, errno_code(err), st->ops->last_error(st->core)[0]
						     ? st->ops->last_error(st->core) : strerror(-err));
		return;
	}
	j->cl = cl;
	if (cl)
		cl->job = j;
}

static const char *const release_params[] = { "address", "force", NULL };

static int
m_release(void *state, struct hdd_request *req, const json_t *params)
{
	struct pci_state *st = state;
	const json_t *a = json_object_get(params, "address");
	const json_t *f = json_object_get(params, "force");

	if (!json_is_string(a) || !address_valid(json_string_value(a)) ||
	    (f && !json_is_boolean(f))) {
		st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS,
				     "address: expected a PCI address; force: expected true or false");
		return 0;
	}
	release_start(st, json_string_value(a), json_is_true(f), req);
	return 0;
}

const struct hdd_method pci_methods[] = {
	{ .name = "pci.claim", .params = claim_params, .mutating = true, .call = m_claim },
	{ .name = "pci.release", .params = release_params, .mutating = true, .call = m_release },
	{ .name = NULL },
};

/* --- the worker's side ------------------------------------------------------- */

int
pci_op_nvidia_pm(int sysfs_fd, const json_t *args, json_t *out)
{
	const char *bus = json_string_value(json_object_get(args, "bus_id"));
	const char *mode = json_is_true(json_object_get(args, "enable")) ? "1" : "0";
	int status;
	pid_t pid;

	(void)sysfs_fd;
	if (bus == NULL || !address_valid(bus))
		return -EINVAL;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		execlp("nvidia-smi", "nvidia-smi", "-i", bus, "-pm", mode, (char *)NULL);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	json_object_set_new(out, "exit", json_integer(WIFEXITED(status) ? WEXITSTATUS(status) : -1));
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
		return -ENOENT;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

const struct hdd_worker_op pci_worker_ops[] = {
	{ .name = "nvidia_pm", .run = pci_op_nvidia_pm },
	{ .name = NULL },
};

/* --- start, hotplug, stop ---------------------------------------------------- */

struct rule_walk {
	char (*v)[PCI_ADDR_MAX];
	size_t n, size;
};

static void
count_cb(const struct hdd_device_view *dev, void *arg)
{
	(void)dev;
	(void)arg;
}

static void
rule_cb(const struct hdd_device_view *dev, void *arg)
{
	struct rule_walk *w = arg;

	if (dev->pci->is_bridge || w->n >= w->size)
		return;
	snprintf(w->v[w->n++], PCI_ADDR_MAX, "%s", dev->id);
}

/* The configuration's `resources` rules with "claim": true, for one device
 * or (address NULL) every one not held yet. */
static void
apply_config_rules(struct pci_state *st, const char *address)
{
	struct rule_walk w = { 0 };
	int err;

	st->ops->state_get(st->core, &err);
	if (err < 0)
		return;		/* failing closed: nothing new is claimed */
	if (address) {
		w.v = calloc(1, sizeof(*w.v));
		if (w.v)
			snprintf(w.v[w.n++], PCI_ADDR_MAX, "%s", address);
	} else {
		w.size = (size_t)st->ops->device_foreach(st->core, HDD_DEV_PCI, count_cb, NULL);
		w.v = calloc(w.size + 1, sizeof(*w.v));
		if (w.v)
			st->ops->device_foreach(st->core, HDD_DEV_PCI, rule_cb, &w);
	}
	for (size_t i = 0; w.v && i < w.n; i++) {
		char name[256];
		bool claim = false;

		if (pci_claim_find(st, w.v[i]) ||
		    st->ops->vfio_group_holder(st->core, w.v[i], NULL, 0, NULL) != 0)
			continue;
		if (st->ops->resource_rule(st->core, w.v[i], name, sizeof(name), &claim) == 1 && claim)
			claim_start(st, w.v[i], name[0] ? name : NULL, true, NULL);
	}
	free(w.v);
}

int
pci_claims_start(struct pci_state *st)
{
	int err;
	const json_t *section = st->ops->state_get(st->core, &err);
	bool legacy = section && records_load(st, section);
	bool changed = legacy || json_object_get(section, "legacy_claims") != NULL;
	json_t *views = st->ops->vfio_group_list(st->core), *v;
	size_t i;

	st->started = true;
	if (err < 0) {
		json_decref(views);
		return 0;	/* failing closed: the records stay as they are */
	}
	/* What the engine holds is the truth; a record of a group it does not
	 * hold (a claim that never finished) goes. */
	for (size_t k = 0; k < st->n;) {
		bool held = false;

		json_array_foreach(views, i, v)
			held |= strcmp(json_string_value(json_object_get(v, "address")) ?: "",
				       st->v[k]->address) == 0;
		if (held) {
			k++;
			continue;
		}
		claim_remove(st, st->v[k]);
		changed = true;
	}
	json_array_foreach(views, i, v) {
		const char *a = json_string_value(json_object_get(v, "address"));
		struct pci_claim *cl = a ? pci_claim_find(st, a) : NULL;

		if (cl == NULL && a && (cl = claim_add(st, a, NULL, false)) != NULL)
			changed = true;
		if (cl)
			claim_set_members(cl, v);
	}
	json_decref(views);
	if (changed && records_save(st) < 0)
		pcilog(st, HDD_LOG_WARN, "cannot write its records to %s", STATE_FILE);
	apply_config_rules(st, NULL);
	return 0;
}

void
pci_claims_device_event(struct pci_state *st, enum hdd_device_event ev,
			const struct hdd_device_view *dev)
{
	if (!st->started || ev == HDD_DEVICE_REMOVE || dev->cls != HDD_DEV_PCI ||
	    dev->pci->is_bridge)
		return;
	apply_config_rules(st, dev->id);
}

/* SIGTERM: calls in flight complete with -ECANCELED after this; a job
 * waiting on its poll timer is answered and freed here. */
void
pci_claims_stop(struct pci_state *st)
{
	for (size_t i = 0; i < st->n; i++) {
		struct pci_job *j = st->v[i]->job;

		if (j == NULL)
			continue;
		j->stopping = true;
		if (j->timer > 0) {
			st->ops->timer_cancel(st->core, j->timer);
			j->timer = 0;
			if (j->call == 0) {
				j->fresh = false;	/* the record stays for the next start */
				job_fail(j, HDD_ERR_FAILED, "the daemon is stopping");
			}
		}
	}
}

void
pci_claims_free(struct pci_state *st)
{
	for (size_t i = 0; i < st->n; i++) {
		if (st->v[i]->job) {
			st->v[i]->job->cl = NULL;
			job_free(st->v[i]->job);
		}
		claim_free(st->v[i]);
	}
	free(st->v);
	st->v = NULL;
	st->n = 0;
}
