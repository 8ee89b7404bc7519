/* SPDX-License-Identifier: MIT */
/* Kubelet device plugins: resources, their members and the v1beta1 methods. */
#ifndef HOSTDEVD_DP_H
#define HOSTDEVD_DP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "grpc.h"
#include "hostdevd/module.h"

struct claims;
struct config;
struct device;
struct dp_endpoint;
struct dp_server;
struct fsroot;
struct inventory;
struct module_set;

/* What the resources are computed from, given at creation by their owner
 * (daemon.c); any may be NULL (fuzz targets, tests). */
struct dp_env {
	struct inventory *inv;
	struct claims *claims;		/* held IOMMU groups */
	struct module_set *mods;	/* owners, their resource members */
	struct fsroot *dev;		/* /dev/vfio nodes */
	const char *kubelet_dir;
};

#define DP_PATH_PREFIX "/v1beta1.DevicePlugin/"
#define DP_REGISTER_PATH "/v1beta1.Registration/Register"
#define DP_API_VERSION "v1beta1"

enum dp_reg_state {
	DP_REG_NEW = 0,		/* not yet serving */
	DP_REG_WAIT_KUBELET,	/* serving; no kubelet.sock to register with */
	DP_REG_REGISTERING,	/* Register sent, waiting for the answer */
	DP_REG_REGISTERED,
	DP_REG_BACKOFF,		/* failed; retrying after a delay */
	DP_REG_FAILED,		/* cannot serve (socket path taken, too long) */
	DP_REG_STATE_MAX
};

struct dp_member {
	char id[HDD_ID_MAX + 1];	/* Device.ID: the PCI address, or a module's member id */
	bool healthy;
	int numa;
	int iommu_group;
	struct device *dev;		/* a reference; NULL for absent claimed devices and
					 * members a module set (resource_set) */
};

struct dp_resource {
	char name[256];
	char sock[128];			/* endpoint file name in the kubelet dir */
	const struct module *module;
	struct dp_member *members;	/* sorted by id */
	size_t n;
	bool seen;			/* recompute mark */
	bool changed;			/* a ListAndWatch update is due */
	enum dp_reg_state state;
	char last_error[256];
	uint64_t allocate_calls;
	uint64_t registrations;
	int64_t registered_at;		/* unix time */
	int backoff_step;
	uint64_t register_attempts;	/* Register requests sent */
	struct grpc_call **watches;	/* open ListAndWatch streams */
	size_t nwatches;
	/* The kubelet's stream for the current registration: only its end
	 * means the kubelet lost us. NULL until it is known. */
	struct grpc_call *reg_watch;
	bool reg_watch_new_conn;	/* it came on a connection opened after Register */
	int connections;		/* open server connections on the endpoint */
	uint64_t refused_connections;
	struct dp_endpoint *ep;		/* the libevent side */
};

/* The resources and how they are computed: dp.c's own. */
struct dp;

int dp_new(const struct dp_env *env, const struct config *cfg, struct dp **ret);
/* The transport (dp-server.c) that serves the resources, or NULL. */
void dp_attach_server(struct dp *dp, struct dp_server *server);
/* The configuration in force after a reload. */
void dp_set_config(struct dp *dp, const struct config *cfg);
/* "Resources changed", the one call for it (modules' resources_changed,
 * claims, rescans, reload, the /dev/vfio watch): every device's membership
 * is recomputed and ListAndWatch updates go out once, at the end of this
 * loop turn, however many calls come before. NULL: nothing. */
void dp_resources_changed(struct dp *dp);

/* For the transport (dp-server.c): the resources, in order; whether the
 * next recompute is a full pass; when the next AER hold ends (CLOCK_MONOTONIC
 * seconds, 0: none). */
