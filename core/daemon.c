/* SPDX-License-Identifier: MIT */
/* The daemon's state and the policy that reacts to uevents, timers and requests. */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "ctl.h"
#include "ctl-server.h"
#include "claim.h"
#include "daemon-private.h"
#include "dp-names.h"
#include "dp-server.h"
#include "dp.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "modhost.h"
#include "sdnotify.h"
#include "sysfs.h"
#include "udev.h"
#include "worker.h"
#include "scan.h"

/* More uevents than this inside one debounce window turn the rest of the
 * window into one resync at its end. */
#define BURST_MAX 64

struct resync_counts {
	int added, removed, changed;
};
static struct resync_counts *counting;

static int64_t
mono_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* --- events --------------------------------------------------------------- */

/* The modules' event hooks as one deferred bus subscriber: each active
 * module with the hook gets every event but its own. */
static bool
want_events(void *arg)
{
	return modules_want_events(arg);
}

static void
deliver_event(void *arg, const struct bus_event *ev)
{
	modules_event(arg, ev->origin, ev->type, ev->params);
}

static int
subscribe_modules(struct daemon *d)
{
	const struct bus_subscriber sub = {
		.wants = want_events,
		.deliver = deliver_event,
		.arg = d->mods,
		.deferred = true,
	};

	return bus_subscribe(d->bus, &sub);
}

static void
probe_owner(struct daemon *d, struct device *dev)
{
	struct hdd_device_view view;
	const struct module *owner;

	device_view(dev, &view);
	owner = modules_probe(d->mods, &view);
	if (owner != dev->owner && !d->quiet)
		log_debug("daemon", "%s %s: owned by %s", dev_class_to_string(dev->cls), dev->id,
			  owner ? module_name(owner) : "no module");
	dev->owner = owner;
}

/* A device its module owns came, changed or went: the module's hook. */
static void
module_device_event(struct daemon *d, enum inv_event ev, struct device *dev)
{
	static const enum hdd_device_event map[] = {
		[INV_EVENT_ADD] = HDD_DEVICE_ADD,
		[INV_EVENT_CHANGE] = HDD_DEVICE_CHANGE,
		[INV_EVENT_REMOVE] = HDD_DEVICE_REMOVE,
	};
	struct hdd_device_view view;

	if (dev->owner == NULL || d->quiet || (unsigned)ev >= sizeof(map) / sizeof(map[0]))
		return;
	device_view(dev, &view);
	modules_device_event(dev->owner, map[ev], &view);
}

static void
daemon_inv_event(void *arg, enum inv_event ev, struct device *dev, struct device *old,
		 const json_t *changed, const char *source)
{
	struct daemon *d = arg;
	char type[32];
	json_t *params;

	if (ev != INV_EVENT_REMOVE)
		probe_owner(d, dev);
	module_device_event(d, ev, dev);
	if (counting) {
		if (ev == INV_EVENT_ADD)
			counting->added++;
		else if (ev == INV_EVENT_REMOVE)
			counting->removed++;
		else
			counting->changed++;
	}
	if (ev == INV_EVENT_CHANGE && !d->quiet) {
		char *fields = json_dumps(changed, JSON_COMPACT);
		log_info("inventory", "%s %s changed (%s): %s", dev_class_to_string(dev->cls),
			 dev->id, source, fields ? fields : "?");
		free(fields);
	} else if (ev == INV_EVENT_ADD && !d->quiet) {
		log_info("inventory", "%s %s added (%s)", dev_class_to_string(dev->cls), dev->id,
			 source);
	}
	/* The event goes out before the claims react to it: what they do
	 * (a refresh of the same device) comes as events of its own, after. */
	snprintf(type, sizeof(type), "device.%s", inv_event_to_string(ev));
	if (!bus_wanted(d->bus)) {
		bus_publish(d->bus, NULL, type, NULL);
	} else {
		params = json_pack("{s:s, s:s, s:s, s:o}", "class", dev_class_to_string(dev->cls),
				   "id", dev->id, "source", source, "device",
				   ctl_device_json(d->methods, dev));
		if (params && changed)
			json_object_set(params, "changed", (json_t *)changed);
		bus_publish(d->bus, NULL, type, params);
	}
	/* Claimed devices that moved or vanished; config claim rules. Not
	 * before the worker exists: start-up reconciles them all at once. */
	if (d->claims && d->worker)
		claims_device_event(d->claims, dev, ev == INV_EVENT_REMOVE);
	/* Only its membership is recomputed. A claim may have refreshed the
	 * same device meanwhile: then `dev` is no longer the inventory's (the
	 * inventory holds it alive for this call) and the newer one's own
	 * event has updated the device plugins already. */
	if (d->dp && (ev == INV_EVENT_REMOVE || dev->state != DEV_STATE_REMOVED))
		dp_device_changed(d->dp, dev);
}

