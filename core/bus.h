/* SPDX-License-Identifier: MIT */
/* The event bus: every event (device.*, claim.*, resource.*, config.*,
 * "<module>.<event>") is published here once, and each subscriber gets it.
 * Immediate subscribers (the control socket's events.subscribe streams) get
 * it during the publish; deferred ones (the modules' event hooks) on the
 * next loop turn, through the scheduler the bus was given. */
#ifndef HOSTDEVD_BUS_H
#define HOSTDEVD_BUS_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

struct bus;

struct bus_event {
	const char *type;	/* "device.add", "claim.done", "demo.saved" */
	const char *origin;	/* the module that emitted it; NULL: the core */
	uint64_t seq;
	const json_t *params;	/* with "seq", "type" and "time" set */
};

struct bus_subscriber {
	/* Whether it wants events now (a publisher may then skip building
	 * them). NULL: always. */
	bool (*wants)(void *arg);
	void (*deliver)(void *arg, const struct bus_event *ev);
	void *arg;
	bool deferred;		/* on the next loop turn, not during the publish */
};

/* Asks for fn(fnarg) once on the next loop turn; returns 0 or -errno. */
typedef int (*bus_schedule_fn)(void *arg, void (*fn)(void *fnarg), void *fnarg);

/* A NULL bus (a daemon put together by a unit test) takes events and
 * delivers nothing. */
int bus_new(struct bus **ret);
void bus_free(struct bus *b);

/* Without a scheduler (no loop yet, or no more), deferred subscribers
 * want nothing: events are not queued for them. */
void bus_set_scheduler(struct bus *b, bus_schedule_fn fn, void *arg);

/* Returns 0 or -ENOMEM. `sub` is copied; its arg is the handle to
 * unsubscribe with. */
int bus_subscribe(struct bus *b, const struct bus_subscriber *sub);
void bus_unsubscribe(struct bus *b, void *arg);

/* Whether any subscriber wants events now. */
bool bus_wanted(const struct bus *b);

/* Publishes one event; steals `params` (a JSON object). NULL params: the
 * event happened but nobody wanted it (only its sequence number is used). */
void bus_publish(struct bus *b, const char *origin, const char *type, json_t *params);

/* The sequence number of the last event published. */
uint64_t bus_seq(const struct bus *b);

#endif
