/* SPDX-License-Identifier: MIT */
/* The udev monitor: netlink uevents of the core's and the modules' subsystems, split into fields. */
#ifndef HOSTDEVD_UDEV_H
#define HOSTDEVD_UDEV_H

struct udev_watch;

/* One uevent, split into fields (devtype may be NULL). */
typedef void (*udev_uevent_fn)(void *arg, const char *action, const char *subsystem,
			       const char *devtype, const char *sysname, const char *devpath);

/* Creates and enables the monitor for `subsystems` (NULL-terminated: the
 * union of the core's and the modules'), before any coldplug enumeration,
 * so no event falls between; each uevent goes to on_uevent(arg, ...).
 * Returns 0 or -errno. */
int udev_watch_new(const char *const *subsystems, udev_uevent_fn on_uevent, void *arg,
		   struct udev_watch **ret);
void udev_watch_free(struct udev_watch *w);
int udev_watch_fd(const struct udev_watch *w);

/* Reads the queued uevents (a bounded batch) and hands each to the
 * callback. Returns the number handled. */
int udev_watch_drain(struct udev_watch *w);

#endif
