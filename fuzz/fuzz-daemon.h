/* SPDX-License-Identifier: MIT */
/* Shared by the fuzz harnesses that need a daemon: a small simulated host in
 * the scratch directory (fuzz-tree.h), the daemon's registries over it, and
 * (for targets linked with -Wl,--wrap=worker_submit,--wrap=loop_call_later)
 * a worker and timers that run in-process: each worker write lands in the
 * tree and a few kernel reactions are played (unbind, bind, drivers_probe
 * with driver_override), timers fire at once. So claims and releases run to
 * their end inside one input. */
#ifndef HOSTDEVD_FUZZ_DAEMON_H
#define HOSTDEVD_FUZZ_DAEMON_H

#include <stdbool.h>

#include "claim.h"
#include "daemon-private.h"
#include "fuzz-tree.h"
#include "log.h"
#include "state.h"
#include "sysfs.h"
#include "worker.h"

static struct daemon fuzz_d;
static char fuzz_state_dir[128];
static char fuzz_dev_dir[128];
static int fuzz_state_fd = -1;

/* One PCI function of the simulated host. */
static void
fuzz_host_pci(const char *parent, const char *bdf, int vendor, int device, int cls,
	      const char *driver, int group)
{
	char dir[256], rel[320], target[320];
	int depth = 1;

	snprintf(dir, sizeof(dir), "%s/%s", parent, bdf);
	for (const char *p = dir; *p; p++)
		depth += *p == '/';
	snprintf(rel, sizeof(rel), "%s/vendor", dir);
	fuzz_put(rel, "0x%04x\n", vendor);
	snprintf(rel, sizeof(rel), "%s/device", dir);
	fuzz_put(rel, "0x%04x\n", device);
	snprintf(rel, sizeof(rel), "%s/class", dir);
	fuzz_put(rel, "0x%06x\n", cls);
	snprintf(rel, sizeof(rel), "%s/revision", dir);
	fuzz_put(rel, "0xa1\n");
	snprintf(rel, sizeof(rel), "%s/numa_node", dir);
	fuzz_put(rel, "0\n");
	snprintf(rel, sizeof(rel), "%s/driver_override", dir);
	fuzz_put(rel, "(null)\n");
	snprintf(rel, sizeof(rel), "bus/pci/devices/%s", bdf);
	snprintf(target, sizeof(target), "../../../%s", dir);
	fuzz_link(rel, target);
	if (driver) {
		char up[128] = "";

		for (int i = 0; i < depth; i++)
			strcat(up, "../");
		snprintf(rel, sizeof(rel), "%s/driver", dir);
		snprintf(target, sizeof(target), "%sbus/pci/drivers/%s", up, driver);
		fuzz_link(rel, target);
		snprintf(rel, sizeof(rel), "bus/pci/drivers/%s/%s", driver, bdf);
		snprintf(target, sizeof(target), "../../../../%s", dir);
		fuzz_link(rel, target);
	}
	if (group >= 0) {
		char up[128] = "";

		for (int i = 0; i < depth; i++)
			strcat(up, "../");
		snprintf(rel, sizeof(rel), "%s/iommu_group", dir);
		snprintf(target, sizeof(target), "%skernel/iommu_groups/%d", up, group);
		fuzz_link(rel, target);
		snprintf(rel, sizeof(rel), "kernel/iommu_groups/%d/devices/%s", group, bdf);
		snprintf(target, sizeof(target), "../../../../%s", dir);
		fuzz_link(rel, target);
	}
}

static void
fuzz_host_driver(const char *name)
{
	static const char *const files[] = { "bind", "unbind", "new_id", "remove_id" };
	char rel[128];

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(rel, sizeof(rel), "bus/pci/drivers/%s/%s", name, files[i]);
		fuzz_put(rel, "%s", "");
	}
	snprintf(rel, sizeof(rel), "module/%s", name);
	fuzz_mkdir(rel);
}

/* /dev/vfio/<group>, which the kernel makes while a member is on vfio-pci. */
static void
fuzz_vfio_node(int group, bool present)
{
	char path[256];
	int fd;

	snprintf(path, sizeof(path), "%s/vfio/%d", fuzz_dev_dir, group);
	if (!present) {
		unlink(path);
		return;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0)
		close(fd);
}

/* The group of a PCI function of the tree, or -1. */
static int
fuzz_group_of(const char *addr)
{
	char rel[128], target[256];
	ssize_t n;

	snprintf(rel, sizeof(rel), "bus/pci/devices/%s/iommu_group", addr);
	n = readlinkat(fuzz_root_fd, rel, target, sizeof(target) - 1);
	if (n <= 0)
		return -1;
	target[n] = '\0';
	return strrchr(target, '/') ? atoi(strrchr(target, '/') + 1) : -1;
}

