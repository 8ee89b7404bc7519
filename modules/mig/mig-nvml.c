/* SPDX-License-Identifier: MIT */
/* mig, the worker's side: NVML loaded with dlopen (no NVIDIA header; the
 * few types are declared here), initialised in the worker process only.
 * Every function here may block (a GPU can hang): the core's worker call
 * carries the caller's deadline and replaces the worker when it passes. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mig.h"

/* --- NVML's types (x86-64 layouts, REFERENCE-MODULES A.5) -------------------- */

typedef int nvmlReturn_t;
#define NVML_SUCCESS 0
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_NOT_FOUND 6
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_RESET_REQUIRED 16
#define NVML_ERROR_IN_USE 19
#define NVML_ERROR_INSUFFICIENT_RESOURCES 23
#define NVML_ERROR_ARGUMENT_VERSION_MISMATCH 25

typedef struct nvml_opaque *nvmlDevice_t;
typedef struct nvml_opaque *nvmlGpuInstance_t;
typedef struct nvml_opaque *nvmlComputeInstance_t;

typedef struct {
	char busIdLegacy[16];
	unsigned int domain, bus, device, pciDeviceId, pciSubSystemId;
	char busId[32];
} nvmlPciInfo_t;

typedef struct { unsigned int start, size; } nvmlPlacement_t;

typedef struct {
	unsigned int id, isP2pSupported, sliceCount, instanceCount, multiprocessorCount,
		copyEngineCount, decoderCount, encoderCount, jpegCount, ofaCount;
	unsigned long long memorySizeMB;
} nvmlGpuInstanceProfileInfo_t;

typedef struct {
	unsigned int version, id, isP2pSupported, sliceCount, instanceCount,
		multiprocessorCount, copyEngineCount, decoderCount, encoderCount, jpegCount,
		ofaCount;
	unsigned long long memorySizeMB;
	char name[96];
} nvmlGpuInstanceProfileInfo_v2_t;

typedef struct {
	unsigned int version, id, sliceCount, instanceCount, multiprocessorCount,
		copyEngineCount, decoderCount, encoderCount, jpegCount, ofaCount;
	unsigned long long memorySizeMB;
	char name[96];
	unsigned int capabilities;
} nvmlGpuInstanceProfileInfo_v3_t;

typedef struct {
	nvmlDevice_t device;
	unsigned int id, profileId;
	nvmlPlacement_t placement;
} nvmlGpuInstanceInfo_t;

typedef struct {
	unsigned int id, sliceCount, instanceCount, multiprocessorCount, sharedCopyEngineCount,
		sharedDecoderCount, sharedEncoderCount, sharedJpegCount, sharedOfaCount;
} nvmlComputeInstanceProfileInfo_t;

typedef struct {
	unsigned int version, id, sliceCount, instanceCount, multiprocessorCount,
		sharedCopyEngineCount, sharedDecoderCount, sharedEncoderCount, sharedJpegCount,
		sharedOfaCount;
	char name[96];
} nvmlComputeInstanceProfileInfo_v2_t;

typedef struct {
	nvmlDevice_t device;
	nvmlGpuInstance_t gpuInstance;
	unsigned int id, profileId;
	nvmlPlacement_t placement;
} nvmlComputeInstanceInfo_t;

