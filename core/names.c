/* SPDX-License-Identifier: MIT */
/* Vendor, device and class names: pci.ids through libpci, usb.ids by lookup. */
#include "config.h"

#include <errno.h>
#include <pci/pci.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "names.h"

#define USB_CACHE_SIZE 64
#define PCI_CACHE_SIZE 4096	/* a power of two */

/* libpci caches what it finds but not what it does not find, and with
 * udev's hwdb every miss is a trie walk: remember both, per id tuple. */
struct pci_cache_entry {
	uint32_t key[5];	/* kind, then up to four ids; key[0] == 0: empty */
	char *name;		/* NULL: not in the database */
};

struct usb_cache_entry {
	int used;
	int vendor, product;	/* product -1: vendor name entry */
	char *name;		/* NULL: known to be absent */
};

struct names {
	struct pci_access *pacc;
	struct pci_cache_entry *pci_cache;
	char *usb_ids;
	struct usb_cache_entry usb_cache[USB_CACHE_SIZE];
	unsigned usb_cache_next;
	bool pci_ids_broken;	/* libpci gave up on the database: no more lookups */
};

/* libpci reports a database it cannot parse through its error hook, which
 * must not return (libpci is built with it noreturn: the code after the call
 * is not there). The lookup in progress is abandoned with a longjmp instead;
 * libpci has closed the file by then. */
static jmp_buf *names_pci_jmp;

static void names_pci_msg(char *msg, ...) __attribute__((format(printf, 1, 2)));
static void names_pci_error(char *msg, ...) __attribute__((format(printf, 1, 2), noreturn));
static void names_pci_debug(char *msg, ...) __attribute__((format(printf, 1, 2)));

static void
names_pci_debug(char *msg, ...)
{
}

/* libpci only reports here while reading pci.ids; a missing or bad database
 * must not end the daemon, so these just log. */
static void
names_pci_line(char *line, size_t size, const char *msg, va_list ap)
	__attribute__((format(printf, 3, 0)));

/* libpci's message as one line. */
static void
names_pci_line(char *line, size_t size, const char *msg, va_list ap)
{
	vsnprintf(line, size, msg, ap);
	line[strcspn(line, "\n")] = '\0';
}

static void
names_pci_msg(char *msg, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, msg);
	names_pci_line(line, sizeof(line), msg, ap);
	va_end(ap);
	log_warnx("names", "libpci: %s", line);
}

static void
names_pci_error(char *msg, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, msg);
	names_pci_line(line, sizeof(line), msg, ap);
	va_end(ap);
	log_warnx("names", "libpci: %s; PCI names are not looked up", line);
	if (names_pci_jmp)
		longjmp(*names_pci_jmp, 1);
	abort();	/* not reached: libpci calls it only inside a lookup */
}

int
names_new(const char *pci_ids, const char *usb_ids, struct names **ret)
{
	struct names *n = calloc(1, sizeof(*n));

	if (n == NULL)
		return -ENOMEM;
	n->usb_ids = strdup(usb_ids ? usb_ids : USB_IDS_PATH);
	n->pacc = pci_alloc();
	n->pci_cache = calloc(PCI_CACHE_SIZE, sizeof(*n->pci_cache));
	if (n->usb_ids == NULL || n->pacc == NULL || n->pci_cache == NULL) {
		names_free(n);
		return -ENOMEM;
	}
	n->pacc->error = names_pci_error;
	n->pacc->warning = names_pci_msg;
	n->pacc->debug = names_pci_debug;
	pci_set_name_list_path(n->pacc, (char *)(pci_ids ? pci_ids : PCI_IDS_PATH), 0);
	/* lspci consults udev's hwdb before pci.ids when there is one; do the
	 * same, and skip it where there is none (libpci 3.9 then leaks). */
	if (access("/etc/udev/hwdb.bin", F_OK) < 0 && access("/usr/lib/udev/hwdb.bin", F_OK) < 0 &&
	    access("/lib/udev/hwdb.bin", F_OK) < 0)
		pci_set_param(n->pacc, (char *)"hwdb.disable", (char *)"1");
	*ret = n;
	return 0;
}

void
names_free(struct names *n)
{
	if (n == NULL)
		return;
	if (n->pacc)
		pci_cleanup(n->pacc);
	for (unsigned i = 0; i < USB_CACHE_SIZE; i++)
		free(n->usb_cache[i].name);
	for (unsigned i = 0; n->pci_cache && i < PCI_CACHE_SIZE; i++)
		free(n->pci_cache[i].name);
	free(n->pci_cache);
	free(n->usb_ids);
	free(n);
}

/* libpci's lookup; NULL when it is not there or the database is broken. */
static const char *
lookup(struct names *n, char *buf, size_t size, int flags, int a, int b, int c, int d)
{
	jmp_buf jb;
	const char *volatile name = NULL;

	if (n->pci_ids_broken)
		return NULL;
	if (setjmp(jb) == 0) {
		names_pci_jmp = &jb;
		name = pci_lookup_name(n->pacc, buf, (int)size, flags | PCI_LOOKUP_NO_NUMBERS, a, b,
				       c, d);
	} else {
		n->pci_ids_broken = true;
		name = NULL;
	}
	names_pci_jmp = NULL;
	return name;
}

