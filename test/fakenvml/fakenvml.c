/* SPDX-License-Identifier: MIT */
/* A fake libnvidia-ml.so.1 for the tests of modules/mig (never installed).
 *
 * It implements the NVML subset the mig module uses, with a MIG state
 * machine: A100-40GB, A100-80GB, H100-80GB and H200 profile tables and
 * placements, MIG mode current/pending (Ampere: the change needs a GPU reset
 * the driver may or may not manage; Hopper: no reset), GPU and compute
 * instances with INSUFFICIENT_RESOURCES when placements are fragmented,
 * IN_USE from processes injected on an instance, a call that hangs,
 * errors injected per function, and the vGPU types each GPU instance can
 * host (MIG-backed vGPU; "vgpu_taken" on an instance empties its list).
 *
 * Its whole state is a JSON file named by $FAKE_NVML_STATE, read and written
 * under a lock at every call, so the tests read and change it between calls
 * and the daemon's worker (another process) sees the same GPUs:
 *
 *   {"driver_version": "550.90.07", "init_error": 0, "hang": "",
 *    "fail": {"nvmlDeviceCreateGpuInstance": 23},
 *    "calls": {"nvmlDeviceCreateGpuInstance": 3, ...},      (written here)
 *    "gpus": [{"bus_id": "0000:04:00.0", "model": "A100-40GB", "uuid": "GPU-…",
 *              "minor": 0, "mig_current": 0, "mig_pending": 0,
 *              "mode_change": "reset" | "in_use" | "reset_required",
 *              "gis": [{"id", "profile_id", "start", "size", "vgpu_taken",
 *                       "cis": [{"id", "profile_id", "start", "size", "uuid"}]}],
 *              "processes": [{"pid", "gi", "ci"}], "serial": 0}]}
 *
 * A "reboot" is the test's business (it empties "gis", and on Hopper clears
 * the mode): see test/fakenvml/fakenvml.py. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include <jansson.h>

/* The exported functions are NVML's: there is no header of ours to declare them in. */
#pragma GCC diagnostic ignored "-Wmissing-prototypes"

#define EXPORT __attribute__((visibility("default")))
/* Built with -DFAKE_NVML_OLD it is an older driver's library: the newest
 * names (nvmlInit_v2, ..._v3, the "V" profile calls) are not exported, the
 * module has to fall back to the plain and older ones. */
#ifdef FAKE_NVML_OLD
#define NEWEST
#else
#define NEWEST EXPORT
#endif

typedef int nvmlReturn_t;
enum {
	OK = 0, E_UNINIT = 1, E_INVAL = 2, E_NOTSUP = 3, E_NOTFOUND = 6, E_SIZE = 7,
	E_RESET_REQUIRED = 16, E_IN_USE = 19, E_NO_RES = 23, E_UNKNOWN = 999,
};

struct nvmlDevice_st { int gpu, gi, ci; bool mig; };
struct nvmlGpuInstance_st { int gpu, gi; };
struct nvmlComputeInstance_st { int gpu, gi, ci; };
typedef struct nvmlDevice_st *nvmlDevice_t;
typedef struct nvmlGpuInstance_st *nvmlGpuInstance_t;
typedef struct nvmlComputeInstance_st *nvmlComputeInstance_t;

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

/* v2 and v3 share a size; the version word says which. */
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
#define GIP_V2 (sizeof(nvmlGpuInstanceProfileInfo_v2_t) | (2u << 24))
#define GIP_V3 (sizeof(nvmlGpuInstanceProfileInfo_v3_t) | (3u << 24))

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
#define CIP_V2 (sizeof(nvmlComputeInstanceProfileInfo_v2_t) | (2u << 24))

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

typedef unsigned int nvmlVgpuTypeId_t;
typedef struct {
	unsigned int version, vgpuCount;
	nvmlVgpuTypeId_t *vgpuTypeIds;
} nvmlVgpuTypeIdInfo_v1_t;
#define VGPU_IDS_V1 0x01000010u	/* nvmlVgpuTypeIdInfo_v1 (REFERENCE-MODULES A.2) */
#define NO_GI_PROFILE 0xffffffffu	/* INVALID_GPU_INSTANCE_PROFILE_ID: time-sliced */

/* --- the GPUs it knows ------------------------------------------------------ */

struct profile {
	unsigned index, id, slices, mem_slices, count, sms;
	unsigned long long mem_mb;
	const char *name;
	unsigned starts[8];
	unsigned nstarts;
};

struct model {
	const char *key, *name;
	unsigned pci_device;
	bool hopper, mig;
	struct profile p[7];
};

#define P1(n, mb, sm) { 0x0, 19, 1, 1, 7, sm, mb, n, { 0, 1, 2, 3, 4, 5, 6 }, 7 }
#define P1ME(n, mb, sm) { 0x7, 20, 1, 1, 1, sm, mb, n, { 0, 1, 2, 3, 4, 5, 6 }, 7 }
#define P1R2(n, mb, sm) { 0x9, 15, 1, 2, 4, sm, mb, n, { 0, 2, 4, 6 }, 4 }
#define P2(n, mb, sm) { 0x1, 14, 2, 2, 3, sm, mb, n, { 0, 2, 4 }, 3 }
#define P3(n, mb, sm) { 0x2, 9, 3, 4, 2, sm, mb, n, { 0, 4 }, 2 }
#define P4(n, mb, sm) { 0x3, 5, 4, 4, 1, sm, mb, n, { 0 }, 1 }
#define P7(n, mb, sm) { 0x4, 0, 7, 8, 1, sm, mb, n, { 0 }, 1 }

static const struct model models[] = {
	{ "A100-40GB", "NVIDIA A100-PCIE-40GB", 0x20f1, false, true,
	  { P1("MIG 1g.5gb", 4864, 14), P1ME("MIG 1g.5gb+me", 4864, 14),
	    P1R2("MIG 1g.10gb", 9856, 14), P2("MIG 2g.10gb", 9856, 28),
	    P3("MIG 3g.20gb", 19968, 42), P4("MIG 4g.20gb", 19968, 56),
	    P7("MIG 7g.40gb", 40192, 98) } },
	{ "A100-80GB", "NVIDIA A100 80GB PCIe", 0x20b5, false, true,
	  { P1("MIG 1g.10gb", 9728, 14), P1ME("MIG 1g.10gb+me", 9728, 14),
	    P1R2("MIG 1g.20gb", 19968, 14), P2("MIG 2g.20gb", 19968, 28),
	    P3("MIG 3g.40gb", 40192, 42), P4("MIG 4g.40gb", 40192, 56),
	    P7("MIG 7g.80gb", 80896, 98) } },
	{ "H100-80GB", "NVIDIA H100 80GB HBM3", 0x2330, true, true,
	  { P1("MIG 1g.10gb", 9984, 16), P1ME("MIG 1g.10gb+me", 9984, 16),
	    P1R2("MIG 1g.20gb", 20096, 26), P2("MIG 2g.20gb", 20096, 32),
	    P3("MIG 3g.40gb", 40320, 60), P4("MIG 4g.40gb", 40320, 64),
	    P7("MIG 7g.80gb", 80896, 132) } },
	{ "H200-141GB", "NVIDIA H200", 0x2335, true, true,
	  { P1("MIG 1g.18gb", 18432, 16), P1ME("MIG 1g.18gb+me", 18432, 16),
	    P1R2("MIG 1g.35gb", 35840, 26), P2("MIG 2g.35gb", 35840, 32),
	    P3("MIG 3g.71gb", 72704, 60), P4("MIG 4g.71gb", 72704, 64),
	    P7("MIG 7g.141gb", 144384, 132) } },
	{ "L40S", "NVIDIA L40S", 0x26b9, false, false, { { 0 } } },
};