typedef struct {
	unsigned int pid;
	unsigned long long usedGpuMemory;
	unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;

/* MIG-backed vGPU: the types a GPU instance can host (A.2, A.9). */
typedef unsigned int nvmlVgpuTypeId_t;
typedef struct {
	unsigned int version, vgpuCount;
	nvmlVgpuTypeId_t *vgpuTypeIds;
} nvmlVgpuTypeIdInfo_v1_t;
#define VGPU_TYPE_ID_INFO_V1 0x01000010u
#define NO_GI_PROFILE 0xffffffffu
#define MAX_VGPU_TYPES 32

#define STRUCT_VERSION(type, v) ((unsigned)(sizeof(type) | ((v) << 24)))
#define GI_PROFILE_COUNT 0x12		/* NVML_GPU_INSTANCE_PROFILE_COUNT */
#define CI_PROFILE_COUNT 0x9
#define CI_ENGINE_SHARED 0
#define GI_PROFILE_1_SLICE_REV1 0x7	/* the "+me" profile */

/* --- the library ------------------------------------------------------------- */

struct nvml {
	nvmlReturn_t (*init)(void);
	nvmlReturn_t (*shutdown)(void);
	const char *(*error_string)(nvmlReturn_t);
	nvmlReturn_t (*driver_version)(char *, unsigned);
	nvmlReturn_t (*count)(unsigned *);
	nvmlReturn_t (*by_index)(unsigned, nvmlDevice_t *);
	nvmlReturn_t (*name)(nvmlDevice_t, char *, unsigned);
	nvmlReturn_t (*uuid)(nvmlDevice_t, char *, unsigned);
	nvmlReturn_t (*pci)(nvmlDevice_t, nvmlPciInfo_t *);
	nvmlReturn_t (*minor)(nvmlDevice_t, unsigned *);
	nvmlReturn_t (*get_mode)(nvmlDevice_t, unsigned *, unsigned *);
	nvmlReturn_t (*set_mode)(nvmlDevice_t, unsigned, nvmlReturn_t *);
	nvmlReturn_t (*gip_info)(nvmlDevice_t, unsigned, nvmlGpuInstanceProfileInfo_t *);
	nvmlReturn_t (*gip_info_v)(nvmlDevice_t, unsigned, nvmlGpuInstanceProfileInfo_v2_t *);
	nvmlReturn_t (*placements)(nvmlDevice_t, unsigned, nvmlPlacement_t *, unsigned *);
	nvmlReturn_t (*remaining)(nvmlDevice_t, unsigned, unsigned *);
	nvmlReturn_t (*create_gi)(nvmlDevice_t, unsigned, nvmlGpuInstance_t *);
	nvmlReturn_t (*create_gi_at)(nvmlDevice_t, unsigned, const nvmlPlacement_t *,
				     nvmlGpuInstance_t *);
	nvmlReturn_t (*get_gis)(nvmlDevice_t, unsigned, nvmlGpuInstance_t *, unsigned *);
	nvmlReturn_t (*gi_info)(nvmlGpuInstance_t, nvmlGpuInstanceInfo_t *);
	nvmlReturn_t (*gi_destroy)(nvmlGpuInstance_t);
	nvmlReturn_t (*cip_info)(nvmlGpuInstance_t, unsigned, unsigned,
				 nvmlComputeInstanceProfileInfo_t *);
	nvmlReturn_t (*cip_info_v)(nvmlGpuInstance_t, unsigned, unsigned,
				   nvmlComputeInstanceProfileInfo_v2_t *);
	nvmlReturn_t (*create_ci)(nvmlGpuInstance_t, unsigned, nvmlComputeInstance_t *);
	nvmlReturn_t (*get_cis)(nvmlGpuInstance_t, unsigned, nvmlComputeInstance_t *, unsigned *);
	nvmlReturn_t (*ci_destroy)(nvmlComputeInstance_t);
	nvmlReturn_t (*ci_info)(nvmlComputeInstance_t, nvmlComputeInstanceInfo_t *);
	nvmlReturn_t (*max_mig)(nvmlDevice_t, unsigned *);
	nvmlReturn_t (*mig_by_index)(nvmlDevice_t, unsigned, nvmlDevice_t *);
	nvmlReturn_t (*mig_gi_id)(nvmlDevice_t, unsigned *);
	nvmlReturn_t (*mig_ci_id)(nvmlDevice_t, unsigned *);
	nvmlReturn_t (*procs)(nvmlDevice_t, unsigned *, nvmlProcessInfo_t *);
	/* optional: a driver without vGPU support lacks them */
	nvmlReturn_t (*gi_vgpus)(nvmlGpuInstance_t, nvmlVgpuTypeIdInfo_v1_t *);
	nvmlReturn_t (*vgpu_name)(nvmlVgpuTypeId_t, char *, unsigned *);
	nvmlReturn_t (*vgpu_gi_profile)(nvmlVgpuTypeId_t, unsigned *);
};

/* The worker's one copy: loaded at the first operation, kept until the
 * worker is replaced (or another library path is asked for). */
static struct nvml nv;
static void *nv_lib;
static char nv_path[512];
static bool nv_ready;

static const char *
nv_err(nvmlReturn_t r)
{
	static char buf[32];
	const char *s = nv.error_string ? nv.error_string(r) : NULL;

	if (s)
		return s;
	snprintf(buf, sizeof(buf), "NVML error %d", r);
	return buf;
}

/* The versioned name first, then the plain one (REFERENCE-MODULES A.1). */
static void *
sym2(const char *versioned, const char *plain)
{
	void *p = versioned ? dlsym(nv_lib, versioned) : NULL;

	if (p == NULL && plain)
		p = dlsym(nv_lib, plain);
	return p;
}

#define SYM(field, versioned, plain) (*(void **)&nv.field = sym2(versioned, plain))

static void
nv_unload(void)
{
	if (nv_ready && nv.shutdown)
		nv.shutdown();
	if (nv_lib)
		dlclose(nv_lib);
	nv_lib = NULL;
	nv_ready = false;
	memset(&nv, 0, sizeof(nv));
}

/* Loads and initialises the library at `path`; on failure writes why into
 * out["error"] and returns -ENOENT (no library or symbols) or -EIO (NVML
 * refused to start). */
static int
nv_open(const char *path, json_t *out)
{
	static const char *required[] = { "init", "shutdown", "count", "by_index", "pci", "uuid",
					   "get_mode", "set_mode", "gip_info", "get_gis", "gi_info",
					   "gi_destroy", "cip_info", "create_ci", "get_cis",
					   "ci_destroy", "create_gi" };
	char why[768];
	nvmlReturn_t r;

	if (path == NULL || path[0] == '\0')
		path = MIG_DEFAULT_LIBRARY;
	if (nv_ready && strcmp(nv_path, path) == 0)
		return 0;
	nv_unload();
	snprintf(nv_path, sizeof(nv_path), "%s", path);
	nv_lib = dlopen(path, RTLD_LAZY | RTLD_GLOBAL);
	if (nv_lib == NULL) {
		const char *e = dlerror();

		snprintf(why, sizeof(why), "cannot load %s: %s", path, e ? e : "unknown error");
		json_object_set_new(out, "error", json_string(why));
		return -ENOENT;
	}
	SYM(init, "nvmlInit_v2", "nvmlInit");
	SYM(shutdown, NULL, "nvmlShutdown");
	SYM(error_string, NULL, "nvmlErrorString");
	SYM(driver_version, NULL, "nvmlSystemGetDriverVersion");
	SYM(count, "nvmlDeviceGetCount_v2", "nvmlDeviceGetCount");
	SYM(by_index, "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex");
	SYM(name, NULL, "nvmlDeviceGetName");
	SYM(uuid, NULL, "nvmlDeviceGetUUID");
	/* v1 had another struct: no plain fallback. */
	SYM(pci, "nvmlDeviceGetPciInfo_v3", "nvmlDeviceGetPciInfo_v2");
	SYM(minor, NULL, "nvmlDeviceGetMinorNumber");
	SYM(get_mode, NULL, "nvmlDeviceGetMigMode");
	SYM(set_mode, NULL, "nvmlDeviceSetMigMode");
	SYM(gip_info, NULL, "nvmlDeviceGetGpuInstanceProfileInfo");
	SYM(gip_info_v, NULL, "nvmlDeviceGetGpuInstanceProfileInfoV");
	SYM(placements, "nvmlDeviceGetGpuInstancePossiblePlacements_v2",
	    "nvmlDeviceGetGpuInstancePossiblePlacements");
	SYM(remaining, NULL, "nvmlDeviceGetGpuInstanceRemainingCapacity");
	SYM(create_gi, NULL, "nvmlDeviceCreateGpuInstance");
	SYM(create_gi_at, NULL, "nvmlDeviceCreateGpuInstanceWithPlacement");
	SYM(get_gis, NULL, "nvmlDeviceGetGpuInstances");
	SYM(gi_info, NULL, "nvmlGpuInstanceGetInfo");
	SYM(gi_destroy, NULL, "nvmlGpuInstanceDestroy");
	SYM(cip_info, NULL, "nvmlGpuInstanceGetComputeInstanceProfileInfo");
	SYM(cip_info_v, NULL, "nvmlGpuInstanceGetComputeInstanceProfileInfoV");
	SYM(create_ci, NULL, "nvmlGpuInstanceCreateComputeInstance");
	SYM(get_cis, NULL, "nvmlGpuInstanceGetComputeInstances");
	SYM(ci_destroy, NULL, "nvmlComputeInstanceDestroy");
	/* v1 lacks the placement; the struct is zeroed before each call. */
	SYM(ci_info, "nvmlComputeInstanceGetInfo_v2", "nvmlComputeInstanceGetInfo");
	SYM(max_mig, NULL, "nvmlDeviceGetMaxMigDeviceCount");
	SYM(mig_by_index, NULL, "nvmlDeviceGetMigDeviceHandleByIndex");
	SYM(mig_gi_id, NULL, "nvmlDeviceGetGpuInstanceId");
	SYM(mig_ci_id, NULL, "nvmlDeviceGetComputeInstanceId");
	SYM(procs, "nvmlDeviceGetComputeRunningProcesses_v3",
	    "nvmlDeviceGetComputeRunningProcesses_v2");
	SYM(gi_vgpus, NULL, "nvmlGpuInstanceGetCreatableVgpus");
	SYM(vgpu_name, NULL, "nvmlVgpuTypeGetName");
	SYM(vgpu_gi_profile, NULL, "nvmlVgpuTypeGetGpuInstanceProfileId");
	for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
		void *p = NULL;

#define REQ(f) if (strcmp(required[i], #f) == 0) p = *(void **)&nv.f
		REQ(init); REQ(shutdown); REQ(count); REQ(by_index); REQ(pci); REQ(uuid);
		REQ(get_mode); REQ(set_mode); REQ(get_gis); REQ(gi_info); REQ(gi_destroy);
		REQ(create_ci); REQ(get_cis); REQ(ci_destroy); REQ(create_gi);
#undef REQ
		if (strcmp(required[i], "gip_info") == 0)
			p = nv.gip_info ? (void *)1 : nv.gip_info_v ? (void *)1 : NULL;
		if (strcmp(required[i], "cip_info") == 0)
			p = nv.cip_info ? (void *)1 : nv.cip_info_v ? (void *)1 : NULL;
		if (p == NULL) {
			snprintf(why, sizeof(why),
				 "%s lacks the MIG interface (%s): driver too old", path,
				 required[i]);
			json_object_set_new(out, "error", json_string(why));
			nv_unload();
			return -ENOENT;
		}
	}
	r = nv.init();
	if (r != NVML_SUCCESS) {
		snprintf(why, sizeof(why), "nvmlInit: %s", nv_err(r));
		json_object_set_new(out, "error", json_string(why));
		nv_unload();
		return -EIO;
	}
	nv_ready = true;
	return 0;
}