/* One lookup through the cache; the kind is the libpci flag set. */
static const char *
cached(struct names *n, int flags, int a, int b, int c, int d, char *buf, size_t size)
{
	uint32_t key[5] = { (uint32_t)flags, (uint32_t)a, (uint32_t)b, (uint32_t)c, (uint32_t)d };
	uint32_t h = 2166136261u;
	struct pci_cache_entry *e;
	const char *name;

	for (int i = 0; i < 5; i++)
		h = (h ^ key[i]) * 16777619u;
	for (unsigned probe = 0; probe < 8; probe++) {
		e = &n->pci_cache[(h + probe) & (PCI_CACHE_SIZE - 1)];
		if (e->key[0] == 0)
			break;
		if (memcmp(e->key, key, sizeof(key)) == 0) {
			if (e->name == NULL)
				return NULL;
			snprintf(buf, size, "%s", e->name);
			return buf;
		}
	}
	name = lookup(n, buf, size, flags, a, b, c, d);
	/* A full neighbourhood just means this tuple is not remembered. */
	if (e->key[0] == 0) {
		memcpy(e->key, key, sizeof(key));
		e->name = name ? strdup(name) : NULL;
	}
	return name;
}

const char *
names_pci_vendor(struct names *n, int vendor, char *buf, size_t size)
{
	if (vendor < 0)
		return NULL;
	return cached(n, PCI_LOOKUP_VENDOR, vendor, 0, 0, 0, buf, size);
}

const char *
names_pci_device(struct names *n, int vendor, int device, char *buf, size_t size)
{
	if (vendor < 0 || device < 0)
		return NULL;
	return cached(n, PCI_LOOKUP_DEVICE, vendor, device, 0, 0, buf, size);
}

const char *
names_pci_subsystem(struct names *n, int vendor, int device, int svendor, int sdevice,
		    char *buf, size_t size)
{
	if (vendor < 0 || device < 0 || svendor < 0 || sdevice < 0)
		return NULL;
	return cached(n, PCI_LOOKUP_SUBSYSTEM | PCI_LOOKUP_DEVICE, vendor, device, svendor, sdevice,
		      buf, size);
}

const char *
names_pci_class(struct names *n, int class_code, char *buf, size_t size)
{
	if (class_code < 0)
		return NULL;
	return cached(n, PCI_LOOKUP_CLASS, class_code >> 8, 0, 0, 0, buf, size);
}

const char *
names_pci_progif(struct names *n, int class_code, char *buf, size_t size)
{
	if (class_code < 0)
		return NULL;
	return cached(n, PCI_LOOKUP_PROGIF, class_code >> 8, class_code & 0xff, 0, 0, buf, size);
}

void
names_trim(struct names *n)
{
	/* libpci holds all of pci.ids (or udev's hwdb, mapped) once it has
	 * looked anything up; our cache keeps what this host needs. */
	pci_free_name_list(n->pacc);
}

/* usb.ids: "vvvv  Vendor" at column 0, "\tpppp  Product" below it. USB
 * devices are few, so a scan per miss with a small cache beats holding the
 * whole database in memory. */
static char *
usb_ids_scan(const char *path, int vendor, int product)
{
	char line[512];
	int in_vendor = 0;
	char *result = NULL;
	FILE *f = fopen(path, "re");

	if (f == NULL)
		return NULL;
	while (fgets(line, sizeof(line), f)) {
		unsigned id;
		char *name, *nl;

		if (line[0] == '#' || line[0] == '\n')
			continue;
		if (line[0] != '\t') {
			if (in_vendor)
				break;
			/* Sections after the vendor list ("C 00 ...") end it. */
			if (sscanf(line, "%4x", &id) != 1 || line[4] != ' ')
				continue;
			if ((int)id != vendor)
				continue;
			in_vendor = 1;
			if (product < 0) {
				name = line + 4;
				goto found;
			}
			continue;
		}
		if (!in_vendor || line[1] == '\t')
			continue;
		if (sscanf(line + 1, "%4x", &id) == 1 && (int)id == product && line[5] == ' ') {
			name = line + 5;
			goto found;
		}
		continue;
found:
		while (*name == ' ')
			name++;
		nl = strchr(name, '\n');
		if (nl)
			*nl = '\0';
		result = strdup(name);
		break;
	}
	fclose(f);
	return result;
}

static const char *
usb_lookup(struct names *n, int vendor, int product, char *buf, size_t size)
{
	struct usb_cache_entry *e;

	if (vendor < 0)
		return NULL;
	for (unsigned i = 0; i < USB_CACHE_SIZE; i++) {
		e = &n->usb_cache[i];
		if (e->used && e->vendor == vendor && e->product == product) {
			if (e->name == NULL)
				return NULL;
			snprintf(buf, size, "%s", e->name);
			return buf;
		}
	}
	e = &n->usb_cache[n->usb_cache_next++ % USB_CACHE_SIZE];
	free(e->name);
	e->used = 1;
	e->vendor = vendor;
	e->product = product;
	e->name = usb_ids_scan(n->usb_ids, vendor, product);
	if (e->name == NULL)
		return NULL;
	snprintf(buf, size, "%s", e->name);
	return buf;
}

const char *
names_usb_vendor(struct names *n, int vendor, char *buf, size_t size)
{
	return usb_lookup(n, vendor, -1, buf, size);
}

const char *
names_usb_product(struct names *n, int vendor, int product, char *buf, size_t size)
{
	if (product < 0)
		return NULL;
	return usb_lookup(n, vendor, product, buf, size);
}
