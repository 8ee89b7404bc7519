/* SPDX-License-Identifier: MIT */
/* JSON-RPC 2.0 on the control socket: request parsing, errors, method table. */
#ifndef HOSTDEVD_CTL_H
#define HOSTDEVD_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <jansson.h>

#define CTL_MAX_LINE (64 * 1024)

/* JSON-RPC 2.0 error codes; -32000..-32099 are ours. */
#define CTL_PARSE_ERROR		-32700
#define CTL_INVALID_REQUEST	-32600
#define CTL_METHOD_NOT_FOUND	-32601
#define CTL_INVALID_PARAMS	-32602
#define CTL_INTERNAL_ERROR	-32603
#define CTL_ERR_TOO_MANY	-32000	/* too many clients */
#define CTL_ERR_PERMISSION	-32001	/* mutating method, peer not allowed */
#define CTL_ERR_REFUSED		-32003	/* the request is refused: protected, in use, no IOMMU... */
#define CTL_ERR_NOT_FOUND	-32004	/* no such device or claim */
#define CTL_ERR_BUSY		-32005	/* another operation on it is in progress */
#define CTL_ERR_TOO_LARGE	-32006	/* the answer would pass a memory limit: page it, retry */
#define CTL_ERR_FAILED		-32010	/* the operation failed; data says why */

struct bus;
struct claims;
struct config;
struct ctl;
struct ctl_server;
struct device;
struct dp;
struct fsroot;
struct inventory;
struct loop;
struct module_set;
struct worker;

/* The daemon's own facts for daemon.status, filled by its owner when asked. */
struct ctl_facts {
	const char *node_name;
	int64_t started_usec;		/* CLOCK_MONOTONIC */
	const char *sysfs_root, *dev_root, *kubelet_dir, *control_socket, *state_dir;
	const char *config_file, *module_dir;
	json_t *iommu;			/* borrowed, or NULL */
	int64_t last_resync_wall;	/* unix time */
	uint64_t uevents, uevents_ignored, resyncs, debounced_bursts;
};

/* What the core's methods answer from, given at creation by their owner
 * (daemon.c). */
struct ctl_env {
	struct inventory *inv;
	struct module_set *mods;
	struct claims *claims;
	struct bus *bus;
	struct dp *dp;
	struct fsroot *sys;
	void (*facts)(void *arg, struct ctl_facts *out);
	/* daemon.rescan: a full resync; returns 0 or -errno, *summary its counts. */
	int (*rescan)(void *arg, json_t **summary);
	void *arg;
};

int ctl_new(const struct ctl_env *env, const struct config *cfg, struct ctl **ret);
/* The loop, the worker and the control server, once they exist (NULL: gone). */
void ctl_attach(struct ctl *c, struct loop *loop, struct worker *worker, struct ctl_server *server);
/* The configuration in force after a reload. */
void ctl_set_config(struct ctl *c, const struct config *cfg);
/* Drops the whole lists still being built too. */
void ctl_free(struct ctl *c);

/* What the protocol layer knows of a connected client. */
struct ctl_peer {
	uint64_t serial;	/* which connection, for answers that come later */
	json_t *current_id;	/* id of the request being handled (borrowed) */
	int pending;		/* answers that will come later */
	uid_t uid;
	gid_t gid;
	pid_t pid;
	gid_t *groups;		/* supplementary groups of the peer (owned), or NULL */
	size_t ngroups;
	bool subscribed;
	bool in_batch;		/* handling an element of a batch */
	int lists;		/* devices.list answers being built: its next
				 * requests wait until they are sent */
	json_t *event_types;	/* array of type prefixes, or NULL for all */
};

/* devices.list: the most devices in one page, and in a whole list asked for
 * inside a batch. A whole list asked for on its own has no count limit: it
 * is built CTL_LIST_CHUNK devices per loop turn, one list at a time, within
 * control.max_answer_bytes, so one request holds the loop for a bounded time
 * (others are answered in between) and its answer a bounded amount of memory. */
#define CTL_LIST_MAX 512
#define CTL_LIST_CHUNK 64
/* The most requests in one batch. */
#define CTL_MAX_BATCH 1024

/* Frees what the peer owns (event types, groups); the struct stays. */
void ctl_peer_clear(struct ctl_peer *peer);

/* Parses the "Groups:" line of a /proc/PID/status text into a malloc'd
 * array (*ret_groups may be NULL when there are none). Returns 0, -ENOENT
 * when the line is missing, -EINVAL or -ENOMEM. */
int ctl_parse_status_groups(const char *text, gid_t **ret_groups, size_t *ret_n);

/* Handles one request line (without its newline). Returns the response to
 * send (an object, or an array for a batch), or NULL when nothing is to be
 * sent (notifications). */
json_t *ctl_handle_line(struct ctl *c, struct ctl_peer *peer, const char *line, size_t len);

/* A complete error response object. `id` is borrowed (NULL means null). */
json_t *ctl_error_response(json_t *id, int code, const char *message);

/* Whether a subscribed peer wants an event of this type. */
bool ctl_peer_wants(const struct ctl_peer *peer, const char *type);

/* JSON views of the control methods (also the device.* events' "device"
 * and the metrics). New references; NULL when out of memory. */
json_t *ctl_status_json(struct ctl *c);
json_t *ctl_modules_json(struct ctl *c);
json_t *ctl_device_json(struct ctl *c, struct device *dev);
/* Every mdev parent (class/mdev_bus) and the types it offers. */
json_t *ctl_mdev_parents_json(struct ctl *c);


/* Whether the peer may call mutating methods (root, or the configured group). */
bool ctl_peer_privileged(const struct ctl *c, const struct ctl_peer *peer);

/* A module's control request (hostdevd/module.h): answered once, during
 * its method's call or later. An answer after the call goes to the
 * connection if it is still there; the request is freed with it. */
struct hdd_request;
void ctl_request_reply(struct hdd_request *req, json_t *result);
void ctl_request_error(struct hdd_request *req, int code, const char *message);
bool ctl_request_privileged(const struct hdd_request *req);
/* Whether `name` is one of the core's own methods (a module may not take it). */
bool ctl_core_method(const char *name);

/* Frees requests never answered (at shutdown). */
void ctl_requests_free(void);

#endif
