/* SPDX-License-Identifier: MIT */
/* Prometheus metrics and health endpoints on an optional HTTP listener
 * (libevent's evhttp): /metrics, /healthz, /readyz. */
#ifndef HOSTDEVD_METRICS_H
#define HOSTDEVD_METRICS_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include "claim.h"

struct event_base;
struct metrics_server;

/* Event counters kept by the code that sees the event (one call each). */
enum metrics_counter {
	METRICS_WORKER_JOBS = 0,	/* worker operations finished */
	METRICS_WORKER_FAILURES,	/* ... with an error */
	METRICS_WORKER_TIMEOUTS,	/* ... cut short by their time limit */
	METRICS_CLAIMS_STARTED,
	METRICS_CLAIMS_FAILED,
	METRICS_RELEASES_STARTED,
	METRICS_RELEASES_FAILED,
	METRICS_COUNTER_MAX
};

void metrics_count(enum metrics_counter c);
uint64_t metrics_counter_value(enum metrics_counter c);

/* One Allocate call answered (ok) or refused, and how long it took. */
void metrics_observe_allocate(int64_t usec, bool ok);

/* CLOCK_MONOTONIC in microseconds. */
int64_t metrics_now_usec(void);

/* Start-up is over (claims re-applied, sockets serving). */
void metrics_set_ready(bool ready);
bool metrics_ready(void);

/* What a scrape shows of the daemon, taken by its owner (daemon.c) for
 * each request: metrics.c reads no other subsystem's records. */
struct metrics_view {
	const char *node;
	json_t *status;		/* daemon.status's object (owned) */
	json_t *modules;	/* modules.list's array (owned) */
	json_t *resources;	/* the device-plugin resources (owned) */
	struct claims_summary claims;
	uint64_t uevents, uevents_ignored, resyncs, debounced_bursts;
	uint64_t events_sent;
	uint64_t worker_restarts;
};
/* Fills *v; returns 0 or -ENOMEM (then *v holds nothing to release). */
typedef int (*metrics_snapshot_fn)(void *arg, struct metrics_view *v);
void metrics_view_release(struct metrics_view *v);

/* The Prometheus text exposition of a view and the counters above.
 * Returns a malloc'ed string or NULL. */
char *metrics_render(const struct metrics_view *v);

/* Splits "HOST:PORT", "[V6]:PORT" or ":PORT" (all addresses). Returns 0 or
 * -EINVAL. `host` gets "0.0.0.0"/"::" style text or the host as given. */
int metrics_parse_address(const char *address, char *host, size_t hostlen, uint16_t *port);

/* Listens on `address`. Returns 0 or -errno. */
int metrics_server_new(struct event_base *base, const char *address, metrics_snapshot_fn snapshot,
		       void *arg, struct metrics_server **ret);
void metrics_server_free(struct metrics_server *m);

#endif