/* vGPU types per model: the MIG-backed ones name their GPU-instance profile
 * (hardware id), the time-sliced one NO_GI_PROFILE. The ids and most names
 * are invented (the A100-40GB's match test_vgpu.py's simulated VFs; no
 * source gave the real ids); the "<G>-<M>C" shape is NVIDIA's naming. */
struct vgpu_type {
	unsigned id, gi_profile;
	const char *name;
};

static const struct {
	const char *model;
	struct vgpu_type t[9];
} vgpu_types[] = {
	{ "A100-40GB", { { 1147, 19, "GRID A100-1-5C" }, { 1148, 14, "GRID A100-2-10C" },
			 { 1149, 9, "GRID A100-3-20C" }, { 1150, 5, "GRID A100-4-20C" },
			 { 1151, 0, "GRID A100-7-40C" }, { 1152, 20, "GRID A100-1-5CME" },
			 { 1153, 15, "GRID A100-1-10C" }, { 1160, NO_GI_PROFILE, "GRID A100-5C" } } },
	{ "A100-80GB", { { 1201, 19, "NVIDIA A100D-1-10C" }, { 1202, 14, "NVIDIA A100D-2-20C" },
			 { 1203, 9, "NVIDIA A100D-3-40C" }, { 1204, 5, "NVIDIA A100D-4-40C" },
			 { 1205, 0, "NVIDIA A100D-7-80C" }, { 1206, 20, "NVIDIA A100D-1-10CME" },
			 { 1207, 15, "NVIDIA A100D-1-20C" },
			 { 1210, NO_GI_PROFILE, "NVIDIA A100D-10C" } } },
	{ "H100-80GB", { { 1301, 19, "NVIDIA H100-1-10C" }, { 1302, 14, "NVIDIA H100-2-20C" },
			 { 1303, 9, "NVIDIA H100-3-40C" }, { 1304, 5, "NVIDIA H100-4-40C" },
			 { 1305, 0, "NVIDIA H100-7-80C" }, { 1306, 20, "NVIDIA H100-1-10CME" },
			 { 1307, 15, "NVIDIA H100-1-20C" },
			 { 1310, NO_GI_PROFILE, "NVIDIA H100-10C" } } },
	{ "H200-141GB", { { 1401, 19, "NVIDIA H200-1-18C" }, { 1402, 14, "NVIDIA H200-2-35C" },
			  { 1403, 9, "NVIDIA H200-3-71C" }, { 1404, 5, "NVIDIA H200-4-71C" },
			  { 1405, 0, "NVIDIA H200-7-141C" }, { 1406, 20, "NVIDIA H200-1-18CME" },
			  { 1407, 15, "NVIDIA H200-1-35C" },
			  { 1410, NO_GI_PROFILE, "NVIDIA H200-18C" } } },
};

#define MAX_GPUS 16
#define MAX_GI 16
#define MAX_CI 8

static struct nvmlDevice_st dev_handles[MAX_GPUS];
static struct nvmlDevice_st mig_handles[MAX_GPUS][MAX_GI];
static struct nvmlGpuInstance_st gi_handles[MAX_GPUS][MAX_GI];
static struct nvmlComputeInstance_st ci_handles[MAX_GPUS][MAX_GI][MAX_CI];

/* --- the state file ----------------------------------------------------------- */

static int initialised;
static const char *via;		/* the older name a wrapper was called by */
static json_t *st;		/* loaded for one call */
static int lock_fd = -1;
static bool dirty;

static const char *
state_path(void)
{
	return getenv("FAKE_NVML_STATE");
}

static void
hang_forever(void)
{
	for (;;)
		pause();
}

/* Loads the state under the lock and counts the call; the injected
 * hang or error for `fn` is returned (0 = carry on). */
static nvmlReturn_t
begin(const char *fn)
{
	const char *path = state_path();
	const char *name = via ? via : fn;
	char lock[4096];
	json_t *calls, *fail;
	const char *hang;

	via = NULL;

	if (path == NULL)
		return E_UNKNOWN;
	snprintf(lock, sizeof(lock), "%s.lock", path);
	lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lock_fd < 0 || flock(lock_fd, LOCK_EX) < 0)
		return E_UNKNOWN;
	st = json_load_file(path, 0, NULL);
	if (!json_is_object(st)) {
		json_decref(st);
		st = NULL;
		close(lock_fd);
		lock_fd = -1;
		return E_UNKNOWN;
	}
	dirty = true;
	calls = json_object_get(st, "calls");
	if (!json_is_object(calls)) {
		calls = json_object();
		json_object_set_new(st, "calls", calls);
	}
	json_object_set_new(calls, name,
			    json_integer(json_integer_value(json_object_get(calls, name)) + 1));
	hang = json_string_value(json_object_get(st, "hang"));
	if (hang && strcmp(hang, fn) == 0) {
		/* Saved first: the test sees the call arrive. */
		json_dump_file(st, path, JSON_INDENT(1));
		close(lock_fd);
		lock_fd = -1;
		hang_forever();
	}
	fail = json_object_get(json_object_get(st, "fail"), fn);
	return json_is_integer(fail) ? (nvmlReturn_t)json_integer_value(fail) : OK;
}

static nvmlReturn_t
end(nvmlReturn_t ret)
{
	const char *path = state_path();

	if (st && dirty && path) {
		char tmp[4096];

		snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
		if (json_dump_file(st, tmp, JSON_INDENT(1)) == 0)
			rename(tmp, path);
	}
	json_decref(st);
	st = NULL;
	if (lock_fd >= 0)
		close(lock_fd);
	lock_fd = -1;
	return ret;
}