/* --- helpers ---------------------------------------------------------------- */

int
mig_bus_id(const char *in, char out[16])
{
	unsigned dom, bus, slot, fn;
	char tail;

	if (in == NULL || sscanf(in, "%x:%x:%x.%x%c", &dom, &bus, &slot, &fn, &tail) != 4 ||
	    dom > 0xffff || bus > 0xff || slot > 0x1f || fn > 7)
		return -EINVAL;
	snprintf(out, 16, "%04x:%02x:%02x.%x", dom, bus, slot, fn);
	return 0;
}

static json_t *
errorf(json_t *out, const char *what, nvmlReturn_t r)
{
	char buf[512];

	snprintf(buf, sizeof(buf), "%s: %s", what, nv_err(r));
	json_object_set_new(out, "error", json_string(buf));
	return out;
}

static void
strip_mig(char *name)
{
	if (strncmp(name, "MIG ", 4) == 0)
		memmove(name, name + 4, strlen(name + 4) + 1);
}

/* One GPU-instance profile as NVML reports it for profile index `index`. */
struct gip {
	unsigned index, id, slices, count;
	unsigned long long mem_mb;
	char name[96];
};

static nvmlReturn_t
gip_get(nvmlDevice_t dev, unsigned index, struct gip *p)
{
	nvmlReturn_t r = 13;	/* FUNCTION_NOT_FOUND */

	memset(p, 0, sizeof(*p));
	p->index = index;
	if (nv.gip_info_v) {
		nvmlGpuInstanceProfileInfo_v3_t v3 = {
			.version = STRUCT_VERSION(nvmlGpuInstanceProfileInfo_v3_t, 3u) };

		r = nv.gip_info_v(dev, index, (nvmlGpuInstanceProfileInfo_v2_t *)&v3);
		if (r == NVML_SUCCESS) {
			p->id = v3.id;
			p->slices = v3.sliceCount;
			p->count = v3.instanceCount;
			p->mem_mb = v3.memorySizeMB;
			snprintf(p->name, sizeof(p->name), "%s", v3.name);
		} else if (r == NVML_ERROR_ARGUMENT_VERSION_MISMATCH) {
			/* An older driver: the v2 layout. */
			nvmlGpuInstanceProfileInfo_v2_t v2 = {
				.version = STRUCT_VERSION(nvmlGpuInstanceProfileInfo_v2_t, 2u) };

			r = nv.gip_info_v(dev, index, &v2);
			if (r == NVML_SUCCESS) {
				p->id = v2.id;
				p->slices = v2.sliceCount;
				p->count = v2.instanceCount;
				p->mem_mb = v2.memorySizeMB;
				snprintf(p->name, sizeof(p->name), "%s", v2.name);
			}
		}
	}
	if (r != NVML_SUCCESS && r != NVML_ERROR_NOT_SUPPORTED &&
	    r != NVML_ERROR_INVALID_ARGUMENT && nv.gip_info) {
		nvmlGpuInstanceProfileInfo_t v1;

		memset(&v1, 0, sizeof(v1));
		r = nv.gip_info(dev, index, &v1);
		if (r == NVML_SUCCESS) {
			p->id = v1.id;
			p->slices = v1.sliceCount;
			p->count = v1.instanceCount;
			p->mem_mb = v1.memorySizeMB;
		}
	}
	if (r != NVML_SUCCESS)
		return r;
	if (p->name[0] == '\0')		/* v1 has no name: as nvidia-smi spells it */
		snprintf(p->name, sizeof(p->name), "%ug.%llugb%s", p->slices,
			 (p->mem_mb + 1023) / 1024, index == GI_PROFILE_1_SLICE_REV1 ? "+me" : "");
	strip_mig(p->name);
	return NVML_SUCCESS;
}

