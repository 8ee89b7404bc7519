/* SPDX-License-Identifier: MIT */
/* usb: offers USB devices to VMs as KubeVirt's USB_RESOURCE_ plugins, stable across replug. */
#define _GNU_SOURCE	/* O_PATH, AT_EMPTY_PATH */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "hostdevd/module.h"
#include "usb.h"

#define USB_CLASS_HUB 0x09
#define USB_DEVICE_MAJOR 189		/* usb_device: /dev/bus/usb/BBB/DDD */
#define USB_RECHECK_MS 5000		/* mounts change without a USB uevent */
#define USB_MAX_MOUNTS 4096

/*
 * A device is known by its key: "vvvv:pppp-SERIAL" when it has a serial
 * number no other present device of the same ids shares, else
 * "vvvv:pppp@PORT". The key outlives a replug (new devnum) and a restart
 * (state.json); its bus:dev is read again at every Allocate.
 */
struct usb_dev {
	char key[HDD_ID_MAX + 1];
	char port[USB_PORT_MAX];
	char serial[USB_SERIAL_MAX];	/* as the device reports it, "" when none */
	int vendor, product, busnum, devnum, cls;
	bool present;
	bool hub;
	char why[192];			/* why it is never offered now, "" if it may be */
};

/* One plugin device: a device per selector of its rule (one device for an
 * unlisted one). Kept while its devices are away: Unhealthy, same id. */
struct usb_set {
	char id[HDD_ID_MAX + 1];
	char resource[USB_RESOURCE_MAX];
	bool unlisted;
	size_t n;
	char keys[USB_MAX_SELECTORS][HDD_ID_MAX + 1];
	bool healthy;
	long allocations;
};

struct usb_mount {
	unsigned maj, min;
	char point[256];
	char source[128];
	bool swap;
};

struct usb_state {
	const struct hdd_core_ops *ops;
	struct hdd_core *core;
	struct usb_conf conf;
	struct usb_dev *devs;
	size_t ndevs;
	struct usb_set *sets;
	size_t nsets;
	char **published;		/* resources last given to resource_set */
	size_t npublished;
	json_t *published_snap;		/* {resource: [[id, healthy]...]} as last given */
	char **ambiguous;		/* serial keys two devices shared: port keys for them */
	size_t nambiguous;
	json_t *saved;			/* the section last put */
	struct usb_mount *mounts;	/* read once per refresh */
	size_t nmounts;
	json_t *pending;		/* [[event, params]...] not yet emitted */
	int64_t emit_timer;
	int64_t recheck_timer;
	bool started;
};

static void usb_refresh(struct usb_state *st);

static void
emit_cb(void *arg)
{
	struct usb_state *st = arg;
	json_t *pending = st->pending, *v;
	size_t i;

	st->emit_timer = 0;
	st->pending = NULL;
	json_array_foreach(pending, i, v)
		st->ops->emit(st->core, json_string_value(json_array_get(v, 0)),
			      json_incref(json_array_get(v, 1)));
	json_decref(pending);
}

/* Emits "usb.<event>" on the next loop turn: after the core's own
 * device.* event for the uevent that caused it. Steals params. */
static void
emit_later(struct usb_state *st, const char *event, json_t *params)
{
	int64_t id;

	if (params == NULL)
		return;
	if (st->pending == NULL && (st->pending = json_array()) == NULL) {
		json_decref(params);
		return;
	}
	json_array_append_new(st->pending, json_pack("[s, o]", event, params));
	if (st->emit_timer > 0)
		return;
	id = st->ops->timer_add(st->core, 0, emit_cb, st);
	if (id > 0)
		st->emit_timer = id;
	else
		emit_cb(st);	/* no loop yet: now rather than never */
}

/* --- small helpers ------------------------------------------------------------ */

static uint64_t
fnv1a(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
	return h;
}

/* An id of at most HDD_ID_MAX characters: `s` itself, or its head and a hash. */
static void
id_fit(const char *s, char *out, size_t size)
{
	if (strlen(s) <= HDD_ID_MAX)
		snprintf(out, size, "%s", s);
	else
		snprintf(out, size, "%.47s~%016llx", s, (unsigned long long)fnv1a(s));
}