#define BEGIN(fn)                                       \
	nvmlReturn_t r_ = begin(fn);                    \
	if (r_ != OK)                                   \
		return end(r_);                         \
	if (!initialised)                               \
		return end(E_UNINIT)

static json_t *
gpus(void)
{
	return json_object_get(st, "gpus");
}

static json_t *
gpu_at(int i)
{
	return json_array_get(gpus(), (size_t)i);
}

static const struct model *
model_of(const json_t *g)
{
	const char *key = json_string_value(json_object_get(g, "model"));

	for (size_t i = 0; key && i < sizeof(models) / sizeof(models[0]); i++)
		if (strcmp(models[i].key, key) == 0)
			return &models[i];
	return &models[0];
}

static int
geti(const json_t *o, const char *k)
{
	return (int)json_integer_value(json_object_get(o, k));
}

static json_t *
gi_by_id(json_t *g, int id)
{
	size_t i;
	json_t *v;

	json_array_foreach(json_object_get(g, "gis"), i, v)
		if (geti(v, "id") == id)
			return v;
	return NULL;
}

static json_t *
ci_by_id(json_t *gi, int id)
{
	size_t i;
	json_t *v;

	json_array_foreach(json_object_get(gi, "cis"), i, v)
		if (geti(v, "id") == id)
			return v;
	return NULL;
}

static const struct profile *
profile_by_id(const struct model *m, unsigned id)
{
	for (int i = 0; m->mig && i < 7; i++)
		if (m->p[i].id == id)
			return &m->p[i];
	return NULL;
}

static const struct profile *
profile_by_index(const struct model *m, unsigned index)
{
	for (int i = 0; m->mig && i < 7; i++)
		if (m->p[i].index == index)
			return &m->p[i];
	return NULL;
}

/* A device handle still names a GPU of the state (MIG handles: an
 * existing compute instance). */
static json_t *
dev_gpu(nvmlDevice_t d)
{
	json_t *g;

	if (d == NULL || (g = gpu_at(d->gpu)) == NULL)
		return NULL;
	if (d->mig) {
		json_t *gi = gi_by_id(g, d->gi);

		if (gi == NULL || ci_by_id(gi, d->ci) == NULL)
			return NULL;
	}
	return g;
}

static bool
mig_on(const json_t *g)
{
	return geti(g, "mig_current") == 1;
}

/* --- system ------------------------------------------------------------------- */

EXPORT const char *
nvmlErrorString(nvmlReturn_t r)
{
	switch (r) {
	case OK: return "Success";
	case E_UNINIT: return "Uninitialized";
	case E_INVAL: return "Invalid Argument";
	case E_NOTSUP: return "Not Supported";
	case E_NOTFOUND: return "Not Found";
	case E_SIZE: return "Insufficient Size";
	case 9: return "Driver Not Loaded";
	case E_RESET_REQUIRED: return "GPU requires reset";
	case E_IN_USE: return "In use by another client";
	case E_NO_RES: return "Insufficient Resources";
	case 15: return "GPU is lost";
	default: return "Unknown Error";
	}
}

NEWEST nvmlReturn_t
nvmlInit_v2(void)
{
	nvmlReturn_t r = begin("nvmlInit_v2");

	if (r == OK)
		r = (nvmlReturn_t)geti(st, "init_error");
	if (r == OK)
		initialised++;
	return end(r);
}

EXPORT nvmlReturn_t
nvmlInit(void)
{
	via = "nvmlInit";
	return nvmlInit_v2();
}

EXPORT nvmlReturn_t
nvmlShutdown(void)
{
	BEGIN("nvmlShutdown");
	initialised--;
	return end(OK);
}

EXPORT nvmlReturn_t
nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
	const char *v;

	BEGIN("nvmlSystemGetDriverVersion");
	v = json_string_value(json_object_get(st, "driver_version"));
	if (v == NULL)
		v = "550.90.07";
	if (strlen(v) >= length)
		return end(E_SIZE);
	snprintf(version, length, "%s", v);
	return end(OK);
}

NEWEST nvmlReturn_t
nvmlDeviceGetCount_v2(unsigned int *count)
{
	BEGIN("nvmlDeviceGetCount_v2");
	*count = (unsigned)json_array_size(gpus());
	return end(OK);
}

EXPORT nvmlReturn_t
nvmlDeviceGetCount(unsigned int *count)
{
	via = "nvmlDeviceGetCount";
	return nvmlDeviceGetCount_v2(count);
}

NEWEST nvmlReturn_t
nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
	BEGIN("nvmlDeviceGetHandleByIndex_v2");
	if (index >= json_array_size(gpus()) || index >= MAX_GPUS)
		return end(E_INVAL);
	dev_handles[index] = (struct nvmlDevice_st){ .gpu = (int)index };
	*device = &dev_handles[index];
	return end(OK);
}

EXPORT nvmlReturn_t
nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device)
{
	via = "nvmlDeviceGetHandleByIndex";
	return nvmlDeviceGetHandleByIndex_v2(index, device);
}

/* "0000:04:00.0" and "00000000:04:00.0" name the same function. */
static bool
same_bus_id(const char *a, const char *b)
{
	unsigned d1, b1, s1, f1, d2, b2, s2, f2;

	return sscanf(a, "%x:%x:%x.%x", &d1, &b1, &s1, &f1) == 4 &&
	       sscanf(b, "%x:%x:%x.%x", &d2, &b2, &s2, &f2) == 4 && d1 == d2 && b1 == b2 &&
	       s1 == s2 && f1 == f2;
}

NEWEST nvmlReturn_t
nvmlDeviceGetHandleByPciBusId_v2(const char *bus_id, nvmlDevice_t *device)
{
	size_t i;
	json_t *g;

	BEGIN("nvmlDeviceGetHandleByPciBusId_v2");
	json_array_foreach(gpus(), i, g) {
		if (i < MAX_GPUS &&
		    same_bus_id(bus_id, json_string_value(json_object_get(g, "bus_id")) ?: "")) {
			dev_handles[i] = (struct nvmlDevice_st){ .gpu = (int)i };
			*device = &dev_handles[i];
			return end(OK);
		}
	}
	return end(E_NOTFOUND);
}

EXPORT nvmlReturn_t
nvmlDeviceGetHandleByPciBusId(const char *bus_id, nvmlDevice_t *device)
{
	via = "nvmlDeviceGetHandleByPciBusId";
	return nvmlDeviceGetHandleByPciBusId_v2(bus_id, device);
}

EXPORT nvmlReturn_t
nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int length)
{
	json_t *g;

	BEGIN("nvmlDeviceGetName");
	if ((g = dev_gpu(d)) == NULL)
		return end(E_INVAL);
	if (d->mig) {
		const struct profile *p = profile_by_id(model_of(g),
			(unsigned)geti(gi_by_id(g, d->gi), "profile_id"));
		snprintf(name, length, "%s %s", model_of(g)->name, p ? p->name : "MIG");
	} else {
		snprintf(name, length, "%s", model_of(g)->name);
	}
	return end(OK);
}

