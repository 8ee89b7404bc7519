/* SPDX-License-Identifier: MIT */
/* Early binding, the way driverctl does it: <state-dir>/early-bind/ holds one
 * file per claimed PCI function, named by its address and holding the
 * driver ("vfio-pci"). 60-hostdevd.rules sets driver_override from it when
 * the kernel adds the device at boot, before 80-drivers.rules loads the host
 * driver, so a claimed device is never bound to its host driver first. */
#ifndef HOSTDEVD_EARLYBIND_H
#define HOSTDEVD_EARLYBIND_H

struct claims;

#define EARLY_BIND_DIR "early-bind"

/* Makes the directory match the claims being applied or held (claiming or
 * claimed; not releasing). Returns 0 or the first -errno (it goes on past
 * errors). */
int early_bind_sync(int state_dirfd, const struct claims *c);

#endif
