/* SPDX-License-Identifier: MIT */
/* usb: the `usb` section of hostdevd.conf (KubeVirt's permittedHostDevices.usb vocabulary). */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "usb.h"

static int fail(char *why, size_t whylen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int
fail(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* "046d" (as in idVendor; "0x" and upper case accepted) -> 0x046d, or -1. */
static int
parse_hex4(const json_t *v)
{
	const char *s = json_string_value(v);
	unsigned long x;
	char *end;

	if (s == NULL)
		return -1;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
		s += 2;
	if (s[0] == '\0' || strlen(s) > 4 || !isxdigit((unsigned char)s[0]))
		return -1;
	x = strtoul(s, &end, 16);
	return *end == '\0' && x <= 0xffff ? (int)x : -1;
}

/* A USB port path as sysfs names it: "1-2", "3-1.4.2". */
static bool
port_valid(const char *s)
{
	const char *p = s;

	if (!isdigit((unsigned char)*p))
		return false;
	while (isdigit((unsigned char)*p))
		p++;
	if (*p++ != '-' || !isdigit((unsigned char)*p))
		return false;
	for (; *p; p++)
		if (!isdigit((unsigned char)*p) && !(*p == '.' && isdigit((unsigned char)p[1])))
			return false;
	return p - s < USB_PORT_MAX;
}

/* A resource name the kubelet takes: "domain/name", [A-Za-z0-9._-] each side. */
static bool
resource_valid(const char *s)
{
	const char *slash = strchr(s, '/');

	if (slash == NULL || slash == s || slash[1] == '\0' || strchr(slash + 1, '/') ||
	    strlen(s) >= USB_RESOURCE_MAX)
		return false;
	for (const char *p = s; *p; p++)
		if (!isalnum((unsigned char)*p) && !strchr("._-/", *p))
			return false;
	return true;
}

static int
parse_selector(const json_t *o, bool need_ids, const char *what, struct usb_selector *s,
	       char *why, size_t whylen)
{
	const char *key;
	json_t *v;

	s->vendor = s->product = -1;
	s->serial[0] = s->port[0] = '\0';
	if (!json_is_object(o))
		return fail(why, whylen, "%s: expected an object {vendor, product, serial, port}", what);
	json_object_foreach((json_t *)o, key, v) {
		if (strcmp(key, "vendor") == 0 || strcmp(key, "product") == 0) {
			int x = parse_hex4(v);

			if (x < 0)
				return fail(why, whylen, "%s.%s: expected 4 hex digits (\"046d\")", what,
					    key);
			*(key[0] == 'v' ? &s->vendor : &s->product) = x;
		} else if (strcmp(key, "serial") == 0) {
			const char *str = json_string_value(v);

			if (str == NULL || str[0] == '\0' || strlen(str) >= sizeof(s->serial))
				return fail(why, whylen, "%s.serial: expected a string of 1 to %zu characters",
					    what, sizeof(s->serial) - 1);
			snprintf(s->serial, sizeof(s->serial), "%s", str);
		} else if (strcmp(key, "port") == 0) {
			const char *str = json_string_value(v);

			if (str == NULL || !port_valid(str))
				return fail(why, whylen, "%s.port: expected a USB port path such as \"1-2.1\"",
					    what);
			snprintf(s->port, sizeof(s->port), "%s", str);
		} else {
			return fail(why, whylen, "%s.%s: unknown key", what, key);
		}
	}
	if (need_ids && (s->vendor < 0 || s->product < 0))
		return fail(why, whylen, "%s: vendor and product are required", what);
	if (s->vendor < 0 && s->product < 0 && !s->serial[0] && !s->port[0])
		return fail(why, whylen, "%s: names nothing (vendor, product, serial or port)", what);
	return 0;
}

static int
parse_rules(const json_t *v, struct usb_conf *c, char *why, size_t whylen)
{
	size_t i;
	json_t *item;

	if (!json_is_array(v))
		return fail(why, whylen, "usb.rules: expected an array of {name, selectors}");
	c->rules = calloc(json_array_size(v) + 1, sizeof(*c->rules));
	if (c->rules == NULL)
		return -ENOMEM;
	json_array_foreach((json_t *)v, i, item) {
		struct usb_rule *r = &c->rules[i];
		const char *key, *name;
		json_t *x, *sels = NULL;
		char what[64];

		c->nrules = i + 1;
		if (!json_is_object(item))
			return fail(why, whylen, "usb.rules[%zu]: expected an object {name, selectors}", i);
		json_object_foreach(item, key, x) {
			if (strcmp(key, "name") && strcmp(key, "selectors"))
				return fail(why, whylen, "usb.rules[%zu].%s: unknown key", i, key);
		}
		name = json_string_value(json_object_get(item, "name"));
		if (name == NULL || !resource_valid(name))
			return fail(why, whylen, "usb.rules[%zu].name: expected a resource name such as \"kubevirt.io/tablet\"",
				    i);
		for (size_t k = 0; k < i; k++)
			if (strcmp(c->rules[k].name, name) == 0)
				return fail(why, whylen, "usb.rules[%zu].name: %s is named by rule %zu too",
					    i, name, k);
		snprintf(r->name, sizeof(r->name), "%s", name);
		sels = json_object_get(item, "selectors");
		if (!json_is_array(sels) || json_array_size(sels) == 0 ||
		    json_array_size(sels) > USB_MAX_SELECTORS)
			return fail(why, whylen, "usb.rules[%zu].selectors: expected 1 to %d selectors",
				    i, USB_MAX_SELECTORS);
		for (size_t k = 0; k < json_array_size(sels); k++) {
			int err;

			snprintf(what, sizeof(what), "usb.rules[%zu].selectors[%zu]", i, k);
			err = parse_selector(json_array_get(sels, k), true, what, &r->sel[k], why,
					     whylen);
			if (err)
				return err;
			r->nsel = k + 1;
		}
	}
	return 0;
}

static int
parse_exclude(const json_t *v, struct usb_conf *c, char *why, size_t whylen)
{
	size_t i;
	json_t *item;

	if (!json_is_array(v))
		return fail(why, whylen, "usb.exclude: expected an array of selectors");
	c->exclude = calloc(json_array_size(v) + 1, sizeof(*c->exclude));
	if (c->exclude == NULL)
		return -ENOMEM;
	json_array_foreach((json_t *)v, i, item) {
		char what[32];
		int err;

		snprintf(what, sizeof(what), "usb.exclude[%zu]", i);
		err = parse_selector(item, false, what, &c->exclude[i], why, whylen);
		if (err)
			return err;
		c->nexclude = i + 1;
	}
	return 0;
}

static int
parse_owner(const json_t *v, struct usb_conf *c, char *why, size_t whylen)
{
	const char *s = json_string_value(v);
	unsigned long uid, gid;
	char *end;

	if (s == NULL || !isdigit((unsigned char)s[0]))
		goto bad;
	uid = strtoul(s, &end, 10);
	if (*end != ':' || !isdigit((unsigned char)end[1]))
		goto bad;
	gid = strtoul(end + 1, &end, 10);
	if (*end != '\0' || uid >= 0xffffffffUL || gid >= 0xffffffffUL)
		goto bad;
	c->uid = (unsigned)uid;
	c->gid = (unsigned)gid;
	return 0;
bad:
	return fail(why, whylen, "usb.owner: expected \"UID:GID\" in numbers (\"107:107\")");
}

void
usb_conf_clear(struct usb_conf *c)
{
	free(c->rules);
	free(c->exclude);
	memset(c, 0, sizeof(*c));
}

int
usb_conf_parse(const json_t *section, struct usb_conf *c, char *why, size_t whylen)
{
	const char *key;
	json_t *v;
	int err = 0;

	memset(c, 0, sizeof(*c));
	c->uid = c->gid = USB_DEFAULT_UID;
	if (section == NULL)
		return 0;
	if (!json_is_object(section))
		return fail(why, whylen, "usb: expected an object {rules, unlisted, owner, exclude}");
	json_object_foreach((json_t *)section, key, v) {
		if (strcmp(key, "rules") == 0) {
			err = parse_rules(v, c, why, whylen);
		} else if (strcmp(key, "exclude") == 0) {
			err = parse_exclude(v, c, why, whylen);
		} else if (strcmp(key, "owner") == 0) {
			err = parse_owner(v, c, why, whylen);
		} else if (strcmp(key, "unlisted") == 0) {
			const char *s = json_string_value(v);

			if (s == NULL || (strcmp(s, "ignore") && strcmp(s, "harvester")))
				err = fail(why, whylen, "usb.unlisted: expected \"ignore\" or \"harvester\"");
			else
				c->harvester = strcmp(s, "harvester") == 0;
		} else {
			err = fail(why, whylen, "usb.%s: unknown key", key);
		}
		if (err)
			return err;
	}
	return 0;
}

int
usb_conf_check(const json_t *section, char *why, size_t whylen)
{
	struct usb_conf c;
	int err = usb_conf_parse(section, &c, why, whylen);

	usb_conf_clear(&c);
	return err;
}

bool
usb_selector_match(const struct usb_selector *s, int vendor, int product, const char *serial,
		   const char *port)
{
	if (s->vendor >= 0 && s->vendor != vendor)
		return false;
	if (s->product >= 0 && s->product != product)
		return false;
	if (s->serial[0] && strcmp(s->serial, serial ? serial : "") != 0)
		return false;
	return !s->port[0] || (port && strcmp(s->port, port) == 0);
}