EXPORT nvmlReturn_t
nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int length)
{
	const char *u;
	json_t *g;

	BEGIN("nvmlDeviceGetUUID");
	if ((g = dev_gpu(d)) == NULL)
		return end(E_INVAL);
	u = d->mig ? json_string_value(json_object_get(ci_by_id(gi_by_id(g, d->gi), d->ci),
							"uuid"))
		   : json_string_value(json_object_get(g, "uuid"));
	if (u == NULL || strlen(u) >= length)
		return end(E_SIZE);
	snprintf(uuid, length, "%s", u);
	return end(OK);
}

NEWEST nvmlReturn_t
nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *pci)
{
	unsigned dom, bus, slot, fn;
	json_t *g;

	BEGIN("nvmlDeviceGetPciInfo_v3");
	if ((g = dev_gpu(d)) == NULL)
		return end(E_INVAL);
	if (sscanf(json_string_value(json_object_get(g, "bus_id")) ?: "", "%x:%x:%x.%x", &dom,
		   &bus, &slot, &fn) != 4)
		return end(E_UNKNOWN);
	memset(pci, 0, sizeof(*pci));
	pci->domain = dom;
	pci->bus = bus;
	pci->device = slot;
	pci->pciDeviceId = (model_of(g)->pci_device << 16) | 0x10de;
	pci->pciSubSystemId = 0x145f10de;
	snprintf(pci->busIdLegacy, sizeof(pci->busIdLegacy), "%04x:%02x:%02x.%x", dom, bus, slot, fn);
	snprintf(pci->busId, sizeof(pci->busId), "%08x:%02x:%02x.%x", dom, bus, slot, fn);
	return end(OK);
}

EXPORT nvmlReturn_t
nvmlDeviceGetMinorNumber(nvmlDevice_t d, unsigned int *minor)
{
	json_t *g;

	BEGIN("nvmlDeviceGetMinorNumber");
	if ((g = dev_gpu(d)) == NULL || d->mig)
		return end(E_INVAL);
	*minor = (unsigned)geti(g, "minor");
	return end(OK);
}

/* --- MIG mode ------------------------------------------------------------------ */

EXPORT nvmlReturn_t
nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned int *current, unsigned int *pending)
{
	json_t *g;

	BEGIN("nvmlDeviceGetMigMode");
	if ((g = dev_gpu(d)) == NULL || d->mig)
		return end(E_INVAL);
	if (!model_of(g)->mig)
		return end(E_NOTSUP);
	*current = (unsigned)geti(g, "mig_current");
	*pending = (unsigned)geti(g, "mig_pending");
	return end(OK);
}

EXPORT nvmlReturn_t
nvmlDeviceSetMigMode(nvmlDevice_t d, unsigned int mode, nvmlReturn_t *activation)
{
	const char *how;
	json_t *g;

	BEGIN("nvmlDeviceSetMigMode");
	if ((g = dev_gpu(d)) == NULL || d->mig || mode > 1)
		return end(E_INVAL);
	if (!model_of(g)->mig)
		return end(E_NOTSUP);
	if (json_array_size(json_object_get(g, "gis")) > 0)
		return end(E_IN_USE);
	json_object_set_new(g, "mig_pending", json_integer(mode));
	how = json_string_value(json_object_get(g, "mode_change"));
	*activation = OK;
	if (model_of(g)->hopper || how == NULL || strcmp(how, "reset") == 0)
		json_object_set_new(g, "mig_current", json_integer(mode));
	else if (geti(g, "mig_current") != (int)mode)
		*activation = strcmp(how, "in_use") == 0 ? E_IN_USE : E_RESET_REQUIRED;
	return end(OK);
}

/* --- GPU instance profiles -------------------------------------------------- */

static void
fill_v1(const struct profile *p, nvmlGpuInstanceProfileInfo_t *info)
{
	memset(info, 0, sizeof(*info));
	info->id = p->id;
	info->sliceCount = p->slices;
	info->instanceCount = p->count;
	info->multiprocessorCount = p->sms;
	info->copyEngineCount = p->slices;
	info->decoderCount = p->index == 0x7 || p->index == 0x4 ? 1 : p->slices / 2;
	info->memorySizeMB = p->mem_mb;
}

static nvmlReturn_t
profile_lookup(nvmlDevice_t d, unsigned index, const struct profile **out)
{
	json_t *g = dev_gpu(d);

	if (g == NULL || d->mig)
		return E_INVAL;
	if (!model_of(g)->mig)
		return E_NOTSUP;
	if (index >= 0x12)
		return E_INVAL;
	*out = profile_by_index(model_of(g), index);
	return *out ? OK : E_NOTSUP;
}

EXPORT nvmlReturn_t
nvmlDeviceGetGpuInstanceProfileInfo(nvmlDevice_t d, unsigned int index,
				    nvmlGpuInstanceProfileInfo_t *info)
{
	const struct profile *p;
	nvmlReturn_t r;

	BEGIN("nvmlDeviceGetGpuInstanceProfileInfo");
	if ((r = profile_lookup(d, index, &p)) != OK)
		return end(r);
	fill_v1(p, info);
	return end(OK);
}

NEWEST nvmlReturn_t
nvmlDeviceGetGpuInstanceProfileInfoV(nvmlDevice_t d, unsigned int index,
				     nvmlGpuInstanceProfileInfo_v2_t *info)
{
	nvmlGpuInstanceProfileInfo_t v1;
	const struct profile *p;
	nvmlReturn_t r;

	BEGIN("nvmlDeviceGetGpuInstanceProfileInfoV");
	if (info->version != GIP_V2 && info->version != GIP_V3)
		return end(25);		/* ARGUMENT_VERSION_MISMATCH */
	if ((r = profile_lookup(d, index, &p)) != OK)
		return end(r);
	fill_v1(p, &v1);
	if (info->version == GIP_V3) {
		nvmlGpuInstanceProfileInfo_v3_t *v3 = (void *)info;

		memset(v3, 0, sizeof(*v3));
		v3->version = (unsigned)GIP_V3;
		v3->id = v1.id;
		v3->sliceCount = v1.sliceCount;
		v3->instanceCount = v1.instanceCount;
		v3->multiprocessorCount = v1.multiprocessorCount;
		v3->copyEngineCount = v1.copyEngineCount;
		v3->decoderCount = v1.decoderCount;
		v3->memorySizeMB = v1.memorySizeMB;
		snprintf(v3->name, sizeof(v3->name), "%s", p->name);
	} else {
		memset(info, 0, sizeof(*info));
		info->version = (unsigned)GIP_V2;
		info->id = v1.id;
		info->sliceCount = v1.sliceCount;
		info->instanceCount = v1.instanceCount;
		info->multiprocessorCount = v1.multiprocessorCount;
		info->copyEngineCount = v1.copyEngineCount;
		info->decoderCount = v1.decoderCount;
		info->memorySizeMB = v1.memorySizeMB;
		snprintf(info->name, sizeof(info->name), "%s", p->name);
	}
	return end(OK);
}

