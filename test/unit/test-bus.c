/* SPDX-License-Identifier: MIT */
/* The event bus: one publish, immediate and deferred subscribers, order,
 * sequence numbers, and what happens without a loop. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "tap.h"

struct rec {
	char types[16][64];
	char origins[16][32];
	uint64_t seqs[16];
	size_t n;
	bool wants;
	struct bus *republish;	/* publishes "echo" from its delivery once */
};

static void
deliver(void *arg, const struct bus_event *ev)
{
	struct rec *r = arg;

	if (r->n < 16) {
		snprintf(r->types[r->n], sizeof(r->types[0]), "%s", ev->type);
		snprintf(r->origins[r->n], sizeof(r->origins[0]), "%s",
			 ev->origin ? ev->origin : "core");
		r->seqs[r->n] = ev->seq;
		r->n++;
	}
	if (r->republish && strcmp(ev->type, "echo") != 0) {
		struct bus *b = r->republish;

		r->republish = NULL;
		bus_publish(b, "rec", "echo", json_object());
	}
}

static bool
wants(void *arg)
{
	return ((struct rec *)arg)->wants;
}

/* A one-slot "loop": the flush asked for runs when the test says so. */
static void (*pending_fn)(void *);
static void *pending_arg;
static int schedules;

static int
schedule(void *arg, void (*fn)(void *), void *fnarg)
{
	(void)arg;
	if (pending_fn)
		return -EBUSY;
	pending_fn = fn;
	pending_arg = fnarg;
	schedules++;
	return 0;
}

static void
run_turn(void)
{
	void (*fn)(void *) = pending_fn;

	pending_fn = NULL;
	if (fn)
		fn(pending_arg);
}

int
main(void)
{
	struct rec now = { .wants = true }, later = { .wants = true };
	struct bus *b;
	json_t *p;

	if (bus_new(&b) < 0)
		return 99;
	ok(!bus_wanted(b), "no subscribers: nobody wants events");
	bus_publish(b, NULL, "device.add", NULL);
	is_int(bus_seq(b), 1, "an event nobody wants still takes a sequence number");

	bus_subscribe(b, &(struct bus_subscriber){ .wants = wants, .deliver = deliver, .arg = &now });
	bus_subscribe(b, &(struct bus_subscriber){ .wants = wants, .deliver = deliver, .arg = &later,
						   .deferred = true });
	now.wants = false;
	ok(!bus_wanted(b), "a deferred subscriber without a loop wants nothing");
	bus_publish(b, NULL, "device.add", json_object());
	is_int(later.n + now.n, 0, "nothing delivered, nothing queued without a loop");

	bus_set_scheduler(b, schedule, NULL);
	ok(bus_wanted(b), "with a loop the deferred subscriber wants events");
	now.wants = true;
	p = json_pack("{s:s}", "id", "0000:01:00.0");
	json_incref(p);
	bus_publish(b, NULL, "device.change", p);
	is_int(now.n, 1, "the immediate subscriber got it during the publish");
	is_str(now.types[0], "device.change", "its type");
	is_int(now.seqs[0], 3, "its sequence number");
	is_int(json_integer_value(json_object_get(p, "seq")), 3, "params carry seq");
	is_str(json_string_value(json_object_get(p, "type")), "device.change", "params carry type");
	ok(json_is_real(json_object_get(p, "time")), "params carry time");
	json_decref(p);
	is_int(later.n, 0, "the deferred one did not get it yet");
	bus_publish(b, "demo", "demo.saved", json_object());
	is_int(schedules, 1, "one flush is asked for however many events wait");
	later.republish = b;
	run_turn();
	is_int(later.n, 2, "the next turn delivers both");
	is_str(later.types[0], "device.change", "in order (1)");
	is_str(later.types[1], "demo.saved", "in order (2)");
	is_str(later.origins[1], "demo", "with the emitting module");
	is_str(later.origins[0], "core", "or none for the core");
	is_int(later.n, 2, "an event published during a flush waits for the turn after");
	ok(pending_fn != NULL, "and asks for that turn");
	run_turn();
	is_int(later.n, 3, "the turn after delivers it");
	is_str(later.types[2], "echo", "the republished event");

	is_int(now.n, 3, "the immediate subscriber got all three at once");
	bus_unsubscribe(b, &now);
	bus_publish(b, NULL, "config.reloaded", json_object());
	is_int(now.n, 3, "an unsubscribed subscriber gets nothing more");
	/* Queued events are freed with the bus (the sanitizer's leak check). */
	bus_set_scheduler(b, NULL, NULL);
	bus_free(b);
	return tap_done();
}
