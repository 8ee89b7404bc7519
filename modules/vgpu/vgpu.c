/* SPDX-License-Identifier: MIT */
/* vgpu: mediated devices (mdev types on any mdev parent) and NVIDIA's
 * VF-based vGPU (nvidia/current_vgpu_type on kernel >= 6.8), created on
 * request or by configuration, journalled, re-created after a reboot, a
 * driver reload or a parent's return, and offered to the kubelet. */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hostdevd/module.h"
#include "vgpu-parse.h"

#define VGPU_DEFAULT_DOMAIN "hostdevd.io"
#define VGPU_WRITE_TIMEOUT_MS 10000
#define VGPU_HOLDERS_TIMEOUT_MS 5000
/* How long a created mdev may take to show in /sys/bus/mdev/devices (the
 * kernel's create returns after it exists; a simulated one lags). */
#define VGPU_APPEAR_MS 5000
#define VGPU_POLL_MS 20
#define VGPU_MAX_TYPES 128
#define VGPU_MAX_RULES 32
#define VGPU_MAX_RENAMES 32
#define VGPU_MAX_GPUS 32
/* How long a MIG-backed VF type waits at start for the mig module's word on
 * its GPU's layout when the mig module says nothing at all (not loaded). */
#define VGPU_MIG_WAIT_MS 60000

enum vgpu_flavour { VGPU_MDEV = 0, VGPU_VF, VGPU_FLAVOUR_MAX };
/* A record's journal phase: the intent before the kernel write, the
 * outcome after it. */
enum vgpu_phase { PH_CREATING = 0, PH_CREATED, PH_REMOVING, PH_MAX };

static const char *const flavour_names[] = { "mdev", "vf" };
static const char *const phase_names[] = { "creating", "created", "removing" };

struct vgpu {
	enum vgpu_flavour flavour;
	enum vgpu_phase phase;
	char id[HDD_ID_MAX + 1];	/* the mdev's UUID or the VF's address */
	char parent[64];		/* mdev parent name, or the VF's PF */
	char type[64];			/* "nvidia-745", or the VF type id "1147" */
	char type_name[VGPU_NAME_MAX];
	char resource[VGPU_RESOURCE_MAX];
	bool resource_fixed;		/* named by the request, kept over renames */
	bool from_config;
	long long gen;			/* owner generation */
	bool allocated;
	/* Live facts, from the last look at sysfs. */
	bool present;
	bool healthy;
	int group;
	bool busy;			/* an operation for it is queued or running */
	bool complained;		/* a failed repair said so once */
	bool seen_ok;			/* present at the last reconcile or outcome */
	bool mig_backed;		/* the type lives on a MIG GPU instance */
	bool waiting;			/* not re-applied until its GPU's MIG layout is in place */
};

enum op_kind { OP_CREATE = 0, OP_REMOVE, OP_SET, OP_CLEAR };

struct op {
	struct op *next;
	struct vgpu_state *st;
	enum op_kind kind;
	char id[HDD_ID_MAX + 1];
	bool force;
	bool repair;			/* from the reconcile: the record stays on failure */
	struct hdd_request *req;
	int64_t call;
	int64_t timer;
	int waited_ms;
};

struct vfs_call;

/* A GPU whose VFs vgpu.enable_vfs made: VFs are runtime state, so the
 * record brings them back (before any VF type is re-applied). */
enum vfs_phase { VFS_ENABLING = 0, VFS_ENABLED, VFS_PH_MAX };

static const char *const vfs_phase_names[] = { "enabling", "enabled" };

struct vfs_rec {
	char gpu[16];
	char driver[64];		/* the PF's driver before the first enable */
	enum vfs_phase phase;
	bool busy;			/* an enable for it runs in the worker */
	bool complained;		/* a failed repair said so once */
	bool seen_ok;			/* VFs there at the last reconcile */
	int64_t call;			/* the enable's worker call */
	struct vfs_call *pending;	/* its completion's argument */
};

struct rule {
	char parent[64];		/* mdev parent glob, or "" */
	char gpu[64];			/* PF address glob or "vvvv:dddd", or "" */
	char type[VGPU_NAME_MAX];	/* type id or name */
	int count;
	char resource[VGPU_RESOURCE_MAX];
};

struct rename {
	char type[VGPU_NAME_MAX];
	char resource[VGPU_RESOURCE_MAX];
};

struct vgpu_state {
	const struct hdd_core_ops *ops;
	struct hdd_core *core;
	struct vgpu *v;
	size_t n, cap;
	long long next_gen;
	struct vfs_rec gpus[VGPU_MAX_GPUS];
	size_t ngpus;
	bool closed;			/* state.json cannot be trusted: no writes */
	bool started;
	bool stopping;
	struct op *queue, *running;
	int64_t reconcile_timer, soon_timer;
	/* configuration */
	struct rule rules[VGPU_MAX_RULES];
	size_t nrules;
	struct rename renames[VGPU_MAX_RENAMES];
	size_t nrenames;
	char domain[64];
	int interval_s;
	char published[64][VGPU_RESOURCE_MAX];	/* resources last set */
	size_t npublished;
	/* What the mig module said (its events): PF address -> the last
	 * "mig.instances" (status, GPU instances and their vGPU types). */
	json_t *mig;
	int mig_nvml;			/* "mig.nvml": -1 not said, 0 no NVML, 1 loaded */
	bool mig_wait_over;		/* VGPU_MIG_WAIT_MS passed since the start */
	int64_t mig_wait_timer;
};

static void op_next(struct vgpu_state *st);
static void reconcile(struct vgpu_state *st, bool at_start);
static void reconcile_gpus(struct vgpu_state *st, bool at_start, bool rebooted);
static void vfs_call_drop(struct vfs_call *c);
static bool gpu_busy(struct vgpu_state *st, const char *gpu);

/* --- reading sysfs (on the reactor, relative to --sysfs-root) ------------- */

