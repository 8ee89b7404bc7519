/* SPDX-License-Identifier: MIT */
/* The libevent side of the daemon: base, signals, timers, the udev fd. */
#ifndef HOSTDEVD_LOOP_H
#define HOSTDEVD_LOOP_H

struct loop;
struct event_base;

/* What the loop calls: the policy, given at creation. */
struct loop_hooks {
	void (*reload)(void *arg);		/* SIGHUP */
	void (*udev_readable)(void *arg);	/* the fd of loop_watch_udev */
	void (*resync)(void *arg);		/* the periodic timer */
	void (*debounce_expired)(void *arg);	/* the window of loop_arm_debounce */
	void *arg;
};

int loop_new(const struct loop_hooks *hooks, int resync_interval, struct loop **ret);
void loop_free(struct loop *l);
struct event_base *loop_base(struct loop *l);

/* Watches the udev monitor fd: hooks.udev_readable when it is readable. */
int loop_watch_udev(struct loop *l, int fd);

/* Starts (or restarts) the periodic resync; 0 stops it. */
void loop_set_resync_interval(struct loop *l, int seconds);

/* Arms the debounce window if it is not running. */
void loop_arm_debounce(struct loop *l, int ms);

/* Calls fn(arg) once, `ms` from now (from the loop). Returns 0 or -ENOMEM. */
int loop_call_later(struct loop *l, int ms, void (*fn)(void *arg), void *arg);

/* Runs until SIGTERM or SIGINT. Returns 0 on a clean stop. */
int loop_run(struct loop *l);

#endif
