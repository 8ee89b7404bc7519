/* SPDX-License-Identifier: MIT */
/* hostdevctl: the friendly command line over hostdevd's JSON-RPC control socket. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Exit codes: say what went wrong. */
enum {
	EXIT_OK = 0,
	EXIT_ERROR = 1,		/* the daemon answered with an error */
	EXIT_USAGE = 2,		/* bad arguments */
	EXIT_NO_DAEMON = 3,	/* cannot connect, or the daemon hung up */
	EXIT_DENIED = 4,	/* permission denied */
	EXIT_NOT_FOUND = 5,	/* no such device */
	EXIT_REFUSED = 6,	/* refused: protected, in use, no IOMMU */
	EXIT_BUSY = 7,		/* another operation on it is in progress */
	EXIT_FAIL_CLOSED = 8,	/* status: the daemon runs but fails closed */
};

#define MAX_RESPONSE (512u * 1024 * 1024)
/* Devices asked for in one devices.list page. */
#define DEVICES_PAGE 128

static const char *socket_path = "/run/hostdevd/hostdevd.sock";
static int json_output;

static void
usage(FILE *out)
{
	fprintf(out,
		"Usage: hostdevctl [--socket PATH] [--json] COMMAND [ARGS]\n"
		"       hostdevctl --version | --help\n"
		"\n"
		"Commands:\n"
		"  status                      daemon state, IOMMU state, counters\n"
		"  devices [FILTERS]           list devices; filters:\n"
		"      --class pci|usb --vendor VID --device DID --driver NAME|none\n"
		"      --iommu-group N --module NAME|none\n"
		"  device ADDRESS              one device in full (PCI address or USB port)\n"
		"  modules                     loaded device-class modules\n"
		"  resources                   kubelet resources: state, devices, Allocate calls\n"
		"  rescan                      re-read sysfs now (root or the control group)\n"
		"  events                      follow hotplug and state events until interrupted\n"
		"  claim ADDRESS [--resource NAME]  bind ADDRESS's IOMMU group to vfio-pci and offer it\n"
		"  release ADDRESS [--force]   give the group back to its drivers\n"
		"  claims                      claims, their members, drivers and state\n"
		"  MODULE VERB [KEY=VALUE...]  a module's method MODULE.VERB (see `modules`),\n"
		"                              e.g. sriov list, vgpu create parent=mtty type=mtty-2;\n"
		"                              a VALUE that is JSON (2, true, [..]) goes as JSON\n"
		"  call METHOD [KEY=VALUE...|JSON]  any control method\n"
		"\n"
		"Exit status: 0 ok, 1 daemon error, 2 bad arguments, 3 no daemon,\n"
		"4 permission denied, 5 no such device, 6 refused, 7 busy,\n"
		"8 (status) the daemon fails closed: its state file cannot be trusted.\n");
}

/* Returns the connected socket, or -(the exit code): a socket we may not
 * open (mode 0660, not in its group) is "permission denied", not "no daemon". */
static int
connect_daemon(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd, err;

	if (strlen(socket_path) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "hostdevctl: socket path too long: %s\n", socket_path);
		return -EXIT_USAGE;
	}
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", socket_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		err = errno;
		fprintf(stderr, "hostdevctl: cannot connect to hostdevd at %s: %s\n", socket_path,
			strerror(err));
		if (fd >= 0)
			close(fd);
		if (err == EACCES || err == EPERM) {
			fprintf(stderr, "hostdevctl: permission denied: root or the socket's group "
				"(control.group) may connect\n");
			return -EXIT_DENIED;
		}
		return -EXIT_NO_DAEMON;
	}
	return fd;
}

struct reader {
	int fd;
	char *buf;
	size_t len, cap;
};

