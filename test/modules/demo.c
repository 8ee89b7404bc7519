/* SPDX-License-Identifier: MIT */
/* demo: a test module (never installed) written against hostdevd/module.h
 * alone: a method, a worker op with a deadline, a state section, a resource
 * whose members are not inventory devices, a configuration section. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hostdevd/module.h"

/* The ABI-major test builds this file again as another major. */
#ifndef DEMO_ABI_MAJOR
#define DEMO_ABI_MAJOR HDD_MODULE_ABI_MAJOR
#endif
#ifndef DEMO_NAME
#define DEMO_NAME "demo"
#endif

#define DEMO_RESOURCE "example.com/demo"
#define DEMO_MAX_MEMBERS 64

struct demo {
	const struct hdd_core_ops *ops;
	struct hdd_core *core;
	char resource[128];
	int starts;			/* start hooks seen: 1 after each start */
	char ids[DEMO_MAX_MEMBERS][HDD_ID_MAX + 1];
	size_t nids;
	int uevents;			/* of "net", which the core does not model */
	char last_uevent[128];
	int own_vendor;			/* USB devices of this vendor are its own; -1 none */
	char device_events[8][64];	/* the last ones, oldest first */
	size_t ndevice_events;
	char events[16][96];		/* types from the event hook, oldest first */
	size_t nevents;
	json_int_t last_event_seq;
};

/* --- configuration: {"demo": {"resource": "vendor.com/name",
 *                             "own_vendor": "046d"}} -------------------------- */

static int
parse_vendor(const json_t *v)
{
	const char *s = json_string_value(v);
	char *end;
	long x;

	if (s == NULL || strlen(s) != 4)
		return -1;
	x = strtol(s, &end, 16);
	return *end == '\0' ? (int)x : -1;
}

static int
demo_config_check(const json_t *section, char *why, size_t whylen)
{
	const char *key;
	json_t *v;

	json_object_foreach((json_t *)section, key, v) {
		if (strcmp(key, "own_vendor") == 0) {
			if (parse_vendor(v) < 0) {
				snprintf(why, whylen, "%s.own_vendor: expected 4 hex digits", DEMO_NAME);
				return -EINVAL;
			}
			continue;
		}
		if (strcmp(key, "resource") != 0) {
			snprintf(why, whylen, "%s.%s: unknown key", DEMO_NAME, key);
			return -EINVAL;
		}
		if (!json_is_string(v) || strchr(json_string_value(v), '/') == NULL ||
		    json_string_length(v) >= sizeof(((struct demo *)0)->resource)) {
			snprintf(why, whylen, "%s.resource: expected a resource name such as %s",
				 DEMO_NAME, DEMO_RESOURCE);
			return -EINVAL;
		}
	}
	return 0;
}

static void
apply_config(struct demo *st, const json_t *section)
{
	const char *res = json_string_value(json_object_get(section, "resource"));

	snprintf(st->resource, sizeof(st->resource), "%s", res ? res : DEMO_RESOURCE);
	st->own_vendor = parse_vendor(json_object_get(section, "own_vendor"));
}

/* --- state: {"value": ..., "members": [ids]} ------------------------------- */

static int
publish(struct demo *st)
{
	struct hdd_resource_member m[DEMO_MAX_MEMBERS];

	for (size_t i = 0; i < st->nids; i++)
		m[i] = (struct hdd_resource_member){ .id = st->ids[i], .healthy = true,
						     .numa_node = -1 };
	return st->ops->resource_set(st->core, st->resource, m, st->nids);
}

static int
save(struct demo *st, const json_t *value)
{
	json_t *section = json_object(), *ids = json_array();
	int err;

	for (size_t i = 0; i < st->nids; i++)
		json_array_append_new(ids, json_string(st->ids[i]));
	json_object_set_new(section, "members", ids);
	if (value)
		json_object_set(section, "value", (json_t *)value);
	err = st->ops->state_put(st->core, section);
	json_decref(section);
	return err;
}

static const json_t *
saved_value(struct demo *st)
{
	int err;
	const json_t *section = st->ops->state_get(st->core, &err);

	return section ? json_object_get(section, "value") : NULL;
}

/* --- hooks ------------------------------------------------------------------ */

