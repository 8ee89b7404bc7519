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

#include "ctl.h"
#include "ctl-server.h"
#include "ctl.h"
#include "claim.h"
#include "daemon.h"
#include "dp-names.h"
#include "dp-server.h"
#include "dp.h"
#include "log.h"
#include "loop.h"
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

void
daemon_emit(struct daemon *d, const char *type, json_t *params)
{
	struct timespec ts;
	json_t *note;

	if (params == NULL)
		return;
	d->event_seq++;
	if (d->ctl == NULL || !ctl_server_has_subscribers(d->ctl)) {
		json_decref(params);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	json_object_set_new(params, "seq", json_integer((json_int_t)d->event_seq));
	json_object_set_new(params, "type", json_string(type));
	json_object_set_new(params, "time",
			    json_real((double)ts.tv_sec + (double)ts.tv_nsec / 1e9));
	note = json_pack("{s:s, s:s, s:o}", "jsonrpc", "2.0", "method", "event", "params", params);
	if (note == NULL)
		return;
	d->stats.events_sent++;
	ctl_server_broadcast(d->ctl, note, type);
	json_decref(note);
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
			  owner ? owner->desc->name : "no module");
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
	if (d->ctl == NULL || !ctl_server_has_subscribers(d->ctl)) {
		d->event_seq++;
	} else {
		snprintf(type, sizeof(type), "device.%s", inv_event_to_string(ev));
		params = json_pack("{s:s, s:s, s:s, s:o}", "class", dev_class_to_string(dev->cls),
				   "id", dev->id, "source", source, "device",
				   daemon_device_json(d, dev));
		if (params && changed)
			json_object_set(params, "changed", (json_t *)changed);
		daemon_emit(d, type, params);
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
	if (d->dp) {
		/* Health reads /dev too, which no uevent announces. */
		d->dp->dirty = true;
		dp_server_kick(d->dps);
	}
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

json_t *
daemon_mdev_parents_json(struct daemon *d)
{
	json_t *out = json_array();
	struct dirent *de;
	DIR *dir;
	int fd = fsroot_open_dir(d->sys, "class/mdev_bus");

	if (fd < 0)
		return out;
	dir = fdopendir(fd);
	if (dir == NULL) {
		close(fd);
		return out;
	}
	while ((de = readdir(dir)) != NULL) {
		char target[1024];
		json_t *types;

		if (de->d_name[0] == '.' ||
		    fsroot_readlink(d->sys, "class/mdev_bus", -1, de->d_name, target, sizeof(target)) < 0)
			continue;
		types = scan_mdev_types(d->sys, target);
		json_array_append_new(out, json_pack("{s:s, s:b, s:o}", "parent", de->d_name, "pci",
						     pci_address_valid(de->d_name), "types",
						     types ? types : json_array()));
	}
	closedir(dir);
	return out;
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

/* --- views ---------------------------------------------------------------- */

json_t *
daemon_device_json(struct daemon *d, struct device *dev)
{
	json_t *o = device_facts_json(dev);

	if (o == NULL)
		return NULL;
	json_object_set_new(o, "module", dev->owner ? json_string(dev->owner->desc->name)
						     : json_null());
	if (dev->cls == HDD_DEV_PCI) {
		struct device *members[64];
		size_t n = inventory_group_members(d->inv, dev->pci.f.iommu_group, members, 64);
		json_t *peers = json_array();

		for (size_t i = 0; i < n && i < 64; i++)
			if (members[i] != dev)
				json_array_append_new(peers, json_string(members[i]->id));
		json_object_set_new(o, "iommu_group_members", peers);
	}
	if (dev->owner) {
		struct hdd_device_view view;
		json_t *info;

		device_view(dev, &view);
		info = module_describe(dev->owner, &view);
		if (info)
			json_object_set_new(o, "module_info", info);
	}
	return o;
}

json_t *
daemon_modules_json(struct daemon *d)
{
	json_t *out = json_array();

	for (size_t i = 0; out && d->mods && i < d->mods->n; i++) {
		const struct module *m = d->mods->v[i];
		json_t *subs = json_array(), *methods = json_array(), *o;
		size_t owned = 0;
		char abi[24];

		if (m->desc && m->desc->subsystems)
			for (const char *const *s = m->desc->subsystems; *s; s++)
				json_array_append_new(subs, json_string(*s));
		for (const struct hdd_method *x = m->desc ? m->desc->methods : NULL; x && x->name; x++)
			json_array_append_new(methods, json_string(x->name));
		module_abi_string(m, abi, sizeof(abi));
		for (size_t j = 0; j < inventory_count(d->inv); j++)
			owned += inventory_at(d->inv, j)->owner == m;
		o = json_pack("{s:s?, s:s?, s:s?, s:i, s:s, s:b, s:s?, s:o, s:o, s:I}",
			      "name", m->desc ? m->desc->name : NULL,
			      "description", m->desc ? m->desc->description : NULL,
			      "path", m->path,
			      "abi_version", m->abi_major ? (int)m->abi_major : -1,
			      "abi", abi,
			      "active", m->active,
			      "error", m->error,
			      "subsystems", subs,
			      "methods", methods,
			      "devices", (json_int_t)owned);
		if (m->active) {
			json_object_set_new(o, "ready", json_boolean(!m->unready));
			json_object_set_new(o, "reason", m->unready && m->unready_reason
						   ? json_string(m->unready_reason) : json_null());
		}
		json_array_append_new(out, o);
	}
	return out;
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

static json_t *daemon_status_base(struct daemon *d);

json_t *
daemon_status_json(struct daemon *d)
{
	json_t *o = daemon_status_base(d);

	if (o) {
		json_object_set_new(o, "claims", daemon_status_claims(d));
		json_object_set_new(o, "worker", d->worker ? json_pack("{s:i, s:I}", "pid",
			worker_pid(d->worker), "restarts", (json_int_t)worker_restarts(d->worker))
			: json_null());
	}
	return o;
}

static json_t *
daemon_status_base(struct daemon *d)
{
	size_t npci = 0, nusb = 0, nmdev = 0, nmods = 0;

	for (size_t i = 0; i < inventory_count(d->inv); i++) {
		enum hdd_dev_class cls = inventory_at(d->inv, i)->cls;

		npci += cls == HDD_DEV_PCI;
		nusb += cls == HDD_DEV_USB;
		nmdev += cls == HDD_DEV_MDEV;
	}
	for (size_t i = 0; d->mods && i < d->mods->n; i++)
		nmods += d->mods->v[i]->active;
	return json_pack("{s:s, s:s, s:i, s:f, s:{s:s, s:s, s:s, s:s, s:s, s:s, s:s}, s:s,"
			 " s:{s:I, s:I, s:I}, s:I, s:O, s:{s:I, s:f, s:i},"
			 " s:{s:I, s:I, s:I, s:I, s:I}, s:{s:i, s:i}}",
			 "version", PACKAGE_VERSION,
			 "node_name", d->node_name,
			 "pid", (int)getpid(),
			 "uptime_s", (double)(mono_usec() - d->started_usec) / 1e6,
			 "paths",
			 "sysfs_root", d->opts.sysfs_root,
			 "dev_root", d->opts.dev_root,
			 "kubelet_dir", d->opts.kubelet_dir,
			 "control_socket", d->opts.control_socket,
			 "state_dir", d->opts.state_dir,
			 "config", d->opts.config_file,
			 "module_dir", d->opts.module_dir,
			 "log_level", log_level_to_string(log_get_level()),
			 "devices", "pci", (json_int_t)npci, "usb", (json_int_t)nusb, "mdev",
			 (json_int_t)nmdev,
			 "modules", (json_int_t)nmods,
			 "iommu", d->iommu ? d->iommu : json_null(),
			 "resync",
			 "last", (json_int_t)d->last_resync_wall,
			 "last_duration_ms", (double)inventory_last_resync_usec(d->inv) / 1000.0,
			 "interval_s", d->cfg->resync_interval,
			 "stats",
			 "uevents", (json_int_t)d->stats.uevents,
			 "uevents_ignored", (json_int_t)d->stats.uevents_ignored,
			 "resyncs", (json_int_t)d->stats.resyncs,
			 "debounced_bursts", (json_int_t)d->stats.debounced_bursts,
			 "events_sent", (json_int_t)d->stats.events_sent,
			 "control",
			 "clients", d->ctl ? ctl_server_clients(d->ctl) : 0,
			 "subscribers", d->ctl ? ctl_server_subscribers(d->ctl) : 0);
}

json_t *
daemon_status_claims(struct daemon *d)
{
	return d->claims ? json_pack("{s:I, s:b, s:s?}", "count", (json_int_t)d->claims->n,
				     "fail_closed", d->claims->fail_closed, "fail_reason",
				     d->claims->fail_closed ? d->claims->fail_reason : NULL)
			 : json_null();
}

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

int
daemon_init(struct daemon *d, const struct options *opts)
{
	const char **subsystems;
	char errbuf[512];
	int err, level;

	memset(d, 0, sizeof(*d));
	d->opts = *opts;
	d->lock_fd = -1;
	d->state_dirfd = -1;
	d->started_usec = mono_usec();
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
	err = modules_load_dir(opts->module_dir, d->cfg, &modhost_ops, d, &d->mods);
	if (err < 0)
		return err;
	err = check_sections(d, d->cfg);
	if (err < 0)
		return err;
	err = dp_new(d, &d->dp);
	if (err < 0)
		return err;
	err = claims_new(d, d->state_dirfd, &d->claims);
	if (err < 0)
		return err;

	/* Monitor first, enumerate second: a device that appears in between is
	 * in the monitor's queue. Its filter: the core's subsystems and the
	 * modules'. */
	subsystems = modules_subsystems(d->mods);
	err = subsystems ? udev_watch_new(subsystems, &d->udev) : -ENOMEM;
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
		log_warnx("daemon", "coldplug scan of %s was incomplete: %s", opts->sysfs_root,
			  strerror(-err));
	log_info("daemon", "%zu devices on %s (sysfs %s) in %.1f ms; %s", inventory_count(d->inv),
		 d->node_name, opts->sysfs_root, (double)inventory_last_resync_usec(d->inv) / 1000.0,
		 json_is_true(json_object_get(d->iommu, "enabled")) ? "IOMMU on"
		 : "IOMMU off or no groups (intel_iommu=on / amd_iommu=on, VT-d / AMD-Vi in firmware)");
	return 0;
}

void
daemon_fini(struct daemon *d)
{
	ctl_jobs_free(d);
	ctl_requests_free();
	claims_free(d->claims);
	dp_free(d->dp);
	inventory_free(d->inv);
	modules_free(d->mods);
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
		daemon_emit(d, "config.reload_failed", json_pack("{s:s}", "error", errbuf));
		sd_notify_sendf("READY=1\nSTATUS=reload failed, old configuration kept: %s", errbuf);
		return err;
	}
	if (d->opts.log_level < 0)
		log_set_level(cfg->log_level >= 0 ? (enum hdd_log_level)cfg->log_level : HDD_LOG_INFO);
	config_free(d->cfg);
	d->cfg = cfg;
	if (d->loop)
		loop_set_resync_interval(d->loop, cfg->resync_interval);
	if (d->ctl)
		ctl_server_set_limits(d->ctl, cfg->control_max_clients, cfg->control_max_output);
	if (d->dp) {
		/* Resource rules may have changed. */
		d->dp->dirty = true;
		dp_server_kick(d->dps);
	}
	log_info("config", "reloaded %s (module changes take effect at the next start)",
		 d->opts.config_file);
	daemon_emit(d, "config.reloaded", json_pack("{s:s}", "config", d->opts.config_file));
	sd_notify_send("READY=1\nSTATUS=configuration reloaded");
	return 0;
}