/* Returns one line (without '\n') as a malloc'd string, or NULL at EOF. */
static char *
read_line(struct reader *r)
{
	for (;;) {
		char *nl = r->len ? memchr(r->buf, '\n', r->len) : NULL;
		ssize_t n;

		if (nl) {
			size_t l = (size_t)(nl - r->buf);
			char *line = malloc(l + 1);

			if (line == NULL)
				return NULL;
			memcpy(line, r->buf, l);
			line[l] = '\0';
			memmove(r->buf, nl + 1, r->len - l - 1);
			r->len -= l + 1;
			return line;
		}
		if (r->len + 65536 > r->cap) {
			size_t cap = r->cap ? r->cap * 2 : 131072;
			char *b;

			if (cap > MAX_RESPONSE)
				return NULL;
			b = realloc(r->buf, cap);
			if (b == NULL)
				return NULL;
			r->buf = b;
			r->cap = cap;
		}
		do {
			n = read(r->fd, r->buf + r->len, r->cap - r->len);
		} while (n < 0 && errno == EINTR);
		if (n <= 0)
			return NULL;
		r->len += (size_t)n;
	}
}

static int
send_request(int fd, const char *method, json_t *params)
{
	json_t *req = json_pack("{s:s, s:i, s:s}", "jsonrpc", "2.0", "id", 1, "method", method);
	char *text;
	size_t len, off = 0;

	if (params)
		json_object_set(req, "params", params);
	text = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (text == NULL)
		return -1;
	len = strlen(text);
	text[len] = '\n';
	while (off < len + 1) {
		ssize_t n = write(fd, text + off, len + 1 - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			free(text);
			return -1;
		}
		off += (size_t)n;
	}
	free(text);
	return 0;
}

static int
error_exit_code(json_t *err)
{
	json_int_t code = json_integer_value(json_object_get(err, "code"));

	fprintf(stderr, "hostdevctl: %s\n", json_string_value(json_object_get(err, "message")) ?: "error");
	if (code == -32001)
		return EXIT_DENIED;
	if (code == -32004)
		return EXIT_NOT_FOUND;
	if (code == -32003)
		return EXIT_REFUSED;
	if (code == -32005)
		return EXIT_BUSY;
	/* -32006 (the answer would be too large) and the rest: a daemon error. */
	if (code == -32602)
		return EXIT_USAGE;
	return EXIT_ERROR;
}

/* One call: returns the exit code; *ret_result gets the result on success. */
static int
call(const char *method, json_t *params, json_t **ret_result)
{
	struct reader r = { 0 };
	json_error_t jerr;
	json_t *resp, *err;
	char *line;
	int fd, rc;

	fd = connect_daemon();
	if (fd < 0)
		return -fd;
	r.fd = fd;
	if (send_request(fd, method, params) < 0) {
		fprintf(stderr, "hostdevctl: cannot send to hostdevd: %s\n", strerror(errno));
		close(fd);
		return EXIT_NO_DAEMON;
	}
	line = read_line(&r);
	close(fd);
	free(r.buf);
	if (line == NULL) {
		fprintf(stderr, "hostdevctl: hostdevd closed the connection without answering\n");
		return EXIT_NO_DAEMON;
	}
	resp = json_loads(line, 0, &jerr);
	free(line);
	if (resp == NULL) {
		fprintf(stderr, "hostdevctl: unreadable answer: %s\n", jerr.text);
		return EXIT_ERROR;
	}
	err = json_object_get(resp, "error");
	if (err) {
		rc = error_exit_code(err);
		json_decref(resp);
		return rc;
	}
	*ret_result = json_incref(json_object_get(resp, "result"));
	json_decref(resp);
	return *ret_result ? EXIT_OK : EXIT_ERROR;
}

/* devices.list a page at a time (the daemon bounds one answer), following
 * next_cursor; *ret_list gets every page's devices in one array. */
