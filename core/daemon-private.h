/* SPDX-License-Identifier: MIT */
/* The daemon's state: daemon.c's own, the composition root that creates the
 * subsystems and hands each what it works with. Only daemon.c and white-box
 * test harnesses (fuzz/, test/unit/) include this; tools/check-layering
 * keeps it so. */
#ifndef HOSTDEVD_DAEMON_PRIVATE_H
#define HOSTDEVD_DAEMON_PRIVATE_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include "conf.h"
#include "daemon.h"
#include "device.h"
#include "fsroot.h"
#include "inventory.h"
#include "modhost.h"
#include "module.h"
#include "names.h"

struct bus;
struct loop;
struct ctl;
struct ctl_server;
struct dp;
struct dp_server;
struct claims;
struct worker;

struct daemon_stats {
	uint64_t uevents;
	uint64_t uevents_ignored;
	uint64_t resyncs;
	uint64_t debounced_bursts;
};

struct daemon {
	struct options opts;
	char node_name[256];
	struct config *cfg;
	struct fsroot *sys;
	struct fsroot *dev;
	struct names *names;
	struct inventory *inv;
	struct module_set *mods;
	struct modhost_env modenv;	/* what the modules' services work with */
	struct loop *loop;		/* libevent side, see loop.h */
	struct ctl *methods;		/* the core's control methods, see ctl.h */
	struct ctl_server *ctl;
	struct bus *bus;		/* events, see bus.h */
	struct dp *dp;			/* kubelet resources */
	struct dp_server *dps;		/* their sockets, see dp-server.h */
	struct udev_watch *udev;
	struct claims *claims;		/* PCI claims, see claim.h */
	struct worker *worker;		/* the process that does the kernel writes */
	int state_dirfd;
	json_t *iommu;			/* IOMMU state read at start and on rescan */
	int64_t started_usec;		/* CLOCK_MONOTONIC */
	int64_t last_resync_wall;	/* unix time of the last full resync */
	int burst_count;		/* uevents in the current debounce window */
	bool burst_resync;		/* window overflowed: one resync at its end */
	bool quiet;			/* coldplug: no per-device log lines */
	int lock_fd;
	struct daemon_stats stats;
};

/* Start-up: everything but the event loop. Returns 0 or -errno after
 * logging why. */
int daemon_init(struct daemon *d, const struct options *opts);
void daemon_fini(struct daemon *d);

/* Full mark-and-sweep resync; `source` tags the resulting events. */
int daemon_resync(struct daemon *d, const char *source, json_t **ret_summary);

/* One uevent, already split into fields. */
void daemon_uevent(struct daemon *d, const char *action, const char *subsystem,
		   const char *devtype, const char *sysname, const char *devpath);

/* End of a debounce window (called by the loop's timer). */
void daemon_debounce_expired(struct daemon *d);

/* The control socket (opts.control_socket), its requests handled by ctl.c,
 * subscribed to the bus for events.subscribe. Returns 0 or -errno. */
struct event_base;
int daemon_open_control(struct daemon *d, struct event_base *base);
void daemon_close_control(struct daemon *d);

/* The loop's hooks (loop.h) for this daemon. */
struct loop_hooks;
void daemon_loop_hooks(struct daemon *d, struct loop_hooks *hooks);

/* SIGHUP: reload the configuration, keeping the old one on error. */
int daemon_reload(struct daemon *d);

/* Re-reads the IOMMU state (groups, /dev/iommu, vfio modules). */
json_t *daemon_read_iommu_state(struct daemon *d);


#endif