/* Every profile the GPU offers (indices that answer NOT_SUPPORTED or
 * INVALID_ARGUMENT are skipped, as mig-parted does). */
static size_t
gip_all(nvmlDevice_t dev, struct gip *out, size_t max)
{
	size_t n = 0;

	for (unsigned i = 0; i < GI_PROFILE_COUNT && n < max; i++)
		if (gip_get(dev, i, &out[n]) == NVML_SUCCESS)
			n++;
	return n;
}

static const struct gip *
gip_by_name(const struct gip *p, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(p[i].name, name) == 0)
			return &p[i];
	return NULL;
}

/* The compute-instance profile that spans a GPU instance of `slices`. */
static nvmlReturn_t
cip_full(nvmlGpuInstance_t gi, unsigned slices, unsigned *id)
{
	nvmlReturn_t r = NVML_ERROR_NOT_FOUND;

	for (unsigned i = 0; i < CI_PROFILE_COUNT; i++) {
		nvmlComputeInstanceProfileInfo_t v1;
		nvmlComputeInstanceProfileInfo_v2_t v2 = {
			.version = STRUCT_VERSION(nvmlComputeInstanceProfileInfo_v2_t, 2u) };
		unsigned sc, pid;

		if (nv.cip_info_v && (r = nv.cip_info_v(gi, i, CI_ENGINE_SHARED, &v2)) ==
					     NVML_SUCCESS) {
			sc = v2.sliceCount;
			pid = v2.id;
		} else if (nv.cip_info && (r = nv.cip_info(gi, i, CI_ENGINE_SHARED, &v1)) ==
						  NVML_SUCCESS) {
			sc = v1.sliceCount;
			pid = v1.id;
		} else {
			continue;
		}
		if (sc == slices) {
			*id = pid;
			return NVML_SUCCESS;
		}
	}
	return r == NVML_SUCCESS ? NVML_ERROR_NOT_FOUND : r;
}

struct proc { unsigned pid, gi, ci; };

/* Processes on the GPU and on each of its MIG devices, without repeats. */
static size_t
procs_all(nvmlDevice_t dev, struct proc *out, size_t max)
{
	nvmlDevice_t devs[1 + MIG_MAX_INSTANCES * 8];
	size_t ndevs = 0, n = 0;
	unsigned mig_max = 0;

	if (nv.procs == NULL)
		return 0;
	devs[ndevs++] = dev;
	if (nv.max_mig && nv.mig_by_index && nv.max_mig(dev, &mig_max) == NVML_SUCCESS)
		for (unsigned i = 0; i < mig_max && ndevs < sizeof(devs) / sizeof(devs[0]); i++)
			if (nv.mig_by_index(dev, i, &devs[ndevs]) == NVML_SUCCESS)
				ndevs++;
	for (size_t d = 0; d < ndevs; d++) {
		nvmlProcessInfo_t info[32];
		unsigned cnt = 32;

		if (nv.procs(devs[d], &cnt, info) != NVML_SUCCESS)
			continue;
		for (unsigned i = 0; i < cnt && i < 32; i++) {
			bool seen = false;

			for (size_t j = 0; j < n; j++)
				seen |= out[j].pid == info[i].pid && out[j].gi == info[i].gpuInstanceId &&
					out[j].ci == info[i].computeInstanceId;
			if (!seen && n < max)
				out[n++] = (struct proc){ info[i].pid, info[i].gpuInstanceId,
							  info[i].computeInstanceId };
		}
	}
	return n;
}

static json_t *
procs_json(const struct proc *p, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; i < n; i++) {
		const char *root = getenv(HDD_PROC_ROOT_ENV);
		char path[4200], comm[64] = "";
		int fd;

		snprintf(path, sizeof(path), "%s/%u/comm", root && root[0] ? root : "/proc", p[i].pid);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			ssize_t len = read(fd, comm, sizeof(comm) - 1);

			comm[len > 0 ? len : 0] = '\0';
			comm[strcspn(comm, "\n")] = '\0';
			close(fd);
		}
		json_array_append_new(a, json_pack("{s:i, s:s?, s:i, s:i}", "pid", (int)p[i].pid,
						   "name", comm[0] ? comm : NULL, "gpu_instance",
						   (int)p[i].gi, "compute_instance", (int)p[i].ci));
	}
	return a;
}

/* --- reading one GPU ------------------------------------------------------------ */

#define MAX_PROFILES 24
#define MAX_GIS 16

/* The vGPU types a GPU instance can host now, [{id, name,
 * gpu_instance_profile_id}], or NULL when the library has no such call (a
 * driver without vGPU) or the instance answers with an error. */
static json_t *
gi_vgpu_types(nvmlGpuInstance_t gi)
{
	nvmlVgpuTypeId_t ids[MAX_VGPU_TYPES];
	nvmlVgpuTypeIdInfo_v1_t info = { .version = VGPU_TYPE_ID_INFO_V1,
					 .vgpuCount = MAX_VGPU_TYPES, .vgpuTypeIds = ids };
	json_t *a;

	if (nv.gi_vgpus == NULL || nv.gi_vgpus(gi, &info) != NVML_SUCCESS)
		return NULL;
	a = json_array();
	for (unsigned i = 0; i < info.vgpuCount && i < MAX_VGPU_TYPES; i++) {
		char name[96] = "";
		unsigned len = sizeof(name), prof = NO_GI_PROFILE;
		json_t *t = json_pack("{s:I}", "id", (json_int_t)ids[i]);

		if (nv.vgpu_name && nv.vgpu_name(ids[i], name, &len) == NVML_SUCCESS) {
			name[sizeof(name) - 1] = '\0';
			json_object_set_new(t, "name", json_string(name));
		}
		if (nv.vgpu_gi_profile && nv.vgpu_gi_profile(ids[i], &prof) == NVML_SUCCESS &&
		    prof != NO_GI_PROFILE)
			json_object_set_new(t, "gpu_instance_profile_id", json_integer(prof));
		json_array_append_new(a, t);
	}
	return a;
}

