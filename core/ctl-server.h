/* SPDX-License-Identifier: MIT */
/* The control socket's libevent side: listener, clients, limits, broadcast. */
#ifndef HOSTDEVD_CTL_SERVER_H
#define HOSTDEVD_CTL_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

struct ctl_server;
struct daemon;
struct event_base;

/* Listens on `path` (mode 0660, group from the config). A live socket there
 * (another daemon) is an error; a stale one is replaced; anything that is
 * not a socket is left alone and is an error. Returns 0 or -errno. */
int ctl_server_new(struct daemon *d, struct event_base *base, const char *path,
		   struct ctl_server **ret);
void ctl_server_free(struct ctl_server *s);

void ctl_server_set_limits(struct ctl_server *s, int max_clients, size_t max_output);
bool ctl_server_has_subscribers(const struct ctl_server *s);
int ctl_server_clients(const struct ctl_server *s);
int ctl_server_subscribers(const struct ctl_server *s);

/* Queues a notification to every subscriber that wants `type`. A subscriber
 * whose unread output passes the limit is disconnected. */
void ctl_server_broadcast(struct ctl_server *s, const json_t *note, const char *type);

#endif
