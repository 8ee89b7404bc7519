/* SPDX-License-Identifier: MIT */
/* Prometheus metrics and health endpoints on an optional HTTP listener
 * (libevent's evhttp): /metrics, /healthz, /readyz. */
#ifndef HOSTDEVD_METRICS_H
#define HOSTDEVD_METRICS_H

#include <stdbool.h>
#include <stdint.h>

struct daemon;
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

/* The Prometheus text exposition of d's state and the counters above.
 * Returns a malloc'ed string or NULL. */
char *metrics_render(struct daemon *d);

/* Splits "HOST:PORT", "[V6]:PORT" or ":PORT" (all addresses). Returns 0 or
 * -EINVAL. `host` gets "0.0.0.0"/"::" style text or the host as given. */
int metrics_parse_address(const char *address, char *host, size_t hostlen, uint16_t *port);

/* Listens on `address`. Returns 0 or -errno. */
int metrics_server_new(struct daemon *d, struct event_base *base, const char *address,
		       struct metrics_server **ret);
void metrics_server_free(struct metrics_server *m);

#endif