static int
read_rel(struct vgpu_state *st, const char *rel, char *buf, size_t size)
{
	int fd = openat(st->ops->sysfs_fd(st->core), rel, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, size - 1);
	if (n < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	close(fd);
	buf[n] = '\0';
	return (int)n;
}

static bool
exists_rel(struct vgpu_state *st, const char *rel)
{
	return faccessat(st->ops->sysfs_fd(st->core), rel, F_OK, 0) == 0;
}

/* The last component of the link at rel, or -errno. */
static int
link_base(struct vgpu_state *st, const char *rel, char *buf, size_t size)
{
	char target[512];
	ssize_t n = readlinkat(st->ops->sysfs_fd(st->core), rel, target, sizeof(target) - 1);
	const char *base;

	if (n < 0)
		return -errno;
	target[n] = '\0';
	base = strrchr(target, '/');
	snprintf(buf, size, "%s", base ? base + 1 : target);
	return 0;
}

static int
link_group(struct vgpu_state *st, const char *rel)
{
	char b[32];
	char *end;
	long g;

	if (link_base(st, rel, b, sizeof(b)) < 0)
		return -1;
	g = strtol(b, &end, 10);
	return *end == '\0' && end != b && g >= 0 && g < 0x7fffffff ? (int)g : -1;
}

static bool
name_ok(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n == 0 || n >= max || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return false;
	for (const char *p = s; *p; p++)
		if (*p == '/' || (unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
			return false;
	return true;
}

static bool
pci_address_ok(const char *s)
{
	unsigned dom, bus, dev, fn;
	char tail;

	return strlen(s) == 12 &&
	       sscanf(s, "%4x:%2x:%2x.%1u%c", &dom, &bus, &dev, &fn, &tail) == 4 && fn < 8 &&
	       s[4] == ':' && s[7] == ':' && s[10] == '.';
}

/* The types of an mdev parent, sorted by id. Returns how many, or -errno. */
struct mtype {
	char id[64];
	struct vgpu_mdev_type t;
};

static int
mtype_cmp(const void *a, const void *b)
{
	return strcmp(((const struct mtype *)a)->id, ((const struct mtype *)b)->id);
}

static int
mdev_types(struct vgpu_state *st, const char *parent, struct mtype *out, size_t max)
{
	char rel[256];
	struct dirent *de;
	size_t n = 0;
	DIR *dir;
	int fd;

	snprintf(rel, sizeof(rel), "class/mdev_bus/%s/mdev_supported_types", parent);
	fd = openat(st->ops->sysfs_fd(st->core), rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	dir = fdopendir(fd);
	if (dir == NULL) {
		close(fd);
		return -ENOMEM;
	}
	while ((de = readdir(dir)) != NULL && n < max) {
		char f[4][512], p[384];
		static const char *const files[] = { "name", "device_api", "available_instances",
						     "description" };
		bool have[4];

		if (de->d_name[0] == '.' || !name_ok(de->d_name, sizeof(out->id)))
			continue;
		for (int i = 0; i < 4; i++) {
			snprintf(p, sizeof(p), "%s/%s/%s", rel, de->d_name, files[i]);
			have[i] = read_rel(st, p, f[i], sizeof(f[i])) >= 0;
		}
		snprintf(out[n].id, sizeof(out[n].id), "%s", de->d_name);
		if (vgpu_parse_mdev_type(have[0] ? f[0] : NULL, have[1] ? f[1] : NULL,
					 have[2] ? f[2] : NULL, have[3] ? f[3] : NULL, &out[n].t) < 0)
			out[n].t.available = -1;
		n++;
	}
	closedir(dir);
	qsort(out, n, sizeof(*out), mtype_cmp);
	return (int)n;
}

/* A type of `parent` by directory id or by name; NULL when none. */
static const struct mtype *
mdev_type_find(const struct mtype *types, int n, const char *want)
{
	for (int i = 0; i < n; i++)
		if (strcmp(types[i].id, want) == 0)
			return &types[i];
	for (int i = 0; i < n; i++)
		if (strcmp(types[i].t.name, want) == 0)
			return &types[i];
	return NULL;
}

/* A VF's catalogue; returns how many (at most max), or -errno. */
static int
vf_types(struct vgpu_state *st, const char *addr, struct vgpu_vf_type *out, size_t max)
{
	char rel[128], buf[16384];
	int n;
	size_t count;

	snprintf(rel, sizeof(rel), "bus/pci/devices/%s/nvidia/creatable_vgpu_types", addr);
	n = read_rel(st, rel, buf, sizeof(buf));
	if (n < 0)
		return n;
	count = vgpu_parse_creatable(buf, (size_t)n, out, max);
	return (int)(count < max ? count : max);
}

static int
vf_current(struct vgpu_state *st, const char *addr, long *id)
{
	char rel[128], buf[64];
	int n;

	snprintf(rel, sizeof(rel), "bus/pci/devices/%s/nvidia/current_vgpu_type", addr);
	n = read_rel(st, rel, buf, sizeof(buf));
	if (n < 0)
		return n;
	return vgpu_parse_type_id(buf, id);
}

static const struct vgpu_vf_type *
vf_type_find(const struct vgpu_vf_type *types, int n, const char *want)
{
	char *end;
	long id = strtol(want, &end, 10);

	for (int i = 0; i < n; i++)
		if ((*end == '\0' && end != want && types[i].id == id) ||
		    strcmp(types[i].name, want) == 0)
			return &types[i];
	return NULL;
}

static bool
vf_flavour(struct vgpu_state *st, const char *addr)
{
	char rel[128];

	snprintf(rel, sizeof(rel), "bus/pci/devices/%s/nvidia/current_vgpu_type", addr);
	return exists_rel(st, rel);
}

/* The VF's vfio cdev ("vfio3"), from its vfio-dev directory. */
static int
vf_cdev(struct vgpu_state *st, const char *addr, char *buf, size_t size)
{
	char rel[128];
	struct dirent *de;
	DIR *dir;
	int fd, err = -ENOENT;

	buf[0] = '\0';
	snprintf(rel, sizeof(rel), "bus/pci/devices/%s/vfio-dev", addr);
	fd = openat(st->ops->sysfs_fd(st->core), rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	dir = fdopendir(fd);
	if (dir == NULL) {
		close(fd);
		return -ENOMEM;
	}
	while ((de = readdir(dir)) != NULL)
		if (strncmp(de->d_name, "vfio", 4) == 0 && strlen(de->d_name) < size) {
			snprintf(buf, size, "%s", de->d_name);
			err = 0;
			break;
		}
	closedir(dir);
	return err;
}

/* --- MIG-backed vGPU: what the mig module says (its events) ----------------- */

/* The GPU instance the driver gave a VF's vGPU: nvidia/gpu_instance_id, an
 * output of the driver (unreadable until the VF has a type; never written
 * here). -1 when the VF has no type or the file says nothing. */
static long
vf_gpu_instance(struct vgpu_state *st, const char *addr)
{
	char rel[128], buf[32], *end;
	long cur = 0, id;

	if (vf_current(st, addr, &cur) < 0 || cur == 0)
		return -1;
	snprintf(rel, sizeof(rel), "bus/pci/devices/%s/nvidia/gpu_instance_id", addr);
	if (read_rel(st, rel, buf, sizeof(buf)) <= 0)
		return -1;
	id = strtol(buf, &end, 10);
	if (end == buf || (*end != '\0' && *end != '\n') || id < 0 || id >= 0xffffffffL)
		return -1;
	return id;
}

/* The GPU-instance profile (hardware id) of the instances of `pf` that can
 * host vGPU type `type`, as the mig module last said; -1 when none lists it. */
static long
mig_type_profile(struct vgpu_state *st, const char *pf, long type)
{
	const json_t *gis = json_object_get(json_object_get(st->mig, pf), "gpu_instances");
	size_t i, k;
	json_t *gi, *t;

	json_array_foreach(gis, i, gi)
		json_array_foreach(json_object_get(gi, "vgpu_types"), k, t)
			if (json_integer_value(json_object_get(t, "id")) == type &&
			    json_is_integer(json_object_get(gi, "profile_id")))
				return (long)json_integer_value(json_object_get(gi, "profile_id"));
	return -1;
}

static const char *
mig_status(struct vgpu_state *st, const char *pf)
{
	return json_string_value(json_object_get(json_object_get(st->mig, pf), "status"));
}

/* Whether the MIG layout of GPU `pf` is in place, so that its MIG-backed
 * vGPU types may be (re-)applied: the mig module said the GPU is synced or
 * not its to manage, or it cannot say anything (no NVML; no word from it
 * VGPU_MIG_WAIT_MS after the start: not loaded). */
static bool
mig_ready(struct vgpu_state *st, const char *pf)
{
	const char *status = mig_status(st, pf);

	if (st->mig_nvml == 0)
		return true;
	if (json_object_get(st->mig, pf) == NULL)
		return st->mig_nvml == 1 || st->mig_wait_over;
	return status && (strcmp(status, "synced") == 0 || strcmp(status, "unmanaged") == 0 ||
			  strcmp(status, "absent") == 0);
}

/* The VF of `pf` whose vGPU the driver put on GPU instance `gi` (its
 * gpu_instance_id), written to vf; false when none. */
static bool
gi_taken_by(struct vgpu_state *st, const char *pf, long gi, char *vf, size_t size)
{
	char rel[128], target[256];

	for (int i = 0; i < 4096; i++) {
		ssize_t n;
		const char *base;

		snprintf(rel, sizeof(rel), "bus/pci/devices/%s/virtfn%d", pf, i);
		n = readlinkat(st->ops->sysfs_fd(st->core), rel, target, sizeof(target) - 1);
		if (n <= 0)
			break;
		target[n] = '\0';
		base = strrchr(target, '/') ? strrchr(target, '/') + 1 : target;
		if (vf_gpu_instance(st, base) == gi) {
			snprintf(vf, size, "%s", base);
			return true;
		}
	}
	return false;
}

/* The GPU instances a type of `pf` would use: those that list it (free,
 * unless a VF's gpu_instance_id names it) and those of its profile a VF
 * already took. NULL when the type is not MIG-backed as far as the mig
 * module said. */
static json_t *
type_gpu_instances(struct vgpu_state *st, const char *pf, long type)
{
	const json_t *gis = json_object_get(json_object_get(st->mig, pf), "gpu_instances");
	long profile = mig_type_profile(st, pf, type);
	json_t *out, *gi, *t;
	size_t i, k;

	if (profile < 0)
		return NULL;
	out = json_array();
	json_array_foreach(gis, i, gi) {
		long id = (long)json_integer_value(json_object_get(gi, "id"));
		bool lists = false;
		char vf[32] = "";
		bool taken;

		json_array_foreach(json_object_get(gi, "vgpu_types"), k, t)
			lists |= json_integer_value(json_object_get(t, "id")) == type;
		if (!lists && json_integer_value(json_object_get(gi, "profile_id")) != profile)
			continue;
		taken = gi_taken_by(st, pf, id, vf, sizeof(vf));
		if (!lists && !taken)
			continue;
		json_array_append_new(out, json_pack("{s:I, s:O?, s:O?, s:b, s:s?}", "id",
						     (json_int_t)id, "profile",
						     json_object_get(gi, "profile"), "placement",
						     json_object_get(gi, "placement"), "free", !taken,
						     "vf", taken ? vf : NULL));
	}
	return out;
}

/* The resource domain of an mdev parent: its PCI vendor's, or the default. */
static const char *
parent_domain(struct vgpu_state *st, const char *parent)
{
	char rel[128], buf[32];
	const char *d;

	snprintf(rel, sizeof(rel), "bus/pci/devices/%s/vendor", parent);
	if (read_rel(st, rel, buf, sizeof(buf)) > 0 &&
	    (d = vgpu_vendor_domain((int)strtol(buf, NULL, 16))) != NULL)
		return d;
	return st->domain;
}

static void
default_resource(struct vgpu_state *st, const char *domain, const char *type,
		 const char *type_name, char *buf, size_t size)
{
	for (size_t i = 0; i < st->nrenames; i++)
		if (strcmp(st->renames[i].type, type_name) == 0 ||
		    strcmp(st->renames[i].type, type) == 0) {
			snprintf(buf, size, "%s", st->renames[i].resource);
			return;
		}
	if (vgpu_resource_name(domain, type_name[0] ? type_name : type, buf, size) < 0)
		snprintf(buf, size, "%s/vgpu", domain);
}

/* --- records ------------------------------------------------------------- */

static struct vgpu *
rec_find(struct vgpu_state *st, const char *id)
{
	for (size_t i = 0; i < st->n; i++)
		if (strcmp(st->v[i].id, id) == 0)
			return &st->v[i];
	return NULL;
}

static struct vgpu *
rec_add(struct vgpu_state *st)
{
	if (st->n == st->cap) {
		size_t cap = st->cap ? st->cap * 2 : 16;
		struct vgpu *nv = realloc(st->v, cap * sizeof(*nv));

		if (nv == NULL)
			return NULL;
		st->v = nv;
		st->cap = cap;
	}
	memset(&st->v[st->n], 0, sizeof(st->v[0]));
	st->v[st->n].group = -1;
	return &st->v[st->n++];
}

static void
rec_del(struct vgpu_state *st, struct vgpu *r)
{
	size_t i = (size_t)(r - st->v);

	memmove(&st->v[i], &st->v[i + 1], (st->n - i - 1) * sizeof(st->v[0]));
	st->n--;
}

static struct vfs_rec *
gpu_find(struct vgpu_state *st, const char *gpu)
{
	for (size_t i = 0; i < st->ngpus; i++)
		if (strcmp(st->gpus[i].gpu, gpu) == 0)
			return &st->gpus[i];
	return NULL;
}

static void
gpu_del(struct vgpu_state *st, struct vfs_rec *g)
{
	size_t i = (size_t)(g - st->gpus);

	memmove(&st->gpus[i], &st->gpus[i + 1], (st->ngpus - i - 1) * sizeof(st->gpus[0]));
	st->ngpus--;
}

static json_t *
rec_json(const struct vgpu *r)
{
	json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:b, s:I, s:b}", "flavour",
			      flavour_names[r->flavour], "phase", phase_names[r->phase], "id", r->id,
			      "parent", r->parent, "type", r->type, "type_name", r->type_name,
			      "resource", r->resource, "resource_fixed", r->resource_fixed, "config",
			      r->from_config, "generation", (json_int_t)r->gen, "allocated",
			      r->allocated);

	if (j && r->mig_backed)
		json_object_set_new(j, "mig_backed", json_true());
	return j;
}

/* Journals every record (intent or outcome) in state.json. */
static int
save(struct vgpu_state *st)
{
	json_t *section = json_object(), *arr = json_array();
	int err;

	if (section == NULL || arr == NULL) {
		json_decref(section);
		json_decref(arr);
		return -ENOMEM;
	}
	for (size_t i = 0; i < st->n; i++)
		json_array_append_new(arr, rec_json(&st->v[i]));
	json_object_set_new(section, "vgpus", arr);
	arr = json_array();
	for (size_t i = 0; arr && i < st->ngpus; i++)
		json_array_append_new(arr, json_pack("{s:s, s:s, s:s}", "gpu", st->gpus[i].gpu,
						     "driver", st->gpus[i].driver, "phase",
						     vfs_phase_names[st->gpus[i].phase]));
	json_object_set_new(section, "vf_gpus", arr);
	json_object_set_new(section, "next_generation", json_integer(st->next_gen));
	err = st->ops->state_put(st->core, section);
	json_decref(section);
	return err;
}

static int
enum_of(const char *s, const char *const *names, int max)
{
	for (int i = 0; s && i < max; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	return -1;
}

/* Reads the records the state section holds; bad entries are skipped. */
static void
load(struct vgpu_state *st, const json_t *section)
{
	const json_t *arr = json_object_get(section, "vgpus"), *e;
	json_int_t ng = json_integer_value(json_object_get(section, "next_generation"));
	size_t i;

	st->next_gen = ng > 0 ? ng : 1;
	json_array_foreach(json_object_get(section, "vf_gpus"), i, e) {
		const char *gpu = json_string_value(json_object_get(e, "gpu"));
		const char *drv = json_string_value(json_object_get(e, "driver"));
		int ph = enum_of(json_string_value(json_object_get(e, "phase")), vfs_phase_names,
				 VFS_PH_MAX);
		struct vfs_rec *g;

		if (gpu == NULL || !pci_address_ok(gpu) || ph < 0 || gpu_find(st, gpu) ||
		    st->ngpus == VGPU_MAX_GPUS || (drv && drv[0] && !name_ok(drv, sizeof(g->driver))))
			continue;
		g = &st->gpus[st->ngpus++];
		memset(g, 0, sizeof(*g));
		snprintf(g->gpu, sizeof(g->gpu), "%s", gpu);
		snprintf(g->driver, sizeof(g->driver), "%s", drv ? drv : "");
		g->phase = (enum vfs_phase)ph;
	}
	json_array_foreach(arr, i, e) {
		int fl = enum_of(json_string_value(json_object_get(e, "flavour")), flavour_names,
				 VGPU_FLAVOUR_MAX);
		int ph = enum_of(json_string_value(json_object_get(e, "phase")), phase_names,
				 PH_MAX);
		const char *id = json_string_value(json_object_get(e, "id"));
		const char *parent = json_string_value(json_object_get(e, "parent"));
		const char *type = json_string_value(json_object_get(e, "type"));
		const char *tname = json_string_value(json_object_get(e, "type_name"));
		const char *res = json_string_value(json_object_get(e, "resource"));
		struct vgpu *r;

		if (fl < 0 || ph < 0 || id == NULL || parent == NULL || type == NULL ||
		    res == NULL || rec_find(st, id) != NULL ||
		    (fl == VGPU_MDEV ? !vgpu_uuid_valid(id) : !pci_address_ok(id)) ||
		    !name_ok(parent, sizeof(r->parent)) || !name_ok(type, sizeof(r->type)) ||
		    !vgpu_resource_name_valid(res))
			continue;
		r = rec_add(st);
		if (r == NULL)
			return;
		r->flavour = (enum vgpu_flavour)fl;
		r->phase = (enum vgpu_phase)ph;
		snprintf(r->id, sizeof(r->id), "%s", id);
		snprintf(r->parent, sizeof(r->parent), "%s", parent);
		snprintf(r->type, sizeof(r->type), "%s", type);
		snprintf(r->type_name, sizeof(r->type_name), "%s", tname ? tname : "");
		snprintf(r->resource, sizeof(r->resource), "%s", res);
		r->resource_fixed = json_is_true(json_object_get(e, "resource_fixed"));
		r->from_config = json_is_true(json_object_get(e, "config"));
		r->allocated = json_is_true(json_object_get(e, "allocated"));
		r->mig_backed = fl == VGPU_VF && json_is_true(json_object_get(e, "mig_backed"));
		r->gen = json_integer_value(json_object_get(e, "generation"));
		if (r->gen >= st->next_gen)
			st->next_gen = r->gen + 1;
	}
}

/* Looks at sysfs for a record: present, group, healthy. */
static void
rec_refresh(struct vgpu_state *st, struct vgpu *r)
{
	char rel[160], node[32];

	r->group = -1;
	if (r->flavour == VGPU_MDEV) {
		snprintf(rel, sizeof(rel), "bus/mdev/devices/%s", r->id);
		r->present = exists_rel(st, rel);
		if (r->present) {
			snprintf(rel, sizeof(rel), "bus/mdev/devices/%s/iommu_group", r->id);
			r->group = link_group(st, rel);
		}
	} else {
		long cur = 0;
		char *end;
		long want = strtol(r->type, &end, 10);

		r->present = vf_current(st, r->id, &cur) == 0 && cur == want && *end == '\0';
		snprintf(rel, sizeof(rel), "bus/pci/devices/%s/iommu_group", r->id);
		r->group = link_group(st, rel);
	}
	snprintf(node, sizeof(node), "vfio/%d", r->group);
	r->healthy = r->present && r->phase != PH_REMOVING && r->group >= 0 &&
		     st->ops->dev_exists(st->core, node);
}

/* Hands the mdev records to the kubelet (resource members that need not be
 * inventory devices); VFs go through advertise. */
static void
publish(struct vgpu_state *st)
{
	char names[64][VGPU_RESOURCE_MAX];
	size_t nnames = 0;

	for (size_t i = 0; i < st->n; i++) {
		struct vgpu *r = &st->v[i];
		bool seen = false;

		if (r->flavour != VGPU_MDEV)
			continue;
		for (size_t k = 0; k < nnames && !seen; k++)
			seen = strcmp(names[k], r->resource) == 0;
		if (!seen && nnames < 64)
			snprintf(names[nnames++], sizeof(names[0]), "%s", r->resource);
	}
	for (size_t k = 0; k < nnames; k++) {
		struct hdd_resource_member *m = calloc(st->n ? st->n : 1, sizeof(*m));
		size_t nm = 0;

		if (m == NULL)
			return;
		for (size_t i = 0; i < st->n; i++) {
			struct vgpu *r = &st->v[i];

			if (r->flavour != VGPU_MDEV || strcmp(r->resource, names[k]) != 0)
				continue;
			m[nm++] = (struct hdd_resource_member){ .id = r->id, .healthy = r->healthy,
								 .numa_node = -1 };
		}
		if (st->ops->resource_set(st->core, names[k], m, nm) < 0)
			st->ops->log(st->core, HDD_LOG_WARN, "vgpu", "cannot offer resource %s",
				     names[k]);
		free(m);
	}
	/* Resources that lost their last member are withdrawn. */
	for (size_t j = 0; j < st->npublished; j++) {
		bool still = false;

		for (size_t k = 0; k < nnames && !still; k++)
			still = strcmp(names[k], st->published[j]) == 0;
		if (!still)
			st->ops->resource_set(st->core, st->published[j], NULL, 0);
	}
	memcpy(st->published, names, sizeof(names[0]) * nnames);
	st->npublished = nnames;
	st->ops->resources_changed(st->core);
}

static json_t *
rec_view(const struct vgpu *r)
{
	json_t *v = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:b, s:b, s:I, s:s, s:b, s:b}",
			      "flavour", flavour_names[r->flavour],
			      r->flavour == VGPU_MDEV ? "uuid" : "address", r->id, "parent",
			      r->parent, "type", r->type, "type_name", r->type_name, "resource",
			      r->resource, "present", r->present, "healthy", r->healthy, "allocated",
			      r->allocated, "generation", (json_int_t)r->gen, "phase",
			      phase_names[r->phase], "config", r->from_config, "busy", r->busy);

	if (v && r->flavour == VGPU_VF) {
		json_object_set_new(v, "mig_backed", json_boolean(r->mig_backed));
		json_object_set_new(v, "waiting_for", r->waiting ? json_string("mig") : json_null());
	}
	return v;
}

static void
emit_rec(struct vgpu_state *st, const char *event, const struct vgpu *r, const char *why)
{
	json_t *p = rec_view(r);

	/* "type" is the event's own key on the bus. */
	if (p) {
		json_object_set(p, "vgpu_type", json_object_get(p, "type"));
		json_object_del(p, "type");
	}
	if (p && why)
		json_object_set_new(p, "error", json_string(why));
	st->ops->emit(st->core, event, p);
}

/* --- the operation queue: one kernel change at a time ------------------------ */

static void
op_free(struct op *o)
{
	free(o);
}

static int
op_queue(struct vgpu_state *st, enum op_kind kind, const char *id, bool force, bool repair,
	 struct hdd_request *req)
{
	struct op *o = calloc(1, sizeof(*o)), **tail;
	struct vgpu *r = rec_find(st, id);

	if (o == NULL)
		return -ENOMEM;
	*o = (struct op){ .st = st, .kind = kind, .force = force, .repair = repair, .req = req };
	snprintf(o->id, sizeof(o->id), "%s", id);
	if (r)
		r->busy = true;
	for (tail = &st->queue; *tail; tail = &(*tail)->next)
		;
	*tail = o;
	if (st->running == NULL)
		op_next(st);
	return 0;
}

static void
op_reply_error(struct op *o, int code, const char *why)
{
	if (o->req)
		o->st->ops->reply_error(o->req, code, "%s", why);
	o->req = NULL;
}

/* Ends the running operation and starts the next one. */
static void
op_finish(struct vgpu_state *st)
{
	struct op *o = st->running;
	struct vgpu *r = o ? rec_find(st, o->id) : NULL;

	st->running = NULL;
	if (r) {
		bool again = false;

		for (struct op *q = st->queue; q && !again; q = q->next)
			again = strcmp(q->id, r->id) == 0;
		r->busy = again;
	}
	op_free(o);
	if (!st->stopping)
		op_next(st);
}

/* The operation failed: the journal says what is true now. */
static void
op_fail(struct vgpu_state *st, struct op *o, int code, const char *why)
{
	struct vgpu *r = rec_find(st, o->id);

	/* A repair that keeps failing (every reconcile tries again) says so
	 * once, until it works. */
	if (!(o->repair && r && r->complained))
		st->ops->log(st->core, HDD_LOG_WARN, "vgpu", "%s: %s", o->id, why);
	if (r && o->repair && r->complained && o->kind != OP_REMOVE && o->kind != OP_CLEAR) {
		r->phase = PH_CREATED;
		save(st);
		op_finish(st);
		return;
	}
	if (r) {
		if ((o->kind == OP_CREATE || o->kind == OP_SET) && !o->repair) {
			/* A new vGPU that did not come: forgotten, unless it is there. */
			rec_refresh(st, r);
			if (r->present) {
				r->phase = PH_CREATED;
			} else {
				struct vgpu copy = *r;

				rec_del(st, r);
				save(st);
				emit_rec(st, "failed", &copy, why);
				op_reply_error(o, code, why);
				publish(st);
				op_finish(st);
				return;
			}
		} else {
			r->phase = PH_CREATED;
			r->complained = o->repair;
		}
		save(st);
		rec_refresh(st, r);
		emit_rec(st, "failed", r, why);
		publish(st);
	}
	op_reply_error(o, code, why);
	op_finish(st);
}

static void
op_succeed(struct vgpu_state *st, struct op *o)
{
	struct vgpu *r = rec_find(st, o->id);

	if (r == NULL) {
		op_reply_error(o, HDD_ERR_FAILED, "record vanished");
		op_finish(st);
		return;
	}
	if (o->kind == OP_CREATE || o->kind == OP_SET) {
		r->phase = PH_CREATED;
		r->complained = false;
		r->seen_ok = true;
		if (save(st) < 0)
			st->ops->log(st->core, HDD_LOG_WARN, "vgpu",
				     "%s: created, but state.json was not written", r->id);
		rec_refresh(st, r);
		emit_rec(st, "created", r, NULL);
		if (o->req)
			st->ops->reply(o->req, rec_view(r));
		o->req = NULL;
	} else {
		struct vgpu copy = *r;

		rec_del(st, r);
		save(st);
		copy.present = copy.healthy = false;
		emit_rec(st, "removed", &copy, NULL);
		if (o->req)
			st->ops->reply(o->req, json_pack("{s:s, s:b}",
							 copy.flavour == VGPU_MDEV ? "uuid" : "address",
							 copy.id, "removed", 1));
		o->req = NULL;
	}
	publish(st);
	op_finish(st);
}

/* Waits for the kernel's change to show in sysfs (at once on a real one). */
static void
op_poll_cb(void *arg)
{
	struct op *o = arg;
	struct vgpu_state *st = o->st;
	struct vgpu *r = rec_find(st, o->id);
	bool done;

	o->timer = 0;
	if (r == NULL) {
		op_fail(st, o, HDD_ERR_FAILED, "record vanished");
		return;
	}
	rec_refresh(st, r);
	/* Made: usable, its group node there too (or present at the deadline:
	 * then it is offered as unhealthy until the node comes). */
	done = (o->kind == OP_CREATE || o->kind == OP_SET) ?
		       r->healthy || (r->present && o->waited_ms >= VGPU_APPEAR_MS) :
		       !r->present;
	if (done) {
		op_succeed(st, o);
		return;
	}
	if (o->waited_ms >= VGPU_APPEAR_MS) {
		char why[200];

		snprintf(why, sizeof(why), "%s: the kernel took the write but %s after %d ms",
			 r->id, o->kind == OP_CREATE ? "the mdev did not appear" :
			 o->kind == OP_REMOVE ? "the mdev is still there" :
			 o->kind == OP_SET ? "current_vgpu_type does not show the type" :
			 "current_vgpu_type still shows a type", o->waited_ms);
		op_fail(st, o, HDD_ERR_FAILED, why);
		return;
	}
	o->waited_ms += VGPU_POLL_MS;
	o->timer = st->ops->timer_add(st->core, VGPU_POLL_MS, op_poll_cb, o);
	if (o->timer < 0) {
		o->timer = 0;
		op_fail(st, o, HDD_ERR_FAILED, "cannot add a timer");
	}
}

static void
op_write_done(void *arg, int result, const json_t *out)
{
	struct op *o = arg;
	struct vgpu_state *st = o->st;
	char why[256];

	o->call = 0;
	if (result < 0) {
		snprintf(why, sizeof(why), "%s: writing %s failed: %s%s", o->id,
			 o->kind == OP_CREATE ? "create" : o->kind == OP_REMOVE ? "remove" :
			 "current_vgpu_type", strerror(-result),
			 result == -EPERM && o->kind == OP_CLEAR ? " (a VM still holds the VF?)" :
			 result == -ETIMEDOUT ? " (deadline passed)" : "");
		op_fail(st, o, HDD_ERR_FAILED, why);
		return;
	}
	o->waited_ms = 0;
	op_poll_cb(o);
}

/* Writes the change the operation stands for, its intent journalled first. */
static void
op_write(struct vgpu_state *st, struct op *o, struct vgpu *r)
{
	char path[256], value[64];
	int64_t id;

	switch (o->kind) {
	case OP_CREATE:
		snprintf(path, sizeof(path), "class/mdev_bus/%s/mdev_supported_types/%s/create",
			 r->parent, r->type);
		snprintf(value, sizeof(value), "%s", r->id);
		r->phase = PH_CREATING;
		break;
	case OP_REMOVE:
		snprintf(path, sizeof(path), "bus/mdev/devices/%s/remove", r->id);
		snprintf(value, sizeof(value), "1");
		r->phase = PH_REMOVING;
		break;
	case OP_SET:
		snprintf(path, sizeof(path), "bus/pci/devices/%s/nvidia/current_vgpu_type", r->id);
		snprintf(value, sizeof(value), "%s", r->type);
		r->phase = PH_CREATING;
		break;
	case OP_CLEAR:
	default:
		snprintf(path, sizeof(path), "bus/pci/devices/%s/nvidia/current_vgpu_type", r->id);
		snprintf(value, sizeof(value), "0");
		r->phase = PH_REMOVING;
		break;
	}
	if (save(st) < 0) {
		op_fail(st, o, HDD_ERR_FAILED, "cannot journal the change in state.json");
		return;
	}
	rec_refresh(st, r);
	publish(st);
	id = st->ops->sysfs_write(st->core, path, value, VGPU_WRITE_TIMEOUT_MS, op_write_done, o);
	if (id < 0) {
		char why[128];

		snprintf(why, sizeof(why), "cannot reach the worker: %s", strerror((int)-id));
		op_fail(st, o, HDD_ERR_FAILED, why);
		return;
	}
	o->call = id;
}

static void
op_holders_done(void *arg, int result, const json_t *out)
{
	struct op *o = arg;
	struct vgpu_state *st = o->st;
	const json_t *holders = out ? json_object_get(out, "holders") : NULL;
	struct vgpu *r = rec_find(st, o->id);
	char why[384];

	o->call = 0;
	if (r == NULL) {
		op_fail(st, o, HDD_ERR_FAILED, "record vanished");
		return;
	}
	if (result < 0) {
		snprintf(why, sizeof(why), "%s: cannot tell who holds it: %s", o->id,
			 strerror(-result));
		op_fail(st, o, HDD_ERR_FAILED, why);
		return;
	}
	if (json_array_size(holders) > 0) {
		const json_t *h = json_array_get(holders, 0);

		snprintf(why, sizeof(why),
			 "%s is in use: held by PID %lld (%s) through %s; refused (force to override)",
			 o->id, (long long)json_integer_value(json_object_get(h, "pid")),
			 json_string_value(json_object_get(h, "comm")) ?: "?",
			 json_string_value(json_object_get(h, "path")) ?: "?");
		if (o->req)
			st->ops->reply_error(o->req, HDD_ERR_BUSY, "%s", why);
		o->req = NULL;
		st->ops->log(st->core, HDD_LOG_INFO, "vgpu", "%s", why);
		op_finish(st);
		return;
	}
	op_write(st, o, r);
}

/* The "in use" check before removing or clearing: a process holding the
 * group node or the vfio cdev (never a write left blocking in the kernel). */
static int
op_check_holders(struct vgpu_state *st, struct op *o, struct vgpu *r)
{
	char name[32], p0[256] = "", p1[256] = "";
	const char *paths[3] = { NULL, NULL, NULL };
	size_t np = 0;
	int64_t id;

	rec_refresh(st, r);
	if (r->group >= 0) {
		snprintf(name, sizeof(name), "vfio/%d", r->group);
		if (st->ops->dev_path(st->core, name, p0, sizeof(p0)) == 0)
			paths[np++] = p0;
	}
	if (r->flavour == VGPU_VF) {
		char cdev[32], rel[64];

		if (vf_cdev(st, r->id, cdev, sizeof(cdev)) == 0) {
			snprintf(rel, sizeof(rel), "vfio/devices/%s", cdev);
			if (st->ops->dev_path(st->core, rel, p1, sizeof(p1)) == 0)
				paths[np++] = p1;
		}
	}
	if (np == 0)
		return 1;	/* no node: nobody can hold it */
	id = st->ops->holders(st->core, paths, NULL, VGPU_HOLDERS_TIMEOUT_MS, op_holders_done, o);
	if (id < 0)
		return (int)id;
	o->call = id;
	return 0;
}

/* Checks, right before the write, what the kernel would refuse anyway. */
static int
op_validate(struct vgpu_state *st, struct op *o, struct vgpu *r, char *why, size_t size)
{
	if (o->kind == OP_REMOVE || o->kind == OP_CLEAR) {
		/* Gone already (by hand, with its parent, another type): there is
		 * nothing of ours in the kernel to undo, only the record. */
		rec_refresh(st, r);
		return r->present ? 0 : 1;
	}
	if (o->kind == OP_CREATE) {
		struct mtype types[VGPU_MAX_TYPES];
		const struct mtype *t;
		int n = mdev_types(st, r->parent, types, VGPU_MAX_TYPES);

		if (n < 0) {
			snprintf(why, size, "mdev parent %s is not there", r->parent);
			return -ENODEV;
		}
		t = mdev_type_find(types, n, r->type);
		if (t == NULL) {
			snprintf(why, size, "mdev parent %s does not offer type %s", r->parent,
				 r->type);
			return -ENOENT;
		}
		if (t->t.available == 0) {
			snprintf(why, size, "no instance of type %s (%s) left on %s", r->type,
				 t->t.name, r->parent);
			return -ENOSPC;
		}
	} else if (o->kind == OP_SET) {
		struct vgpu_vf_type types[VGPU_MAX_TYPES];
		long cur = -1;
		int n;

		if (vf_current(st, r->id, &cur) < 0) {
			snprintf(why, size, "VF %s has no nvidia/current_vgpu_type", r->id);
			return -ENODEV;
		}
		if (cur != 0) {
			snprintf(why, size, "VF %s already has vGPU type %ld", r->id, cur);
			return cur == strtol(r->type, NULL, 10) ? 1 : -EBUSY;
		}
		n = vf_types(st, r->id, types, VGPU_MAX_TYPES);
		if (n < 0 || vf_type_find(types, n, r->type) == NULL) {
			snprintf(why, size, "VF %s cannot take type %s (%s) now (creatable_vgpu_types)",
				 r->id, r->type, r->type_name);
			return -ENOSPC;
		}
	}
	return 0;
}

static void
op_next(struct vgpu_state *st)
{
	while (st->running == NULL && st->queue && !st->stopping) {
		struct op *o = st->queue;
		struct vgpu *r = rec_find(st, o->id);
		char why[256];
		int err;

		st->queue = o->next;
		o->next = NULL;
		st->running = o;
		if (r == NULL) {
			op_reply_error(o, HDD_ERR_NOT_FOUND, "no such vGPU (removed meanwhile)");
			op_finish(st);
			return;
		}
		err = op_validate(st, o, r, why, sizeof(why));
		if (err == 1) {
			op_succeed(st, o);	/* already so */
			return;
		}
		if (err < 0) {
			op_fail(st, o, err == -ENODEV || err == -ENOENT ? HDD_ERR_NOT_FOUND :
				HDD_ERR_REFUSED, why);
			return;
		}
		if ((o->kind == OP_REMOVE || o->kind == OP_CLEAR) && !o->force) {
			err = op_check_holders(st, o, r);
			if (err == 0)
				return;
			if (err < 0) {
				snprintf(why, sizeof(why), "cannot ask who holds %s: %s", r->id,
					 strerror(-err));
				op_fail(st, o, HDD_ERR_FAILED, why);
				return;
			}
		}
		op_write(st, o, r);
		return;
	}
}

/* --- reconcile: the journal against the live system ------------------------- */

static bool
rule_matches_gpu(const struct rule *ru, const struct hdd_pci_facts *pf)
{
	unsigned v, d;

	if (sscanf(ru->gpu, "%4x:%4x", &v, &d) == 2 && strlen(ru->gpu) == 9)
		return pf->vendor_id == (int)v && pf->device_id == (int)d;
	return fnmatch(ru->gpu, pf->address, 0) == 0;
}

static struct vgpu *
new_record(struct vgpu_state *st, enum vgpu_flavour fl, const char *id, const char *parent,
	   const char *type, const char *type_name, const char *resource, bool fixed,
	   bool config)
{
	struct vgpu *r = rec_add(st);

	if (r == NULL)
		return NULL;
	r->flavour = fl;
	r->phase = PH_CREATING;
	snprintf(r->id, sizeof(r->id), "%s", id);
	snprintf(r->parent, sizeof(r->parent), "%s", parent);
	snprintf(r->type, sizeof(r->type), "%s", type);
	snprintf(r->type_name, sizeof(r->type_name), "%s", type_name);
	snprintf(r->resource, sizeof(r->resource), "%s", resource);
	r->resource_fixed = fixed;
	r->from_config = config;
	r->gen = st->next_gen++;
	return r;
}

static void
new_uuid(char *buf, size_t size)
{
	unsigned char b[16];

	if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
		for (size_t i = 0; i < sizeof(b); i++)
			b[i] = (unsigned char)random();
	}
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	snprintf(buf, size,
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
		 b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
		 b[15]);
}

/* The mdev parents: entries of class/mdev_bus. */
static size_t
mdev_parents(struct vgpu_state *st, char (*names)[64], size_t max)
{
	int fd = openat(st->ops->sysfs_fd(st->core), "class/mdev_bus",
			O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct dirent *de;
	size_t n = 0;
	DIR *dir;

	if (fd < 0)
		return 0;
	dir = fdopendir(fd);
	if (dir == NULL) {
		close(fd);
		return 0;
	}
	while ((de = readdir(dir)) != NULL && n < max)
		if (de->d_name[0] != '.' && name_ok(de->d_name, 64))
			snprintf(names[n++], 64, "%s", de->d_name);
	closedir(dir);
	qsort(names, n, 64, (int (*)(const void *, const void *))strcmp);
	return n;
}

/* Takes up to `want` mdevs of type t that are on `parent` and not recorded
 * (made before hostdevd, or by hand) as the rule's own. Returns how many. */
static int
adopt_mdevs(struct vgpu_state *st, const struct rule *ru, const char *parent,
	    const struct mtype *t, int want)
{
	int fd = openat(st->ops->sysfs_fd(st->core), "bus/mdev/devices",
			O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	struct dirent *de;
	int n = 0;
	DIR *dir;

	if (fd < 0 || want <= 0) {
		if (fd >= 0)
			close(fd);
		return 0;
	}
	dir = fdopendir(fd);
	if (dir == NULL) {
		close(fd);
		return 0;
	}
	while (n < want && (de = readdir(dir)) != NULL) {
		char rel[160], ty[64] = "", par[64] = "", target[512], res[VGPU_RESOURCE_MAX];
		const char *slash;
		struct vgpu *r;
		ssize_t len;

		if (!vgpu_uuid_valid(de->d_name) || rec_find(st, de->d_name))
			continue;
		snprintf(rel, sizeof(rel), "bus/mdev/devices/%s", de->d_name);
		len = readlinkat(st->ops->sysfs_fd(st->core), rel, target, sizeof(target) - 1);
		if (len <= 0)
			continue;
		target[len] = '\0';
		*strrchr(target, '/') = '\0';
		slash = strrchr(target, '/');
		snprintf(par, sizeof(par), "%s", slash ? slash + 1 : target);
		snprintf(rel, sizeof(rel), "bus/mdev/devices/%s/mdev_type", de->d_name);
		if (strcmp(par, parent) != 0 || link_base(st, rel, ty, sizeof(ty)) < 0 ||
		    strcmp(ty, t->id) != 0)
			continue;
		if (ru->resource[0])
			snprintf(res, sizeof(res), "%s", ru->resource);
		else
			default_resource(st, parent_domain(st, parent), t->id, t->t.name, res,
					 sizeof(res));
		r = new_record(st, VGPU_MDEV, de->d_name, parent, t->id, t->t.name, res,
			       ru->resource[0] != '\0', true);
		if (r == NULL)
			break;
		r->phase = PH_CREATED;
		rec_refresh(st, r);
		r->seen_ok = r->present;
		save(st);
		emit_rec(st, "created", r, NULL);
		n++;
	}
	closedir(dir);
	return n;
}

static void
apply_mdev_rule(struct vgpu_state *st, const struct rule *ru)
{
	char (*names)[64] = calloc(512, 64);
	size_t np = names ? mdev_parents(st, names, 512) : 0;

	for (size_t i = 0; i < np; i++) {
		struct mtype types[VGPU_MAX_TYPES];
		const struct mtype *t;
		int nt, have = 0;

		if (fnmatch(ru->parent, names[i], 0) != 0)
			continue;
		nt = mdev_types(st, names[i], types, VGPU_MAX_TYPES);
		t = nt > 0 ? mdev_type_find(types, nt, ru->type) : NULL;
		if (t == NULL)
			continue;
		for (size_t k = 0; k < st->n; k++)
			have += st->v[k].flavour == VGPU_MDEV &&
				strcmp(st->v[k].parent, names[i]) == 0 &&
				strcmp(st->v[k].type, t->id) == 0;
		have += adopt_mdevs(st, ru, names[i], t, ru->count - have);
		for (; have < ru->count; have++) {
			char uuid[40], res[VGPU_RESOURCE_MAX];
			struct vgpu *r;

			new_uuid(uuid, sizeof(uuid));
			if (ru->resource[0])
				snprintf(res, sizeof(res), "%s", ru->resource);
			else
				default_resource(st, parent_domain(st, names[i]), t->id, t->t.name, res,
						 sizeof(res));
			r = new_record(st, VGPU_MDEV, uuid, names[i], t->id, t->t.name, res,
				       ru->resource[0] != '\0', true);
			if (r == NULL || save(st) < 0 || op_queue(st, OP_CREATE, uuid, false, true, NULL) < 0)
				break;
		}
	}
	free(names);
}

struct gpu_walk {
	struct vgpu_state *st;
	const struct rule *ru;
};

static void
apply_vf_rule_cb(const struct hdd_device_view *dev, void *arg)
{
	struct gpu_walk *w = arg;
	struct vgpu_state *st = w->st;
	const struct hdd_pci_facts *f = dev->pci;
	int have = 0;

	if (f->vendor_id != 0x10de || f->physfn != NULL || f->virtfns == NULL ||
	    !rule_matches_gpu(w->ru, f))
		return;
	for (size_t k = 0; k < st->n; k++)
		have += st->v[k].flavour == VGPU_VF && strcmp(st->v[k].parent, f->address) == 0;
	for (const char *const *vf = f->virtfns; *vf && have < w->ru->count; vf++) {
		struct vgpu_vf_type types[VGPU_MAX_TYPES];
		const struct vgpu_vf_type *t;
		char tid[24], res[VGPU_RESOURCE_MAX];
		struct vgpu *r;
		long cur = -1;
		int nt;

		if (rec_find(st, *vf) || vf_current(st, *vf, &cur) < 0 || cur != 0)
			continue;
		nt = vf_types(st, *vf, types, VGPU_MAX_TYPES);
		t = nt > 0 ? vf_type_find(types, nt, w->ru->type) : NULL;
		if (t == NULL)
			continue;
		/* A MIG-backed type waits for its GPU's layout (the mig module's
		 * word); the driver lists it only once instances exist anyway. */
		if (mig_type_profile(st, f->address, t->id) >= 0 && !mig_ready(st, f->address))
			return;
		snprintf(tid, sizeof(tid), "%ld", t->id);
		if (w->ru->resource[0])
			snprintf(res, sizeof(res), "%s", w->ru->resource);
		else
			default_resource(st, "nvidia.com", tid, t->name, res, sizeof(res));
		r = new_record(st, VGPU_VF, *vf, f->address, tid, t->name, res,
			       w->ru->resource[0] != '\0', true);
		if (r == NULL)
			return;
		r->mig_backed = mig_type_profile(st, f->address, t->id) >= 0;
		if (save(st) < 0 || op_queue(st, OP_SET, *vf, false, true, NULL) < 0)
			return;
		have++;
	}
}

/* Compares every record with sysfs; repairs drift, finishes what a kill left
 * half done, and applies the configuration's counts. */
static void
reconcile(struct vgpu_state *st, bool at_start)
{
	bool rebooted = st->ops->rebooted(st->core);

	if (st->closed || st->stopping)
		return;
	reconcile_gpus(st, at_start, rebooted);
	for (size_t i = 0; i < st->n; i++) {
		struct vgpu *r = &st->v[i];
		bool was_ok = r->seen_ok;
		long cur = -1;

		if (r->busy || (r->flavour == VGPU_VF && gpu_busy(st, r->parent)))
			continue;	/* its VFs come first: the enable's end brings it */
		if (r->flavour == VGPU_VF && !r->mig_backed &&
		    mig_type_profile(st, r->parent, strtol(r->type, NULL, 10)) >= 0) {
			r->mig_backed = true;	/* learnt from the mig module */
			save(st);
		}
		rec_refresh(st, r);
		if (r->phase == PH_REMOVING) {
			/* A removal a kill interrupted: finish it (holders checked). */
			if (r->present) {
				op_queue(st, r->flavour == VGPU_MDEV ? OP_REMOVE : OP_CLEAR, r->id, false,
					 true, NULL);
			} else {
				struct vgpu copy = *r;

				rec_del(st, r);
				i--;
				save(st);
				emit_rec(st, "removed", &copy, NULL);
			}
			continue;
		}
		if (r->present) {
			if (r->phase == PH_CREATING) {
				r->phase = PH_CREATED;
				save(st);
			}
			r->complained = false;
			r->seen_ok = true;
			r->waiting = false;
			continue;
		}
		r->seen_ok = false;
		if (r->flavour == VGPU_VF && vf_current(st, r->id, &cur) == 0 && cur != 0) {
			/* Someone gave the VF another type: not ours to undo. */
			if (!r->complained) {
				char why[160];

				snprintf(why, sizeof(why),
					 "VF %s has type %ld, not the recorded %s (changed by hand)",
					 r->id, cur, r->type);
				emit_rec(st, "drift", r, why);
				st->ops->log(st->core, HDD_LOG_WARN, "vgpu", "%s", why);
				r->complained = true;
			}
			continue;
		}
		if (r->flavour == VGPU_VF && r->mig_backed && !mig_ready(st, r->parent)) {
			/* Its GPU instance comes first: the mig module's word on the
			 * GPU's layout brings it (after a reboot, a rebind). */
			if (!r->waiting)
				st->ops->log(st->core, HDD_LOG_INFO, "vgpu", "%s: type %s (%s) is "
					     "MIG-backed: waiting for the MIG layout of %s (%s)", r->id,
					     r->type, r->type_name, r->parent,
					     mig_status(st, r->parent) ?: "not reported yet");
			r->waiting = true;
			continue;
		}
		r->waiting = false;
		if (r->phase == PH_CREATED && !(at_start && rebooted) && (was_ok || at_start)) {
			char why[160];

			snprintf(why, sizeof(why), "%s %s is gone (removed by hand, driver reload or "
				 "parent gone); creating it again", r->flavour == VGPU_MDEV ? "mdev" :
				 "the type of VF", r->id);
			emit_rec(st, "drift", r, why);
			st->ops->log(st->core, HDD_LOG_WARN, "vgpu", "%s", why);
		}
		if (r->flavour == VGPU_MDEV) {
			char rel[128];

			snprintf(rel, sizeof(rel), "class/mdev_bus/%s", r->parent);
			if (!exists_rel(st, rel))
				continue;	/* the parent's return brings it back */
		} else if (cur < 0) {
			continue;		/* the VF is not there (VFs disabled, driver gone) */
		}
		op_queue(st, r->flavour == VGPU_MDEV ? OP_CREATE : OP_SET, r->id, false, true, NULL);
	}
	for (size_t i = 0; i < st->nrules; i++) {
		if (st->rules[i].parent[0]) {
			apply_mdev_rule(st, &st->rules[i]);
		} else {
			struct gpu_walk w = { st, &st->rules[i] };

			st->ops->device_foreach(st->core, HDD_DEV_PCI, apply_vf_rule_cb, &w);
		}
	}
	publish(st);
}

static void
reconcile_soon_cb(void *arg)
{
	struct vgpu_state *st = arg;

	st->soon_timer = 0;
	reconcile(st, false);
}

/* Many events (a parent's return brings dozens) make one reconcile. */
static void
reconcile_soon(struct vgpu_state *st)
{
	if (st->soon_timer > 0 || !st->started || st->stopping)
		return;
	st->soon_timer = st->ops->timer_add(st->core, 50, reconcile_soon_cb, st);
	if (st->soon_timer < 0)
		st->soon_timer = 0;
}

static void
reconcile_tick_cb(void *arg)
{
	struct vgpu_state *st = arg;

	st->reconcile_timer = 0;
	reconcile(st, false);
	if (!st->stopping && st->interval_s > 0) {
		st->reconcile_timer = st->ops->timer_add(st->core, st->interval_s * 1000,
							 reconcile_tick_cb, st);
		if (st->reconcile_timer < 0)
			st->reconcile_timer = 0;
	}
}

/* --- configuration -------------------------------------------------------- */

/* {"vgpu": {"devices": [{"parent"|"gpu": glob, "type": id or name,
 *   "count": n, "resource_name": "x/y"}], "resources": {"type": "x/y"},
 *   "default_domain": "hostdevd.io", "reconcile_interval": seconds}} */
static int
config_parse(const json_t *section, struct vgpu_state *st, char *why, size_t whylen)
{
	const char *key;
	json_t *v;

	if (st) {
		st->nrules = st->nrenames = 0;
		snprintf(st->domain, sizeof(st->domain), "%s", VGPU_DEFAULT_DOMAIN);
		st->interval_s = 30;
	}
	if (section == NULL)
		return 0;
	if (!json_is_object(section)) {
		snprintf(why, whylen, "vgpu: expected an object");
		return -EINVAL;
	}
	json_object_foreach((json_t *)section, key, v) {
		if (strcmp(key, "default_domain") == 0) {
			char probe[VGPU_RESOURCE_MAX];
			const char *s = json_string_value(v);

			if (s == NULL || strlen(s) >= 64 ||
			    snprintf(probe, sizeof(probe), "%s/x", s) < 0 ||
			    !vgpu_resource_name_valid(probe)) {
				snprintf(why, whylen, "vgpu.default_domain: expected a domain such as %s",
					 VGPU_DEFAULT_DOMAIN);
				return -EINVAL;
			}
			if (st)
				snprintf(st->domain, sizeof(st->domain), "%s", s);
		} else if (strcmp(key, "reconcile_interval") == 0) {
			if (!json_is_integer(v) || json_integer_value(v) < 0 ||
			    json_integer_value(v) > 86400) {
				snprintf(why, whylen,
					 "vgpu.reconcile_interval: expected seconds, 0 (off) to 86400");
				return -EINVAL;
			}
			if (st)
				st->interval_s = (int)json_integer_value(v);
		} else if (strcmp(key, "resources") == 0) {
			const char *t;
			json_t *res;

			if (!json_is_object(v) || json_object_size(v) > VGPU_MAX_RENAMES) {
				snprintf(why, whylen, "vgpu.resources: expected an object of at most %d "
					 "type: resource pairs", VGPU_MAX_RENAMES);
				return -EINVAL;
			}
			json_object_foreach(v, t, res) {
				if (!json_is_string(res) ||
				    !vgpu_resource_name_valid(json_string_value(res)) ||
				    strlen(t) >= VGPU_NAME_MAX) {
					snprintf(why, whylen, "vgpu.resources.%s: expected a resource name "
						 "such as nvidia.com/NVIDIA_A2-2Q", t);
					return -EINVAL;
				}
				if (st) {
					struct rename *rn = &st->renames[st->nrenames++];

					snprintf(rn->type, sizeof(rn->type), "%s", t);
					snprintf(rn->resource, sizeof(rn->resource), "%s",
						 json_string_value(res));
				}
			}
		} else if (strcmp(key, "devices") == 0) {
			size_t i;
			json_t *e;

			if (!json_is_array(v) || json_array_size(v) > VGPU_MAX_RULES) {
				snprintf(why, whylen, "vgpu.devices: expected a list of at most %d rules",
					 VGPU_MAX_RULES);
				return -EINVAL;
			}
			json_array_foreach(v, i, e) {
				const char *parent = json_string_value(json_object_get(e, "parent"));
				const char *gpu = json_string_value(json_object_get(e, "gpu"));
				const char *type = json_string_value(json_object_get(e, "type"));
				const json_t *count = json_object_get(e, "count");
				const char *res = json_string_value(json_object_get(e, "resource_name"));
				const char *k;
				json_t *x;

				if (!json_is_object(e)) {
					snprintf(why, whylen, "vgpu.devices[%zu]: expected an object", i);
					return -EINVAL;
				}
				json_object_foreach(e, k, x) {
					if (strcmp(k, "parent") && strcmp(k, "gpu") && strcmp(k, "type") &&
					    strcmp(k, "count") && strcmp(k, "resource_name")) {
						snprintf(why, whylen, "vgpu.devices[%zu].%s: unknown key", i, k);
						return -EINVAL;
					}
				}
				if ((parent == NULL) == (gpu == NULL) ||
				    strlen(parent ? parent : gpu) >= 64) {
					snprintf(why, whylen, "vgpu.devices[%zu]: expected one of parent (an "
						 "mdev parent glob) or gpu (a PF address glob or "
						 "vvvv:dddd)", i);
					return -EINVAL;
				}
				if (type == NULL || type[0] == '\0' || strlen(type) >= VGPU_NAME_MAX) {
					snprintf(why, whylen, "vgpu.devices[%zu].type: expected a type id or "
						 "name", i);
					return -EINVAL;
				}
				if (count && (!json_is_integer(count) || json_integer_value(count) < 1 ||
					      json_integer_value(count) > 64)) {
					snprintf(why, whylen, "vgpu.devices[%zu].count: expected 1 to 64", i);
					return -EINVAL;
				}
				if (res && !vgpu_resource_name_valid(res)) {
					snprintf(why, whylen, "vgpu.devices[%zu].resource_name: expected a "
						 "resource name such as nvidia.com/NVIDIA_A2-2Q", i);
					return -EINVAL;
				}
				if (st) {
					struct rule *ru = &st->rules[st->nrules++];

					memset(ru, 0, sizeof(*ru));
					snprintf(ru->parent, sizeof(ru->parent), "%s", parent ? parent : "");
					snprintf(ru->gpu, sizeof(ru->gpu), "%s", gpu ? gpu : "");
					snprintf(ru->type, sizeof(ru->type), "%s", type);
					ru->count = count ? (int)json_integer_value(count) : 1;
					snprintf(ru->resource, sizeof(ru->resource), "%s", res ? res : "");
				}
			}
		} else {
			snprintf(why, whylen, "vgpu.%s: unknown key", key);
			return -EINVAL;
		}
	}
	return 0;
}

static int
vgpu_config_check(const json_t *section, char *why, size_t whylen)
{
	return config_parse(section, NULL, why, whylen);
}

/* Renames follow the configuration, except names a request gave. */
static void
apply_renames(struct vgpu_state *st)
{
	for (size_t i = 0; i < st->n; i++) {
		struct vgpu *r = &st->v[i];

		if (!r->resource_fixed)
			default_resource(st, r->flavour == VGPU_VF ? "nvidia.com" :
					 parent_domain(st, r->parent), r->type, r->type_name,
					 r->resource, sizeof(r->resource));
	}
}

/* --- hooks ------------------------------------------------------------------ */

static int
vgpu_init(const struct hdd_core_ops *ops, struct hdd_core *core, const json_t *section,
	  void **ret_state)
{
	struct vgpu_state *st;
	char why[256];

	if (!HDD_CORE_HAS(ops, holders))
		return -ENOTSUP;	/* sysfs_fd, dev_path and holders came in 2.1 */
	st = calloc(1, sizeof(*st));
	if (st == NULL)
		return -ENOMEM;
	st->ops = ops;
	st->core = core;
	st->next_gen = 1;
	st->mig = json_object();
	st->mig_nvml = -1;
	if (config_parse(section, st, why, sizeof(why)) < 0) {
		json_decref(st->mig);
		free(st);
		return -EINVAL;
	}
	*ret_state = st;
	return 0;
}

static void
vgpu_fini(void *state)
{
	struct vgpu_state *st = state;

	if (st == NULL)
		return;
	while (st->queue) {
		struct op *o = st->queue;

		st->queue = o->next;
		op_free(o);
	}
	op_free(st->running);
	json_decref(st->mig);
	free(st->v);
	free(st);
}

static void
mig_wait_cb(void *arg)
{
	struct vgpu_state *st = arg;

	st->mig_wait_timer = 0;
	st->mig_wait_over = true;
	if (st->mig_nvml < 0)
		reconcile_soon(st);
}

/* Loads the journal, finishes or undoes what a kill interrupted and
 * re-creates what a reboot or driver reload took, before the kubelet is
 * told of any resource. */
static int
vgpu_start(void *state)
{
	struct vgpu_state *st = state;
	int err = 0;
	const json_t *section = st->ops->state_get(st->core, &err);

	st->started = true;
	if (err < 0) {
		st->closed = true;
		st->ops->log(st->core, HDD_LOG_ERR, "vgpu",
			     "state.json cannot be trusted: no vGPU is created or removed");
		return 0;
	}
	if (section)
		load(st, section);
	apply_renames(st);
	/* Events reach this module from the loop's start on: until the mig
	 * module has said something, MIG-backed types wait (at most this). */
	st->mig_wait_timer = st->ops->timer_add(st->core, VGPU_MIG_WAIT_MS, mig_wait_cb, st);
	if (st->mig_wait_timer < 0) {
		st->mig_wait_timer = 0;
		st->mig_wait_over = true;
	}
	reconcile(st, true);
	if (st->interval_s > 0) {
		st->reconcile_timer = st->ops->timer_add(st->core, st->interval_s * 1000,
							 reconcile_tick_cb, st);
		if (st->reconcile_timer < 0)
			st->reconcile_timer = 0;
	}
	return 0;
}

static void
vgpu_reload(void *state, const json_t *section)
{
	struct vgpu_state *st = state;
	char why[256];

	if (config_parse(section, st, why, sizeof(why)) < 0)
		return;	/* checked before: cannot happen */
	apply_renames(st);
	if (!st->closed)
		save(st);
	if (st->reconcile_timer > 0)
		st->ops->timer_cancel(st->core, st->reconcile_timer);
	st->reconcile_timer = 0;
	if (st->interval_s > 0) {
		st->reconcile_timer = st->ops->timer_add(st->core, st->interval_s * 1000,
							 reconcile_tick_cb, st);
		if (st->reconcile_timer < 0)
			st->reconcile_timer = 0;
	}
	reconcile(st, false);
}

/* Timers never fire after this: answer whoever waits. */
static void
vgpu_stop(void *state)
{
	struct vgpu_state *st = state;

	st->stopping = true;
	if (st->reconcile_timer > 0)
		st->ops->timer_cancel(st->core, st->reconcile_timer);
	if (st->soon_timer > 0)
		st->ops->timer_cancel(st->core, st->soon_timer);
	st->reconcile_timer = st->soon_timer = 0;
	if (st->mig_wait_timer > 0)
		st->ops->timer_cancel(st->core, st->mig_wait_timer);
	st->mig_wait_timer = 0;
	while (st->queue) {
		struct op *o = st->queue;

		st->queue = o->next;
		op_reply_error(o, HDD_ERR_FAILED, "hostdevd is stopping");
		op_free(o);
	}
	for (size_t i = 0; i < st->ngpus; i++)
		if (st->gpus[i].busy && st->gpus[i].call > 0) {
			/* call_cancel drops the completion: answer and free here. */
			st->ops->call_cancel(st->core, st->gpus[i].call);
			vfs_call_drop(st->gpus[i].pending);
			st->gpus[i].pending = NULL;
			st->gpus[i].busy = false;
		}
	if (st->running) {
		struct op *o = st->running;

		if (o->timer > 0)
			st->ops->timer_cancel(st->core, o->timer);
		if (o->call > 0)
			st->ops->call_cancel(st->core, o->call);
		op_reply_error(o, HDD_ERR_FAILED, "hostdevd is stopping");
		op_free(o);
		st->running = NULL;
	}
}

/* mdevs, NVIDIA VFs with a vGPU catalogue, and PCI mdev parents. */
static int
vgpu_probe(void *state, const struct hdd_device_view *dev)
{
	struct vgpu_state *st = state;
	char rel[128];

	if (dev->cls == HDD_DEV_MDEV)
		return 10;
	if (dev->cls != HDD_DEV_PCI)
		return 0;
	if (dev->pci->vendor_id == 0x10de) {
		snprintf(rel, sizeof(rel), "bus/pci/devices/%s/nvidia/creatable_vgpu_types",
			 dev->pci->address);
		if (exists_rel(st, rel))
			return 20;
	}
	snprintf(rel, sizeof(rel), "class/mdev_bus/%s", dev->pci->address);
	return exists_rel(st, rel) ? 20 : 0;
}

static void
vgpu_device_event(void *state, enum hdd_device_event ev, const struct hdd_device_view *dev)
{
	reconcile_soon(state);
}

static void
vgpu_uevent(void *state, const char *action, const char *subsystem, const char *sysname,
	    const char *devpath)
{
	reconcile_soon(state);
}

/* The mig module's word: its GPUs' status and GPU instances (with the vGPU
 * types each can host), and whether it has NVML at all. A GPU whose layout
 * comes into place gets its waiting MIG-backed types now. */
static void
vgpu_event(void *state, const char *type, const json_t *params)
{
	struct vgpu_state *st = state;

	if (strcmp(type, "mig.instances") == 0) {
		const char *gpu = json_string_value(json_object_get(params, "gpu"));
		json_t *v;

		if (gpu == NULL || !pci_address_ok(gpu))
			return;
		if (strcmp(json_string_value(json_object_get(params, "status")) ?: "", "absent") == 0) {
			json_object_del(st->mig, gpu);
		} else if ((v = json_deep_copy(params)) != NULL) {
			json_object_del(v, "seq");
			json_object_del(v, "type");
			json_object_del(v, "time");
			json_object_set_new(st->mig, gpu, v);
		}
		reconcile_soon(st);
	} else if (strcmp(type, "mig.nvml") == 0) {
		st->mig_nvml = json_is_true(json_object_get(params, "loaded")) ? 1 : 0;
		reconcile_soon(st);
	}
}

static int
vgpu_describe(void *state, const struct hdd_device_view *dev, json_t *out)
{
	struct vgpu_state *st = state;
	struct vgpu *r = rec_find(st, dev->id);

	if (r) {
		rec_refresh(st, r);
		json_object_set_new(out, "vgpu", rec_view(r));
	}
	if (dev->cls == HDD_DEV_PCI && vf_flavour(st, dev->id)) {
		struct vgpu_vf_type types[VGPU_MAX_TYPES];
		int n = vf_types(st, dev->id, types, VGPU_MAX_TYPES);
		long cur = -1;
		json_t *arr = json_array();

		for (int i = 0; i < n; i++)
			json_array_append_new(arr, json_pack("{s:I, s:s}", "id", (json_int_t)types[i].id,
							     "name", types[i].name));
		vf_current(st, dev->id, &cur);
		json_object_set_new(out, "current_vgpu_type", json_integer(cur));
		json_object_set_new(out, "creatable_vgpu_types", arr);
	}
	return 0;
}

/* A VF with its recorded type, on the nvidia driver (its own VFIO provider):
 * a PCI host device under the type's resource. */
static int
vgpu_advertise(void *state, const struct hdd_device_view *dev, char *name, size_t size,
	       bool *healthy)
{
	struct vgpu_state *st = state;
	struct vgpu *r;

	if (dev->cls != HDD_DEV_PCI || (r = rec_find(st, dev->id)) == NULL ||
	    r->flavour != VGPU_VF || r->phase == PH_REMOVING)
		return 0;
	rec_refresh(st, r);
	snprintf(name, size, "%s", r->resource);
	*healthy = r->healthy;
	return 1;
}

static int
allocate_mdevs(struct vgpu_state *st, const char *resource,
	       const struct hdd_device_view *const *devs, size_t n, struct hdd_alloc *alloc)
{
	char env[320], path[64], node[32], *value;
	int *groups = calloc(n ? n : 1, sizeof(int));
	size_t len = 0, ng = 0;
	int err;

	value = calloc(n ? n : 1, HDD_ID_MAX + 2);
	if (value == NULL || groups == NULL) {
		free(value);
		free(groups);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		struct vgpu *r = rec_find(st, devs[i]->id);
		bool dup = false;

		if (r == NULL || r->flavour != VGPU_MDEV) {
			err = -ENOENT;
			goto out;
		}
		rec_refresh(st, r);
		snprintf(node, sizeof(node), "vfio/%d", r->group);
		/* KubeVirt's mediated plugin fails when the group node is gone. */
		if (r->group < 0 || !st->ops->dev_exists(st->core, node)) {
			err = -ENODEV;
			goto out;
		}
		for (size_t k = 0; k < ng && !dup; k++)
			dup = groups[k] == r->group;
		if (!dup)
			groups[ng++] = r->group;
		len += (size_t)snprintf(value + len, HDD_ID_MAX + 2, "%s%s", i ? "," : "", r->id);
	}
	err = st->ops->env_name("MDEV_PCI_RESOURCE", resource, env, sizeof(env));
	if (err == 0)
		err = st->ops->alloc_env(alloc, env, value);
	if (err == 0)
		err = st->ops->alloc_device(alloc, "/dev/vfio/vfio", "/dev/vfio/vfio", "mrw");
	for (size_t k = 0; k < ng && err == 0; k++) {
		snprintf(path, sizeof(path), "/dev/vfio/%d", groups[k]);
		err = st->ops->alloc_device(alloc, path, path, "mrw");
	}
out:
	free(value);
	free(groups);
	return err;
}

static int
allocate_vfs(struct vgpu_state *st, const char *resource,
	     const struct hdd_device_view *const *devs, size_t n, struct hdd_alloc *alloc)
{
	char env[320], path[64], *value = calloc(n ? n : 1, 16);
	size_t len = 0;
	bool all_cdevs = true;
	int err;

	if (value == NULL)
		return -ENOMEM;
	char (*cdevs)[32] = calloc(n ? n : 1, sizeof(*cdevs));

	if (cdevs == NULL) {
		free(value);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		len += (size_t)snprintf(value + len, 16, "%s%s", i ? "," : "", devs[i]->pci->address);
		/* Read now: the driver makes the cdev when the VF gets its type. */
		all_cdevs &= vf_cdev(st, devs[i]->pci->address, cdevs[i], sizeof(cdevs[i])) == 0;
	}
	err = st->ops->env_name("PCI_RESOURCE", resource, env, sizeof(env));
	if (err == 0)
		err = st->ops->alloc_env(alloc, env, value);
	free(value);
	if (err == 0 && all_cdevs && st->ops->alloc_prefer_iommufd(alloc) &&
	    st->ops->dev_exists(st->core, "iommu")) {
		err = st->ops->alloc_device(alloc, "/dev/iommu", "/dev/iommu", "mrw");
		for (size_t i = 0; i < n && err == 0; i++) {
			snprintf(path, sizeof(path), "/dev/vfio/devices/%s", cdevs[i]);
			err = st->ops->alloc_device(alloc, path, path, "mrw");
		}
		free(cdevs);
		return err;
	}
	if (err == 0)
		err = st->ops->alloc_device(alloc, "/dev/vfio/vfio", "/dev/vfio/vfio", "mrw");
	for (size_t i = 0; i < n && err == 0; i++) {
		const struct hdd_pci_facts *f = devs[i]->pci;

		if (f->iommu_group < 0) {
			err = -ENODEV;
			break;
		}
		snprintf(path, sizeof(path), "/dev/vfio/%d", f->iommu_group);
		err = st->ops->alloc_device(alloc, path, path, "mrw");
		if (err == 0 && cdevs[i][0]) {
			snprintf(path, sizeof(path), "/dev/vfio/devices/%s", cdevs[i]);
			err = st->ops->alloc_device(alloc, path, path, "mrw");
		}
	}
	free(cdevs);
	return err;
}

static int
vgpu_allocate(void *state, const char *resource, const struct hdd_device_view *const *devs,
	      size_t n, struct hdd_alloc *alloc)
{
	struct vgpu_state *st = state;
	int err;

	if (n == 0)
		return -EINVAL;
	err = devs[0]->cls == HDD_DEV_PCI ? allocate_vfs(st, resource, devs, n, alloc) :
					    allocate_mdevs(st, resource, devs, n, alloc);
	if (err == 0) {
		bool changed = false;

		for (size_t i = 0; i < n; i++) {
			struct vgpu *r = rec_find(st, devs[i]->id);

			/* A new owner: a release naming an earlier generation
			 * is stale from now on. */
			if (r) {
				r->allocated = true;
				r->gen = st->next_gen++;
				changed = true;
			}
		}
		if (changed && !st->closed)
			save(st);
	}
	return err;
}

/* --- the worker's side: sriov-manage's steps ------------------------------ */

static int
w_write(int fd, const char *path, const char *value)
{
	/* O_TRUNC: a no-op on sysfs, and simulated trees stay honest. */
	int f = openat(fd, path, O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW);
	size_t len = strlen(value);
	ssize_t n;

	if (f < 0)
		return -errno;
	do {
		n = write(f, value, len);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		int err = -errno;

		close(f);
		return err;
	}
	if (close(f) < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EIO;
}

static int
w_read_long(int fd, const char *path, long *v)
{
	char buf[32], *end;
	int f = openat(fd, path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (f < 0)
		return -errno;
	n = read(f, buf, sizeof(buf) - 1);
	close(f);
	if (n <= 0)
		return -EIO;
	buf[n] = '\0';
	*v = strtol(buf, &end, 0);
	return end == buf ? -EINVAL : 0;
}

/* The driver `addr` is bound to ("" when none). */
static void
w_driver(int fd, const char *addr, char *buf, size_t size)
{
	char rel[96], target[256];
	ssize_t n;

	snprintf(rel, sizeof(rel), "bus/pci/devices/%s/driver", addr);
	n = readlinkat(fd, rel, target, sizeof(target) - 1);
	buf[0] = '\0';
	if (n > 0) {
		target[n] = '\0';
		snprintf(buf, size, "%s", strrchr(target, '/') ? strrchr(target, '/') + 1 : target);
	}
}

/* Waits (the worker may) until `addr` is on `want` ("" for none). */
static int
w_wait_driver(int fd, const char *addr, const char *want, int ms)
{
	char drv[64];
	struct timespec ts = { 0, 10 * 1000000L };

	for (int t = 0;; t += 10) {
		w_driver(fd, addr, drv, sizeof(drv));
		if (strcmp(drv, want) == 0)
			return 0;
		if (t >= ms)
			return -ETIMEDOUT;
		nanosleep(&ts, NULL);
	}
}

static int w_step(json_t *out, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Records one step in out["steps"]; a failed one also in out["error"]. */
static int
w_step(json_t *out, int err, const char *fmt, ...)
{
	char line[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	json_array_append_new(json_object_get(out, "steps"), json_string(line));
	if (err < 0) {
		char why[320];

		snprintf(why, sizeof(why), "%s: %s", line, strerror(-err));
		json_object_set_new(out, "error", json_string(why));
	}
	return err;
}

/* sriov-manage -e: the PF leaves its driver for pci-pf-stub, gets all its
 * VFs, goes back; every VF is bound to the PF's driver. */
static int
w_enable_vfs(int fd, const json_t *args, json_t *out)
{
	const char *gpu = json_string_value(json_object_get(args, "gpu"));
	const char *ids = json_string_value(json_object_get(args, "ids"));
	const char *was = json_string_value(json_object_get(args, "driver"));
	bool finish = json_is_true(json_object_get(args, "finish"));
	char rel[128], drv[64], path[128], num[16], lock[4200];
	long total = 0, cur = 0;
	int err;

	if (gpu == NULL || ids == NULL || (was && strchr(was, '/')))
		return -EINVAL;
	json_object_set_new(out, "steps", json_array());
	snprintf(rel, sizeof(rel), "bus/pci/devices/%s/sriov_numvfs", gpu);
	if (w_read_long(fd, rel, &cur) < 0)
		return w_step(out, -EOPNOTSUPP, "%s has no sriov_numvfs", gpu);
	if (cur > 0 && !finish) {
		json_object_set_new(out, "num_vfs", json_integer(cur));
		return w_step(out, 0, "%s already has VFs", gpu);
	}
	if (cur > 0) {
		/* An enable a kill interrupted after sriov_numvfs: the PF goes
		 * back to its driver, the VFs onto it. */
		w_driver(fd, gpu, drv, sizeof(drv));
		if (strcmp(drv, "pci-pf-stub") == 0) {
			err = w_write(fd, "bus/pci/drivers/pci-pf-stub/unbind", gpu);
			if (err == 0)
				err = w_wait_driver(fd, gpu, "", 5000);
			w_write(fd, "bus/pci/drivers/pci-pf-stub/remove_id", ids);
			if (w_step(out, err, "unbind %s from pci-pf-stub", gpu) < 0)
				return err;
			drv[0] = '\0';
		}
		if (drv[0] == '\0' && was && was[0] && strcmp(was, "pci-pf-stub") != 0) {
			snprintf(path, sizeof(path), "bus/pci/drivers/%s/bind", was);
			err = w_write(fd, path, gpu);
			if (err == 0)
				err = w_wait_driver(fd, gpu, was, 5000);
			if (w_step(out, err, "bind %s to %s", gpu, was) < 0)
				return err;
			snprintf(drv, sizeof(drv), "%s", was);
		}
		total = cur;
		goto bind_vfs;
	}
	snprintf(rel, sizeof(rel), "bus/pci/devices/%s/sriov_totalvfs", gpu);
	if (w_read_long(fd, rel, &total) < 0 || total <= 0)
		return w_step(out, -EOPNOTSUPP, "%s: sriov_totalvfs", gpu);
	if (faccessat(fd, "bus/pci/drivers/pci-pf-stub", F_OK, 0) < 0)
		return w_step(out, -ENOENT, "pci-pf-stub is not loaded (modprobe pci-pf-stub)");
	w_driver(fd, gpu, drv, sizeof(drv));
	/* The NVIDIA driver's own lock: no client may hold the GPU (absent
	 * without the driver, or on a simulated host). */
	snprintf(lock, sizeof(lock), "%s/driver/nvidia/gpus/%s/unbindLock",
		 getenv(HDD_PROC_ROOT_ENV) && getenv(HDD_PROC_ROOT_ENV)[0] ? getenv(HDD_PROC_ROOT_ENV)
									  : "/proc", gpu);
	if (strcmp(drv, "nvidia") == 0 && access(lock, F_OK) == 0) {
		long v = 0;

		err = w_write(AT_FDCWD, lock, "1");
		if (err == 0 && (w_read_long(AT_FDCWD, lock, &v) < 0 || v != 1))
			err = -EBUSY;
		if (w_step(out, err, "%s: unbindLock", gpu) < 0)
			return err;
	}
	if (drv[0]) {
		snprintf(path, sizeof(path), "bus/pci/drivers/%s/unbind", drv);
		err = w_write(fd, path, gpu);
		if (err == 0)
			err = w_wait_driver(fd, gpu, "", 5000);
		if (w_step(out, err, "unbind %s from %s", gpu, drv) < 0)
			return err;
	}
	w_write(fd, "bus/pci/drivers/pci-pf-stub/new_id", ids);
	err = w_wait_driver(fd, gpu, "pci-pf-stub", 200);
	if (err < 0) {
		err = w_write(fd, "bus/pci/drivers/pci-pf-stub/bind", gpu);
		if (err == 0)
			err = w_wait_driver(fd, gpu, "pci-pf-stub", 5000);
	}
	if (w_step(out, err, "bind %s to pci-pf-stub", gpu) < 0)
		goto out_back;
	snprintf(rel, sizeof(rel), "bus/pci/devices/%s/sriov_numvfs", gpu);
	snprintf(num, sizeof(num), "%ld", total);
	err = w_step(out, w_write(fd, rel, num), "%s: sriov_numvfs %s", gpu, num);
	if (err == 0) {
		/* The kernel returns with the VFs there; wait a little anyway. */
		struct timespec ts = { 0, 10 * 1000000L };

		snprintf(rel, sizeof(rel), "bus/pci/devices/%s/virtfn%ld", gpu, total - 1);
		for (int t = 0; t < 5000 && faccessat(fd, rel, F_OK, AT_SYMLINK_NOFOLLOW) < 0; t += 10)
			nanosleep(&ts, NULL);
	}
	w_write(fd, "bus/pci/drivers/pci-pf-stub/unbind", gpu);
	w_wait_driver(fd, gpu, "", 5000);
	w_write(fd, "bus/pci/drivers/pci-pf-stub/remove_id", ids);
	w_step(out, 0, "unbind %s from pci-pf-stub", gpu);
out_back:
	if (drv[0]) {
		int e2;

		snprintf(path, sizeof(path), "bus/pci/drivers/%s/bind", drv);
		e2 = w_write(fd, path, gpu);
		if (e2 == 0)
			e2 = w_wait_driver(fd, gpu, drv, 5000);
		w_step(out, e2, "bind %s to %s", gpu, drv);
		if (err == 0)
			err = e2;
	}
	if (err < 0)
		return err;
bind_vfs:
	/* Every VF on the PF's driver (nvidia.ko is the VF's VFIO provider). */
	for (long i = 0; i < total; i++) {
		char link[160], target[256], vf[32];
		ssize_t n;

		snprintf(link, sizeof(link), "bus/pci/devices/%s/virtfn%ld", gpu, i);
		n = readlinkat(fd, link, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = '\0';
		snprintf(vf, sizeof(vf), "%s", strrchr(target, '/') ? strrchr(target, '/') + 1 : target);
		w_driver(fd, vf, path, sizeof(path));
		if (path[0] || !drv[0])
			continue;
		snprintf(path, sizeof(path), "bus/pci/drivers/%s/bind", drv);
		err = w_write(fd, path, vf);
		if (err == 0)
			err = w_wait_driver(fd, vf, drv, 5000);
		if (w_step(out, err, "bind VF %s to %s", vf, drv) < 0)
			return err;
	}
	json_object_set_new(out, "num_vfs", json_integer(total));
	return 0;
}

/* sriov-manage -d: the VFs go. */
static int
w_disable_vfs(int fd, const json_t *args, json_t *out)
{
	const char *gpu = json_string_value(json_object_get(args, "gpu"));
	char rel[128];

	if (gpu == NULL)
		return -EINVAL;
	json_object_set_new(out, "steps", json_array());
	snprintf(rel, sizeof(rel), "bus/pci/devices/%s/sriov_numvfs", gpu);
	return w_step(out, w_write(fd, rel, "0"), "%s: sriov_numvfs %s", gpu, "0");
}

static const struct hdd_worker_op vgpu_worker_ops[] = {
	{ .name = "enable_vfs", .run = w_enable_vfs },
	{ .name = "disable_vfs", .run = w_disable_vfs },
	{ .name = NULL },
};

/* --- methods ---------------------------------------------------------------- */

static bool
check_open(struct vgpu_state *st, struct hdd_request *req)
{
	if (!st->closed)
		return true;
	st->ops->reply_error(req, HDD_ERR_REFUSED,
			     "state.json cannot be trusted: no vGPU is created or removed "
			     "(see the log)");
	return false;
}

static const char *
str_param(const json_t *params, const char *key)
{
	return json_string_value(json_object_get(params, key));
}

static int
resource_param(struct vgpu_state *st, struct hdd_request *req, const json_t *params,
	       const char **ret)
{
	const json_t *v = json_object_get(params, "resource_name");

	*ret = NULL;
	if (v == NULL)
		return 0;
	if (!json_is_string(v) || !vgpu_resource_name_valid(json_string_value(v))) {
		st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS,
				     "resource_name: expected a resource name such as "
				     "nvidia.com/NVIDIA_A2-2Q");
		return -EINVAL;
	}
	*ret = json_string_value(v);
	return 0;
}

static json_t *
parent_json(struct vgpu_state *st, const char *parent)
{
	struct mtype types[VGPU_MAX_TYPES];
	int n = mdev_types(st, parent, types, VGPU_MAX_TYPES);
	json_t *arr = json_array(), *mdevs = json_array();
	int fd;

	for (int i = 0; i < n; i++)
		json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:I, s:s}", "id", types[i].id,
						     "name", types[i].t.name, "device_api",
						     types[i].t.device_api, "available",
						     (json_int_t)types[i].t.available, "description",
						     types[i].t.description));
	fd = openat(st->ops->sysfs_fd(st->core), "bus/mdev/devices",
		    O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		DIR *dir = fdopendir(fd);
		struct dirent *de;

		while (dir && (de = readdir(dir)) != NULL) {
			char rel[128], target[512];
			ssize_t len;

			if (!vgpu_uuid_valid(de->d_name))
				continue;
			snprintf(rel, sizeof(rel), "bus/mdev/devices/%s", de->d_name);
			len = readlinkat(st->ops->sysfs_fd(st->core), rel, target, sizeof(target) - 1);
			if (len <= 0)
				continue;
			target[len] = '\0';
			/* The mdev sits in its parent's directory. */
			*strrchr(target, '/') = '\0';
			if (strcmp(strrchr(target, '/') ? strrchr(target, '/') + 1 : target, parent) == 0)
				json_array_append_new(mdevs, json_string(de->d_name));
		}
		if (dir)
			closedir(dir);
		else
			close(fd);
	}
	return json_pack("{s:s, s:s, s:s, s:o, s:o}", "parent", parent, "flavour", "mdev", "domain",
			 parent_domain(st, parent), "types", arr, "mdevs", mdevs);
}

static json_t *
vf_json(struct vgpu_state *st, const struct hdd_pci_facts *f)
{
	struct vgpu_vf_type types[VGPU_MAX_TYPES];
	int n = vf_types(st, f->address, types, VGPU_MAX_TYPES);
	long cur = -1;
	json_t *arr = json_array();

	const json_t *mig = f->physfn ? json_object_get(st->mig, f->physfn) : NULL;
	long gi = vf_gpu_instance(st, f->address);
	json_t *out;

	vf_current(st, f->address, &cur);
	for (int i = 0; i < n; i++) {
		char id[24];
		json_t *t, *gis;

		snprintf(id, sizeof(id), "%ld", types[i].id);
		/* Listed means creatable now: one instance (the VF itself). */
		t = json_pack("{s:s, s:s, s:i}", "id", id, "name", types[i].name, "available", 1);
		/* MIG-backed: the GPU instances it would use (mig's word). */
		gis = mig ? type_gpu_instances(st, f->physfn, types[i].id) : NULL;
		if (t && mig) {
			json_object_set_new(t, "mig_backed", json_boolean(gis != NULL));
			json_object_set_new(t, "gpu_instances", gis ? gis : json_null());
		}
		json_array_append_new(arr, t);
	}
	out = json_pack("{s:s, s:s, s:s?, s:I, s:o}", "parent", f->address, "flavour", "vf",
			"physfn", f->physfn, "current_type", (json_int_t)cur, "types", arr);
	if (out && mig) {
		json_t *gi_view = json_null(), *g;
		size_t i;

		json_array_foreach(json_object_get(mig, "gpu_instances"), i, g)
			if (gi >= 0 && json_integer_value(json_object_get(g, "id")) == gi)
				gi_view = json_pack("{s:I, s:O?, s:O?}", "id", (json_int_t)gi,
						    "profile", json_object_get(g, "profile"),
						    "placement", json_object_get(g, "placement"));
		if (gi >= 0 && json_is_null(gi_view))
			gi_view = json_pack("{s:I}", "id", (json_int_t)gi);
		json_object_set_new(out, "gpu_instance", gi_view);
		json_object_set_new(out, "mig", json_pack("{s:O?, s:O?}", "status",
							  json_object_get(mig, "status"), "mode",
							  json_object_get(mig, "mode")));
	}
	return out;
}

struct types_walk {
	struct vgpu_state *st;
	const char *want;
	json_t *out;
};

static void
types_vf_cb(const struct hdd_device_view *dev, void *arg)
{
	struct types_walk *w = arg;

	if (dev->pci->vendor_id != 0x10de || !vf_flavour(w->st, dev->pci->address) ||
	    (w->want && strcmp(w->want, dev->pci->address) != 0))
		return;
	json_array_append_new(w->out, vf_json(w->st, dev->pci));
}

static int
m_types(void *state, struct hdd_request *req, const json_t *params)
{
	struct vgpu_state *st = state;
	const char *want = str_param(params, "parent");
	char (*names)[64] = calloc(512, 64);
	size_t np = names ? mdev_parents(st, names, 512) : 0;
	struct types_walk w = { st, want, json_array() };

	if (names == NULL || w.out == NULL) {
		free(names);
		json_decref(w.out);
		return -ENOMEM;
	}
	if (json_object_get(params, "parent") && (want == NULL || !name_ok(want, 64))) {
		free(names);
		json_decref(w.out);
		st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS,
				     "parent: expected an mdev parent or a VF address");
		return 0;
	}
	for (size_t i = 0; i < np; i++)
		if (want == NULL || strcmp(want, names[i]) == 0)
			json_array_append_new(w.out, parent_json(st, names[i]));
	free(names);
	st->ops->device_foreach(st->core, HDD_DEV_PCI, types_vf_cb, &w);
	if (want && json_array_size(w.out) == 0) {
		json_decref(w.out);
		st->ops->reply_error(req, HDD_ERR_NOT_FOUND,
				     "%s: no such mdev parent or VF with vGPU types", want);
		return 0;
	}
	/* An object, so that hostdevctl prints it. */
	st->ops->reply(req, json_pack("{s:o}", "parents", w.out));
	return 0;
}

static int
m_list(void *state, struct hdd_request *req, const json_t *params)
{
	struct vgpu_state *st = state;
	json_t *arr = json_array();

	for (size_t i = 0; i < st->n; i++) {
		rec_refresh(st, &st->v[i]);
		json_array_append_new(arr, rec_view(&st->v[i]));
	}
	st->ops->reply(req, json_pack("{s:o}", "vgpus", arr));
	return 0;
}

static int
m_create(void *state, struct hdd_request *req, const json_t *params)
{
	struct vgpu_state *st = state;
	const char *parent = str_param(params, "parent"), *type = str_param(params, "type");
	const char *uuid = str_param(params, "uuid"), *res = NULL;
	struct mtype types[VGPU_MAX_TYPES];
	const struct mtype *t;
	char id[40], resource[VGPU_RESOURCE_MAX], rel[160];
	struct vgpu *r;
	int n;

	if (parent == NULL || !name_ok(parent, 64) || type == NULL || type[0] == '\0') {
		st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS,
				     "parent, type: expected an mdev parent and a type id or name");
		return 0;
	}
	if (json_object_get(params, "uuid") && (uuid == NULL || !vgpu_uuid_valid(uuid))) {
		st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS,
				     "uuid: expected a lower-case UUID (8-4-4-4-12 hex digits)");
		return 0;
	}
	if (resource_param(st, req, params, &res) < 0 || !check_open(st, req))
		return 0;
	n = mdev_types(st, parent, types, VGPU_MAX_TYPES);
	if (n < 0) {
		st->ops->reply_error(req, HDD_ERR_NOT_FOUND,
				     "%s: no such mdev parent (class/mdev_bus/%s)%s", parent, parent,
				     vf_flavour(st, parent) ?
				     "; it is an NVIDIA VF: use vgpu.set_type" : "");
		return 0;
	}
	t = mdev_type_find(types, n, type);
	if (t == NULL) {
		char list[512] = "";
		size_t len = 0;

		for (int i = 0; i < n && len < sizeof(list) - 80; i++)
			len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s (%s)",
						i ? ", " : "", types[i].id, types[i].t.name);
		st->ops->reply_error(req, HDD_ERR_NOT_FOUND, "%s offers no type %s; it offers: %s",
				     parent, type, list[0] ? list : "none");
		return 0;
	}
	if (uuid) {
		snprintf(id, sizeof(id), "%s", uuid);
		if (rec_find(st, id)) {
			st->ops->reply_error(req, HDD_ERR_REFUSED, "%s: already managed", id);
			return 0;
		}
	} else {
		new_uuid(id, sizeof(id));
	}
	snprintf(rel, sizeof(rel), "bus/mdev/devices/%s", id);
	if (exists_rel(st, rel)) {
		char ty[64] = "";

		snprintf(rel, sizeof(rel), "bus/mdev/devices/%s/mdev_type", id);
		link_base(st, rel, ty, sizeof(ty));
		if (strcmp(ty, t->id) != 0) {
			st->ops->reply_error(req, HDD_ERR_REFUSED,
					     "%s exists with type %s, not %s", id, ty, t->id);
			return 0;
		}
		/* It exists as asked: adopted (the queue finds it there). */
	} else if (t->t.available == 0) {
		st->ops->reply_error(req, HDD_ERR_REFUSED,
				     "no instance of type %s (%s) left on %s (available_instances 0)",
				     t->id, t->t.name, parent);
		return 0;
	}
	if (res)
		snprintf(resource, sizeof(resource), "%s", res);
	else
		default_resource(st, parent_domain(st, parent), t->id, t->t.name, resource,
				 sizeof(resource));
	r = new_record(st, VGPU_MDEV, id, parent, t->id, t->t.name, resource, res != NULL, false);
	if (r == NULL)
		return -ENOMEM;
	if (exists_rel(st, rel)) {
		r->phase = PH_CREATED;
		rec_refresh(st, r);
	}
	if (save(st) < 0) {
		rec_del(st, rec_find(st, id));
		st->ops->reply_error(req, HDD_ERR_FAILED, "cannot journal %s in state.json", id);
		return 0;
	}
	if (r->phase == PH_CREATED) {
		emit_rec(st, "created", r, NULL);
		st->ops->reply(req, rec_view(r));
		publish(st);
		return 0;
	}
	return op_queue(st, OP_CREATE, id, false, false, req);
}