NEWEST nvmlReturn_t
nvmlDeviceGetGpuInstancePossiblePlacements_v2(nvmlDevice_t d, unsigned int profile_id,
					      nvmlPlacement_t *placements, unsigned int *count)
{
	const struct profile *p;
	json_t *g;

	BEGIN("nvmlDeviceGetGpuInstancePossiblePlacements_v2");
	if ((g = dev_gpu(d)) == NULL || d->mig || count == NULL)
		return end(E_INVAL);
	if (!model_of(g)->mig)
		return end(E_NOTSUP);
	if ((p = profile_by_id(model_of(g), profile_id)) == NULL)
		return end(E_INVAL);
	if (placements == NULL) {
		*count = p->nstarts;
		return end(OK);
	}
	if (*count < p->nstarts)
		return end(E_SIZE);
	for (unsigned i = 0; i < p->nstarts; i++)
		placements[i] = (nvmlPlacement_t){ p->starts[i], p->mem_slices };
	*count = p->nstarts;
	return end(OK);
}

/* Memory slices and compute slices in use, and instances of `profile`. */
static void
usage(json_t *g, unsigned *mem_mask, unsigned *compute, unsigned *of_profile, unsigned profile)
{
	const struct model *m = model_of(g);
	size_t i;
	json_t *gi;

	*mem_mask = *compute = *of_profile = 0;
	json_array_foreach(json_object_get(g, "gis"), i, gi) {
		const struct profile *p = profile_by_id(m, (unsigned)geti(gi, "profile_id"));
		unsigned start = (unsigned)geti(gi, "start"), size = (unsigned)geti(gi, "size");

		*mem_mask |= ((1u << size) - 1) << start;
		*compute += p ? p->slices : 0;
		*of_profile += (unsigned)geti(gi, "profile_id") == profile;
	}
}

static bool
fits(json_t *g, const struct profile *p, unsigned start)
{
	unsigned mask, compute, same, want = ((1u << p->mem_slices) - 1) << start;
	bool ok = false;

	for (unsigned i = 0; i < p->nstarts; i++)
		ok |= p->starts[i] == start;
	usage(g, &mask, &compute, &same, p->id);
	return ok && (mask & want) == 0 && compute + p->slices <= 7 && same < p->count;
}

EXPORT nvmlReturn_t
nvmlDeviceGetGpuInstanceRemainingCapacity(nvmlDevice_t d, unsigned int profile_id,
					  unsigned int *count)
{
	const struct profile *p;
	json_t *g;

	BEGIN("nvmlDeviceGetGpuInstanceRemainingCapacity");
	if ((g = dev_gpu(d)) == NULL || d->mig)
		return end(E_INVAL);
	if (!model_of(g)->mig || !mig_on(g))
		return end(E_NOTSUP);
	if ((p = profile_by_id(model_of(g), profile_id)) == NULL)
		return end(E_INVAL);
	*count = 0;
	/* As many as fit one after another, first free placement each. */
	{
		json_t *copy = json_deep_copy(g);

		for (unsigned n = 0; n < p->count; n++) {
			bool placed = false;

			for (unsigned i = 0; i < p->nstarts && !placed; i++) {
				if (fits(copy, p, p->starts[i])) {
					json_array_append_new(json_object_get(copy, "gis"),
						json_pack("{s:i, s:i, s:i, s:i}", "id", 99,
							  "profile_id", (int)p->id, "start",
							  (int)p->starts[i], "size",
							  (int)p->mem_slices));
					placed = true;
				}
			}
			if (!placed)
				break;
			(*count)++;
		}
		json_decref(copy);
	}
	return end(OK);
}

static nvmlReturn_t
create_gi(nvmlDevice_t d, unsigned profile_id, const nvmlPlacement_t *placement,
	  nvmlGpuInstance_t *out)
{
	const struct profile *p;
	json_t *g, *gis;
	int id = 1;
	int start = -1;

	if ((g = dev_gpu(d)) == NULL || d->mig || out == NULL)
		return E_INVAL;
	if (!model_of(g)->mig || !mig_on(g))
		return E_NOTSUP;
	if ((p = profile_by_id(model_of(g), profile_id)) == NULL)
		return E_INVAL;
	if (placement) {
		if (placement->size != p->mem_slices)
			return E_INVAL;
		if (fits(g, p, placement->start))
			start = (int)placement->start;
	} else {
		for (unsigned i = 0; i < p->nstarts && start < 0; i++)
			if (fits(g, p, p->starts[i]))
				start = (int)p->starts[i];
	}
	if (start < 0)
		return E_NO_RES;
	while (gi_by_id(g, id))
		id++;
	if (id >= MAX_GI)
		return E_NO_RES;
	gis = json_object_get(g, "gis");
	if (!json_is_array(gis)) {
		gis = json_array();
		json_object_set_new(g, "gis", gis);
	}
	json_array_append_new(gis, json_pack("{s:i, s:i, s:i, s:i, s:[]}", "id", id, "profile_id",
					     (int)p->id, "start", start, "size",
					     (int)p->mem_slices, "cis"));
	gi_handles[d->gpu][id] = (struct nvmlGpuInstance_st){ d->gpu, id };
	*out = &gi_handles[d->gpu][id];
	return OK;
}

EXPORT nvmlReturn_t
nvmlDeviceCreateGpuInstance(nvmlDevice_t d, unsigned int profile_id, nvmlGpuInstance_t *gi)
{
	BEGIN("nvmlDeviceCreateGpuInstance");
	return end(create_gi(d, profile_id, NULL, gi));
}

EXPORT nvmlReturn_t
nvmlDeviceCreateGpuInstanceWithPlacement(nvmlDevice_t d, unsigned int profile_id,
					 const nvmlPlacement_t *placement, nvmlGpuInstance_t *gi)
{
	BEGIN("nvmlDeviceCreateGpuInstanceWithPlacement");
	if (placement == NULL)
		return end(E_INVAL);
	return end(create_gi(d, profile_id, placement, gi));
}