/* Reads sysfs attribute bus/usb/devices/<port>/<name> (trailing newline cut). */
static int
read_attr(struct usb_state *st, const char *port, const char *name, char *buf, size_t size)
{
	char rel[128];
	ssize_t n;
	int fd;

	if (st->ops->sysfs_fd(st->core) < 0)
		return -EBADF;
	snprintf(rel, sizeof(rel), "bus/usb/devices/%s/%s", port, name);
	fd = openat(st->ops->sysfs_fd(st->core), rel, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	return (int)n;
}

static int
read_num(struct usb_state *st, const char *port, const char *name, int base)
{
	char buf[32], *end;
	long v;
	int n = read_attr(st, port, name, buf, sizeof(buf));

	if (n <= 0)
		return n < 0 ? n : -EINVAL;
	v = strtol(buf, &end, base);
	return *end == '\0' && v >= 0 && v <= 0xffff ? (int)v : -EINVAL;
}

static void
serial_key(int vendor, int product, const char *serial, char *out, size_t size)
{
	char clean[USB_SERIAL_MAX], full[USB_SERIAL_MAX + 16];
	size_t i;

	for (i = 0; serial[i] && i + 1 < sizeof(clean); i++)
		clean[i] = isalnum((unsigned char)serial[i]) || strchr("._-", serial[i]) ?
				   serial[i] : '_';
	clean[i] = '\0';
	snprintf(full, sizeof(full), "%04x:%04x-%s", vendor, product, clean);
	id_fit(full, out, size);
}

static void
port_key(int vendor, int product, const char *port, char *out, size_t size)
{
	snprintf(out, size, "%04x:%04x@%s", vendor, product, port);
}

static struct usb_dev *
dev_find(struct usb_state *st, const char *key)
{
	for (size_t i = 0; i < st->ndevs; i++)
		if (strcmp(st->devs[i].key, key) == 0)
			return &st->devs[i];
	return NULL;
}

static struct usb_dev *
dev_by_port(struct usb_state *st, const char *port)
{
	for (size_t i = 0; i < st->ndevs; i++)
		if (st->devs[i].present && strcmp(st->devs[i].port, port) == 0)
			return &st->devs[i];
	return NULL;
}

static struct usb_dev *
dev_add(struct usb_state *st, const char *key)
{
	struct usb_dev *v = realloc(st->devs, (st->ndevs + 1) * sizeof(*v));

	if (v == NULL)
		return NULL;
	st->devs = v;
	memset(&v[st->ndevs], 0, sizeof(*v));
	snprintf(v[st->ndevs].key, sizeof(v->key), "%s", key);
	v[st->ndevs].busnum = v[st->ndevs].devnum = -1;
	return &v[st->ndevs++];
}

static struct usb_set *
set_of_key(struct usb_state *st, const char *key)
{
	for (size_t i = 0; i < st->nsets; i++)
		for (size_t k = 0; k < st->sets[i].n; k++)
			if (strcmp(st->sets[i].keys[k], key) == 0)
				return &st->sets[i];
	return NULL;
}

static struct usb_set *
set_find(struct usb_state *st, const char *resource, const char *id)
{
	for (size_t i = 0; i < st->nsets; i++)
		if (strcmp(st->sets[i].id, id) == 0 &&
		    (resource == NULL || strcmp(st->sets[i].resource, resource) == 0))
			return &st->sets[i];
	return NULL;
}

static bool
ambiguous(const struct usb_state *st, const char *key)
{
	for (size_t i = 0; i < st->nambiguous; i++)
		if (strcmp(st->ambiguous[i], key) == 0)
			return true;
	return false;
}

static int
ambiguous_add(struct usb_state *st, const char *key)
{
	char **v;

	if (ambiguous(st, key))
		return 0;
	v = realloc(st->ambiguous, (st->nambiguous + 1) * sizeof(*v));
	if (v == NULL)
		return -ENOMEM;
	st->ambiguous = v;
	v[st->nambiguous] = strdup(key);
	if (v[st->nambiguous] == NULL)
		return -ENOMEM;
	st->nambiguous++;
	return 0;
}

static const struct usb_rule *
rule_find(const struct usb_state *st, const char *name)
{
	for (size_t i = 0; i < st->conf.nrules; i++)
		if (strcmp(st->conf.rules[i].name, name) == 0)
			return &st->conf.rules[i];
	return NULL;
}

static bool
dev_match(const struct usb_selector *s, const struct usb_dev *d)
{
	return usb_selector_match(s, d->vendor, d->product, d->serial, d->port);
}

/* Whether any rule's selector takes this device (then it is never unlisted). */
static const struct usb_rule *
rule_of_dev(const struct usb_state *st, const struct usb_dev *d)
{
	for (size_t i = 0; i < st->conf.nrules; i++)
		for (size_t k = 0; k < st->conf.rules[i].nsel; k++)
			if (dev_match(&st->conf.rules[i].sel[k], d))
				return &st->conf.rules[i];
	return NULL;
}

static bool
excluded(const struct usb_state *st, const struct usb_dev *d)
{
	for (size_t i = 0; i < st->conf.nexclude; i++)
		if (dev_match(&st->conf.exclude[i], d))
			return true;
	return false;
}

/* Harvester's name for a device: kubevirt.io/<node>-<vid>-<pid>-<BBBDDD>. */
static void
harvester_name(struct usb_state *st, int vendor, int product, int busnum, int devnum, char *out,
	       size_t size)
{
	const char *nodename = st->ops->node_name(st->core);
	char node[64];
	size_t n = 0;

	/* Lower-case [a-z0-9-], as the kubelet accepts, no '-' at either end. */
	for (const char *p = nodename ? nodename : ""; *p && n + 1 < sizeof(node); p++) {
		unsigned char c = (unsigned char)tolower((unsigned char)*p);

		node[n++] = (isalnum(c) || c == '-') ? (char)c : '-';
	}
	while (n > 0 && node[n - 1] == '-')
		n--;
	node[n] = '\0';
	while (node[0] == '-')
		memmove(node, node + 1, strlen(node));
	/* The name part stays within the kubelet's 63 characters. */
	snprintf(out, size, "kubevirt.io/%.40s-%04x-%04x-%03d%03d", node[0] ? node : "node", vendor,
		 product, busnum, devnum);
}

/* --- what the host needs: USB storage behind a mount or swap ------------------ */

/* The mount table and swaps, from the proc root the core runs with
 * (ops->proc_path; the core's host_needs judges PCI functions only). */
static FILE *
proc_open(struct usb_state *st, const char *rel)
{
	char path[4096];

	if (!HDD_CORE_HAS(st->ops, proc_path) ||
	    st->ops->proc_path(st->core, strcmp(rel, "mountinfo") == 0 ? "self/mountinfo" : rel,
			       path, sizeof(path)) < 0)
		return NULL;
	return fopen(path, "re");
}

static void
mounts_read(struct usb_state *st)
{
	char line[4096];
	FILE *f;

	st->nmounts = 0;
	if (st->mounts == NULL) {
		st->mounts = calloc(USB_MAX_MOUNTS, sizeof(*st->mounts));
		if (st->mounts == NULL)
			return;
	}
	f = proc_open(st, "mountinfo");
	while (f && st->nmounts < USB_MAX_MOUNTS && fgets(line, sizeof(line), f)) {
		struct usb_mount *m = &st->mounts[st->nmounts];
		const char *sep;

		/* id parent major:minor root mount-point ... - fstype source opts */
		if (sscanf(line, "%*u %*u %u:%u %*s %255s", &m->maj, &m->min, m->point) != 3 ||
		    m->maj == 0)
			continue;
		snprintf(m->source, sizeof(m->source), "?");
		sep = strstr(line, " - ");
		if (sep)
			sscanf(sep + 3, "%*s %127s", m->source);
		m->swap = false;
		st->nmounts++;
	}
	if (f)
		fclose(f);
	f = proc_open(st, "swaps");
	while (f && st->nmounts < USB_MAX_MOUNTS && fgets(line, sizeof(line), f)) {
		struct usb_mount *m = &st->mounts[st->nmounts];
		struct stat sb;

		if (sscanf(line, "%255s", m->point) != 1 || m->point[0] != '/' ||
		    stat(m->point, &sb) < 0 || !S_ISBLK(sb.st_mode))
			continue;
		m->maj = major(sb.st_rdev);
		m->min = minor(sb.st_rdev);
		m->swap = true;
		st->nmounts++;
	}
	if (f)
		fclose(f);
}

/* Whether the sysfs path has `port` as one whole component. */
static bool
path_has_port(const char *path, const char *port)
{
	size_t n = strlen(port);

	for (const char *p = path; (p = strstr(p, port)) != NULL; p += n)
		if ((p == path || p[-1] == '/') && (p[n] == '/' || p[n] == '\0'))
			return true;
	return false;
}

/* A block device and what it stacks on (dm, md): does any of it sit under `port`? */
static bool
block_on_port(struct usb_state *st, unsigned maj, unsigned min, const char *port, int depth)
{
	int sfd = st->ops->sysfs_fd(st->core), dfd;
	char rel[64], target[1024];
	bool found = false;
	ssize_t n;
	DIR *dir;
	struct dirent *de;

	if (depth > 8 || sfd < 0)
		return false;
	snprintf(rel, sizeof(rel), "dev/block/%u:%u", maj, min);
	n = readlinkat(sfd, rel, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = '\0';
	if (path_has_port(target, port))
		return true;
	snprintf(rel, sizeof(rel), "dev/block/%u:%u/slaves", maj, min);
	dfd = openat(sfd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return false;
	dir = fdopendir(dfd);
	if (dir == NULL) {
		close(dfd);
		return false;
	}
	while (!found && (de = readdir(dir)) != NULL) {
		char devrel[512], buf[32];
		unsigned a, b;
		int fd;

		if (de->d_name[0] == '.')
			continue;
		snprintf(devrel, sizeof(devrel), "%s/%s/dev", rel, de->d_name);
		fd = openat(sfd, devrel, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n > 0) {
			buf[n] = '\0';
			if (sscanf(buf, "%u:%u", &a, &b) == 2)
				found = block_on_port(st, a, b, port, depth + 1);
		}
	}
	closedir(dir);
	return found;
}

/* Why the host needs the device at `port` (from the table mounts_read made). */
static bool
host_needs_port(struct usb_state *st, const char *port, char *why, size_t whylen)
{
	for (size_t i = 0; i < st->nmounts; i++) {
		const struct usb_mount *m = &st->mounts[i];

		if (!block_on_port(st, m->maj, m->min, port, 0))
			continue;
		if (m->swap)
			snprintf(why, whylen, "backs the swap device %s", m->point);
		else
			snprintf(why, whylen, "backs the mounted filesystem %s (%s, %u:%u)", m->point,
				 m->source, m->maj, m->min);
		return true;
	}
	return false;
}

/* --- the refresh: devices, keys, plugin devices, resources, state ------------- */

struct seen_walk {
	struct usb_dev *v;
	size_t n;
	int err;
};

static void
seen_cb(const struct hdd_device_view *dev, void *arg)
{
	struct seen_walk *w = arg;
	const struct hdd_usb_facts *f = dev->usb;
	struct usb_dev *v, *d;

	/* Root hubs ("usbN") are the bus itself. */
	if (dev->cls != HDD_DEV_USB || f == NULL || strncmp(dev->id, "usb", 3) == 0 ||
	    f->vendor_id < 0 || f->product_id < 0 || w->err)
		return;
	v = realloc(w->v, (w->n + 1) * sizeof(*v));
	if (v == NULL) {
		w->err = -ENOMEM;
		return;
	}
	w->v = v;
	d = &v[w->n++];
	memset(d, 0, sizeof(*d));
	snprintf(d->port, sizeof(d->port), "%s", dev->id);
	d->vendor = f->vendor_id;
	d->product = f->product_id;
	d->busnum = f->busnum;
	d->devnum = f->devnum;
	d->cls = f->device_class;
	d->hub = f->device_class == USB_CLASS_HUB;
	d->present = true;
}

static int
port_cmp(const void *a, const void *b)
{
	return strcmp(((const struct usb_dev *)a)->port, ((const struct usb_dev *)b)->port);
}

/* Reads the serial numbers and gives every seen device its key. */
static int
seen_keys(struct usb_state *st, struct usb_dev *v, size_t n)
{
	char sk[HDD_ID_MAX + 1], other[HDD_ID_MAX + 1];
	int err;

	for (size_t i = 0; i < n; i++) {
		if (read_attr(st, v[i].port, "serial", v[i].serial, sizeof(v[i].serial)) < 0)
			v[i].serial[0] = '\0';
		for (char *p = v[i].serial; *p; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				*p = '?';
	}
	for (size_t i = 0; i < n; i++) {
		const struct usb_dev *known;
		bool shared = false;

		if (!v[i].serial[0]) {
			port_key(v[i].vendor, v[i].product, v[i].port, v[i].key, sizeof(v[i].key));
			continue;
		}
		serial_key(v[i].vendor, v[i].product, v[i].serial, sk, sizeof(sk));
		for (size_t k = 0; k < n && !shared; k++) {
			if (k == i || !v[k].serial[0])
				continue;
			serial_key(v[k].vendor, v[k].product, v[k].serial, other, sizeof(other));
			shared = strcmp(sk, other) == 0;
		}
		/* A serial number two devices share names neither, now or
		 * later (so a key never flips when one of them leaves). */
		if (shared && (err = ambiguous_add(st, sk)) < 0)
			return err;
		/* Except the device known by it already, where it was: its
		 * plugin device keeps its id. */
		known = dev_find(st, sk);
		if ((shared || ambiguous(st, sk)) &&
		    !(known && strcmp(known->port, v[i].port) == 0))
			port_key(v[i].vendor, v[i].product, v[i].port, v[i].key, sizeof(v[i].key));
		else
			snprintf(v[i].key, sizeof(v[i].key), "%s", sk);
	}
	return 0;
}

static json_t *
busdev_json(int bus, int dev)
{
	char s[32];

	if (bus < 0 || dev < 0)
		return json_null();
	snprintf(s, sizeof(s), "%d:%d", bus, dev);
	return json_string(s);
}

/* Folds what device_foreach saw into the table: replugs and unplugs. */
static int
merge_seen(struct usb_state *st, struct usb_dev *seen, size_t n)
{
	size_t nbefore = st->ndevs;
	bool *before = calloc(nbefore ? nbefore : 1, sizeof(*before));

	if (before == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < nbefore; i++) {
		before[i] = st->devs[i].present;
		st->devs[i].present = false;
	}
	for (size_t i = 0; i < n; i++) {
		struct usb_dev *e = dev_find(st, seen[i].key);
		bool was;
		int ob, od;

		if (e == NULL && (e = dev_add(st, seen[i].key)) == NULL) {
			free(before);
			return -ENOMEM;
		}
		was = (size_t)(e - st->devs) < nbefore && before[e - st->devs];
		ob = e->busnum;
		od = e->devnum;
		if (e->present) {
			/* Two devices with one key: cannot be (ports differ). */
			continue;
		}
		*e = seen[i];
		if (ob >= 0 && (ob != e->busnum || od != e->devnum)) {
			struct usb_set *set = set_of_key(st, e->key);

			/* Only devices a plugin device holds are remembered
			 * while away; one seen throughout may have been
			 * replugged between two looks too. */
			st->ops->log(st->core, set ? HDD_LOG_INFO : HDD_LOG_DEBUG, "usb",
				     "%s (%s) replugged: %d:%d is now %d:%d", e->key, e->port, ob, od,
				     e->busnum, e->devnum);
			if (set)
				emit_later(st, "replugged",
					   json_pack("{s:s, s:s, s:o, s:o, s:s, s:s}", "device", e->key,
						     "port", e->port, "old", busdev_json(ob, od), "new",
						     busdev_json(e->busnum, e->devnum), "resource",
						     set->resource, "plugin_device", set->id));
		} else if (!was && ob >= 0) {
			st->ops->log(st->core, HDD_LOG_INFO, "usb", "%s (%s) is back at %d:%d", e->key,
				     e->port, e->busnum, e->devnum);
		}
	}
	for (size_t i = 0; i < nbefore; i++) {
		struct usb_dev *e = &st->devs[i];
		struct usb_set *set;

		if (!before[i] || e->present)
			continue;
		set = set_of_key(st, e->key);
		if (set == NULL)
			continue;	/* forgotten below; the core's device.remove says it */
		st->ops->log(st->core, HDD_LOG_INFO, "usb", "%s (%s, %d:%d) unplugged: Unhealthy in %s",
			     e->key, e->port, e->busnum, e->devnum, set->resource);
		emit_later(st, "unplugged",
			   json_pack("{s:s, s:s, s:o, s:s, s:s}", "device", e->key, "port", e->port,
				     "last", busdev_json(e->busnum, e->devnum), "resource",
				     set->resource, "plugin_device", set->id));
	}
	free(before);
	return 0;
}

/* Why a present device is never offered now ("" when it may be). */
static void
judge(struct usb_state *st, struct usb_dev *d)
{
	d->why[0] = '\0';
	if (!d->present)
		return;
	if (d->hub)
		snprintf(d->why, sizeof(d->why), "is a hub (USB class 09: the bus stays with the host)");
	else if (excluded(st, d))
		snprintf(d->why, sizeof(d->why), "is excluded by usb.exclude");
	else
		host_needs_port(st, d->port, d->why, sizeof(d->why));
}

static bool
offerable(const struct usb_dev *d)
{
	return d->present && !d->hub && d->why[0] == '\0';
}

static void
set_remove(struct usb_state *st, size_t i, const char *why)
{
	st->ops->log(st->core, HDD_LOG_INFO, "usb", "plugin device %s of %s withdrawn: %s",
		     st->sets[i].id, st->sets[i].resource, why);
	memmove(&st->sets[i], &st->sets[i + 1], (st->nsets - i - 1) * sizeof(*st->sets));
	st->nsets--;
}

/* Sets the configuration no longer describes go (a rule renamed, changed or
 * removed, a device excluded, unlisted devices no longer offered). */
static void
sets_validate(struct usb_state *st)
{
	for (size_t i = st->nsets; i-- > 0;) {
		struct usb_set *s = &st->sets[i];
		const struct usb_rule *r = s->unlisted ? NULL : rule_find(st, s->resource);
		const char *why = NULL;

		if (s->unlisted) {
			struct usb_dev *d = dev_find(st, s->keys[0]);

			if (!st->conf.harvester)
				why = "usb.unlisted is not \"harvester\"";
			else if (d == NULL || s->n != 1 || rule_of_dev(st, d) || excluded(st, d))
				why = "a usb rule or exclude names its device now";
		} else if (r == NULL || r->nsel != s->n) {
			why = "its rule changed or is gone";
		} else {
			for (size_t k = 0; k < s->n && why == NULL; k++) {
				struct usb_dev *d = dev_find(st, s->keys[k]);

				if (d == NULL || !dev_match(&r->sel[k], d))
					why = "its rule's selectors no longer match its devices";
				else if (excluded(st, d))
					why = "usb.exclude names one of its devices";
			}
		}
		if (why)
			set_remove(st, i, why);
	}
}

static struct usb_set *
set_new(struct usb_state *st, const char *resource, bool unlisted,
	struct usb_dev *const *devs, size_t n)
{
	char joined[USB_MAX_SELECTORS * (HDD_ID_MAX + 1) + 1] = "";
	struct usb_set *v, *s;
	size_t len = 0;

	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(joined + len, sizeof(joined) - len, "%s%s", i ? "+" : "",
					devs[i]->key);
	v = realloc(st->sets, (st->nsets + 1) * sizeof(*v));
	if (v == NULL)
		return NULL;
	st->sets = v;
	s = &v[st->nsets];
	memset(s, 0, sizeof(*s));
	id_fit(joined, s->id, sizeof(s->id));
	if (set_find(st, NULL, s->id))
		return NULL;	/* a hash collision: not offered rather than confused */
	snprintf(s->resource, sizeof(s->resource), "%s", resource);
	s->unlisted = unlisted;
	s->n = n;
	for (size_t i = 0; i < n; i++)
		snprintf(s->keys[i], sizeof(s->keys[i]), "%s", devs[i]->key);
	st->nsets++;
	st->ops->log(st->core, HDD_LOG_INFO, "usb", "plugin device %s of %s: %zu device%s", s->id,
		     resource, n, n == 1 ? "" : "s");
	return s;
}

/* KubeVirt's grouping: per rule, one free device per selector, again while
 * every selector still finds one. Devices go in port order. */
static void
sets_form(struct usb_state *st)
{
	struct usb_dev *pick[USB_MAX_SELECTORS];

	for (size_t r = 0; r < st->conf.nrules; r++) {
		const struct usb_rule *rule = &st->conf.rules[r];

		for (;;) {
			size_t k;

			for (k = 0; k < rule->nsel; k++) {
				pick[k] = NULL;
				for (size_t i = 0; i < st->ndevs && pick[k] == NULL; i++) {
					struct usb_dev *d = &st->devs[i];
					bool taken = set_of_key(st, d->key) != NULL;

					for (size_t j = 0; j < k && !taken; j++)
						taken = pick[j] == d;
					if (!taken && offerable(d) && dev_match(&rule->sel[k], d))
						pick[k] = d;
				}
				if (pick[k] == NULL)
					break;
			}
			if (k < rule->nsel || set_new(st, rule->name, false, pick, rule->nsel) == NULL)
				break;
		}
	}
	if (!st->conf.harvester)
		return;
	for (size_t i = 0; i < st->ndevs; i++) {
		struct usb_dev *d = &st->devs[i];
		char name[USB_RESOURCE_MAX];

		if (!offerable(d) || set_of_key(st, d->key) || rule_of_dev(st, d))
			continue;
		/* Harvester's name as the device first had it, kept for good. */
		harvester_name(st, d->vendor, d->product, d->busnum, d->devnum, name, sizeof(name));
		set_new(st, name, true, &d, 1);
	}
}

/* Devices no plugin device needs are forgotten once they are gone. */
static void
devs_forget(struct usb_state *st)
{
	size_t j = 0;

	for (size_t i = 0; i < st->ndevs; i++)
		if (st->devs[i].present || set_of_key(st, st->devs[i].key))
			st->devs[j++] = st->devs[i];
	st->ndevs = j;
}

static void
sets_health(struct usb_state *st)
{
	for (size_t i = 0; i < st->nsets; i++) {
		struct usb_set *s = &st->sets[i];

		s->healthy = true;
		for (size_t k = 0; k < s->n; k++) {
			struct usb_dev *d = dev_find(st, s->keys[k]);

			s->healthy &= d && offerable(d);
		}
	}
}

/* Gives each resource its members (only when they changed) and withdraws
 * the resources that have none left. */
static int
publish(struct usb_state *st)
{
	struct hdd_resource_member *m;
	char **now;
	size_t nnow = 0;
	int err = 0;
	json_t *snap = json_object();

	/* The core recomputes every resource on each call: only on a change. */
	for (size_t i = 0; snap && i < st->nsets; i++) {
		json_t *a = json_object_get(snap, st->sets[i].resource);

		if (a == NULL)
			json_object_set_new(snap, st->sets[i].resource, a = json_array());
		json_array_append_new(a, json_pack("[s, b]", st->sets[i].id, st->sets[i].healthy));
	}
	if (snap && st->published_snap && json_equal(snap, st->published_snap)) {
		json_decref(snap);
		return 0;
	}
	json_decref(st->published_snap);
	st->published_snap = snap;
	m = calloc(st->nsets ? st->nsets : 1, sizeof(*m));
	now = calloc(st->nsets + 1, sizeof(*now));
	if (m == NULL || now == NULL) {
		free(m);
		free(now);
		json_decref(st->published_snap);
		st->published_snap = NULL;
		return -ENOMEM;
	}
	for (size_t i = 0; i < st->nsets && err == 0; i++) {
		const char *res = st->sets[i].resource;
		size_t n = 0;
		bool done = false;

		for (size_t k = 0; k < nnow && !done; k++)
			done = strcmp(now[k], res) == 0;
		if (done)
			continue;
		for (size_t j = i; j < st->nsets; j++)
			if (strcmp(st->sets[j].resource, res) == 0)
				m[n++] = (struct hdd_resource_member){ .id = st->sets[j].id,
								       .healthy = st->sets[j].healthy,
								       .numa_node = -1 };
		err = st->ops->resource_set(st->core, res, m, n);
		now[nnow] = strdup(res);
		if (now[nnow] == NULL && err == 0)
			err = -ENOMEM;
		else if (now[nnow])
			nnow++;
	}
	for (size_t i = 0; i < st->npublished; i++) {
		bool kept = false;

		for (size_t k = 0; k < nnow && !kept; k++)
			kept = strcmp(now[k], st->published[i]) == 0;
		if (!kept)
			st->ops->resource_set(st->core, st->published[i], NULL, 0);
		free(st->published[i]);
	}
	free(st->published);
	st->published = now;
	st->npublished = nnow;
	free(m);
	if (err < 0) {
		json_decref(st->published_snap);	/* given again next time */
		st->published_snap = NULL;
	}
	return err;
}

static json_t *
state_json(struct usb_state *st)
{
	json_t *section = json_object(), *devs = json_array(), *sets = json_array(),
	       *amb = json_array();

	if (section == NULL || devs == NULL || sets == NULL || amb == NULL) {
		json_decref(section);
		json_decref(devs);
		json_decref(sets);
		json_decref(amb);
		return NULL;
	}
	for (size_t i = 0; i < st->ndevs; i++) {
		const struct usb_dev *d = &st->devs[i];
		char vid[8], pid[8];

		if (set_of_key(st, d->key) == NULL)
			continue;
		snprintf(vid, sizeof(vid), "%04x", d->vendor);
		snprintf(pid, sizeof(pid), "%04x", d->product);
		json_array_append_new(devs, json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:i}", "key",
						      d->key, "vendor", vid, "product", pid, "serial",
						      d->serial, "port", d->port, "busnum", d->busnum,
						      "devnum", d->devnum));
	}
	for (size_t i = 0; i < st->nsets; i++) {
		const struct usb_set *s = &st->sets[i];
		json_t *keys = json_array();

		for (size_t k = 0; k < s->n; k++)
			json_array_append_new(keys, json_string(s->keys[k]));
		json_array_append_new(sets, json_pack("{s:s, s:s, s:b, s:o}", "id", s->id, "resource",
						      s->resource, "unlisted", s->unlisted, "keys",
						      keys));
	}
	for (size_t i = 0; i < st->nambiguous; i++)
		json_array_append_new(amb, json_string(st->ambiguous[i]));
	json_object_set_new(section, "devices", devs);
	json_object_set_new(section, "sets", sets);
	json_object_set_new(section, "ambiguous", amb);
	return section;
}

/* Puts the section when it changed: ids survive restart and reboot. */
static void
save(struct usb_state *st)
{
	json_t *section;
	int err;

	/* Nothing to remember: no section at all (removed if there was one). */
	if (st->nsets == 0 && st->nambiguous == 0) {
		if (st->saved && st->ops->state_put(st->core, NULL) == 0) {
			json_decref(st->saved);
			st->saved = NULL;
		}
		return;
	}
	section = state_json(st);
	if (section == NULL || (st->saved && json_equal(section, st->saved))) {
		json_decref(section);
		return;
	}
	err = st->ops->state_put(st->core, section);
	if (err < 0) {
		st->ops->log(st->core, HDD_LOG_WARN, "usb",
			     "cannot record the plugin devices in state.json: %s (their ids hold until the daemon restarts)",
			     strerror(-err));
		json_decref(section);
		return;
	}
	json_decref(st->saved);
	st->saved = section;
}

static void
usb_refresh(struct usb_state *st)
{
	struct seen_walk w = { 0 };
	int err;

	if (!st->started)
		return;
	mounts_read(st);
	st->ops->device_foreach(st->core, HDD_DEV_USB, seen_cb, &w);
	err = w.err;
	if (err == 0 && w.n > 1)
		qsort(w.v, w.n, sizeof(*w.v), port_cmp);
	if (err == 0)
		err = seen_keys(st, w.v, w.n);
	if (err == 0)
		err = merge_seen(st, w.v, w.n);
	free(w.v);
	if (err < 0) {
		st->ops->log(st->core, HDD_LOG_ERR, "usb", "cannot refresh the USB devices: %s",
			     strerror(-err));
		return;
	}
	for (size_t i = 0; i < st->ndevs; i++)
		judge(st, &st->devs[i]);
	sets_validate(st);
	sets_form(st);
	devs_forget(st);
	sets_health(st);
	err = publish(st);
	if (err < 0)
		st->ops->log(st->core, HDD_LOG_ERR, "usb", "cannot offer the USB resources: %s",
			     strerror(-err));
	save(st);
}

/* Restores the devices and plugin devices state.json records (kept as
 * they are: the first refresh judges them against the live system). */
static void
load(struct usb_state *st)
{
	int err = 0;
	const json_t *section = st->ops->state_get(st->core, &err), *v;
	size_t i;

	if (err < 0) {
		st->ops->log(st->core, HDD_LOG_WARN, "usb",
			     "state.json cannot be trusted: plugin device ids start afresh");
		return;
	}
	if (section == NULL)
		return;
	json_array_foreach(json_object_get(section, "devices"), i, v) {
		const char *key = json_string_value(json_object_get(v, "key"));
		const char *vid = json_string_value(json_object_get(v, "vendor"));
		const char *pid = json_string_value(json_object_get(v, "product"));
		const char *serial = json_string_value(json_object_get(v, "serial"));
		const char *port = json_string_value(json_object_get(v, "port"));
		struct usb_dev *d;

		if (key == NULL || strlen(key) > HDD_ID_MAX || vid == NULL || pid == NULL ||
		    port == NULL || dev_find(st, key) || (d = dev_add(st, key)) == NULL)
			continue;
		d->vendor = (int)strtol(vid, NULL, 16);
		d->product = (int)strtol(pid, NULL, 16);
		snprintf(d->serial, sizeof(d->serial), "%s", serial ? serial : "");
		snprintf(d->port, sizeof(d->port), "%s", port);
		d->busnum = (int)json_integer_value(json_object_get(v, "busnum"));
		d->devnum = (int)json_integer_value(json_object_get(v, "devnum"));
	}
	json_array_foreach(json_object_get(section, "sets"), i, v) {
		const char *id = json_string_value(json_object_get(v, "id"));
		const char *res = json_string_value(json_object_get(v, "resource"));
		const json_t *keys = json_object_get(v, "keys"), *k;
		struct usb_set *s, *nv;
		size_t j;
		bool ok = true;

		if (id == NULL || strlen(id) > HDD_ID_MAX || res == NULL ||
		    strlen(res) >= USB_RESOURCE_MAX || !json_is_array(keys) ||
		    json_array_size(keys) == 0 || json_array_size(keys) > USB_MAX_SELECTORS ||
		    set_find(st, NULL, id))
			continue;
		json_array_foreach(keys, j, k)
			ok &= json_is_string(k) && dev_find(st, json_string_value(k)) != NULL &&
			      set_of_key(st, json_string_value(k)) == NULL;
		if (!ok || (nv = realloc(st->sets, (st->nsets + 1) * sizeof(*nv))) == NULL)
			continue;
		st->sets = nv;
		s = &nv[st->nsets++];
		memset(s, 0, sizeof(*s));
		snprintf(s->id, sizeof(s->id), "%s", id);
		snprintf(s->resource, sizeof(s->resource), "%s", res);
		s->unlisted = json_is_true(json_object_get(v, "unlisted"));
		s->n = json_array_size(keys);
		json_array_foreach(keys, j, k)
			snprintf(s->keys[j], sizeof(s->keys[j]), "%s", json_string_value(k));
	}
	json_array_foreach(json_object_get(section, "ambiguous"), i, v)
		if (json_is_string(v) && json_string_length(v) <= HDD_ID_MAX)
			ambiguous_add(st, json_string_value(v));
	st->saved = json_deep_copy(section);
}

/* --- hooks ------------------------------------------------------------------- */

static int
usb_config_check(const json_t *section, char *why, size_t whylen)
{
	return usb_conf_check(section, why, whylen);
}

static int
usb_init(const struct hdd_core_ops *ops, struct hdd_core *core, const json_t *section,
	 void **ret_state)
{
	struct usb_state *st;
	char why[256];
	int err;

	/* sysfs_fd and dev_fd came in 2.1. */
	if (!HDD_CORE_HAS(ops, dev_fd))
		return -ENOTSUP;
	st = calloc(1, sizeof(*st));
	if (st == NULL)
		return -ENOMEM;
	err = usb_conf_parse(section, &st->conf, why, sizeof(why));
	if (err < 0) {
		usb_conf_clear(&st->conf);
		free(st);
		return err;
	}
	st->ops = ops;
	st->core = core;
	*ret_state = st;
	return 0;
}

static void
usb_fini(void *state)
{
	struct usb_state *st = state;

	if (st == NULL)
		return;
	usb_conf_clear(&st->conf);
	for (size_t i = 0; i < st->npublished; i++)
		free(st->published[i]);
	free(st->published);
	for (size_t i = 0; i < st->nambiguous; i++)
		free(st->ambiguous[i]);
	free(st->ambiguous);
	free(st->devs);
	free(st->sets);
	free(st->mounts);
	json_decref(st->saved);
	json_decref(st->published_snap);
	json_decref(st->pending);
	free(st);
}

static void
recheck_cb(void *arg)
{
	struct usb_state *st = arg;
	int64_t id;

	st->recheck_timer = 0;
	usb_refresh(st);
	id = st->ops->timer_add(st->core, USB_RECHECK_MS, recheck_cb, st);
	st->recheck_timer = id > 0 ? id : 0;
}

static int
usb_start(void *state)
{
	struct usb_state *st = state;
	int64_t id;

	load(st);
	st->started = true;
	usb_refresh(st);
	/* A filesystem mounted on a USB disk sends no USB uevent: look again. */
	id = st->ops->timer_add(st->core, USB_RECHECK_MS, recheck_cb, st);
	st->recheck_timer = id > 0 ? id : 0;
	return 0;
}

static void
usb_reload(void *state, const json_t *section)
{
	struct usb_state *st = state;
	struct usb_conf c;
	char why[256];

	/* The section was checked: a failure here is out of memory. */
	if (usb_conf_parse(section, &c, why, sizeof(why)) < 0) {
		usb_conf_clear(&c);
		st->ops->log(st->core, HDD_LOG_ERR, "usb", "configuration kept: %s", why);
		return;
	}
	usb_conf_clear(&st->conf);
	st->conf = c;
	usb_refresh(st);
}

static void
usb_stop(void *state)
{
	struct usb_state *st = state;

	if (st->recheck_timer > 0)
		st->ops->timer_cancel(st->core, st->recheck_timer);
	st->recheck_timer = 0;
	if (st->emit_timer > 0)
		st->ops->timer_cancel(st->core, st->emit_timer);
	st->emit_timer = 0;
	json_decref(st->pending);
	st->pending = NULL;
	st->started = false;
}

/* USB devices and hubs (hubs only to say why they are never offered); root
 * hubs ("usbN") are the bus itself. */
static int
usb_probe(void *state, const struct hdd_device_view *dev)
{
	if (dev->cls != HDD_DEV_USB)
		return 0;
	if (strncmp(dev->id, "usb", 3) == 0)
		return 0;
	if (dev->usb->vendor_id < 0 || dev->usb->product_id < 0)
		return 0;
	return dev->usb->device_class == USB_CLASS_HUB ? 1 : 10;
}

/* A device came or went: health and replugs within this loop turn. */
static void
usb_device_event(void *state, enum hdd_device_event ev, const struct hdd_device_view *dev)
{
	usb_refresh(state);
}

/* Sets "why" in out when the device is not offered (or its set is Unhealthy). */
static void
why_not(struct usb_state *st, const struct usb_dev *d, const struct usb_set *s, json_t *out)
{
	char why[256];

	if (d->why[0]) {
		snprintf(why, sizeof(why), "%s", d->why);
	} else if (s == NULL) {
		const struct usb_rule *r = rule_of_dev(st, d);

		if (r)
			snprintf(why, sizeof(why),
				 "rule %s: not every one of its selectors matches a free device",
				 r->name);
		else
			snprintf(why, sizeof(why), "no usb rule names it and usb.unlisted is %s",
				 st->conf.harvester ? "\"harvester\"" : "\"ignore\" (the default)");
	} else if (!s->healthy) {
		snprintf(why, sizeof(why), d->present ? "another device of its plugin device is missing" :
			 "unplugged");
	} else {
		return;
	}
	json_object_set_new(out, "why", json_string(why));
}

static int
usb_describe(void *state, const struct hdd_device_view *dev, json_t *out)
{
	struct usb_state *st = state;
	const struct hdd_usb_facts *f = dev->usb;
	struct usb_dev *d = dev_by_port(st, dev->id);
	struct usb_set *s = d ? set_of_key(st, d->key) : NULL;
	char res[USB_RESOURCE_MAX], env[32];

	if (s)
		snprintf(res, sizeof(res), "%s", s->resource);
	else
		harvester_name(st, f->vendor_id, f->product_id, f->busnum, f->devnum, res,
			       sizeof(res));
	/* The resource it is offered as, or the one usb.unlisted "harvester"
	 * would offer it as (Harvester's name). */
	json_object_set_new(out, "resource_name", json_string(res));
	/* KubeVirt's USB_RESOURCE_* value: "bus:dev" in decimal. */
	snprintf(env, sizeof(env), "%d:%d", f->busnum, f->devnum);
	json_object_set_new(out, "env_value", json_string(env));
	if (d == NULL) {
		json_object_set_new(out, "offered", json_false());
		json_object_set_new(out, "why", json_string(f->device_class == USB_CLASS_HUB ?
			"is a hub (USB class 09: the bus stays with the host)" :
			"not looked at yet"));
		return 0;
	}
	json_object_set_new(out, "key", json_string(d->key));
	json_object_set_new(out, "offered", json_boolean(s && s->healthy));
	if (s) {
		json_object_set_new(out, "plugin_device", json_string(s->id));
		json_object_set_new(out, "healthy", json_boolean(s->healthy));
	}
	why_not(st, d, s, out);
	return 0;
}

/* --- Allocate: bus:dev read now, nodes chowned all or none ------------------- */

struct usb_node {
	int fd;				/* O_PATH of the node itself */
	uid_t uid;			/* as it was, to restore */
	gid_t gid;
	int busnum, devnum;
};

/* Opens bus/usb/BBB/DDD under the device root without following a link
 * anywhere on the way, and checks it is that USB device's node. */
static int
node_open(struct usb_state *st, int busnum, int devnum, struct usb_node *n)
{
	const char *parts[] = { "bus", "usb", NULL, NULL };
	char bbb[8], ddd[8];
	int dfd = st->ops->dev_fd(st->core), fd;
	struct stat sb;

	if (dfd < 0)
		return -EBADF;
	snprintf(bbb, sizeof(bbb), "%03d", busnum);
	snprintf(ddd, sizeof(ddd), "%03d", devnum);
	parts[2] = bbb;
	dfd = dup(dfd);
	if (dfd < 0)
		return -errno;
	for (size_t i = 0; i < 3; i++) {
		int next = openat(dfd, parts[i], O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

		close(dfd);
		if (next < 0)
			return errno == ENOTDIR || errno == ELOOP ? -ELOOP : -errno;
		dfd = next;
	}
	fd = openat(dfd, ddd, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	close(dfd);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &sb) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	/* A link opened with O_NOFOLLOW is the link itself: refused here. */
	if (!S_ISCHR(sb.st_mode) || major(sb.st_rdev) != USB_DEVICE_MAJOR) {
		close(fd);
		return S_ISLNK(sb.st_mode) ? -ELOOP : -ENOTTY;
	}
	n->fd = fd;
	n->uid = sb.st_uid;
	n->gid = sb.st_gid;
	n->busnum = busnum;
	n->devnum = devnum;
	return 0;
}

/* The device of `key` as sysfs has it now: its bus:dev, checked to be the
 * same device (ids and serial number) the key stands for. */
static int
current_busdev(struct usb_state *st, const struct usb_dev *d, int *busnum, int *devnum)
{
	char serial[USB_SERIAL_MAX];

	if (!d->present)
		return -ENODEV;
	if (read_num(st, d->port, "idVendor", 16) != d->vendor ||
	    read_num(st, d->port, "idProduct", 16) != d->product)
		return -ESTALE;
	if (read_attr(st, d->port, "serial", serial, sizeof(serial)) < 0)
		serial[0] = '\0';
	for (char *p = serial; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	if (strcmp(serial, d->serial) != 0)
		return -ESTALE;
	*busnum = read_num(st, d->port, "busnum", 10);
	*devnum = read_num(st, d->port, "devnum", 10);
	if (*busnum <= 0 || *devnum <= 0)
		return *busnum < 0 ? *busnum : *devnum < 0 ? *devnum : -EINVAL;
	return 0;
}

static int
usb_allocate(void *state, const char *resource, const struct hdd_device_view *const *devs,
	     size_t n, struct hdd_alloc *alloc)
{
	struct usb_state *st = state;
	struct usb_node nodes[64];
	size_t nn = 0, len = 0;
	char env[320], value[64 * 12] = "", path[64], why[192] = "";
	int err = 0;

	mounts_read(st);	/* the host may have mounted a disk since */
	for (size_t i = 0; i < n && err == 0; i++) {
		struct usb_set *s = devs[i]->cls == HDD_DEV_NONE ?
					    set_find(st, resource, devs[i]->id) : NULL;

		if (s == NULL) {
			snprintf(why, sizeof(why), "%s is not a plugin device of it", devs[i]->id);
			err = -ENOENT;
			break;
		}
		for (size_t k = 0; k < s->n && err == 0; k++) {
			struct usb_dev *d = dev_find(st, s->keys[k]);
			int bus = -1, dev = -1;

			if (nn == sizeof(nodes) / sizeof(nodes[0])) {
				snprintf(why, sizeof(why), "more than %zu devices", nn);
				err = -E2BIG;
			} else if (d == NULL || (err = current_busdev(st, d, &bus, &dev)) < 0) {
				err = err < 0 ? err : -ENODEV;
				snprintf(why, sizeof(why), "%s is not plugged in as it was", s->keys[k]);
			} else if (host_needs_port(st, d->port, why, sizeof(why))) {
				err = -EPERM;
			} else if ((err = node_open(st, bus, dev, &nodes[nn])) < 0) {
				snprintf(why, sizeof(why), "%s: /dev/bus/usb/%03d/%03d is not its device node",
					 s->keys[k], bus, dev);
			} else {
				nn++;
				len += (size_t)snprintf(value + len, sizeof(value) - len, "%s%d:%d",
							len ? "," : "", bus, dev);
			}
		}
	}
	/* Every node or none: a failure part-way gives back what changed. */
	for (size_t i = 0; i < nn && err == 0; i++) {
		if (fchownat(nodes[i].fd, "", (uid_t)st->conf.uid, (gid_t)st->conf.gid,
			     AT_EMPTY_PATH) < 0) {
			err = -errno;
			snprintf(why, sizeof(why), "chown of /dev/bus/usb/%03d/%03d to %u:%u",
				 nodes[i].busnum, nodes[i].devnum, st->conf.uid, st->conf.gid);
			for (size_t k = 0; k < i; k++)
				if (fchownat(nodes[k].fd, "", nodes[k].uid, nodes[k].gid,
					     AT_EMPTY_PATH) < 0)
					st->ops->log(st->core, HDD_LOG_ERR, "usb",
						     "/dev/bus/usb/%03d/%03d stays %u:%u: giving it back to %u:%u failed: %s",
						     nodes[k].busnum, nodes[k].devnum, st->conf.uid,
						     st->conf.gid, (unsigned)nodes[k].uid,
						     (unsigned)nodes[k].gid, strerror(errno));
		}
	}
	if (err == 0)
		err = st->ops->env_name("USB_RESOURCE", resource, env, sizeof(env));
	if (err == 0)
		err = st->ops->alloc_env(alloc, env, value);
	for (size_t i = 0; i < nn && err == 0; i++) {
		snprintf(path, sizeof(path), "/dev/bus/usb/%03d/%03d", nodes[i].busnum,
			 nodes[i].devnum);
		err = st->ops->alloc_device(alloc, path, path, "mrw");
	}
	for (size_t i = 0; i < nn; i++)
		close(nodes[i].fd);
	if (err < 0) {
		st->ops->log(st->core, HDD_LOG_WARN, "usb", "%s: Allocate refused: %s%s%s", resource,
			     why[0] ? why : "", why[0] ? ": " : "", strerror(-err));
		return err;
	}
	for (size_t i = 0; i < n; i++) {
		struct usb_set *s = set_find(st, resource, devs[i]->id);

		if (s)
			s->allocations++;
	}
	st->ops->log(st->core, HDD_LOG_INFO, "usb", "%s: allocated %s", resource, value);
	return 0;
}

/* --- methods ------------------------------------------------------------------ */

static json_t *
dev_json(struct usb_state *st, const struct usb_dev *d)
{
	struct usb_set *s = set_of_key(st, d->key);
	char vid[8], pid[8];
	json_t *o;

	snprintf(vid, sizeof(vid), "%04x", d->vendor);
	snprintf(pid, sizeof(pid), "%04x", d->product);
	o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:b, s:b}", "key", d->key, "port", d->port,
		      "vendor_id", vid, "product_id", pid, "serial", d->serial, "bus_dev",
		      busdev_json(d->busnum, d->devnum), "present", d->present, "offered",
		      s && s->healthy);
	if (o == NULL)
		return NULL;
	if (d->present) {
		json_object_set_new(o, "busnum", json_integer(d->busnum));
		json_object_set_new(o, "devnum", json_integer(d->devnum));
	}
	if (d->hub)
		json_object_set_new(o, "hub", json_true());
	why_not(st, d, s, o);
	if (s) {
		json_object_set_new(o, "resource", json_string(s->resource));
		json_object_set_new(o, "plugin_device", json_string(s->id));
		json_object_set_new(o, "healthy", json_boolean(s->healthy));
		json_object_set_new(o, "allocations", json_integer(s->allocations));
	}
	return o;
}

/* usb.list: every USB device the module knows (gone ones its plugin devices
 * wait for too) and every plugin device, judged afresh. */
static int
m_list(void *state, struct hdd_request *req, const json_t *params)
{
	struct usb_state *st = state;
	json_t *devs = json_array(), *sets = json_array();
	char owner[32];

	usb_refresh(st);
	if (devs == NULL || sets == NULL) {
		json_decref(devs);
		json_decref(sets);
		return -ENOMEM;
	}
	for (size_t i = 0; i < st->ndevs; i++)
		json_array_append_new(devs, dev_json(st, &st->devs[i]));
	for (size_t i = 0; i < st->nsets; i++) {
		const struct usb_set *s = &st->sets[i];
		json_t *keys = json_array();

		for (size_t k = 0; k < s->n; k++)
			json_array_append_new(keys, json_string(s->keys[k]));
		json_array_append_new(sets, json_pack("{s:s, s:s, s:b, s:b, s:I, s:o}", "id", s->id,
						      "resource", s->resource, "unlisted",
						      s->unlisted, "healthy", s->healthy,
						      "allocations", (json_int_t)s->allocations,
						      "devices", keys));
	}
	snprintf(owner, sizeof(owner), "%u:%u", st->conf.uid, st->conf.gid);
	st->ops->reply(req, json_pack("{s:o, s:o, s:s, s:s}", "devices", devs, "plugin_devices",
				      sets, "unlisted", st->conf.harvester ? "harvester" : "ignore",
				      "owner", owner));
	return 0;
}

static const struct hdd_method usb_methods[] = {
	{ .name = "usb.list", .params = (const char *const[]){ NULL }, .call = m_list },
	{ .name = NULL },
};

static const char *const usb_subsystems[] = { "usb", NULL };

__attribute__((visibility("default"))) const struct hdd_module hostdevd_module = {
	HDD_MODULE_HEADER,
	.name = "usb",
	.description = "USB devices for VMs: KubeVirt's USB_RESOURCE_ contract, stable across replug",
	.subsystems = usb_subsystems,
	.methods = usb_methods,
	.config_check = usb_config_check,
	.init = usb_init,
	.fini = usb_fini,
	.start = usb_start,
	.reload = usb_reload,
	.stop = usb_stop,
	.probe = usb_probe,
	.device_event = usb_device_event,
	.describe = usb_describe,
	.allocate = usb_allocate,
};