static int
m_set_type(void *state, struct hdd_request *req, const json_t *params)
{
	struct vgpu_state *st = state;
	const char *addr = str_param(params, "address"), *type = str_param(params, "type");
	const char *res = NULL;
	struct vgpu_vf_type types[VGPU_MAX_TYPES];
	const struct vgpu_vf_type *t;
	char tid[24], resource[VGPU_RESOURCE_MAX], physfn[64] = "", rel[128];
	json_t *tv = json_object_get(params, "type");
	struct vgpu_vf_type adopted;
	long cur = -1;
	struct vgpu *r;
	int n;

	if (json_is_integer(tv)) {
		snprintf(tid, sizeof(tid), "%lld", (long long)json_integer_value(tv));
		type = tid;
	}
	if (addr == NULL || !pci_address_ok(addr) || type == NULL || type[0] == '\0') {
		st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS,
				     "address, type: expected a VF address and a type id or name");
		return 0;
	}
	if (resource_param(st, req, params, &res) < 0 || !check_open(st, req))
		return 0;
	if (vf_current(st, addr, &cur) < 0) {
		st->ops->reply_error(req, HDD_ERR_NOT_FOUND,
				     "%s: not an NVIDIA VF with nvidia/current_vgpu_type (SR-IOV "
				     "vGPU needs kernel >= 6.8 and VFs enabled: vgpu.enable_vfs)", addr);
		return 0;
	}
	n = vf_types(st, addr, types, VGPU_MAX_TYPES);
	t = n > 0 ? vf_type_find(types, n, type) : NULL;
	r = rec_find(st, addr);
	if (r && (strcmp(r->type, type) == 0 || strcmp(r->type_name, type) == 0) &&
	    cur == strtol(r->type, NULL, 10)) {
		rec_refresh(st, r);
		st->ops->reply(req, rec_view(r));	/* already so */
		return 0;
	}
	if (r) {
		st->ops->reply_error(req, HDD_ERR_REFUSED, "%s: already managed with type %s (%s)",
				     addr, r->type, r->type_name);
		return 0;
	}
	if (cur != 0 && (t == NULL || t->id != cur)) {
		char *end;
		long want = strtol(type, &end, 10);

		if (!(*end == '\0' && want == cur)) {
			st->ops->reply_error(req, HDD_ERR_REFUSED,
					     "%s already has vGPU type %ld: clear it first", addr, cur);
			return 0;
		}
	}
	if (t == NULL && cur != 0) {
		/* A VF with a type lists nothing: adopt the type it has, by id
		 * (its name is not shown anywhere then). */
		adopted.id = cur;
		snprintf(adopted.name, sizeof(adopted.name), "%ld", cur);
		t = &adopted;
	}
	if (t == NULL) {
		char list[512] = "";
		size_t len = 0;

		for (int i = 0; i < n && len < sizeof(list) - 80; i++)
			len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%ld (%s)",
						i ? ", " : "", types[i].id, types[i].name);
		st->ops->reply_error(req, HDD_ERR_REFUSED, "%s cannot take type %s now; "
				     "creatable_vgpu_types lists: %s", addr, type,
				     list[0] ? list : "none");
		return 0;
	}
	snprintf(tid, sizeof(tid), "%ld", t->id);
	snprintf(rel, sizeof(rel), "bus/pci/devices/%s/physfn", addr);
	link_base(st, rel, physfn, sizeof(physfn));
	if (physfn[0] && mig_type_profile(st, physfn, t->id) >= 0 &&
	    strcmp(mig_status(st, physfn) ?: "", "applying") == 0) {
		/* The layout first, then the vGPUs on it. */
		st->ops->reply_error(req, HDD_ERR_BUSY, "%s: the MIG layout of %s is being "
				     "applied; type %s needs its GPU instance: try again", addr,
				     physfn, t->name);
		return 0;
	}
	if (res)
		snprintf(resource, sizeof(resource), "%s", res);
	else
		default_resource(st, "nvidia.com", tid, t->name, resource, sizeof(resource));
	r = new_record(st, VGPU_VF, addr, physfn[0] ? physfn : addr, tid, t->name, resource,
		       res != NULL, false);
	if (r == NULL)
		return -ENOMEM;
	r->mig_backed = physfn[0] && mig_type_profile(st, physfn, t->id) >= 0;
	if (save(st) < 0) {
		rec_del(st, rec_find(st, addr));
		st->ops->reply_error(req, HDD_ERR_FAILED, "cannot journal %s in state.json", addr);
		return 0;
	}
	return op_queue(st, OP_SET, addr, false, false, req);
}