/* GPU instances as {id, profile_id, profile, placement, compute_instances,
 * vgpu_types}. */
static json_t *
instances_json(nvmlDevice_t dev, const struct gip *profiles, size_t nprof, json_t *out_err)
{
	json_t *gis = json_array();
	char uuids[MAX_GIS * 8][100];
	unsigned uuid_gi[MAX_GIS * 8], uuid_ci[MAX_GIS * 8];
	size_t nuuids = 0;
	unsigned mig_max = 0;

	/* MIG device UUIDs by (GPU instance, compute instance); NOT_FOUND is an
	 * empty slot, not the end (REFERENCE-MODULES A.6). */
	if (nv.max_mig && nv.mig_by_index && nv.mig_gi_id && nv.mig_ci_id && nv.uuid &&
	    nv.max_mig(dev, &mig_max) == NVML_SUCCESS) {
		for (unsigned i = 0; i < mig_max && nuuids < MAX_GIS * 8; i++) {
			nvmlDevice_t m;

			if (nv.mig_by_index(dev, i, &m) != NVML_SUCCESS ||
			    nv.mig_gi_id(m, &uuid_gi[nuuids]) != NVML_SUCCESS ||
			    nv.mig_ci_id(m, &uuid_ci[nuuids]) != NVML_SUCCESS ||
			    nv.uuid(m, uuids[nuuids], sizeof(uuids[0])) != NVML_SUCCESS)
				continue;
			nuuids++;
		}
	}
	for (size_t p = 0; p < nprof; p++) {
		nvmlGpuInstance_t h[MAX_GIS];
		unsigned cnt = profiles[p].count < MAX_GIS ? profiles[p].count : MAX_GIS;
		nvmlReturn_t r = nv.get_gis(dev, profiles[p].id, h, &cnt);

		if (r == NVML_ERROR_NOT_SUPPORTED)
			continue;
		if (r != NVML_SUCCESS) {
			errorf(out_err, "nvmlDeviceGetGpuInstances", r);
			continue;
		}
		for (unsigned i = 0; i < cnt; i++) {
			nvmlGpuInstanceInfo_t info;
			json_t *cis = json_array(), *gi;

			memset(&info, 0, sizeof(info));
			if ((r = nv.gi_info(h[i], &info)) != NVML_SUCCESS) {
				errorf(out_err, "nvmlGpuInstanceGetInfo", r);
				json_decref(cis);
				continue;
			}
			for (unsigned c = 0; c < CI_PROFILE_COUNT; c++) {
				nvmlComputeInstanceProfileInfo_t v1;
				nvmlComputeInstanceProfileInfo_v2_t v2 = {
					.version = STRUCT_VERSION(nvmlComputeInstanceProfileInfo_v2_t, 2u) };
				nvmlComputeInstance_t ch[8];
				unsigned ccnt = 8, cpid, cslices;

				if (nv.cip_info_v && nv.cip_info_v(h[i], c, CI_ENGINE_SHARED, &v2) ==
							     NVML_SUCCESS) {
					cpid = v2.id;
					cslices = v2.sliceCount;
				} else if (nv.cip_info && nv.cip_info(h[i], c, CI_ENGINE_SHARED, &v1) ==
								  NVML_SUCCESS) {
					cpid = v1.id;
					cslices = v1.sliceCount;
				} else {
					continue;
				}
				if (nv.get_cis(h[i], cpid, ch, &ccnt) != NVML_SUCCESS)
					continue;
				for (unsigned k = 0; k < ccnt && k < 8; k++) {
					nvmlComputeInstanceInfo_t ci;
					const char *uuid = NULL;

					size_t seen_at;
					json_t *seen;
					bool dup = false;

					memset(&ci, 0, sizeof(ci));
					if (nv.ci_info == NULL || nv.ci_info(ch[k], &ci) != NVML_SUCCESS)
						continue;
					/* One compute instance, whatever profile index found it. */
					json_array_foreach(cis, seen_at, seen)
						dup |= json_integer_value(json_object_get(seen, "id")) == ci.id;
					if (dup)
						continue;
					for (size_t u = 0; u < nuuids; u++)
						if (uuid_gi[u] == info.id && uuid_ci[u] == ci.id)
							uuid = uuids[u];
					json_array_append_new(cis, json_pack(
						"{s:i, s:i, s:i, s:{s:i, s:i}, s:s?}", "id", (int)ci.id,
						"profile_id", (int)ci.profileId, "slices", (int)cslices,
						"placement", "start", (int)ci.placement.start, "size",
						(int)ci.placement.size, "uuid", uuid));
				}
			}
			gi = json_pack("{s:i, s:i, s:s, s:i, s:{s:i, s:i}, s:o}", "id", (int)info.id,
				       "profile_id", (int)info.profileId, "profile",
				       profiles[p].name, "slices", (int)profiles[p].slices,
				       "placement", "start", (int)info.placement.start, "size",
				       (int)info.placement.size, "compute_instances", cis);
			json_object_set_new(gi, "vgpu_types", gi_vgpu_types(h[i]) ?: json_null());
			json_array_append_new(gis, gi);
		}
	}
	return gis;
}