static int
demo_init(const struct hdd_core_ops *ops, struct hdd_core *core, const json_t *section,
	  void **ret_state)
{
	struct demo *st;

	/* Everything used below came in 2.0; a newer core has it too. */
	if (!HDD_CORE_HAS(ops, resource_set))
		return -ENOTSUP;
	st = calloc(1, sizeof(*st));
	if (st == NULL)
		return -ENOMEM;
	st->ops = ops;
	st->core = core;
	apply_config(st, section);
	*ret_state = st;
	return 0;
}

/* Every event the core or another module emits: the last types are kept. */
static void
demo_event(void *state, const char *type, const json_t *params)
{
	struct demo *st = state;
	size_t n = sizeof(st->events) / sizeof(st->events[0]);

	if (st->nevents == n) {
		memmove(st->events[0], st->events[1], (n - 1) * sizeof(st->events[0]));
		st->nevents--;
	}
	snprintf(st->events[st->nevents++], sizeof(st->events[0]), "%s", type);
	st->last_event_seq = json_integer_value(json_object_get(params, "seq"));
}

static void
demo_fini(void *state)
{
	free(state);
}

/* Re-applies the members the state section records. */
static int
demo_start(void *state)
{
	struct demo *st = state;
	int err;
	const json_t *section = st->ops->state_get(st->core, &err), *ids;
	size_t i;
	json_t *v;

	st->starts++;
	if (err < 0)
		return err;	/* fail closed: publish nothing we cannot vouch for */
	ids = json_object_get(section, "members");
	st->nids = 0;
	json_array_foreach((json_t *)ids, i, v) {
		if (st->nids < DEMO_MAX_MEMBERS && json_is_string(v) &&
		    json_string_length(v) <= HDD_ID_MAX)
			snprintf(st->ids[st->nids++], sizeof(st->ids[0]), "%s", json_string_value(v));
	}
	return st->nids ? publish(st) : 0;
}

static void
demo_reload(void *state, const json_t *section)
{
	struct demo *st = state;

	st->ops->resource_set(st->core, st->resource, NULL, 0);
	apply_config(st, section);
	publish(st);
}

/* Takes the USB devices of the configured vendor from the usb module. */
static int
demo_probe(void *state, const struct hdd_device_view *dev)
{
	struct demo *st = state;

	return dev->cls == HDD_DEV_USB && st->own_vendor >= 0 &&
	       dev->usb->vendor_id == st->own_vendor ? 20 : 0;
}

static void
demo_device_event(void *state, enum hdd_device_event ev, const struct hdd_device_view *dev)
{
	static const char *const names[] = { "add", "change", "remove" };
	struct demo *st = state;

	if (st->ndevice_events == sizeof(st->device_events) / sizeof(st->device_events[0])) {
		memmove(st->device_events[0], st->device_events[1],
			sizeof(st->device_events) - sizeof(st->device_events[0]));
		st->ndevice_events--;
	}
	snprintf(st->device_events[st->ndevice_events++], sizeof(st->device_events[0]), "%s %s",
		 (unsigned)ev < 3 ? names[ev] : "?", dev->id);
}

/* A subsystem the core does not model reaches the module as it is. */
static void
demo_uevent(void *state, const char *action, const char *subsystem, const char *sysname,
	    const char *devpath)
{
	struct demo *st = state;

	st->uevents++;
	snprintf(st->last_uevent, sizeof(st->last_uevent), "%s %s %s", action, subsystem, sysname);
}

/* Allocate for its own members: their ids, as the container sees them. */
static int
demo_allocate(void *state, const char *resource, const struct hdd_device_view *const *devs,
	      size_t n, struct hdd_alloc *alloc)
{
	struct demo *st = state;
	char value[DEMO_MAX_MEMBERS * (HDD_ID_MAX + 1) + 1] = "";
	size_t len = 0;

	for (size_t i = 0; i < n; i++) {
		if (devs[i]->cls != HDD_DEV_NONE || len + strlen(devs[i]->id) + 2 > sizeof(value))
			return -EINVAL;
		len += (size_t)snprintf(value + len, sizeof(value) - len, "%s%s", i ? "," : "",
					devs[i]->id);
	}
	return st->ops->alloc_env(alloc, "DEMO_DEVICES", value);
}

/* --- methods ---------------------------------------------------------------- */