/* remove (mdev) and clear (VF): refused while a process holds it unless
 * force, and for a stale generation. */
static int
remove_common(struct vgpu_state *st, struct hdd_request *req, const json_t *params,
	      enum vgpu_flavour fl)
{
	const char *key = fl == VGPU_MDEV ? "uuid" : "address";
	const char *id = str_param(params, key);
	const json_t *force = json_object_get(params, "force");
	const json_t *gen = json_object_get(params, "generation");
	struct vgpu *r;

	if (id == NULL || (fl == VGPU_MDEV ? !vgpu_uuid_valid(id) : !pci_address_ok(id))) {
		st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS, "%s: expected %s", key,
				     fl == VGPU_MDEV ? "an mdev UUID" : "a VF address");
		return 0;
	}
	if ((force && !json_is_boolean(force)) || (gen && !json_is_integer(gen))) {
		st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS,
				     "force: expected true or false; generation: an integer");
		return 0;
	}
	if (!check_open(st, req))
		return 0;
	r = rec_find(st, id);
	if (r == NULL || r->flavour != fl) {
		st->ops->reply_error(req, HDD_ERR_NOT_FOUND, "%s: no vGPU hostdevd manages", id);
		return 0;
	}
	if (gen && json_integer_value(gen) != r->gen) {
		st->ops->reply_error(req, HDD_ERR_REFUSED,
				     "%s: stale release: generation %lld, the vGPU is now at %lld "
				     "(given to someone else since)", id,
				     (long long)json_integer_value(gen), r->gen);
		return 0;
	}
	return op_queue(st, fl == VGPU_MDEV ? OP_REMOVE : OP_CLEAR, id, json_is_true(force), false,
			req);
}

