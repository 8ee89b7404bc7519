/* SPDX-License-Identifier: MIT */
/* The pci module's claim steps against a fake core: a hand-written
 * hdd_core_ops table, no daemon, no libevent. The fake engine records each
 * vfio_group_bind/unbind and the test completes it as it likes. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hostdevd/module.h"
#include "tap.h"

extern const struct hdd_module hostdevd_module;
#define M (&hostdevd_module)

/* --- the fake host ----------------------------------------------------------- */

#define NDEV 4
static struct hdd_pci_facts devs[NDEV];
static char drivers[NDEV][32];
static const char *protected_addr;	/* host_needs says 1 for it */

static void
host_reset(void)
{
	static const char *const addrs[NDEV] = { "0000:01:00.0", "0000:01:00.1", "0000:02:00.0",
						  "0000:03:00.0" };
	static const int groups[NDEV] = { 10, 10, 11, 12 };
	static const char *const drv[NDEV] = { "ixgbe", "ixgbe", "e1000e", "nvidia" };

	memset(devs, 0, sizeof(devs));
	for (int i = 0; i < NDEV; i++) {
		snprintf(devs[i].address, sizeof(devs[i].address), "%s", addrs[i]);
		snprintf(drivers[i], sizeof(drivers[i]), "%s", drv[i]);
		devs[i].driver = drivers[i];
		devs[i].iommu_group = groups[i];
		devs[i].class_code = 0x020000;
		devs[i].vendor_id = 0x8086;
		devs[i].device_id = 0x10fb;
		devs[i].sriov_numvfs = -1;
		devs[i].numa_node = -1;
	}
	protected_addr = NULL;
}

static void
view_of(int i, struct hdd_device_view *v)
{
	memset(v, 0, sizeof(*v));
	v->cls = HDD_DEV_PCI;
	v->id = devs[i].address;
	v->pci = &devs[i];
}

static int
dev_index(const char *address)
{
	for (int i = 0; i < NDEV; i++)
		if (strcmp(devs[i].address, address) == 0)
			return i;
	return -1;
}

/* --- the fake engine --------------------------------------------------------- */

struct held {
	char address[16];
	int group;
	bool refused;
	char owner[16];		/* "" : this module */
} held[8];
static size_t nheld;

struct pending {
	bool release;
	char address[16];
	hdd_worker_done_fn done;
	void *arg;
	int64_t id;
} pend;
static int binds, unbinds, seq, bind_seq, put_seq, nputs;
static int bind_refuse;			/* vfio_group_bind returns it when set */
static char last_err[256];

static struct held *
held_find(const char *address)
{
	int i = dev_index(address);

	for (size_t k = 0; k < nheld; k++)
		if (strcmp(held[k].address, address) == 0 ||
		    (i >= 0 && held[k].group == devs[i].iommu_group))
			return &held[k];
	return NULL;
}

static json_t *
group_view(const struct held *h)
{
	json_t *members = json_array();

	for (int i = 0; i < NDEV; i++)
		if (devs[i].iommu_group == h->group)
			json_array_append_new(members, json_pack("{s:s, s:s, s:s, s:b, s:b}", "address",
								 devs[i].address, "original_driver",
								 "ixgbe", "driver", devs[i].driver,
								 "bridge", 0, "present", 1));
	return json_pack("{s:s, s:i, s:i, s:s, s:s, s:s, s:o}", "address", h->address, "iommu_group",
			 h->group, "group", h->group, "owner", "pci", "state",
			 h->refused ? "refused" : "claimed", "step", "claimed", "members", members);
}

static int64_t
f_bind(struct hdd_core *core, const char *address, int timeout_ms, hdd_worker_done_fn done,
       void *arg)
{
	binds++;
	bind_seq = ++seq;
	if (bind_refuse) {
		snprintf(last_err, sizeof(last_err), "engine says no");
		return bind_refuse;
	}
	memset(&pend, 0, sizeof(pend));
	snprintf(pend.address, sizeof(pend.address), "%s", address);
	pend.done = done;
	pend.arg = arg;
	pend.id = 100 + binds;
	return pend.id;
}

