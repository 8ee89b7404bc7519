/* SPDX-License-Identifier: MIT */
/* hostdevd device-class module interface: the only header a module includes. */
#ifndef HOSTDEVD_MODULE_H
#define HOSTDEVD_MODULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Module ABI v2. A module exports one const struct hdd_module named
 * HDD_MODULE_SYMBOL whose first three fields are the ABI major and minor it
 * was built against and sizeof(struct hdd_module) as it saw it
 * (HDD_MODULE_HEADER fills them).
 *
 * - Another major is refused, and modules.list says why. A v1 module (its
 *   first field was its version, 1) reads as major 1.
 * - The same major with an older minor loads: the core copies the fields
 *   that fit in the module's `size` and treats the rest as NULL. Minors
 *   only ever append fields, to struct hdd_module and struct hdd_core_ops.
 *   A newer minor loads too; the hooks this daemon does not know are unused.
 * - A module tests for core services newer than its minor with
 *   HDD_CORE_HAS(ops, field): the ops table starts with its size too.
 *
 * What a module declares and gets, at a glance (since 2.0): its control
 * methods (`<module>.<verb>`, the core's table is the union), its worker
 * operations (run in the worker process, called with a deadline), its
 * configuration section (the top-level key named after it), hooks from
 * init to stop, and core services: device iteration, the host-safety
 * verdict, worker calls and sysfs writes with deadline and cancel, timers,
 * its journalled section of state.json, events, deferred replies, "my
 * resources changed" and resource members that are not inventory devices.
 */
#define HDD_MODULE_ABI_MAJOR 2u
#define HDD_MODULE_ABI_MINOR 1u
/* The major alone (modules.list's "abi_version"; "abi" is "major.minor"). */
#define HDD_MODULE_ABI_VERSION HDD_MODULE_ABI_MAJOR

/* Name of the one symbol a module exports: a const struct hdd_module. */
#define HDD_MODULE_SYMBOL "hostdevd_module"

/* Where worker operations find the proc root (--proc-root); see proc_path. */
#define HDD_PROC_ROOT_ENV "HOSTDEVD_PROC_ROOT"

/* The longest device or resource-member id, without its NUL (a UUID is 36). */
#define HDD_ID_MAX 64

enum hdd_dev_class {
	HDD_DEV_NONE = -1,	/* a resource member that is not an inventory device */
	HDD_DEV_PCI = 0,
	HDD_DEV_USB,
	HDD_DEV_MDEV,
	HDD_DEV_CLASS_MAX
};

enum hdd_log_level {
	HDD_LOG_ERR = 0,
	HDD_LOG_WARN,
	HDD_LOG_INFO,
	HDD_LOG_DEBUG,
	HDD_LOG_LEVEL_MAX
};

/* Facts of one PCI function, as read from sysfs. Strings are never NULL
 * unless documented; "absent" values are -1 or NULL as stated. */
struct hdd_pci_facts {
	char address[16];		/* "0000:3b:00.0" */
	int vendor_id;			/* -1 when unreadable */
	int device_id;			/* -1 when unreadable */
	int subsystem_vendor_id;	/* -1 when absent */
	int subsystem_device_id;	/* -1 when absent */
	int class_code;			/* 24 bits: class, subclass, prog-if; -1 unreadable */
	int revision;			/* -1 when absent */
	const char *driver;		/* NULL when unbound */
	int iommu_group;		/* -1 when none */
	int numa_node;			/* -1 when none */
	const char *physfn;		/* PF address of a VF, NULL otherwise */
	const char *const *virtfns;	/* NULL-terminated list of VF addresses */
	int sriov_totalvfs;		/* -1 when not SR-IOV capable */
	int sriov_numvfs;		/* -1 when not SR-IOV capable */
	bool is_bridge;
	const char *parent;		/* upstream bridge address, NULL at a root bus */
	const char *vfio_cdev;		/* "vfio3" when the device has a vfio cdev, else NULL */
	bool boot_vga;			/* boot_vga reads 1 */
	int aer_errors;			/* AER fatal + non-fatal totals, -1 when absent */
	const char *vendor_name;	/* from pci.ids, NULL when unknown */
	const char *device_name;	/* from pci.ids, NULL when unknown */
};

/* Why a PCI function is never handed to a guest, or NULL: every bridge (base
 * class 06: host bridges, ISA bridges, root ports, PCI-to-PCI bridges) and
 * the boot VGA device (the firmware's console). One rule for the pci
 * module's "blocked" verdict and for the core's claims, so they agree. */
static inline const char *
hdd_pci_never_claimable(const struct hdd_pci_facts *f)
{
	if (f->class_code >= 0 && (f->class_code >> 16) == 0x06)
		return "is a bridge (PCI class 06xx: host bridges, root ports and PCI bridges stay with the host)";
	if (f->boot_vga)
		return "is the boot VGA device (the firmware's console stays with the host)";
	return NULL;
}

/* Facts of one USB device (not interfaces, not root hubs). */
struct hdd_usb_facts {
	char port[32];			/* sysfs name, e.g. "1-2.1" */
	int vendor_id;			/* idVendor, -1 when unreadable */
	int product_id;			/* idProduct, -1 when unreadable */
	int busnum;
	int devnum;
	int device_class;		/* bDeviceClass, -1 when unreadable */
	const char *driver;		/* driver of the device itself ("usb") or NULL */
	const char *controller;		/* PCI address of the host controller, or NULL */
};

/* Facts of one mediated device (/sys/bus/mdev/devices/<uuid>). */
struct hdd_mdev_facts {
	char uuid[40];
	const char *type;		/* "nvidia-745", from the mdev_type link */
	const char *type_name;		/* "NVIDIA A2-2Q", or NULL */
	const char *parent;		/* a PCI address, or a virtual parent's name */
	int iommu_group;		/* -1 when none */
	const char *driver;		/* NULL when unbound */
};

/* What a module sees of a device. Valid only during the call. In an
 * Allocate for members set with resource_set, cls is HDD_DEV_NONE, id is the
 * member's id and pci, usb and mdev are NULL. */
struct hdd_device_view {
	enum hdd_dev_class cls;
	const char *id;			/* PCI address, USB port, mdev UUID or member id */
	const struct hdd_pci_facts *pci;	/* set when cls == HDD_DEV_PCI */
	const struct hdd_usb_facts *usb;	/* set when cls == HDD_DEV_USB */
	const struct hdd_mdev_facts *mdev;	/* set when cls == HDD_DEV_MDEV */
};

/* The module's handle on the core: each module gets its own, so the core
 * knows who calls. Opaque; valid from init until fini. */
struct hdd_core;

/* The container part of an Allocate answer, built through the core's ops. */
struct hdd_alloc;

/* A control request handed to a module's method; answered exactly once
 * with ops->reply or ops->reply_error, during the call or later (the
 * caller waits, other clients are served meanwhile). */
struct hdd_request;

/* JSON-RPC error codes a module may answer with (ops->reply_error). */
#define HDD_ERR_INVALID_PARAMS	-32602
#define HDD_ERR_REFUSED		-32003
#define HDD_ERR_NOT_FOUND	-32004
#define HDD_ERR_BUSY		-32005
#define HDD_ERR_FAILED		-32010

/* One member of a resource that is not an inventory device (a MIG
 * instance, an mdev not yet in sysfs). */
struct hdd_resource_member {
	const char *id;			/* at most HDD_ID_MAX characters */
	bool healthy;
	int numa_node;			/* -1 when none */
};

/* Completion of a worker call or sysfs write, on the reactor. result: 0,
 * the operation's -errno, -ETIMEDOUT when the deadline passed (the worker is
 * then replaced), -EPIPE when the worker died, -ENOENT for an unknown op,
 * -ECANCELED at SIGTERM (after the stop hook). Called exactly once unless
 * the call was cancelled.
 * out: what the operation wrote (borrowed), or NULL. */
typedef void (*hdd_worker_done_fn)(void *arg, int result, const json_t *out);

/* Services the core gives a module. Passed to init; valid until fini. */
struct hdd_core_ops {
	uint32_t size;			/* sizeof(struct hdd_core_ops) of the core */
	void (*log)(struct hdd_core *core, enum hdd_log_level level,
		    const char *module, const char *fmt, ...)
		__attribute__((format(printf, 4, 5)));
	const char *(*node_name)(struct hdd_core *core);
	/* Calls fn for every PCI function in IOMMU group `group` (including the
	 * one asking). Returns the number of members. */
	int (*iommu_group_foreach)(struct hdd_core *core, int group,
				   void (*fn)(const struct hdd_device_view *dev, void *arg),
				   void *arg);
	/* Whether `rel` exists under --dev-root ("vfio/12"). */
	bool (*dev_exists)(struct hdd_core *core, const char *rel);
	/* The kubelet's default resource name for a PCI function, derived from
	 * its pci.ids names ("nvidia.com/GA100_A100_PCIE_40GB"). Returns 0. */
	int (*pci_resource_name)(struct hdd_core *core, const struct hdd_pci_facts *f,
				 char *buf, size_t size);
	/* KubeVirt's variable name for a resource: PREFIX_ + the name upper-
	 * cased with '/' and '.' turned into '_'. Returns 0 or -ENAMETOOLONG. */
	int (*env_name)(const char *prefix, const char *resource, char *buf, size_t size);
	/* Allocate answer builders; each returns 0 or -errno. */
	int (*alloc_env)(struct hdd_alloc *a, const char *name, const char *value);
	int (*alloc_device)(struct hdd_alloc *a, const char *host_path, const char *container_path,
			    const char *permissions);
	int (*alloc_mount)(struct hdd_alloc *a, const char *host_path, const char *container_path,
			   bool read_only);
	/* The resource's policy: hand out /dev/iommu and the vfio cdevs
	 * instead of the group and container nodes. */
	bool (*alloc_prefer_iommufd)(const struct hdd_alloc *a);

	/* --- since 2.0 --- */

	/* Calls fn for every inventory device of class `cls` (HDD_DEV_NONE:
	 * all). Returns the number visited. */
	int (*device_foreach)(struct hdd_core *core, enum hdd_dev_class cls,
			      void (*fn)(const struct hdd_device_view *dev, void *arg), void *arg);
	/* The host-safety verdict: 1 when the device `id` (a PCI address) is
	 * something the host needs, with why written ("mounted filesystem on
	 * /dev/nvme0n1p2"), 0 when it may be handed out, -ENOENT when unknown. */
	int (*host_needs)(struct hdd_core *core, const char *id, char *why, size_t whylen);
	/* Writes `value` to `path` (relative to the sysfs root) in the worker,
	 * within timeout_ms; done is called on the reactor. Returns a call id
	 * (> 0) for call_cancel, or -errno (done is then not called). */
	int64_t (*sysfs_write)(struct hdd_core *core, const char *path, const char *value,
			       int timeout_ms, hdd_worker_done_fn done, void *arg);
	/* Runs this module's worker operation `op` in the worker process with
	 * `args` (borrowed; must serialise to under 60 KiB) within timeout_ms.
	 * Same return and completion as sysfs_write. */
	int64_t (*worker_call)(struct hdd_core *core, const char *op, const json_t *args,
			       int timeout_ms, hdd_worker_done_fn done, void *arg);
	/* The completion of call `id` will not be called. An operation already
	 * running in the worker finishes or meets its deadline there. */
	void (*call_cancel)(struct hdd_core *core, int64_t id);
	/* Calls fn(arg) once, `ms` from now, on the reactor. Returns a timer
	 * id (> 0) or -errno. */
	int64_t (*timer_add)(struct hdd_core *core, int ms, void (*fn)(void *arg), void *arg);
	void (*timer_cancel)(struct hdd_core *core, int64_t id);
	/* This module's section of state.json: the value it last put (borrowed,
	 * valid until the next state_put), or NULL when it has none. Returns
	 * -EBADMSG in *err when state.json could not be trusted (fail closed:
	 * make no kernel change the section would have to record). state.json
	 * is read after every module's init: ask from the start hook (or the
	 * first probe) on; in init it answers NULL. */
	const json_t *(*state_get)(struct hdd_core *core, int *err);
	/* Replaces the section (borrowed; NULL removes it) and writes
	 * state.json before returning: temporary file, fsync, rename, fsync of
	 * the directory, checksum and boot id as for claims. Journal with it:
	 * put the intent before the first kernel write and the outcome after
	 * the last. Returns 0, -EROFS when failing closed, or -errno. */
	int (*state_put)(struct hdd_core *core, const json_t *section);
	/* Whether the node booted since state.json was written. */
	bool (*rebooted)(struct hdd_core *core);
	/* Emits the event "<module>.<event>" to subscribers; steals params
	 * (an object, or NULL for {}). */
	void (*emit)(struct hdd_core *core, const char *event, json_t *params);
	/* Answers a request: a result (stolen), or an error. */
	void (*reply)(struct hdd_request *req, json_t *result);
	void (*reply_error)(struct hdd_request *req, int code, const char *fmt, ...)
		__attribute__((format(printf, 3, 4)));
	/* Whether the peer of a request may change things (root or the
	 * control group); mutating methods are checked before the call. */
	bool (*request_privileged)(const struct hdd_request *req);
	/* "My resources changed": every device's advertise is asked again at
	 * the end of this loop turn (one ListAndWatch message per resource). */
	void (*resources_changed)(struct hdd_core *core);
	/* Sets the members of `resource` that are not inventory devices (n = 0
	 * withdraws them), replacing what this module set before for that
	 * resource. Allocate for them reaches the module's allocate hook with
	 * views of class HDD_DEV_NONE. Returns 0, -EINVAL (an id longer than
	 * HDD_ID_MAX, a resource name without '/'), or -ENOMEM. */
	int (*resource_set)(struct hdd_core *core, const char *resource,
			    const struct hdd_resource_member *members, size_t n);

	/* --- since 2.1: reading the host --- */

	/* The directory fd of the sysfs root (--sysfs-root), borrowed: read
	 * attributes and links relative to it with openat/readlinkat on the
	 * reactor (sysfs reads do not sleep); write through sysfs_write. */
	int (*sysfs_fd)(struct hdd_core *core);
	/* The directory fd of the device root (--dev-root), borrowed. */
	int (*dev_fd)(struct hdd_core *core);
	/* The absolute path of `rel` under the device root ("vfio/12" ->
	 * "/dev/vfio/12"), as processes see it. Returns 0 or -ENAMETOOLONG. */
	int (*dev_path)(struct hdd_core *core, const char *rel, char *buf, size_t size);
	/* The processes (under --proc-root) that hold one of `paths` (absolute,
	 * as dev_path writes them; NULL-terminated, or NULL) open, or a node
	 * whose path starts with one of `prefixes` ("/dev/nvidia" matches
	 * nvidia0 and nvidiactl), looked up in the worker: out {"holders":
	 * [{"pid", "comm", "path"}]}. Same returns as sysfs_write. */
	int64_t (*holders)(struct hdd_core *core, const char *const *paths,
			   const char *const *prefixes, int timeout_ms, hdd_worker_done_fn done,
			   void *arg);

	/* --- since 2.1: the core's IOMMU-group engine --- */

	/* Moves the whole IOMMU group of PCI function `address` onto vfio-pci
	 * (vfio-pci loaded first, every member: driver_override, unbind,
	 * drivers_probe, verified), through the worker, with rollback: on
	 * failure every member is back on the driver it had. timeout_ms (> 0)
	 * bounds the whole move: a write still pending then fails it with
	 * -ETIMEDOUT (and rolls back); 0 takes the core's limits per write
	 * (claims.release_timeout_s for an unbind). The core journals the move
	 * in state.json under this module's name (intent before the first
	 * write, done after the last), so restart, kill -9 and reboot finish or
	 * undo it, and keeps the group on vfio-pci across reboot and drift
	 * until vfio_group_unbind. The host-safety checks of a PCI claim apply
	 * (host_needs, bridges, the boot VGA device, exclude, an SR-IOV PF with
	 * VFs enabled); a recorded group the live system no longer allows is
	 * kept, listed as refused, never applied. The events "claim.progress",
	 * "claim.done", "claim.failed", "release.done", "release.failed",
	 * "drift" and "claim.refused" follow each move ({"class": "pci", "id",
	 * "owner", "step", ...}).
	 * done: 0 with out {"group": N, "address", "state", "step", "members":
	 * [{"address", "driver", "original_driver", "bridge", "present"}], ...
	 * (the vfio_group_info view)}, or -errno with out {"error": "why"}.
	 * Returns a call id (> 0), or -errno and done is not called (last_error
	 * says why): -EPERM the host needs a member, the group cannot
	 * be bound (no IOMMU group, too large) or its record is refused, -EBUSY another owner holds the group or a move of it is in
	 * flight, -ENOENT no such function, -EROFS failing closed. Binding a group this module already holds succeeds at
	 * once: done runs on the next loop turn, never inside this call. */
	int64_t (*vfio_group_bind)(struct hdd_core *core, const char *address, int timeout_ms,
				   hdd_worker_done_fn done, void *arg);
	/* Gives the group back to the drivers recorded when it was bound, and
	 * forgets it. Refused with -EBUSY while a process holds the group's
	 * /dev/vfio node or vfio cdev (done's out "error" names it) unless
	 * force: done's -EBUSY means exactly that (a move in flight is the
	 * synchronous -EBUSY). A group listed as refused is forgotten without a kernel write
	 * (out has "forgotten": true). Same returns and completion as
	 * vfio_group_bind (out: the group's last view, "state": "released");
	 * -ENOENT when this module holds no group with `address` (any member's
	 * address names its group). */
	int64_t (*vfio_group_unbind)(struct hdd_core *core, const char *address, bool force,
				     int timeout_ms, hdd_worker_done_fn done, void *arg);
	/* Who holds the group of `address` in the engine: 1 with the owning
	 * module's name written to owner (and, when the device plugins handed
	 * a member out, allocated set), 0 when nobody does, -ENOENT unknown. */
	int (*vfio_group_holder)(struct hdd_core *core, const char *address, char *owner,
				 size_t size, bool *allocated);

	/* --- since 2.1, after the engine: what it holds, and why not --- */

	/* The engine's view of the group this module holds with `address` (any
	 * member's address), as a new object: "address" (the function it was
	 * bound for), "iommu_group", "owner", "state" (claiming, claimed,
	 * releasing, refused), "step", "busy", "absent", "drift", "refused",
	 * "reason", "last_error", "created", "allocations", "advertised_as",
	 * "members" [{"address", "original_driver", "bridge", "driver",
	 * "present"}]. NULL when it holds none. */
	json_t *(*vfio_group_info)(struct hdd_core *core, const char *address);
	/* Every group this module holds, in the engine's order: a new array of
	 * vfio_group_info views. */
	json_t *(*vfio_group_list)(struct hdd_core *core);
	/* Why this module's last call that returned -errno failed ("0000:01:00.0
	 * is excluded by the configuration"), or "" (valid until its next call). */
	const char *(*last_error)(struct hdd_core *core);
	/* The `resources` rule of hostdevd.conf that matches PCI function `id`:
	 * 1 with its resource name written ("" when it names none) and whether
	 * it says "claim": true, 0 when none matches, -ENOENT unknown device. */
	int (*resource_rule)(struct hdd_core *core, const char *id, char *name, size_t size,
			     bool *claim);
	/* A duration of the core's configuration, in ms: "claims.gpu_free_timeout"
	 * or "claims.release_timeout" (keys from before module sections).
	 * -ENOENT for another key. */
	int (*config_ms)(struct hdd_core *core, const char *key);
	/* Whether `name` is a resource name the kubelet takes ("<domain>/<name>",
	 * DNS domain, not kubernetes.io): 0, or -EINVAL with why. */
	int (*resource_name_check)(const char *name, char *why, size_t whylen);

	/* --- since 2.1: the module's condition, /proc --- */

	/* Says whether the module can do its work now (its library loads, its
	 * hardware answers): modules.list shows "ready" and, when false, the
	 * reason ("cannot load libnvidia-ml.so.1: ..."). A module is ready
	 * until it says otherwise; its hooks and methods are called either way. */
	void (*set_ready)(struct hdd_core *core, bool ready, const char *reason);
	/* The absolute path of `rel` under the proc root (--proc-root):
	 * "self/mountinfo", "1234/comm", "driver/nvidia/gpus". Worker
	 * operations have no core services: they find the root in the
	 * environment variable HDD_PROC_ROOT_ENV (unset or empty: /proc).
	 * Returns 0 or -ENAMETOOLONG. */
	int (*proc_path)(struct hdd_core *core, const char *rel, char *buf, size_t size);
	/* KubeVirt's Allocate contract for `n` PCI functions on vfio-pci (the
	 * views' pci facts): PCI_RESOURCE_<NAME> = the addresses, comma-joined;
	 * /dev/vfio/vfio, each group's node and each function's vfio cdev, all
	 * "mrw" — or, under the resource's iommufd policy with every function
	 * having a cdev, /dev/iommu and the cdevs. Returns 0, -ENODEV for a
	 * function without an IOMMU group, or -errno. */
	int (*alloc_vfio_pci)(struct hdd_core *core, struct hdd_alloc *a, const char *resource,
			      const struct hdd_device_view *const *devs, size_t n);
};

/* Whether the core's ops table has `field` (it may be an older minor). */
#define HDD_CORE_HAS(ops, field) \
	((ops)->size >= offsetof(struct hdd_core_ops, field) + sizeof((ops)->field) && \
	 (ops)->field != NULL)

/* One control method: "<module>.<verb>". */
struct hdd_method {
	const char *name;		/* must start with the module's name and '.' */
	const char *const *params;	/* allowed parameter names, NULL-terminated */
	bool mutating;			/* root or the control group only */
	/* params: an object, or NULL when none were given. Answer through
	 * ops->reply / ops->reply_error, now or later. Returning -errno
	 * without having answered makes the core answer with that error. */
	int (*call)(void *state, struct hdd_request *req, const json_t *params);
};

/* One worker operation: runs in the worker process (it may block: NVML,
 * rtnetlink, sysfs writes that sleep), one at a time, under the caller's
 * deadline. It has no core services there: it gets its arguments and a
 * descriptor of the sysfs root, writes its results into `out` and returns
 * 0 or -errno. */
struct hdd_worker_op {
	const char *name;
	int (*run)(int sysfs_fd, const json_t *args, json_t *out);
};

enum hdd_device_event {
	HDD_DEVICE_ADD = 0,
	HDD_DEVICE_CHANGE,
	HDD_DEVICE_REMOVE,
	HDD_DEVICE_EVENT_MAX
};

struct hdd_module {
	uint32_t abi_major;		/* HDD_MODULE_ABI_MAJOR; these three first */
	uint32_t abi_minor;		/* HDD_MODULE_ABI_MINOR */
	uint32_t size;			/* sizeof(struct hdd_module) */
	const char *name;		/* short name, [a-z0-9]+ */
	const char *description;
	const char *const *subsystems;	/* udev subsystems it wants, NULL-terminated */
	const struct hdd_method *methods;	/* ended by a NULL name, or NULL */
	const struct hdd_worker_op *worker_ops;	/* ended by a NULL name, or NULL */

	/* Validates the module's configuration section (the top-level key of
	 * hostdevd.conf named after the module; NULL when absent) without
	 * keeping anything: called at start before init and on SIGHUP before
	 * anything changes. Returns 0, or -EINVAL with why naming the key
	 * ("sriov.vfs: expected ..."; an unknown key: "usb.x: unknown key").
	 * NULL: the module takes no section, and one present is refused. */
	int (*config_check)(const json_t *section, char *why, size_t whylen);

	/* Called once after load with the (checked) section. Returns 0 or
	 * -errno; *ret_state is passed to every later hook. */
	int (*init)(const struct hdd_core_ops *ops, struct hdd_core *core, const json_t *section,
		    void **ret_state);
	void (*fini)(void *state);
	/* After the coldplug scan with the worker up, before the control socket
	 * and the kubelet registration: re-apply what the state section
	 * records (mdevs, VF counts and MIG layouts are gone after a reboot). */
	int (*start)(void *state);
	/* SIGHUP, with the new (checked) section. */
	void (*reload)(void *state, const json_t *section);
	/* SIGTERM, while the worker is still there (calls in flight then
	 * complete with -ECANCELED). Timers still pending never fire: free what
	 * they carry here. */
	void (*stop)(void *state);

	/* Says whether the module owns a device: a score > 0 claims it (the
	 * highest score wins; ties go to the module loaded first), 0 declines. */
	int (*probe)(void *state, const struct hdd_device_view *dev);
	/* A device the module owns came, changed or went (dev is its last view).
	 * Not during the coldplug scan: start finds them with device_foreach. */
	void (*device_event)(void *state, enum hdd_device_event ev, const struct hdd_device_view *dev);
	/* A uevent of one of its subsystems that the core does not model
	 * (anything but pci, usb, mdev: "net" for sriov). */
	void (*uevent)(void *state, const char *action, const char *subsystem, const char *sysname,
		       const char *devpath);

	/* Adds the module's view of a device it owns to `out` (a JSON object
	 * that becomes the device's "module_info" member). Returns 0 or -errno. */
	int (*describe)(void *state, const struct hdd_device_view *dev, json_t *out);

	/* Says whether a device it owns is offered to the kubelet now: returns
	 * 1 and writes its default resource name (the configuration may rename
	 * or withhold it) and its health, 2 (since 2.1) when the name is final
	 * (a claim's own resource name: the configuration neither renames nor
	 * withholds it), or 0. NULL: never advertises. A member of a group held
	 * in the engine is offered while it is held and healthy only when its
	 * group is on vfio-pci with its /dev/vfio node (and no new AER errors). */
	int (*advertise)(void *state, const struct hdd_device_view *dev, char *name, size_t size,
			 bool *healthy);

	/* Fills the answer to one container's Allocate for `n` devices of
	 * `resource` (all healthy, all its own): env, device nodes, mounts.
	 * Returns 0 or -errno (the whole call then fails). */
	int (*allocate)(void *state, const char *resource, const struct hdd_device_view *const *devs,
			size_t n, struct hdd_alloc *alloc);

	/* --- since 2.1 --- */

	/* Appends an object for each thing the module holds for guests (the pci
	 * module: its claims) to the array `out`: claims.list is the union.
	 * Groups held through vfio_group_bind by a module without this hook are
	 * listed with the engine's view. Returns 0 or -errno. */
	int (*list_held)(void *state, json_t *out);

	/* Every event the core or another module emits (not the module's own:
	 * "device.add", "claim.done", "sriov.configured", ...), on the loop
	 * turn after it was emitted, from the event loop's start on. `params`
	 * is the event's object as events.subscribe streams have it ("type",
	 * "seq", "time" included); it is the core's, valid for the call only.
	 * An event the module emits from here comes on a later turn. */
	void (*event)(void *state, const char *type, const json_t *params);
};

/* The first fields of a descriptor, for a module that fills the rest. */
#define HDD_MODULE_HEADER \
	.abi_major = HDD_MODULE_ABI_MAJOR, .abi_minor = HDD_MODULE_ABI_MINOR, \
	.size = sizeof(struct hdd_module)

#ifdef __cplusplus
}
#endif

#endif /* HOSTDEVD_MODULE_H */