/* Everything "list" says about one GPU. */
static json_t *
gpu_json(nvmlDevice_t dev)
{
	nvmlPciInfo_t pci;
	char name[96] = "", uuid[96] = "", bus[16] = "";
	unsigned cur = 0, pend = 0, minor = 0;
	struct gip prof[MAX_PROFILES];
	struct proc procs[64];
	size_t nprof = 0, nprocs;
	json_t *g, *profiles;
	nvmlReturn_t r;
	bool capable;

	memset(&pci, 0, sizeof(pci));
	r = nv.pci(dev, &pci);
	g = json_object();
	if (r != NVML_SUCCESS)
		return errorf(g, "nvmlDeviceGetPciInfo", r);
	if (mig_bus_id(pci.busId, bus) < 0)
		mig_bus_id(pci.busIdLegacy, bus);
	json_object_set_new(g, "bus_id", json_string(bus));
	if (nv.name)
		nv.name(dev, name, sizeof(name));
	nv.uuid(dev, uuid, sizeof(uuid));
	json_object_set_new(g, "name", json_string(name));
	json_object_set_new(g, "uuid", json_string(uuid));
	json_object_set_new(g, "pci_device_id",
			    json_integer((json_int_t)(pci.pciDeviceId >> 16)));
	if (nv.minor && nv.minor(dev, &minor) == NVML_SUCCESS)
		json_object_set_new(g, "minor", json_integer(minor));
	r = nv.get_mode(dev, &cur, &pend);
	capable = r == NVML_SUCCESS;
	json_object_set_new(g, "mig_capable", json_boolean(capable));
	if (r != NVML_SUCCESS && r != NVML_ERROR_NOT_SUPPORTED)
		errorf(g, "nvmlDeviceGetMigMode", r);
	if (!capable)
		return g;
	json_object_set_new(g, "mode", json_pack("{s:b, s:b}", "current", cur == 1, "pending",
						  pend == 1));
	nprof = gip_all(dev, prof, MAX_PROFILES);
	profiles = json_array();
	for (size_t i = 0; i < nprof; i++) {
		nvmlPlacement_t pl[16];
		unsigned npl = 16, free_n = prof[i].count;
		json_t *pls = json_array(), *o;

		if (nv.placements && nv.placements(dev, prof[i].id, pl, &npl) == NVML_SUCCESS)
			for (unsigned k = 0; k < npl && k < 16; k++)
				json_array_append_new(pls, json_pack("{s:i, s:i}", "start",
					(int)pl[k].start, "size", (int)pl[k].size));
		if (cur == 1 && nv.remaining)
			if (nv.remaining(dev, prof[i].id, &free_n) != NVML_SUCCESS)
				free_n = 0;
		o = json_pack("{s:i, s:i, s:s, s:i, s:I, s:i, s:i, s:o}", "id", (int)prof[i].id,
			      "index", (int)prof[i].index, "name", prof[i].name, "slices",
			      (int)prof[i].slices, "memory_mb", (json_int_t)prof[i].mem_mb,
			      "instances", (int)prof[i].count, "free", (int)free_n, "placements",
			      pls);
		json_array_append_new(profiles, o);
	}
	json_object_set_new(g, "profiles", profiles);
	json_object_set_new(g, "gpu_instances",
			    cur == 1 ? instances_json(dev, prof, nprof, g) : json_array());
	nprocs = procs_all(dev, procs, 64);
	json_object_set_new(g, "processes", procs_json(procs, nprocs));
	return g;
}

static int
find_gpu(const char *bus_id, nvmlDevice_t *out, json_t *o)
{
	unsigned n = 0;
	nvmlReturn_t r = nv.count(&n);
	char want[16];

	if (r != NVML_SUCCESS) {
		errorf(o, "nvmlDeviceGetCount", r);
		return -EIO;
	}
	if (mig_bus_id(bus_id, want) < 0)
		return -EINVAL;
	for (unsigned i = 0; i < n; i++) {
		nvmlPciInfo_t pci;
		char bus[16];
		nvmlDevice_t dev;

		memset(&pci, 0, sizeof(pci));
		if (nv.by_index(i, &dev) != NVML_SUCCESS || nv.pci(dev, &pci) != NVML_SUCCESS)
			continue;
		if ((mig_bus_id(pci.busId, bus) == 0 || mig_bus_id(pci.busIdLegacy, bus) == 0) &&
		    strcmp(bus, want) == 0) {
			*out = dev;
			return 0;
		}
	}
	json_object_set_new(o, "error", json_string("NVML does not see a GPU at that address"));
	return -ENODEV;
}

int
mig_w_list(int sysfs_fd, const json_t *args, json_t *out)
{
	const char *only = json_string_value(json_object_get(args, "bus_id"));
	char ver[96] = "";
	json_t *gpus;
	unsigned n = 0;
	nvmlReturn_t r;
	int err;

	(void)sysfs_fd;
	err = nv_open(json_string_value(json_object_get(args, "library")), out);
	if (err < 0)
		return err;
	if (nv.driver_version && nv.driver_version(ver, sizeof(ver)) == NVML_SUCCESS)
		json_object_set_new(out, "driver_version", json_string(ver));
	gpus = json_array();
	json_object_set_new(out, "gpus", gpus);
	if (only) {
		nvmlDevice_t dev;

		err = find_gpu(only, &dev, out);
		if (err < 0)
			return err;
		json_array_append_new(gpus, gpu_json(dev));
		return 0;
	}
	r = nv.count(&n);
	if (r != NVML_SUCCESS) {
		errorf(out, "nvmlDeviceGetCount", r);
		return -EIO;
	}
	for (unsigned i = 0; i < n; i++) {
		nvmlDevice_t dev;

		r = nv.by_index(i, &dev);
		if (r != NVML_SUCCESS) {
			json_t *g = json_pack("{s:i}", "index", (int)i);

			json_array_append_new(gpus, errorf(g, "nvmlDeviceGetHandleByIndex", r));
			continue;
		}
		json_array_append_new(gpus, gpu_json(dev));
	}
	return 0;
}

/* --- applying a layout ------------------------------------------------------------- */

/* Destroys every compute instance, then every GPU instance. */
static nvmlReturn_t
clear_all(nvmlDevice_t dev, const struct gip *prof, size_t nprof, json_t *out)
{
	nvmlReturn_t first = NVML_SUCCESS;

	for (size_t p = 0; p < nprof; p++) {
		nvmlGpuInstance_t h[MAX_GIS];
		unsigned cnt = prof[p].count < MAX_GIS ? prof[p].count : MAX_GIS;
		nvmlReturn_t r = nv.get_gis(dev, prof[p].id, h, &cnt);

		if (r != NVML_SUCCESS)
			continue;
		for (unsigned i = 0; i < cnt; i++) {
			for (unsigned c = 0; c < CI_PROFILE_COUNT; c++) {
				nvmlComputeInstanceProfileInfo_t v1;
				nvmlComputeInstanceProfileInfo_v2_t v2 = {
					.version = STRUCT_VERSION(nvmlComputeInstanceProfileInfo_v2_t, 2u) };
				nvmlComputeInstance_t ch[8];
				unsigned ccnt = 8, cpid;

				if (nv.cip_info_v && nv.cip_info_v(h[i], c, CI_ENGINE_SHARED, &v2) ==
							     NVML_SUCCESS)
					cpid = v2.id;
				else if (nv.cip_info && nv.cip_info(h[i], c, CI_ENGINE_SHARED, &v1) ==
								  NVML_SUCCESS)
					cpid = v1.id;
				else
					continue;
				if (nv.get_cis(h[i], cpid, ch, &ccnt) != NVML_SUCCESS)
					continue;
				for (unsigned k = 0; k < ccnt && k < 8; k++) {
					r = nv.ci_destroy(ch[k]);
					if (r != NVML_SUCCESS && first == NVML_SUCCESS) {
						errorf(out, "nvmlComputeInstanceDestroy", r);
						first = r;
					}
				}
			}
			r = nv.gi_destroy(h[i]);
			if (r != NVML_SUCCESS && first == NVML_SUCCESS) {
				errorf(out, "nvmlGpuInstanceDestroy", r);
				first = r;
			}
		}
	}
	return first;
}