static int
list_devices(json_t *filters, json_t **ret_list)
{
	json_t *all = json_array(), *params = json_deep_copy(filters), *cursor = NULL;
	int rc;

	json_object_set_new(params, "limit", json_integer(DEVICES_PAGE));
	do {
		json_t *page = NULL;

		if (cursor)
			json_object_set(params, "cursor", cursor);
		rc = call("devices.list", params, &page);
		json_decref(cursor);
		cursor = NULL;
		if (rc != EXIT_OK)
			break;
		if (!json_is_array(json_object_get(page, "devices"))) {
			fprintf(stderr, "hostdevctl: unreadable devices.list page\n");
			json_decref(page);
			rc = EXIT_ERROR;
			break;
		}
		json_array_extend(all, json_object_get(page, "devices"));
		if (json_is_string(json_object_get(page, "next_cursor")))
			cursor = json_incref(json_object_get(page, "next_cursor"));
		json_decref(page);
	} while (cursor);
	json_decref(params);
	if (rc != EXIT_OK) {
		json_decref(all);
		return rc;
	}
	*ret_list = all;
	return EXIT_OK;
}

static const char *
s_or(json_t *o, const char *key, const char *dflt)
{
	json_t *v = json_object_get(o, key);

	return json_is_string(v) ? json_string_value(v) : dflt;
}

static void
print_json(json_t *v)
{
	char *text = json_dumps(v, JSON_INDENT(2));

	if (text) {
		puts(text);
		free(text);
	}
}

static void
print_cell(const char *text, size_t width, int last)
{
	if (last)
		printf("%s\n", text);
	else
		printf("%-*s  ", (int)width, text);
}

/* Aligned table: rows of `ncols` strings. */
static void
print_table(const char *const *header, size_t ncols, char ***rows, size_t nrows)
{
	size_t width[16] = { 0 };

	for (size_t c = 0; c < ncols; c++)
		width[c] = strlen(header[c]);
	for (size_t r = 0; r < nrows; r++)
		for (size_t c = 0; c < ncols; c++)
			if (strlen(rows[r][c]) > width[c])
				width[c] = strlen(rows[r][c]);
	for (size_t c = 0; c < ncols; c++)
		print_cell(header[c], width[c], c + 1 == ncols);
	for (size_t r = 0; r < nrows; r++)
		for (size_t c = 0; c < ncols; c++)
			print_cell(rows[r][c], width[c], c + 1 == ncols);
}

static char *
xstrdup(const char *s)
{
	char *d = strdup(s ? s : "-");

	if (d == NULL) {
		fprintf(stderr, "hostdevctl: out of memory\n");
		exit(EXIT_ERROR);
	}
	return d;
}

