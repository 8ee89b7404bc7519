/* SPDX-License-Identifier: MIT */
/* /metrics (Prometheus text format 0.0.4), /healthz and /readyz. Gauges are
 * read from the daemon's own JSON views at scrape time, so they can never
 * disagree with daemon.status, claims.list and resources.list. */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "log.h"
#include "metrics.h"

/* Allocate latency buckets, in seconds. */
static const double alloc_buckets[] = { 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
					0.01,   0.025,   0.05,   0.1,   0.25,   1.0 };
#define NBUCKETS (sizeof(alloc_buckets) / sizeof(alloc_buckets[0]))

static struct {
	uint64_t counters[METRICS_COUNTER_MAX];
	uint64_t alloc_buckets[NBUCKETS];
	uint64_t alloc_count;
	uint64_t alloc_refused;
	double alloc_sum;
	bool ready;
} m_state;

struct metrics_server {
	metrics_snapshot_fn snapshot;
	void *arg;
	struct evhttp *http;
};

void
metrics_count(enum metrics_counter c)
{
	if ((unsigned)c < METRICS_COUNTER_MAX)
		m_state.counters[c]++;
}

uint64_t
metrics_counter_value(enum metrics_counter c)
{
	return (unsigned)c < METRICS_COUNTER_MAX ? m_state.counters[c] : 0;
}

void
metrics_observe_allocate(int64_t usec, bool ok)
{
	double s = usec > 0 ? (double)usec / 1e6 : 0.0;

	for (size_t i = 0; i < NBUCKETS; i++)
		if (s <= alloc_buckets[i])
			m_state.alloc_buckets[i]++;
	m_state.alloc_count++;
	m_state.alloc_sum += s;
	if (!ok)
		m_state.alloc_refused++;
}

int64_t
metrics_now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void
metrics_set_ready(bool ready)
{
	m_state.ready = ready;
}

bool
metrics_ready(void)
{
	return m_state.ready;
}