/* The host: a GPU and its audio function behind a root port (group 12), a
 * NIC already on vfio-pci (13), an SR-IOV PF (14), a SATA controller with
 * no IOMMU group, a boot VGA device (16), a USB device. */
static void
fuzz_host(void)
{
	static const char *const drivers[] = { "nvidia", "snd_hda_intel", "vfio-pci", "igb",
					       "ahci", "i915", "pcieport" };

	char path[256];

	/* /dev as well: only group 13 has a device on vfio-pci. */
	snprintf(path, sizeof(path), "%s/vfio", fuzz_dev_dir);
	if (fuzz_dev_dir[0]) {
		DIR *dir;
		struct dirent *de;

		mkdir(path, 0755);
		dir = opendir(path);
		while (dir && (de = readdir(dir)) != NULL)
			if (de->d_name[0] != '.')
				fuzz_vfio_node(atoi(de->d_name), false);
		if (dir)
			closedir(dir);
		fuzz_vfio_node(13, true);
	}
	fuzz_sysfs_skeleton();
	for (size_t i = 0; i < sizeof(drivers) / sizeof(drivers[0]); i++)
		fuzz_host_driver(drivers[i]);
	fuzz_put("bus/pci/drivers_probe", "%s", "");
	fuzz_host_pci("devices/pci0000:00", "0000:00:01.0", 0x8086, 0x1901, 0x060400, "pcieport", 1);
	fuzz_host_pci("devices/pci0000:00/0000:00:01.0", "0000:01:00.0", 0x10de, 0x20f1, 0x030200,
		      "nvidia", 12);
	fuzz_host_pci("devices/pci0000:00/0000:00:01.0", "0000:01:00.1", 0x10de, 0x1aef, 0x040300,
		      "snd_hda_intel", 12);
	fuzz_host_pci("devices/pci0000:00", "0000:00:02.0", 0x8086, 0x1521, 0x020000, "vfio-pci", 13);
	fuzz_host_pci("devices/pci0000:00", "0000:00:03.0", 0x8086, 0x1521, 0x020000, "igb", 14);
	fuzz_put("devices/pci0000:00/0000:00:03.0/sriov_totalvfs", "2\n");
	fuzz_put("devices/pci0000:00/0000:00:03.0/sriov_numvfs", "0\n");
	fuzz_host_pci("devices/pci0000:00", "0000:00:1f.2", 0x8086, 0xa102, 0x010601, "ahci", -1);
	fuzz_host_pci("devices/pci0000:00", "0000:00:04.0", 0x8086, 0x3e92, 0x030000, "i915", 16);
	fuzz_put("devices/pci0000:00/0000:00:04.0/boot_vga", "1\n");
	fuzz_mkdir("devices/pci0000:00/0000:00:14.0/usb1/1-1");
	fuzz_put("devices/pci0000:00/0000:00:14.0/usb1/1-1/idVendor", "046d\n");
	fuzz_put("devices/pci0000:00/0000:00:14.0/usb1/1-1/idProduct", "c52b\n");
	fuzz_put("devices/pci0000:00/0000:00:14.0/usb1/1-1/busnum", "1\n");
	fuzz_put("devices/pci0000:00/0000:00:14.0/usb1/1-1/devnum", "2\n");
	fuzz_put("devices/pci0000:00/0000:00:14.0/usb1/1-1/bDeviceClass", "00\n");
	fuzz_link("bus/usb/devices/1-1", "../../../devices/pci0000:00/0000:00:14.0/usb1/1-1");
}

static int
fuzz_rm_all_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	remove(path);
	return 0;
}

