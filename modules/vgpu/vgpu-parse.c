/* SPDX-License-Identifier: MIT */
/* vgpu: parsers of creatable_vgpu_types, current_vgpu_type and mdev type
 * directories, and resource names; no I/O. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vgpu-parse.h"

/* Copies [s, s+n) into buf without surrounding blanks; control characters
 * become spaces, the text is cut to fit. */
static void
copy_trimmed(char *buf, size_t size, const char *s, size_t n)
{
	size_t k = 0;

	while (n > 0 && isspace((unsigned char)*s)) {
		s++;
		n--;
	}
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		n--;
	for (size_t i = 0; i < n && k + 1 < size; i++) {
		unsigned char c = (unsigned char)s[i];

		buf[k++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
	}
	if (size > 0)
		buf[k] = '\0';
}

/* A decimal id of 1 to 9 digits filling [s, s+n) once blanks are trimmed. */
static long
parse_id(const char *s, size_t n)
{
	long v = 0;
	size_t digits = 0;

	while (n > 0 && isspace((unsigned char)*s)) {
		s++;
		n--;
	}
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		n--;
	if (n == 0 || n > 9)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (s[i] - '0');
		digits++;
	}
	return digits ? v : -1;
}

/* One line: "<id> : <name>" or, tolerated, "<name> <id>". Returns 1 and
 * fills t, or 0 for a header or a line that is neither. */
static int
parse_line(const char *s, size_t n, struct vgpu_vf_type *t)
{
	const char *colon = memchr(s, ':', n);
	size_t end;

	if (colon) {
		long id = parse_id(s, (size_t)(colon - s));

		if (id <= 0)
			return 0;	/* the header "ID : vGPU Name", or junk */
		copy_trimmed(t->name, sizeof(t->name), colon + 1, n - (size_t)(colon - s) - 1);
		if (t->name[0] == '\0')
			return 0;
		t->id = id;
		return 1;
	}
	end = n;
	while (end > 0 && isspace((unsigned char)s[end - 1]))
		end--;
	for (size_t i = end; i > 0; i--) {
		if (isspace((unsigned char)s[i - 1])) {
			long id = parse_id(s + i, end - i);

			if (id <= 0)
				return 0;
			copy_trimmed(t->name, sizeof(t->name), s, i);
			if (t->name[0] == '\0')
				return 0;
			t->id = id;
			return 1;
		}
	}
	return 0;
}

size_t
vgpu_parse_creatable(const char *text, size_t len, struct vgpu_vf_type *out, size_t max)
{
	size_t count = 0;

	while (len > 0) {
		const char *nl = memchr(text, '\n', len);
		size_t n = nl ? (size_t)(nl - text) : len;
		struct vgpu_vf_type t;

		if (parse_line(text, n, &t)) {
			if (count < max)
				out[count] = t;
			count++;
		}
		if (nl == NULL)
			break;
		text += n + 1;
		len -= n + 1;
	}
	return count;
}

int
vgpu_parse_type_id(const char *text, long *id)
{
	long v;

	if (text == NULL)
		return -EINVAL;
	v = parse_id(text, strlen(text));
	if (v < 0)
		return -EINVAL;
	*id = v;
	return 0;
}

int
vgpu_parse_mdev_type(const char *name, const char *device_api, const char *available,
		     const char *description, struct vgpu_mdev_type *out)
{
	memset(out, 0, sizeof(*out));
	out->available = -1;
	if (name)
		copy_trimmed(out->name, sizeof(out->name), name, strlen(name));
	if (device_api)
		copy_trimmed(out->device_api, sizeof(out->device_api), device_api,
			     strlen(device_api));
	if (description)
		copy_trimmed(out->description, sizeof(out->description), description,
			     strlen(description));
	if (available) {
		long v = parse_id(available, strlen(available));

		if (v < 0)
			return -EINVAL;
		out->available = v;
	}
	return 0;
}

bool
vgpu_uuid_valid(const char *s)
{
	static const int dashes[] = { 8, 13, 18, 23 };

	if (s == NULL || strlen(s) != 36)
		return false;
	for (int i = 0, k = 0; i < 36; i++) {
		if (k < 4 && i == dashes[k]) {
			if (s[i] != '-')
				return false;
			k++;
		} else if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i])) {
			return false;
		}
	}
	return true;
}

static bool
name_char(int c)
{
	return isalnum(c) || c == '.' || c == '_' || c == '-';
}

int
vgpu_resource_name(const char *domain, const char *type_name, char *buf, size_t size)
{
	char name[64];
	size_t k = 0, start = 0, end;
	int n;

	for (const char *p = type_name; *p && k < sizeof(name) - 1; p++)
		name[k++] = name_char((unsigned char)*p) && (unsigned char)*p < 0x80 ? *p : '_';
	name[k] = '\0';
	end = k;
	while (start < end && !isalnum((unsigned char)name[start]))
		start++;
	while (end > start && !isalnum((unsigned char)name[end - 1]))
		end--;
	if (end == start)
		return -EINVAL;
	n = snprintf(buf, size, "%s/%.*s", domain, (int)(end - start), name + start);
	if (n < 0 || (size_t)n >= size)
		return -ENAMETOOLONG;
	return 0;
}

bool
vgpu_resource_name_valid(const char *s)
{
	const char *slash = strchr(s, '/');
	size_t n;

	if (slash == NULL || slash == s || strchr(slash + 1, '/') != NULL)
		return false;
	for (const char *p = s; p < slash; p++)
		if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '.' ||
		      *p == '-'))
			return false;
	n = strlen(slash + 1);
	if (n == 0 || n > 63 || !isalnum((unsigned char)slash[1]) ||
	    !isalnum((unsigned char)slash[n]))
		return false;
	for (const char *p = slash + 1; *p; p++)
		if (!name_char((unsigned char)*p) || (unsigned char)*p >= 0x80)
			return false;
	return strlen(s) < VGPU_RESOURCE_MAX;
}

const char *
vgpu_vendor_domain(int vendor_id)
{
	switch (vendor_id) {
	case 0x10de:
		return "nvidia.com";
	case 0x8086:
		return "intel.com";
	case 0x1002:
		return "amd.com";
	default:
		return NULL;
	}
}
