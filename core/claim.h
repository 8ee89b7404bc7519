/* SPDX-License-Identifier: MIT */
/* The IOMMU-group engine: whole IOMMU groups onto vfio-pci and back for the
 * module that owns them (modhost.c gives it to modules as vfio_group_bind,
 * vfio_group_unbind and vfio_group_holder), journalled in state.json's
 * "claims" array, one record per group with its owner, so that restart,
 * kill -9 and reboot leave nothing half done. A "claim" here is a group held
 * on vfio-pci; what it is held for is its owner's business. */
#ifndef HOSTDEVD_CLAIM_H
#define HOSTDEVD_CLAIM_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

struct bus;
struct config;
struct device;
struct fsroot;
struct inventory;
struct loop;
struct worker;

enum claim_state {
	CLAIM_CLAIMING = 0,	/* intent recorded; binding in progress */
	CLAIM_CLAIMED,
	CLAIM_RELEASING,	/* release recorded; restoring drivers */
	CLAIM_REFUSED,		/* recorded, but the live system says no: never applied */
	CLAIM_STATE_MAX
};

struct claims;
struct claim;

/* The reply to a control request that waits for a claim or release. */
typedef void (*claim_done_fn)(void *arg, int err, const char *message, json_t *result);

/* What the engine works with, given at creation by its owner (daemon.c). */
struct claims_env {
	struct fsroot *sys;
	struct fsroot *dev;
	struct inventory *inv;
	struct bus *bus;
	const char *state_dir;	/* for messages */
	const char *dev_root;	/* /dev/vfio paths of a group's holders */
	/* Held groups changed: the device plugins recompute their resources. */
	void (*changed)(void *arg);
	void *changed_arg;
};

/* What the rest of the daemon may know of the records (metrics, status,
 * readiness): counts, never the records themselves. */
struct claims_summary {
	size_t n;
	size_t busy;		/* moves in flight */
	size_t by_state[CLAIM_STATE_MAX];
	size_t absent;		/* with a member missing from sysfs */
	size_t drift;		/* found on another driver, being bound again */
	bool fail_closed;
	const char *fail_reason;	/* valid while the engine lives */
	bool rebooted;		/* boot id differs from the one recorded */
};
void claims_summarize(const struct claims *c, struct claims_summary *out);
/* state.json cannot be trusted (false for NULL). */
bool claims_fail_closed(const struct claims *c);
/* The first start since the node booted, as state.json's boot id says. */
bool claims_first_since_boot(const struct claims *c);

/* A module's section of state.json (borrowed), or NULL. */
const json_t *claims_module_section(const struct claims *c, const char *module);
/* Replaces (NULL: removes) a module's section and writes state.json now.
 * Returns 0, -EROFS when failing closed, or -errno. */
int claims_module_section_put(struct claims *c, const char *module, const json_t *section);

/* Loads state.json (a torn or corrupt file makes the engine fail closed).
 * `cfg` is the configuration in force (claims_set_config replaces it).
 * Returns 0 or -errno for an unusable state directory. */
int claims_new(const struct claims_env *env, const struct config *cfg, int state_dirfd,
	       struct claims **ret);
/* The event loop and the worker, once they exist (before claims_reconcile). */
void claims_attach(struct claims *c, struct loop *loop, struct worker *worker);
/* The configuration in force after a reload (the old one is freed after). */
void claims_set_config(struct claims *c, const struct config *cfg);
void claims_free(struct claims *c);

/* After start-up: checks every recorded group against the live system
 * (its members are its IOMMU group's, no other record holds them, none is
 * protected, excluded, a bridge or the boot VGA device) and refuses those
 * that fail, before any kernel write; then finishes interrupted binds and
 * releases and binds again groups found on another driver. A refused record
 * is kept in state.json and listed with its reason; binding it again is
 * refused, unbinding forgets it. */
void claims_reconcile(struct claims *c, const char *source);

/* A device changed (hotplug): drift and absence of held groups. */
void claims_device_event(struct claims *c, struct device *dev, bool removed);

/* Moves the group of `address` onto vfio-pci for module `owner`. Returns 0
 * (done is called once, later, with the group's view), 1 when the owner
 * holds it already (*now: its view; done is not called), or -errno with
 * why (done is not called): -EROFS failing closed, -ENOENT no such
 * function, -EBUSY held by another owner or a move in flight, -EPERM the
 * host needs a member or the group cannot be bound or its record is
 * refused (why is the reason). timeout_ms > 0 bounds the whole move. */
int claims_bind(struct claims *c, const char *owner, const char *address, int timeout_ms,
		claim_done_fn done, void *arg, json_t **now, char *why, size_t whylen);
/* Gives the group back to its recorded drivers. Same returns; 1 when a
 * refused record was forgotten without a kernel write (*now has
 * "forgotten"); -ENOENT when `owner` holds no group with `address`; done's
 * -EBUSY: a process holds the group (refused unless force). */
int claims_unbind(struct claims *c, const char *owner, const char *address, bool force,
		  int timeout_ms, claim_done_fn done, void *arg, json_t **now, char *why,
		  size_t whylen);
/* 1 with the owner's name when a record holds `address`, 0 when none, or
 * -ENOENT for an unknown function. */
int claims_holder(struct claims *c, const char *address, char *owner, size_t size,
		  bool *allocated);
/* The view of the group holding `address` if `owner` (NULL: anyone) holds
 * it, or NULL. */
json_t *claims_member_json(struct claims *c, const char *owner, const char *address);
/* Views of every group `owner` (NULL: anyone) holds, as an array. */
json_t *claims_owner_json(struct claims *c, const char *owner);

/* The claim holding `address` as a member, or NULL. */
struct claim *claims_find_member(struct claims *c, const char *address);

/* What the device-plugin side sees of a held group's member (dp.c reads
 * no record of the engine directly). */
struct claims_member {
	const char *address;	/* valid until the engine's records change */
	const char *owner;
	int group;
	bool offered;		/* held and settled: claimed, no move in flight */
	bool bridge;		/* stays where it is, never offered */
	const char *advertised;	/* the resource it was last offered under, or "" */
};

/* The member `address` of a held group: true with *out filled, or false. */
bool claims_member_get(struct claims *c, const char *address, struct claims_member *out);
/* Every member of every held group, in the engine's order. */
void claims_member_foreach(struct claims *c,
			   void (*fn)(const struct claims_member *m, void *arg), void *arg);
size_t claims_member_count(const struct claims *c);
/* The resource the member's group was offered under (kept in its record
 * for absent members and listings). */
void claims_member_advertised(struct claims *c, const char *address, const char *resource);
/* AER totals of a member as last read: true while new errors keep it
 * Unhealthy (hold_s after the last new one, monotonic `now` in s), with
 * *until when that ends. `new_errors` says how many came since the last look. */
bool claims_member_aer(struct claims *c, const char *address, int aer_errors, int hold_s,
		       int64_t now, int64_t *until, int *new_errors);
/* The device plugins handed the member out in an Allocate. */
void claims_member_allocated(struct claims *c, const char *address);

/* claims.list's frame: {"claims": list (stolen; NULL: every view),
 * "fail_closed", "fail_reason", "boot_id", "rebooted"}. */
json_t *claims_json(struct claims *c, json_t *list);
json_t *claim_json(const struct claim *cl);
/* claim_json with each member's driver and presence now, and "group". */
json_t *claim_view_json(struct claims *c, const struct claim *cl);
const char *claim_state_to_string(enum claim_state s);

#endif