static int
m_echo(void *state, struct hdd_request *req, const json_t *params)
{
	struct demo *st = state;
	const json_t *text = json_object_get(params, "text");

	if (text && !json_is_string(text)) {
		st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS, "text: expected a string");
		return 0;
	}
	st->ops->reply(req, json_pack("{s:s, s:s?}", "module", DEMO_NAME, "text",
				      json_string_value(text)));
	return 0;
}

struct sleep_call {
	struct demo *st;
	struct hdd_request *req;
	int timeout_ms;
};

static void
sleep_done(void *arg, int result, const json_t *out)
{
	struct sleep_call *c = arg;

	if (result == -ETIMEDOUT)
		c->st->ops->reply_error(c->req, HDD_ERR_FAILED, "sleep: timed out after %d ms",
					c->timeout_ms);
	else if (result < 0)
		c->st->ops->reply_error(c->req, HDD_ERR_FAILED, "sleep: %s", strerror(-result));
	else
		c->st->ops->reply(c->req, json_pack("{s:O, s:O}", "slept_ms",
						    json_object_get(out, "slept_ms"), "pid",
						    json_object_get(out, "pid")));
	free(c);
}

/* The answer waits for the worker; other clients are served meanwhile. */
static int
m_sleep(void *state, struct hdd_request *req, const json_t *params)
{
	struct demo *st = state;
	json_int_t ms = json_integer_value(json_object_get(params, "ms"));
	json_int_t timeout = json_integer_value(json_object_get(params, "timeout_ms"));
	struct sleep_call *c;
	json_t *args;
	int64_t id;

	if (ms < 0 || ms > 60000 || timeout <= 0 || timeout > 60000) {
		st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS,
				     "ms: 0 to 60000; timeout_ms: 1 to 60000");
		return 0;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	*c = (struct sleep_call){ .st = st, .req = req, .timeout_ms = (int)timeout };
	args = json_pack("{s:I}", "ms", ms);
	id = st->ops->worker_call(st->core, "sleep", args, (int)timeout, sleep_done, c);
	json_decref(args);
	if (id < 0) {
		free(c);
		return (int)id;
	}
	return 0;
}

static int
m_put(void *state, struct hdd_request *req, const json_t *params)
{
	struct demo *st = state;
	int err = save(st, json_object_get(params, "value"));

	if (err < 0)
		return err;
	st->ops->emit(st->core, "saved", json_pack("{s:O?}", "value",
						   json_object_get(params, "value")));
	st->ops->reply(req, json_pack("{s:b}", "saved", 1));
	return 0;
}

static int
m_get(void *state, struct hdd_request *req, const json_t *params)
{
	struct demo *st = state;
	const json_t *value = saved_value(st);
	json_t *ids = json_array(), *events = json_array(), *seen = json_array();

	for (size_t i = 0; i < st->nids; i++)
		json_array_append_new(ids, json_string(st->ids[i]));
	for (size_t i = 0; i < st->ndevice_events; i++)
		json_array_append_new(events, json_string(st->device_events[i]));
	for (size_t i = 0; i < st->nevents; i++)
		json_array_append_new(seen, json_string(st->events[i]));
	st->ops->reply(req, json_pack("{s:O?, s:o, s:i, s:b, s:s, s:i, s:s, s:o, s:o, s:I}",
				      "value", value, "members", ids, "starts", st->starts,
				      "rebooted", st->ops->rebooted(st->core), "resource",
				      st->resource, "uevents", st->uevents, "last_uevent",
				      st->last_uevent, "device_events", events, "events_seen", seen,
				      "last_event_seq", st->last_event_seq));
	return 0;
}

/* Sets the resource's members, journalled in the state section first. */
static int
m_members(void *state, struct hdd_request *req, const json_t *params)
{
	struct demo *st = state;
	const json_t *ids = json_object_get(params, "ids");
	const json_t *value = saved_value(st);
	json_t *keep = value ? json_incref((json_t *)value) : NULL;
	size_t i;
	json_t *v;
	int err;

	if (!json_is_array(ids) || json_array_size(ids) > DEMO_MAX_MEMBERS) {
		json_decref(keep);
		st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS, "ids: expected at most %d ids",
				     DEMO_MAX_MEMBERS);
		return 0;
	}
	json_array_foreach(ids, i, v) {
		if (!json_is_string(v) || json_string_length(v) == 0 ||
		    json_string_length(v) > HDD_ID_MAX) {
			json_decref(keep);
			st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS,
					     "ids[%zu]: expected 1 to %d characters", i, HDD_ID_MAX);
			return 0;
		}
	}
	st->nids = 0;
	json_array_foreach(ids, i, v)
		snprintf(st->ids[st->nids++], sizeof(st->ids[0]), "%s", json_string_value(v));
	err = save(st, keep);
	json_decref(keep);
	if (err == 0)
		err = publish(st);
	if (err < 0)
		return err;
	st->ops->reply(req, json_pack("{s:s, s:I}", "resource", st->resource, "members",
				      (json_int_t)st->nids));
	return 0;
}