static int64_t
f_unbind(struct hdd_core *core, const char *address, bool force, int timeout_ms,
	 hdd_worker_done_fn done, void *arg)
{
	unbinds++;
	if (held_find(address) == NULL) {
		snprintf(last_err, sizeof(last_err), "%s is not claimed", address);
		return -ENOENT;
	}
	memset(&pend, 0, sizeof(pend));
	pend.release = true;
	snprintf(pend.address, sizeof(pend.address), "%s", address);
	pend.done = done;
	pend.arg = arg;
	pend.id = 200 + unbinds;
	return pend.id;
}

/* The engine finishes the pending move: 0 (the group moves) or -errno. */
static void
engine_complete(int result, const char *error)
{
	struct pending p = pend;
	json_t *out;

	memset(&pend, 0, sizeof(pend));
	if (p.done == NULL)
		return;
	if (result < 0) {
		out = json_pack("{s:s}", "error", error);
	} else if (!p.release && held_find(p.address)) {
		out = group_view(held_find(p.address));	/* held already: the same */
	} else if (!p.release) {
		struct held *h = &held[nheld++];

		snprintf(h->address, sizeof(h->address), "%s", p.address);
		h->group = devs[dev_index(p.address)].iommu_group;
		h->refused = false;
		for (int i = 0; i < NDEV; i++)
			if (devs[i].iommu_group == h->group)
				snprintf(drivers[i], sizeof(drivers[i]), "vfio-pci");
		out = group_view(h);
	} else {
		struct held *h = held_find(p.address);

		out = group_view(h);
		json_object_set_new(out, "state", json_string("released"));
		for (int i = 0; i < NDEV; i++)
			if (devs[i].iommu_group == h->group)
				snprintf(drivers[i], sizeof(drivers[i]), "ixgbe");
		*h = held[--nheld];
	}
	p.done(p.arg, result, out);
	json_decref(out);
}

static int
f_holder(struct hdd_core *core, const char *address, char *owner, size_t size, bool *allocated)
{
	struct held *h = held_find(address);

	if (allocated)
		*allocated = false;
	if (h && owner && size)
		snprintf(owner, size, "%s", h->owner[0] ? h->owner : "pci");
	return h ? 1 : dev_index(address) < 0 ? -ENOENT : 0;
}

static json_t *
f_info(struct hdd_core *core, const char *address)
{
	struct held *h = held_find(address);

	return h ? group_view(h) : NULL;
}

static json_t *
f_list(struct hdd_core *core)
{
	json_t *a = json_array();

	for (size_t k = 0; k < nheld; k++)
		json_array_append_new(a, group_view(&held[k]));
	return a;
}

static const char *
f_last_error(struct hdd_core *core)
{
	return last_err;
}

/* --- the rest of the core ---------------------------------------------------- */

static json_t *section;
static struct {
	int code;
	char message[768];
	json_t *result;
	int n;
} answer;
struct hdd_request {
	int unused;
};
static struct hdd_request request;