static void
print_devices(json_t *list)
{
	static const char *const pci_hdr[] = { "ADDRESS", "ID", "CLASS", "DRIVER", "GROUP",
					       "NUMA", "MODULE", "NAME" };
	static const char *const usb_hdr[] = { "PORT", "ID", "BUS:DEV", "DRIVER", "CONTROLLER",
					       "MODULE", "NAME" };
	static const char *const mdev_hdr[] = { "MDEV", "TYPE", "GROUP", "DRIVER", "PARENT",
						"MODULE", "NAME" };
	size_t n = json_array_size(list), npci = 0, nusb = 0, nmdev = 0;
	char ***pci = calloc(n + 1, sizeof(char **)), ***usb = calloc(n + 1, sizeof(char **));
	char ***mdev = calloc(n + 1, sizeof(char **));
	size_t i;
	json_t *d;

	json_array_foreach(list, i, d) {
		char buf[128];

		if (strcmp(s_or(d, "class", ""), "mdev") == 0) {
			char **row = calloc(7, sizeof(char *));

			/* mdevs share the USB table's shape: id, type, parent... */
			row[0] = xstrdup(s_or(d, "uuid", "?"));
			row[1] = xstrdup(s_or(d, "type", "-"));
			row[2] = xstrdup(s_or(d, "iommu_group", "-"));
			row[3] = xstrdup(s_or(d, "driver", "-"));
			row[4] = xstrdup(s_or(d, "parent", "-"));
			row[5] = xstrdup(s_or(d, "module", "-"));
			row[6] = xstrdup(s_or(d, "type_name", ""));
			mdev[nmdev++] = row;
			continue;
		}
		if (strcmp(s_or(d, "class", ""), "pci") == 0) {
			char **row = calloc(8, sizeof(char *));
			json_t *numa = json_object_get(d, "numa_node");

			row[0] = xstrdup(s_or(d, "address", "?"));
			snprintf(buf, sizeof(buf), "%s:%s", s_or(d, "vendor_id", "????"),
				 s_or(d, "device_id", "????"));
			row[1] = xstrdup(buf);
			row[2] = xstrdup(s_or(d, "class_id", "-"));
			row[3] = xstrdup(s_or(d, "driver", "-"));
			row[4] = xstrdup(s_or(d, "iommu_group", "-"));
			snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(numa));
			row[5] = xstrdup(json_integer_value(numa) < 0 ? "-" : buf);
			row[6] = xstrdup(s_or(d, "module", "-"));
			snprintf(buf, sizeof(buf), "%s %s", s_or(d, "vendor_name", ""),
				 s_or(d, "device_name", ""));
			row[7] = xstrdup(buf);
			pci[npci++] = row;
		} else {
			char **row = calloc(7, sizeof(char *));

			row[0] = xstrdup(s_or(d, "port", "?"));
			snprintf(buf, sizeof(buf), "%s:%s", s_or(d, "vendor_id", "????"),
				 s_or(d, "product_id", "????"));
			row[1] = xstrdup(buf);
			snprintf(buf, sizeof(buf), "%lld:%lld",
				 (long long)json_integer_value(json_object_get(d, "busnum")),
				 (long long)json_integer_value(json_object_get(d, "devnum")));
			row[2] = xstrdup(buf);
			row[3] = xstrdup(s_or(d, "driver", "-"));
			row[4] = xstrdup(s_or(d, "controller", "-"));
			row[5] = xstrdup(s_or(d, "module", "-"));
			snprintf(buf, sizeof(buf), "%s %s",
				 s_or(d, "vendor_name", s_or(d, "manufacturer", "")),
				 s_or(d, "product_name", s_or(d, "product", "")));
			row[6] = xstrdup(buf);
			usb[nusb++] = row;
		}
	}
	if (npci)
		print_table(pci_hdr, 8, pci, npci);
	if (npci && nusb)
		putchar('\n');
	if (nusb)
		print_table(usb_hdr, 7, usb, nusb);
	if ((npci || nusb) && nmdev)
		putchar('\n');
	if (nmdev)
		print_table(mdev_hdr, 7, mdev, nmdev);
	if (npci + nusb + nmdev == 0)
		printf("no devices\n");
	for (i = 0; i < npci; i++) {
		for (int c = 0; c < 8; c++)
			free(pci[i][c]);
		free(pci[i]);
	}
	for (i = 0; i < nusb; i++) {
		for (int c = 0; c < 7; c++)
			free(usb[i][c]);
		free(usb[i]);
	}
	for (i = 0; i < nmdev; i++) {
		for (int c = 0; c < 7; c++)
			free(mdev[i][c]);
		free(mdev[i]);
	}
	free(pci);
	free(usb);
	free(mdev);
}

/* "key: value" lines for one object, nested objects indented. */
static void
print_object(json_t *o, int indent)
{
	const char *key;
	json_t *v;

	json_object_foreach(o, key, v) {
		if (json_is_object(v)) {
			printf("%*s%s:\n", indent, "", key);
			print_object(v, indent + 2);
			continue;
		}
		char *text = json_is_string(v) ? strdup(json_string_value(v))
					       : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		printf("%*s%-*s %s\n", indent, "", 24 - indent, key, text ? text : "?");
		free(text);
	}
}