static int
m_remove(void *state, struct hdd_request *req, const json_t *params)
{
	return remove_common(state, req, params, VGPU_MDEV);
}

static int
m_clear(void *state, struct hdd_request *req, const json_t *params)
{
	return remove_common(state, req, params, VGPU_VF);
}

static int
m_reconcile(void *state, struct hdd_request *req, const json_t *params)
{
	struct vgpu_state *st = state;
	int queued = st->running != NULL;

	if (!check_open(st, req))
		return 0;
	reconcile(st, false);
	for (struct op *o = st->queue; o; o = o->next)
		queued++;
	st->ops->reply(req, json_pack("{s:i, s:b}", "queued", queued, "closed", st->closed));
	return 0;
}

struct vfs_call {
	struct vgpu_state *st;
	struct hdd_request *req;	/* NULL for a repair */
	char gpu[16];
	bool enable;
	bool added;			/* the request made the GPU's record */
	struct vfs_rec removed;		/* disable: the record it dropped */
	bool had;
};

static void
vfs_call_drop(struct vfs_call *c)
{
	if (c && c->req)
		c->st->ops->reply_error(c->req, HDD_ERR_FAILED, "hostdevd is stopping");
	free(c);
}

static void
vfs_done(void *arg, int result, const json_t *out)
{
	struct vfs_call *c = arg;
	struct vgpu_state *st = c->st;
	const char *why = out ? json_string_value(json_object_get(out, "error")) : NULL;
	struct vfs_rec *g = gpu_find(st, c->gpu);

	if (g && c->enable && g->pending == c) {
		g->busy = false;
		g->call = 0;
		g->pending = NULL;
	}
	if (result < 0) {
		char msg[256];

		snprintf(msg, sizeof(msg), "%s: %s VFs failed: %s", c->gpu,
			 c->enable ? "enabling" : "disabling", why ? why : strerror(-result));
		if (c->req) {
			st->ops->log(st->core, HDD_LOG_WARN, "vgpu", "%s", msg);
			st->ops->reply_error(c->req, HDD_ERR_FAILED, "%s", why ? why : strerror(-result));
		} else if (g && !g->complained) {
			/* A repair: the record stays, tried again; said once. */
			st->ops->log(st->core, HDD_LOG_WARN, "vgpu", "%s", msg);
			st->ops->emit(st->core, "failed",
				      json_pack("{s:s, s:s}", "gpu", c->gpu, "error", msg));
			g->complained = true;
		}
		if (c->enable && c->added && g) {
			gpu_del(st, g);
			save(st);
		} else if (!c->enable && c->had && !gpu_find(st, c->gpu) &&
			   st->ngpus < VGPU_MAX_GPUS) {
			st->gpus[st->ngpus++] = c->removed;
			save(st);
		}
	} else {
		if (c->enable) {
			/* sriov-manage's rebind takes the GPU's MIG instances: its
			 * MIG-backed types wait for the mig module's next word. */
			json_t *v = json_object_get(st->mig, c->gpu);

			if (v)
				json_object_set_new(v, "status", json_string("rebind"));
		}
		if (c->enable && g) {
			/* The outcome; the VF types recorded for it follow. */
			g->phase = VFS_ENABLED;
			g->seen_ok = true;
			g->complained = false;
			save(st);
		}
		if (c->req) {
			json_t *r = json_pack("{s:s, s:O?, s:O?}", "gpu", c->gpu, "num_vfs",
					      json_object_get(out, "num_vfs"), "steps",
					      json_object_get(out, "steps"));

			st->ops->reply(c->req, r);
		}
		st->ops->emit(st->core, c->enable ? "vfs_enabled" : "vfs_disabled",
			      json_pack("{s:s, s:b}", "gpu", c->gpu, "repair", c->req == NULL));
		reconcile_soon(st);
	}
	free(c);
}