EXPORT nvmlReturn_t
nvmlDeviceGetGpuInstances(nvmlDevice_t d, unsigned int profile_id, nvmlGpuInstance_t *out,
			  unsigned int *count)
{
	const struct profile *p;
	unsigned n = 0;
	size_t i;
	json_t *g, *gi;

	BEGIN("nvmlDeviceGetGpuInstances");
	if ((g = dev_gpu(d)) == NULL || d->mig || count == NULL)
		return end(E_INVAL);
	if (!model_of(g)->mig || !mig_on(g))
		return end(E_NOTSUP);
	if ((p = profile_by_id(model_of(g), profile_id)) == NULL)
		return end(E_INVAL);
	json_array_foreach(json_object_get(g, "gis"), i, gi) {
		int id = geti(gi, "id");

		if ((unsigned)geti(gi, "profile_id") != profile_id)
			continue;
		if (n >= *count)
			return end(E_SIZE);
		gi_handles[d->gpu][id] = (struct nvmlGpuInstance_st){ d->gpu, id };
		out[n++] = &gi_handles[d->gpu][id];
	}
	*count = n;
	return end(OK);
}

EXPORT nvmlReturn_t
nvmlDeviceGetGpuInstanceById(nvmlDevice_t d, unsigned int id, nvmlGpuInstance_t *out)
{
	json_t *g;

	BEGIN("nvmlDeviceGetGpuInstanceById");
	if ((g = dev_gpu(d)) == NULL || d->mig || id >= MAX_GI)
		return end(E_INVAL);
	if (!mig_on(g))
		return end(E_NOTSUP);
	if (gi_by_id(g, (int)id) == NULL)
		return end(E_NOTFOUND);
	gi_handles[d->gpu][id] = (struct nvmlGpuInstance_st){ d->gpu, (int)id };
	*out = &gi_handles[d->gpu][id];
	return end(OK);
}

static json_t *
gi_of(nvmlGpuInstance_t h, json_t **gpu)
{
	json_t *g;

	if (h == NULL || (g = gpu_at(h->gpu)) == NULL || !mig_on(g))
		return NULL;
	if (gpu)
		*gpu = g;
	return gi_by_id(g, h->gi);
}

EXPORT nvmlReturn_t
nvmlGpuInstanceGetInfo(nvmlGpuInstance_t h, nvmlGpuInstanceInfo_t *info)
{
	json_t *gi;

	BEGIN("nvmlGpuInstanceGetInfo");
	if ((gi = gi_of(h, NULL)) == NULL)
		return end(E_INVAL);
	dev_handles[h->gpu] = (struct nvmlDevice_st){ .gpu = h->gpu };
	info->device = &dev_handles[h->gpu];
	info->id = (unsigned)h->gi;
	info->profileId = (unsigned)geti(gi, "profile_id");
	info->placement = (nvmlPlacement_t){ (unsigned)geti(gi, "start"),
					     (unsigned)geti(gi, "size") };
	return end(OK);
}

static bool
has_process(json_t *g, int gi, int ci)
{
	size_t i;
	json_t *p;

	json_array_foreach(json_object_get(g, "processes"), i, p)
		if ((gi < 0 || geti(p, "gi") == gi) && (ci < 0 || geti(p, "ci") == ci))
			return true;
	return false;
}

EXPORT nvmlReturn_t
nvmlGpuInstanceDestroy(nvmlGpuInstance_t h)
{
	json_t *g, *gi, *gis;
	size_t i;
	json_t *v;

	BEGIN("nvmlGpuInstanceDestroy");
	if ((gi = gi_of(h, &g)) == NULL)
		return end(E_INVAL);
	if (json_array_size(json_object_get(gi, "cis")) > 0 || has_process(g, h->gi, -1))
		return end(E_IN_USE);
	gis = json_object_get(g, "gis");
	json_array_foreach(gis, i, v) {
		if (v == gi) {
			json_array_remove(gis, i);
			break;
		}
	}
	return end(OK);
}

/* --- compute instances ---------------------------------------------------------- */

static nvmlReturn_t
ci_profile(json_t *g, json_t *gi, unsigned index, unsigned eng,
	   nvmlComputeInstanceProfileInfo_t *info)
{
	const struct profile *gp = profile_by_id(model_of(g), (unsigned)geti(gi, "profile_id"));
	static const unsigned slices_of[] = { 1, 2, 3, 4, 7, 8, 6 };

	if (gp == NULL || eng != 0)
		return E_INVAL;
	/* 8- and 6-slice compute instances exist on other GPUs only. */
	if (index > 4)
		return index < 9 ? E_NOTSUP : E_INVAL;
	if (slices_of[index] > gp->slices)
		return E_NOTSUP;
	memset(info, 0, sizeof(*info));
	info->id = index;	/* as nvidia-smi mig -lcip shows them: 0 1c ... 4 7c */
	info->sliceCount = slices_of[index];
	info->instanceCount = gp->slices / slices_of[index];
	info->multiprocessorCount = gp->sms * slices_of[index] / gp->slices;
	return OK;
}

EXPORT nvmlReturn_t
nvmlGpuInstanceGetComputeInstanceProfileInfo(nvmlGpuInstance_t h, unsigned int index,
					     unsigned int eng,
					     nvmlComputeInstanceProfileInfo_t *info)
{
	json_t *g, *gi;

	BEGIN("nvmlGpuInstanceGetComputeInstanceProfileInfo");
	if ((gi = gi_of(h, &g)) == NULL)
		return end(E_INVAL);
	return end(ci_profile(g, gi, index, eng, info));
}

NEWEST nvmlReturn_t
nvmlGpuInstanceGetComputeInstanceProfileInfoV(nvmlGpuInstance_t h, unsigned int index,
					      unsigned int eng,
					      nvmlComputeInstanceProfileInfo_v2_t *info)
{
	nvmlComputeInstanceProfileInfo_t v1;
	json_t *g, *gi;
	nvmlReturn_t r;

	BEGIN("nvmlGpuInstanceGetComputeInstanceProfileInfoV");
	if (info->version != CIP_V2)
		return end(25);
	if ((gi = gi_of(h, &g)) == NULL)
		return end(E_INVAL);
	if ((r = ci_profile(g, gi, index, eng, &v1)) != OK)
		return end(r);
	memset(info, 0, sizeof(*info));
	info->version = (unsigned)CIP_V2;
	memcpy(&info->id, &v1, sizeof(v1));
	snprintf(info->name, sizeof(info->name), "MIG %uc", v1.sliceCount);
	return end(OK);
}