static void
print_modules(json_t *list)
{
	static const char *const hdr[] = { "NAME", "ACTIVE", "DEVICES", "DESCRIPTION" };
	size_t n = json_array_size(list), i;
	char ***rows = calloc(n + 1, sizeof(char **));
	json_t *m;

	json_array_foreach(list, i, m) {
		char buf[32];

		rows[i] = calloc(4, sizeof(char *));
		rows[i][0] = xstrdup(s_or(m, "name", s_or(m, "path", "?")));
		rows[i][1] = xstrdup(json_is_true(json_object_get(m, "active")) ? "yes" : "no");
		snprintf(buf, sizeof(buf), "%lld",
			 (long long)json_integer_value(json_object_get(m, "devices")));
		rows[i][2] = xstrdup(buf);
		rows[i][3] = xstrdup(s_or(m, "error", s_or(m, "description", "")));
	}
	print_table(hdr, 4, rows, n);
	for (i = 0; i < n; i++) {
		for (int c = 0; c < 4; c++)
			free(rows[i][c]);
		free(rows[i]);
	}
	free(rows);
}

static void
print_resources(json_t *list)
{
	static const char *const hdr[] = { "RESOURCE", "STATE", "DEVICES", "HEALTHY", "ALLOCATES",
					   "SOCKET", "LAST ERROR" };
	size_t n = json_array_size(list), i, j;
	char ***rows = calloc(n + 1, sizeof(char **));
	json_t *r, *dev;

	json_array_foreach(list, i, r) {
		json_t *devs = json_object_get(r, "devices");
		size_t healthy = 0;
		char buf[32];

		json_array_foreach(devs, j, dev)
			healthy += strcmp(s_or(dev, "health", ""), "Healthy") == 0;
		rows[i] = calloc(7, sizeof(char *));
		rows[i][0] = xstrdup(s_or(r, "name", "?"));
		rows[i][1] = xstrdup(s_or(r, "state", "?"));
		snprintf(buf, sizeof(buf), "%zu", json_array_size(devs));
		rows[i][2] = xstrdup(buf);
		snprintf(buf, sizeof(buf), "%zu", healthy);
		rows[i][3] = xstrdup(buf);
		snprintf(buf, sizeof(buf), "%lld",
			 (long long)json_integer_value(json_object_get(r, "allocate_calls")));
		rows[i][4] = xstrdup(buf);
		rows[i][5] = xstrdup(s_or(r, "socket", "-"));
		rows[i][6] = xstrdup(s_or(r, "last_error", "-"));
	}
	if (n)
		print_table(hdr, 7, rows, n);
	else
		printf("no resources\n");
	for (i = 0; i < n; i++) {
		for (int c = 0; c < 7; c++)
			free(rows[i][c]);
		free(rows[i]);
	}
	free(rows);
}

static void
print_claims(json_t *result)
{
	static const char *const hdr[] = { "ADDRESS", "STATE", "GROUP", "MEMBERS", "RESOURCE",
					   "ALLOCATES", "LAST ERROR" };
	json_t *list = json_object_get(result, "claims"), *cl, *m;
	size_t n = json_array_size(list), i, k;
	char ***rows = calloc(n + 1, sizeof(char **));

	if (json_is_true(json_object_get(result, "fail_closed")))
		printf("FAILING CLOSED: %s\n", s_or(result, "fail_reason", "state unusable"));
	json_array_foreach(list, i, cl) {
		char members[512] = "", buf[64];
		size_t len = 0;
		const char *state = s_or(cl, "state", "?");

		json_array_foreach(json_object_get(cl, "members"), k, m)
			len += (size_t)snprintf(members + len, len < sizeof(members) ? sizeof(members) - len : 0,
						"%s%s(%s<-%s)", k ? " " : "", s_or(m, "address", "?"),
						s_or(m, "driver", "-"), s_or(m, "original_driver", "-"));
		rows[i] = calloc(7, sizeof(char *));
		rows[i][0] = xstrdup(s_or(cl, "address", "?"));
		if (json_is_true(json_object_get(cl, "absent")))
			state = "absent";
		rows[i][1] = xstrdup(state);
		snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(json_object_get(cl, "iommu_group")));
		rows[i][2] = xstrdup(buf);
		rows[i][3] = xstrdup(members);
		rows[i][4] = xstrdup(s_or(cl, "resource_name", s_or(cl, "advertised_as", "-")));
		snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(json_object_get(cl, "allocations")));
		rows[i][5] = xstrdup(buf);
		rows[i][6] = xstrdup(s_or(cl, "last_error", "-"));
	}
	if (n)
		print_table(hdr, 7, rows, n);
	else
		printf("no claims\n");
	for (i = 0; i < n; i++) {
		for (int c = 0; c < 7; c++)
			free(rows[i][c]);
		free(rows[i]);
	}
	free(rows);
}