struct later {
	struct demo *st;
	struct hdd_request *req;
};

static void
later_cb(void *arg)
{
	struct later *l = arg;

	l->st->ops->reply(l->req, json_pack("{s:b}", "later", 1));
	free(l);
}

/* Answers from a timer: a deferred reply without the worker. */
static int
m_later(void *state, struct hdd_request *req, const json_t *params)
{
	struct demo *st = state;
	json_int_t ms = json_integer_value(json_object_get(params, "ms"));
	struct later *l = calloc(1, sizeof(*l));
	int64_t id;

	if (l == NULL)
		return -ENOMEM;
	l->st = st;
	l->req = req;
	id = st->ops->timer_add(st->core, ms > 0 && ms < 10000 ? (int)ms : 0, later_cb, l);
	if (id < 0) {
		free(l);
		return (int)id;
	}
	return 0;
}

static void
count_cb(const struct hdd_device_view *dev, void *arg)
{
	(*(int *)arg)++;
}

/* The host-safety verdict and device iteration, as a module sees them. */
static int
m_inspect(void *state, struct hdd_request *req, const json_t *params)
{
	struct demo *st = state;
	const char *id = json_string_value(json_object_get(params, "address"));
	char why[256] = "";
	int pci = 0, verdict;

	if (id == NULL) {
		st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS, "address: expected a PCI address");
		return 0;
	}
	verdict = st->ops->host_needs(st->core, id, why, sizeof(why));
	if (verdict < 0) {
		st->ops->reply_error(req, HDD_ERR_NOT_FOUND, "%s: %s", id, strerror(-verdict));
		return 0;
	}
	st->ops->device_foreach(st->core, HDD_DEV_PCI, count_cb, &pci);
	st->ops->reply(req, json_pack("{s:b, s:s?, s:i}", "host_needs", verdict == 1, "why",
				      verdict == 1 ? why : NULL, "pci_devices", pci));
	return 0;
}

static void
write_done(void *arg, int result, const json_t *out)
{
	struct sleep_call *c = arg;

	if (result < 0)
		c->st->ops->reply_error(c->req, HDD_ERR_FAILED, "write: %s", strerror(-result));
	else
		c->st->ops->reply(c->req, json_pack("{s:b}", "written", 1));
	free(c);
}

/* A sysfs write through the worker, under a deadline. */
static int
m_write(void *state, struct hdd_request *req, const json_t *params)
{
	struct demo *st = state;
	const char *path = json_string_value(json_object_get(params, "path"));
	const char *value = json_string_value(json_object_get(params, "value"));
	struct sleep_call *c;
	int64_t id;

	if (path == NULL || value == NULL) {
		st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS, "path, value: expected strings");
		return 0;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	*c = (struct sleep_call){ .st = st, .req = req, .timeout_ms = 5000 };
	id = st->ops->sysfs_write(st->core, path, value, c->timeout_ms, write_done, c);
	if (id < 0) {
		free(c);
		return (int)id;
	}
	return 0;
}

/* Reads a sysfs attribute on the reactor, relative to the sysfs root
 * (ABI 2.1); a path that leaves the root is refused by openat2-free means:
 * no "..", no leading '/'. */
static int
m_read(void *state, struct hdd_request *req, const json_t *params)
{
	struct demo *st = state;
	const char *path = json_string_value(json_object_get(params, "path"));
	char buf[256];
	ssize_t n;
	int fd;

	if (path == NULL || path[0] == '/' || strstr(path, "..")) {
		st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS, "path: expected a relative path");
		return 0;
	}
	if (!HDD_CORE_HAS(st->ops, sysfs_fd))
		return -EOPNOTSUPP;
	fd = openat(st->ops->sysfs_fd(st->core), path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		st->ops->reply_error(req, HDD_ERR_NOT_FOUND, "%s: %s", path, strerror(errno));
		return 0;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	st->ops->reply(req, json_pack("{s:s}", "value", buf));
	return 0;
}

