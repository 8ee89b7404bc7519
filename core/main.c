/* SPDX-License-Identifier: MIT */
/* hostdevd: options, start-up order, readiness, shutdown. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "metrics.h"
#include "worker.h"

#ifndef MODULEDIR
#define MODULEDIR "/usr/lib/hostdevd/modules"
#endif

static void
usage(FILE *out)
{
	fprintf(out,
		"Usage: hostdevd [OPTION]...\n"
		"Hand a node's PCI and USB devices to VMs and containers through the kubelet.\n"
		"\n"
		"  --foreground          stay in the foreground, log to stderr\n"
		"  --config FILE         JSON configuration [/etc/hostdevd/hostdevd.conf]\n"
		"  --sysfs-root DIR      sysfs to read [/sys]\n"
		"  --dev-root DIR        device nodes [/dev]\n"
		"  --kubelet-dir DIR     kubelet device-plugin directory [/var/lib/kubelet/device-plugins]\n"
		"  --control-socket PATH JSON-RPC control socket [/run/hostdevd/hostdevd.sock]\n"
		"  --state-dir DIR       persistent state [/var/lib/hostdevd]\n"
		"  --module-dir DIR      device-class modules [%s]\n"
		"  --node-name NAME      node name [the host name]\n"
		"  --log-level LEVEL     error, warn, info or debug [info]\n"
		"  --ready-fd FD         write READY\\n to FD once serving\n"
		"  --metrics-address HOST:PORT  serve /metrics, /healthz, /readyz over HTTP [off]\n"
		"  --proc-root DIR       the host's /proc (mount table, swaps, routes, open files) [/proc]\n"
		"  --pci-ids FILE        pci.ids database [%s]\n"
		"  --usb-ids FILE        usb.ids database [%s]\n"
		"  --version             print the version and exit\n"
		"  --help                print this help and exit\n",
		MODULEDIR, PCI_IDS_PATH, USB_IDS_PATH);
}

enum {
	OPT_FOREGROUND = 256, OPT_CONFIG, OPT_SYSFS_ROOT, OPT_DEV_ROOT, OPT_KUBELET_DIR,
	OPT_CONTROL_SOCKET, OPT_STATE_DIR, OPT_MODULE_DIR, OPT_NODE_NAME, OPT_LOG_LEVEL,
	OPT_READY_FD, OPT_PCI_IDS, OPT_USB_IDS, OPT_VERSION, OPT_HELP, OPT_METRICS_ADDRESS,
	OPT_PROC_ROOT, OPT_WORKER_FD, OPT_WORKER_SYSFS_FD,
};

static const struct option long_options[] = {
	{ "foreground", no_argument, NULL, OPT_FOREGROUND },
	{ "config", required_argument, NULL, OPT_CONFIG },
	{ "sysfs-root", required_argument, NULL, OPT_SYSFS_ROOT },
	{ "dev-root", required_argument, NULL, OPT_DEV_ROOT },
	{ "kubelet-dir", required_argument, NULL, OPT_KUBELET_DIR },
	{ "control-socket", required_argument, NULL, OPT_CONTROL_SOCKET },
	{ "state-dir", required_argument, NULL, OPT_STATE_DIR },
	{ "module-dir", required_argument, NULL, OPT_MODULE_DIR },
	{ "node-name", required_argument, NULL, OPT_NODE_NAME },
	{ "log-level", required_argument, NULL, OPT_LOG_LEVEL },
	{ "ready-fd", required_argument, NULL, OPT_READY_FD },
	{ "pci-ids", required_argument, NULL, OPT_PCI_IDS },
	{ "usb-ids", required_argument, NULL, OPT_USB_IDS },
	{ "metrics-address", required_argument, NULL, OPT_METRICS_ADDRESS },
	{ "proc-root", required_argument, NULL, OPT_PROC_ROOT },
	{ "version", no_argument, NULL, OPT_VERSION },
	/* Hidden: the worker process, started by the daemon itself. */
	{ "worker-fd", required_argument, NULL, OPT_WORKER_FD },
	{ "worker-sysfs-fd", required_argument, NULL, OPT_WORKER_SYSFS_FD },
	{ "help", no_argument, NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 },
};

static int parse_fd(const char *s);

/* hostdevd --worker-fd N --worker-sysfs-fd M: the worker process, which the
 * daemon starts by executing its own binary (see worker.h). */
static int
worker_mode(int sock, int sysfs_fd, const char *dev_root)
{
	struct stat st_sock, st_sys;

	if (sysfs_fd < 0 || fstat(sock, &st_sock) < 0 || !S_ISSOCK(st_sock.st_mode) ||
	    fstat(sysfs_fd, &st_sys) < 0 || !S_ISDIR(st_sys.st_mode)) {
		fprintf(stderr, "hostdevd: --worker-fd is for hostdevd's own worker process\n");
		return 2;
	}
	worker_main(sock, sysfs_fd, dev_root);
}

