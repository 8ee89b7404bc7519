/* SPDX-License-Identifier: MIT */
/* The libevent side of the daemon: base, signals, timers, the udev fd. */
#ifndef HOSTDEVD_LOOP_H
#define HOSTDEVD_LOOP_H

struct daemon;
struct loop;
struct event_base;

int loop_new(struct daemon *d, struct loop **ret);
void loop_free(struct loop *l);
struct event_base *loop_base(struct loop *l);

/* Watches the udev monitor fd; after each readable batch, the daemon is
 * handed the uevents. */
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