static void
f_log(struct hdd_core *core, enum hdd_log_level level, const char *module, const char *fmt, ...)
{
	va_list ap;

	printf("# [%s] ", module);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

static int
f_device_foreach(struct hdd_core *core, enum hdd_dev_class cls,
		 void (*fn)(const struct hdd_device_view *dev, void *arg), void *arg)
{
	struct hdd_device_view v;

	for (int i = 0; i < NDEV; i++) {
		view_of(i, &v);
		fn(&v, arg);
	}
	return NDEV;
}

static int
f_group_foreach(struct hdd_core *core, int group,
		void (*fn)(const struct hdd_device_view *dev, void *arg), void *arg)
{
	struct hdd_device_view v;
	int n = 0;

	for (int i = 0; i < NDEV; i++)
		if (devs[i].iommu_group == group) {
			view_of(i, &v);
			fn(&v, arg);
			n++;
		}
	return n;
}

static int
f_host_needs(struct hdd_core *core, const char *id, char *why, size_t whylen)
{
	if (protected_addr && strcmp(id, protected_addr) == 0) {
		snprintf(why, whylen, "backs the mounted filesystem /");
		return 1;
	}
	return dev_index(id) < 0 ? -ENOENT : 0;
}

static const json_t *
f_state_get(struct hdd_core *core, int *err)
{
	if (err)
		*err = 0;
	return section;
}

static int
f_state_put(struct hdd_core *core, const json_t *s)
{
	nputs++;
	put_seq = ++seq;
	json_decref(section);
	section = s ? json_deep_copy(s) : NULL;
	return 0;
}

static void
f_reply(struct hdd_request *req, json_t *result)
{
	answer.n++;
	answer.code = 0;
	json_decref(answer.result);
	answer.result = result;
}

static void
f_reply_error(struct hdd_request *req, int code, const char *fmt, ...)
{
	va_list ap;

	answer.n++;
	answer.code = code;
	va_start(ap, fmt);
	vsnprintf(answer.message, sizeof(answer.message), fmt, ap);
	va_end(ap);
}

/* The worker: one call recorded, completed by the test. */
static struct {
	char op[32];
	json_t *args;
	hdd_worker_done_fn done;
	void *arg;
} work;
static int64_t
f_worker_call(struct hdd_core *core, const char *op, const json_t *args, int timeout_ms,
	      hdd_worker_done_fn done, void *arg)
{
	snprintf(work.op, sizeof(work.op), "%s", op);
	json_decref(work.args);
	work.args = json_deep_copy(args);
	work.done = done;
	work.arg = arg;
	return 300;
}

static int64_t
f_holders(struct hdd_core *core, const char *const *paths, const char *const *prefixes,
	  int timeout_ms, hdd_worker_done_fn done, void *arg)
{
	snprintf(work.op, sizeof(work.op), "holders:%s", prefixes && prefixes[0] ? prefixes[0] : "");
	work.done = done;
	work.arg = arg;
	return 301;
}

static void
worker_complete(int result, json_t *out)
{
	hdd_worker_done_fn done = work.done;

	work.done = NULL;
	work.op[0] = '\0';
	if (done)
		done(work.arg, result, out);
	json_decref(out);
}

static int
f_dev_path(struct hdd_core *core, const char *rel, char *buf, size_t size)
{
	snprintf(buf, size, "/dev/%s", rel);
	return 0;
}

static int
f_config_ms(struct hdd_core *core, const char *key)
{
	return 0;	/* gpu-free: look once */
}

static int
f_resource_rule(struct hdd_core *core, const char *id, char *name, size_t size, bool *claim)
{
	return 0;
}

static int
f_name_check(const char *name, char *why, size_t whylen)
{
	if (strchr(name, '/') == NULL) {
		if (why)
			snprintf(why, whylen, "must be <domain>/<name>");
		return -EINVAL;
	}
	return 0;
}

static int
f_resource_name(struct hdd_core *core, const struct hdd_pci_facts *f, char *buf, size_t size)
{
	snprintf(buf, size, "intel.com/DEFAULT");
	return 0;
}

static bool
f_dev_exists(struct hdd_core *core, const char *rel)
{
	return true;
}

static int64_t
f_timer_add(struct hdd_core *core, int ms, void (*fn)(void *arg), void *arg)
{
	return -ENOSYS;		/* never reached: gpu-free gives up at once here */
}

static void
f_timer_cancel(struct hdd_core *core, int64_t id)
{
}

static const struct hdd_core_ops ops = {
	.size = sizeof(struct hdd_core_ops),
	.log = f_log,
	.iommu_group_foreach = f_group_foreach,
	.dev_exists = f_dev_exists,
	.pci_resource_name = f_resource_name,
	.device_foreach = f_device_foreach,
	.host_needs = f_host_needs,
	.worker_call = f_worker_call,
	.timer_add = f_timer_add,
	.timer_cancel = f_timer_cancel,
	.state_get = f_state_get,
	.state_put = f_state_put,
	.reply = f_reply,
	.reply_error = f_reply_error,
	.dev_path = f_dev_path,
	.holders = f_holders,
	.vfio_group_bind = f_bind,
	.vfio_group_unbind = f_unbind,
	.vfio_group_holder = f_holder,
	.vfio_group_info = f_info,
	.vfio_group_list = f_list,
	.last_error = f_last_error,
	.resource_rule = f_resource_rule,
	.config_ms = f_config_ms,
	.resource_name_check = f_name_check,
};

/* --- helpers ----------------------------------------------------------------- */

static void *
fresh(void)
{
	void *st = NULL;

	host_reset();
	nheld = 0;
	memset(&pend, 0, sizeof(pend));
	json_decref(answer.result);
	memset(&answer, 0, sizeof(answer));
	binds = unbinds = nputs = seq = bind_seq = put_seq = bind_refuse = 0;
	json_decref(section);
	section = NULL;
	if (M->init(&ops, (struct hdd_core *)&ops, NULL, &st) != 0 || M->start(st) != 0)
		return NULL;
	return st;
}

static const struct hdd_method *
method(const char *name)
{
	for (const struct hdd_method *m = M->methods; m && m->name; m++)
		if (strcmp(m->name, name) == 0)
			return m;
	return NULL;
}

static void
call(void *st, const char *name, json_t *params)
{
	method(name)->call(st, &request, params);
	json_decref(params);
}

static size_t
recorded_claims(void)
{
	return json_array_size(json_object_get(section, "claims"));
}

/* --- the tests --------------------------------------------------------------- */

static void
test_claim_and_release(void)
{
	void *st = fresh();
	struct hdd_device_view v;
	char name[256];
	bool healthy = false;
	json_t *list, *rec;

	ok(st != NULL, "init and start with no state");
	call(st, "pci.claim", json_pack("{s:s, s:s}", "address", "0000:01:00.1", "resource_name",
					"example.com/nic"));
	is_int(binds, 1, "pci.claim asks the engine to bind the group");
	is_str(pend.address, "0000:01:00.1", "for the address asked");
	is_int(answer.n, 0, "and answers only when the move is done");
	rec = json_array_get(json_object_get(section, "claims"), 0);
	ok(put_seq > 0 && put_seq < bind_seq, "its record is written before the engine moves anything");
	is_str(json_string_value(json_object_get(rec, "resource_name")), "example.com/nic",
	       "the record keeps the resource name");
	engine_complete(0, NULL);
	is_int(answer.n, 1, "answered once the group moved");
	is_int(answer.code, 0, "with a result");
	is_str(json_string_value(json_object_get(answer.result, "state")), "claimed", "claimed");
	is_str(json_string_value(json_object_get(answer.result, "resource_name")), "example.com/nic",
	       "under its own resource name");
	ok(json_object_get(json_array_get(json_object_get(answer.result, "members"), 0), "driver") == NULL,
	   "members as the record reads (no driver now)");
	is_int(json_array_size(json_object_get(answer.result, "members")), 2, "the whole group");

	/* The other member of the group goes under the claim's name, final. */
	view_of(0, &v);
	is_int(M->advertise(st, &v, name, sizeof(name), &healthy), 2,
	       "a member of a claim with a name: the name is final");
	is_str(name, "example.com/nic", "the claim's name");
	list = json_array();
	M->list_held(st, list);
	is_int(json_array_size(list), 1, "claims.list's part: one claim");
	is_str(json_string_value(json_object_get(json_array_get(list, 0), "resource_name")),
	       "example.com/nic", "listed with its resource name");
	json_decref(list);

	/* Claiming again (another member) answers with the same claim. */
	call(st, "pci.claim", json_pack("{s:s}", "address", "0000:01:00.0"));
	is_int(binds, 2, "a second claim goes to the engine, which holds it already");
	engine_complete(0, NULL);
	is_int(recorded_claims(), 1, "and adds no record");

	call(st, "pci.release", json_pack("{s:s}", "address", "0000:01:00.0"));
	is_int(unbinds, 1, "pci.release asks the engine to unbind");
	engine_complete(0, NULL);
	is_str(json_string_value(json_object_get(answer.result, "state")), "released", "released");
	is_int(recorded_claims(), 0, "the record is gone");
	view_of(0, &v);
	is_int(M->advertise(st, &v, name, sizeof(name), &healthy), 0,
	       "back on its driver: not offered");

	call(st, "pci.release", json_pack("{s:s}", "address", "0000:01:00.0"));
	is_int(answer.code, HDD_ERR_NOT_FOUND, "releasing what is not claimed: not found");
	ok(strstr(answer.message, "is not claimed") != NULL, "saying so: %s", answer.message);
	M->fini(st);
}

static void
test_failed_bind_rolls_back(void)
{
	void *st = fresh();

	call(st, "pci.claim", json_pack("{s:s, s:s}", "address", "0000:02:00.0", "resource_name",
					"example.com/x"));
	is_int(recorded_claims(), 1, "intent recorded");
	engine_complete(-EIO, "verify: 0000:02:00.0 is on e1000e, not vfio-pci");
	is_int(answer.code, HDD_ERR_FAILED, "a failed move fails the claim");
	ok(strstr(answer.message, "verify: 0000:02:00.0") != NULL, "with the engine's reason: %s",
	   answer.message);
	is_int(recorded_claims(), 0, "the record is dropped again (the engine rolled the group back)");
	is_str(drivers[2], "e1000e", "nothing moved");

	/* A synchronous refusal of the engine (failing closed): its words. */
	bind_refuse = -EROFS;
	call(st, "pci.claim", json_pack("{s:s}", "address", "0000:02:00.0"));
	is_int(answer.code, HDD_ERR_REFUSED, "the engine refusing: refused");
	is_str(answer.message, "engine says no", "with the engine's reason");
	is_int(recorded_claims(), 0, "no record left behind");
	M->fini(st);
}

static void
test_refused_by_host_needs(void)
{
	void *st = fresh();

	protected_addr = "0000:01:00.0";
	call(st, "pci.claim", json_pack("{s:s}", "address", "0000:01:00.1"));
	is_int(answer.code, HDD_ERR_REFUSED, "a group the host needs a member of is refused");
	ok(strstr(answer.message, "0000:01:00.0 backs the mounted filesystem /") &&
	   strstr(answer.message, "shares IOMMU group with 0000:01:00.1"), "naming it: %s",
	   answer.message);
	is_int(binds, 0, "before the engine is asked");
	is_int(nputs, 0, "and before anything is recorded");

	devs[2].class_code = 0x060400;
	call(st, "pci.claim", json_pack("{s:s}", "address", "0000:02:00.0"));
	ok(strstr(answer.message, "0000:02:00.0 is a bridge") != NULL, "a bridge never: %s",
	   answer.message);
	call(st, "pci.claim", json_pack("{s:s, s:s}", "address", "0000:03:00.0", "resource_name",
					"no-slash"));
	is_int(answer.code, HDD_ERR_INVALID_PARAMS, "a bad resource name is a bad parameter");
	call(st, "pci.claim", json_pack("{s:s}", "address", "3b:00.0"));
	is_int(answer.code, HDD_ERR_INVALID_PARAMS, "so is a bad address");
	is_int(binds, 0, "none reached the engine");
	M->fini(st);
}

static void
test_gpu_hand_off(void)
{
	void *st = fresh();

	call(st, "pci.claim", json_pack("{s:s}", "address", "0000:03:00.0"));
	is_str(work.op, "holders:/dev/nvidia", "a GPU: who holds /dev/nvidia* first");
	is_int(binds, 0, "before the engine is asked");
	worker_complete(0, json_pack("{s:[{s:i, s:s}]}", "holders", "pid", 42, "comm", "python3"));
	is_int(answer.code, HDD_ERR_FAILED, "still held at the deadline: failed");
	ok(strstr(answer.message, "gpu-free: still in use after 0 s by PID 42 (python3)") != NULL,
	   "naming the holder: %s", answer.message);
	is_int(recorded_claims(), 0, "no record left");

	call(st, "pci.claim", json_pack("{s:s}", "address", "0000:03:00.0"));
	worker_complete(0, json_pack("{s:[]}", "holders"));
	is_str(work.op, "nvidia_pm", "free: persistence mode off (a worker op of the module)");
	ok(json_is_false(json_object_get(work.args, "enable")), "off");
	worker_complete(-ENOENT, NULL);
	is_int(binds, 1, "then the engine binds (a missing nvidia-smi is no failure)");
	engine_complete(-EIO, "verify: failed");
	is_str(work.op, "nvidia_pm", "a failed claim turns persistence mode on again");
	ok(json_is_true(json_object_get(work.args, "enable")), "on");
	worker_complete(0, NULL);
	is_int(answer.code, HDD_ERR_FAILED, "and fails");
	M->fini(st);
}

static void
test_drift_and_restart(void)
{
	void *st = fresh();
	struct hdd_device_view v;
	char name[256];
	bool healthy = false;

	call(st, "pci.claim", json_pack("{s:s}", "address", "0000:02:00.0"));
	engine_complete(0, NULL);
	/* Drift: the function is back on its host driver while the engine
	 * still holds its group (and binds it again). It stays in its
	 * resource (the core marks it Unhealthy), not withdrawn. */
	snprintf(drivers[2], sizeof(drivers[2]), "e1000e");
	view_of(2, &v);
	is_int(M->advertise(st, &v, name, sizeof(name), &healthy), 1,
	       "a drifted member of a claim is still offered");
	is_str(name, "intel.com/DEFAULT", "under the default name (no claim name)");
	M->fini(st);

	/* A restart: the section from an older daemon (legacy_claims), and
	 * the engine holding one of them and not the other. */
	json_decref(section);
	section = json_pack("{s:[{s:s, s:s, s:b}, {s:s, s:n, s:b}]}", "legacy_claims",
			    "address", "0000:02:00.0", "resource_name", "example.com/old",
			    "from_config", 1, "address", "0000:01:00.0", "resource_name",
			    "from_config", 0);
	nputs = 0;
	st = NULL;
	ok(M->init(&ops, (struct hdd_core *)&ops, NULL, &st) == 0 && M->start(st) == 0,
	   "start with records carried over from before owners");
	is_int(nputs, 1, "folded into the module's records and written");
	ok(json_object_get(section, "legacy_claims") == NULL, "without the legacy list");
	is_int(recorded_claims(), 1, "a record of a group the engine does not hold is dropped");
	view_of(2, &v);
	is_int(M->advertise(st, &v, name, sizeof(name), &healthy), 2, "the carried name is final");
	is_str(name, "example.com/old", "the old claim's name");
	M->fini(st);
}

/* A function on vfio-pci whose group the engine holds for another module
 * (sriov's VFs) is that module's to offer: never under this one's name too. */
static void
test_held_for_another_module(void)
{
	void *st = fresh();
	struct hdd_device_view v;
	char name[256];
	bool healthy = false;

	snprintf(drivers[2], sizeof(drivers[2]), "vfio-pci");
	view_of(2, &v);
	is_int(M->advertise(st, &v, name, sizeof(name), &healthy), 1,
	       "a function on vfio-pci nobody holds is offered");
	held[nheld] = (struct held){ .group = 2 };
	snprintf(held[nheld].address, sizeof(held[nheld].address), "%s", v.id);
	snprintf(held[nheld].owner, sizeof(held[nheld].owner), "sriov");
	nheld++;
	is_int(M->advertise(st, &v, name, sizeof(name), &healthy), 0,
	       "held for the sriov module: not offered by pci");
	nheld--;
	M->fini(st);
}

int
main(void)
{
	test_claim_and_release();
	test_failed_bind_rolls_back();
	test_refused_by_host_needs();
	test_gpu_hand_off();
	test_drift_and_restart();
	test_held_for_another_module();
	json_decref(section);
	json_decref(answer.result);
	json_decref(work.args);
	return tap_done();
}