static void
fuzz_daemon_atexit(void)
{
	nftw(fuzz_state_dir, fuzz_rm_all_cb, 16, FTW_DEPTH | FTW_PHYS);
	nftw(fuzz_dev_dir, fuzz_rm_all_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* The daemon's registries over the scratch tree (no sockets, no modules);
 * the scratch directories go at exit. */
static void
fuzz_daemon_init(void)
{
	struct daemon *d = &fuzz_d;

	log_init(HDD_LOG_ERR, 0);
	log_set_level(HDD_LOG_ERR);
	fuzz_tree_init();
	snprintf(fuzz_state_dir, sizeof(fuzz_state_dir), "%s.state", fuzz_root);
	if (mkdir(fuzz_state_dir, 0700) < 0 ||
	    (fuzz_state_fd = open(fuzz_state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		abort();
	snprintf(fuzz_dev_dir, sizeof(fuzz_dev_dir), "%s.dev", fuzz_root);
	if (mkdir(fuzz_dev_dir, 0700) < 0)
		abort();
	d->opts.sysfs_root = fuzz_root;
	d->opts.dev_root = fuzz_dev_dir;
	d->opts.kubelet_dir = d->opts.control_socket = "/nonexistent";
	d->opts.state_dir = fuzz_state_dir;
	d->opts.config_file = d->opts.module_dir = "/nonexistent";
	d->state_dirfd = fuzz_state_fd;
	snprintf(d->node_name, sizeof(d->node_name), "fuzz");
	d->cfg = config_defaults();
	if (d->cfg == NULL || fsroot_new(fuzz_root, &d->sys) < 0 ||
	    fsroot_new(fuzz_dev_dir, &d->dev) < 0 ||
	    names_new(NULL, NULL, &d->names) < 0)
		abort();
	d->mods = calloc(1, sizeof(*d->mods));
	atexit(fuzz_daemon_atexit);
}

/* A fresh inventory of the tree as it is now. */
static void
fuzz_daemon_scan(void)
{
	if (inventory_new(fuzz_d.sys, fuzz_d.names, NULL, NULL, &fuzz_d.inv) < 0)
		abort();
	inventory_resync(fuzz_d.inv, "fuzz");
}

/* The IOMMU-group engine over the simulated host, as daemon.c makes it;
 * its worker calls and timers go to the harness below. */
static void
fuzz_daemon_claims(void)
{
	const struct claims_env env = {
		.sys = fuzz_d.sys, .dev = fuzz_d.dev, .inv = fuzz_d.inv, .bus = fuzz_d.bus,
		.state_dir = fuzz_d.opts.state_dir, .dev_root = fuzz_d.opts.dev_root,
	};

	if (claims_new(&env, fuzz_d.cfg, fuzz_state_fd, &fuzz_d.claims) < 0)
		abort();
	claims_attach(fuzz_d.claims, fuzz_d.loop, fuzz_d.worker);
}

static void
fuzz_daemon_unscan(void)
{
	inventory_free(fuzz_d.inv);
	fuzz_d.inv = NULL;
}

/* --- the in-process worker and timers -------------------------------------- */

struct fuzz_op {
	json_t *req;
	worker_cb cb;
	void *arg;
	void (*fn)(void *arg);	/* a timer instead */
	struct fuzz_op *next;
};

static struct fuzz_op *fuzz_ops, *fuzz_ops_tail;
static uint64_t fuzz_op_id;

int __wrap_worker_submit(struct worker *w, json_t *req, int timeout_ms, worker_cb cb, void *arg);
void __wrap_worker_forget(struct worker *w, void *arg);
int __wrap_loop_call_later(struct loop *l, int ms, void (*fn)(void *arg), void *arg);

static void
fuzz_queue(struct fuzz_op *op)
{
	if (fuzz_ops_tail)
		fuzz_ops_tail->next = op;
	else
		fuzz_ops = op;
	fuzz_ops_tail = op;
}

int
__wrap_worker_submit(struct worker *w, json_t *req, int timeout_ms, worker_cb cb, void *arg)
{
	struct fuzz_op *op = calloc(1, sizeof(*op));

	if (op == NULL || req == NULL) {
		free(op);
		json_decref(req);
		return -ENOMEM;
	}
	json_object_set_new(req, "id", json_integer((json_int_t)++fuzz_op_id));
	op->req = req;
	op->cb = cb;
	op->arg = arg;
	fuzz_queue(op);
	return 0;
}

void
__wrap_worker_forget(struct worker *w, void *arg)
{
	for (struct fuzz_op *op = fuzz_ops; op; op = op->next)
		if (op->arg == arg && op->fn == NULL)
			op->cb = NULL;
}

int
__wrap_loop_call_later(struct loop *l, int ms, void (*fn)(void *arg), void *arg)
{
	struct fuzz_op *op = calloc(1, sizeof(*op));

	if (op == NULL)
		return -ENOMEM;
	op->fn = fn;
	op->arg = arg;
	fuzz_queue(op);
	return 0;
}

/* Links bus/pci/devices/<addr>/driver to bus/pci/drivers/<drv>, the way
 * the kernel does when a driver binds. */
static void
fuzz_kernel_bind(const char *addr, const char *drv)
{
	char rel[128], target[512], up[256] = "", dirrel[128];
	int depth = 0;
	ssize_t n;

	snprintf(dirrel, sizeof(dirrel), "bus/pci/drivers/%s", drv);
	if (drv[0] == '\0' || strchr(drv, '/') || faccessat(fuzz_root_fd, dirrel, F_OK, 0) < 0)
		return;
	snprintf(rel, sizeof(rel), "bus/pci/devices/%s", addr);
	n = readlinkat(fuzz_root_fd, rel, target, sizeof(target) - 1);
	if (n <= 0)
		return;
	target[n] = '\0';
	/* "../../../devices/...": the device's depth below the root. */
	for (const char *p = target; *p; p++)
		depth += *p == '/';
	depth -= 3 - 1;
	for (int i = 0; i < depth && strlen(up) + 4 < sizeof(up); i++)
		strcat(up, "../");
	snprintf(rel, sizeof(rel), "bus/pci/devices/%s/driver", addr);
	snprintf(target, sizeof(target), "%sbus/pci/drivers/%s", up, drv);
	unlinkat(fuzz_root_fd, rel, 0);
	if (symlinkat(target, fuzz_root_fd, rel) < 0)
		return;
	if (strcmp(drv, "vfio-pci") == 0 && fuzz_group_of(addr) >= 0)
		fuzz_vfio_node(fuzz_group_of(addr), true);
}

/* What the kernel does after a write the worker made. */
static void
fuzz_kernel_react(const char *path, const char *value)
{
	char addr[32], rel[128], buf[64];
	const char *drv;
	size_t n = strcspn(value, "\n");
	int fd;

	if (n >= sizeof(addr))
		return;
	memcpy(addr, value, n);
	addr[n] = '\0';
	if (!pci_address_valid(addr))
		return;
	if (strncmp(path, "bus/pci/drivers/", 16) == 0 && (drv = path + 16) &&
	    strchr(drv, '/') && strcmp(strchr(drv, '/'), "/unbind") == 0) {
		snprintf(rel, sizeof(rel), "bus/pci/devices/%s/driver", addr);
		unlinkat(fuzz_root_fd, rel, 0);
		if (strncmp(drv, "vfio-pci/", 9) == 0 && fuzz_group_of(addr) >= 0)
			fuzz_vfio_node(fuzz_group_of(addr), false);
	} else if (strncmp(path, "bus/pci/drivers/", 16) == 0 && strchr(path + 16, '/') &&
		   strcmp(strchr(path + 16, '/'), "/bind") == 0) {
		snprintf(buf, sizeof(buf), "%.*s", (int)(strchr(path + 16, '/') - (path + 16)),
			 path + 16);
		fuzz_kernel_bind(addr, buf);
	} else if (strcmp(path, "bus/pci/drivers_probe") == 0) {
		snprintf(rel, sizeof(rel), "bus/pci/devices/%s/driver_override", addr);
		fd = openat(fuzz_root_fd, rel, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return;
		n = (size_t)read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if ((ssize_t)n <= 0)
			return;
		buf[n] = '\0';
		buf[strcspn(buf, "\n")] = '\0';
		if (buf[0] && strcmp(buf, "(null)") != 0)
			fuzz_kernel_bind(addr, buf);
	}
}

static json_t *
fuzz_worker_answer(const json_t *req)
{
	const char *op = json_string_value(json_object_get(req, "op"));

	if (op && strcmp(op, "write") == 0) {
		json_t *reply = worker_handle(fuzz_root_fd, fuzz_dev_dir, req);

		if (json_integer_value(json_object_get(reply, "result")) == 0)
			fuzz_kernel_react(json_string_value(json_object_get(req, "path")),
					  json_string_value(json_object_get(req, "value")));
		return reply;
	}
	/* modprobe, nvidia-smi and /proc scans are not run: nobody holds
	 * anything, every program succeeds. */
	return json_pack("{s:O, s:i, s:[]}", "id", json_object_get(req, "id"), "result", 0,
			 "holders");
}

/* Runs queued worker operations and timers until none is left. A job that
 * never ends is a finding (it would retry forever in the daemon too). */
static void
fuzz_drain(void)
{
	for (long steps = 0; fuzz_ops; steps++) {
		struct fuzz_op *op = fuzz_ops;

		if (steps > 100000) {
			fprintf(stderr, "fuzz: claim jobs still running after %ld steps\n", steps);
			abort();
		}
		fuzz_ops = op->next;
		if (fuzz_ops == NULL)
			fuzz_ops_tail = NULL;
		if (op->fn) {
			op->fn(op->arg);
		} else {
			json_t *reply = fuzz_worker_answer(op->req);

			if (op->cb)
				op->cb(op->arg, (int)json_integer_value(json_object_get(reply, "result")),
				       reply);
			json_decref(reply);
			json_decref(op->req);
		}
		free(op);
	}
}

#endif
