/* SPDX-License-Identifier: MIT */
/* Module ABI v2: the loader's version, size and method checks, dispatch, and
 * the demo test module driven through a fake core (no daemon, no libevent). */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "log.h"
#include "modhost.h"
#include "module.h"
#include "tap.h"

extern const struct hdd_module hostdevd_module;	/* test/modules/demo.c */

/* --- a fake core ------------------------------------------------------------- */

static json_t *fake_section;		/* the module's state section */
static json_t *fake_answer;		/* the last reply or error */
static char fake_resource[128];
static size_t fake_members;
static char fake_first_id[HDD_ID_MAX + 1];

static const json_t *
fake_state_get(struct hdd_core *core, int *err)
{
	if (err)
		*err = 0;
	return fake_section;
}

static int
fake_state_put(struct hdd_core *core, const json_t *section)
{
	json_decref(fake_section);
	fake_section = section ? json_deep_copy(section) : NULL;
	return 0;
}

static int
fake_resource_set(struct hdd_core *core, const char *resource,
		  const struct hdd_resource_member *m, size_t n)
{
	snprintf(fake_resource, sizeof(fake_resource), "%s", resource);
	fake_members = n;
	snprintf(fake_first_id, sizeof(fake_first_id), "%s", n ? m[0].id : "");
	return 0;
}

static void
fake_reply(struct hdd_request *req, json_t *result)
{
	json_decref(fake_answer);
	fake_answer = json_pack("{s:o}", "result", result);
}

static void fake_reply_error(struct hdd_request *req, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
fake_reply_error(struct hdd_request *req, int code, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_decref(fake_answer);
	fake_answer = json_pack("{s:i, s:s}", "code", code, "message", msg);
}

static void
fake_emit(struct hdd_core *core, const char *event, json_t *params)
{
	json_decref(params);
}

static bool
fake_rebooted(struct hdd_core *core)
{
	return true;
}

static const struct hdd_core_ops fake_ops = {
	.size = sizeof(struct hdd_core_ops),
	.state_get = fake_state_get,
	.state_put = fake_state_put,
	.resource_set = fake_resource_set,
	.reply = fake_reply,
	.reply_error = fake_reply_error,
	.emit = fake_emit,
	.rebooted = fake_rebooted,
};

static const struct hdd_method *
method(const char *name)
{
	for (const struct hdd_method *m = hostdevd_module.methods; m->name; m++)
		if (strcmp(m->name, name) == 0)
			return m;
	return NULL;
}

static void
call(void *state, const char *name, const char *params)
{
	json_t *p = params ? json_loads(params, 0, NULL) : NULL;

	method(name)->call(state, NULL, p);
	json_decref(p);
}

static void
test_demo_with_fake_core(void)
{
	const struct hdd_module *d = &hostdevd_module;
	json_t *cfg = json_pack("{s:s}", "resource", "example.com/x");
	json_t *bad = json_pack("{s:i}", "colour", 1);
	char why[128] = "";
	void *state = NULL;
	json_t *want;

	is_int(d->config_check(bad, why, sizeof(why)), -EINVAL, "an unknown key is refused");
	is_str(why, "demo.colour: unknown key", "the reason names the key");
	is_int(d->config_check(cfg, why, sizeof(why)), 0, "a good section passes");
	is_int(d->init(&fake_ops, (struct hdd_core *)&fake_ops, cfg, &state), 0, "init");

	call(state, "demo.members", "{\"ids\": [\"MIG-1\", \"MIG-2\"]}");
	is_str(fake_resource, "example.com/x", "members go to the configured resource");
	is_int(fake_members, 2, "two members that are not inventory devices");
	want = json_pack("[s,s]", "MIG-1", "MIG-2");
	ok(json_equal(json_object_get(fake_section, "members"), want),
	   "the members are journalled in the state section");
	json_decref(want);
	call(state, "demo.put", "{\"value\": 5}");
	is_int(json_integer_value(json_object_get(fake_section, "value")), 5, "put keeps a value");
	is_int(json_array_size(json_object_get(fake_section, "members")), 2, "and the members");

	/* A restart: a new instance finds its section and re-applies it. */
	d->fini(state);
	fake_members = 0;
	is_int(d->init(&fake_ops, (struct hdd_core *)&fake_ops, cfg, &state), 0, "init again");
	is_int(d->start(state), 0, "start");
	is_int(fake_members, 2, "start re-applied the recorded members");
	is_str(fake_first_id, "MIG-1", "in their order");
	call(state, "demo.get", NULL);
	is_int(json_integer_value(json_object_get(json_object_get(fake_answer, "result"), "value")), 5,
	       "get answers the saved value");
	ok(json_is_true(json_object_get(json_object_get(fake_answer, "result"), "rebooted")),
	   "and what the core says of the boot");
	call(state, "demo.members", "{\"ids\": [\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"]}");
	is_int(json_integer_value(json_object_get(fake_answer, "code")), HDD_ERR_INVALID_PARAMS,
	       "an id of 65 characters is refused");
	d->fini(state);
	json_decref(cfg);
	json_decref(bad);
	json_decref(fake_section);
	json_decref(fake_answer);
}

