/* SPDX-License-Identifier: MIT */
/* The JSON configuration file: parsed strictly, every error names its key. */
#include "config.h"

#include <errno.h>
#include <fnmatch.h>
#include <grp.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "dp-names.h"
#include "sysfs.h"
#include "log.h"

#define CONFIG_MAX_SIZE (1024 * 1024)

struct config *
config_defaults(void)
{
	struct config *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	c->log_level = -1;
	c->resync_interval = 60;
	c->debounce_ms = 50;
	c->control_max_clients = 256;
	c->control_max_output = 16 * 1024 * 1024;
	c->control_max_answer = 4 * 1024 * 1024;
	c->control_max_total_output = 64 * 1024 * 1024;
	c->control_stall_timeout_s = 60;
	c->advertise_unlisted = true;
	c->gpu_free_timeout_ms = 60000;
	c->release_timeout_ms = 30000;
	c->modules_disable = calloc(1, sizeof(char *));
	c->sections = json_object();
	if (c->modules_disable == NULL || c->sections == NULL) {
		free(c->modules_disable);
		json_decref(c->sections);
		free(c);
		return NULL;
	}
	return c;
}

const json_t *
config_section(const struct config *c, const char *module)
{
	return c && c->sections ? json_object_get(c->sections, module) : NULL;
}