struct want {
	const struct gip *p;
	int placement;			/* -1: any */
};

/* Creates the instances in the order given; the first failure stops it. */
static nvmlReturn_t
create_in_order(nvmlDevice_t dev, const struct want *w, size_t n, char *why, size_t whylen)
{
	for (size_t i = 0; i < n; i++) {
		nvmlGpuInstance_t gi;
		nvmlComputeInstance_t ci;
		nvmlReturn_t r;
		unsigned cip;

		if (w[i].placement >= 0) {
			nvmlPlacement_t pl = { (unsigned)w[i].placement, 0 };
			nvmlPlacement_t all[16];
			unsigned npl = 16;

			/* The size is the profile's: look it up in its placements. */
			if (nv.placements && nv.placements(dev, w[i].p->id, all, &npl) == NVML_SUCCESS)
				for (unsigned k = 0; k < npl && k < 16; k++)
					if (all[k].start == pl.start)
						pl.size = all[k].size;
			if (nv.create_gi_at == NULL || pl.size == 0) {
				snprintf(why, whylen, "%s: placement %d is not one of the profile's",
					 w[i].p->name, w[i].placement);
				return NVML_ERROR_INVALID_ARGUMENT;
			}
			r = nv.create_gi_at(dev, w[i].p->id, &pl, &gi);
		} else {
			r = nv.create_gi(dev, w[i].p->id, &gi);
		}
		if (r != NVML_SUCCESS) {
			snprintf(why, whylen, "creating GPU instance %zu (%s): %s", i + 1, w[i].p->name,
				 nv_err(r));
			return r;
		}
		r = cip_full(gi, w[i].p->slices, &cip);
		if (r == NVML_SUCCESS)
			r = nv.create_ci(gi, cip, &ci);
		if (r != NVML_SUCCESS) {
			snprintf(why, whylen, "creating the compute instance of %s: %s", w[i].p->name,
				 nv_err(r));
			return r;
		}
	}
	return NVML_SUCCESS;
}

/* The next distinct permutation (std::next_permutation on profile ids). */
static bool
next_order(struct want *w, size_t n)
{
	size_t i, j;

#define KEY(x) ((long)(x).p->id * 16 + (x).placement + 1)
	if (n < 2)
		return false;
	i = n - 1;
	while (i > 0 && KEY(w[i - 1]) >= KEY(w[i]))
		i--;
	if (i == 0)
		return false;
	j = n - 1;
	while (KEY(w[j]) <= KEY(w[i - 1]))
		j--;
	{
		struct want t = w[i - 1];
		w[i - 1] = w[j];
		w[j] = t;
	}
	for (size_t a = i, b = n - 1; a < b; a++, b--) {
		struct want t = w[a];
		w[a] = w[b];
		w[b] = t;
	}
	return true;
#undef KEY
}

static int
cmp_big_first(const void *a, const void *b)
{
	const struct want *x = a, *y = b;

	if (x->p->slices != y->p->slices)
		return x->p->slices < y->p->slices ? 1 : -1;
	if (x->p->id != y->p->id)
		return x->p->id < y->p->id ? -1 : 1;
	return x->placement - y->placement;
}

static int
cmp_key(const void *a, const void *b)
{
	const struct want *x = a, *y = b;
	long kx = (long)x->p->id * 16 + x->placement + 1, ky = (long)y->p->id * 16 + y->placement + 1;

	return kx < ky ? -1 : kx > ky;
}

static bool
same_order(const struct want *a, const struct want *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (a[i].p != b[i].p || a[i].placement != b[i].placement)
			return false;
	return true;
}

static json_t *
order_json(const struct want *w, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(w[i].p->name));
	return a;
}