static int
parse_fd(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || end == s || v < 0 || v > 65535)
		return -1;
	return (int)v;
}

struct cmdline {
	int worker_fd, worker_sysfs_fd;	/* --worker-fd: this is the worker process */
	bool config_given;
};

/* Parses the command line into `opts`. Returns -1 to go on, else the exit
 * status (--help, --version, a bad argument). */
static int
parse_args(int argc, char **argv, struct options *opts, struct cmdline *cl)
{
	int c;

	while ((c = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
		switch (c) {
		case OPT_FOREGROUND: opts->foreground = true; break;
		case OPT_CONFIG: opts->config_file = optarg; cl->config_given = true; break;
		case OPT_SYSFS_ROOT: opts->sysfs_root = optarg; break;
		case OPT_DEV_ROOT: opts->dev_root = optarg; break;
		case OPT_KUBELET_DIR: opts->kubelet_dir = optarg; break;
		case OPT_CONTROL_SOCKET: opts->control_socket = optarg; break;
		case OPT_STATE_DIR: opts->state_dir = optarg; break;
		case OPT_MODULE_DIR: opts->module_dir = optarg; break;
		case OPT_NODE_NAME: opts->node_name = optarg; break;
		case OPT_PCI_IDS: opts->pci_ids = optarg; break;
		case OPT_USB_IDS: opts->usb_ids = optarg; break;
		case OPT_METRICS_ADDRESS: opts->metrics_address = optarg; break;
		case OPT_PROC_ROOT: opts->proc_root = optarg; break;
		case OPT_LOG_LEVEL:
			opts->log_level = log_level_from_string(optarg);
			if (opts->log_level < 0) {
				fprintf(stderr, "hostdevd: --log-level: expected error, warn, info or debug\n");
				return 2;
			}
			break;
		case OPT_READY_FD:
			opts->ready_fd = parse_fd(optarg);
			if (opts->ready_fd < 0) {
				fprintf(stderr, "hostdevd: --ready-fd: expected a file descriptor number\n");
				return 2;
			}
			break;
		case OPT_WORKER_FD:
		case OPT_WORKER_SYSFS_FD:
			if (parse_fd(optarg) < 0) {
				fprintf(stderr, "hostdevd: --%s: expected a file descriptor number\n",
					c == OPT_WORKER_FD ? "worker-fd" : "worker-sysfs-fd");
				return 2;
			}
			*(c == OPT_WORKER_FD ? &cl->worker_fd : &cl->worker_sysfs_fd) = parse_fd(optarg);
			break;
		case OPT_VERSION:
			printf("hostdevd %s (module ABI %u.%u)\n", PACKAGE_VERSION, HDD_MODULE_ABI_MAJOR,
			       HDD_MODULE_ABI_MINOR);
			return 0;
		case OPT_HELP:
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "hostdevd: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		return 2;
	}

	return -1;
}

int
main(int argc, char **argv)
{
	struct options opts = {
		.config_file = "/etc/hostdevd/hostdevd.conf",
		.sysfs_root = "/sys",
		.dev_root = "/dev",
		.kubelet_dir = "/var/lib/kubelet/device-plugins",
		.control_socket = "/run/hostdevd/hostdevd.sock",
		.state_dir = "/var/lib/hostdevd",
		.module_dir = MODULEDIR,
		.log_level = -1,
		.ready_fd = -1,
	};
	struct cmdline cl = { .worker_fd = -1, .worker_sysfs_fd = -1 };
	int rc = parse_args(argc, argv, &opts, &cl);

	if (rc >= 0)
		return rc;
	if (cl.worker_fd >= 0)
		return worker_mode(cl.worker_fd, cl.worker_sysfs_fd, opts.dev_root);

	/* Without --foreground we still do not fork: systemd (Type=notify) and
	 * the DaemonSet both supervise a foreground process; only the log goes
	 * to syslog instead of stderr. */
	log_init(opts.log_level >= 0 ? (enum hdd_log_level)opts.log_level : HDD_LOG_INFO,
		 !opts.foreground);
	/* A typo in --config must not silently mean the defaults. */
	if (access(opts.config_file, F_OK) < 0 && errno == ENOENT) {
		if (cl.config_given) {
			log_errx("daemon", "--config %s: no such file", opts.config_file);
			return EXIT_FAILURE;
		}
		log_info("daemon", "no configuration at %s; using the defaults", opts.config_file);
	}

	if (opts.metrics_address) {
		char host[256];
		uint16_t port;

		if (metrics_parse_address(opts.metrics_address, host, sizeof(host), &port) < 0) {
			fprintf(stderr, "hostdevd: --metrics-address: expected HOST:PORT, [V6]:PORT or :PORT\n");
			return 2;
		}
	}
	return daemon_run(&opts);
}
