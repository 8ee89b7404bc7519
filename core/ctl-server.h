/* SPDX-License-Identifier: MIT */
/* The control socket's libevent side: listener, clients, limits, broadcast. */
#ifndef HOSTDEVD_CTL_SERVER_H
#define HOSTDEVD_CTL_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include <sys/types.h>

struct bus_event;
struct ctl_peer;
struct ctl_server;
struct event_base;

/* What the server calls: the policy, given at creation. */
struct ctl_server_hooks {
	/* One request line of a peer; returns the response to send now, or
	 * NULL (a notification, or an answer that comes later through
	 * ctl_server_send_to). */
	json_t *(*handle_line)(void *arg, struct ctl_peer *peer, const char *line, size_t len);
	void *arg;
};

struct ctl_server_limits {
	int max_clients;
	size_t max_output;		/* unread bytes one client may hold */
	size_t max_total_output;	/* all clients together (root is let through) */
	int stall_timeout_s;
	const char *group;		/* the socket's group, or NULL (at creation only) */
	gid_t gid;
};

/* Listens on `path` (mode 0660, group from the limits). A live socket there
 * (another daemon) is an error; a stale one is replaced; anything that is
 * not a socket is left alone and is an error. Returns 0 or -errno. */
int ctl_server_new(const struct ctl_server_hooks *hooks, const struct ctl_server_limits *limits,
		   struct event_base *base, const char *path, struct ctl_server **ret);
void ctl_server_free(struct ctl_server *s);

/* SIGHUP: new limits (the group is not changed). */
void ctl_server_set_limits(struct ctl_server *s, const struct ctl_server_limits *limits);
bool ctl_server_has_subscribers(const struct ctl_server *s);
int ctl_server_clients(const struct ctl_server *s);
int ctl_server_subscribers(const struct ctl_server *s);

/* The events.subscribe streams as a bus subscriber (arg: the server). */
bool ctl_server_wants_events(void *arg);
void ctl_server_event(void *arg, const struct bus_event *ev);
uint64_t ctl_server_events_sent(const struct ctl_server *s);

/* Queues a notification to every subscriber that wants `type`. A subscriber
 * whose unread output passes the limit is disconnected. */
void ctl_server_broadcast(struct ctl_server *s, const json_t *note, const char *type);

/* Sends a response to the connection with `serial`, if it is still there.
 * Steals `resp`. A NULL server takes it and sends nothing. */
void ctl_server_send_to(struct ctl_server *s, uint64_t serial, json_t *resp);
/* The same for an answer already serialised: `text` (malloc'd, `len` bytes,
 * without the newline) is stolen. */
void ctl_server_send_text_to(struct ctl_server *s, uint64_t serial, char *text, size_t len);
/* A devices.list answer of the connection's was sent or failed: its
 * waiting requests are read again. */
void ctl_server_list_done(struct ctl_server *s, uint64_t serial);
/* Whether the connection with `serial` is still there to be answered. */
bool ctl_server_serial_alive(const struct ctl_server *s, uint64_t serial);
/* Bytes of unsent output held for all clients together. */
size_t ctl_server_total_output(const struct ctl_server *s);

#endif