/* "vvvv dddd" of a PCI function, for pci-pf-stub's new_id. */
static int
gpu_ids(struct vgpu_state *st, const char *gpu, char *ids, size_t size)
{
	char rel[128], buf[32];
	long vendor, device;

	snprintf(rel, sizeof(rel), "bus/pci/devices/%s/vendor", gpu);
	if (read_rel(st, rel, buf, sizeof(buf)) <= 0)
		return -ENOENT;
	vendor = strtol(buf, NULL, 16);
	snprintf(rel, sizeof(rel), "bus/pci/devices/%s/device", gpu);
	if (read_rel(st, rel, buf, sizeof(buf)) <= 0)
		return -ENOENT;
	device = strtol(buf, NULL, 16);
	snprintf(ids, size, "%04lx %04lx", vendor, device);
	return 0;
}

/* Runs sriov-manage -e again for a GPU recorded as enabled whose VFs are
 * gone (a reboot, a driver reload, by hand) or an enable a kill cut short. */
static void
vfs_repair(struct vgpu_state *st, struct vfs_rec *g, bool finish)
{
	struct vfs_call *c;
	char ids[32];
	json_t *args;
	int64_t id;

	if (gpu_ids(st, g->gpu, ids, sizeof(ids)) < 0)
		return;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return;
	*c = (struct vfs_call){ .st = st, .enable = true };
	snprintf(c->gpu, sizeof(c->gpu), "%s", g->gpu);
	args = json_pack("{s:s, s:s, s:s, s:b}", "gpu", g->gpu, "ids", ids, "driver", g->driver,
			 "finish", finish);
	id = args ? st->ops->worker_call(st->core, "enable_vfs", args, 30000, vfs_done, c) : -ENOMEM;
	json_decref(args);
	if (id < 0) {
		free(c);
		if (!g->complained)
			st->ops->log(st->core, HDD_LOG_WARN, "vgpu", "%s: cannot enable its VFs: %s",
				     g->gpu, strerror((int)-id));
		g->complained = true;
		return;
	}
	st->ops->log(st->core, HDD_LOG_INFO, "vgpu", "%s: %s its VFs (recorded as enabled)",
		     g->gpu, finish ? "finishing the enabling of" : "enabling");
	g->busy = true;
	g->call = id;
	g->pending = c;
}

