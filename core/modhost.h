/* SPDX-License-Identifier: MIT */
/* The core's services to modules (ABI v2): one handle per module, and what
 * each holds — worker calls, timers, resource members of its own. */
#ifndef HOSTDEVD_MODHOST_H
#define HOSTDEVD_MODHOST_H

#include <stdbool.h>
#include <stddef.h>
#include "hostdevd/module.h"

struct bus;
struct claims;
struct config;
struct dp;
struct fsroot;
struct inventory;
struct loop;
struct module;
struct module_set;
struct worker;

/* What the services work with. Its owner (daemon.c) fills it as the
 * subsystems come up (NULL until then: a service answers -EAGAIN or
 * nothing) and keeps `cfg` the configuration in force; every module's
 * handle points at it. */
struct modhost_env {
	struct fsroot *sys;
	struct fsroot *dev;
	const char *dev_root;
	const char *node_name;
	struct inventory *inv;
	struct bus *bus;
	struct claims *claims;	/* the IOMMU-group engine and state.json */
	struct dp *dp;
	const struct config *cfg;
	struct loop *loop;
	struct worker *worker;
};

/* The ops table every module gets; the handle it gets is its struct module. */
extern const struct hdd_core_ops modhost_ops;

/* At SIGTERM, after the module's stop hook: every call still in flight
 * completes with -ECANCELED. Timers still pending never fire. */
void modhost_stop(struct module *m);

/* Drops what a module holds: calls in flight (their completions are not
 * called), timers, resource members. Safe on a module with none. */
void modhost_free(struct module *m);

/* Resource members that are not inventory devices, for the device-plugin
 * side: how many there are, and each with its module and resource. */
size_t modhost_member_count(const struct module_set *set);
void modhost_member_foreach(const struct module_set *set,
			    void (*fn)(const struct module *m, const char *resource,
				       const struct hdd_resource_member *member, void *arg),
			    void *arg);

#endif