int
mig_w_apply(int sysfs_fd, const json_t *args, json_t *out)
{
	const json_t *enabled = json_object_get(args, "enabled");
	const json_t *layout = json_object_get(args, "layout");
	json_int_t max_orders = json_integer_value(json_object_get(args, "max_orders"));
	struct gip prof[MAX_PROFILES];
	struct want w[MIG_MAX_INSTANCES], first[MIG_MAX_INSTANCES];
	struct proc procs[64];
	size_t nprof, nw = 0, nprocs, i;
	unsigned cur = 0, pend = 0;
	nvmlReturn_t r, act = NVML_SUCCESS;
	nvmlDevice_t dev;
	json_t *gpu, *desired, *v;
	char why[512] = "";
	bool want_on;
	int err, attempts = 0;

	(void)sysfs_fd;
	if (max_orders <= 0)
		max_orders = 5040;
	err = nv_open(json_string_value(json_object_get(args, "library")), out);
	if (err < 0)
		return err;
	err = find_gpu(json_string_value(json_object_get(args, "bus_id")), &dev, out);
	if (err < 0)
		return err;
	r = nv.get_mode(dev, &cur, &pend);
	if (r == NVML_ERROR_NOT_SUPPORTED) {
		json_object_set_new(out, "error", json_string("the GPU is not MIG-capable"));
		return -EOPNOTSUPP;
	}
	if (r != NVML_SUCCESS) {
		errorf(out, "nvmlDeviceGetMigMode", r);
		return -EIO;
	}
	want_on = json_is_boolean(enabled) ? json_is_true(enabled) : cur == 1;
	nprof = gip_all(dev, prof, MAX_PROFILES);
	json_array_foreach(layout, i, v) {
		const char *name = json_string_value(json_object_get(v, "profile"));
		const json_t *pl = json_object_get(v, "placement");

		if (nw == MIG_MAX_INSTANCES) {
			json_object_set_new(out, "error", json_string("more than 7 instances"));
			return -EINVAL;
		}
		w[nw].p = name ? gip_by_name(prof, nprof, name) : NULL;
		w[nw].placement = json_is_integer(pl) ? (int)json_integer_value(pl) : -1;
		if (w[nw].p == NULL) {
			json_t *names = json_array();

			for (size_t k = 0; k < nprof; k++)
				json_array_append_new(names, json_string(prof[k].name));
			snprintf(why, sizeof(why), "this GPU has no MIG profile \"%s\"",
				 name ? name : "?");
			json_object_set_new(out, "error", json_string(why));
			json_object_set_new(out, "profiles", names);
			return -EINVAL;
		}
		nw++;
	}
	if (!want_on && nw > 0) {
		json_object_set_new(out, "error", json_string("a layout needs MIG mode enabled"));
		return -EINVAL;
	}

	/* Idempotent: a GPU that has it already is left alone. */
	desired = json_pack("{s:b, s:O}", "enabled", want_on, "layout", layout ? layout : json_null());
	gpu = gpu_json(dev);
	if (mig_layout_matches(gpu, desired, why, sizeof(why))) {
		json_decref(desired);
		json_object_set_new(out, "changed", json_false());
		json_object_set_new(out, "gpu", gpu);
		return 0;
	}
	json_decref(desired);
	json_decref(gpu);

	/* Processes on the GPU: refused before anything is destroyed. */
	nprocs = procs_all(dev, procs, 64);
	if (nprocs > 0) {
		json_object_set_new(out, "processes", procs_json(procs, nprocs));
		json_object_set_new(out, "error",
				    json_string("processes are running on the GPU (IN_USE)"));
		return -EBUSY;
	}

	if (cur == 1) {
		r = clear_all(dev, prof, nprof, out);
		if (r != NVML_SUCCESS) {
			json_object_set_new(out, "left", json_string("partial"));
			if (r == NVML_ERROR_IN_USE) {
				nprocs = procs_all(dev, procs, 64);
				json_object_set_new(out, "processes", procs_json(procs, nprocs));
				return -EBUSY;
			}
			return -EIO;
		}
	}
	if ((want_on ? 1u : 0u) != cur || (want_on ? 1u : 0u) != pend) {
		r = nv.set_mode(dev, want_on ? 1 : 0, &act);
		if (r != NVML_SUCCESS) {
			errorf(out, "nvmlDeviceSetMigMode", r);
			json_object_set_new(out, "changed", json_true());
			json_object_set_new(out, "left", json_string("empty"));
			return r == NVML_ERROR_IN_USE ? -EBUSY : -EIO;
		}
		json_object_set_new(out, "changed", json_true());
		r = nv.get_mode(dev, &cur, &pend);
		if (r != NVML_SUCCESS) {
			errorf(out, "nvmlDeviceGetMigMode", r);
			return -EIO;
		}
		if (cur != pend) {
			/* Accepted, not active: hostdevd never resets a GPU itself. */
			json_object_set_new(out, "pending_reset", json_true());
			json_object_set_new(out, "reset",
					    json_string(act == NVML_ERROR_RESET_REQUIRED ? "reboot"
											 : "gpu"));
			json_object_set_new(out, "activation", json_string(nv_err(act)));
			json_object_set_new(out, "gpu", gpu_json(dev));
			return 0;
		}
		if (want_on)
			nprof = gip_all(dev, prof, MAX_PROFILES);	/* per mode */
	}

	/* Largest first, then every other distinct order on failure. */
	qsort(w, nw, sizeof(w[0]), cmp_big_first);
	memcpy(first, w, sizeof(w));
	r = NVML_SUCCESS;
	why[0] = '\0';
	for (;;) {
		char this_why[512] = "";

		attempts++;
		r = create_in_order(dev, w, nw, this_why, sizeof(this_why));
		if (r == NVML_SUCCESS)
			break;
		if (why[0] == '\0')
			snprintf(why, sizeof(why), "%s", this_why);
		if (clear_all(dev, prof, nprof, out) != NVML_SUCCESS) {
			json_object_set_new(out, "left", json_string("partial"));
			return -EIO;
		}
		json_object_del(out, "error");
		if (r != NVML_ERROR_INSUFFICIENT_RESOURCES || attempts >= max_orders)
			break;
		/* The next order: all permutations from the sorted one, skipping
		 * the one tried first. */
		if (attempts == 1)
			qsort(w, nw, sizeof(w[0]), cmp_key);
		else if (!next_order(w, nw))
			break;
		if (same_order(w, first, nw) && !next_order(w, nw))
			break;
	}
	json_object_set_new(out, "changed", json_true());
	json_object_set_new(out, "attempts", json_integer(attempts));
	if (r != NVML_SUCCESS) {
		char msg[768];

		snprintf(msg, sizeof(msg), "%s%s; the GPU was left empty", why,
			 attempts > 1 ? " (and in every other creation order)" : "");
		json_object_set_new(out, "error", json_string(msg));
		json_object_set_new(out, "left", json_string("empty"));
		json_object_set_new(out, "gpu", gpu_json(dev));
		return r == NVML_ERROR_INSUFFICIENT_RESOURCES ? -ENOSPC : -EIO;
	}
	json_object_set_new(out, "order", order_json(w, nw));

	/* Verified against what NVML reports now. */
	gpu = gpu_json(dev);
	desired = json_pack("{s:b, s:O}", "enabled", want_on, "layout", layout ? layout : json_null());
	if (!mig_layout_matches(gpu, desired, why, sizeof(why))) {
		char msg[768];

		json_decref(gpu);
		json_decref(desired);
		clear_all(dev, prof, nprof, out);
		snprintf(msg, sizeof(msg), "created, but NVML reports another layout (%s); the GPU "
			 "was left empty", why);
		json_object_set_new(out, "error", json_string(msg));
		json_object_set_new(out, "left", json_string("empty"));
		json_object_set_new(out, "gpu", gpu_json(dev));
		return -EIO;
	}
	json_decref(desired);
	json_object_set_new(out, "gpu", gpu);
	return 0;
}