/* The GPUs' VFs first: a VF type needs its VF. */
static void
reconcile_gpus(struct vgpu_state *st, bool at_start, bool rebooted)
{
	for (size_t i = 0; i < st->ngpus; i++) {
		struct vfs_rec *g = &st->gpus[i];
		bool was_ok = g->seen_ok;
		char rel[128], buf[32];
		long n;

		if (g->busy)
			continue;
		snprintf(rel, sizeof(rel), "bus/pci/devices/%s/sriov_numvfs", g->gpu);
		if (read_rel(st, rel, buf, sizeof(buf)) <= 0) {
			g->seen_ok = false;
			continue;	/* the GPU is not there: its return brings them */
		}
		n = strtol(buf, NULL, 10);
		g->seen_ok = false;
		if (n > 0 && g->phase == VFS_ENABLED) {
			g->seen_ok = true;
			g->complained = false;
			continue;
		}
		if (n == 0 && g->phase == VFS_ENABLED && !(at_start && rebooted) &&
		    (was_ok || at_start) && !g->complained) {
			char why[160];

			snprintf(why, sizeof(why), "the VFs of %s are gone (disabled by hand or a "
				 "driver reload); enabling them again", g->gpu);
			st->ops->emit(st->core, "drift", json_pack("{s:s, s:s}", "gpu", g->gpu,
								    "error", why));
			st->ops->log(st->core, HDD_LOG_WARN, "vgpu", "%s", why);
		}
		/* enabling with VFs there: a kill cut the steps short; finish. */
		vfs_repair(st, g, n > 0);
	}
}

