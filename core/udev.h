/* SPDX-License-Identifier: MIT */
/* The udev monitor: netlink uevents of the core's and the modules' subsystems, split into fields. */
#ifndef HOSTDEVD_UDEV_H
#define HOSTDEVD_UDEV_H

struct udev_watch;
struct daemon;

/* Creates and enables the monitor for `subsystems` (NULL-terminated: the
 * union of the core's and the modules'), before any coldplug enumeration,
 * so no event falls between. Returns 0 or -errno. */
int udev_watch_new(const char *const *subsystems, struct udev_watch **ret);
void udev_watch_free(struct udev_watch *w);
int udev_watch_fd(const struct udev_watch *w);

/* Reads every queued uevent and hands each to daemon_uevent. Returns the
 * number handled. */
int udev_watch_drain(struct udev_watch *w, struct daemon *d);

#endif
