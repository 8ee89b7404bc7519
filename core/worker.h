/* SPDX-License-Identifier: MIT */
/* The worker process: kernel writes that may sleep, modprobe, waiting for a
 * device to be let go. The reactor hands it one operation at a time and
 * gets the result back as an event, with a deadline. */
#ifndef HOSTDEVD_WORKER_H
#define HOSTDEVD_WORKER_H

#include <jansson.h>

struct worker;
struct event_base;

/* result: 0, -errno of the operation, -ETIMEDOUT when the deadline passed
 * (the worker is then replaced), -EPIPE when the worker died. reply: the
 * worker's answer object (borrowed), or NULL. */
typedef void (*worker_cb)(void *arg, int result, const json_t *reply);

/* Starts the worker: fork, then exec of this very binary (/proc/self/exe)
 * in worker mode (--worker-fd), so neither the first worker nor one that
 * replaces a stuck one carries the daemon's memory. It holds the socket and
 * a descriptor of the sysfs root, nothing else. Returns 0 or -errno. */
int worker_new(struct event_base *base, const char *sysfs_root, const char *dev_root,
	       struct worker **ret);
void worker_free(struct worker *w);

/* Queues an operation (steals `req`). Operations run in order:
 *   {"op":"write", "path": <relative to the sysfs root>, "value": <string>}
 *   {"op":"modprobe", "module": <name>}
 *   {"op":"holders", "paths": [...], "prefixes": [...]}      -> {"holders": [...]}
 *   {"op":"wait_free", "paths": [...], "prefixes": [...], "timeout_ms": N}
 *   {"op":"module", "path": <a module file the daemon loaded>, "module": <its name>,
 *    "name": <one of its worker_ops>, "args": {...}}               -> {"out": {...}}
 * timeout_ms bounds the whole operation. Returns 0 or -ENOMEM. */
int worker_submit(struct worker *w, json_t *req, int timeout_ms, worker_cb cb, void *arg);

/* Drops every queued callback whose arg is `arg` (its owner is going away). */
void worker_forget(struct worker *w, void *arg);

int worker_pid(const struct worker *w);
unsigned worker_restarts(const struct worker *w);

/* Where the worker finds its socket and the sysfs root after the exec. */
#define WORKER_SOCK_FD 3
#define WORKER_SYSFS_FD 4

/* The worker process's loop (hostdevd --worker-fd): answers requests on
 * `sock` until the daemon closes it. */
void worker_main(int sock, int sysfs_fd, const char *dev_root) __attribute__((noreturn));

/* The worker's side, exposed for tests: handles one request in this
 * process and returns the reply (a new object). */
json_t *worker_handle(int sysfs_fd, const char *dev_root, const json_t *req);

#endif