static bool
gpu_busy(struct vgpu_state *st, const char *gpu)
{
	struct vfs_rec *g = gpu_find(st, gpu);

	return g && g->busy;
}

/* Refused while a VF of the GPU has a vGPU type or hostdevd records one. */
static int
vfs_busy(struct vgpu_state *st, const char *gpu, char *why, size_t size)
{
	char rel[128], target[256], vf[32];

	for (size_t i = 0; i < st->n; i++)
		if (st->v[i].flavour == VGPU_VF && strcmp(st->v[i].parent, gpu) == 0) {
			snprintf(why, size, "VF %s has vGPU type %s (%s)%s: clear it first",
				 st->v[i].id, st->v[i].type, st->v[i].type_name,
				 st->v[i].allocated ? ", allocated" : "");
			return 1;
		}
	for (int i = 0; i < 4096; i++) {
		long cur = 0;
		ssize_t n;

		snprintf(rel, sizeof(rel), "bus/pci/devices/%s/virtfn%d", gpu, i);
		n = readlinkat(st->ops->sysfs_fd(st->core), rel, target, sizeof(target) - 1);
		if (n <= 0)
			break;
		target[n] = '\0';
		snprintf(vf, sizeof(vf), "%s", strrchr(target, '/') ? strrchr(target, '/') + 1 : target);
		if (vf_current(st, vf, &cur) == 0 && cur != 0) {
			snprintf(why, size, "VF %s has vGPU type %ld: clear it first", vf, cur);
			return 1;
		}
	}
	return 0;
}

static int
vfs_common(struct vgpu_state *st, struct hdd_request *req, const json_t *params, bool enable)
{
	const char *gpu = str_param(params, "gpu");
	char rel[128], buf[32], ids[32], why[256];
	struct vfs_call *c;
	struct vfs_rec *g;
	json_t *args;
	long vendor, device;
	int64_t id;
	int err;

	if (gpu == NULL || !pci_address_ok(gpu)) {
		st->ops->reply_error(req, HDD_ERR_INVALID_PARAMS, "gpu: expected a PCI address");
		return 0;
	}
	snprintf(rel, sizeof(rel), "bus/pci/devices/%s/vendor", gpu);
	if (read_rel(st, rel, buf, sizeof(buf)) <= 0) {
		st->ops->reply_error(req, HDD_ERR_NOT_FOUND, "%s: no such PCI function", gpu);
		return 0;
	}
	vendor = strtol(buf, NULL, 16);
	snprintf(rel, sizeof(rel), "bus/pci/devices/%s/device", gpu);
	device = read_rel(st, rel, buf, sizeof(buf)) > 0 ? strtol(buf, NULL, 16) : -1;
	snprintf(rel, sizeof(rel), "bus/pci/devices/%s/sriov_totalvfs", gpu);
	if (vendor != 0x10de || device < 0 || !exists_rel(st, rel)) {
		st->ops->reply_error(req, HDD_ERR_REFUSED, "%s: not an NVIDIA GPU with SR-IOV", gpu);
		return 0;
	}
	if (gpu_busy(st, gpu)) {
		st->ops->reply_error(req, HDD_ERR_BUSY, "%s: its VFs are being enabled", gpu);
		return 0;
	}
	if (vfs_busy(st, gpu, why, sizeof(why))) {
		st->ops->reply_error(req, HDD_ERR_REFUSED, "%s: %s", gpu, why);
		return 0;
	}
	if (!check_open(st, req))
		return 0;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	*c = (struct vfs_call){ .st = st, .req = req, .enable = enable };
	snprintf(c->gpu, sizeof(c->gpu), "%s", gpu);
	g = gpu_find(st, gpu);
	if (enable && g == NULL) {
		/* The intent, before the first write: a reboot brings them back. */
		if (st->ngpus == VGPU_MAX_GPUS) {
			free(c);
			st->ops->reply_error(req, HDD_ERR_REFUSED, "%s: too many GPUs recorded", gpu);
			return 0;
		}
		g = &st->gpus[st->ngpus++];
		memset(g, 0, sizeof(*g));
		snprintf(g->gpu, sizeof(g->gpu), "%s", gpu);
		snprintf(rel, sizeof(rel), "bus/pci/devices/%s/driver", gpu);
		link_base(st, rel, g->driver, sizeof(g->driver));
		if (strcmp(g->driver, "pci-pf-stub") == 0)
			g->driver[0] = '\0';
		g->phase = VFS_ENABLING;
		c->added = true;
	} else if (!enable && g) {
		/* Not wanted any more: dropped before the write, back on failure. */
		c->removed = *g;
		c->removed.busy = false;
		c->removed.pending = NULL;
		c->had = true;
		gpu_del(st, g);
		g = NULL;
	}
	if ((c->added || c->had) && (err = save(st)) < 0) {
		if (c->added)
			gpu_del(st, gpu_find(st, gpu));
		else
			st->gpus[st->ngpus++] = c->removed;
		free(c);
		st->ops->reply_error(req, HDD_ERR_FAILED, "%s: cannot record it in state.json: %s",
				     gpu, strerror(-err));
		return 0;
	}
	snprintf(ids, sizeof(ids), "%04lx %04lx", vendor, device);
	args = json_pack("{s:s, s:s, s:s}", "gpu", gpu, "ids", ids, "driver",
			 g ? g->driver : "");
	id = st->ops->worker_call(st->core, enable ? "enable_vfs" : "disable_vfs", args, 30000,
				  vfs_done, c);
	json_decref(args);
	if (id < 0) {
		vfs_done(c, (int)id, NULL);
		return 0;
	}
	if (enable && g) {
		g->busy = true;
		g->call = id;
		g->pending = c;
	}
	return 0;
}

static int
m_enable_vfs(void *state, struct hdd_request *req, const json_t *params)
{
	return vfs_common(state, req, params, true);
}

static int
m_disable_vfs(void *state, struct hdd_request *req, const json_t *params)
{
	return vfs_common(state, req, params, false);
}

static const char *const no_params[] = { NULL };
static const char *const types_params[] = { "parent", NULL };
static const char *const create_params[] = { "parent", "type", "uuid", "resource_name", NULL };
static const char *const remove_params[] = { "uuid", "force", "generation", NULL };
static const char *const set_params[] = { "address", "type", "resource_name", NULL };
static const char *const clear_params[] = { "address", "force", "generation", NULL };
static const char *const gpu_params[] = { "gpu", NULL };

static const struct hdd_method vgpu_methods[] = {
	{ .name = "vgpu.types", .params = types_params, .call = m_types },
	{ .name = "vgpu.list", .params = no_params, .call = m_list },
	{ .name = "vgpu.create", .params = create_params, .call = m_create, .mutating = true },
	{ .name = "vgpu.remove", .params = remove_params, .call = m_remove, .mutating = true },
	{ .name = "vgpu.set_type", .params = set_params, .call = m_set_type, .mutating = true },
	{ .name = "vgpu.clear", .params = clear_params, .call = m_clear, .mutating = true },
	{ .name = "vgpu.reconcile", .params = no_params, .call = m_reconcile, .mutating = true },
	{ .name = "vgpu.enable_vfs", .params = gpu_params, .call = m_enable_vfs, .mutating = true },
	{ .name = "vgpu.disable_vfs", .params = gpu_params, .call = m_disable_vfs, .mutating = true },
	{ .name = NULL },
};

static const char *const vgpu_subsystems[] = { "pci", "mdev", "mtty", "mdpy", "mbochs", NULL };

__attribute__((visibility("default"))) const struct hdd_module hostdevd_module = {
	HDD_MODULE_HEADER,
	.name = "vgpu",
	.description = "vGPUs: mdev types and NVIDIA VF-based vGPU types",
	.subsystems = vgpu_subsystems,
	.methods = vgpu_methods,
	.worker_ops = vgpu_worker_ops,
	.config_check = vgpu_config_check,
	.init = vgpu_init,
	.fini = vgpu_fini,
	.start = vgpu_start,
	.reload = vgpu_reload,
	.stop = vgpu_stop,
	.probe = vgpu_probe,
	.device_event = vgpu_device_event,
	.uevent = vgpu_uevent,
	.describe = vgpu_describe,
	.advertise = vgpu_advertise,
	.allocate = vgpu_allocate,
	.event = vgpu_event,
};