/* A label value, escaped as the text format wants (\\, \", \n). */
static void
put_label(FILE *f, const char *s)
{
	fputc('"', f);
	for (; s && *s; s++) {
		if (*s == '\\' || *s == '"')
			fprintf(f, "\\%c", *s);
		else if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

static void
head(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
one(FILE *f, const char *name, const char *type, const char *help, double v)
{
	head(f, name, type, help);
	fprintf(f, "%s %.17g\n", name, v);
}

static json_int_t
jint(const json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

static void
render_claims(FILE *f, const struct metrics_view *v)
{
	head(f, "hostdevd_claims", "gauge", "Recorded PCI claims by state.");
	for (int s = 0; s < CLAIM_STATE_MAX; s++) {
		fputs("hostdevd_claims{state=", f);
		put_label(f, claim_state_to_string((enum claim_state)s));
		fprintf(f, "} %zu\n", v->claims.by_state[s]);
	}
	one(f, "hostdevd_claims_absent", "gauge", "Claims with a member missing from sysfs.",
	    (double)v->claims.absent);
	one(f, "hostdevd_claims_drift", "gauge", "Claims found on another driver and being bound again.",
	    (double)v->claims.drift);
	one(f, "hostdevd_claims_started_total", "counter", "IOMMU-group binds started (claims).",
	    (double)m_state.counters[METRICS_CLAIMS_STARTED]);
	one(f, "hostdevd_claims_failed_total", "counter", "IOMMU-group binds that failed.",
	    (double)m_state.counters[METRICS_CLAIMS_FAILED]);
	one(f, "hostdevd_releases_started_total", "counter", "IOMMU-group releases started.",
	    (double)m_state.counters[METRICS_RELEASES_STARTED]);
	one(f, "hostdevd_releases_failed_total", "counter", "IOMMU-group releases that failed.",
	    (double)m_state.counters[METRICS_RELEASES_FAILED]);
}

static void
render_resources(FILE *f, const struct metrics_view *view)
{
	json_t *res = view->resources, *r;
	static const struct {
		const char *name, *type, *help;
	} fams[] = {
		{ "hostdevd_resource_devices", "gauge", "Devices offered to the kubelet." },
		{ "hostdevd_resource_healthy_devices", "gauge", "Devices offered as Healthy." },
		{ "hostdevd_resource_registered", "gauge", "1 while registered with the kubelet." },
		{ "hostdevd_resource_registrations_total", "counter",
		  "Successful Register calls to the kubelet." },
		{ "hostdevd_resource_allocate_calls_total", "counter", "Allocate calls received." },
		{ "hostdevd_resource_watchers", "gauge", "Open ListAndWatch streams." },
	};
	size_t i;

	for (size_t k = 0; k < sizeof(fams) / sizeof(fams[0]); k++) {
		head(f, fams[k].name, fams[k].type, fams[k].help);
		json_array_foreach(res, i, r) {
			json_t *devs = json_object_get(r, "devices"), *dv;
			json_int_t v = 0;
			size_t j;

			switch (k) {
			case 0: v = (json_int_t)json_array_size(devs); break;
			case 1:
				json_array_foreach(devs, j, dv)
					v += strcmp(json_string_value(json_object_get(dv, "health")) ?: "",
						    "Healthy") == 0;
				break;
			case 2:
				v = strcmp(json_string_value(json_object_get(r, "state")) ?: "",
					   "registered") == 0;
				break;
			case 3: v = jint(r, "registrations"); break;
			case 4: v = jint(r, "allocate_calls"); break;
			default: v = jint(r, "watchers"); break;
			}
			fprintf(f, "%s{resource=", fams[k].name);
			put_label(f, json_string_value(json_object_get(r, "name")));
			fputs(",module=", f);
			put_label(f, json_string_value(json_object_get(r, "module")));
			fprintf(f, "} %" JSON_INTEGER_FORMAT "\n", v);
		}
	}

	head(f, "hostdevd_allocate_duration_seconds", "histogram",
	     "Time to answer an Allocate call, refusals included.");
	for (size_t b = 0; b < NBUCKETS; b++)
		fprintf(f, "hostdevd_allocate_duration_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
			alloc_buckets[b], m_state.alloc_buckets[b]);
	fprintf(f, "hostdevd_allocate_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n",
		m_state.alloc_count);
	fprintf(f, "hostdevd_allocate_duration_seconds_sum %.9f\n", m_state.alloc_sum);
	fprintf(f, "hostdevd_allocate_duration_seconds_count %" PRIu64 "\n", m_state.alloc_count);
	one(f, "hostdevd_allocate_refused_total", "counter", "Allocate calls answered with an error.",
	    (double)m_state.alloc_refused);
}

static void
render_modules(FILE *f, const struct metrics_view *v)
{
	json_t *mods = v->modules, *m;
	size_t i;

	head(f, "hostdevd_module_devices", "gauge", "Devices owned by each device-class module.");
	json_array_foreach(mods, i, m) {
		fputs("hostdevd_module_devices{module=", f);
		put_label(f, json_string_value(json_object_get(m, "name")) ?: "?");
		fprintf(f, "} %" JSON_INTEGER_FORMAT "\n", jint(m, "devices"));
	}
	head(f, "hostdevd_module_active", "gauge", "1 when the module loaded and is active.");
	json_array_foreach(mods, i, m) {
		fputs("hostdevd_module_active{module=", f);
		put_label(f, json_string_value(json_object_get(m, "name")) ?: "?");
		fprintf(f, "} %d\n", json_is_true(json_object_get(m, "active")));
	}
}

char *
metrics_render(const struct metrics_view *v)
{
	json_t *devs = json_object_get(v->status, "devices");
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	static const char *const classes[] = { "pci", "usb", "mdev" };

	if (f == NULL)
		return NULL;
	head(f, "hostdevd_info", "gauge", "hostdevd's version and node.");
	fputs("hostdevd_info{version=", f);
	put_label(f, PACKAGE_VERSION);
	fputs(",node=", f);
	put_label(f, v->node ? v->node : "");
	fputs("} 1\n", f);
	one(f, "hostdevd_ready", "gauge", "1 once start-up is over and the daemon serves.",
	    m_state.ready);
	one(f, "hostdevd_fail_closed", "gauge",
	    "1 while the state file cannot be trusted: bindings kept, claims and releases refused.",
	    v->claims.fail_closed);
	head(f, "hostdevd_devices", "gauge", "Devices in the inventory by class.");
	for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++)
		fprintf(f, "hostdevd_devices{class=\"%s\"} %" JSON_INTEGER_FORMAT "\n", classes[i],
			jint(devs, classes[i]));
	one(f, "hostdevd_uevents_total", "counter", "Kernel uevents handled.",
	    (double)v->uevents);
	one(f, "hostdevd_uevents_ignored_total", "counter", "Kernel uevents of no interest.",
	    (double)v->uevents_ignored);
	one(f, "hostdevd_resyncs_total", "counter", "Full mark-and-sweep resyncs of sysfs.",
	    (double)v->resyncs);
	one(f, "hostdevd_debounced_bursts_total", "counter",
	    "Uevent bursts turned into one resync.", (double)v->debounced_bursts);
	one(f, "hostdevd_events_sent_total", "counter", "Event notifications sent to subscribers.",
	    (double)v->events_sent);
	one(f, "hostdevd_worker_jobs_total", "counter", "Kernel-write operations run by the worker.",
	    (double)m_state.counters[METRICS_WORKER_JOBS]);
	one(f, "hostdevd_worker_failures_total", "counter", "Worker operations that failed.",
	    (double)m_state.counters[METRICS_WORKER_FAILURES]);
	one(f, "hostdevd_worker_timeouts_total", "counter",
	    "Worker operations cut short by their time limit.",
	    (double)m_state.counters[METRICS_WORKER_TIMEOUTS]);
	one(f, "hostdevd_worker_restarts_total", "counter", "Times the worker process was restarted.",
	    (double)v->worker_restarts);
	render_claims(f, v);
	render_resources(f, v);
	render_modules(f, v);
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* --- HTTP ------------------------------------------------------------------- */

static void
reply_text(struct evhttp_request *req, int code, const char *reason, const char *ctype,
	   const char *body)
{
	struct evbuffer *out = evhttp_request_get_output_buffer(req);

	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
	evbuffer_add(out, body, strlen(body));
	evhttp_send_reply(req, code, reason, NULL);
}

static void
http_cb(struct evhttp_request *req, void *arg)
{
	struct metrics_server *m = arg;
	const char *uri = evhttp_request_get_uri(req);
	struct evhttp_uri *u = evhttp_uri_parse(uri ? uri : "/");
	const char *path = u ? evhttp_uri_get_path(u) : NULL;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	struct metrics_view view;

	memset(&view, 0, sizeof(view));
	if (path == NULL || path[0] == '\0')
		path = "/";
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		reply_text(req, 405, "Method Not Allowed", "text/plain", "GET only\n");
	} else if (m->snapshot(m->arg, &view) < 0) {
		reply_text(req, 500, "Internal Server Error", "text/plain", "out of memory\n");
	} else if (strcmp(path, "/metrics") == 0) {
		char *body = metrics_render(&view);

		if (body)
			reply_text(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body);
		else
			reply_text(req, 500, "Internal Server Error", "text/plain", "out of memory\n");
		free(body);
	} else if (strcmp(path, "/healthz") == 0) {
		if (view.claims.fail_closed)
			reply_text(req, 503, "Service Unavailable", "text/plain", "fail-closed\n");
		else
			reply_text(req, 200, "OK", "text/plain", "ok\n");
	} else if (strcmp(path, "/readyz") == 0) {
		if (view.claims.fail_closed)
			reply_text(req, 503, "Service Unavailable", "text/plain", "fail-closed\n");
		else if (!m_state.ready)
			reply_text(req, 503, "Service Unavailable", "text/plain", "starting\n");
		else
			reply_text(req, 200, "OK", "text/plain", "ready\n");
	} else {
		reply_text(req, 404, "Not Found", "text/plain",
			   "hostdevd: /metrics, /healthz, /readyz\n");
	}
	metrics_view_release(&view);
	if (u)
		evhttp_uri_free(u);
}

int
metrics_parse_address(const char *address, char *host, size_t hostlen, uint16_t *port)
{
	const char *colon, *h = address;
	size_t hl;
	char *end;
	long p;

	if (address == NULL)
		return -EINVAL;
	if (address[0] == '[') {
		const char *close = strchr(address, ']');

		if (close == NULL || close[1] != ':')
			return -EINVAL;
		h = address + 1;
		hl = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(address, ':');
		if (colon == NULL || memchr(address, ':', (size_t)(colon - address)))
			return -EINVAL;	/* a bare IPv6 address needs brackets */
		hl = (size_t)(colon - address);
	}
	errno = 0;
	p = strtol(colon + 1, &end, 10);
	if (errno || *end || end == colon + 1 || p < 0 || p > 65535)
		return -EINVAL;
	if (hl == 0) {
		h = "0.0.0.0";
		hl = strlen(h);
	}
	if (hl >= hostlen)
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = (uint16_t)p;
	return 0;
}

void
metrics_view_release(struct metrics_view *v)
{
	json_decref(v->status);
	json_decref(v->modules);
	json_decref(v->resources);
	memset(v, 0, sizeof(*v));
}

int
metrics_server_new(struct event_base *base, const char *address, metrics_snapshot_fn snapshot,
		   void *arg, struct metrics_server **ret)
{
	struct metrics_server *m;
	char host[256];
	uint16_t port;
	int err = metrics_parse_address(address, host, sizeof(host), &port);

	if (err < 0)
		return err;
	m = calloc(1, sizeof(*m));
	if (m == NULL)
		return -ENOMEM;
	m->snapshot = snapshot;
	m->arg = arg;
	m->http = evhttp_new(base);
	if (m->http == NULL) {
		free(m);
		return -ENOMEM;
	}
	evhttp_set_allowed_methods(m->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_timeout(m->http, 10);
	evhttp_set_max_headers_size(m->http, 16384);
	evhttp_set_max_body_size(m->http, 4096);
	evhttp_set_gencb(m->http, http_cb, m);
	errno = 0;
	if (evhttp_bind_socket(m->http, host, port) < 0) {
		err = errno ? -errno : -EADDRNOTAVAIL;
		metrics_server_free(m);
		return err;
	}
	*ret = m;
	return 0;
}

void
metrics_server_free(struct metrics_server *m)
{
	if (m == NULL)
		return;
	if (m->http)
		evhttp_free(m->http);
	free(m);
}
