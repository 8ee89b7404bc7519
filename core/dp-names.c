/* SPDX-License-Identifier: MIT */
/* Kubelet resource names, KubeVirt env var names and plugin socket names. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "dp-names.h"

static int
fail(char *why, size_t whylen, const char *msg)
{
	if (why)
		snprintf(why, whylen, "%s", msg);
	return -EINVAL;
}

int
dp_resource_name_check(const char *name, char *why, size_t whylen)
{
	const char *slash = strchr(name, '/');
	size_t dlen, nlen;

	if (slash == NULL || strchr(slash + 1, '/'))
		return fail(why, whylen, "must be <domain>/<name> with exactly one '/'");
	dlen = (size_t)(slash - name);
	nlen = strlen(slash + 1);
	if (dlen == 0 || dlen > 253)
		return fail(why, whylen, "the domain must have 1 to 253 characters");
	if (strncmp(name, "requests.", 9) == 0)
		return fail(why, whylen, "must not start with \"requests.\"");
	if (strstr(name, "kubernetes.io/"))
		return fail(why, whylen, "the kubernetes.io domain is reserved");
	/* DNS-1123 subdomain: labels of [a-z0-9-], alphanumeric at both ends. */
	for (const char *p = name, *label = name; p <= slash; p++) {
		if (p == slash || *p == '.') {
			if (p == label || label[0] == '-' || p[-1] == '-' || p - label > 63)
				return fail(why, whylen, "the domain must be a lower-case DNS name");
			label = p + 1;
		} else if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '-')) {
			return fail(why, whylen, "the domain must be a lower-case DNS name");
		}
	}
	if (nlen == 0 || nlen > DP_NAME_MAX)
		return fail(why, whylen, "the name after '/' must have 1 to 63 characters");
	for (const char *p = slash + 1; *p; p++) {
		int alnum = isalnum((unsigned char)*p);

		if (!alnum && *p != '-' && *p != '_' && *p != '.')
			return fail(why, whylen, "the name may only hold letters, digits, '-', '_' and '.'");
		if (!alnum && (p == slash + 1 || p[1] == '\0'))
			return fail(why, whylen, "the name must begin and end with a letter or digit");
	}
	return 0;
}

static void
trim_junk(char *s)
{
	size_t n = strlen(s);

	while (n > 0 && (s[n - 1] == '_' || s[n - 1] == '.' || s[n - 1] == '-'))
		s[--n] = '\0';
	while (s[0] == '_' || s[0] == '.' || s[0] == '-')
		memmove(s, s + 1, strlen(s));
}

static void
vendor_domain(const char *vendor_name, int vendor_id, char *out, size_t size)
{
	char word[64] = "";
	size_t n = 0;
	const char *src, *end;

	if (vendor_name == NULL) {
		snprintf(out, size, "pci-%04x.hostdevd.io", vendor_id & 0xffff);
		return;
	}
	src = strchr(vendor_name, '[');
	if (src) {
		src++;
		end = strpbrk(src, "/]");
	} else {
		src = vendor_name;
		end = strpbrk(src, " \t");
	}
	if (end == NULL)
		end = src + strlen(src);
	for (const char *p = src; p < end && n + 1 < sizeof(word); p++)
		if (isalnum((unsigned char)*p))
			word[n++] = (char)tolower((unsigned char)*p);
	word[n] = '\0';
	/* "requests." is the kubelet's prefix for resource requests and may
	 * not start a resource name (dp_resource_name_check): a vendor named
	 * "Requests" gets the id-based domain like one with no usable name. */
	if (n == 0 || strcmp(word, "requests") == 0)
		snprintf(out, size, "pci-%04x.hostdevd.io", vendor_id & 0xffff);
	else
		snprintf(out, size, "%s.com", word);
}

static void
replace_all(char *s, const char *from, const char *to)
{
	size_t fl = strlen(from), tl = strlen(to);
	char *p;

	while ((p = strstr(s, from)) != NULL) {
		memmove(p + tl, p + fl, strlen(p + fl) + 1);
		memcpy(p, to, tl);
	}
}

void
dp_default_resource_name(const struct hdd_pci_facts *f, char *buf, size_t size)
{
	char domain[96], product[256];
	size_t n = 0;
	int blank = 0;

	vendor_domain(f->vendor_name, f->vendor_id, domain, sizeof(domain));
	product[0] = '\0';
	if (f->device_name) {
		/* Upper-case, '/', '.' and runs of blanks to '_', then only
		 * [A-Z0-9_] are kept. */
		/* Room for up to two characters per step ('_' then one) and
		 * the terminator. */
		for (const char *p = f->device_name; *p && n + 2 < sizeof(product); p++) {
			unsigned char c = (unsigned char)*p;

			if (isspace(c)) {
				blank = 1;
				continue;
			}
			if (blank && n > 0)
				product[n++] = '_';
			blank = 0;
			if (c == '/' || c == '.')
				product[n++] = '_';
			else if (isalnum(c) || c == '_')
				product[n++] = (char)toupper(c);
		}
		product[n] = '\0';
		while (strstr(product, "__"))
			replace_all(product, "__", "_");
		trim_junk(product);
		if (strlen(product) > DP_NAME_MAX)
			replace_all(product, "VIRTUAL_FUNCTION", "VF");
		if (strlen(product) > DP_NAME_MAX) {
			product[DP_NAME_MAX] = '\0';
			trim_junk(product);
		}
	}
	if (product[0] == '\0')
		snprintf(product, sizeof(product), "%04x", f->device_id & 0xffff);
	snprintf(buf, size, "%s/%s", domain, product);
}

int
dp_env_name(const char *prefix, const char *resource, char *buf, size_t size)
{
	size_t n;
	int len = snprintf(buf, size, "%s_%s", prefix, resource);

	if (len < 0 || (size_t)len >= size)
		return -ENAMETOOLONG;
	n = strlen(prefix) + 1;
	for (char *p = buf + n; *p; p++) {
		if (*p == '/' || *p == '.')
			*p = '_';
		else
			*p = (char)toupper((unsigned char)*p);
	}
	return 0;
}

static uint32_t
fnv1a(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 16777619u;
	}
	return h;
}

int
dp_socket_name(const char *dir, const char *resource, char *buf, size_t size)
{
	char mangled[512];
	size_t dirlen = strlen(dir), room;
	int n;

	while (dirlen > 1 && dir[dirlen - 1] == '/')
		dirlen--;
	snprintf(mangled, sizeof(mangled), "%s", resource);
	for (char *p = mangled; *p; p++)
		if (*p == '/')
			*p = '-';
	n = snprintf(buf, size, "hostdevd-%s.sock", mangled);
	if (n > 0 && (size_t)n < size && dirlen + 1 + (size_t)n <= DP_SUN_PATH_MAX)
		return 0;
	/* "hostdevd-" + part + "-xxxxxxxx.sock" must fit the room left. */
	if (dirlen + 1 + strlen("hostdevd--xxxxxxxx.sock") > DP_SUN_PATH_MAX)
		return -ENAMETOOLONG;
	room = DP_SUN_PATH_MAX - dirlen - 1 - strlen("hostdevd--xxxxxxxx.sock");
	if (room > strlen(mangled))
		room = strlen(mangled);
	n = snprintf(buf, size, "hostdevd-%.*s-%08x.sock", (int)room, mangled, fnv1a(resource));
	return (n > 0 && (size_t)n < size) ? 0 : -ENAMETOOLONG;
}