/* --- inventory policy ------------------------------------------------------ */

int
daemon_resync(struct daemon *d, const char *source, json_t **ret_summary)
{
	struct resync_counts counts = { 0 };
	int64_t t0 = mono_usec();
	int err;

	counting = &counts;
	err = inventory_resync(d->inv, source);
	counting = NULL;
	names_trim(d->names);
	d->stats.resyncs++;
	d->last_resync_wall = time(NULL);
	/* Health reads /dev too, which no uevent announces. */
	dp_resources_changed(d->dp);
	json_decref(d->iommu);
	d->iommu = daemon_read_iommu_state(d);
	if (counts.added || counts.removed || counts.changed)
		log_info("inventory", "resync (%s): %d added, %d removed, %d changed; %zu devices",
			 source, counts.added, counts.removed, counts.changed,
			 inventory_count(d->inv));
	if (ret_summary)
		*ret_summary = json_pack("{s:I, s:i, s:i, s:i, s:f}", "devices",
					 (json_int_t)inventory_count(d->inv), "added", counts.added,
					 "removed", counts.removed, "changed", counts.changed,
					 "duration_ms", (double)(mono_usec() - t0) / 1000.0);
	return err;
}

/* A VF's PF lists it in virtfnN links: refresh the PF along with the VF. */
static void
refresh_pci(struct daemon *d, const char *addr, const char *source)
{
	struct device *dev = inventory_find(d->inv, HDD_DEV_PCI, addr);
	char physfn[16] = "";
	int err;

	if (dev && dev->pci.physfn)
		snprintf(physfn, sizeof(physfn), "%s", dev->pci.physfn);
	err = inventory_refresh(d->inv, HDD_DEV_PCI, addr, source);
	if (err < 0)
		log_warnx("inventory", "pci %s: cannot read after uevent: %s", addr, strerror(-err));
	dev = inventory_find(d->inv, HDD_DEV_PCI, addr);
	if (physfn[0] == '\0' && dev && dev->pci.physfn)
		snprintf(physfn, sizeof(physfn), "%s", dev->pci.physfn);
	if (physfn[0])
		inventory_refresh(d->inv, HDD_DEV_PCI, physfn, source);
}

static void
remove_pci(struct daemon *d, const char *addr, const char *source)
{
	struct device *dev = inventory_find(d->inv, HDD_DEV_PCI, addr);
	char physfn[16] = "";

	if (dev == NULL)
		return;
	if (dev->pci.physfn)
		snprintf(physfn, sizeof(physfn), "%s", dev->pci.physfn);
	inventory_remove(d->inv, HDD_DEV_PCI, addr, source);
	if (physfn[0])
		inventory_refresh(d->inv, HDD_DEV_PCI, physfn, source);
}

/* An mdev came, went or changed: it is in the inventory; its parent's
 * available_instances changed too. */
static void
mdev_uevent(struct daemon *d, const char *action, const char *sysname, const char *devpath,
	    const char *source)
{
	const char *end = strrchr(devpath, '/');
	const char *start;
	char parent[64] = "";

	if (end) {
		start = end;
		while (start > devpath && start[-1] != '/')
			start--;
		if ((size_t)(end - start) < sizeof(parent)) {
			memcpy(parent, start, (size_t)(end - start));
			parent[end - start] = '\0';
		}
	}
	if (!mdev_uuid_valid(sysname)) {
		d->stats.uevents_ignored++;
		return;
	}
	if (strcmp(action, "remove") == 0)
		inventory_remove(d->inv, HDD_DEV_MDEV, sysname, source);
	else
		inventory_refresh(d->inv, HDD_DEV_MDEV, sysname, source);
	if (pci_address_valid(parent))
		refresh_pci(d, parent, source);
}

