/* SPDX-License-Identifier: MIT */
/* The udev monitor: netlink uevents of the core's and the modules' subsystems, split into fields. */
#include "config.h"

#include <errno.h>
#include <libudev.h>
#include <stdlib.h>

#include "log.h"
#include "udev.h"

#define UDEV_RCVBUF (128 * 1024 * 1024)
#define UDEV_BATCH 256

struct udev_watch {
	struct udev *udev;
	struct udev_monitor *mon;
	udev_uevent_fn on_uevent;
	void *arg;
};

int
udev_watch_new(const char *const *subsystems, udev_uevent_fn on_uevent, void *arg,
	       struct udev_watch **ret)
{
	struct udev_watch *w = calloc(1, sizeof(*w));
	int err;

	if (w == NULL)
		return -ENOMEM;
	w->on_uevent = on_uevent;
	w->arg = arg;
	w->udev = udev_new();
	if (w->udev == NULL) {
		err = -ENOMEM;
		goto fail;
	}
	w->mon = udev_monitor_new_from_netlink(w->udev, "udev");
	if (w->mon == NULL) {
		err = errno ? -errno : -EPROTONOSUPPORT;
		goto fail;
	}
	for (size_t i = 0; subsystems[i]; i++) {
		err = udev_monitor_filter_add_match_subsystem_devtype(w->mon, subsystems[i], NULL);
		if (err < 0)
			goto fail;
	}
	/* A VF storm or a rebind burst can queue thousands of events. */
	if (udev_monitor_set_receive_buffer_size(w->mon, UDEV_RCVBUF) < 0)
		log_debug("udev", "cannot raise the monitor's receive buffer");
	err = udev_monitor_enable_receiving(w->mon);
	if (err < 0)
		goto fail;
	*ret = w;
	return 0;
fail:
	udev_watch_free(w);
	return err < 0 ? err : -EIO;
}

void
udev_watch_free(struct udev_watch *w)
{
	if (w == NULL)
		return;
	if (w->mon)
		udev_monitor_unref(w->mon);
	if (w->udev)
		udev_unref(w->udev);
	free(w);
}

int
udev_watch_fd(const struct udev_watch *w)
{
	return udev_monitor_get_fd(w->mon);
}

int
udev_watch_drain(struct udev_watch *w)
{
	int n = 0;

	/* Bounded so one flood cannot starve the kubelet and control clients;
	 * the fd stays readable and the loop comes back. */
	while (n < UDEV_BATCH) {
		struct udev_device *ud = udev_monitor_receive_device(w->mon);
		const char *action, *subsystem, *sysname, *devpath;

		if (ud == NULL)
			break;
		n++;
		action = udev_device_get_action(ud);
		subsystem = udev_device_get_subsystem(ud);
		sysname = udev_device_get_sysname(ud);
		devpath = udev_device_get_devpath(ud);
		if (action && subsystem && sysname && devpath)
			w->on_uevent(w->arg, action, subsystem, udev_device_get_devtype(ud),
				     sysname, devpath);
		udev_device_unref(ud);
	}
	return n;
}