EXPORT nvmlReturn_t
nvmlGpuInstanceCreateComputeInstance(nvmlGpuInstance_t h, unsigned int profile_id,
				     nvmlComputeInstance_t *out)
{
	static const unsigned slices_of_id[] = { 1, 2, 3, 4, 7 };
	const struct profile *gp;
	unsigned used = 0, want;
	int id = 0;
	size_t i;
	json_t *g, *gi, *ci, *cis;
	char uuid[64];
	int serial;

	BEGIN("nvmlGpuInstanceCreateComputeInstance");
	if ((gi = gi_of(h, &g)) == NULL || profile_id > 4)
		return end(E_INVAL);
	gp = profile_by_id(model_of(g), (unsigned)geti(gi, "profile_id"));
	want = slices_of_id[profile_id];
	cis = json_object_get(gi, "cis");
	json_array_foreach(cis, i, ci)
		used += slices_of_id[geti(ci, "profile_id") <= 4 ? geti(ci, "profile_id") : 0];
	if (gp == NULL || used + want > gp->slices)
		return end(E_NO_RES);
	while (ci_by_id(gi, id))
		id++;
	if (id >= MAX_CI)
		return end(E_NO_RES);
	serial = geti(g, "serial") + 1;
	json_object_set_new(g, "serial", json_integer(serial));
	/* A new UUID each time, as the driver does. */
	snprintf(uuid, sizeof(uuid), "MIG-%08x-%04x-%04x-%04x-%012x", 0x5eed0000u | (unsigned)h->gpu,
		 (unsigned)h->gi, (unsigned)id, (unsigned)serial & 0xffff, 0xabcdefu + (unsigned)serial);
	json_array_append_new(cis, json_pack("{s:i, s:i, s:i, s:i, s:s}", "id", id, "profile_id",
					     (int)profile_id, "start", (int)used, "size",
					     (int)want, "uuid", uuid));
	ci_handles[h->gpu][h->gi][id] = (struct nvmlComputeInstance_st){ h->gpu, h->gi, id };
	*out = &ci_handles[h->gpu][h->gi][id];
	return end(OK);
}

EXPORT nvmlReturn_t
nvmlGpuInstanceGetComputeInstances(nvmlGpuInstance_t h, unsigned int profile_id,
				   nvmlComputeInstance_t *out, unsigned int *count)
{
	unsigned n = 0;
	size_t i;
	json_t *gi, *ci;

	BEGIN("nvmlGpuInstanceGetComputeInstances");
	if ((gi = gi_of(h, NULL)) == NULL || count == NULL)
		return end(E_INVAL);
	json_array_foreach(json_object_get(gi, "cis"), i, ci) {
		int id = geti(ci, "id");

		if ((unsigned)geti(ci, "profile_id") != profile_id)
			continue;
		if (n >= *count)
			return end(E_SIZE);
		ci_handles[h->gpu][h->gi][id] = (struct nvmlComputeInstance_st){ h->gpu, h->gi, id };
		out[n++] = &ci_handles[h->gpu][h->gi][id];
	}
	*count = n;
	return end(OK);
}

static json_t *
ci_of(nvmlComputeInstance_t h, json_t **gpu, json_t **gi_out)
{
	struct nvmlGpuInstance_st gh;
	json_t *gi;

	if (h == NULL)
		return NULL;
	gh = (struct nvmlGpuInstance_st){ h->gpu, h->gi };
	if ((gi = gi_of(&gh, gpu)) == NULL)
		return NULL;
	if (gi_out)
		*gi_out = gi;
	return ci_by_id(gi, h->ci);
}

EXPORT nvmlReturn_t
nvmlComputeInstanceDestroy(nvmlComputeInstance_t h)
{
	json_t *g, *gi, *ci, *cis, *v;
	size_t i;

	BEGIN("nvmlComputeInstanceDestroy");
	if ((ci = ci_of(h, &g, &gi)) == NULL)
		return end(E_INVAL);
	if (has_process(g, h->gi, h->ci))
		return end(E_IN_USE);
	cis = json_object_get(gi, "cis");
	json_array_foreach(cis, i, v) {
		if (v == ci) {
			json_array_remove(cis, i);
			break;
		}
	}
	return end(OK);
}

NEWEST nvmlReturn_t
nvmlComputeInstanceGetInfo_v2(nvmlComputeInstance_t h, nvmlComputeInstanceInfo_t *info)
{
	json_t *g, *gi, *ci;

	BEGIN("nvmlComputeInstanceGetInfo_v2");
	if ((ci = ci_of(h, &g, &gi)) == NULL)
		return end(E_INVAL);
	dev_handles[h->gpu] = (struct nvmlDevice_st){ .gpu = h->gpu };
	gi_handles[h->gpu][h->gi] = (struct nvmlGpuInstance_st){ h->gpu, h->gi };
	info->device = &dev_handles[h->gpu];
	info->gpuInstance = &gi_handles[h->gpu][h->gi];
	info->id = (unsigned)h->ci;
	info->profileId = (unsigned)geti(ci, "profile_id");
	info->placement = (nvmlPlacement_t){ (unsigned)geti(ci, "start"),
					     (unsigned)geti(ci, "size") };
	return end(OK);
}

/* --- vGPU types of GPU instances (MIG-backed vGPU) ------------------------------ */

static const struct vgpu_type *
vgpu_type_by_id(unsigned id)
{
	for (size_t m = 0; m < sizeof(vgpu_types) / sizeof(vgpu_types[0]); m++)
		for (size_t i = 0; i < 9 && vgpu_types[m].t[i].name; i++)
			if (vgpu_types[m].t[i].id == id)
				return &vgpu_types[m].t[i];
	return NULL;
}

/* The MIG-backed types a GPU instance can host now: those of its profile,
 * none once "vgpu_taken" says a vGPU uses it. */
NEWEST nvmlReturn_t
nvmlGpuInstanceGetCreatableVgpus(nvmlGpuInstance_t h, nvmlVgpuTypeIdInfo_v1_t *info)
{
	const char *model;
	unsigned n = 0, profile;
	json_t *g, *gi;

	BEGIN("nvmlGpuInstanceGetCreatableVgpus");
	if (info == NULL || (gi = gi_of(h, &g)) == NULL)
		return end(E_INVAL);
	if (info->version != VGPU_IDS_V1)
		return end(25);		/* ARGUMENT_VERSION_MISMATCH */
	model = model_of(g)->key;
	profile = (unsigned)geti(gi, "profile_id");
	for (size_t m = 0; m < sizeof(vgpu_types) / sizeof(vgpu_types[0]); m++) {
		if (strcmp(vgpu_types[m].model, model) != 0 ||
		    json_is_true(json_object_get(gi, "vgpu_taken")))
			continue;
		for (size_t i = 0; i < 9 && vgpu_types[m].t[i].name; i++) {
			if (vgpu_types[m].t[i].gi_profile != profile)
				continue;
			if (info->vgpuTypeIds && n < info->vgpuCount)
				info->vgpuTypeIds[n] = vgpu_types[m].t[i].id;
			n++;
		}
	}
	if (n > info->vgpuCount || (n > 0 && info->vgpuTypeIds == NULL)) {
		info->vgpuCount = n;
		return end(E_SIZE);
	}
	info->vgpuCount = n;
	return end(OK);
}