/* A key that may name a module: [a-z0-9]+, at most 32 characters. */
static bool
module_key_valid(const char *key)
{
	size_t n = strlen(key);

	if (n == 0 || n > 32)
		return false;
	for (const char *p = key; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')))
			return false;
	return true;
}

void
config_free(struct config *c)
{
	if (c == NULL)
		return;
	for (char **p = c->modules_disable; p && *p; p++)
		free(*p);
	free(c->modules_disable);
	free(c->control_group);
	for (size_t i = 0; i < c->nrules; i++) {
		free(c->rules[i].address);
		free(c->rules[i].name);
	}
	free(c->rules);
	for (size_t i = 0; i < c->nexcludes; i++) {
		free(c->excludes[i].address);
		free(c->excludes[i].name);
	}
	free(c->excludes);
	json_decref(c->sections);
	free(c);
}

static const struct resource_rule *
match_list(const struct resource_rule *list, size_t n, const char *address, int vendor,
	   int device, int class_code)
{
	for (size_t i = 0; i < n; i++) {
		const struct resource_rule *r = &list[i];

		if (r->vendor >= 0 && r->vendor != vendor)
			continue;
		if (r->device >= 0 && r->device != device)
			continue;
		if (r->class_code >= 0) {
			int have = class_code < 0 ? -1 :
				   r->class_digits == 2 ? class_code >> 16 : class_code >> 8;
			if (have != r->class_code)
				continue;
		}
		if (r->address && fnmatch(r->address, address, 0) != 0)
			continue;
		return r;
	}
	return NULL;
}

const struct resource_rule *
config_match_rule(const struct config *c, const char *address, int vendor, int device,
		  int class_code)
{
	return match_list(c->rules, c->nrules, address, vendor, device, class_code);
}

const struct resource_rule *
config_match_exclude(const struct config *c, const char *address, int vendor, int device,
		     int class_code)
{
	return match_list(c->excludes, c->nexcludes, address, vendor, device, class_code);
}

bool
config_module_disabled(const struct config *c, const char *name)
{
	for (char **p = c->modules_disable; *p; p++)
		if (strcmp(*p, name) == 0)
			return true;
	return false;
}

static int fail(char *errbuf, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int
fail(char *errbuf, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(errbuf, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int
get_int(json_t *v, const char *origin, const char *key, long min, long max, long *out,
	char *errbuf, size_t errlen)
{
	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
		return fail(errbuf, errlen, "%s: %s: expected an integer from %ld to %ld", origin,
			    key, min, max);
	*out = (long)json_integer_value(v);
	return 0;
}

static int
parse_control(struct config *c, json_t *obj, const char *origin, char *errbuf, size_t errlen)
{
	const char *key;
	json_t *v;
	long n;
	int err;

	if (!json_is_object(obj))
		return fail(errbuf, errlen, "%s: control: expected an object", origin);
	json_object_foreach(obj, key, v) {
		if (strcmp(key, "max_clients") == 0) {
			err = get_int(v, origin, "control.max_clients", 1, 65536, &n, errbuf, errlen);
			if (err)
				return err;
			c->control_max_clients = (int)n;
		} else if (strcmp(key, "max_output_bytes") == 0) {
			err = get_int(v, origin, "control.max_output_bytes", 65536, 1L << 30, &n,
				      errbuf, errlen);
			if (err)
				return err;
			c->control_max_output = (size_t)n;
		} else if (strcmp(key, "max_answer_bytes") == 0) {
			err = get_int(v, origin, "control.max_answer_bytes", 65536, 1L << 30, &n,
				      errbuf, errlen);
			if (err)
				return err;
			c->control_max_answer = (size_t)n;
		} else if (strcmp(key, "max_total_output_bytes") == 0) {
			err = get_int(v, origin, "control.max_total_output_bytes", 1L << 20, 1L << 32,
				      &n, errbuf, errlen);
			if (err)
				return err;
			c->control_max_total_output = (size_t)n;
		} else if (strcmp(key, "stall_timeout_s") == 0) {
			err = get_int(v, origin, "control.stall_timeout_s", 1, 86400, &n, errbuf,
				      errlen);
			if (err)
				return err;
			c->control_stall_timeout_s = (int)n;
		} else if (strcmp(key, "group") == 0) {
			struct group *gr;

			if (!json_is_string(v) || json_string_length(v) == 0)
				return fail(errbuf, errlen, "%s: control.group: expected a group name",
					    origin);
			gr = getgrnam(json_string_value(v));
			if (gr == NULL)
				return fail(errbuf, errlen, "%s: control.group: no group named \"%s\"",
					    origin, json_string_value(v));
			free(c->control_group);
			c->control_group = strdup(json_string_value(v));
			c->control_gid = gr->gr_gid;
			if (c->control_group == NULL)
				return -ENOMEM;
		} else {
			return fail(errbuf, errlen, "%s: control.%s: unknown key", origin, key);
		}
	}
	return 0;
}

static int
parse_modules(struct config *c, json_t *obj, const char *origin, char *errbuf, size_t errlen)
{
	const char *key;
	json_t *v;

	if (!json_is_object(obj))
		return fail(errbuf, errlen, "%s: modules: expected an object", origin);
	json_object_foreach(obj, key, v) {
		size_t i, idx;
		json_t *item;

		if (strcmp(key, "disable") != 0)
			return fail(errbuf, errlen, "%s: modules.%s: unknown key", origin, key);
		if (!json_is_array(v))
			return fail(errbuf, errlen, "%s: modules.disable: expected an array of names",
				    origin);
		char **list = calloc(json_array_size(v) + 1, sizeof(char *));
		if (list == NULL)
			return -ENOMEM;
		i = 0;
		json_array_foreach(v, idx, item) {
			if (!json_is_string(item)) {
				for (size_t j = 0; j < i; j++)
					free(list[j]);
				free(list);
				return fail(errbuf, errlen, "%s: modules.disable[%zu]: expected a string",
					    origin, idx);
			}
			list[i++] = strdup(json_string_value(item));
		}
		for (char **p = c->modules_disable; *p; p++)
			free(*p);
		free(c->modules_disable);
		c->modules_disable = list;
	}
	return 0;
}

static int
parse_hex_selector(json_t *v, const char *origin, const char *list, size_t idx, const char *key, int digits_min,
		   int digits_max, int *out, int *digits, char *errbuf, size_t errlen)
{
	const char *str = json_string_value(v);
	unsigned long x;
	size_t len;

	if (str == NULL)
		goto bad;
	if (strncmp(str, "0x", 2) == 0)
		str += 2;
	len = strlen(str);
	if ((int)len < digits_min || (int)len > digits_max || sysfs_parse_hex(str, 0xffffff, &x) < 0)
		goto bad;
	*out = (int)x;
	if (digits)
		*digits = (int)len;
	return 0;
bad:
	return fail(errbuf, errlen, "%s: %s[%zu].%s: expected %d%s%s hex digits", origin, list,
		    idx, key, digits_min, digits_max != digits_min ? " or " : "",
		    digits_max != digits_min ? "4" : "");
}

static int
parse_rule(struct resource_rule *r, json_t *obj, const char *origin, const char *list, size_t idx,
	   char *errbuf, size_t errlen)
{
	const char *key;
	json_t *v;
	int err;

	r->vendor = r->device = r->class_code = -1;
	r->advertise = true;
	if (!json_is_object(obj))
		return fail(errbuf, errlen, "%s: %s[%zu]: expected an object", origin, list, idx);
	json_object_foreach(obj, key, v) {
		if (strcmp(key, "vendor") == 0) {
			err = parse_hex_selector(v, origin, list, idx, key, 4, 4, &r->vendor, NULL, errbuf,
						 errlen);
		} else if (strcmp(key, "device") == 0) {
			err = parse_hex_selector(v, origin, list, idx, key, 4, 4, &r->device, NULL, errbuf,
						 errlen);
		} else if (strcmp(key, "class") == 0) {
			err = parse_hex_selector(v, origin, list, idx, key, 2, 4, &r->class_code,
						 &r->class_digits, errbuf, errlen);
			if (!err && r->class_digits == 3)
				err = fail(errbuf, errlen, "%s: %s[%zu].class: expected 2 or 4 hex digits",
					   origin, list, idx);
		} else if (strcmp(key, "address") == 0) {
			if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 64)
				return fail(errbuf, errlen, "%s: %s[%zu].address: expected a PCI address or glob such as \"0000:3b:*\"",
					    origin, list, idx);
			r->address = strdup(json_string_value(v));
			err = r->address ? 0 : -ENOMEM;
		} else if (strcmp(key, "name") == 0) {
			char why[128];

			if (!json_is_string(v) ||
			    dp_resource_name_check(json_string_value(v), why, sizeof(why)) < 0)
				return fail(errbuf, errlen, "%s: %s[%zu].name: not a valid resource name: %s",
					    origin, list, idx, json_is_string(v) ? why : "expected a string");
			r->name = strdup(json_string_value(v));
			err = r->name ? 0 : -ENOMEM;
		} else if (strcmp(key, "advertise") == 0 || strcmp(key, "claim") == 0) {
			if (!json_is_boolean(v))
				return fail(errbuf, errlen, "%s: %s[%zu].%s: expected true or false", origin,
					    list, idx, key);
			if (key[0] == 'a')
				r->advertise = json_is_true(v);
			else
				r->claim = json_is_true(v);
			err = 0;
		} else if (strcmp(key, "iommu") == 0) {
			const char *m = json_string_value(v);

			if (m == NULL || (strcmp(m, "legacy") && strcmp(m, "prefer-iommufd")))
				return fail(errbuf, errlen, "%s: %s[%zu].iommu: expected \"legacy\" or \"prefer-iommufd\"",
					    origin, list, idx);
			r->prefer_iommufd = strcmp(m, "prefer-iommufd") == 0;
			err = 0;
		} else {
			return fail(errbuf, errlen, "%s: %s[%zu].%s: unknown key", origin, list, idx, key);
		}
		if (err)
			return err;
	}
	return 0;
}

/* An array of selectors (resources.rules, exclude). On error, what was
 * parsed so far stays in *ret for config_free. */
static int
parse_rule_list(json_t *v, const char *origin, const char *list, struct resource_rule **ret,
		size_t *n, char *errbuf, size_t errlen)
{
	size_t i;
	json_t *item;

	if (!json_is_array(v))
		return fail(errbuf, errlen, "%s: %s: expected an array of selectors", origin, list);
	*ret = calloc(json_array_size(v) + 1, sizeof(**ret));
	if (*ret == NULL)
		return -ENOMEM;
	json_array_foreach(v, i, item) {
		int err = parse_rule(&(*ret)[i], item, origin, list, i, errbuf, errlen);

		*n = i + 1;
		if (err)
			return err;
	}
	return 0;
}

static int
parse_claims(struct config *c, json_t *obj, const char *origin, char *errbuf, size_t errlen)
{
	const char *key;
	json_t *v;
	long n;
	int err;

	if (!json_is_object(obj))
		return fail(errbuf, errlen, "%s: claims: expected an object", origin);
	json_object_foreach(obj, key, v) {
		if (strcmp(key, "gpu_free_timeout_s") == 0) {
			err = get_int(v, origin, "claims.gpu_free_timeout_s", 0, 3600, &n, errbuf, errlen);
			if (err)
				return err;
			c->gpu_free_timeout_ms = (int)n * 1000;
		} else if (strcmp(key, "release_timeout_s") == 0) {
			err = get_int(v, origin, "claims.release_timeout_s", 1, 3600, &n, errbuf, errlen);
			if (err)
				return err;
			c->release_timeout_ms = (int)n * 1000;
		} else {
			return fail(errbuf, errlen, "%s: claims.%s: unknown key", origin, key);
		}
	}
	return 0;
}

static int
parse_resources(struct config *c, json_t *obj, const char *origin, char *errbuf, size_t errlen)
{
	const char *key;
	json_t *v;

	if (!json_is_object(obj))
		return fail(errbuf, errlen, "%s: resources: expected an object", origin);
	json_object_foreach(obj, key, v) {
		if (strcmp(key, "unlisted") == 0) {
			const char *s = json_string_value(v);

			if (s == NULL || (strcmp(s, "advertise") && strcmp(s, "ignore")))
				return fail(errbuf, errlen, "%s: resources.unlisted: expected \"advertise\" or \"ignore\"",
					    origin);
			c->advertise_unlisted = strcmp(s, "advertise") == 0;
		} else if (strcmp(key, "rules") == 0) {
			int err = parse_rule_list(v, origin, "resources.rules", &c->rules, &c->nrules,
						  errbuf, errlen);

			if (err)
				return err;
		} else {
			return fail(errbuf, errlen, "%s: resources.%s: unknown key", origin, key);
		}
	}
	return 0;
}

int
config_parse(const char *text, size_t len, const char *origin, struct config **ret,
	     char *errbuf, size_t errlen)
{
	struct config *c;
	json_error_t jerr;
	const char *key;
	json_t *root, *v;
	long n;
	int err = 0;

	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root == NULL)
		return fail(errbuf, errlen, "%s: line %d column %d: %s", origin, jerr.line,
			    jerr.column, jerr.text);
	if (!json_is_object(root)) {
		json_decref(root);
		return fail(errbuf, errlen, "%s: expected a JSON object at the top", origin);
	}
	c = config_defaults();
	if (c == NULL) {
		json_decref(root);
		return -ENOMEM;
	}
	json_object_foreach(root, key, v) {
		if (strcmp(key, "log_level") == 0) {
			int lvl = json_is_string(v) ? log_level_from_string(json_string_value(v)) :
						      -EINVAL;
			if (lvl < 0)
				err = fail(errbuf, errlen,
					   "%s: log_level: expected \"error\", \"warn\", \"info\" or \"debug\"",
					   origin);
			else
				c->log_level = lvl;
		} else if (strcmp(key, "resync_interval") == 0) {
			err = get_int(v, origin, key, 0, 86400, &n, errbuf, errlen);
			if (!err)
				c->resync_interval = (int)n;
		} else if (strcmp(key, "debounce_ms") == 0) {
			err = get_int(v, origin, key, 0, 10000, &n, errbuf, errlen);
			if (!err)
				c->debounce_ms = (int)n;
		} else if (strcmp(key, "control") == 0) {
			err = parse_control(c, v, origin, errbuf, errlen);
		} else if (strcmp(key, "modules") == 0) {
			err = parse_modules(c, v, origin, errbuf, errlen);
		} else if (strcmp(key, "resources") == 0) {
			err = parse_resources(c, v, origin, errbuf, errlen);
		} else if (strcmp(key, "exclude") == 0) {
			err = parse_rule_list(v, origin, "exclude", &c->excludes, &c->nexcludes, errbuf,
					      errlen);
		} else if (strcmp(key, "claims") == 0) {
			err = parse_claims(c, v, origin, errbuf, errlen);
		} else if (json_is_object(v) && module_key_valid(key)) {
			/* A module's section: judged once modules are loaded. */
			json_object_set(c->sections, key, v);
		} else {
			err = fail(errbuf, errlen, "%s: %s: unknown key", origin, key);
		}
		if (err)
			break;
	}
	json_decref(root);
	if (err) {
		config_free(c);
		return err;
	}
	*ret = c;
	return 0;
}

static int
load(const char *path, bool missing_ok, struct config **ret, char *errbuf, size_t errlen)
{
	char *text;
	size_t len = 0;
	FILE *f;
	int err;

	f = fopen(path, "re");
	if (f == NULL) {
		if (errno == ENOENT && missing_ok) {
			*ret = config_defaults();
			return *ret ? 0 : -ENOMEM;
		}
		err = -errno;
		snprintf(errbuf, errlen, "%s: %s", path, strerror(errno));
		return err;
	}
	text = malloc(CONFIG_MAX_SIZE + 1);
	if (text == NULL) {
		fclose(f);
		return -ENOMEM;
	}
	len = fread(text, 1, CONFIG_MAX_SIZE + 1, f);
	if (ferror(f)) {
		err = -EIO;
		snprintf(errbuf, errlen, "%s: read error", path);
	} else if (len > CONFIG_MAX_SIZE) {
		err = -EFBIG;
		snprintf(errbuf, errlen, "%s: larger than %d bytes", path, CONFIG_MAX_SIZE);
	} else {
		err = config_parse(text, len, path, ret, errbuf, errlen);
	}
	fclose(f);
	free(text);
	return err;
}

int
config_load(const char *path, struct config **ret, char *errbuf, size_t errlen)
{
	return load(path, true, ret, errbuf, errlen);
}

int
config_reload(const char *path, struct config **ret, char *errbuf, size_t errlen)
{
	return load(path, false, ret, errbuf, errlen);
}