/* --- the loader ------------------------------------------------------------------ */

static int starts, uevents;

static int
m_start(void *state)
{
	starts++;
	return 0;
}

static void
m_uevent(void *state, const char *action, const char *subsystem, const char *sysname,
	 const char *devpath)
{
	uevents++;
}

static int
m_call(void *state, struct hdd_request *req, const json_t *params)
{
	return 0;
}

static const char *const none[] = { NULL };
static const char *const net[] = { "net", "pci", NULL };
static const struct hdd_method good_methods[] = {
	{ .name = "old.verb", .params = none, .call = m_call },
	{ .name = NULL },
};
static const struct hdd_method bad_methods[] = {
	{ .name = "other.verb", .params = none, .call = m_call },
	{ .name = NULL },
};
static const struct hdd_method core_methods[] = {
	{ .name = "claims.list", .params = none, .call = m_call },
	{ .name = NULL },
};

static void
test_loader(void)
{
	struct config *cfg = config_defaults();
	struct module_set *set = NULL;
	struct module *m;
	const char **subs;
	struct hdd_module old = {
		HDD_MODULE_HEADER, .name = "old", .subsystems = net, .methods = good_methods,
		.start = m_start, .uevent = m_uevent,
	};
	struct hdd_module v1 = { .abi_major = 1, .name = "v1" };
	struct hdd_module v3 = { HDD_MODULE_HEADER, .name = "v3" };
	struct hdd_module wrong = { HDD_MODULE_HEADER, .name = "wrong", .methods = bad_methods };
	struct hdd_module newer = { HDD_MODULE_HEADER, .name = "newer" };
	struct hdd_module shadow = { HDD_MODULE_HEADER, .name = "claims", .methods = core_methods };
	unsigned char big[sizeof(struct hdd_module) + 64];

	v3.abi_major = 3;
	/* An older minor: its descriptor ends before start and everything after. */
	old.size = (uint32_t)offsetof(struct hdd_module, start);
	is_int(modules_load_dir("/nonexistent", cfg, &modhost_ops, NULL, &set), 0, "an empty set");
	is_int(modules_add_builtin(set, &old, &modhost_ops, NULL), 0,
	       "a descriptor of an older minor (shorter) loads");
	m = modules_find(set, "old");
	ok(m && m->desc->start == NULL && m->desc->uevent == NULL,
	   "fields past its size read as NULL, whatever follows in memory");
	modules_start(set);
	is_int(starts, 0, "so its start hook is not called");
	is_int(modules_uevent(set, "add", "net", "eth0", "/devices/x/net/eth0"), 0,
	       "nor its uevent hook");
	old.size = sizeof(struct hdd_module);
	is_int(modules_add_builtin(set, &v1, &modhost_ops, NULL), -EINVAL, "ABI 1 is refused");
	ok(strstr(set->v[set->n - 1]->error, "ABI 1") != NULL, "saying so: %s",
	   set->v[set->n - 1]->error);
	is_int(modules_add_builtin(set, &v3, &modhost_ops, NULL), -EINVAL, "ABI 3 is refused");
	is_int(modules_add_builtin(set, &wrong, &modhost_ops, NULL), -EINVAL,
	       "a method outside the module's name is refused");
	ok(strstr(set->v[set->n - 1]->error, "other.verb") != NULL, "naming it");
	is_int(modules_add_builtin(set, &shadow, &modhost_ops, NULL), -EINVAL,
	       "a method the core has is refused");
	/* A newer minor: a longer descriptor, its extra fields unknown here. */
	memset(big, 0, sizeof(big));
	newer.abi_minor = HDD_MODULE_ABI_MINOR + 1;
	newer.size = sizeof(big);
	memcpy(big, &newer, sizeof(newer));
	is_int(modules_add_builtin(set, (const struct hdd_module *)big, &modhost_ops, NULL), 0,
	       "a newer minor loads too");
	ok(modules_find_method(set, "old.verb", &m) == &good_methods[0] && m,
	   "a module's method is found by name");
	ok(modules_find_method(set, "old.none", &m) == NULL, "an unknown one is not");
	subs = modules_subsystems(set);
	ok(subs && strcmp(subs[0], "pci") == 0 && strcmp(subs[3], "net") == 0 && subs[4] == NULL,
	   "the monitor's filter: the core's subsystems and the modules', once each");
	free((void *)subs);
	modules_free(set);
	config_free(cfg);
}

int
main(void)
{
	log_set_level(HDD_LOG_ERR);
	test_demo_with_fake_core();
	test_loader();
	return tap_done();
}
