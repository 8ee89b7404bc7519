/* SPDX-License-Identifier: MIT */
/* Early binding, the way driverctl does it: <state-dir>/early-bind/ holds one
 * file per claimed PCI function, named by its address and holding the
 * driver ("vfio-pci"). 60-hostdevd.rules sets driver_override from it when
 * the kernel adds the device at boot, before 80-drivers.rules loads the host
 * driver, so a claimed device is never bound to its host driver first. */
#ifndef HOSTDEVD_EARLYBIND_H
#define HOSTDEVD_EARLYBIND_H


#define EARLY_BIND_DIR "early-bind"

/* The entries the last successful sync left (sorted addresses). */
struct early_bind {
	char (*v)[16];
	size_t n;
};

/* Makes the directory match `want` (the PCI functions of the claims being
 * applied or held, in any order, duplicates allowed). *known (NULL at first: the directory is read
 * then) is what the last sync left, replaced by what this one leaves, or
 * NULL after an error. Returns 0 or the first -errno (it goes on past
 * errors). */
int early_bind_sync(int state_dirfd, const char (*want)[16], size_t n,
		    struct early_bind **known);
void early_bind_free(struct early_bind *eb);

#endif
