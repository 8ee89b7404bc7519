/* SPDX-License-Identifier: MIT */
/* The event bus, see bus.h. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus.h"

struct queued {
	char *type;
	char *origin;
	uint64_t seq;
	json_t *params;
};

struct bus {
	struct bus_subscriber *subs;
	size_t nsubs;
	uint64_t seq;
	bus_schedule_fn schedule;
	void *schedule_arg;
	struct queued *queue;		/* for the deferred subscribers */
	size_t nqueue, cap;
	bool flush_pending;
};

int
bus_new(struct bus **ret)
{
	struct bus *b = calloc(1, sizeof(*b));

	if (b == NULL)
		return -ENOMEM;
	*ret = b;
	return 0;
}

static void
queue_clear(struct queued *q, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(q[i].type);
		free(q[i].origin);
		json_decref(q[i].params);
	}
}

void
bus_free(struct bus *b)
{
	if (b == NULL)
		return;
	queue_clear(b->queue, b->nqueue);
	free(b->queue);
	free(b->subs);
	free(b);
}

void
bus_set_scheduler(struct bus *b, bus_schedule_fn fn, void *arg)
{
	b->schedule = fn;
	b->schedule_arg = arg;
	b->flush_pending = false;
}

int
bus_subscribe(struct bus *b, const struct bus_subscriber *sub)
{
	struct bus_subscriber *v = realloc(b->subs, (b->nsubs + 1) * sizeof(*v));

	if (v == NULL)
		return -ENOMEM;
	v[b->nsubs++] = *sub;
	b->subs = v;
	return 0;
}

void
bus_unsubscribe(struct bus *b, void *arg)
{
	if (b == NULL)
		return;
	for (size_t i = 0; i < b->nsubs; i++) {
		if (b->subs[i].arg != arg)
			continue;
		memmove(&b->subs[i], &b->subs[i + 1], (b->nsubs - i - 1) * sizeof(b->subs[0]));
		b->nsubs--;
		i--;
	}
}

static bool
sub_wants(const struct bus *b, const struct bus_subscriber *s)
{
	if (s->deferred && b->schedule == NULL)
		return false;
	return s->wants == NULL || s->wants(s->arg);
}

bool
bus_wanted(const struct bus *b)
{
	if (b == NULL)
		return false;
	for (size_t i = 0; i < b->nsubs; i++)
		if (sub_wants(b, &b->subs[i]))
			return true;
	return false;
}

uint64_t
bus_seq(const struct bus *b)
{
	return b ? b->seq : 0;
}

static void
bus_flush(void *arg)
{
	struct bus *b = arg;
	struct queued *q = b->queue;
	size_t n = b->nqueue;

	/* What the subscribers publish meanwhile goes into a new queue, for
	 * the turn after this one. */
	b->queue = NULL;
	b->nqueue = b->cap = 0;
	b->flush_pending = false;
	for (size_t i = 0; i < n; i++) {
		struct bus_event ev = { q[i].type, q[i].origin, q[i].seq, q[i].params };

		for (size_t k = 0; k < b->nsubs; k++)
			if (b->subs[k].deferred && sub_wants(b, &b->subs[k]))
				b->subs[k].deliver(b->subs[k].arg, &ev);
	}
	queue_clear(q, n);
	free(q);
}

/* Keeps the event for the deferred subscribers and asks for a flush. */
static void
enqueue(struct bus *b, const struct bus_event *ev)
{
	struct queued *q;

	if (b->nqueue == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 16;

		q = realloc(b->queue, cap * sizeof(*q));
		if (q == NULL)
			return;
		b->queue = q;
		b->cap = cap;
	}
	q = &b->queue[b->nqueue];
	q->type = strdup(ev->type);
	q->origin = ev->origin ? strdup(ev->origin) : NULL;
	if (q->type == NULL || (ev->origin && q->origin == NULL)) {
		free(q->type);
		free(q->origin);
		return;
	}
	q->seq = ev->seq;
	q->params = json_incref((json_t *)ev->params);
	b->nqueue++;
	if (!b->flush_pending && b->schedule(b->schedule_arg, bus_flush, b) == 0)
		b->flush_pending = true;
}

void
bus_publish(struct bus *b, const char *origin, const char *type, json_t *params)
{
	struct bus_event ev = { type, origin, 0, params };
	bool queued = false;
	struct timespec ts;

	if (b == NULL) {
		json_decref(params);
		return;
	}
	ev.seq = ++b->seq;
	if (params == NULL || !json_is_object(params)) {
		json_decref(params);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	json_object_set_new(params, "seq", json_integer((json_int_t)ev.seq));
	json_object_set_new(params, "type", json_string(type));
	json_object_set_new(params, "time", json_real((double)ts.tv_sec + (double)ts.tv_nsec / 1e9));
	for (size_t i = 0; i < b->nsubs; i++) {
		const struct bus_subscriber *s = &b->subs[i];

		if (!sub_wants(b, s))
			continue;
		if (!s->deferred)
			s->deliver(s->arg, &ev);
		else if (!queued) {
			enqueue(b, &ev);
			queued = true;
		}
	}
	json_decref(params);
}
