/* SPDX-License-Identifier: MIT */
/* The libevent side of the daemon: base, signals, timers, the udev fd. */
#include "config.h"

#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "loop.h"

struct later;
static void later_unlink(struct later *t);

struct loop {
	struct loop_hooks hooks;
	struct event_base *base;
	struct event *sigterm, *sigint, *sighup;
	struct event *udev_ev;
	struct event *resync_ev;
	struct event *debounce_ev;
	int resync_interval;
	struct later *laters;		/* loop_call_later timers still pending */
};

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct loop *l = arg;

	if (sig == SIGHUP) {
		log_info("daemon", "SIGHUP: reloading the configuration");
		l->hooks.reload(l->hooks.arg);
		return;
	}
	log_info("daemon", "%s: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
	event_base_loopbreak(l->base);
}

static void
udev_cb(evutil_socket_t fd, short what, void *arg)
{
	struct loop *l = arg;

	l->hooks.udev_readable(l->hooks.arg);
}

static void
resync_cb(evutil_socket_t fd, short what, void *arg)
{
	struct loop *l = arg;

	l->hooks.resync(l->hooks.arg);
}

static void
debounce_cb(evutil_socket_t fd, short what, void *arg)
{
	struct loop *l = arg;

	l->hooks.debounce_expired(l->hooks.arg);
}

int
loop_new(const struct loop_hooks *hooks, int resync_interval, struct loop **ret)
{
	struct loop *l = calloc(1, sizeof(*l));

	if (l == NULL)
		return -ENOMEM;
	l->hooks = *hooks;
	l->base = event_base_new();
	if (l->base == NULL)
		goto fail;
	l->sigterm = evsignal_new(l->base, SIGTERM, signal_cb, l);
	l->sigint = evsignal_new(l->base, SIGINT, signal_cb, l);
	l->sighup = evsignal_new(l->base, SIGHUP, signal_cb, l);
	l->resync_ev = event_new(l->base, -1, EV_PERSIST, resync_cb, l);
	l->debounce_ev = evtimer_new(l->base, debounce_cb, l);
	if (!l->sigterm || !l->sigint || !l->sighup || !l->resync_ev || !l->debounce_ev)
		goto fail;
	if (event_add(l->sigterm, NULL) < 0 || event_add(l->sigint, NULL) < 0 ||
	    event_add(l->sighup, NULL) < 0)
		goto fail;
	signal(SIGPIPE, SIG_IGN);
	loop_set_resync_interval(l, resync_interval);
	*ret = l;
	return 0;
fail:
	loop_free(l);
	return -ENOMEM;
}

void
loop_free(struct loop *l)
{
	if (l == NULL)
		return;
	/* Stopping: a second SIGTERM must not cut the clean-up short (freeing
	 * libevent's signal events puts the default action back). */
	if (l->sigterm) {
		event_free(l->sigterm);
		signal(SIGTERM, SIG_IGN);
	}
	if (l->sigint) {
		event_free(l->sigint);
		signal(SIGINT, SIG_IGN);
	}
	if (l->sighup)
		event_free(l->sighup);
	if (l->udev_ev)
		event_free(l->udev_ev);
	if (l->resync_ev)
		event_free(l->resync_ev);
	if (l->debounce_ev)
		event_free(l->debounce_ev);
	while (l->laters) {
		struct later *t = l->laters;

		later_unlink(t);
		free(t);
	}
	if (l->base)
		event_base_free(l->base);
	free(l);
}

struct event_base *
loop_base(struct loop *l)
{
	return l->base;
}

int
loop_watch_udev(struct loop *l, int fd)
{
	l->udev_ev = event_new(l->base, fd, EV_READ | EV_PERSIST, udev_cb, l);
	if (l->udev_ev == NULL || event_add(l->udev_ev, NULL) < 0)
		return -ENOMEM;
	return 0;
}

void
loop_set_resync_interval(struct loop *l, int seconds)
{
	struct timeval tv = { seconds, 0 };

	if (seconds == l->resync_interval && event_pending(l->resync_ev, EV_TIMEOUT, NULL))
		return;
	l->resync_interval = seconds;
	event_del(l->resync_ev);
	if (seconds > 0)
		event_add(l->resync_ev, &tv);
}

void
loop_arm_debounce(struct loop *l, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	if (l == NULL || evtimer_pending(l->debounce_ev, NULL))
		return;
	evtimer_add(l->debounce_ev, &tv);
}

struct later {
	struct loop *l;
	struct event *ev;
	void (*fn)(void *arg);
	void *arg;
	struct later *next, *prev;
};

static void
later_unlink(struct later *t)
{
	if (t->prev)
		t->prev->next = t->next;
	else
		t->l->laters = t->next;
	if (t->next)
		t->next->prev = t->prev;
	event_free(t->ev);
}

static void
later_cb(evutil_socket_t fd, short what, void *arg)
{
	struct later *t = arg;
	void (*fn)(void *) = t->fn;
	void *fnarg = t->arg;

	later_unlink(t);
	free(t);
	fn(fnarg);
}

int
loop_call_later(struct loop *l, int ms, void (*fn)(void *arg), void *arg)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	struct later *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return -ENOMEM;
	t->l = l;
	t->fn = fn;
	t->arg = arg;
	t->ev = evtimer_new(l->base, later_cb, t);
	if (t->ev == NULL || evtimer_add(t->ev, &tv) < 0) {
		if (t->ev)
			event_free(t->ev);
		free(t);
		return -ENOMEM;
	}
	t->next = l->laters;
	if (l->laters)
		l->laters->prev = t;
	l->laters = t;
	return 0;
}

int
loop_run(struct loop *l)
{
	if (event_base_dispatch(l->base) < 0)
		return -EIO;
	return 0;
}