size_t dp_resource_count(const struct dp *dp);
struct dp_resource *dp_resource_at(const struct dp *dp, size_t i);
bool dp_full_pass_due(const struct dp *dp);
int64_t dp_aer_next(const struct dp *dp);
/* Frees everything; the server side must have been stopped. */
void dp_free(struct dp *dp);
const char *dp_reg_state_to_string(enum dp_reg_state s);
/* The one place a resource's registration state changes: logged, with why. */
void dp_reg_set_state(struct dp_resource *r, enum dp_reg_state s, const char *why);

/* Rebuilds which devices are offered under which resource: every device
 * when dp->dirty, else only those named by dp_device_changed. New
 * resources and removed ones are handed to the server side (dp-server.c). */
void dp_recompute(struct dp *dp);
/* Whether dp_recompute has anything to do. */
bool dp_recompute_due(const struct dp *dp);
/* A device came, went or changed: its membership (only) is recomputed at
 * the end of this loop turn. Other classes than PCI are ignored. */
void dp_device_changed(struct dp *dp, const struct device *dev);
/* The same by PCI address. */
void dp_id_changed(struct dp *dp, const char *id);

/* Health of the group nodes. dp-server says whether it watches
 * <dev-root>/vfio (the cache is dropped when it stops), and hands over each
 * entry that came (present) or went; a group's members are recomputed. */
void dp_vfio_watched(struct dp *dp, bool watched);
void dp_vfio_event(struct dp *dp, const char *name, bool present);
/* Whether `rel` ("vfio/12") exists under --dev-root, from the cache when
 * it can. */
bool dp_dev_exists(struct dp *dp, const char *rel);
/* Sends one ListAndWatch message per changed resource to each stream. */
void dp_push_updates(struct dp *dp);
/* Ends every resource: an empty list, then the end of each stream. */
void dp_stop_all(struct dp *dp);
/* The same for one resource. */
void dp_resource_end_streams(struct dp_resource *r);

/* Allocate answer builders behind hdd_core_ops. */
struct hdd_alloc;
int dp_alloc_env(struct hdd_alloc *a, const char *name, const char *value);
int dp_alloc_device(struct hdd_alloc *a, const char *host_path, const char *container_path,
		    const char *permissions);
bool dp_alloc_prefer_iommufd(const struct hdd_alloc *a);
int dp_alloc_mount(struct hdd_alloc *a, const char *host_path, const char *container_path,
		   bool read_only);

struct dp_resource *dp_find(struct dp *dp, const char *name);

/* gRPC server side: a complete request on resource r's endpoint. */
void dp_handle(struct dp *dp, struct dp_resource *r, struct grpc_call *call, const char *path,
	       const uint8_t *msg, size_t len);
bool dp_known_path(const char *path);
/* Whether `call` is one of r's open ListAndWatch streams. */
bool dp_is_watch(const struct dp_resource *r, const struct grpc_call *call);
/* A ListAndWatch stream (or a pending call) of r went away. Returns true
 * when it was the current registration's stream (r->reg_watch) that ended
 * while the resource is live: the caller registers the resource again.
 * Any other stream's end changes nothing. */
bool dp_call_closed(struct dp *dp, struct dp_resource *r, struct grpc_call *call);

/* Encodings for the Register client. */
int dp_encode_register(const struct dp_resource *r, uint8_t **ret, size_t *len);
/* The ListAndWatch message for r (tests and the fuzzer use it too). */
int dp_encode_list(const struct dp_resource *r, bool empty, uint8_t **ret, size_t *len);

/* Preferred allocation over r's members (exposed for unit tests): the
 * must-include ids, then one at a time the available device best placed
 * against those chosen (same IOMMU group, then NUMA node, then PCIe
 * switch), ties in the kubelet's order. O(n log n) in the devices.
 * Writes `size` ids into out. Returns 0, -EINVAL with a reason, or
 * -ENOMEM. */
int dp_preferred(const struct dp_resource *r, char *const *available, size_t navailable,
		 char *const *must, size_t nmust, int size, const char **out, char *why,
		 size_t whylen);

json_t *dp_resources_json(struct dp *dp);

#endif