static int
cmd_events(void)
{
	struct reader r = { 0 };
	char *line;
	int fd;

	fd = connect_daemon();
	if (fd < 0)
		return -fd;
	r.fd = fd;
	if (send_request(fd, "events.subscribe", NULL) < 0) {
		close(fd);
		return EXIT_NO_DAEMON;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((line = read_line(&r)) != NULL) {
		json_t *msg = json_loads(line, 0, NULL), *p;

		if (msg && json_object_get(msg, "error")) {
			int rc = error_exit_code(json_object_get(msg, "error"));
			json_decref(msg);
			free(line);
			close(fd);
			free(r.buf);
			return rc;
		}
		p = msg ? json_object_get(msg, "params") : NULL;
		if (json_output && p) {
			char *text = json_dumps(p, JSON_COMPACT);
			if (text)
				puts(text);
			free(text);
		} else if (p) {
			double t = json_number_value(json_object_get(p, "time"));
			time_t secs = (time_t)t;
			struct tm tm;
			char stamp[32];
			json_t *changed = json_object_get(p, "changed");
			char *ch = changed ? json_dumps(changed, JSON_COMPACT) : NULL;

			localtime_r(&secs, &tm);
			strftime(stamp, sizeof(stamp), "%H:%M:%S", &tm);
			printf("%s  %-16s %-14s %-16s%s%s\n", stamp, s_or(p, "type", "?"),
			       s_or(p, "id", "-"), s_or(p, "source", ""), ch ? " " : "", ch ? ch : "");
			free(ch);
		}
		json_decref(msg);
		free(line);
	}
	fprintf(stderr, "hostdevctl: hostdevd closed the event stream\n");
	close(fd);
	free(r.buf);
	return EXIT_NO_DAEMON;
}

static const struct option opts[] = {
	{ "socket", required_argument, NULL, 's' },
	{ "json", no_argument, NULL, 'j' },
	{ "help", no_argument, NULL, 'h' },
	{ "class", required_argument, NULL, 'c' },
	{ "vendor", required_argument, NULL, 'v' },
	{ "device", required_argument, NULL, 'd' },
	{ "driver", required_argument, NULL, 'D' },
	{ "iommu-group", required_argument, NULL, 'g' },
	{ "module", required_argument, NULL, 'm' },
	{ "resource", required_argument, NULL, 'r' },
	{ "force", no_argument, NULL, 'f' },
	{ "version", no_argument, NULL, 'V' },
	{ NULL, 0, NULL, 0 },
};

/* A module's method: `hostdevctl MODULE VERB [KEY=VALUE...]` calls
 * "MODULE.VERB", `hostdevctl call METHOD [KEY=VALUE...|JSON-OBJECT]` any
 * method. A VALUE that parses as JSON (a number, true, an array) is sent as
 * that, anything else as a string: num_vfs=2 vfs='[{"index":0}]' pf=eth0. */
static int
cmd_method(const char *cmd, int argc, char **argv, json_t **ret_result)
{
	char method[128];
	json_t *params = NULL;
	int i = 0, rc;

	if (strcmp(cmd, "call") == 0) {
		if (argc < 1) {
			fprintf(stderr, "hostdevctl: call needs a METHOD\n");
			return EXIT_USAGE;
		}
		snprintf(method, sizeof(method), "%s", argv[0]);
		i = 1;
		if (argc == 2 && argv[1][0] == '{') {
			json_error_t jerr;

			params = json_loads(argv[1], 0, &jerr);
			if (!json_is_object(params)) {
				fprintf(stderr, "hostdevctl: parameters are not a JSON object: %s\n",
					jerr.text);
				json_decref(params);
				return EXIT_USAGE;
			}
			i = argc;
		}
	} else if (snprintf(method, sizeof(method), "%s.%s", cmd, argv[0]) >= (int)sizeof(method)) {
		fprintf(stderr, "hostdevctl: method name too long\n");
		return EXIT_USAGE;
	} else {
		i = 1;
	}
	for (; i < argc; i++) {
		const char *eq = strchr(argv[i], '=');
		json_t *v;
		char *key;

		if (eq == NULL || eq == argv[i]) {
			fprintf(stderr, "hostdevctl: expected KEY=VALUE, got \"%s\"\n", argv[i]);
			json_decref(params);
			return EXIT_USAGE;
		}
		v = json_loads(eq + 1, JSON_DECODE_ANY, NULL);
		if (v == NULL)
			v = json_string(eq + 1);
		if (params == NULL)
			params = json_object();
		key = strndup(argv[i], (size_t)(eq - argv[i]));
		if (key == NULL || params == NULL || json_object_set_new(params, key, v) < 0) {
			free(key);
			json_decref(params);
			return EXIT_ERROR;
		}
		free(key);
	}
	rc = call(method, params, ret_result);
	json_decref(params);
	return rc;
}

static const char *opt_resource;
static int opt_force;

/* Options and filters, before or after the command. Returns -1 to go on, or
 * the exit code to leave with (--help, a bad option). */
static int
parse_options(int argc, char **argv, json_t *filters, bool permute)
{
	int c;

	/* Before the command: stop at it. After it: options may come
	 * before or after the arguments (claim ADDR --resource NAME). */
	while ((c = getopt_long(argc, argv, permute ? "s:jh" : "+s:jh", opts, NULL)) != -1) {
		const char *key = NULL;

		switch (c) {
		case 's': socket_path = optarg; break;
		case 'j': json_output = 1; break;
		case 'h': usage(stdout); return EXIT_OK;
		case 'V': printf("hostdevctl %s\n", PACKAGE_VERSION); return EXIT_OK;
		case 'c': key = "class"; break;
		case 'v': key = "vendor"; break;
		case 'd': key = "device"; break;
		case 'D': key = "driver"; break;
		case 'g': key = "iommu_group"; break;
		case 'm': key = "module"; break;
		case 'r': opt_resource = optarg; break;
		case 'f': opt_force = 1; break;
		default: usage(stderr); return EXIT_USAGE;
		}
		if (key)
			json_object_set_new(filters, key, json_string(optarg));
	}
	return -1;
}

int
main(int argc, char **argv)
{
	json_t *filters = json_object(), *result = NULL;
	const char *cmd;
	int rc;

	if (getenv("HOSTDEVD_SOCKET"))
		socket_path = getenv("HOSTDEVD_SOCKET");
	rc = parse_options(argc, argv, filters, false);
	if (rc >= 0) {
		json_decref(filters);
		return rc;
	}
	if (optind >= argc) {
		usage(stderr);
		json_decref(filters);
		return EXIT_USAGE;
	}
	cmd = argv[optind++];
	/* Filters may also follow the command: hostdevctl devices --class pci.
	 * Parse what follows it as an argument vector of its own (the
	 * command standing as argv[0]), so getopt may permute it. */
	argv += optind - 1;
	argc -= optind - 1;
	optind = 0;
	rc = parse_options(argc, argv, filters, true);
	if (rc >= 0) {
		json_decref(filters);
		return rc;
	}
	signal(SIGPIPE, SIG_DFL);

	if (strcmp(cmd, "devices") == 0) {
		if (optind != argc)
			goto bad_args;
		rc = list_devices(filters, &result);
		if (rc == EXIT_OK)
			json_output ? print_json(result) : print_devices(result);
	} else if (strcmp(cmd, "device") == 0) {
		if (optind + 1 != argc)
			goto bad_args;
		json_t *p = json_pack("{s:s}", "address", argv[optind]);
		rc = call("devices.get", p, &result);
		json_decref(p);
		if (rc == EXIT_OK)
			json_output ? print_json(result) : print_object(result, 0);
	} else if (strcmp(cmd, "status") == 0 || strcmp(cmd, "modules") == 0 ||
		   strcmp(cmd, "rescan") == 0 || strcmp(cmd, "resources") == 0) {
		if (optind != argc)
			goto bad_args;
		rc = call(strcmp(cmd, "status") == 0 ? "daemon.status" :
			  strcmp(cmd, "modules") == 0 ? "modules.list" :
			  strcmp(cmd, "resources") == 0 ? "resources.list" : "daemon.rescan",
			  NULL, &result);
		if (rc == EXIT_OK) {
			if (json_output)
				print_json(result);
			else if (strcmp(cmd, "modules") == 0)
				print_modules(result);
			else if (strcmp(cmd, "resources") == 0)
				print_resources(result);
			else
				print_object(result, 0);
			/* A probe built on `status` must see a daemon that fails closed. */
			if (strcmp(cmd, "status") == 0 &&
			    json_is_true(json_object_get(json_object_get(result, "claims"),
							 "fail_closed"))) {
				fprintf(stderr, "hostdevctl: hostdevd fails closed: %s\n",
					json_string_value(json_object_get(
						json_object_get(result, "claims"), "fail_reason")) ?: "");
				rc = EXIT_FAIL_CLOSED;
			}
		}
	} else if (strcmp(cmd, "claim") == 0 || strcmp(cmd, "release") == 0) {
		json_t *p;

		if (optind + 1 != argc)
			goto bad_args;
		p = json_pack("{s:s}", "address", argv[optind]);
		if (strcmp(cmd, "claim") == 0 && opt_resource)
			json_object_set_new(p, "resource_name", json_string(opt_resource));
		if (strcmp(cmd, "release") == 0 && opt_force)
			json_object_set_new(p, "force", json_true());
		rc = call(strcmp(cmd, "claim") == 0 ? "pci.claim" : "pci.release", p, &result);
		json_decref(p);
		if (rc == EXIT_OK) {
			if (json_output)
				print_json(result);
			else
				printf("%s: %s\n", argv[optind], s_or(result, "state", "done"));
		}
	} else if (strcmp(cmd, "claims") == 0) {
		if (optind != argc)
			goto bad_args;
		rc = call("claims.list", NULL, &result);
		if (rc == EXIT_OK)
			json_output ? print_json(result) : print_claims(result);
	} else if (strcmp(cmd, "events") == 0) {
		if (optind != argc)
			goto bad_args;
		rc = cmd_events();
	} else if (strcmp(cmd, "call") == 0 || optind < argc) {
		rc = cmd_method(cmd, argc - optind, argv + optind, &result);
		if (rc == EXIT_OK)
			json_output ? print_json(result) : print_object(result, 0);
	} else {
		fprintf(stderr, "hostdevctl: unknown command \"%s\"\n", cmd);
		usage(stderr);
		rc = EXIT_USAGE;
	}
	json_decref(result);
	json_decref(filters);
	return rc;
bad_args:
	fprintf(stderr, "hostdevctl: wrong arguments for \"%s\"\n", cmd);
	usage(stderr);
	json_decref(filters);
	return EXIT_USAGE;
}
