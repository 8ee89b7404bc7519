/* SPDX-License-Identifier: MIT */
/* Devices the host needs: never handed out, whatever the request says. */
#ifndef HOSTDEVD_PROTECT_H
#define HOSTDEVD_PROTECT_H

#include <stddef.h>

struct config;
struct fsroot;
struct device;

/* Why `dev` must stay with the host (the boot disk, the default-route NIC
 * and its bond/bridge, a configured exclude), written to why; 0 when it is
 * free to claim, 1 when protected. Bridges and the boot VGA device are
 * never claimable whatever the host does: hdd_pci_never_claimable().
 * Reads /proc/self/mountinfo, /proc/swaps and /proc/net/{route,ipv6_route}
 * of the real system and resolves devices through the sysfs root. */
int protect_check(struct fsroot *sys, const struct config *cfg, const struct device *dev,
		  char *why, size_t whylen);

#endif
