/* SPDX-License-Identifier: MIT */
/* The kubelet side on libevent: endpoint sockets, Register, inotify, streams. */
#ifndef HOSTDEVD_DP_SERVER_H
#define HOSTDEVD_DP_SERVER_H

struct bus;
struct dp;
struct dp_resource;
struct dp_server;
struct event_base;

/* Serves the resources of `dp` to the kubelet in `kubelet_dir`, watching
 * <dev_root>/vfio for their nodes; registrations and withdrawals go out as
 * events on `bus`. Opens (creating if needed) the kubelet directory and
 * watches it. A missing kubelet is not an error: resources register when
 * kubelet.sock appears. Returns 0 or -errno. */
int dp_server_new(struct dp *dp, struct bus *bus, const char *kubelet_dir, const char *dev_root,
		  struct event_base *base, struct dp_server **ret);
/* Withdraws every resource (empty list, end of streams, GOAWAY), removes our
 * sockets and frees everything. */
void dp_server_free(struct dp_server *s);

/* Called by dp_recompute. */
void dp_server_resource_added(struct dp_server *s, struct dp_resource *r);
void dp_server_resource_removed(struct dp_server *s, struct dp_resource *r);

/* Something changed: recompute and push ListAndWatch updates once, at the
 * end of this loop turn. */
void dp_server_kick(struct dp_server *s);

#endif