void
daemon_uevent(struct daemon *d, const char *action, const char *subsystem, const char *devtype,
	      const char *sysname, const char *devpath)
{
	char source[48];

	d->stats.uevents++;
	log_debug("udev", "%s %s %s (%s)", action, subsystem, sysname, devpath);
	if (++d->burst_count == 1)
		loop_arm_debounce(d->loop, d->cfg->debounce_ms);
	if (d->burst_resync)
		return;
	if (d->burst_count > BURST_MAX) {
		log_info("udev", "uevent burst: one resync at the end of the %d ms window",
			 d->cfg->debounce_ms);
		d->burst_resync = true;
		return;
	}
	snprintf(source, sizeof(source), "udev:%.32s", action);

	if (strcmp(subsystem, "pci") == 0) {
		if (!pci_address_valid(sysname)) {
			d->stats.uevents_ignored++;
			return;
		}
		if (strcmp(action, "remove") == 0)
			remove_pci(d, sysname, source);
		else
			refresh_pci(d, sysname, source);
	} else if (strcmp(subsystem, "usb") == 0) {
		char port[32];
		const char *colon = strchr(sysname, ':');

		/* An interface's (un)bind changes its device's interface drivers. */
		if (colon && (size_t)(colon - sysname) < sizeof(port)) {
			memcpy(port, sysname, (size_t)(colon - sysname));
			port[colon - sysname] = '\0';
			if (inventory_find(d->inv, HDD_DEV_USB, port) &&
			    strcmp(action, "add") != 0 && strcmp(action, "remove") != 0)
				inventory_refresh(d->inv, HDD_DEV_USB, port, source);
			return;
		}
		if (devtype && strcmp(devtype, "usb_device") != 0) {
			d->stats.uevents_ignored++;
			return;
		}
		if (strcmp(action, "remove") == 0)
			inventory_remove(d->inv, HDD_DEV_USB, sysname, source);
		else
			inventory_refresh(d->inv, HDD_DEV_USB, sysname, source);
	} else if (strcmp(subsystem, "mdev") == 0) {
		mdev_uevent(d, action, sysname, devpath, source);
	} else if (modules_uevent(d->mods, action, subsystem, sysname, devpath) == 0) {
		d->stats.uevents_ignored++;	/* a subsystem the core does not model */
	}
}

void
daemon_debounce_expired(struct daemon *d)
{
	bool resync = d->burst_resync;

	d->burst_count = 0;
	d->burst_resync = false;
	if (resync) {
		d->stats.debounced_bursts++;
		daemon_resync(d, "udev:burst", NULL);
	}
}

json_t *
daemon_read_iommu_state(struct daemon *d)
{
	static const char *const vfio_mods[] = { "vfio", "vfio_pci", "vfio_iommu_type1", "iommufd" };
	json_t *mods = json_object();
	int groups = 0, fd;

	fd = fsroot_open_dir(d->sys, "kernel/iommu_groups");
	if (fd >= 0) {
		DIR *dir = fdopendir(fd);
		struct dirent *de;

		if (dir) {
			while ((de = readdir(dir)) != NULL)
				groups += de->d_name[0] != '.';
			closedir(dir);
		} else {
			close(fd);
		}
	}
	for (size_t i = 0; i < sizeof(vfio_mods) / sizeof(vfio_mods[0]); i++) {
		char rel[64];

		snprintf(rel, sizeof(rel), "module/%s", vfio_mods[i]);
		json_object_set_new(mods, vfio_mods[i], json_boolean(fsroot_exists(d->sys, rel) == 0));
	}
	return json_pack("{s:b, s:i, s:b, s:b, s:o}",
			 "enabled", groups > 0,
			 "groups", groups,
			 "dev_iommu", d->dev && fsroot_exists(d->dev, "iommu") == 0,
			 "dev_vfio", d->dev && fsroot_exists(d->dev, "vfio/vfio") == 0,
			 "modules", mods);
}

