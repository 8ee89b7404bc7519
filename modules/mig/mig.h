/* SPDX-License-Identifier: MIT */
/* mig: what the reactor side and the worker side share. */
#ifndef HOSTDEVD_MIG_H
#define HOSTDEVD_MIG_H

#include <stdbool.h>
#include <stddef.h>

#include "hostdevd/module.h"

#define MIG_DEFAULT_LIBRARY "libnvidia-ml.so.1"
#define MIG_MAX_INSTANCES 7		/* GPU instances per GPU, on every MIG GPU so far */

/* Worker operations (they run in the worker process, where NVML is loaded;
 * never on the reactor).
 *
 * "list" {library, bus_id?} -> {driver_version, gpus: [gpu]}: every GPU NVML
 *   sees (or the one at bus_id), with mode, profiles, instances, processes.
 * "apply" {library, bus_id, enabled (true, false, or null: keep), layout,
 *   max_orders} -> {changed, gpu, pending_reset, reset, attempts, order,
 *   error, processes, left}: idempotent; destroys compute then GPU
 *   instances, sets the mode, creates, verifies, tries other creation orders
 *   on INSUFFICIENT_RESOURCES, and leaves the GPU empty when it cannot
 *   reach the layout. */
int mig_w_list(int sysfs_fd, const json_t *args, json_t *out);
int mig_w_apply(int sysfs_fd, const json_t *args, json_t *out);

/* A layout as the API and the configuration give it ({"1g.10gb": 7}, or
 * [{"profile": "3g.40gb", "placement": 4}, "1g.10gb", ...]) as a sorted
 * array of {"profile", "placement"?}. Names lose NVML's "MIG " prefix.
 * Returns 0, or -EINVAL with why. */
int mig_layout_normalize(const json_t *layout, json_t **out, char *why, size_t whylen);

/* Whether a GPU as "list" reports it has the desired {enabled, layout}:
 * the mode, and one GPU instance per entry (of that profile, at that
 * placement when one is given) with one compute instance spanning it. */
bool mig_layout_matches(const json_t *gpu, const json_t *desired, char *why, size_t whylen);

/* "0000:04:00.0" from any spelling of a PCI address ("00000000:04:00.0");
 * returns 0 or -EINVAL. */
int mig_bus_id(const char *in, char out[16]);

#endif /* HOSTDEVD_MIG_H */
