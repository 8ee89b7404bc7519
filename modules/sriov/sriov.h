/* SPDX-License-Identifier: MIT */
/* sriov: what the module's files share (worker ops, VF JSON). */
#ifndef SRIOV_SRIOV_H
#define SRIOV_SRIOV_H

#include <jansson.h>

#include "rtnl.h"

/* The test seam: with this set in the daemon's environment the worker
 * speaks rtnetlink over a SOCK_SEQPACKET Unix socket at that path (a
 * simulated kernel's responder) instead of AF_NETLINK. Logged at start. */
#define SRIOV_NETLINK_ENV "HOSTDEVD_SRIOV_NETLINK"

/* A VF's settings as JSON: {"index", "mac", "vlan", "qos", "vlan_proto",
 * "spoofchk", "trust", "min_tx_rate", "max_tx_rate", "link_state"}; values
 * the driver does not report are null. Returns a new object or NULL. */
json_t *sriov_vf_to_json(const struct rtnl_vf *vf);
/* The desired settings of a VF from a (checked) JSON object, every
 * attribute it omits at the kernel's default (no MAC, no VLAN, rates 0,
 * spoofchk on, trust off, link state auto). Returns 0 or -EINVAL with why. */
int sriov_vf_from_json(const json_t *o, struct rtnl_vf *vf, char *why, size_t whylen);
/* A MAC "aa:bb:cc:dd:ee:ff" to bytes. Returns 0 or -EINVAL. */
int sriov_parse_mac(const char *s, uint8_t mac[6]);

/* Worker operations (run in the worker process). */
/* {"pfs": [{"address", "ifindex"}], "eswitch"?: bool} -> {"pfs": {address:
 * {"link": {...}, "vfs": [...], "management": bool, "via": name,
 * "eswitch": "legacy" | "switchdev" | null (asked of devlink when "eswitch"
 * is true; null when the driver has no devlink eswitch), "eswitch_error"?}}} */
int sriov_op_inspect(int sysfs_fd, const json_t *args, json_t *out);
/* {"ifindex", "vfs": [desired VF, ...]}: sets what differs, one attribute
 * per message in the kernel's order, reads back; on any failure puts back
 * what it applied. -> {"vfs": [read back]} or {"error", "vf", "attribute"}. */
int sriov_op_setvfs(int sysfs_fd, const json_t *args, json_t *out);
/* {"pf", "num", "wait_ms"}: sriov_numvfs to num (through 0 when both are
 * non-zero), then waits for the virtfn links. -> {"numvfs"} or {"error"}. */
int sriov_op_numvfs(int sysfs_fd, const json_t *args, json_t *out);

#endif /* SRIOV_SRIOV_H */
