/* SPDX-License-Identifier: MIT */
/* The daemon's options and its run: what main.c sees of it (the state is
 * daemon.c's own, daemon-private.h). */
#ifndef HOSTDEVD_DAEMON_H
#define HOSTDEVD_DAEMON_H

#include <stdbool.h>

struct options {
	bool foreground;
	const char *config_file;
	const char *sysfs_root;
	const char *dev_root;
	const char *kubelet_dir;
	const char *control_socket;
	const char *state_dir;
	const char *module_dir;
	const char *node_name;
	const char *pci_ids;
	const char *usb_ids;
	int log_level;			/* -1: from the config, else info */
	int ready_fd;			/* -1: none */
	const char *metrics_address;	/* NULL: no HTTP listener */
	const char *proc_root;		/* NULL: /proc */
};

/* The daemon proper: start-up, the event loop, the orderly stop. Returns
 * the exit status. */
int daemon_run(const struct options *opts);

#endif