json_t *daemon_status_claims(struct daemon *d);

/* --- start-up and reload ------------------------------------------------- */

static int
make_dir(const char *path, mode_t mode)
{
	char buf[4096];
	struct stat st;

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	/* The last component must be a real directory, not a planted link. */
	if (lstat(buf, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	return 0;
}

static int
lock_state_dir(struct daemon *d)
{
	int dfd, fd, err;

	err = make_dir(d->opts.state_dir, 0700);
	if (err < 0) {
		log_errx("daemon", "state directory %s: %s", d->opts.state_dir, strerror(-err));
		return err;
	}
	dfd = open(d->opts.state_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0) {
		err = -errno;
		log_err("daemon", "cannot open state directory %s", d->opts.state_dir);
		return err;
	}
	fd = openat(dfd, "hostdevd.lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		err = -errno;
		log_err("daemon", "cannot open %s/hostdevd.lock", d->opts.state_dir);
		close(dfd);
		return err;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		err = -errno;
		log_errx("daemon", "another hostdevd is running with state directory %s",
			 d->opts.state_dir);
		close(fd);
		close(dfd);
		return err == -EWOULDBLOCK ? -EBUSY : err;
	}
	d->lock_fd = fd;
	d->state_dirfd = dfd;
	return 0;
}

/* Configuration sections are modules': one no module takes is an unknown
 * key, one its module refused is an error, both naming the file. */
static int
check_sections(struct daemon *d, const struct config *cfg)
{
	const char *key;
	json_t *v;

	json_object_foreach(cfg->sections, key, v) {
		if (!modules_known(d->mods, key)) {
			log_errx("config", "%s: %s: unknown key", d->opts.config_file, key);
			return -EINVAL;
		}
	}
	if (d->mods && d->mods->config_error[0]) {
		log_errx("config", "%s: %s", d->opts.config_file, d->mods->config_error);
		return -EINVAL;
	}
	return 0;
}

/* --- what the reactor calls (loop.h, udev.h) ------------------------------------ */

static void
uevent_cb(void *arg, const char *action, const char *subsystem, const char *devtype,
	  const char *sysname, const char *devpath)
{
	daemon_uevent(arg, action, subsystem, devtype, sysname, devpath);
}

static void
reload_cb(void *arg)
{
	daemon_reload(arg);
}

static void
udev_readable_cb(void *arg)
{
	struct daemon *d = arg;

	if (d->udev)
		udev_watch_drain(d->udev);
}

static void
resync_cb(void *arg)
{
	daemon_resync(arg, "periodic", NULL);
}

static void
debounce_cb(void *arg)
{
	daemon_debounce_expired(arg);
}

static json_t *
ctl_line_cb(void *arg, struct ctl_peer *peer, const char *line, size_t len)
{
	struct daemon *d = arg;

	return ctl_handle_line(d->methods, peer, line, len);
}

static void
ctl_limits(const struct config *cfg, struct ctl_server_limits *limits)
{
	*limits = (struct ctl_server_limits){
		.max_clients = cfg->control_max_clients,
		.max_output = cfg->control_max_output,
		.max_total_output = cfg->control_max_total_output,
		.stall_timeout_s = cfg->control_stall_timeout_s,
		.group = cfg->control_group,
		.gid = cfg->control_gid,
	};
}

int
daemon_open_control(struct daemon *d, struct event_base *base)
{
	const struct ctl_server_hooks hooks = { .handle_line = ctl_line_cb, .arg = d };
	struct ctl_server_limits limits;
	int err;

	ctl_limits(d->cfg, &limits);
	err = ctl_server_new(&hooks, &limits, base, d->opts.control_socket, &d->ctl);
	if (err < 0)
		return err;
	ctl_attach(d->methods, d->loop, d->worker, d->ctl);
	/* events.subscribe streams are one subscriber of the bus */
	err = bus_subscribe(d->bus, &(const struct bus_subscriber){
		.wants = ctl_server_wants_events, .deliver = ctl_server_event, .arg = d->ctl });
	if (err < 0)
		daemon_close_control(d);
	return err;
}

void
daemon_close_control(struct daemon *d)
{
	if (d->ctl == NULL)
		return;
	bus_unsubscribe(d->bus, d->ctl);
	ctl_attach(d->methods, NULL, NULL, NULL);
	ctl_server_free(d->ctl);
	d->ctl = NULL;
}

void
daemon_loop_hooks(struct daemon *d, struct loop_hooks *hooks)
{
	*hooks = (struct loop_hooks){
		.reload = reload_cb,
		.udev_readable = udev_readable_cb,
		.resync = resync_cb,
		.debounce_expired = debounce_cb,
		.arg = d,
	};
}

/* The udev monitor, then the coldplug scan: a device that appears in
 * between is in the monitor's queue. The monitor's filter is the core's
 * subsystems and the modules'. */
static void
coldplug(struct daemon *d)
{
	const char **subsystems;
	int err;

	subsystems = modules_subsystems(d->mods);
	err = subsystems ? udev_watch_new(subsystems, uevent_cb, d, &d->udev) : -ENOMEM;
	free((void *)subsystems);
	if (err < 0) {
		log_warnx("udev", "no udev monitor (%s): hotplug is seen by the periodic resync and daemon.rescan only",
			  strerror(-err));
		d->udev = NULL;
	}
	d->quiet = true;
	err = daemon_resync(d, "coldplug", NULL);
	d->quiet = false;
	if (err < 0)
		log_warnx("daemon", "coldplug scan of %s was incomplete: %s", d->opts.sysfs_root,
			  strerror(-err));
	log_info("daemon", "%zu devices on %s (sysfs %s) in %.1f ms; %s", inventory_count(d->inv),
		 d->node_name, d->opts.sysfs_root, (double)inventory_last_resync_usec(d->inv) / 1000.0,
		 json_is_true(json_object_get(d->iommu, "enabled")) ? "IOMMU on"
		 : "IOMMU off or no groups (intel_iommu=on / amd_iommu=on, VT-d / AMD-Vi in firmware)");
}

static void
held_groups_changed(void *arg)
{
	struct daemon *d = arg;

	dp_resources_changed(d->dp);
}

static int
new_claims(struct daemon *d)
{
	const struct claims_env env = {
		.sys = d->sys, .dev = d->dev, .inv = d->inv, .bus = d->bus,
		.state_dir = d->opts.state_dir, .dev_root = d->opts.dev_root,
		.changed = held_groups_changed, .changed_arg = d,
	};

	return claims_new(&env, d->cfg, d->state_dirfd, &d->claims);
}

/* daemon.status's facts of the daemon itself (ctl.h). */
static void
status_facts(void *arg, struct ctl_facts *f)
{
	const struct daemon *d = arg;

	*f = (struct ctl_facts){
		.node_name = d->node_name, .started_usec = d->started_usec,
		.sysfs_root = d->opts.sysfs_root, .dev_root = d->opts.dev_root,
		.kubelet_dir = d->opts.kubelet_dir, .control_socket = d->opts.control_socket,
		.state_dir = d->opts.state_dir, .config_file = d->opts.config_file,
		.module_dir = d->opts.module_dir, .iommu = d->iommu,
		.last_resync_wall = d->last_resync_wall, .uevents = d->stats.uevents,
		.uevents_ignored = d->stats.uevents_ignored, .resyncs = d->stats.resyncs,
		.debounced_bursts = d->stats.debounced_bursts,
	};
}

static int
rescan(void *arg, json_t **summary)
{
	return daemon_resync(arg, "rescan", summary);
}

static int
new_methods(struct daemon *d)
{
	const struct ctl_env env = {
		.inv = d->inv, .mods = d->mods, .claims = d->claims, .bus = d->bus, .dp = d->dp,
		.sys = d->sys, .facts = status_facts, .rescan = rescan, .arg = d,
	};

	return ctl_new(&env, d->cfg, &d->methods);
}

static int
new_dp(struct daemon *d)
{
	const struct dp_env env = {
		.inv = d->inv, .claims = d->claims, .mods = d->mods, .dev = d->dev,
		.kubelet_dir = d->opts.kubelet_dir,
	};

	return dp_new(&env, d->cfg, &d->dp);
}

int
daemon_init(struct daemon *d, const struct options *opts)
{
	char errbuf[512];
	int err, level;

	memset(d, 0, sizeof(*d));
	d->opts = *opts;
	d->lock_fd = -1;
	d->state_dirfd = -1;
	d->started_usec = mono_usec();
	err = bus_new(&d->bus);
	if (err < 0)
		return err;
	if (opts->node_name) {
		snprintf(d->node_name, sizeof(d->node_name), "%s", opts->node_name);
	} else if (gethostname(d->node_name, sizeof(d->node_name) - 1) < 0) {
		snprintf(d->node_name, sizeof(d->node_name), "localhost");
	}

	err = config_load(opts->config_file, &d->cfg, errbuf, sizeof(errbuf));
	if (err < 0) {
		log_errx("config", "%s", err == -ENOMEM ? "out of memory" : errbuf);
		return err;
	}
	level = opts->log_level >= 0 ? opts->log_level :
		d->cfg->log_level >= 0 ? d->cfg->log_level : HDD_LOG_INFO;
	log_set_level((enum hdd_log_level)level);

	err = fsroot_new(opts->sysfs_root, &d->sys);
	if (err < 0) {
		log_errx("daemon", "sysfs root %s: %s", opts->sysfs_root, strerror(-err));
		return err;
	}
	err = fsroot_new(opts->dev_root, &d->dev);
	if (err < 0) {
		log_errx("daemon", "dev root %s: %s", opts->dev_root, strerror(-err));
		return err;
	}
	err = lock_state_dir(d);
	if (err < 0)
		return err;
	err = names_new(opts->pci_ids, opts->usb_ids, &d->names);
	if (err < 0)
		return err;
	err = inventory_new(d->sys, d->names, daemon_inv_event, d, &d->inv);
	if (err < 0)
		return err;
	d->modenv = (struct modhost_env){
		.sys = d->sys, .dev = d->dev, .dev_root = d->opts.dev_root,
		.node_name = d->node_name, .inv = d->inv,
		.bus = d->bus, .cfg = d->cfg,
	};
	err = modules_load_dir(opts->module_dir, d->cfg, &modhost_ops, &d->modenv, &d->mods);
	if (err < 0)
		return err;
	err = subscribe_modules(d);
	if (err < 0)
		return err;
	err = check_sections(d, d->cfg);
	if (err < 0)
		return err;
	err = new_claims(d);
	if (err < 0)
		return err;
	err = new_dp(d);
	if (err < 0)
		return err;
	err = new_methods(d);
	if (err < 0)
		return err;
	d->modenv.dp = d->dp;
	d->modenv.claims = d->claims;

	coldplug(d);
	return 0;
}

void
daemon_fini(struct daemon *d)
{
	ctl_free(d->methods);
	ctl_requests_free();
	claims_free(d->claims);
	dp_free(d->dp);
	inventory_free(d->inv);
	modules_free(d->mods);
	bus_free(d->bus);
	udev_watch_free(d->udev);
	names_free(d->names);
	fsroot_free(d->sys);
	fsroot_free(d->dev);
	config_free(d->cfg);
	json_decref(d->iommu);
	if (d->lock_fd >= 0)
		close(d->lock_fd);
	if (d->state_dirfd >= 0)
		close(d->state_dirfd);
	memset(d, 0, sizeof(*d));
	d->lock_fd = -1;
	d->state_dirfd = -1;
}

int
daemon_reload(struct daemon *d)
{
	struct config *cfg;
	char errbuf[512];
	int err;

	sd_notify_send("RELOADING=1\nSTATUS=reloading the configuration");
	err = config_reload(d->opts.config_file, &cfg, errbuf, sizeof(errbuf));
	if (err == 0) {
		char why[400] = "";

		/* Every module checks its section before anything changes. */
		err = modules_reload(d->mods, cfg, why, sizeof(why));
		if (err < 0) {
			snprintf(errbuf, sizeof(errbuf), "%s: %s", d->opts.config_file, why);
			config_free(cfg);
		}
	}
	if (err < 0) {
		log_errx("config", "reload failed, keeping the old configuration: %s", errbuf);
		bus_publish(d->bus, NULL, "config.reload_failed", json_pack("{s:s}", "error", errbuf));
		sd_notify_sendf("READY=1\nSTATUS=reload failed, old configuration kept: %s", errbuf);
		return err;
	}
	if (d->opts.log_level < 0)
		log_set_level(cfg->log_level >= 0 ? (enum hdd_log_level)cfg->log_level : HDD_LOG_INFO);
	claims_set_config(d->claims, cfg);
	dp_set_config(d->dp, cfg);
	if (d->methods)
		ctl_set_config(d->methods, cfg);
	d->modenv.cfg = cfg;
	config_free(d->cfg);
	d->cfg = cfg;
	if (d->loop)
		loop_set_resync_interval(d->loop, cfg->resync_interval);
	if (d->ctl) {
		struct ctl_server_limits limits;

		ctl_limits(cfg, &limits);
		ctl_server_set_limits(d->ctl, &limits);
	}
	dp_resources_changed(d->dp);	/* resource rules may have changed */
	log_info("config", "reloaded %s (module changes take effect at the next start)",
		 d->opts.config_file);
	bus_publish(d->bus, NULL, "config.reloaded", json_pack("{s:s}", "config", d->opts.config_file));
	sd_notify_send("READY=1\nSTATUS=configuration reloaded");
	return 0;
}

/* --- the process's life ------------------------------------------------ */

/* What a metrics scrape shows (metrics.h), taken when it comes. */
static int
metrics_snapshot(void *arg, struct metrics_view *v)
{
	struct daemon *d = arg;

	memset(v, 0, sizeof(*v));
	v->node = d->node_name;
	v->status = ctl_status_json(d->methods);
	v->modules = ctl_modules_json(d->methods);
	v->resources = d->dp ? dp_resources_json(d->dp) : json_array();
	if (v->status == NULL || v->modules == NULL || v->resources == NULL) {
		metrics_view_release(v);
		return -ENOMEM;
	}
	claims_summarize(d->claims, &v->claims);
	v->uevents = d->stats.uevents;
	v->uevents_ignored = d->stats.uevents_ignored;
	v->resyncs = d->stats.resyncs;
	v->debounced_bursts = d->stats.debounced_bursts;
	v->events_sent = d->ctl ? ctl_server_events_sent(d->ctl) : 0;
	v->worker_restarts = d->worker ? worker_restarts(d->worker) : 0;
	return 0;
}

static void
signal_ready(int fd)
{
	if (fd >= 0) {
		ssize_t n;

		do {
			n = write(fd, "READY\n", 6);
		} while (n < 0 && errno == EINTR);
		if (n != 6)
			log_warn("daemon", "cannot write READY to fd %d", fd);
		close(fd);
	}
}

/* systemd's READY=1 (and /readyz) waits until the recorded claims have been
 * re-applied: no claim job left in flight. */
static void
ready_when_settled(void *arg)
{
	struct daemon *d = arg;
	struct claims_summary sum;

	claims_summarize(d->claims, &sum);
	if (sum.busy > 0 && loop_call_later(d->loop, 50, ready_when_settled, d) == 0) {
		sd_notify_sendf("STATUS=re-applying %zu recorded claims", sum.busy);
		return;
	}
	metrics_set_ready(true);
	if (sum.fail_closed)
		sd_notify_sendf("READY=1\nSTATUS=failing closed: %s", sum.fail_reason);
	else
		sd_notify_sendf("READY=1\nSTATUS=serving: %zu claims", sum.n);
}

/* The bus's deferred subscribers run from the loop, on its next turn. */
static int
bus_schedule(void *arg, void (*fn)(void *fnarg), void *fnarg)
{
	return loop_call_later(arg, 0, fn, fnarg);
}

/* The control socket, the kubelet's device plugins and the metrics
 * listener. Returns 0 or -errno after logging why. */
static int
open_listeners(struct daemon *d, struct event_base *base, const struct options *opts,
	       struct metrics_server **metrics)
{
	int err;

	err = daemon_open_control(d, base);
	if (err < 0) {
		log_errx("daemon", "control socket %s: %s", opts->control_socket, strerror(-err));
		return err;
	}
	err = dp_server_new(d->dp, d->bus, opts->kubelet_dir, opts->dev_root, base, &d->dps);
	if (err < 0) {
		log_errx("daemon", "device plugins: %s", strerror(-err));
		return err;
	}
	dp_attach_server(d->dp, d->dps);
	dp_server_kick(d->dps);	/* first membership, sockets, Register */
	if (opts->metrics_address) {
		err = metrics_server_new(base, opts->metrics_address, metrics_snapshot, d,
					 metrics);
		if (err < 0) {
			log_errx("daemon", "metrics listener %s: %s", opts->metrics_address,
				 strerror(-err));
			return err;
		}
		log_info("daemon", "metrics on http://%s/metrics", opts->metrics_address);
	}
	return 0;
}

/* The daemon proper: start-up, the event loop, the orderly stop. Returns
 * the exit status. */
int
daemon_run(const struct options *o)
{
	struct options opts = *o;
	struct daemon d;
	struct loop *loop = NULL;
	struct loop_hooks hooks;
	struct metrics_server *metrics = NULL;
	int err, rc = EXIT_FAILURE;

	sd_notify_send("STATUS=reading the inventory and the recorded claims");
	proc_root_set(opts.proc_root);	/* before the worker starts: it inherits it */
	if (daemon_init(&d, &opts) < 0)
		goto out;
	daemon_loop_hooks(&d, &hooks);
	err = loop_new(&hooks, d.cfg->resync_interval, &loop);
	if (err < 0) {
		log_errx("daemon", "cannot set up the event loop: %s", strerror(-err));
		goto out;
	}
	d.loop = loop;
	d.modenv.loop = loop;
	bus_set_scheduler(d.bus, bus_schedule, loop);
	if (d.udev && loop_watch_udev(loop, udev_watch_fd(d.udev)) < 0) {
		log_errx("daemon", "cannot watch the udev monitor");
		goto out;
	}
	/* The worker is forked before any outside input is read; then the
	 * recorded claims are re-applied before anything else can bind. */
	err = worker_new(loop_base(loop), opts.sysfs_root, opts.dev_root, &d.worker);
	if (err < 0) {
		log_errx("daemon", "cannot start the worker process: %s", strerror(-err));
		goto out;
	}
	claims_attach(d.claims, loop, d.worker);
	d.modenv.worker = d.worker;
	sd_notify_send("STATUS=re-applying recorded claims");
	claims_reconcile(d.claims, "start");
	/* Modules re-apply what their state sections record, before the control
	 * socket opens and before any resource registers. */
	modules_start(d.mods);
	if (open_listeners(&d, loop_base(loop), &opts, &metrics) < 0)
		goto out;
	if (sd_watchdog_start(loop_base(loop)) < 0)
		log_warnx("daemon", "cannot start the systemd watchdog timer");
	log_info("daemon", "hostdevd %s ready (pid %d)", PACKAGE_VERSION, (int)getpid());
	signal_ready(opts.ready_fd);
	opts.ready_fd = -1;
	ready_when_settled(&d);

	if (loop_run(loop) == 0)
		rc = EXIT_SUCCESS;
	sd_notify_send("STOPPING=1\nSTATUS=stopping");
	modules_stop(d.mods);
out:
	sd_watchdog_stop();
	metrics_server_free(metrics);
	if (opts.ready_fd >= 0)
		close(opts.ready_fd);
	if (d.dp)
		dp_attach_server(d.dp, NULL);
	dp_server_free(d.dps);
	d.dps = NULL;
	daemon_close_control(&d);
	d.modenv.worker = NULL;
	d.modenv.loop = NULL;
	if (d.claims)
		claims_attach(d.claims, NULL, NULL);
	worker_free(d.worker);
	d.worker = NULL;
	if (d.bus)
		bus_set_scheduler(d.bus, NULL, NULL);
	d.loop = NULL;
	loop_free(loop);
	daemon_fini(&d);
	return rc;
}