static void
holders_done(void *arg, int result, const json_t *out)
{
	struct sleep_call *c = arg;

	if (result < 0)
		c->st->ops->reply_error(c->req, HDD_ERR_FAILED, "holders: %s", strerror(-result));
	else
		c->st->ops->reply(c->req, json_pack("{s:O}", "holders",
						    json_object_get(out, "holders")));
	free(c);
}

/* Who holds a node under the device root open (ABI 2.1, in the worker). */
static int
m_holders(void *state, struct hdd_request *req, const json_t *params)
{
	struct demo *st = state;
	const char *node = json_string_value(json_object_get(params, "node"));
	char path[512];
	const char *paths[] = { path, NULL };
	struct sleep_call *c;
	int64_t id;

	if (node == NULL) {
		st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS, "node: expected a string");
		return 0;
	}
	if (!HDD_CORE_HAS(st->ops, holders) || st->ops->dev_path(st->core, node, path, sizeof(path)) < 0)
		return -EOPNOTSUPP;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	*c = (struct sleep_call){ .st = st, .req = req, .timeout_ms = 5000 };
	id = st->ops->holders(st->core, paths, NULL, c->timeout_ms, holders_done, c);
	if (id < 0) {
		free(c);
		return (int)id;
	}
	return 0;
}

/* --- the worker's side -------------------------------------------------------- */

/* Runs in the worker process: sleeping is allowed there. */
static int
w_sleep(int sysfs_fd, const json_t *args, json_t *out)
{
	json_int_t ms = json_integer_value(json_object_get(args, "ms"));
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	json_object_set_new(out, "slept_ms", json_integer(ms));
	json_object_set_new(out, "pid", json_integer(getpid()));
	(void)sysfs_fd;
	return 0;
}

static const char *const no_params[] = { NULL };
static const char *const echo_params[] = { "text", NULL };
static const char *const sleep_params[] = { "ms", "timeout_ms", NULL };
static const char *const put_params[] = { "value", NULL };
static const char *const members_params[] = { "ids", NULL };
static const char *const later_params[] = { "ms", NULL };
static const char *const inspect_params[] = { "address", NULL };
static const char *const write_params[] = { "path", "value", NULL };
static const char *const read_params[] = { "path", NULL };
static const char *const holders_params[] = { "node", NULL };

static const struct hdd_method demo_methods[] = {
	{ .name = DEMO_NAME ".echo", .params = echo_params, .call = m_echo },
	{ .name = DEMO_NAME ".sleep", .params = sleep_params, .call = m_sleep },
	{ .name = DEMO_NAME ".put", .params = put_params, .call = m_put, .mutating = true },
	{ .name = DEMO_NAME ".get", .params = no_params, .call = m_get },
	{ .name = DEMO_NAME ".members", .params = members_params, .call = m_members,
	  .mutating = true },
	{ .name = DEMO_NAME ".later", .params = later_params, .call = m_later },
	{ .name = DEMO_NAME ".inspect", .params = inspect_params, .call = m_inspect },
	{ .name = DEMO_NAME ".write", .params = write_params, .call = m_write, .mutating = true },
	{ .name = DEMO_NAME ".read", .params = read_params, .call = m_read },
	{ .name = DEMO_NAME ".holders", .params = holders_params, .call = m_holders },
	{ .name = NULL },
};

static const struct hdd_worker_op demo_worker_ops[] = {
	{ .name = "sleep", .run = w_sleep },
	{ .name = NULL },
};

static const char *const demo_subsystems[] = { "net", NULL };

__attribute__((visibility("default"))) const struct hdd_module hostdevd_module = {
	.abi_major = DEMO_ABI_MAJOR,
	.abi_minor = HDD_MODULE_ABI_MINOR,
	.size = sizeof(struct hdd_module),
	.name = DEMO_NAME,
	.description = "test module: ABI v2 from outside the core",
	.subsystems = demo_subsystems,
	.methods = demo_methods,
	.worker_ops = demo_worker_ops,
	.config_check = demo_config_check,
	.init = demo_init,
	.fini = demo_fini,
	.start = demo_start,
	.reload = demo_reload,
	.probe = demo_probe,
	.device_event = demo_device_event,
	.uevent = demo_uevent,
	.allocate = demo_allocate,
	.event = demo_event,
};