NEWEST nvmlReturn_t
nvmlVgpuTypeGetName(nvmlVgpuTypeId_t id, char *name, unsigned int *size)
{
	const struct vgpu_type *t;

	BEGIN("nvmlVgpuTypeGetName");
	if (size == NULL || (t = vgpu_type_by_id(id)) == NULL)
		return end(E_INVAL);
	if (name == NULL || *size <= strlen(t->name)) {
		*size = (unsigned)strlen(t->name) + 1;
		return end(E_SIZE);
	}
	snprintf(name, *size, "%s", t->name);
	*size = (unsigned)strlen(t->name) + 1;
	return end(OK);
}

NEWEST nvmlReturn_t
nvmlVgpuTypeGetGpuInstanceProfileId(nvmlVgpuTypeId_t id, unsigned int *profile)
{
	const struct vgpu_type *t;

	BEGIN("nvmlVgpuTypeGetGpuInstanceProfileId");
	if (profile == NULL || (t = vgpu_type_by_id(id)) == NULL)
		return end(E_INVAL);
	*profile = t->gi_profile;
	return end(OK);
}

/* --- MIG devices --------------------------------------------------------------- */

EXPORT nvmlReturn_t
nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t d, unsigned int *count)
{
	json_t *g;

	BEGIN("nvmlDeviceGetMaxMigDeviceCount");
	if ((g = dev_gpu(d)) == NULL || d->mig)
		return end(E_INVAL);
	*count = model_of(g)->mig && mig_on(g) ? 7 : 0;
	return end(OK);
}

/* MIG devices in GPU instance order, then compute instance order. */
EXPORT nvmlReturn_t
nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t d, unsigned int index, nvmlDevice_t *out)
{
	unsigned n = 0;
	size_t i, j;
	json_t *g, *gi, *ci;

	BEGIN("nvmlDeviceGetMigDeviceHandleByIndex");
	if ((g = dev_gpu(d)) == NULL || d->mig || index >= MAX_GI)
		return end(E_INVAL);
	if (!mig_on(g))
		return end(E_NOTSUP);
	json_array_foreach(json_object_get(g, "gis"), i, gi) {
		json_array_foreach(json_object_get(gi, "cis"), j, ci) {
			if (n++ == index) {
				mig_handles[d->gpu][index] = (struct nvmlDevice_st){
					.gpu = d->gpu, .gi = geti(gi, "id"), .ci = geti(ci, "id"),
					.mig = true };
				*out = &mig_handles[d->gpu][index];
				return end(OK);
			}
		}
	}
	return end(E_NOTFOUND);
}

EXPORT nvmlReturn_t
nvmlDeviceIsMigDeviceHandle(nvmlDevice_t d, unsigned int *is_mig)
{
	BEGIN("nvmlDeviceIsMigDeviceHandle");
	if (dev_gpu(d) == NULL)
		return end(E_INVAL);
	*is_mig = d->mig;
	return end(OK);
}

EXPORT nvmlReturn_t
nvmlDeviceGetGpuInstanceId(nvmlDevice_t d, unsigned int *id)
{
	BEGIN("nvmlDeviceGetGpuInstanceId");
	if (dev_gpu(d) == NULL || !d->mig)
		return end(E_INVAL);
	*id = (unsigned)d->gi;
	return end(OK);
}

EXPORT nvmlReturn_t
nvmlDeviceGetComputeInstanceId(nvmlDevice_t d, unsigned int *id)
{
	BEGIN("nvmlDeviceGetComputeInstanceId");
	if (dev_gpu(d) == NULL || !d->mig)
		return end(E_INVAL);
	*id = (unsigned)d->ci;
	return end(OK);
}

EXPORT nvmlReturn_t
nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t d, nvmlDevice_t *out)
{
	BEGIN("nvmlDeviceGetDeviceHandleFromMigDeviceHandle");
	if (dev_gpu(d) == NULL || !d->mig)
		return end(E_INVAL);
	dev_handles[d->gpu] = (struct nvmlDevice_st){ .gpu = d->gpu };
	*out = &dev_handles[d->gpu];
	return end(OK);
}

/* Processes on the GPU (all) or on one MIG device. */
NEWEST nvmlReturn_t
nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *count,
					nvmlProcessInfo_t *infos)
{
	unsigned n = 0, cap;
	size_t i;
	json_t *g, *p;

	BEGIN("nvmlDeviceGetComputeRunningProcesses_v3");
	if ((g = dev_gpu(d)) == NULL || count == NULL)
		return end(E_INVAL);
	cap = infos ? *count : 0;
	json_array_foreach(json_object_get(g, "processes"), i, p) {
		if (d->mig && (geti(p, "gi") != d->gi || geti(p, "ci") != d->ci))
			continue;
		if (n < cap)
			infos[n] = (nvmlProcessInfo_t){ .pid = (unsigned)geti(p, "pid"),
							.usedGpuMemory = 1ull << 30,
							.gpuInstanceId = (unsigned)geti(p, "gi"),
							.computeInstanceId = (unsigned)geti(p, "ci") };
		n++;
	}
	*count = n;
	return end(n > cap ? E_SIZE : OK);
}

/* --- the older names (a real libnvidia-ml exports them all) -------------------- */

EXPORT nvmlReturn_t
nvmlDeviceGetPciInfo_v2(nvmlDevice_t d, nvmlPciInfo_t *pci)
{
	via = "nvmlDeviceGetPciInfo_v2";
	return nvmlDeviceGetPciInfo_v3(d, pci);
}

EXPORT nvmlReturn_t
nvmlDeviceGetGpuInstancePossiblePlacements(nvmlDevice_t d, unsigned int profile_id,
					   nvmlPlacement_t *placements, unsigned int *count)
{
	via = "nvmlDeviceGetGpuInstancePossiblePlacements";
	return nvmlDeviceGetGpuInstancePossiblePlacements_v2(d, profile_id, placements, count);
}

EXPORT nvmlReturn_t
nvmlComputeInstanceGetInfo(nvmlComputeInstance_t h, nvmlComputeInstanceInfo_t *info)
{
	via = "nvmlComputeInstanceGetInfo";
	return nvmlComputeInstanceGetInfo_v2(h, info);
}

EXPORT nvmlReturn_t
nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t d, unsigned int *count,
					nvmlProcessInfo_t *infos)
{
	via = "nvmlDeviceGetComputeRunningProcesses_v2";
	return nvmlDeviceGetComputeRunningProcesses_v3(d, count, infos);
}
